"""Learned cost surrogate (raybrain.surrogate): held-out accuracy and evaluations per second.

Records come from a results directory (``--results DIR``: its training rows at the top fidelity)
or, by default, are simulated here: ``--n`` uniform random (G, sigma) candidates of the Hopf model
on one bundled HCP subject (pFIC loss, 21.6 s of BOLD at dt 0.08 s, FCD window 10 TRs). A random
``--test-fraction`` of the rows is held out. Prints JSON lines:

* ``{"what": "fit", ...}``  — fit seconds, ``n_train``, ``target``, ``outputs``.
* ``{"what": "score", ...}`` — :meth:`Surrogate.score` on the held-out rows: ``cost_r`` (Pearson),
  ``cost_spearman``, ``cost_rmse``, ``class_accuracy`` and ``class_majority`` (always guessing the
  commoner label), ``n_test``; when simulating, also ``repeat_r`` (r between the held-out losses and
  those of the same candidates simulated with other noise: the noise ceiling of ``cost_r``) and
  ``cost_r_vs_repeat`` (the surrogate's r against that repeat).
* ``{"what": "speed", ...}`` — ``surrogate_evals_per_s`` (:meth:`Surrogate.predict` on a batch of
  ``--batch`` candidates), ``simulator_evals_per_s`` (``Objective.evaluate`` on ``--sim-batch``
  candidates, after one warm-up call; absent with ``--results`` unless ``--simulate``) and their
  ratio. This is per-evaluation cost only: the end-to-end speed-up of a fit at equal test cost is
  not measured here.

    python benchmarks/surrogate.py                    # ~1 min on 2 cores
    python benchmarks/surrogate.py --results results/pfic-cmaes
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def hopf_objective(loss="pfic"):
    from raybrain.data import list_subjects, load_subject
    from raybrain.integrate import SimulationSettings
    from raybrain.objective import Objective
    from raybrain.parametrisation import Global

    par = Global("hopf", names=("G", "sigma"), bounds_override={"G": (0.1, 1.0), "sigma": (0.01, 0.1)})
    s = SimulationSettings(duration=21.6, dt=0.08, burn_in=0.0, dtype="float64", noise="independent")
    return Objective(load_subject(list_subjects("hcp")[0]), "hopf", par, loss, s, window=10, step=2)


def simulate(obj, n, seed, chunk=50):
    b = obj.parametrisation.bounds
    theta = np.random.default_rng(seed).uniform(b[:, 0], b[:, 1], (n, b.shape[0]))
    recs = []
    for i in range(0, n, chunk):
        recs += obj.evaluate(theta[i:i + chunk], seed=seed, first_stream=i)
    names = list(obj.parametrisation.names)
    df = pd.DataFrame([{"experiment": "bench", "phase": "train", "fidelity": 0, "dt": obj.settings.dt, **r}
                       for r in recs])
    comps = [c for c in obj.loss.components if c in df]
    tail = [c for c in ("valid", "diverged", "plausible") if c in df]
    return df[["experiment", "phase", "fidelity", "dt", *names, "loss", *comps, *tail]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", help="results directory (default: simulate Hopf records here)")
    ap.add_argument("--n", type=int, default=400, help="records to simulate (default 400)")
    ap.add_argument("--test-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--sim-batch", type=int, default=16)
    ap.add_argument("--simulate", action="store_true", help="time the Hopf simulator with --results too")
    a = ap.parse_args(argv)

    from raybrain.surrogate import Surrogate, load_training_data, training_rows

    obj = None
    if a.results:
        df = training_rows(load_training_data(a.results))
    else:
        obj = hopf_objective()
        t0 = time.perf_counter()
        df = simulate(obj, a.n, a.seed)
        print(json.dumps({"what": "simulate", "n": a.n, "wall_s": round(time.perf_counter() - t0, 3)}), flush=True)
    rng = np.random.default_rng(a.seed)
    test = rng.random(len(df)) < a.test_fraction
    t0 = time.perf_counter()
    sur = Surrogate.fit(df[~test], seed=a.seed, ensemble=a.ensemble)
    print(json.dumps({"what": "fit", "fit_s": round(time.perf_counter() - t0, 3), "n_train": sur.n_train,
                      "target": sur.target, "outputs": sur.outputs, "ensemble": a.ensemble}), flush=True)
    score = sur.score(df[test])
    if obj is not None:  # noise ceiling: the held-out candidates simulated again with other noise
        names = list(obj.parametrisation.names)
        th = df[test][names].to_numpy(dtype=float)
        again = np.array([r["loss"] for r in obj.evaluate(th, seed=a.seed + 1)])
        first = df[test]["loss"].to_numpy(dtype=float)
        score["repeat_r"] = float(np.corrcoef(first, again)[0, 1])
        score["cost_r_vs_repeat"] = float(np.corrcoef(sur.predict(th)[0], again)[0, 1])
    print(json.dumps({"what": "score", **score}), flush=True)

    lo, hi = sur.bounds[:, 0], sur.bounds[:, 1]
    theta = np.random.default_rng(1).uniform(lo, hi, (a.batch, len(lo)))
    sur.predict(theta[:10])
    t0 = time.perf_counter()
    sur.predict(theta)
    sps = a.batch / (time.perf_counter() - t0)
    speed = {"what": "speed", "surrogate_evals_per_s": round(sps, 1), "batch": a.batch}
    if obj is None and a.simulate:
        obj = hopf_objective()
    if obj is not None:
        b = obj.parametrisation.bounds
        th = np.random.default_rng(2).uniform(b[:, 0], b[:, 1], (a.sim_batch, b.shape[0]))
        obj.evaluate(th, seed=0)  # warm-up (kernel compilation)
        t0 = time.perf_counter()
        obj.evaluate(th, seed=1)
        sim = a.sim_batch / (time.perf_counter() - t0)
        speed.update(simulator_evals_per_s=round(sim, 2), sim_batch=a.sim_batch,
                     simulator="hopf dt 0.08 s, 21.6 s BOLD, pfic", ratio=round(sps / sim, 1))
    print(json.dumps(speed), flush=True)


if __name__ == "__main__":
    main()
