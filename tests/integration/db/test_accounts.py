"""Users with Argon2 hashes, hashed API tokens, the audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from db.accounts import (
    create_api_token,
    create_user,
    list_audit_events,
    record_audit,
    revoke_api_token,
    set_active,
    verify_api_token,
    verify_user,
)
from db.patients import upsert_patient
from ingest.report import PatientInfo


def test_users_sign_in_with_their_password_only(session: Session) -> None:
    user = create_user(session, "dr.who", "correct horse", "clinician")
    session.commit()
    assert user.password_hash.startswith("$argon2") and "correct horse" not in user.password_hash
    assert verify_user(session, "dr.who", "wrong") is None
    assert verify_user(session, "nobody", "correct horse") is None
    signed_in = verify_user(session, "dr.who", "correct horse")
    assert signed_in is not None and signed_in.role == "clinician" and signed_in.last_login_at is not None
    set_active(session, user, False)
    assert verify_user(session, "dr.who", "correct horse") is None
    with pytest.raises(ValueError, match="exists"):
        create_user(session, "dr.who", "x", "qa")
    with pytest.raises(ValueError, match="role"):
        create_user(session, "eve", "x", "root")  # type: ignore[arg-type]


def test_api_tokens_are_stored_hashed_and_revocable(session: Session) -> None:
    user = create_user(session, "pacs", "pw", "qa")
    row, secret = create_api_token(session, user, "integration")
    session.commit()
    assert secret not in row.token_hash
    found = verify_api_token(session, secret)
    assert found is not None and found.id == user.id
    assert verify_api_token(session, secret + "x") is None
    assert revoke_api_token(session, row.id)
    assert verify_api_token(session, secret) is None


def test_audit_events_name_who_did_what_to_which_patient(session: Session) -> None:
    user = create_user(session, "qa1", "pw", "qa")
    patient = upsert_patient(session, PatientInfo("A1"))
    record_audit(session, actor="qa1", user_id=user.id, action="patient_viewed", patient_id=patient.id)
    record_audit(session, actor="qa1", user_id=user.id, action="patient_exported", patient_id=patient.id,
                 detail={"format": "csv"})  # fmt: skip
    session.commit()
    events = list_audit_events(session, patient_id=patient.id)
    assert [e.action for e in events] == ["patient_exported", "patient_viewed"]
    assert events[0].detail == {"format": "csv"} and events[0].occurred_at.tzinfo is not None
