"""Argument checks shared by the public entry points (one wording for every error of the same kind)."""
from __future__ import annotations


def require_ints(**values) -> None:
    """TypeError naming the first argument that is not a plain int (bool is refused: True is not a count)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
