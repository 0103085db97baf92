"""Alerts can be acknowledged by a clinician, with a comment (issue 15).

- alerts.state may also be `acknowledged`: seen by a clinician, kept out of the open counts.
- alerts.basis: the facts that raised the alert (from `monitor.model.Alert.basis`); an
  acknowledged alert is raised again, as a new open alert, only when its basis changes.
- alerts.acknowledged_at / acknowledged_by / ack_comment: who acknowledged it, when, and why
  (also written to the audit trail).

Revision ID: screens_0003_alert_ack
Revises: field_0003_vendor_lsc
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.models import UtcDateTime

revision: str = "screens_0003_alert_ack"
down_revision: str | None = "field_0003_vendor_lsc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("basis", sa.Text(), nullable=False, server_default=sa.text("''")))
        batch.add_column(sa.Column("acknowledged_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("ack_comment", sa.Text(), nullable=True))
        batch.drop_constraint(op.f("ck_alerts_state"), type_="check")
        batch.create_check_constraint("state", "state IN ('open', 'acknowledged', 'resolved')")


def downgrade() -> None:
    op.execute("UPDATE alerts SET state = 'open' WHERE state = 'acknowledged'")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_constraint(op.f("ck_alerts_state"), type_="check")
        batch.create_check_constraint("state", "state IN ('open', 'resolved')")
        batch.drop_column("ack_comment")
        batch.drop_column("acknowledged_by")
        batch.drop_column("acknowledged_at")
        batch.drop_column("basis")
