"""Small shared wording helpers: counts with the right plural and numbers as people read them."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 segment"``, ``"2 segments"``; ``many`` for an irregular plural (``plural(n, "index",
    "indexes")``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def fmt_num(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, never ``-0.000``: a value that rounds to zero prints as zero."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"
