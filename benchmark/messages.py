"""The pieces of the one-line messages of ``clbench``, defined once: the first line of a
text, an exception as one line, and a "did you mean" hint. No imports of ours, so that any
module of the harness can use them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def first_line(text: Any) -> str:
    """The first line of ``text`` (stripped), or '' when it is empty."""
    lines = str(text if text is not None else "").strip().splitlines()
    return lines[0] if lines else ""


def error_line(exc: BaseException) -> str:
    """``exc`` as one line: ``Type: first line of its message``."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def closest(word: str, allowed: Iterable[Any]) -> str:
    """A " (did you mean 'x'?)" hint for a misspelt ``word``, or ''."""
    m = difflib.get_close_matches(str(word), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean '{m[0]}'?)" if m else ""
