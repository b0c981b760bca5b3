"""Running an experiment on Ray Tune, in its two modes; both write the same records.

* **population** — one Tune trial per (subject, optimizer, seed) run. The run asks its optimizer
  for a whole generation, evaluates it in one batched simulator call, tells the losses back,
  writes the generation's records and checkpoints the optimizer. Tune runs the grid of runs in
  parallel across the cluster. A restored run continues from its last checkpoint and rewrites
  (never duplicates) a generation it may have written before it was stopped.
* **trial** — one Tune trial per candidate, proposed by one of Tune's own search algorithms
  (random/grid, HyperOpt TPE, Optuna TPE/CMA-ES, Nevergrad CMA/DE/PSO, BayesOpt) under one of
  Tune's schedulers (FIFO, ASHA, HyperBand, median stopping). A trial simulates in chunks up to
  each fidelity's duration (simulated seconds are the resource), reports its loss after each and
  checkpoints its simulator state, so ASHA stops poor candidates early and a stopped trial
  resumes instead of restarting.

Ray 2.60: report with ``ray.tune.report(metrics, checkpoint=...)``; configs from ``ray.tune``.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

METRIC = "loss"


# -- helpers shared by both modes -------------------------------------------------------------
@lru_cache(maxsize=8)
def _config(text: str):
    from ..experiment import ExperimentConfig

    return ExperimentConfig.model_validate_json(text)


@lru_cache(maxsize=32)
def _objective(text: str, subject: str, fidelity: int):
    return _config(text).build_objective(subject, fidelity)


def _spec(cfg, run_id: str):
    for s in cfg.runs():
        if s.run_id == run_id:
            return s
    raise ValueError(f"run {run_id!r} is not in experiment {cfg.name!r}")


def noise_seed(seed: int, generation: int) -> int:
    """Noise seed of one generation of one run (fresh noise per generation, common within it)."""
    return int(seed) * 1_000_003 + int(generation)


def _meta(spec, fidelity: int, fid, params) -> dict:
    return {"mode": spec.mode, "subject": spec.subject, "optimizer": spec.optimizer.key, "seed": spec.seed,
            "fidelity": int(fidelity), "duration": float(fid.duration), "dt": float(fid.dt), "params": list(params)}


def _report(metrics: dict, state: dict):
    from ray import tune

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "state.pkl"), "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _restore() -> dict | None:
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d, open(os.path.join(d, "state.pkl"), "rb") as f:
        return pickle.load(f)


# -- population mode --------------------------------------------------------------------------
def population_trainable(config: dict) -> None:
    """One (subject, optimizer, seed) run: ask a generation, evaluate it batched, tell, record."""
    from ..results import ResultsWriter
    from . import get_optimizer
    from .base import Optimizer

    cfg = _config(config["experiment"])
    spec = _spec(cfg, config["run_id"])
    fidelity = len(cfg.simulation.fidelities) - 1
    fid = cfg.simulation.fidelities[fidelity]
    objective = _objective(config["experiment"], spec.subject, fidelity)
    par = objective.parametrisation
    writer = ResultsWriter(config["results"], cfg.name)
    saved = _restore()
    if saved:
        opt = Optimizer.from_state(saved["optimizer"])
        generation, n_evals, wall = saved["generation"], saved["n_evals"], saved["wall_s"]
    else:
        opt = get_optimizer(spec.optimizer.name, par.bounds, seed=spec.seed,
                            population=spec.optimizer.population, **spec.optimizer.settings)
        generation, n_evals, wall = 0, 0, 0.0
    repeats = cfg.simulation.repeats
    budget, wall_budget = cfg.budget.evaluations, cfg.budget.wall_s
    while n_evals < budget and not opt.done and (wall_budget is None or wall < wall_budget):
        t0 = time.perf_counter()
        theta = opt.ask()
        records = objective.evaluate(theta, seed=noise_seed(spec.seed, generation), repeats=repeats,
                                     first_stream=n_evals * repeats)
        opt.tell(theta, np.array([r["loss"] for r in records]))
        writer.write_generation(spec.run_id, generation, records, _meta(spec, fidelity, fid, par.names))
        n_evals += len(records)
        generation += 1
        wall += time.perf_counter() - t0
        _report({METRIC: float(opt.best_loss), "evaluations": n_evals, "generation": generation},
                {"optimizer": opt.state(), "generation": generation, "n_evals": n_evals, "wall_s": wall})
    writer.write_run_summary(spec.run_id, {
        "mode": spec.mode, "subject": spec.subject, "optimizer": spec.optimizer.key, "seed": spec.seed,
        "evaluations": n_evals, "generations": generation, "wall_s": wall, "best_loss": opt.best_loss,
        "best": dict(zip(par.names, map(float, opt.best_theta))) if opt.best_theta is not None else None})


# -- trial mode -------------------------------------------------------------------------------
def trial_trainable(config: dict) -> None:
    """One candidate: simulate up to each fidelity's duration, report the loss, checkpoint."""
    from ray import tune

    from ..integrate import SimState
    from ..results import ResultsWriter

    cfg = _config(config["experiment"])
    spec = _spec(cfg, config["run_id"])
    fids = cfg.simulation.fidelities
    top = len(fids) - 1
    objective = _objective(config["experiment"], spec.subject, top)
    par = objective.parametrisation
    theta = np.array([[float(config[n]) for n in par.names]])
    # the trial's number within its run: Tune's trial id suffix (decimal counter or hex hash; unique
    # within the run and kept across a restore), used as the record file and the noise stream
    trial_no = int(tune.get_context().get_trial_id().rsplit("_", 1)[-1], 16)
    repeats = cfg.simulation.repeats
    writer = ResultsWriter(config["results"], cfg.name)
    saved = _restore()
    state, bold, done, wall = None, None, 0, 0.0
    if saved:
        state, bold, done, wall = SimState.from_arrays(saved["sim"]), saved["bold"], saved["done"], saved["wall_s"]
    sim = objective.simulation(theta, seed=noise_seed(spec.seed, 0), repeats=repeats,
                               first_stream=trial_no * repeats, state=state)
    simulated = 0.0 if state is None else sim.time - sim.settings.burn_in
    for k in range(done, len(fids)):
        t0 = time.perf_counter()
        res = sim.run(fids[k].duration - max(simulated, 0.0))
        simulated = fids[k].duration
        bold = res.bold if bold is None else np.concatenate([bold, res.bold], axis=1)
        wall += time.perf_counter() - t0
        records = objective.score(theta, bold, res, repeats=repeats, wall_s=wall)
        writer.write_generation(spec.run_id, trial_no, records, _meta(spec, k, fids[k], par.names))
        _report({METRIC: records[0]["loss"], "sim_seconds": simulated, "fidelity": k},
                {"sim": sim.state.to_arrays(), "bold": bold, "done": k + 1, "wall_s": wall})


def _search_space(par) -> dict:
    from ray import tune

    return {n: tune.uniform(float(lo), float(hi)) for n, (lo, hi) in zip(par.names, par.bounds)}


def tune_searcher(name: str, par, seed: int, settings: dict, max_concurrent: int):
    """Tune's own search algorithm for an optimizer family (None: Tune's random/grid variants)."""
    from ray.tune.search import ConcurrencyLimiter

    if name in ("random", "grid"):
        return None
    if name in ("tpe", "optuna-cmaes"):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.TPESampler(seed=seed) if name == "tpe" else optuna.samplers.CmaEsSampler(seed=seed)
        alg = OptunaSearch(sampler=sampler)
    elif name == "hyperopt-tpe":
        from ray.tune.search.hyperopt import HyperOptSearch

        alg = HyperOptSearch(random_state_seed=seed)
    elif name in ("cmaes", "de", "pso"):
        import nevergrad as ng
        from ray.tune.search.nevergrad import NevergradSearch

        opt = {"cmaes": ng.optimizers.CMA, "de": ng.optimizers.DE, "pso": ng.optimizers.PSO}[name]
        alg = NevergradSearch(optimizer=opt, optimizer_kwargs={"num_workers": max_concurrent})
    elif name == "bayesopt":
        from ray.tune.search.bayesopt import BayesOptSearch

        alg = BayesOptSearch(random_state=seed)
    else:
        raise ValueError(f"optimizer {name!r} has no trial-mode (Tune searcher) form")
    return ConcurrencyLimiter(alg, max_concurrent=max_concurrent)


def tune_scheduler(name: str, fids):
    """Tune's scheduler ``name`` over simulated seconds, with the fidelities' durations as rungs.

    ``hyperband`` is asynchronous HyperBand (ASHA run over ``len(fids)`` brackets, Li et al. 2020):
    Tune's synchronous ``HyperBandScheduler`` pauses trials until their bracket is complete and,
    with a concurrency-limited searcher and trials that end by themselves at ``max_t``, can leave a
    trial paused forever (``Tuner.fit`` never returns; seen with Ray 2.60 + BayesOptSearch)."""
    from ray.tune import schedulers as S

    kw = dict(time_attr="sim_seconds")  # metric and mode come from the TuneConfig
    rf = max(2, round(fids[-1].duration / fids[0].duration) ** (1 / max(1, len(fids) - 1)))
    if name == "fifo":
        return S.FIFOScheduler()
    if name == "asha":
        return S.ASHAScheduler(max_t=fids[-1].duration, grace_period=fids[0].duration, reduction_factor=rf, **kw)
    if name == "hyperband":
        return S.AsyncHyperBandScheduler(max_t=fids[-1].duration, grace_period=fids[0].duration,
                                         reduction_factor=rf, brackets=len(fids), **kw)
    if name == "median":
        return S.MedianStoppingRule(grace_period=fids[0].duration, **kw)
    raise ValueError(f"unknown scheduler {name!r}")


# -- the experiment ---------------------------------------------------------------------------
def _init_ray(num_cpus: int | None = None) -> None:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables on the terminal
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def run_experiment(cfg, *, resume: bool = False, num_cpus: int | None = None, verbose: int = 0):
    """Run (or resume) every run of ``cfg``; returns the results root (``storage/name``)."""
    from ray import tune

    from ..results import ResultsWriter

    pending = [o.key for o in cfg.optimizers if o.successive_halving]
    if pending:
        raise ValueError(f"optimizers {pending}: successive_halving inside population runs is not implemented "
                         "yet; remove it or use mode: trial with scheduler: asha")
    root = Path(cfg.storage).resolve() / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    text = cfg.model_dump_json()
    (root / "experiment.json").write_text(text)
    _init_ray(num_cpus)
    tune_dir = root / "tune"
    res = {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}
    failure = tune.FailureConfig(max_failures=2)
    specs = cfg.runs()
    fids = cfg.simulation.fidelities
    errors = 0

    def fit(trainable, name, **tuner_kw):
        path = tune_dir / name
        wrapped = tune.with_resources(trainable, res)
        if resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), wrapped, resume_errored=True)
        else:
            tuner = tune.Tuner(wrapped, run_config=tune.RunConfig(
                name=name, storage_path=str(tune_dir), failure_config=failure, verbose=verbose), **tuner_kw)
        return tuner.fit()

    pop = [s.run_id for s in specs if s.mode == "population"]
    if pop:
        grid = fit(population_trainable, "population", param_space={
            "experiment": text, "results": str(root), "run_id": tune.grid_search(pop)},
            tune_config=tune.TuneConfig(reuse_actors=True))
        errors += grid.num_errors
    for s in (s for s in specs if s.mode == "trial"):
        par = _objective(text, s.subject, len(fids) - 1).parametrisation
        o = s.optimizer
        space = _search_space(par)
        num = cfg.budget.evaluations
        if o.name == "grid":
            from ray import tune as T

            k = int(o.settings.get("points_per_dim", 5))
            space = {n: T.grid_search(list(np.linspace(lo, hi, k))) for n, (lo, hi) in zip(par.names, par.bounds)}
            num = 1
        conc = max(1, int(o.population))  # trial mode: candidates in flight at once
        searcher = tune_searcher(o.name, par, s.seed, o.settings, conc)
        grid = fit(trial_trainable, f"trial-{_safe(s.run_id)}",
                   param_space={"experiment": text, "results": str(root), "run_id": s.run_id, **space},
                   tune_config=tune.TuneConfig(metric=METRIC, mode="min", search_alg=searcher, num_samples=num,
                                               scheduler=tune_scheduler(o.scheduler, fids), reuse_actors=True,
                                               max_concurrent_trials=None if searcher else conc))
        errors += grid.num_errors
    ResultsWriter(root, cfg.name)  # the layout is the writer's
    return root, errors


def _safe(text: str) -> str:
    from ..results import sanitise

    return sanitise(text)
