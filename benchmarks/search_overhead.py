"""Search overhead: optimizer + Ray Tune cost per evaluation on a trivially cheap objective.

The objective is a shifted sphere, f(x) = sum_j ((x_j - c_j) / (h_j - l_j))^2 over the box
[-5, 5]^P, evaluated with numpy in microseconds, so everything measured is search machinery. For
every optimizer family in ``raybrain.search.OPTIMIZERS`` and P = 2 and 10 it prints one JSON line
per (mode, optimizer, P):

* ``"ask-tell"``   — the optimizer alone, in this process: ask a generation, evaluate, tell.
* ``"population"`` — one Tune trial per run, as ``raybrain.tuning.trainables.population_trainable`` does
  it: ask a generation, evaluate it batched, tell, then one ``tune.report`` per generation with a
  checkpoint holding the pickled optimizer (raybrain's own ``_report`` helper). ``--records`` also
  writes each generation's records to parquet with ``raybrain.results.ResultsWriter`` like the real
  trainable does. ``--runs K`` runs K seeds of the same optimizer in parallel (one CPU each).
* ``"trial"``      — one Tune trial per candidate: Tune's own searchers
  (``raybrain.tuning.tune_searcher``: every family's trial-mode ``Searcher``; grid here is
  Tune's ``grid_search``), ``reuse_actors=True``, a function trainable that reports its loss once.

Fields: ``mode, optimizer, P, population, n_evals, ms_per_eval, evals_per_s, wall_s``.
``wall_s`` is end to end (``tuner.fit()`` for the Tune modes, trial start-up included) and
``ms_per_eval = 1000 * wall_s / n_evals``, ``evals_per_s = n_evals / wall_s``. Population mode also
carries ``in_trial_ms_per_eval`` (time inside the trainable, start-up excluded) and ``startup_s``
(``wall_s`` minus the longest run's in-trial time); ``objective_ms_per_eval`` is the sphere's own
share. Trial mode's ``population`` is the number of trials in flight (``--concurrency``).

    python benchmarks/search_overhead.py                       # everything, ~5 min on 2 cores
    python benchmarks/search_overhead.py --modes population --optimizers random cmaes de
    python benchmarks/search_overhead.py --scale 0.2 --dims 2  # a quick look
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: evaluations per (optimizer, P) in ask-tell and population mode, at --scale 1. Model-based
#: families pay per observation (TPE ~O(n), the GP O(n^3)): they get fewer.
POP_EVALS = {"random": 20000, "grid": 20000, "cmaes": 3200, "de": 3200, "pso": 3200, "tpe": 384,
             "optuna-cmaes": 1280, "hyperopt-tpe": 384, "bayesopt": 32}
#: trials per (optimizer, P) in trial mode at --scale 1
TRIAL_EVALS = {"bayesopt": 12}  # BayesOptSearch: ~2 s per suggestion at P = 10
TRIAL_DEFAULT = 100
#: generation size in population and ask-tell mode (compare-optimizers.yaml's values)
POPULATION = {"bayesopt": 16}
POPULATION_DEFAULT = 64

LOW, HIGH = -5.0, 5.0


def bounds_for(P: int) -> np.ndarray:
    return np.tile([LOW, HIGH], (P, 1))


def centre_for(P: int) -> np.ndarray:
    # an optimum off the centre and off the grid
    return np.linspace(-1.3, 2.1, P)


def sphere(theta: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Batched sphere loss, theta (n, P) -> (n,)."""
    u = (theta - centre) / (HIGH - LOW)
    return np.einsum("ij,ij->i", u, u)


def settings_for(name: str, P: int, n_evals: int) -> dict:
    if name == "grid":  # enough points that the grid is not exhausted before n_evals
        return {"points_per_dim": max(2, math.ceil(n_evals ** (1.0 / P)))}
    return {}


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def _row(mode, name, P, population, n_evals, wall, **extra) -> dict:
    return {"mode": mode, "optimizer": name, "P": P, "population": population, "n_evals": int(n_evals),
            "ms_per_eval": round(1e3 * wall / n_evals, 4), "evals_per_s": round(n_evals / wall, 1),
            "wall_s": round(wall, 3), **extra}


# -- ask-tell: the optimizer alone ------------------------------------------------------------
def run_ask_tell(name: str, P: int, population: int, n_evals: int, seed: int = 0) -> dict:
    from raybrain.search import get_optimizer

    centre = centre_for(P)
    t0 = time.perf_counter()
    opt = get_optimizer(name, bounds_for(P), seed=seed, population=population, **settings_for(name, P, n_evals))
    t_obj, n = 0.0, 0
    while n < n_evals and not opt.done:
        theta = opt.ask()
        t1 = time.perf_counter()
        y = sphere(theta, centre)
        t_obj += time.perf_counter() - t1
        opt.tell(theta, y)
        n += len(theta)
    wall = time.perf_counter() - t0
    return _row("ask-tell", name, P, population, n, wall, objective_ms_per_eval=round(1e3 * t_obj / n, 5),
                best_loss=float(opt.best_loss))


# -- population mode: one Tune trial per run --------------------------------------------------
def population_bench_trainable(config: dict) -> None:
    """``population_trainable`` with the simulator replaced by the sphere (and no experiment)."""
    from raybrain.search import get_optimizer
    from raybrain.tuning.trainables import METRIC, _report

    t_start = time.perf_counter()
    name, P, n_evals = config["optimizer"], config["P"], config["n_evals"]
    centre = centre_for(P)
    opt = get_optimizer(name, bounds_for(P), seed=config["seed"], population=config["population"],
                        **settings_for(name, P, n_evals))
    writer = None
    if config["records"]:
        from raybrain.results import ResultsWriter

        writer = ResultsWriter(config["results"], "search-overhead")
        meta = {"mode": "population", "subject": "sphere", "optimizer": name, "seed": config["seed"],
                "fidelity": 0, "duration": 0.0, "dt": 0.0, "params": [f"x{j}" for j in range(P)]}
        run_id = f"{name}-P{P}-s{config['seed']}"
    n, generation, t_obj = 0, 0, 0.0
    while n < n_evals and not opt.done:
        theta = opt.ask()
        t1 = time.perf_counter()
        losses = sphere(theta, centre)
        t_obj += time.perf_counter() - t1
        opt.tell(theta, losses)
        if writer is not None:
            records = [{**{f"x{j}": float(v) for j, v in enumerate(row)}, "loss": float(y)}
                       for row, y in zip(theta, losses)]
            writer.write_generation(run_id, generation, records, meta)
        n += len(theta)
        generation += 1
        _report({METRIC: float(opt.best_loss), "evaluations": n, "generation": generation,
                 "in_trial_s": time.perf_counter() - t_start, "objective_s": t_obj},
                {"optimizer": opt.state(), "generation": generation, "n_evals": n, "wall_s": 0.0})


def run_population(name: str, P: int, population: int, n_evals: int, storage: str, runs: int,
                   records: bool) -> dict:
    from ray import tune

    space = {"optimizer": name, "P": P, "population": population, "n_evals": n_evals, "records": records,
             "results": os.path.join(storage, "records"),
             "seed": tune.grid_search(list(range(runs))) if runs > 1 else 0}
    tuner = tune.Tuner(tune.with_resources(population_bench_trainable, {"cpu": 1}), param_space=space,
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(name=f"population-{name}-P{P}", storage_path=storage,
                                                 verbose=0))
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    if grid.num_errors:
        raise RuntimeError(f"population {name} P={P}: {grid.errors[0]}")
    ms = [r.metrics for r in grid]
    n = sum(m["evaluations"] for m in ms)
    in_trial = max(m["in_trial_s"] for m in ms)
    return _row("population", name, P, population, n, wall, runs=runs, records=records,
                in_trial_ms_per_eval=round(1e3 * sum(m["in_trial_s"] for m in ms) / n, 4),
                objective_ms_per_eval=round(1e3 * sum(m["objective_s"] for m in ms) / n, 5),
                startup_s=round(wall - in_trial, 3), best_loss=min(m["loss"] for m in ms))


# -- trial mode: one Tune trial per candidate -------------------------------------------------
def trial_bench_trainable(config: dict) -> None:
    from ray import tune

    P = len([k for k in config if k.startswith("x")])
    theta = np.array([[config[f"x{j:03d}"] for j in range(P)]], dtype=np.float64)
    tune.report({"loss": float(sphere(theta, centre_for(P))[0])})


def _grid_space(P: int, n_evals: int):
    """Tune grid_search over as many leading parameters as fit in ~n_evals points; rest fixed."""
    from ray import tune

    k = max(2, int(n_evals ** (1.0 / P) + 1e-9))
    m = min(P, max(1, int(math.log(n_evals) / math.log(k) + 1e-9)))
    space = {f"x{j:03d}": (tune.grid_search(list(np.linspace(LOW, HIGH, k))) if j < m else 0.5 * (LOW + HIGH))
             for j in range(P)}
    return space, k ** m


def run_trial(name: str, P: int, n_evals: int, storage: str, concurrency: int) -> dict:
    from ray import tune

    from raybrain.tuning import METRIC, tune_searcher

    if name == "grid":
        space, _ = _grid_space(P, n_evals)
        searcher, num_samples = None, 1
    else:
        space = {f"x{j:03d}": tune.uniform(LOW, HIGH) for j in range(P)}
        par = SimpleNamespace(names=[f"x{j:03d}" for j in range(P)], bounds=bounds_for(P))
        searcher = tune_searcher(name, par, 0, {}, concurrency)
        num_samples = n_evals
    tuner = tune.Tuner(
        tune.with_resources(trial_bench_trainable, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", search_alg=searcher, num_samples=num_samples,
                                    reuse_actors=True, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name=f"trial-{name}-P{P}", storage_path=storage, verbose=0))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = tuner.fit()
    wall = time.perf_counter() - t0
    if grid.num_errors:
        raise RuntimeError(f"trial {name} P={P}: {grid.errors[0]}")
    n = len(grid)
    best = min(r.metrics.get(METRIC, float("inf")) for r in grid)
    return _row("trial", name, P, concurrency, n, wall, reuse_actors=True, best_loss=best)


def init_ray(num_cpus: int) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1e9")
    import logging

    import ray

    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)


def main(argv=None) -> int:
    from raybrain.search import OPTIMIZERS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", nargs="+", default=["ask-tell", "population", "trial"],
                    choices=["ask-tell", "population", "trial"])
    ap.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    ap.add_argument("--dims", nargs="+", type=int, default=[2, 10], help="P values (default 2 10)")
    ap.add_argument("--population", type=int, default=None,
                    help=f"generation size (default {POPULATION_DEFAULT}; bayesopt {POPULATION['bayesopt']})")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every evaluation budget")
    ap.add_argument("--runs", type=int, default=1, help="population mode: parallel runs (seeds) per optimizer")
    ap.add_argument("--records", action="store_true", help="population mode: also write parquet records")
    ap.add_argument("--concurrency", type=int, default=2, help="trial mode: trials in flight")
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args(argv)

    if any(m != "ask-tell" for m in args.modes):
        init_ray(args.num_cpus)
    with tempfile.TemporaryDirectory(prefix="raybrain-search-overhead-") as storage:
        for mode in args.modes:
            for P in args.dims:
                for name in args.optimizers:
                    pop = args.population or POPULATION.get(name, POPULATION_DEFAULT)
                    try:
                        if mode == "ask-tell":
                            n = max(pop, round(POP_EVALS[name] * args.scale))
                            rec = run_ask_tell(name, P, pop, n)
                        elif mode == "population":
                            n = max(pop, round(POP_EVALS[name] * args.scale))
                            rec = run_population(name, P, pop, n, storage, args.runs, args.records)
                        else:
                            n = max(2, round(TRIAL_EVALS.get(name, TRIAL_DEFAULT) * args.scale))
                            rec = run_trial(name, P, n, storage, args.concurrency)
                    except Exception as exc:  # one failing family must not hide the others
                        rec = {"mode": mode, "optimizer": name, "P": P, "error": f"{type(exc).__name__}: {exc}"}
                    emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
