"""The cross-calibration calculator in a real browser: upload the CLI's CSV on the QA machines
page, read the generalized LSC, save, and find it on the machine's card."""

from __future__ import annotations

import re
from typing import Any

import pytest

from db import calibration
from db.models import Device
from tests.e2e.conftest import shot
from tests.e2e.test_dashboard import sign_in
from tests.web.seed import Seeded

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", autouse=True)
def old_machine_study(seeded: Seeded) -> None:
    """The seed has a precision study only on the new Horizon W; the old Discovery SL needs one too."""
    with seeded.factory() as session:
        device = session.query(Device).filter_by(serial="45678").one()
        calibration.save_precision_study(session, device, "L1-L4", [], rms_sd_g_cm2=0.008, lsc_g_cm2=0.0222)
        session.commit()


def test_upload_in_vivo_crosscal_preview_and_save(page: Any) -> None:
    rows = ["kind,device_a_serial,device_b_serial,site,subject,bmd_a,bmd_b"]
    old = [0.70 + 0.01 * i for i in range(30)]
    rows += [
        f"in_vivo,45678,200457,L1-L4,S{i},{x:.4f},{1.04 * x + 0.03 + 0.02 * (-1) ** i:.4f}" for i, x in enumerate(old)
    ]
    sign_in(page, "qa", "/qa/devices")
    form = page.locator("#crosscal-calculator form")
    form.locator("input[type=file]").set_input_files(
        {"name": "crosscal.csv", "mimeType": "text/csv", "buffer": "\n".join(rows).encode()}
    )
    form.locator("button", has_text="Compute").click()
    page.wait_for_load_state()
    result = page.locator("#crosscal-preview .crosscal-result[data-site='L1-L4']")
    assert re.fullmatch(
        r"0\.\d{3} g/cm² \(\d+\.\d % of the mean new-machine BMD\)", result.locator(".glsc").inner_text()
    )
    assert "ISCD recommends 100" in result.inner_text()
    shot(page, "09-qa-crosscal-preview")
    page.locator("#crosscal-preview button", has_text="Save cross-calibration").click()
    page.wait_for_url(re.compile(r"/qa/devices"))
    old_card = page.locator(".device", has=page.locator("h2", has_text="S/N 45678"))
    card = old_card.locator("table.crosscals")
    assert "converted to HOLOGIC Horizon W (S/N 200457)" in card.inner_text()
    page.goto("/qa/devices")  # from the top: sticky table headers smear a full-page shot taken scrolled
    shot(page, "10-qa-crosscal-saved")
