"""The Tune trainables of an experiment, one per stage, and the files they share.

* :func:`population_trainable` — population mode: one (subject, optimizer, seed) run per trial.
* :func:`trial_trainable` — trial mode: one candidate per trial, simulated rung by rung.
* :func:`holdout_trainable` — a finished run's validation, test and profile phases.

Noise seeds (:func:`noise_seed`, :func:`holdout_seed`) come from the run seed, so every record is
reproducible. Ray 2.60: report with ``ray.tune.report(metrics)``. Checkpoints are raybrain's own
files (:func:`state_path`), not Tune's.
"""
from __future__ import annotations

import hashlib
import pickle
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
    from ..search import get_optimizer
    from ..search.base import Optimizer

    from ..search.halving import successive_halving, told_losses

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
    from .searchers import INDEX

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
