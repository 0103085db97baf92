"""Filters read as people fill them: empty boxes are no filter, never a raw 422; the refused-
comparison CSV holds exactly the rows the page shows for the same filters."""

from __future__ import annotations

import io
from collections.abc import Callable

import pandas as pd
from fastapi.testclient import TestClient

from tests.web.seed import REPLACED, Seeded

Login = Callable[[str], TestClient]
EMPTY = {"device": "", "start": "", "end": "", "status": "", "year": ""}


def test_refused_comparisons_tolerate_empty_fields(login: Login) -> None:
    client = login("qa")
    page = client.get("/qa/comparisons", params=EMPTY)
    assert page.status_code == 200 and "6 refused comparisons" in page.text
    csv = client.get("/qa/comparisons.csv", params=EMPTY)
    assert csv.status_code == 200 and csv.text.count(REPLACED) == 6
    assert client.get("/api/qa/comparisons", params=EMPTY).json()["comparisons"]


def test_refused_comparisons_bad_date_is_said_not_422(login: Login) -> None:
    client = login("qa")
    page = client.get("/qa/comparisons", params={**EMPTY, "start": "2019-13-45"})
    assert page.status_code == 200
    assert "is not a date" in page.text and "6 refused comparisons" in page.text
    api = client.get("/api/qa/comparisons", params={"start": "2019-13-45"})
    assert api.status_code == 422 and "is not a date" in api.json()["detail"]


def test_refused_filters_by_machine_year_and_reason_csv_matches_page(login: Login, seeded: Seeded) -> None:
    client = login("qa")
    new = seeded.device_ids["200457"]
    # the later exams of the refused comparisons are of 2016-10-03 (first on the new machine)
    in_2016 = {"device": str(new), "year": "2016", "start": "", "end": "", "status": ""}
    page = client.get("/qa/comparisons", params=in_2016)
    assert "6 refused comparisons" in page.text and "2016-01-01" in page.text
    assert client.get("/qa/comparisons", params={**in_2016, "year": "2017"}).text.count('data-label="Patient"') == 0
    unknown = {**in_2016, "status": "rejected_unknown_machine"}
    assert "0 refused comparisons" in client.get("/qa/comparisons", params=unknown).text
    csv = client.get("/qa/comparisons.csv", params=in_2016)
    assert 'filename="refused-comparisons_SN-200457_2016-01-01_to_2016-12-31.csv"' in csv.headers["content-disposition"]
    frame = pd.read_csv(io.StringIO(csv.text), dtype=str)
    shown = page.text.count('data-label="Patient"')
    assert len(frame) == shown == 6
    assert set(frame["to_date"]) == {"2016-10-03"} and set(frame["status"]) == {"rejected_cross_machine"}
    assert list(frame.columns[:3]) == ["patient_id", "issuer", "site"]
    none = client.get("/qa/comparisons.csv", params={**in_2016, "status": "rejected_unknown_machine"}).text
    assert none.strip().count("\n") == 0  # the header alone


def test_worklist_tolerates_empty_and_bad_dates(login: Login) -> None:
    client = login("clin")
    for route in ("/worklist", "/worklist.csv", "/worklist.ics", "/api/worklist"):
        response = client.get(route, params={"start": "", "end": "", "overdue": ""})
        assert response.status_code == 200, (route, response.text[:200])
    page = client.get("/worklist", params={"start": "soon", "end": ""})
    assert page.status_code == 200 and "is not a date" in page.text
    assert client.get("/api/worklist", params={"start": "soon"}).status_code == 422


def test_patients_list_tolerates_empty_fields(login: Login) -> None:
    client = login("clin")
    for route in ("/patients", "/api/patients"):
        response = client.get(route, params={"q": "", "overdue": "", "alerts": "", "page": ""})
        assert response.status_code == 200, route
