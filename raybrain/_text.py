"""Small text helpers shared by the modules that validate input."""
from __future__ import annotations

import difflib


def did_you_mean(word, choices, list_up_to: int = 12) -> str:
    """A hint for an unknown ``word``: `` (did you mean 'x'?)`` for the closest of ``choices``
    (case-insensitive), else `` (choose from a, b, c)`` when there are at most ``list_up_to``
    choices, else nothing."""
    choices = [str(c) for c in choices]
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lower), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {lower[close[0]]!r}?)"
    return f" (choose from {', '.join(choices)})" if choices and len(choices) <= list_up_to else ""
