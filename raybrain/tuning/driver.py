"""The experiment driver: :func:`run_experiment` runs the stages of an experiment (population,
trial, holdout) as Tune experiments on the cluster it joins or starts (:func:`_init_ray`),
resumes trials lost with their node (:func:`_fit_resuming`) and stops on SIGINT/SIGTERM after
Tune saved its state (:class:`_StopOnSignals`, :class:`Interrupted`)."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .records import _write_covariates, _write_schema, _write_truth
from .trainables import METRIC, holdout_trainable, population_trainable, state_path, trial_trainable
from .trial_search import _trial_runs


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
    side: :class:`.searchers.PerRun` gives each run its own searcher and budget,
    :class:`.searchers.PerRunScheduler` its own scheduler) and ``holdout``. The experiment
    config reaches the trials through ``tune.with_parameters`` (not copied into their configs or
    result rows), each trial keeps only its latest checkpoint (:func:`.trainables.state_path`; removed when the
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
