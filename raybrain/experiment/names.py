"""The names an experiment config may refer to: bundled subjects and datasets, optimizers, the
group targets, and the characters a run id may hold.

``subjects.ids`` takes a bundled subject (``"hcp/101309"`` or its bare id ``"101309"``) or a whole
dataset (:data:`DATASET_KEYS`); ``optimizers[].name`` a key of ``raybrain.search.OPTIMIZERS``
(:func:`known_optimizers`); :data:`GROUP` names the group-average targets (``"group"``,
``"group/train"``, ...); :func:`sanitise` makes a subject or optimizer name safe in a run id.
"""
from __future__ import annotations

import functools
import re

from .._text import did_you_mean as _did_you_mean

__all__ = ["known_optimizers", "sanitise", "FALLBACK_OPTIMIZERS", "SCHEDULERS", "DATASET_KEYS", "GROUP"]

#: Optimizer names accepted when :mod:`raybrain.search` cannot be imported (its registry wins).
FALLBACK_OPTIMIZERS = ("random", "grid", "cmaes", "de", "pso", "tpe", "optuna-cmaes", "hyperopt-tpe",
                       "bayesopt")
SCHEDULERS = ("fifo", "asha", "hyperband", "median")
DATASET_KEYS = ("hcp", "gw", "all")
GROUP = "group"


@functools.lru_cache(maxsize=1)
def _bundled() -> dict[str, dict]:
    from ..data import describe

    return {r["name"]: r for r in describe()}


def _resolve_bundled(name: str) -> str:
    """Full bundled name of ``name`` (``"101309"`` → ``"hcp/101309"``) or a ValueError."""
    from ..data.bundled import resolve_name

    full = resolve_name(name)
    if full is not None:
        return full
    rows = _bundled()
    raise ValueError(f"unknown bundled subject {name!r}{_did_you_mean(name, list(rows) + list(DATASET_KEYS))}")


def _expand_ids(ids) -> list[str]:
    out = []
    for i in ids:
        if i == "all":
            out += list(_bundled())
        elif i in DATASET_KEYS:
            out += [n for n, r in _bundled().items() if r["dataset"] == i]
        else:
            out.append(_resolve_bundled(i))
    return list(dict.fromkeys(out))


def known_optimizers() -> list[str]:
    """Names in ``raybrain.search.OPTIMIZERS``, or :data:`FALLBACK_OPTIMIZERS` without it."""
    reg = _registry()
    return list(reg) if reg is not None else list(FALLBACK_OPTIMIZERS)


def _registry():
    try:
        from ..search import OPTIMIZERS
    except ImportError:
        return None
    return OPTIMIZERS


def sanitise(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "-"


def _bare_id(n: str, names: list[str]) -> str | None:
    """The one name of ``names`` whose id after the dataset prefix is ``n`` (``"101309"`` →
    ``"hcp/101309"``), else None."""
    hits = [m for m in names if m.split("/", 1)[-1] == n]
    return hits[0] if len(hits) == 1 else None
