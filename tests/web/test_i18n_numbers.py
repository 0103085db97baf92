"""The patient page's numbers: the fast path of `web.i18n.number` writes exactly what Babel writes."""

from __future__ import annotations

import random

import pytest

from web import i18n

SPECIAL = [0, 0.0, -0.0, 1, -1, 0.5, 1.5, 2.5, -2.5, 0.0125, 0.0135, 1.0005, -0.0004, 0.9995, 999.9995, 1234567.891]
SPECIAL += [1e-7, -1e-7, 12345678901.23456, 0.1 + 0.2, 3, -42, 10**9]


def _values() -> list[float | int]:
    rng = random.Random(13)
    found: list[float | int] = list(SPECIAL)
    found += [round(rng.uniform(0.3, 1.6), rng.randint(3, 6)) for _ in range(800)]  # BMD-like
    found += [rng.uniform(-60, 60) for _ in range(600)]  # percent changes, T-scores
    found += [rng.uniform(-1e7, 1e7) for _ in range(500)]
    found += [rng.randint(-(10**6), 10**6) for _ in range(200)]
    found += [rng.randint(-4000, 4000) / 8000 for _ in range(400)]  # exact ties at 3 decimals
    return found


@pytest.mark.parametrize("locale", ["en", "en_US", "en_GB", "zh_CN", "en_ZA", "en_CH", "en_IN", "en_DE"])
def test_number_is_what_babel_writes(locale: str) -> None:
    i18n.activate("zh_CN" if locale.startswith("zh") else "en", locale)
    for value in _values():
        for digits in (0, 1, 2, 3, 4):
            for signed in (False, True):
                assert i18n.number(value, digits, signed) == i18n.babel_number(value, digits, signed, locale), (
                    value,
                    digits,
                    signed,
                )


def test_the_fast_path_is_taken_for_the_plain_locales_only() -> None:
    assert i18n._plain_symbols("en") and i18n._plain_symbols("zh_CN") and i18n._plain_symbols("en_GB")
    assert not i18n._plain_symbols("en_ZA")  # a decimal comma: Babel writes it
