"""How an unexpected exception is logged: its type and where it was raised, never its text.

Database drivers quote the statement's parameters in their messages (a patient's name, ID or
birth date being stored), readers quote file bytes, OS errors quote paths built from received
names. A traceback prints all of that. `describe` gives what an operator needs to find the
fault, `file.py:line` of the innermost frame, and nothing a patient could be recognised by.
"""

from __future__ import annotations

import os
import traceback


def describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"
