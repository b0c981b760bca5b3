"""Executions: which runs of an experiment one ``raybrain run`` (or ``resume``) owns, and its record.

A results folder ``storage/name`` holds the records of one experiment. An *execution* runs a
*selection* of the experiment's run grid into it: all runs, one shard of ``n`` (``--shard i/n``,
runs ``i-1, i-1+n, i-1+2n, …`` of the grid, 1-based as SLURM array indices usually are) or the runs
whose id matches a pattern (``--runs 'hcp-101309__*'``, :func:`fnmatch.fnmatchcase`). Selections of
one experiment never share a run, so shards on different nodes write disjoint files into the
same folder and their records merge into one dataframe with nothing lost or duplicated.

Rules that keep records from mixing:

* ``run`` refuses a folder that already holds records of any run of its selection
  (:func:`check_fresh`); ``--overwrite`` first moves the whole earlier experiment aside
  (:func:`move_aside`), it never deletes records.
* each selection has its own Tune state under ``tune/<key>`` and its own record
  ``executions/<key>.json`` (status ``running``, ``interrupted``, ``failed`` or ``complete``);
  ``resume`` of a complete selection has nothing to do (:func:`status`).
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

ALL = "all"


@dataclass(frozen=True)
class Selection:
    """A slice of an experiment's run grid: a shard ``(i, n)`` (1 <= i <= n) and/or an id pattern."""

    shard: Optional[tuple[int, int]] = None
    pattern: Optional[str] = None

    @classmethod
    def parse(cls, shard: str | None = None, pattern: str | None = None) -> "Selection":
        """From the command line's ``--shard i/n`` and ``--runs PATTERN``; ValueError names the option."""
        sh = None
        if shard is not None:
            m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
            if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
                raise ValueError(f"--shard: expects i/n with 1 <= i <= n (e.g. 2/3), got {shard!r}")
            sh = (int(m.group(1)), int(m.group(2)))
        if pattern is not None and not str(pattern).strip():
            raise ValueError("--runs: expects a run-id pattern such as 'hcp-101309__*', got an empty string")
        return cls(sh, pattern)

    @property
    def key(self) -> str:
        """Names this selection's Tune folder and execution record."""
        parts = []
        if self.shard:
            parts.append(f"shard-{self.shard[0]}-of-{self.shard[1]}")
        if self.pattern:
            import hashlib

            parts.append("runs-" + hashlib.sha1(self.pattern.encode()).hexdigest()[:10])
        return "_".join(parts) or ALL

    @property
    def is_all(self) -> bool:
        return self.shard is None and self.pattern is None

    def apply(self, specs: Sequence) -> list:
        """The selected runs of ``specs`` (objects with ``run_id``), in grid order."""
        out = list(specs)
        if self.shard:
            i, n = self.shard
            out = out[i - 1::n]
        if self.pattern:
            out = [s for s in out if fnmatch.fnmatchcase(s.run_id, self.pattern)]
        return out

    def describe(self) -> str:
        bits = []
        if self.shard:
            bits.append(f"shard {self.shard[0]}/{self.shard[1]}")
        if self.pattern:
            bits.append(f"runs {self.pattern!r}")
        return ", ".join(bits) or "all runs"

    def cli_args(self) -> str:
        """The command-line options that name this selection (leading space; empty for all runs)."""
        bits = []
        if self.shard:
            bits.append(f" --shard {self.shard[0]}/{self.shard[1]}")
        if self.pattern:
            bits.append(f" --runs '{self.pattern}'")
        return "".join(bits)

    def as_dict(self) -> dict:
        return {"shard": list(self.shard) if self.shard else None, "pattern": self.pattern, "key": self.key}


def tune_dir(root: Path, selection: Selection) -> Path:
    """Tune's state of ``selection`` (``root/tune`` for the whole experiment)."""
    return Path(root) / "tune" if selection.is_all else Path(root) / "tune" / selection.key


def _record_path(root: Path, selection: Selection) -> Path:
    return Path(root) / "executions" / f"{selection.key}.json"


def status(root: Path, selection: Selection) -> Optional[dict]:
    """The execution record of ``selection`` in ``root``, or None."""
    p = _record_path(root, selection)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot read this execution record ({e})") from None


def write_status(root: Path, selection: Selection, state: str, runs: Sequence[str], **extra) -> None:
    """Write (atomically) the execution record of ``selection``: ``state`` and when."""
    from .results import _atomic_write

    p = _record_path(root, selection)
    old = status(root, selection) or {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rec = {"selection": selection.as_dict(), "status": state, "runs": len(runs),
           "started": old.get("started", now), "updated": now, **extra}
    text = json.dumps(rec, indent=1)
    _atomic_write(p, lambda q: q.write_text(text))


def executions(root: Path) -> dict[str, dict]:
    """Every execution record in ``root``: ``{key: record}``."""
    d = Path(root) / "executions"
    out = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else ():
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            out[p.stem] = {"status": "unreadable"}
    return out


def held_records(root: Path, selection: Selection, run_ids: Sequence[str]) -> list[str]:
    """What in ``root`` already belongs to ``selection``: its Tune state, its execution record, or
    records (evaluation files, run summaries, checkpoints) of any of its runs. Empty: nothing."""
    from .results import sanitise

    root = Path(root)
    found = []
    if _record_path(root, selection).exists():
        found.append(str(_record_path(root, selection).relative_to(root)))
    td = tune_dir(root, selection)
    if selection.is_all and (root / "tune").is_dir() and any((root / "tune").iterdir()):
        found.append("tune/")
    elif not selection.is_all and td.is_dir():
        found.append(str(td.relative_to(root)) + "/")
    ev, summaries = root / "evaluations", root / "runs"
    n = 0
    for r in run_ids:
        d = ev / sanitise(r)
        if ((d.is_dir() and any(d.iterdir())) or (summaries / f"{sanitise(r)}.json").exists()
                or (root / "checkpoints" / sanitise(r)).exists()):
            n += 1
    if n:
        found.append(f"records of {n} run(s)")
    return found


def check_fresh(root: Path, selection: Selection, run_ids: Sequence[str], source: str) -> None:
    """Refuse (one-line ValueError) to start ``selection`` in a folder that holds any of its records."""
    found = held_records(root, selection, run_ids)
    if found:
        what = "" if selection.is_all else f" ({selection.describe()})"
        opts = selection.cli_args()
        raise ValueError(f"{root} already holds records of this experiment{what}: {', '.join(found)}; "
                         f"'raybrain resume {root}{opts}' continues them, or 'raybrain run {source}{opts} "
                         f"--overwrite' moves them aside and starts again")


def move_aside(root: Path) -> Optional[Path]:
    """Move the results folder ``root`` to ``<root>.old-<UTC time>`` (never deletes); returns the
    new place, or None when there was nothing to move."""
    root = Path(root)
    if not root.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    dest = root.with_name(f"{root.name}.old-{stamp}")
    k = 1
    while dest.exists():
        dest = root.with_name(f"{root.name}.old-{stamp}-{k}")
        k += 1
    os.replace(root, dest)
    return dest


def count_evaluations(root: Path, run_ids: Sequence[str] | None = None) -> int:
    """Evaluations recorded under ``root`` (of ``run_ids`` only, if given), from the parquet
    footers: one row per evaluation, a (run, generation, fidelity) file counted once."""
    import pyarrow.parquet as pq

    from .results import sanitise

    ev = Path(root) / "evaluations"
    if not ev.is_dir():
        return 0
    dirs = [ev / sanitise(r) for r in run_ids] if run_ids is not None else [d for d in ev.iterdir()]
    n = 0
    for d in dirs:
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if f.suffix == ".parquet" and not f.name.startswith("."):
                try:
                    n += pq.ParquetFile(f).metadata.num_rows
                except (OSError, ValueError):
                    continue
    return n
