"""A progress line for a running experiment, read from what its runs have written (no Ray).

Every few seconds :class:`Progress` prints one line of at most 79 characters, e.g.::

    [ 1m05s] evals 312/448  runs 3/7  holdout 0/7  eta 0m40s  best 0.5621 hcp/101309 de

``evals`` counts training evaluations recorded so far (a candidate counted once, at its first
rung) against the budget of every run; ``runs`` the runs that finished searching (a population run
writes its summary; a trial-mode run has recorded its budget of trials); ``holdout`` the runs
whose validation is written; ``eta`` the time left at the rate of evaluations recorded since the
line started; ``best`` the lowest top-fidelity training loss so far and whose it is.

A tick costs one ``stat`` per run folder: only folders whose modification time changed (a file
was added or replaced in them) are listed again, and only their new or replaced files are read
(parquet footers and one column), so a line stays cheap when the results hold 10^5 files.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

_TRAIN = re.compile(r"^gen-\d+-f(\d+)\.parquet$")
_SETTLE_NS = 2_000_000_000  # a folder changed this recently is listed again (coarse mtime clocks)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60:2d}m{s % 60:02d}s"


class _RunDir:
    """What one run's folder held at its last listing."""

    __slots__ = ("mtime", "listed", "files", "rows", "best", "holdout")

    def __init__(self):
        self.mtime, self.listed = None, 0
        self.files: dict[str, tuple] = {}  # name -> (mtime, rows at the first rung, best at the top rung)
        self.rows, self.best, self.holdout = 0, None, False


class Progress:
    """Context manager printing :meth:`line` every ``every`` seconds (``cfg``: the experiment;
    ``runs``: the run specs this execution owns, default all of ``cfg``)."""

    def __init__(self, root, cfg, every: float = 5.0, out=print, runs=None):
        self.root, self.cfg, self.every, self.out = Path(root), cfg, every, out
        self.runs = {r.run_id: r for r in (cfg.runs() if runs is None else runs)}
        self.top = len(cfg.simulation.fidelities) - 1
        self.total = len(self.runs) * cfg.budget.evaluations
        self._dirs: dict[str, _RunDir] = {}
        self._summaries: tuple = (None, set())  # (mtime of runs/, names)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.perf_counter()
        self._start_evals = None
        self.listings = 0  # folders listed so far (what a tick costs)

    def _finished(self) -> set:
        d = self.root / "runs"
        try:
            m = d.stat().st_mtime_ns
        except OSError:
            return set()
        if m != self._summaries[0] or time.time_ns() - m < _SETTLE_NS:
            self._summaries = (m, {f[:-5] for f in os.listdir(d) if f.endswith(".json")})
            self.listings += 1
        return self._summaries[1]

    def _update(self, d: Path, spec, state: _RunDir) -> None:
        try:
            m = d.stat().st_mtime_ns
        except OSError:
            return
        if m == state.mtime and state.listed - m >= _SETTLE_NS:
            return
        now = time.time_ns()
        names = os.listdir(d)
        self.listings += 1
        # population runs without successive halving write the top fidelity only
        first = self.top if spec.mode == "population" and not spec.optimizer.halving_eta else 0
        files = {}
        for name in names:
            mt = _TRAIN.match(name)
            if not mt:
                continue
            f = d / name
            try:
                fm = f.stat().st_mtime_ns
                old = state.files.get(name)
                if old is not None and old[0] == fm:
                    files[name] = old
                    continue
                rung = int(mt.group(1))
                rows = pq.ParquetFile(f).metadata.num_rows if rung == first else 0
                low = None
                if rung == self.top:
                    finite = [x for x in pq.read_table(f, columns=["loss"]).column("loss").to_pylist()
                              if x is not None]
                    low = min(finite) if finite else None
                files[name] = (fm, rows, low)
            except (OSError, ValueError):  # being replaced right now: list this folder again next tick
                now = 0
        state.files, state.mtime, state.listed = files, m, now
        state.rows = sum(v[1] for v in files.values())
        lows = [v[2] for v in files.values() if v[2] is not None]
        state.best = min(lows) if lows else None
        state.holdout = any(n.startswith("validation-") for n in names)

    def _scan(self):
        from .results import sanitise

        evals, best, who, holdout, done = 0, None, "", 0, 0
        finished = self._finished()
        ev = self.root / "evaluations"
        for run_id, spec in self.runs.items():
            name = sanitise(run_id)
            d = ev / name
            state = self._dirs.get(name)
            if state is None:
                if not d.is_dir():
                    continue
                state = self._dirs[name] = _RunDir()
            self._update(d, spec, state)
            evals += state.rows
            holdout += state.holdout
            if state.best is not None and (best is None or state.best < best):
                best, who = state.best, f"{spec.subject} {spec.optimizer.key}"
            done += name in finished or (spec.mode == "trial" and state.rows >= self.cfg.budget.evaluations)
        return evals, done, holdout, best, who

    def line(self) -> str:
        evals, done, holdout, best, who = self._scan()
        elapsed = time.perf_counter() - self.t0
        if self._start_evals is None:
            self._start_evals = evals
        parts = [f"[{_clock(elapsed)}]", f"evals {evals}/{self.total}", f"runs {done}/{len(self.runs)}"]
        if self.cfg.validation.top:
            parts.append(f"holdout {holdout}/{len(self.runs)}")
        new = evals - self._start_evals
        if 0 < new and evals < self.total and elapsed > 0:
            parts.append(f"eta {_clock((self.total - evals) * elapsed / new).strip()}")
        if best is not None:
            parts.append(f"best {best:.4g} {who}")
        return "  ".join(parts)[:79]

    def _loop(self):
        self.line()  # the baseline: evaluations already recorded (a resume) are not this run's rate
        while not self.stop.wait(self.every):
            self.out(self.line(), flush=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)
