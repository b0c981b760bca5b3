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
  names their record files and their noise streams, so a run is reproducible from its seed. Every
  trial-mode run of an experiment shares one Tune experiment, side by side; each keeps its own
  searcher, budget and scheduler (:func:`_trial_runs`).

After the search, a third stage (**holdout**, one Tune trial per run) re-simulates each run's best
training candidates with fresh noise on the validation targets and the winner on the test targets
(:meth:`raybrain.experiment.ExperimentConfig.holdout_targets`), then profiles the winner's
validated loss one parameter at a time (:func:`holdout_trainable`).

Ray 2.60: report with ``ray.tune.report(metrics)``; configs from ``ray.tune``. Checkpoints are
raybrain's own files (:func:`state_path`), not Tune's.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from ..experiment import config_from_json, objective_from_json

METRIC = "loss"


# -- helpers shared by both modes -------------------------------------------------------------
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


def state_path(root, run_id: str, trial: int | None = None) -> Path:
    """A run's (or one trial-mode trial's) latest checkpoint: ``root/checkpoints/<run>/run.pkl.z``
    or ``…/trial-000007.pkl.z``. raybrain keeps it, not Tune: one file, replaced atomically after
    each generation (rung) once its records are written, so a trial has exactly one checkpoint and
    no experiment snapshot can point at a checkpoint that was pruned since (what Tune's
    ``num_to_keep`` pruning leaves behind when the driver is killed between the two)."""
    from ..results import sanitise

    name = "run" if trial is None else f"trial-{int(trial):06d}"
    return Path(root) / "checkpoints" / sanitise(run_id) / f"{name}.pkl.z"


def _report(metrics: dict, state: dict, path: Path):
    """Save ``state`` as the trial's checkpoint (compressed pickle at ``path``), then report."""
    from ray import tune

    from ..results import _atomic_write

    data = zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 6)
    _atomic_write(Path(path), lambda p: p.write_bytes(data))
    tune.report(metrics)


def _restore(path: Path) -> dict | None:
    """The trial's latest checkpoint, or None (a fresh start)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return pickle.loads(zlib.decompress(data))


# -- population mode --------------------------------------------------------------------------
def population_trainable(config: dict, experiment: str) -> None:
    """One (subject, optimizer, seed) run: ask a generation, evaluate it batched, tell, record.

    ``experiment``: the config as JSON (bound with ``tune.with_parameters``, so it is not copied
    into Tune's trial configs and result rows); ``config`` holds ``results`` and ``run_id``."""
    from ..results import ResultsWriter
    from . import get_optimizer
    from .base import Optimizer

    from .halving import successive_halving, told_losses

    text = experiment
    cfg = config_from_json(text)
    spec = _spec(cfg, config["run_id"])
    fids = cfg.simulation.fidelities
    top = len(fids) - 1
    eta = spec.optimizer.halving_eta
    rungs = range(len(fids)) if eta else [top]
    objectives = [objective_from_json(text, spec.subject, k) for k in rungs]
    par = objectives[-1].parametrisation
    writer = ResultsWriter(config["results"], cfg.name)
    ckpt = state_path(config["results"], spec.run_id)
    if writer.summary_path(spec.run_id).is_file():  # finished before (a retried or restored trial)
        return
    saved = _restore(ckpt)
    if saved:
        opt = Optimizer.from_state(saved["optimizer"])
        generation, n_evals, wall = saved["generation"], saved["n_evals"], saved["wall_s"]
    else:
        opt = get_optimizer(spec.optimizer.name, par.bounds, seed=spec.seed, population=spec.optimizer.population,
                            **cfg.optimizer_settings(spec.optimizer, len(par.names)))
        generation, n_evals, wall = 0, 0, 0.0
    repeats = cfg.simulation.repeats
    opt.attach_objective(objectives[-1], seed=noise_seed(spec.seed, 0), repeats=repeats)  # a hook; default no-op
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
            records = _evaluate(cfg, text, spec.subject, top, theta, seed=seed, repeats=repeats,
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
        _report({METRIC: float(opt.best_loss)},  # one metric: Tune keeps statistics of each per trial
                {"optimizer": opt.state(), "generation": generation, "n_evals": n_evals, "wall_s": wall}, ckpt)
    writer.write_run_summary(spec.run_id, {
        "mode": spec.mode, "subject": spec.subject, "optimizer": spec.optimizer.key, "seed": spec.seed,
        "evaluations": n_evals, "generations": generation, "wall_s": wall, "best_loss": opt.best_loss,
        "best": dict(zip(par.names, map(float, opt.best_theta))) if opt.best_theta is not None else None})
    ckpt.unlink(missing_ok=True)  # the summary marks the run finished: its checkpoint is not needed


def _evaluate(cfg, text: str, subject: str, fidelity, theta, *, seed: int, repeats: int, first_stream: int = 0):
    """Records of ``theta`` at one fidelity: through this node's coalescing evaluator when the
    experiment uses one (identical records, batched with other trials'), else in this process."""
    if cfg.use_evaluator:  # as the driver decided (stamped into cfg); raises on an unplanned config
        from ..evaluator import remote_evaluate

        return remote_evaluate(text, subject, fidelity, theta, seed=seed, repeats=repeats, first_stream=first_stream,
                               backend=cfg.simulation.backend)
    return objective_from_json(text, subject, fidelity).evaluate(theta, seed=seed, repeats=repeats,
                                                                 first_stream=first_stream)


class _Rung:
    def __init__(self, fidelity: int, records: list):
        self.fidelity, self.records = fidelity, records


# -- trial mode -------------------------------------------------------------------------------
def trial_trainable(config: dict, experiment: str) -> None:
    """One candidate: simulate up to each fidelity's duration, report the loss, checkpoint.

    A rung with the same dt as the one below continues the simulation; a finer dt starts afresh."""
    from ray import tune

    from ..integrate import SimState
    from ..results import ResultsWriter
    from ._tune_searchers import INDEX

    text = experiment
    cfg = config_from_json(text)
    spec = _spec(cfg, config["run_id"])
    fids = cfg.simulation.fidelities
    par = objective_from_json(text, spec.subject, len(fids) - 1).parametrisation
    theta = np.array([[float(config[n]) for n in par.names]])
    # the trial's number within its run: stamped by the searcher wrapper, else Tune's counter
    # (BasicVariantGenerator names trials <prefix>_00000, _00001, …); names its records and noise
    trial_no = int(config[INDEX]) if INDEX in config else int(tune.get_context().get_trial_id().rsplit("_", 1)[-1])
    repeats = cfg.simulation.repeats
    writer = ResultsWriter(config["results"], cfg.name)

    def simulation(k, state=None):
        return objective_from_json(text, spec.subject, k).simulation(
            theta, seed=noise_seed(spec.seed, 0), repeats=repeats, candidates=[trial_no], state=state)

    ckpt = state_path(config["results"], spec.run_id, trial_no)
    saved = _restore(ckpt)
    sim, bold, done, wall = None, None, 0, 0.0
    if saved:
        bold, done, wall = saved["bold"], saved["done"], saved["wall_s"]
        sim = simulation(done - 1, SimState.from_arrays(saved["sim"]))
    for k in range(done, len(fids)):
        t0 = time.perf_counter()
        fresh = sim is None or fids[k].dt != fids[k - 1].dt
        if fresh:
            sim, bold = simulation(k), None
        compile_s = sim.prepare()  # kernel compile / load: recorded apart from the wall time
        t0 += compile_s
        res = sim.run(fids[k].duration - (0.0 if fresh else fids[k - 1].duration))
        bold = res.bold if bold is None else np.concatenate([bold, res.bold], axis=1)
        wall += time.perf_counter() - t0
        records = objective_from_json(text, spec.subject, k).score(theta, bold, res, repeats=repeats,
                                                          wall_s=time.perf_counter() - t0, compile_s=compile_s)
        records[0]["new_sims"] = repeats if fresh else 0
        writer.write_generation(spec.run_id, trial_no, records, _meta(spec, k, fids[k], par.names))
        if k + 1 == len(fids):  # the last rung: nothing left to continue
            ckpt.unlink(missing_ok=True)
            _report_plain({METRIC: records[0]["loss"], "sim_seconds": fids[k].duration, "fidelity": k})
        else:
            _report({METRIC: records[0]["loss"], "sim_seconds": fids[k].duration, "fidelity": k},
                    {"sim": sim.state.to_arrays(), "bold": bold, "done": k + 1, "wall_s": wall}, ckpt)


# -- holdout: validation and test -------------------------------------------------------------
def holdout_trainable(config: dict, experiment: str) -> None:
    """A finished run's held-out phases: its best distinct training candidates re-simulated with
    ``validation.repeats`` fresh-noise repeats on each validation target (records carry the mean
    ``loss`` and its standard error ``loss_se``); the winner (lowest mean validation loss) on each
    test target; then the winner's **profile** (phase ``"profile"``, ``validation.profile``): each
    fitted parameter moved ``points`` steps of ``span / points`` of its search range each side
    (clipped to the bounds), the others at the fit, plus the winner itself (step 0), re-simulated
    on each validation target; records carry ``profile_param`` (None for step 0) and
    ``profile_step``. Cost of the profile per run and validation target:
    ``(2·points·P + 1)·repeats`` simulations. Deterministic (seeds from the run seed, one per phase
    and target), so a retried trial rewrites the same files."""
    from ..results import ResultsWriter, load_run, param_columns

    text = experiment
    cfg = config_from_json(text)
    spec = _spec(cfg, config["run_id"])
    df = load_run(config["results"], spec.run_id)
    par = objective_from_json(text, spec.subject, len(cfg.simulation.fidelities) - 1).parametrisation
    train = df[(df["phase"] == "train") & (df["fidelity"] == df["fidelity"].max())]
    train = train[np.isfinite(train["loss"].astype(float))].sort_values(["loss", "eval_index"], kind="stable")
    train = train.drop_duplicates(subset=param_columns(df)).head(cfg.validation.top)
    if train.empty:
        _report_plain({METRIC: float("nan"), "candidates": 0})
        return
    theta = train[list(par.names)].to_numpy(dtype=np.float64)
    source = train["eval_index"].to_numpy()
    repeats = cfg.validation.repeats
    fid = cfg.simulation.fidelity("validation")
    writer = ResultsWriter(config["results"], cfg.name)

    def evaluate(phase, j, target, th, src, extra=None):
        t0 = time.perf_counter()
        records = _evaluate(cfg, text, target, "validation", th, seed=holdout_seed(spec.seed, phase, j),
                            repeats=repeats)
        for i, (r, e) in enumerate(zip(records, src)):
            r["source_eval"], r["new_sims"] = int(e), repeats
            r["wall_s"] = (time.perf_counter() - t0) / len(records) - (r.get("compile_s") or 0.0)
            for k, v in (extra or {}).items():
                r[k] = v[i]
        writer.write_generation(spec.run_id, j, records, _meta(spec, -1, fid, par.names, phase, target))
        return np.array([r["loss"] for r in records], dtype=float)

    targets = cfg.holdout_targets("validation", spec.subject)
    val = [evaluate("validation", j, t, theta, source) for j, t in enumerate(targets)]
    mean = np.mean(val, axis=0)
    w = int(np.argmin(mean))
    test = [evaluate("test", j, t, theta[[w]], source[[w]])[0]
            for j, t in enumerate(cfg.holdout_targets("test", spec.subject))]
    prof = profile_points(theta[w], par.bounds, cfg.validation.profile)
    if prof is not None:
        pts, which, steps = prof
        names = [None if i is None else par.names[i] for i in which]
        for j, t in enumerate(targets):
            evaluate("profile", j, t, pts, np.full(len(pts), source[w]),
                     {"profile_param": names, "profile_step": steps})
    _report_plain({METRIC: float(mean[w]), "winner_eval": int(source[w]),
                   "test_loss": float(np.mean(test)) if test else float("nan"), "candidates": len(theta)})


def profile_points(fit, bounds, profile) -> tuple[np.ndarray, list, list] | None:
    """The candidates of the profile around ``fit`` (P,) (see :func:`holdout_trainable`): ``(points
    (1 + 2·points·P, P), profiled parameter index or None, step)``, the fit first (step 0), then
    per parameter steps -points…-1, 1…points of ``span / points`` of its range, clipped to
    ``bounds``. None when ``profile.points`` is 0 or there are more than ``profile.max_params``
    parameters."""
    fit = np.asarray(fit, dtype=np.float64)
    n = int(profile.points)
    if n == 0 or len(fit) > int(profile.max_params):
        return None
    lo, hi = (np.array(b, dtype=np.float64) for b in zip(*bounds))
    step = float(profile.span) / n * (hi - lo)
    pts, which, steps = [fit], [None], [0]
    for i in range(len(fit)):
        for k in (*range(-n, 0), *range(1, n + 1)):
            t = fit.copy()
            t[i] = np.clip(fit[i] + k * step[i], lo[i], hi[i])
            pts.append(t)
            which.append(i)
            steps.append(k)
    return np.array(pts), which, steps


def _report_plain(metrics: dict) -> None:
    from ray import tune

    tune.report(metrics)


def _search_space(par) -> dict:
    from ray import tune

    return {n: tune.uniform(float(lo), float(hi)) for n, (lo, hi) in zip(par.names, par.bounds)}


def tune_searcher(name: str, par, seed: int, settings: dict, max_concurrent: int, num_samples: int | None = None):
    """The trial-mode searcher of optimizer family ``name`` (a registry name or ``module:Class``),
    seeded with the run seed: the family's :meth:`~raybrain.search.Optimizer.trial_searcher` with
    ``settings`` (checked for trial mode, merged with the family's defaults), wrapped to number its
    trials (:class:`._tune_searchers.Numbered`) and limited to ``max_concurrent`` trials in flight.
    ``par`` (names, bounds) may be None where the searcher learns the space from Tune alone."""
    from ray.tune.search import ConcurrencyLimiter

    from . import family
    from ._tune_searchers import Numbered

    fam = family(name)
    names, bounds = (None, None) if par is None else (list(par.names), np.asarray(par.bounds, dtype=np.float64))
    alg = fam.trial_searcher(names, bounds, int(seed), fam.check_settings(settings, "trial"), max_concurrent)
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
    authentication on (Ray >= 2.59's default for a local cluster; it generates the token), no
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
        if not address:  # Ray >= 2.59 turns token authentication on for the local cluster it starts
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = os.environ[_LOOPBACK_ENV] not in ("0", "false", "False")
            kw = {"num_cpus": num_cpus}
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **kw)


_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_NODE_LOSS_RESUMES = 3


def _fit_resuming(tuner, restore, stopped=lambda: False):
    """``tuner.fit()``, then resume the trials that were lost with their node.

    Tune retries a failed trial (``FailureConfig``) only if it was RUNNING: one lost with its node
    while it was being placed, or handed a reused actor, ends in ERROR at once. Those are resumed
    from their checkpoints (``restore()``: the experiment restored with ``resume_errored``), up to
    ``_NODE_LOSS_RESUMES`` times. A grid whose errors all come from the trials' own code is returned
    as it is: re-running would only fail again. Nothing is resumed once ``stopped()``."""
    grid = tuner.fit()
    for _ in range(_NODE_LOSS_RESUMES):
        if stopped() or not any(_lost_with_node(r.error) for r in grid if r.error is not None):
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


class Interrupted(Exception):
    """The experiment was stopped by a signal (SIGINT/SIGTERM) after Tune saved its state."""

    def __init__(self, signum: int, root: Path):
        self.signum, self.root = int(signum), Path(root)
        super().__init__(f"interrupted by signal {self.signum}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class _TuneNoise(logging.Filter):
    """Drops Tune's own messages about a stop we asked for (its ``Tuner.restore(...)`` advice, the
    'stop signal received' and 'trials did not complete' lines: raybrain says how to resume) and
    about the per-trial log files it no longer writes."""

    NEEDLES = ("Tuner.restore", "Stop signal received", "Trials did not complete", "has been interrupted",
               "Failed to fetch metrics")  # the last: Tune's loggers are off (raybrain keeps the records)
    LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")

    def filter(self, record):
        msg = record.getMessage()
        return not any(n in msg for n in self.NEEDLES)


class _StopOnSignals:
    """While an experiment runs in the main thread: the first SIGINT or SIGTERM asks Tune to stop
    after saving its state (Tune's own stop request, SIGUSR1, which it handles in every ``fit``), and
    no further phase starts; a second signal exits at once (status 128 + signal). Elsewhere (a
    worker thread) signals keep their handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    GRACE_S = 10.0  # after the first signal, a second one this soon exits at once, even after the stop

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict = {}
        self._filter = _TuneNoise()
        self._first = 0.0

    def _exit_now(self, signum, frame):
        if time.monotonic() - self._first > self.GRACE_S:  # long after the stop: an ordinary signal
            h = self._saved.get(signum, signal.SIG_DFL)
            signal.signal(signum, h)
            if callable(h):
                return h(signum, frame)
            os.kill(os.getpid(), signum)
            return None
        sys.stderr.write("raybrain: stopped at once (second signal); records written so far are kept\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    def _handle(self, signum, frame):
        if self.signum is not None:
            return self._exit_now(signum, frame)
        self.signum, self._first = signum, time.monotonic()
        tune_handler = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if callable(tune_handler):  # Tune is (or was) fitting: its handler ends the loop after a save
            tune_handler(signum, frame)

    def __enter__(self):
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        for name in _TuneNoise.LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        if threading.current_thread() is threading.main_thread():
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT is ours; Tune learns via SIGUSR1
            for s in self.SIGNALS:
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._saved.items():  # once stopping, a second signal still exits at once
            signal.signal(s, h if self.signum is None else self._exit_now)
        if self._saved:
            if self._env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env
        for name in _TuneNoise.LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        return False


def run_experiment(cfg, *, resume: bool = False, num_cpus: int | None = None, verbose: int = 0,
                   selection=None):
    """Run (or resume) the runs of ``cfg`` in ``selection`` (default: all; a
    :class:`raybrain.execution.Selection`); returns ``(results root, failed trials)``.

    Phases, each one Tune experiment under ``tune/`` (``tune/<selection key>/`` for a slice):
    ``population`` (one trial per population-mode run), ``trial`` (every trial-mode run side by
    side: :class:`._tune_searchers.PerRun` gives each run its own searcher and budget,
    :class:`._tune_searchers.PerRunScheduler` its own scheduler) and ``holdout``. The experiment
    config reaches the trials through ``tune.with_parameters`` (not copied into their configs or
    result rows), each trial keeps only its latest checkpoint (:func:`state_path`; removed when the
    selection completes), and Tune's per-trial loggers
    (``result.json``, ``progress.csv``, TensorBoard) are off: raybrain's own parquet records are the
    results. SIGINT or SIGTERM stops every phase after Tune saves its state and raises
    :class:`Interrupted`; ``resume=True`` continues from there."""
    from ray import tune

    from .. import execution as X
    from ..results import ResultsWriter

    selection = selection or X.Selection()
    cfg = cfg.resolved()  # auto bounds: numbers, the same for every run and in experiment.json
    root = Path(cfg.storage).resolve() / cfg.name
    specs = selection.apply(cfg.runs())
    run_ids = [s.run_id for s in specs]
    root.mkdir(parents=True, exist_ok=True)
    text = cfg.model_dump_json()
    saved = root / "experiment.json"
    if not (saved.is_file() and saved.read_text() == text):
        saved.write_text(text)
    _write_truth(cfg, root)
    _write_schema(cfg, root)
    _write_covariates(cfg, root)
    X.write_status(root, selection, "running", run_ids)
    _init_ray(num_cpus)
    tune_dir = X.tune_dir(root, selection)
    # one decision, here, for the whole cluster (raybrain.evaluator.plan): backend, evaluator on/off
    # and what each trial holds (no GPU with the evaluator: each GPU is its evaluator's), stamped
    # into the config the trials receive; the evaluators start, pinned one per GPU, before any trial
    import ray

    from ..evaluator import plan as _plan, start_evaluators

    decision = _plan(cfg, ray.cluster_resources())
    text = decision.stamp(cfg)
    res = decision.trial
    if decision.evaluator:
        start_evaluators(decision)
    # a trial lost with its node is retried from its checkpoint; a dead node can cost two retries at
    # once (the reused actor, then the restart), so allow a few
    failure = tune.FailureConfig(max_failures=5)
    errors = 0
    stop = _StopOnSignals()
    saved_loggers = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"

    def fit(trainable, name, **tuner_kw):
        path = tune_dir / name
        wrapped = tune.with_resources(tune.with_parameters(trainable, experiment=text), res)
        if resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), wrapped, resume_errored=True)
        else:
            tuner = tune.Tuner(wrapped, run_config=tune.RunConfig(
                name=name, storage_path=str(tune_dir), failure_config=failure, verbose=verbose), **tuner_kw)
        return _fit_resuming(tuner, lambda: tune.Tuner.restore(str(path), wrapped, resume_errored=True),
                             stopped=lambda: stop.signum is not None)

    try:
        with stop:
            pop = [s.run_id for s in specs if s.mode == "population"]
            if pop and stop.signum is None:
                grid = fit(population_trainable, "population", param_space={
                    "results": str(root), "run_id": tune.grid_search(pop)},
                    tune_config=tune.TuneConfig(reuse_actors=True))
                errors += grid.num_errors
            trial = [s for s in specs if s.mode == "trial"]
            if trial and stop.signum is None:
                searcher, scheduler, conc = _trial_runs(cfg, text, trial)
                grid = fit(trial_trainable, "trial", param_space={"results": str(root)},
                           tune_config=tune.TuneConfig(metric=METRIC, mode="min", search_alg=searcher,
                                                       num_samples=-1, scheduler=scheduler, reuse_actors=True,
                                                       max_concurrent_trials=conc))
                errors += grid.num_errors
            if cfg.validation.top > 0 and specs and stop.signum is None:
                # never restored: training may have changed since (a resumed run), and it is deterministic
                shutil.rmtree(tune_dir / "holdout", ignore_errors=True)
                grid = fit(holdout_trainable, "holdout", param_space={
                    "results": str(root), "run_id": tune.grid_search(run_ids)},
                    tune_config=tune.TuneConfig(reuse_actors=True))
                errors += grid.num_errors
                if not grid.num_errors and stop.signum is None:  # never restored: no need to keep it
                    shutil.rmtree(tune_dir / "holdout", ignore_errors=True)
    finally:
        if saved_loggers is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = saved_loggers
        if decision.evaluator:
            from ..evaluator import shutdown_evaluators

            shutdown_evaluators()
    n = X.count_evaluations(root, run_ids)
    if stop.signum is not None:
        X.write_status(root, selection, "interrupted", run_ids, evaluations=n)
        raise Interrupted(stop.signum, root)
    if not errors:  # finished: the runs' checkpoints will never be resumed from
        for r in run_ids:
            shutil.rmtree(state_path(root, r).parent, ignore_errors=True)
    X.write_status(root, selection, "failed" if errors else "complete", run_ids, evaluations=n,
                   failed_trials=errors)
    ResultsWriter(root, cfg.name)  # the layout is the writer's
    return root, errors


def _trial_runs(cfg, text: str, specs):
    """The searcher, scheduler and trials in flight of the trial-mode runs ``specs``: one seeded,
    numbered searcher per run (``population`` trials of it in flight), one scheduler per run."""
    from functools import partial

    from ._tune_searchers import PerRun, PerRunScheduler

    fids = cfg.simulation.fidelities
    runs, budgets, makers, conc = {}, {}, {}, 0
    for s in specs:
        par = objective_from_json(text, s.subject, len(fids) - 1).parametrisation
        o = s.optimizer
        c = max(1, int(o.population))  # trial mode: candidates in flight at once
        searcher = tune_searcher(o.name, par, s.seed, cfg.optimizer_settings(o, len(par.names)), c)
        searcher.set_search_properties(METRIC, "min", _search_space(par))
        # a grid smaller than the budget ends its run itself (its searcher says FINISHED)
        runs[s.run_id], budgets[s.run_id] = searcher, cfg.budget.evaluations
        makers[s.run_id] = partial(tune_scheduler, o.scheduler, fids)
        conc += c
    # trials pending at once: enough to fill the cluster twice over, not one per run of a cohort
    import ray

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) / max(cfg.resources.cpu, 1e-9)))
    searcher, scheduler = PerRun(runs, budgets, wall_s=cfg.budget.wall_s), PerRunScheduler(makers)
    searcher.scheduler = scheduler  # Tune saves no scheduler: the searcher saves it with its own state
    return searcher, scheduler, max(1, min(conc, 2 * slots))


def _write_covariates(cfg, root: Path) -> None:
    """``covariates.tsv``: the cohort's covariates, one row per subject (``subject`` first; BIDS
    ``n/a`` for missing values), which :func:`raybrain.results.load` joins onto every record and
    run row by subject."""
    df = cfg.covariates()
    if df is None:
        return
    from ..results import _atomic_write

    text = df.to_csv(sep="\t", index=False, na_rep="n/a")
    f = root / "covariates.tsv"
    if not (f.is_file() and f.read_text() == text):
        _atomic_write(f, lambda p: p.write_text(text))


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


def results_schema(cfg):
    """The :class:`raybrain.results.Schema` of every results file of ``cfg``: the parametrisation's
    names (a regional one's over every fitted and held-out target, whose region counts may
    differ), the loss's components (a composite's prefixed by part, with each part's total, as
    :class:`raybrain.losses.CompositeLoss` returns them) and, for a spectral fit, the spectral
    features of the simulated signal (:data:`raybrain.spectral.FEATURE_COLUMNS`). The noise and
    profile columns (``loss_se``, ``profile_param``, ``profile_step``) are known extras, in every
    file (:data:`raybrain.results.KNOWN_EXTRAS`)."""
    from ..objective import build_loss
    from ..results import Schema
    from ..losses import CompositeLoss
    from ..spectral import FEATURE_COLUMNS

    if cfg.parametrisation.kind == "regional":
        targets = dict.fromkeys(t for s in cfg.targets() for t in
                                [s, *cfg.holdout_targets("validation", s), *cfg.holdout_targets("test", s)])
        params = [n for t in targets for n in cfg.build_parametrisation(t).names]
    else:  # names that do not depend on the subject
        params = list(cfg.parametrisation.build(cfg.build_model()).names)
    loss = build_loss(cfg.loss)
    if isinstance(loss, CompositeLoss):
        comps = [c for k, (lo, _) in loss.parts.items() for c in (f"{k}.total", *(f"{k}.{x}" for x in lo.components))]
    else:
        comps = list(loss.components)
    return Schema(params, comps, list(FEATURE_COLUMNS) if cfg.spectral else [])


def _write_schema(cfg, root: Path) -> None:
    """``schema.json``: the columns every results file of the experiment has (every writer of
    ``root`` reads it), so that any parquet reader sees one schema."""
    from ..results import ResultsWriter

    ResultsWriter(root, cfg.name, schema=results_schema(cfg))
