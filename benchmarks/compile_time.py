"""Compile time of the fused kernels in a fresh process, with and without the on-disk kernel cache.

Runs the same snippet (build the quickstart objective, evaluate a batch of 16 twice) in two fresh
Python processes, one after the other, sharing an empty temporary kernel cache directory
(``RAYBRAIN_CACHE_DIR``): the first process compiles the kernel and writes it to the cache, the
second loads it. Prints one JSON line per process:

    {"process": "first"|"second", "import_build_s": ..., "first_eval_s": ..., "second_eval_s": ...}

``first_eval_s - second_eval_s`` is about the cost of getting the kernel: compiling it (first
process) or loading it from disk (second). ``--no-cache`` runs both processes with the cache
turned off (every process compiles, as before the cache existed).

``--variants CONFIG`` instead runs the whole experiment ``CONFIG`` (``raybrain run`` in a
temporary working directory) with an empty cache directory and counts the kernel variants it compiled (the
generated modules written there), with their names:

    {"experiment": ..., "variants": 2, "names": [...], "wall_s": ...}

    python benchmarks/compile_time.py
    python benchmarks/compile_time.py --no-cache
    python benchmarks/compile_time.py --variants experiments/quickstart.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SNIPPET = r'''
import json, sys, time
t = time.perf_counter()
from raybrain.experiment import load_config
cfg = load_config(sys.argv[1])
o = cfg.build_objective(sys.argv[2], 0)
t1 = time.perf_counter()
import numpy as np
o.evaluate(np.array([[1.5, 0.005]] * 16), seed=0)
t2 = time.perf_counter()
o.evaluate(np.array([[1.5, 0.005]] * 16), seed=0)
t3 = time.perf_counter()
print(json.dumps({"import_build_s": round(t1 - t, 3), "first_eval_s": round(t2 - t1, 3),
                  "second_eval_s": round(t3 - t2, 3)}))
'''


def run_once(cache_dir: str, config: str, subject: str) -> dict:
    env = dict(os.environ, RAYBRAIN_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", SNIPPET, config, subject], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def count_variants(config: str) -> dict:
    """Run the experiment ``config`` with an empty kernel cache; list the variants it compiled."""
    import glob
    import time

    with tempfile.TemporaryDirectory(prefix="raybrain-kernels-") as cache, \
            tempfile.TemporaryDirectory(prefix="raybrain-results-") as out:
        env = dict(os.environ, RAYBRAIN_CACHE_DIR=cache)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "raybrain.cli", "run", os.path.abspath(config)], cwd=out, env=env,
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"raybrain run failed:\n{proc.stderr[-3000:]}")
        names = sorted(os.path.basename(p).rsplit("_", 1)[0] for p in glob.glob(os.path.join(cache, "*.py")))
    return {"experiment": config, "variants": len(names), "names": names, "wall_s": round(wall, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--subject", default="hcp/101309")
    ap.add_argument("--no-cache", action="store_true", help="turn the kernel cache off in both processes")
    ap.add_argument("--variants", metavar="CONFIG", help="count the kernel variants one experiment compiles")
    args = ap.parse_args(argv)
    if args.variants:
        print(json.dumps(count_variants(args.variants)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="raybrain-kernels-") as tmp:
        cache_dir = "" if args.no_cache else tmp
        for process in ("first", "second"):
            rec = {"process": process, "cache": not args.no_cache, **run_once(cache_dir, args.config, args.subject)}
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
