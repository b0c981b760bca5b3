"""Scale of the run layer: what Tune keeps, and what the driver costs, per run of a cohort study.

An experiment of N runs — N user subjects (``subjects.paths``, every one the same SC/BOLD files
of hcp/101309 under its own name, so each run builds its own objective as a cohort's would) × one
optimizer (``--optimizers``: one experiment each) × one seed — with simulations so small that the
run layer dominates: the Hopf model on the array path, 21.6 s of BOLD at dt 0.08 s, loss
``fc_corr``, population mode, 2 generations of 4, then the holdout stage (the best candidate re-simulated with fresh noise). Each N runs in a
fresh driver process (``run_experiment`` on a private local Ray with ``--num-cpus`` CPUs) and
prints one JSON line:

* ``tune_bytes_per_run``, ``tune_files_per_run`` — everything under ``RESULTS/tune`` after the
  experiment (Tune's experiment and searcher state), divided by N;
  ``peak_state_bytes_per_run``, ``peak_state_files_per_run`` — the most that ``RESULTS/tune`` and
  the runs' checkpoints (``RESULTS/checkpoints``, removed when the experiment completes) held
  together while it ran (sampled every 2 s, and at the end); raybrain's own parquet records are
  counted apart (``records_bytes_per_run``, ``records_files_per_run``);
* ``driver_peak_rss_mb`` — the driver process's peak resident memory (``VmHWM``; Ray's own
  processes are not the driver);
* ``wall_s`` — ``run_experiment`` end to end (Ray start-up included), ``runs_per_s``;
* ``sim_cpu_s`` — the evaluations' own wall time as recorded (``wall_s`` column, summed);
* ``overhead_per_run_s`` — ``(wall_s × cpus − sim_cpu_s) / N``: CPU-seconds per run spent on
  anything but evaluating (Tune scheduling, trial start, objective building, checkpoints, records).

    python benchmarks/scale.py                      # N = 100 and 1000, random and cmaes, on 2 CPUs
    python benchmarks/scale.py --runs 100 --optimizers random  # one size, one optimizer
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def config(n: int, base: Path, optimizer: str = "cmaes") -> dict:
    import numpy as np

    from raybrain.data import load_subject

    s = load_subject("hcp/101309")
    np.save(base / "sc.npy", s.sc)
    np.save(base / "bold.npy", s.bold)
    paths = [{"name": f"sub-{i:05d}", "sc": str(base / "sc.npy"), "bold": str(base / "bold.npy"), "tr": s.tr}
             for i in range(n)]
    return {"name": f"scale{n}", "storage": str(base / "results"), "subjects": {"paths": paths},
            "model": {"name": "hopf"},
            "parametrisation": {"kind": "global", "names": ["G", "sigma"],
                                "bounds": {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}},
            "loss": "fc_corr",
            "simulation": {"fidelities": [{"duration": 21.6, "dt": 0.08}], "burn_in": 0.0, "noise": "common"},
            "optimizers": [{"name": optimizer, "population": 4}], "budget": {"evaluations": 8},
            "seeds": [0], "validation": {"top": 1}}


def tree(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return sum(p.stat().st_size for p in files), len(files)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(n: int, cpus: int, optimizer: str) -> dict:
    from raybrain import results as R
    from raybrain.experiment import ExperimentConfig
    from raybrain.tuning import run_experiment

    with tempfile.TemporaryDirectory(prefix="raybrain-scale-") as d:
        base = Path(d)
        cfg = ExperimentConfig.model_validate(config(n, base, optimizer))
        root_dir = Path(cfg.storage) / cfg.name
        peak = {"bytes": 0, "files": 0}
        done = threading.Event()

        def watch():  # Tune state and checkpoints while the experiment runs (removed when it ends)
            while not done.wait(2.0):
                b = f = 0
                for sub in ("tune", "checkpoints"):
                    x, y = tree(root_dir / sub)
                    b, f = b + x, f + y
                peak["bytes"], peak["files"] = max(peak["bytes"], b), max(peak["files"], f)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        root, errors = run_experiment(cfg, num_cpus=cpus)
        wall = time.perf_counter() - t0
        done.set()
        watcher.join()
        tb, tf = tree(Path(root) / "tune")  # what is kept; the peak is at least that
        peak["bytes"], peak["files"] = max(peak["bytes"], tb), max(peak["files"], tf)
        rss = peak_rss_mb()
        rb, rf = tree(Path(root) / "evaluations")
        sb, sf = tree(Path(root) / "runs")
        ev = R.load(root).evaluations
        sim = float(ev["wall_s"].sum())
        import ray

        ray.shutdown()
    return {"bench": "scale", "runs": n, "cpus": cpus, "optimizer": optimizer, "failed_trials": int(errors), "evaluations": int(len(ev)),
            "tune_bytes_per_run": round(tb / n, 1), "tune_files_per_run": round(tf / n, 3),
            "peak_state_bytes_per_run": round(peak["bytes"] / n, 1), "peak_state_files_per_run": round(peak["files"] / n, 3),
            "records_bytes_per_run": round((rb + sb) / n, 1), "records_files_per_run": round((rf + sf) / n, 3),
            "driver_peak_rss_mb": round(rss, 1), "wall_s": round(wall, 2), "runs_per_s": round(n / wall, 3),
            "sim_cpu_s": round(sim, 2), "overhead_per_run_s": round((wall * cpus - sim) / n, 4),
            "config_json_bytes": len(cfg.model_dump_json())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--optimizers", nargs="+", default=["random", "cmaes"],
                    help="one experiment per optimizer and size (the optimizer's checkpointed state is part "
                    "of what Tune keeps: a few hundred bytes for random, ~11 KB for nevergrad's CMA)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.cpus, a.optimizers[0])), flush=True)
        return 0
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a private Ray per size: the driver's cost, nothing shared
    for opt in a.optimizers:
        for n in a.runs:
            r = subprocess.run([sys.executable, __file__, "--child", str(n), "--cpus", str(a.cpus), "--optimizers", opt],
                               env=env, capture_output=True, text=True)
            lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
            if r.returncode or not lines:
                print(json.dumps({"bench": "scale", "runs": n, "optimizer": opt,
                                  "error": r.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            print(lines[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
