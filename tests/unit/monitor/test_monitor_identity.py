import pytest

from monitor.identity import (
    DIFFERENT_MANUFACTURERS,
    DIFFERENT_MODELS,
    DIFFERENT_SERIALS,
    MISSING_SERIAL,
    machine_key,
    normalize_manufacturer,
    normalize_model,
    same_machine,
    why_different,
)
from monitor.model import Machine


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HOLOGIC", "Hologic Inc."),
        ("Hologic, Inc.", " hologic "),
        ("GE Healthcare", "GE Medical Systems"),
        ("GE Healthcare", "Lunar"),
        ("GE Medical Systems", "GE Lunar"),
        ("OsteoSys", "OsteoSys Co., Ltd."),
        ("Norland", "Norland Medical Systems"),
    ],
)
def test_manufacturer_spellings_match(a: str, b: str) -> None:
    assert normalize_manufacturer(a) == normalize_manufacturer(b)


@pytest.mark.parametrize(("a", "b"), [("HOLOGIC", "GE Healthcare"), ("Lunar", "Norland"), ("OsteoSys", "Hologic")])
def test_different_manufacturers_differ(a: str, b: str) -> None:
    assert normalize_manufacturer(a) != normalize_manufacturer(b)


@pytest.mark.parametrize(
    ("maker", "a", "b"),
    [
        ("Hologic", "Hologic Horizon Ci", "Horizon Ci"),
        ("HOLOGIC", "horizon  CI", "Horizon Ci"),
        ("GE Healthcare", "Lunar iDXA", "iDXA"),
        ("GE Healthcare", "GE Lunar Prodigy", "Lunar Prodigy"),
    ],
)
def test_model_with_maker_prefix_matches(maker: str, a: str, b: str) -> None:
    assert normalize_model(maker, a) == normalize_model(maker, b)


def test_horizon_models_stay_distinct() -> None:
    assert normalize_model("Hologic", "Horizon A") != normalize_model("Hologic", "Horizon Ci")


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        (
            Machine("HOLOGIC", "Horizon Ci", "301234M"),
            Machine("Hologic Inc.", "Hologic Horizon Ci", " 301234m "),
            None,
        ),
        (Machine("GE Healthcare", "Lunar iDXA", "ME+1"), Machine("Lunar", "iDXA", "me+1"), None),
        (
            Machine("HOLOGIC", "Horizon Ci", "1"),
            Machine("GE Healthcare", "Horizon Ci", "1"),
            DIFFERENT_MANUFACTURERS,
        ),
        (
            Machine("HOLOGIC", "Discovery SL", "45678"),
            Machine("HOLOGIC", "Horizon W", "200457"),
            DIFFERENT_MODELS,
        ),
        (
            Machine("GE Healthcare", "Lunar iDXA", "ME+212290"),
            Machine("GE Healthcare", "Lunar iDXA", "ME+200117"),
            DIFFERENT_SERIALS,
        ),
        (
            Machine("GE Healthcare", "Lunar iDXA", None),
            Machine("GE Healthcare", "Lunar iDXA", "ME+215518"),
            MISSING_SERIAL,
        ),
        (
            Machine("GE Healthcare", "Lunar iDXA", None),
            Machine("GE Healthcare", "Lunar iDXA", None),
            MISSING_SERIAL,
        ),
        (
            Machine("GE Healthcare", "Lunar iDXA", "  "),
            Machine("GE Healthcare", "Lunar iDXA", "  "),
            MISSING_SERIAL,
        ),
        (Machine("HOLOGIC", "Horizon Ci", None), Machine("GE Healthcare", "Prodigy", "9"), MISSING_SERIAL),
    ],
)
def test_why_different(a: Machine, b: Machine, why: str | None) -> None:
    assert why_different(a, b) == why
    assert why_different(b, a) == why
    assert same_machine(a, b) is (why is None)


def test_missing_serial_is_never_the_same_even_as_itself() -> None:
    m = Machine("GE Healthcare", "Lunar iDXA", None)
    assert not same_machine(m, m)
    assert machine_key(m) is None


def test_machine_key_groups_spellings() -> None:
    assert machine_key(Machine("HOLOGIC", "Horizon Ci", "301234M")) == machine_key(
        Machine("Hologic, Inc.", "Hologic Horizon Ci", "301234m")
    )
