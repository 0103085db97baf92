"""Machine identity: when two exams were measured on the same densitometer (docs/architecture.md, "Vocabulary").

BMD differs between manufacturers by up to ~10 % and between units of one model by a few
per cent, so a comparison is only trusted on the very same unit. Vendors spell their own name
several ways across software versions and file formats ("HOLOGIC", "Hologic, Inc."; "GE
Healthcare", "GE Medical Systems", "Lunar"), so names are normalised before comparing; the
serial number is never guessed, and without one the unit is unknown.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from monitor.model import Machine

DIFFERENT_MANUFACTURERS = "different manufacturers"
DIFFERENT_MODELS = "different models"
DIFFERENT_SERIALS = "same model, different serial numbers"
MISSING_SERIAL = "serial number missing: machine identity unknown"

# Canonical maker -> spellings seen in DICOM Manufacturer, SR and PDF footers (already normalised).
_MAKER_ALIASES: dict[str, tuple[str, ...]] = {
    "hologic": ("hologic",),
    "ge": ("ge", "ge healthcare", "ge medical systems", "ge lunar", "lunar", "general electric"),
    "norland": ("norland", "norland stratec", "stratec"),
    "osteosys": ("osteosys",),
    "medilink": ("medilink",),
    "dms": ("dms", "apelem", "dms imaging"),
}
_ALIAS_TO_MAKER = {alias: maker for maker, aliases in _MAKER_ALIASES.items() for alias in aliases}
_CORPORATE_WORDS = {
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "ltd",
    "limited",
    "llc",
    "gmbh",
    "sa",
    "ag",
    "medical",
    "systems",
    "system",
    "healthcare",
}


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^\w+]+", " ", folded).split()


# Normalising is pure and a patient's evaluation asks it again for every pair of exams and every
# site (uncached, the serial's regular expression was most of an evaluation's CPU): cached, it
# costs nothing after the first exam of a machine (a few hundred units per site).
@lru_cache(maxsize=4096)
def normalize_manufacturer(name: str) -> str:
    """A maker key: "HOLOGIC" and "Hologic Inc." -> "hologic"; "GE Medical Systems", "Lunar" -> "ge"."""
    words = _words(name)
    joined = " ".join(words)
    if joined in _ALIAS_TO_MAKER:
        return _ALIAS_TO_MAKER[joined]
    core = [w for w in words if w not in _CORPORATE_WORDS]
    # Longest alias prefix wins, so "ge lunar" is matched before "ge".
    for size in range(len(core), 0, -1):
        candidate = " ".join(core[:size])
        if candidate in _ALIAS_TO_MAKER:
            return _ALIAS_TO_MAKER[candidate]
    return " ".join(core) or joined


@lru_cache(maxsize=4096)
def normalize_model(manufacturer: str, model: str) -> str:
    """A model key without the maker's name in front ("Hologic Horizon Ci" -> "horizon ci").

    GE writes "Lunar" both as a maker and as part of its model names ("Lunar iDXA"), so every
    leading word that names the same maker is dropped, as long as something remains.
    """
    maker = normalize_manufacturer(manufacturer)
    words = _words(model)
    while len(words) > 1:
        head = words[0]
        two = " ".join(words[:2])
        if len(words) > 2 and _ALIAS_TO_MAKER.get(two) == maker:
            words = words[2:]
        elif _ALIAS_TO_MAKER.get(head) == maker or head == maker or head in _CORPORATE_WORDS:
            words = words[1:]
        else:
            break
    return " ".join(words)


@lru_cache(maxsize=4096)
def normalize_serial(serial: str | None) -> str | None:
    """Case and whitespace do not count in a serial; an empty serial is no serial."""
    if serial is None:
        return None
    key = re.sub(r"\s+", "", unicodedata.normalize("NFKC", serial)).casefold()
    return key or None


def has_identity(machine: Machine) -> bool:
    """Only a machine with a serial number can ever be the same as another."""
    return normalize_serial(machine.serial) is not None


def same_model(a: Machine, b: Machine) -> bool:
    return normalize_manufacturer(a.manufacturer) == normalize_manufacturer(b.manufacturer) and normalize_model(
        a.manufacturer, a.model
    ) == normalize_model(b.manufacturer, b.model)


# A patient's evaluation asks this for every pair of exams, every site and every LSC it looks up
# (most of the monitor's calls, bench/evaluation.py): cached by the two machines' values, like the
# normalisers above (a hospital has a few dozen units).
@lru_cache(maxsize=4096)
def why_different(a: Machine, b: Machine) -> str | None:
    """The phrase saying why two machines are not known to be one unit, or None when they are.

    The missing serial is named first: even if the makers differ, the status the comparison
    gets (`rejected_unknown_machine`) comes from the unknown identity.
    """
    if not has_identity(a) or not has_identity(b):
        return MISSING_SERIAL
    if normalize_manufacturer(a.manufacturer) != normalize_manufacturer(b.manufacturer):
        return DIFFERENT_MANUFACTURERS
    if normalize_model(a.manufacturer, a.model) != normalize_model(b.manufacturer, b.model):
        return DIFFERENT_MODELS
    if normalize_serial(a.serial) != normalize_serial(b.serial):
        return DIFFERENT_SERIALS
    return None


def same_machine(a: Machine, b: Machine) -> bool:
    """Manufacturer, model and serial all match; a machine without a serial matches nothing."""
    return why_different(a, b) is None


def machine_key(machine: Machine) -> tuple[str, str, str] | None:
    """A hashable identity for grouping, or None for a machine without a serial."""
    serial = normalize_serial(machine.serial)
    if serial is None:
        return None
    return (
        normalize_manufacturer(machine.manufacturer),
        normalize_model(machine.manufacturer, machine.model),
        serial,
    )
