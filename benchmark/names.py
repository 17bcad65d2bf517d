"""One helper for file and folder names made from what users typed (config names, labels)."""

from __future__ import annotations

import re


def safe_name(text: str, *, fallback: str, limit: int | None = 80) -> str:
    """``text`` with every run of characters other than letters, digits, '.', '_' and '-'
    replaced by '-', stripped of leading and trailing '.' and '-', cut to ``limit`` characters;
    ``fallback`` where nothing is left."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-")
    return (safe if limit is None else safe[:limit]) or fallback
