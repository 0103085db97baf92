"""Patient identifiers with "/", spaces, non-ASCII text and percent signs reach every patient route.

Links escape the identifier as one path segment ("/" as %2F); the patient routes match on the
raw path, so neither the decoding of %2F nor a suffix such as "/trend" inside an identifier can
send a request to the wrong route or the wrong patient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from html import unescape
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from db.models import Patient
from db.reports import store_report
from ingest.report import PatientInfo
from tests.web.conftest import csrf_of, sign_in
from tests.web.seed import NEW, OLD, Seeded, _report, evaluate
from web.filters import patient_url

Login = Callable[[str], TestClient]

ODD = ("AB/123", "a b", "中文/1", "..%2fetc", "../up", "x/trend", "100%", "O'Brien & <Co>")
SHARED = "DUP/7"  # the same identifier from two issuers
OTHER_ISSUER = "HOSP/B"


def _two_exams(pid: str, issuer: str | None = None) -> list:  # type: ignore[type-arg]
    """A first exam on the old machine and a second on its replacement: one refused comparison each."""
    values = {("L1-L4", None): (0.80, -2.2), ("total_hip", "left"): (0.75, -1.5)}
    reports = [
        _report(pid, "Odd^Identifier", date(2014, 5, 2), OLD, values),
        _report(pid, "Odd^Identifier", date(2016, 11, 7), NEW, values),
    ]
    return [replace(r, patient=PatientInfo(pid, issuer, "Odd^Identifier", date(1950, 1, 1), "F")) for r in reports]


@pytest.fixture(scope="module")
def odd(seeded: Seeded) -> dict[tuple[str, str], int]:
    """The module's database plus the odd identifiers; (identifier, issuer) -> patient pk."""
    with seeded.factory() as session:
        for pid in ODD:
            for report in _two_exams(pid):
                store_report(session, report)
        for issuer in (None, OTHER_ISSUER):
            for report in _two_exams(SHARED, issuer):
                store_report(session, report)
        session.commit()
        found = {(p.identifier, p.issuer): p.id for p in session.query(Patient)}
    for (identifier, _), pk in found.items():
        if identifier in ODD or identifier == SHARED:
            evaluate(seeded.ctx, pk)
    return found


def _links(html: str, pattern: str) -> list[str]:
    return [unescape(href) for href in re.findall(pattern, html)]


@pytest.mark.parametrize("pid", ODD)
def test_every_patient_route_takes_the_identifier(login: Login, odd: dict[tuple[str, str], int], pid: str) -> None:
    client = login("clin")
    page = client.get(patient_url(pid))
    assert page.status_code == 200, page.text
    assert f"Patient {escape(pid)}" in page.text

    assert client.get(patient_url(pid, prefix="/api/patients")).json()["patient_id"] == pid
    assert client.get(patient_url(pid, prefix="/api/patients", suffix="/trend")).json()["patient_id"] == pid
    exports = _links(page.text, r'href="(/api/patients/[^"]+/export\?[^"]+)"')
    assert len(exports) == 3
    for href in exports:
        response = client.get(href)
        assert response.status_code == 200, href
        disposition = response.headers["content-disposition"]
        assert "dxa-patient-export_" in disposition and f"dxa-{odd[(pid, '')]}" not in disposition
    assert pid in client.get(exports[1]).json()["patient_id"]  # format=json

    add = _links(page.text, r'action="([^"]+/therapies(?:\?[^"]*)?)"')
    assert add == [patient_url(pid, "", suffix="/therapies")]
    saved = client.post(
        add[0], data={"agent": "alendronate", "start_date": "2017-01-01", "csrf_token": csrf_of(page.text)}
    )
    assert saved.status_code == 303
    assert saved.headers["location"].startswith(patient_url(pid, suffix="?notice="))
    page = client.get(saved.headers["location"])
    assert page.status_code == 200 and "alendronate" in page.text
    stop = _links(page.text, r'action="([^"]+/therapies/\d+/stop(?:\?[^"]*)?)"')
    assert len(stop) == 1 and stop[0].startswith(patient_url(pid, suffix="/therapies/"))
    stopped = client.post(stop[0], data={"stop_date": "2018-01-01", "csrf_token": csrf_of(page.text)})
    assert stopped.status_code == 303 and stopped.headers["location"].startswith(patient_url(pid, suffix="?notice="))

    api_add = client.post(
        patient_url(pid, prefix="/api/patients", suffix="/therapies"),
        json={"agent": "denosumab", "start_date": "2018-02-01"},
        headers={"X-CSRF-Token": csrf_of(page.text)},
    )
    assert api_add.status_code == 201, api_add.text


def test_a_suffix_inside_the_identifier_is_not_a_route(login: Login, odd: dict[tuple[str, str], int]) -> None:
    """`x/trend` is a patient: /api/patients/x%2Ftrend is its record, not the trend of "x"."""
    client = login("clin")
    record = client.get("/api/patients/x%2Ftrend").json()
    assert record["patient_id"] == "x/trend" and "exams" in record
    assert client.get("/api/patients/x%2Ftrend/trend").json()["patient_id"] == "x/trend"
    assert client.get("/api/patients/x/trend").status_code == 404  # there is no patient "x"
    assert client.get("/patients/AB/123").status_code == 404  # an identifier is one segment
    assert client.get("/patients/AB%2F124").status_code == 404


def test_issuer_picks_one_of_two_patients_with_one_identifier(login: Login, odd: dict[tuple[str, str], int]) -> None:
    client = login("clin")
    assert client.get(patient_url(SHARED)).status_code == 409
    assert client.get(patient_url(SHARED, prefix="/api/patients")).status_code == 409
    other = client.get(patient_url(SHARED, OTHER_ISSUER))
    assert other.status_code == 200 and f"({OTHER_ISSUER})" in other.text
    assert f"issuer={quote(OTHER_ISSUER, safe='')}" in other.text  # export links and forms keep it
    api = client.get(patient_url(SHARED, OTHER_ISSUER, prefix="/api/patients")).json()
    assert api["issuer"] == OTHER_ISSUER
    trend = client.get(patient_url(SHARED, OTHER_ISSUER, prefix="/api/patients", suffix="/trend"))
    assert trend.status_code == 200
    assert client.get(f"/api/patients/{quote(SHARED, safe='')}?issuer=").json()["issuer"] == ""


def test_lists_link_to_the_right_patient(login: Login, odd: dict[tuple[str, str], int]) -> None:
    clin = login("clin")
    listed = clin.get("/patients", params={"q": "/"}).text
    for pid in ("AB/123", "中文/1", "x/trend", SHARED):
        assert f'href="{escape(patient_url(pid, ""))}"' in listed
    assert f'href="{escape(patient_url(SHARED, OTHER_ISSUER))}"' in listed

    worklist = clin.get("/worklist", params={"start": "2000-01-01", "end": "2030-01-01"}).text
    links = _links(worklist, r'href="(/patients/[^"]+)"')
    assert patient_url("AB/123", "") in links and patient_url(SHARED, OTHER_ISSUER) in links
    assert patient_url(SHARED, "") in links  # the issuer-less one: the identifier alone is ambiguous
    for href in links:
        assert clin.get(href).status_code == 200, href

    refused = login("qa").get("/qa/comparisons").text
    links = _links(refused, r'href="(/patients/[^"]+)"')
    assert patient_url("中文/1", "") in links and patient_url(SHARED, OTHER_ISSUER) in links
    for href in set(links):
        assert clin.get(href).status_code == 200, href


def test_sign_in_returns_to_the_patient(anon: TestClient, odd: dict[tuple[str, str], int]) -> None:
    url = patient_url("AB/123")
    first = anon.get(url)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
    form = anon.get(first.headers["location"]).text
    target = unescape(re.findall(r'name="next" value="([^"]*)"', form)[0])
    assert target == url
    sign_in(anon, "clin")  # a session for the client, then the page it asked for
    assert anon.get(target).status_code == 200
