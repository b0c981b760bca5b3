"""Coalesced evaluation through the evaluator actor vs one direct batched call of the same size.

K callers (Ray tasks, ``num_cpus=0``) each ask ``raybrain.evaluator.remote_evaluate`` for B
candidates at the same time; the node's evaluator actor gathers them (window ``--window-ms``) and
runs them as one coalesced batch (the callers alternate between two bundled subjects, each with its
own seed, so the batch really mixes connectomes and noise keys). That is compared with one direct
``Objective.evaluate`` of K·B candidates in this process (the best a single caller could do) and
with K separate direct calls of B candidates one after another (no coalescing). On a CPU-only
machine everything runs on NumPy (the fused numba kernel for rWW).

One JSON line per K::

    {"callers": K, "candidates_per_caller": B, "total_candidates": K*B, "model": ..., "dtype": ...,
     "exact": ..., "actor_wall_s": ..., "direct_wall_s": ..., "separate_wall_s": ...,
     "throughput_ratio": direct_wall_s / actor_wall_s, "batches": gathered batches per round,
     "launches": simulation launches per round}

Walls are medians over ``--rounds`` rounds after one warm-up round (worker start-up, kernel
loading and objective construction excluded).

    .venv/bin/python benchmarks/coalescing.py --callers 1 2 4 8 --candidates 4
    .venv/bin/python benchmarks/coalescing.py --model hopf --callers 4 16 --candidates 8
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

SUBJECTS = ["hcp/101309", "hcp/102311"]


def experiment(model: str, duration: float, dtype: str) -> dict:
    if model == "rww":
        par = {"kind": "global", "names": ["G", "sigma"], "bounds": {"G": [0.5, 2.5], "sigma": [0.001, 0.01]}}
        sim = {"fidelities": [{"duration": duration, "dt": 0.001}], "burn_in": 2.0, "window": 10, "step": 2}
        loss = "pfic"
    else:
        par = {"kind": "global", "names": ["G", "sigma"], "bounds": {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}}
        sim = {"fidelities": [{"duration": duration, "dt": 0.08}], "burn_in": 0.0}
        loss = "fc_corr"
    sim.update(dtype=dtype, noise="independent")
    return {"name": "coalescing", "storage": "results", "subjects": {"ids": SUBJECTS}, "model": {"name": model},
            "parametrisation": par, "loss": loss, "simulation": sim,
            "optimizers": [{"name": "random", "population": 4}], "budget": {"evaluations": 8}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["rww", "hopf"], default="rww")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--callers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--candidates", type=int, default=4, help="candidates per caller (B)")
    ap.add_argument("--duration", type=float, default=21.6, help="simulated seconds after the burn-in")
    ap.add_argument("--window-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-cpus", type=int, default=None)
    ap.add_argument("--inexact", action="store_true",
                    help="let the fused kernel's cost model choose for the merged batch (exact=False)")
    a = ap.parse_args(argv)

    import ray

    from raybrain.evaluator import get_evaluator, remote_evaluate, shutdown_evaluators
    from raybrain.experiment import ExperimentConfig
    from raybrain.experiment import objective_from_json as _objective

    text = ExperimentConfig.model_validate(experiment(a.model, a.duration, a.dtype)).model_dump_json()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", num_cpus=a.num_cpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    ns = f"raybrain-bench-{os.getpid()}"
    ev = get_evaluator(namespace=ns, window_ms=a.window_ms, max_batch=max(a.callers) * a.candidates,
                       exact=not a.inexact)
    par = _objective(text, SUBJECTS[0], 0).parametrisation
    lo, hi = np.asarray(par.bounds, dtype=float).T
    rng = np.random.default_rng(0)

    @ray.remote(num_cpus=0)
    def caller(subject, theta, seed):
        from raybrain.evaluator import get_evaluator as find

        return remote_evaluate(text, subject, 0, theta, seed=seed, evaluator=find(namespace=ns))

    try:
        for K in a.callers:
            thetas = [lo + (hi - lo) * rng.random((a.candidates, len(lo))) for _ in range(K)]
            allt = np.concatenate(thetas)

            def actor_round():
                ray.get(ev.reset_stats.remote())
                t0 = time.perf_counter()
                ray.get([caller.remote(SUBJECTS[k % 2], thetas[k], 100 + k) for k in range(K)])
                wall = time.perf_counter() - t0
                st = ray.get(ev.stats.remote())
                return wall, len(st["batches"]), len(st["launches"])

            def direct_round():
                t0 = time.perf_counter()
                _objective(text, SUBJECTS[0], 0).evaluate(allt, seed=1)
                return time.perf_counter() - t0

            def separate_round():
                t0 = time.perf_counter()
                for k in range(K):
                    _objective(text, SUBJECTS[k % 2], 0).evaluate(thetas[k], seed=100 + k)
                return time.perf_counter() - t0

            actor_round(), direct_round(), separate_round()  # warm-up
            runs = [actor_round() for _ in range(a.rounds)]
            direct = statistics.median(direct_round() for _ in range(a.rounds))
            separate = statistics.median(separate_round() for _ in range(a.rounds))
            wall = statistics.median(r[0] for r in runs)
            print(json.dumps({
                "callers": K, "candidates_per_caller": a.candidates, "total_candidates": K * a.candidates,
                "model": a.model, "dtype": a.dtype, "duration_s": a.duration, "exact": not a.inexact,
                "actor_wall_s": round(wall, 4), "direct_wall_s": round(direct, 4),
                "separate_wall_s": round(separate, 4), "throughput_ratio": round(direct / wall, 3),
                "batches": [r[1] for r in runs], "launches": [r[2] for r in runs]}), flush=True)
    finally:
        shutdown_evaluators(ns)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
