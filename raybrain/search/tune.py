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
  resumes instead of restarting. Trials are numbered in suggestion order (``trial_index``), which
  names their record files and their noise streams, so a run is reproducible from its seed.

After the search, a third stage (**holdout**, one Tune trial per run) re-simulates each run's best
training candidates with fresh noise on the validation targets and the winner on the test targets
(:meth:`raybrain.experiment.ExperimentConfig.holdout_targets`).

Ray 2.60: report with ``ray.tune.report(metrics, checkpoint=...)``; configs from ``ray.tune``.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
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


def holdout_seed(seed: int, phase: str, target: int) -> int:
    """Noise seed of a held-out phase (fresh noise: never a training generation's seed)."""
    h = hashlib.blake2b(f"raybrain/{int(seed)}/{phase}/{int(target)}".encode(), digest_size=7).digest()
    return int.from_bytes(h, "little")


def _meta(spec, fidelity: int, fid, params, phase: str = "train", subject: str | None = None) -> dict:
    return {"mode": spec.mode, "phase": phase, "subject": subject or spec.subject, "optimizer": spec.optimizer.key,
            "seed": spec.seed, "fidelity": int(fidelity), "duration": float(fid.duration), "dt": float(fid.dt),
            "params": list(params)}


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

    from .halving import successive_halving, told_losses

    cfg = _config(config["experiment"])
    spec = _spec(cfg, config["run_id"])
    fids = cfg.simulation.fidelities
    top = len(fids) - 1
    eta = spec.optimizer.halving_eta
    rungs = range(len(fids)) if eta else [top]
    objectives = [_objective(config["experiment"], spec.subject, k) for k in rungs]
    par = objectives[-1].parametrisation
    writer = ResultsWriter(config["results"], cfg.name)
    saved = _restore()
    if saved:
        opt = Optimizer.from_state(saved["optimizer"])
        generation, n_evals, wall = saved["generation"], saved["n_evals"], saved["wall_s"]
    else:
        opt = get_optimizer(spec.optimizer.name, par.bounds, seed=spec.seed, population=spec.optimizer.population,
                            **cfg.optimizer_settings(spec.optimizer, len(par.names)))
        generation, n_evals, wall = 0, 0, 0.0
    repeats = cfg.simulation.repeats
    if hasattr(opt, "attach_objective"):  # a family that needs the objective itself (gradient: its loss)
        opt.attach_objective(objectives[-1], seed=noise_seed(spec.seed, 0), repeats=repeats)
    budget, wall_budget = cfg.budget.evaluations, cfg.budget.wall_s
    while n_evals < budget and not opt.done and (wall_budget is None or wall < wall_budget):
        t0 = time.perf_counter()
        theta = opt.ask()
        seed = noise_seed(spec.seed, generation)
        if eta:
            scored = successive_halving(objectives, theta, eta=eta, seed=seed, repeats=repeats,
                                        first_stream=n_evals * repeats)
            opt.tell(theta, told_losses(scored, len(theta)))
        else:
            records = _evaluate(cfg, config["experiment"], spec.subject, top, theta, seed=seed, repeats=repeats,
                                first_stream=n_evals * repeats)
            for r in records:
                r["new_sims"] = repeats
            opt.tell(theta, np.array([r["loss"] for r in records]))
            scored = [_Rung(top, records)]
        for rung in scored:
            writer.write_generation(spec.run_id, generation, rung.records,
                                    _meta(spec, rung.fidelity, fids[rung.fidelity], par.names))
        n_evals += len(theta)
        generation += 1
        wall += time.perf_counter() - t0
        _report({METRIC: float(opt.best_loss), "evaluations": n_evals, "generation": generation},
                {"optimizer": opt.state(), "generation": generation, "n_evals": n_evals, "wall_s": wall})
    writer.write_run_summary(spec.run_id, {
        "mode": spec.mode, "subject": spec.subject, "optimizer": spec.optimizer.key, "seed": spec.seed,
        "evaluations": n_evals, "generations": generation, "wall_s": wall, "best_loss": opt.best_loss,
        "best": dict(zip(par.names, map(float, opt.best_theta))) if opt.best_theta is not None else None})


def _evaluate(cfg, text: str, subject: str, fidelity, theta, *, seed: int, repeats: int, first_stream: int = 0):
    """Records of ``theta`` at one fidelity: through this node's coalescing evaluator when the
    experiment uses one (identical records, batched with other trials'), else in this process."""
    if cfg.use_evaluator:
        from ..evaluator import remote_evaluate

        return remote_evaluate(text, subject, fidelity, theta, seed=seed, repeats=repeats, first_stream=first_stream)
    return _objective(text, subject, fidelity).evaluate(theta, seed=seed, repeats=repeats, first_stream=first_stream)


class _Rung:
    def __init__(self, fidelity: int, records: list):
        self.fidelity, self.records = fidelity, records


# -- trial mode -------------------------------------------------------------------------------
def trial_trainable(config: dict) -> None:
    """One candidate: simulate up to each fidelity's duration, report the loss, checkpoint.

    A rung with the same dt as the one below continues the simulation; a finer dt starts afresh."""
    from ray import tune

    from ..integrate import SimState
    from ..results import ResultsWriter
    from ._tune_searchers import INDEX

    text = config["experiment"]
    cfg = _config(text)
    spec = _spec(cfg, config["run_id"])
    fids = cfg.simulation.fidelities
    par = _objective(text, spec.subject, len(fids) - 1).parametrisation
    theta = np.array([[float(config[n]) for n in par.names]])
    # the trial's number within its run: stamped by the searcher wrapper, else Tune's counter
    # (BasicVariantGenerator names trials <prefix>_00000, _00001, …); names its records and noise
    trial_no = int(config[INDEX]) if INDEX in config else int(tune.get_context().get_trial_id().rsplit("_", 1)[-1])
    repeats = cfg.simulation.repeats
    writer = ResultsWriter(config["results"], cfg.name)

    def simulation(k, state=None):
        return _objective(text, spec.subject, k).simulation(
            theta, seed=noise_seed(spec.seed, 0), repeats=repeats, candidates=[trial_no], state=state)

    saved = _restore()
    sim, bold, done, wall = None, None, 0, 0.0
    if saved:
        bold, done, wall = saved["bold"], saved["done"], saved["wall_s"]
        sim = simulation(done - 1, SimState.from_arrays(saved["sim"]))
    for k in range(done, len(fids)):
        t0 = time.perf_counter()
        fresh = sim is None or fids[k].dt != fids[k - 1].dt
        if fresh:
            sim, bold = simulation(k), None
        res = sim.run(fids[k].duration - (0.0 if fresh else fids[k - 1].duration))
        bold = res.bold if bold is None else np.concatenate([bold, res.bold], axis=1)
        wall += time.perf_counter() - t0
        records = _objective(text, spec.subject, k).score(theta, bold, res, repeats=repeats,
                                                          wall_s=time.perf_counter() - t0)
        records[0]["new_sims"] = repeats if fresh else 0
        writer.write_generation(spec.run_id, trial_no, records, _meta(spec, k, fids[k], par.names))
        _report({METRIC: records[0]["loss"], "sim_seconds": fids[k].duration, "fidelity": k},
                {"sim": sim.state.to_arrays(), "bold": bold, "done": k + 1, "wall_s": wall})


# -- holdout: validation and test -------------------------------------------------------------
def holdout_trainable(config: dict) -> None:
    """A finished run's held-out phases: its best distinct training candidates re-simulated with
    fresh noise on each validation target; the winner (lowest mean validation loss) on each test
    target. Deterministic (seeds from the run seed), so a retried trial rewrites the same files."""
    from ..results import ResultsWriter, load_run, param_columns

    text = config["experiment"]
    cfg = _config(text)
    spec = _spec(cfg, config["run_id"])
    df = load_run(config["results"], spec.run_id)
    par = _objective(text, spec.subject, len(cfg.simulation.fidelities) - 1).parametrisation
    train = df[(df["phase"] == "train") & (df["fidelity"] == df["fidelity"].max())]
    train = train[np.isfinite(train["loss"].astype(float))].sort_values(["loss", "eval_index"], kind="stable")
    train = train.drop_duplicates(subset=param_columns(df)).head(cfg.validation.top)
    if train.empty:
        _report_plain({METRIC: float("nan"), "candidates": 0})
        return
    theta = train[list(par.names)].to_numpy(dtype=np.float64)
    source = train["eval_index"].to_numpy()
    repeats = cfg.validation.repeats or cfg.simulation.repeats
    fid = cfg.simulation.fidelity("validation")
    writer = ResultsWriter(config["results"], cfg.name)

    def evaluate(phase, j, target, th, src):
        t0 = time.perf_counter()
        records = _evaluate(cfg, text, target, "validation", th, seed=holdout_seed(spec.seed, phase, j),
                            repeats=repeats)
        for r, e in zip(records, src):
            r["source_eval"], r["new_sims"] = int(e), repeats
            r["wall_s"] = (time.perf_counter() - t0) / len(records)
        writer.write_generation(spec.run_id, j, records, _meta(spec, -1, fid, par.names, phase, target))
        return np.array([r["loss"] for r in records], dtype=float)

    val = [evaluate("validation", j, t, theta, source)
           for j, t in enumerate(cfg.holdout_targets("validation", spec.subject))]
    mean = np.mean(val, axis=0)
    w = int(np.argmin(mean))
    test = [evaluate("test", j, t, theta[[w]], source[[w]])[0]
            for j, t in enumerate(cfg.holdout_targets("test", spec.subject))]
    _report_plain({METRIC: float(mean[w]), "winner_eval": int(source[w]),
                   "test_loss": float(np.mean(test)) if test else float("nan"), "candidates": len(theta)})


def _report_plain(metrics: dict) -> None:
    from ray import tune

    tune.report(metrics)


def _search_space(par) -> dict:
    from ray import tune

    return {n: tune.uniform(float(lo), float(hi)) for n, (lo, hi) in zip(par.names, par.bounds)}


def tune_searcher(name: str, par, seed: int, settings: dict, max_concurrent: int, num_samples: int | None = None):
    """Tune's own search algorithm for an optimizer family, seeded with the run seed.

    ``random`` and ``grid`` are Tune's ``BasicVariantGenerator`` (which numbers its trials); the
    others are ``Searcher`` objects wrapped to number theirs (:class:`._tune_searchers.Numbered`) and
    limited to ``max_concurrent`` trials in flight."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from ._tune_searchers import Numbered, SeededNevergrad

    if name in ("random", "grid"):
        return BasicVariantGenerator(random_state=int(seed), max_concurrent=max_concurrent)
    if name in ("tpe", "optuna-cmaes"):
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
        sampler = optuna.samplers.TPESampler(seed=seed) if name == "tpe" else optuna.samplers.CmaEsSampler(seed=seed)
        alg = OptunaSearch(sampler=sampler)
    elif name == "hyperopt-tpe":
        from ray.tune.search.hyperopt import HyperOptSearch

        alg = HyperOptSearch(random_state_seed=seed)
    elif name in ("cmaes", "de", "pso"):
        import nevergrad as ng

        opt = {"cmaes": ng.optimizers.CMA, "de": ng.optimizers.DE, "pso": ng.optimizers.PSO}[name]
        alg = SeededNevergrad(optimizer=opt, optimizer_kwargs={"num_workers": max_concurrent}, seed=seed)
    elif name == "bayesopt":
        from ray.tune.search.bayesopt import BayesOptSearch

        alg = BayesOptSearch(random_state=seed)
    else:
        raise ValueError(f"optimizer {name!r} has no trial-mode (Tune searcher) form")
    return ConcurrencyLimiter(Numbered(alg), max_concurrent=max_concurrent)


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
    """Join the cluster at ``$RAY_ADDRESS``, or start a private local Ray: listening on the loopback
    address only (``127.0.0.1``; set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` to opt out), token
    authentication on (Ray 2.60's default for a local cluster; it generates the token), no
    dashboard."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # a single-node Ray on the loopback address: Ray's own switch for this (its default on macOS
        # and Windows) makes it advertise and bind 127.0.0.1 instead of the host's network address;
        # read when ray is imported, so set here (workers inherit it) and on the loaded module
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables on the terminal
        kw = {}
        if not address:  # Ray 2.60 turns token authentication on for the local cluster it starts
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = os.environ[_LOOPBACK_ENV] not in ("0", "false", "False")
            kw = {"num_cpus": num_cpus}
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **kw)


_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_NODE_LOSS_RESUMES = 3


def _fit_resuming(tuner, restore):
    """``tuner.fit()``, then resume the trials that were lost with their node.

    Tune retries a failed trial (``FailureConfig``) only if it was RUNNING: one lost with its node
    while it was being placed, or handed a reused actor, ends in ERROR at once. Those are resumed
    from their checkpoints (``restore()``: the experiment restored with ``resume_errored``), up to
    ``_NODE_LOSS_RESUMES`` times. A grid whose errors all come from the trials' own code is returned
    as it is: re-running would only fail again."""
    grid = tuner.fit()
    for _ in range(_NODE_LOSS_RESUMES):
        if not any(_lost_with_node(r.error) for r in grid if r.error is not None):
            break
        grid = restore().fit()
    return grid


def _lost_with_node(err: BaseException | None) -> bool:
    """Whether a trial's error is the loss of its worker, actor or node (retryable), not an
    exception raised by the trial's own code. Walks wrapped causes; Tune's text-only fallback
    (``TuneError``) is matched by the Ray exception names it quotes."""
    from ray import exceptions as rx

    infra = (rx.RayActorError, rx.NodeDiedError, rx.WorkerCrashedError, rx.LocalRayletDiedError,
             rx.ObjectLostError, rx.RpcError, rx.RaySystemError)
    names = tuple(c.__name__ for c in infra) + ("ActorDiedError", "ActorUnavailableError")
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, infra):
            return True
        if isinstance(err, rx.RayTaskError):
            cause = getattr(err, "cause", None)
            if isinstance(cause, infra):
                return True
            err = cause if isinstance(cause, BaseException) else None
            continue
        if type(err).__name__ == "TuneError" and any(n in str(err) for n in names):
            return True
        err = err.__cause__ or err.__context__
    return False


def run_experiment(cfg, *, resume: bool = False, num_cpus: int | None = None, verbose: int = 0):
    """Run (or resume) every run of ``cfg``; returns the results root (``storage/name``)."""
    from ray import tune

    from ..results import ResultsWriter

    root = Path(cfg.storage).resolve() / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    text = cfg.model_dump_json()
    (root / "experiment.json").write_text(text)
    _write_truth(cfg, root)
    _init_ray(num_cpus)
    tune_dir = root / "tune"
    # with the coalescing evaluator the GPU belongs to the evaluator actors; trials need CPU only
    res = {"cpu": cfg.resources.cpu, "gpu": 0.0 if cfg.use_evaluator else cfg.resources.gpu}
    if cfg.use_evaluator:
        from ..evaluator import start_evaluators

        start_evaluators()
    # a trial lost with its node is retried from its checkpoint; a dead node can cost two retries at
    # once (the reused actor, then the restart), so allow a few
    failure = tune.FailureConfig(max_failures=5)
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
        return _fit_resuming(tuner, lambda: tune.Tuner.restore(str(path), wrapped, resume_errored=True))

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
            settings = cfg.optimizer_settings(o, len(par.names))
            k = np.broadcast_to(np.asarray(settings["points_per_dim"]), (len(par.names),))
            space = {n: tune.grid_search([float(x) for x in (np.linspace(lo, hi, int(kj)) if kj > 1 else [(lo + hi) / 2])])
                     for n, (lo, hi), kj in zip(par.names, par.bounds, k)}
            num = 1
        conc = max(1, int(o.population))  # trial mode: candidates in flight at once
        searcher = tune_searcher(o.name, par, s.seed, o.settings, conc)
        grid = fit(trial_trainable, f"trial-{_safe(s.run_id)}",
                   param_space={"experiment": text, "results": str(root), "run_id": s.run_id, **space},
                   tune_config=tune.TuneConfig(metric=METRIC, mode="min", search_alg=searcher, num_samples=num,
                                               scheduler=tune_scheduler(o.scheduler, fids), reuse_actors=True,
                                               time_budget_s=cfg.budget.wall_s))
        errors += grid.num_errors
    if cfg.validation.top > 0 and specs:
        # never restored: training may have changed since (a resumed run), and it is deterministic
        shutil.rmtree(tune_dir / "holdout", ignore_errors=True)
        grid = fit(holdout_trainable, "holdout", param_space={
            "experiment": text, "results": str(root), "run_id": tune.grid_search([s.run_id for s in specs])},
            tune_config=tune.TuneConfig(reuse_actors=True))
        errors += grid.num_errors
    if cfg.use_evaluator:
        from ..evaluator import shutdown_evaluators

        shutdown_evaluators()
    ResultsWriter(root, cfg.name)  # the layout is the writer's
    return root, errors


def _write_truth(cfg, root: Path) -> None:
    """``truth.json``: the known parameters of synthetic targets and the search bounds, which
    :func:`raybrain.results.load` turns into parameter-recovery errors."""
    truths = cfg.truths()
    if not truths:
        return
    import json

    par = cfg.build_parametrisation(next(iter(truths)))
    bounds = {n: [float(lo), float(hi)] for n, (lo, hi) in zip(par.names, par.bounds)}
    (root / "truth.json").write_text(json.dumps({"params": truths, "bounds": bounds}, indent=1))


def _safe(text: str) -> str:
    from ..results import sanitise

    return sanitise(text)
