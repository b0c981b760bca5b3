"""A progress line for a running experiment, read from what its runs have written (no Ray).

Every few seconds :class:`Progress` prints one line of at most 79 characters, e.g.::

    [ 1m05s] evals 312/448  runs 3/7  holdout 0/7  best 0.5621 hcp/101309 de

``evals`` counts training evaluations recorded so far (a candidate counted once, at its first
rung) against the budget of every run; ``runs`` the runs that finished searching (a population run
writes its summary; a trial-mode run has recorded its budget of trials); ``holdout`` the runs
whose validation is written;
``best`` the lowest top-fidelity training loss so far and whose it is. Files are read once each
(parquet footers and one column), so a line costs little even for a large study.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

_TRAIN = re.compile(r"^gen-\d+-f(\d+)\.parquet$")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60:2d}m{s % 60:02d}s"


class Progress:
    """Context manager printing :meth:`line` every ``every`` seconds (``cfg``: the experiment)."""

    def __init__(self, root, cfg, every: float = 5.0, out=print):
        self.root, self.cfg, self.every, self.out = Path(root), cfg, every, out
        self.runs = {r.run_id: r for r in cfg.runs()}
        self.top = len(cfg.simulation.fidelities) - 1
        self.total = len(self.runs) * cfg.budget.evaluations
        self._seen: dict[Path, tuple] = {}  # file -> (mtime, run dir, rows at rung 0, best at top, who)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.perf_counter()

    def _scan(self):
        from .results import sanitise

        specs = {sanitise(r): s for r, s in self.runs.items()}
        evals, best, who, holdout, done = 0, None, "", 0, 0
        summaries = self.root / "runs"
        finished = {f.stem for f in summaries.glob("*.json")} if summaries.is_dir() else set()
        ev = self.root / "evaluations"
        for d in (ev.iterdir() if ev.is_dir() else ()):
            spec = specs.get(d.name)
            if spec is None or not d.is_dir():
                continue
            # population runs without successive halving write the top fidelity only
            first = self.top if spec.mode == "population" and not spec.optimizer.halving_eta else 0
            n_run, files = 0, list(d.iterdir())
            holdout += any(f.name.startswith("validation-") for f in files)
            for f in files:
                m = _TRAIN.match(f.name)
                if not m:
                    continue
                try:
                    mtime = f.stat().st_mtime_ns
                    if self._seen.get(f, (None,))[0] != mtime:
                        rung = int(m.group(1))
                        rows = pq.ParquetFile(f).metadata.num_rows if rung == first else 0
                        low = None
                        if rung == self.top:
                            finite = [x for x in pq.read_table(f, columns=["loss"]).column("loss").to_pylist()
                                      if x is not None]
                            low = min(finite) if finite else None
                        self._seen[f] = (mtime, rows, low)
                except (OSError, ValueError):  # being replaced right now; read it next time
                    continue
                _, rows, low = self._seen[f]
                n_run += rows
                if low is not None and (best is None or low < best):
                    best, who = low, f"{spec.subject} {spec.optimizer.key}"
            evals += n_run
            done += d.name in finished or (spec.mode == "trial" and n_run >= self.cfg.budget.evaluations)
        return evals, done, holdout, best, who

    def line(self) -> str:
        evals, done, holdout, best, who = self._scan()
        parts = [f"[{_clock(time.perf_counter() - self.t0)}]", f"evals {evals}/{self.total}",
                 f"runs {done}/{len(self.runs)}"]
        if self.cfg.validation.top:
            parts.append(f"holdout {holdout}/{len(self.runs)}")
        if best is not None:
            parts.append(f"best {best:.4g} {who}")
        return "  ".join(parts)[:79]

    def _loop(self):
        while not self.stop.wait(self.every):
            self.out(self.line(), flush=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)
