"""Learned cost surrogate (DELSSOME; raybrain.surrogate, surrogate-cmaes): the figures of issue 7.

Default (rWW, pFIC cost, from raybrain's own runs), one command::

    nice python benchmarks/surrogate.py            # ~10 min on 2 busy cores

1. **Training experiment** — ``experiments/quickstart.yaml`` run on Ray Tune (random, CMA-ES, DE,
   TPE-ASHA on hcp/101309 and hcp/102311) with two changes, stated in the output: storage
   ``--storage`` (default ``results/bench-surrogate``) and the G bound widened to ``--g-max``
   (default 3.5; the quickstart's 2.5 keeps every candidate's firing rates in range, which leaves
   the plausibility classifier nothing to learn: FIC fails above G ≈ 2.9 on these connectomes).
2. **Surrogate experiment** — ``experiments/surrogate.yaml`` (plain CMA-ES vs surrogate-cmaes,
   population 8, same budget, same subjects, ``--seeds`` seeds, default 3) with the same G bound, its
   ``train:`` pointing at the training experiment's results by a *relative* path (resolved when the
   config is validated, read by the Tune workers).
3. **Held-out quality** of :class:`raybrain.surrogate.Surrogate` on the training experiment's
   records (phase train, top fidelity), per subject, two splits: ``random`` (a seeded random
   ``--test-fraction`` of the records held out) and ``by-run`` (each run held out in turn, fitted on
   the subject's other runs, predictions pooled). Printed: ``cost_r`` (Pearson r of predicted vs
   recorded pFIC cost, valid rows), ``cost_spearman``, ``class_accuracy`` (plausible, threshold
   0.5) and ``class_majority`` (always guessing the commoner label). The random split's held-out
   candidates are simulated again 4 times with fresh noise: ``repeat_r`` (r between the recorded
   costs and one repeat: the noise ceiling of a predictor scored against noisy records),
   ``cost_r_vs_repeat`` (the surrogate against that repeat), ``cost_r_vs_true`` (the surrogate
   against the mean of the 4 repeats, an estimate of the expected cost) and ``record_r_vs_true``
   (the recorded single-simulation cost against that mean: what re-simulating once achieves);
   candidates any of whose repeats failed (``n_repeat_failed``) are left out of these four.
4. **Evaluations per second** in this process, on the same ``--sim-batch`` candidates:
   ``Surrogate.predict`` vs ``Objective.evaluate`` (the quickstart's top fidelity: 172.8 s of BOLD at
   dt 1 ms), after a warm-up of each; also the surrogate on a ``--batch`` batch.
5. **End-to-end speed-up at equal final test cost.** For each run of the surrogate experiment,
   the incumbent after each generation (the lowest training loss so far, as
   :func:`raybrain.results.best`) is re-simulated here on the run's subject at the validation
   fidelity with ``--test-repeats`` fresh noise seeds (never a training seed; the same seeds for
   every candidate of a subject: common random numbers), and its *test cost* is the mean. Target
   ``c*`` = the surrogate run's final test cost (its incumbent after its whole budget). ``N_S`` =
   real simulations the surrogate run had spent when its incumbent's test cost first reached
   ``c*``; ``N_C`` = the same for the plain CMA-ES run of the same subject and seed (if it never
   does within the budget, ``N_C`` > its budget and the speed-up is a lower bound, printed ``>``).
   Speed-up = ``N_C / N_S``; ``with training`` = ``N_C / (N_S + training sims of that subject)``
   (every simulation of the training experiment on that subject, held-out phases included).
   Wall-clock: the same ratios with the runs' cumulative wall seconds per generation (Tune's
   ``time_total_s``: ask, surrogate refits, simulation, tell, writing; set-up included) and, with
   training, the training experiment's wall-clock divided by its number of subjects. Simulation
   counts are the primary figure; wall seconds are distorted by whatever else shares the cores.
   Totals (``speedup_total``) are ratios of sums over subjects x seeds; with training, each
   subject's training simulations are counted once (its seeds share them), and
   ``break_even_runs`` = a subject's training sims / the mean ``N_C - N_S`` of a run: how many
   surrogate runs one training set must serve before the surrogate pays for it. The same figures are printed a second time
   with the target the other way round (the plain run's final test cost), and a third time with a
   margin ``tol`` of twice the median standard error of a test cost (``test_cost_noise``): a test
   cost within noise of the target counts as reaching it.

Also ``--hopf``: the earlier quick check (Hopf, 400 random records simulated here; no Tune).
``--reuse``: use existing results under ``--storage`` instead of running the experiments again (the
training experiment's wall-clock is then the one recorded in its ``bench-wall.json`` when it ran).
Prints JSON lines (``"what"``: config, experiment, heldout, speed, test_cost_noise, speedup,
speedup_total).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from raybrain.surrogate import incumbents, speedup, training_rows

ROOT = Path(__file__).resolve().parent.parent


def emit(**kw):
    print(json.dumps(kw, default=_plain), flush=True)


def _plain(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# -- running the experiments ---------------------------------------------------------------------

def experiment_config(path, storage, g_max, seeds=None, train=None, budget=None):
    import yaml

    from raybrain.experiment import ExperimentConfig

    data = yaml.safe_load(Path(path).read_text())
    data["storage"] = str(storage)
    if g_max is not None:
        data["parametrisation"]["bounds"]["G"] = [data["parametrisation"]["bounds"]["G"][0], float(g_max)]
    if seeds is not None:
        data["seeds"] = int(seeds)
    if budget is not None:
        data["budget"]["evaluations"] = int(budget)
    if train is not None:
        for o in data["optimizers"]:
            if o["name"] == "surrogate-cmaes":
                o.setdefault("settings", {})["train"] = str(train)
    return ExperimentConfig.model_validate(data)


def run(cfg, reuse: bool):
    """Run ``cfg`` on Tune (unless ``reuse`` and its results exist); returns (root, wall seconds
    or None when reused)."""
    root = Path(cfg.storage).resolve() / cfg.name
    stamp = root / "bench-wall.json"   # the measured wall-clock, for a later --reuse
    if reuse and (root / "runs").is_dir() and any((root / "runs").iterdir()):
        return root, (json.loads(stamp.read_text())["wall_s"] if stamp.is_file() else None)
    from raybrain.tuning import run_experiment

    t0 = time.perf_counter()
    root, errors = run_experiment(cfg, num_cpus=2)
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"experiment {cfg.name}: {errors} trial(s) failed; see {root}/tune")
    stamp.write_text(json.dumps({"wall_s": wall}))
    return Path(root), wall


def tune_walls(root: Path) -> dict[str, pd.Series]:
    """Per population run: cumulative wall seconds by generation (raybrain's own records: the
    largest ``cum_wall_s`` of each training generation; Tune keeps no per-trial logs)."""
    from raybrain import results as R

    df = R.load(root).evaluations
    df = df[(df["phase"] == "train") & (df["mode"] == "population")]
    return {r: g.groupby("generation")["cum_wall_s"].max().sort_index() for r, g in df.groupby("run_id")}


# -- held-out quality ---------------------------------------------------------------------------

def heldout(df, cfg, seed, test_fraction, ensemble, repeats_true=4):
    """Per subject: the random and by-run splits (see the module docstring)."""
    from scipy.stats import pearsonr, spearmanr

    from raybrain.surrogate import Surrogate, _labels, training_rows

    rows = training_rows(df)
    out = []
    for subject, sub in rows.groupby("subject", sort=True):
        sub = sub.reset_index(drop=True)
        rng = np.random.default_rng(seed)
        test = rng.random(len(sub)) < test_fraction
        t0 = time.perf_counter()
        sur = Surrogate.fit(sub[~test], seed=seed, ensemble=ensemble)
        fit_s = time.perf_counter() - t0
        sc = sur.score(sub[test])
        # noise ceiling: the held-out candidates simulated again, ``repeats_true`` times with fresh
        # noise; their mean estimates the expected ("true") cost
        obj = cfg.build_objective(subject, -1)
        th = sub[test][sur.params].to_numpy(dtype=float)
        recs = [obj.evaluate(th, seed=987_654_321 + k, repeats=cfg.simulation.repeats) for k in range(repeats_true)]
        again = np.array([[r["loss"] for r in rk] for rk in recs])
        again_valid = np.array([[bool(r["valid"]) for r in rk] for rk in recs]).all(axis=0)
        first = sub[test]["loss"].to_numpy(dtype=float)
        # a candidate one of whose repeats failed (the loss's worst, e.g. 10) is left out: one such
        # value would dominate the mean
        ok = again_valid & np.all(np.isfinite(again), axis=0) & np.isfinite(first) & sub[test]["valid"].to_numpy(dtype=bool)
        sc["n_repeat_failed"] = int((~again_valid).sum())
        pred = sur.predict(th[ok])[0]
        mean = again[:, ok].mean(axis=0)
        sc["repeat_r"] = float(np.corrcoef(first[ok], again[0, ok])[0, 1])
        sc["cost_r_vs_repeat"] = float(np.corrcoef(pred, again[0, ok])[0, 1])
        sc["repeats_true"] = repeats_true
        sc["cost_r_vs_true"] = float(np.corrcoef(pred, mean)[0, 1])
        sc["record_r_vs_true"] = float(np.corrcoef(first[ok], mean)[0, 1])
        out.append({"subject": subject, "split": f"random {test_fraction:.0%} of records (seed {seed})",
                    "fit_s": round(fit_s, 2), "target": sur.target, "plausible_fraction": float(sub["plausible"].mean()),
                    **sc})
        # by run: each run held out in turn
        pred, p, y, lab, val = [], [], [], [], []
        runs = sorted(sub["run_id"].unique())
        for r in runs:
            tr, te = sub[sub["run_id"] != r], sub[sub["run_id"] == r]
            s = Surrogate.fit(tr, seed=seed, ensemble=ensemble)
            c, pp = s.predict(te[s.params].to_numpy(dtype=float))
            v, pl = _labels(te)
            pred.append(c), p.append(pp), y.append(te["loss"].to_numpy(dtype=float)), lab.append(pl), val.append(v)
        pred, p, y, lab, val = map(np.concatenate, (pred, p, y, lab, val))
        out.append({"subject": subject, "split": f"by run (leave one of {len(runs)} runs out)",
                    "n_test": int(len(y)), "cost_r": float(pearsonr(pred[val], y[val])[0]),
                    "cost_spearman": float(spearmanr(pred[val], y[val])[0]),
                    "class_accuracy": float(np.mean((p >= 0.5) == lab)),
                    "class_majority": float(max(lab.mean(), 1 - lab.mean()))})
    return out


# -- evaluations per second ---------------------------------------------------------------------

def evals_per_second(df, cfg, subject, seed, ensemble, sim_batch, batch):
    from raybrain.surrogate import Surrogate, training_rows

    rows = training_rows(df)
    sur = Surrogate.fit(rows[rows["subject"] == subject], seed=seed, ensemble=ensemble)
    obj = cfg.build_objective(subject, -1)
    b = obj.parametrisation.bounds
    th = np.random.default_rng(2).uniform(b[:, 0], b[:, 1], (sim_batch, b.shape[0]))
    sur.predict(th)
    obj.evaluate(th, seed=0)  # warm-up (kernel compilation)
    t0 = time.perf_counter()
    obj.evaluate(th, seed=1)
    sim = sim_batch / (time.perf_counter() - t0)
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        sur.predict(th)
    same = reps * sim_batch / (time.perf_counter() - t0)
    big = np.random.default_rng(1).uniform(b[:, 0], b[:, 1], (batch, b.shape[0]))
    t0 = time.perf_counter()
    sur.predict(big)
    bulk = batch / (time.perf_counter() - t0)
    fid = cfg.simulation.fidelity(-1)
    return {"subject": subject, "candidates": sim_batch, "simulator_evals_per_s": sim,
            "surrogate_evals_per_s_same_candidates": same, "ratio_same_candidates": same / sim,
            "surrogate_evals_per_s_batch": bulk, "batch": batch, "ratio_batch": bulk / sim,
            "simulator": f"rww+FIC, {fid.duration} s BOLD, dt {fid.dt} s, {cfg.simulation.dtype}, pfic, CPU"}


# -- the test-cost curves -----------------------------------------------------------------------

def test_curves(df, cfg, repeats_test, walls):
    """Per run of the surrogate experiment: its incumbents' test costs by generation."""
    params = [c for c in df.columns[list(df.columns).index("dt") + 1:list(df.columns).index("loss")]]
    curves, n_failed = {}, {}
    for subject, sub in df.groupby("subject", sort=True):
        per_run = {r: incumbents(g) for r, g in sub.groupby("run_id", sort=True)}
        ev = sub[sub["phase"] == "train"].set_index(["run_id", "eval_index"])
        keys = sorted({(r, e) for r, c in per_run.items() for e in c["eval_index"]})
        theta = np.array([ev.loc[k, params].to_numpy(dtype=float) for k in keys])
        uniq, inv = np.unique(theta, axis=0, return_inverse=True)
        obj = cfg.build_objective(subject, "validation")
        recs = [obj.evaluate(uniq, seed=555_000_000 + k, repeats=cfg.simulation.repeats) for k in range(repeats_test)]
        all_costs = np.array([[r["loss"] for r in rk] for rk in recs])
        costs = all_costs.mean(axis=0)
        ses = all_costs.std(axis=0, ddof=1) / np.sqrt(repeats_test) if repeats_test > 1 else np.full(len(uniq), np.nan)
        plaus = np.mean([[r["plausible"] for r in rk] for rk in recs], axis=0) >= 0.5
        n_failed[subject] = int(sum(not r["valid"] for rk in recs for r in rk))
        test = {k: float(costs[i]) for k, i in zip(keys, np.ravel(inv))}
        test_se = {k: float(ses[i]) for k, i in zip(keys, np.ravel(inv))}
        pl = {k: bool(plaus[i]) for k, i in zip(keys, np.ravel(inv))}
        for r, c in per_run.items():
            c = c.copy()
            c["test_cost"] = [test[(r, e)] for e in c["eval_index"]]
            c["test_cost_se"] = [test_se[(r, e)] for e in c["eval_index"]]
            c["plausible"] = [pl[(r, e)] for e in c["eval_index"]]
            w = walls.get(r)
            if w is not None and set(c["generation"]) <= set(w.index):
                c["wall_s"] = w.reindex(c["generation"]).to_numpy()
            c["subject"] = subject
            c["optimizer"] = sub[sub["run_id"] == r]["optimizer"].iloc[0]
            c["seed"] = int(sub[sub["run_id"] == r]["seed"].iloc[0])
            curves[r] = c
    return curves, n_failed


def main_rww(a):
    from raybrain import results

    os.chdir(ROOT)  # relative storage and train paths are relative to the repository root
    storage = Path(a.storage)
    tcfg = experiment_config(a.train_config, storage, a.g_max)
    emit(what="config", train_config=a.train_config, config=a.config, storage=str(storage), g_max=a.g_max,
         seeds=a.seeds, budget=a.budget, test_repeats=a.test_repeats,
         note="quickstart/surrogate configs as shipped except: storage, G upper bound, seeds, budget")
    t_root, t_wall = run(tcfg, a.reuse)
    train_rel = os.path.relpath(t_root, Path.cwd())  # relative on purpose: resolved at validation
    scfg = experiment_config(a.config, storage, a.g_max, seeds=a.seeds, train=train_rel, budget=a.budget)
    train_setting = next(o.settings["train"] for o in scfg.optimizers if o.name == "surrogate-cmaes")
    assert os.path.isabs(train_setting), train_setting
    s_root, s_wall = run(scfg, a.reuse)
    tdf = results.load(t_root).evaluations
    sdf = results.load(s_root).evaluations
    n_subj = tdf["subject"].nunique()
    t_sims = tdf.groupby("run_id")["cum_sims"].max().groupby(tdf.groupby("run_id")["subject"].first()).sum()
    emit(what="experiment", name=tcfg.name, root=str(t_root), wall_s=t_wall, sims=int(t_sims.sum()),
         sims_per_subject=t_sims.to_dict(), runs=int(tdf["run_id"].nunique()),
         training_rows=int(len(training_rows(tdf))),
         plausible_fraction=float(tdf[tdf["phase"] == "train"]["plausible"].mean()))
    emit(what="experiment", name=scfg.name, root=str(s_root), wall_s=s_wall, sims=int(sdf.groupby("run_id")["cum_sims"].max().sum()),
         runs=int(sdf["run_id"].nunique()), train_setting_given=train_rel, train_setting_resolved=train_setting,
         surrogate_rows=int(len(sdf[sdf["optimizer"] == "surrogate-cmaes"])))

    for h in heldout(tdf, tcfg, a.seed, a.test_fraction, a.ensemble):
        emit(what="heldout", **h)
    emit(what="speed", **evals_per_second(tdf, tcfg, sorted(tdf["subject"].unique())[0], a.seed, a.ensemble,
                                          a.sim_batch, a.batch))

    curves, n_failed = test_curves(sdf, scfg, a.test_repeats, tune_walls(s_root))
    # raybrain's own held-out phases, for reference
    hold = results.holdout(sdf).set_index("run_id") if "source_eval" in sdf else pd.DataFrame()
    train_wall_per_subject = (t_wall / n_subj) if t_wall is not None else float(
        tdf["wall_s"].fillna(0).sum() / n_subj)
    se = np.concatenate([c["test_cost_se"].to_numpy() for c in curves.values()])
    emit(what="test_cost_noise", test_repeats=a.test_repeats, failed_test_simulations=n_failed,
         median_se=float(np.median(se)),
         max_se=float(np.max(se)), note="standard error of an incumbent's test cost (sd of its fresh-noise "
         "re-simulations / sqrt(repeats)); differences between test costs below ~2 SE are noise")
    tol_noise = 2.0 * float(np.median(se))
    for which, tol in (("surrogate", 0.0), ("reference", 0.0), ("surrogate", tol_noise)):
        tot = {"sur": 0.0, "ref": 0.0, "wall_sur": 0.0, "wall_ref": 0.0}
        bounds, train_once = [], {}
        for r, c in sorted(curves.items()):
            if c["optimizer"].iloc[0] != "surrogate-cmaes":
                continue
            subj, seed = c["subject"].iloc[0], c["seed"].iloc[0]
            ref_id = next(k for k, v in curves.items() if v["optimizer"].iloc[0] == "cmaes"
                          and v["subject"].iloc[0] == subj and v["seed"].iloc[0] == seed)
            ref = curves[ref_id]
            target = None if which == "surrogate" else float(ref["test_cost"].iloc[-1])
            sp = speedup(c, ref, train_sims=float(t_sims.get(subj, 0.0)), train_wall=train_wall_per_subject,
                         target=target, tol=tol)
            extra = {}
            if which == "surrogate" and tol == 0:
                extra = {"surrogate_curve [sims, train_loss, test_cost, se]":
                         c[["sims", "train_loss", "test_cost", "test_cost_se"]].round(4).values.tolist(),
                         "reference_curve [sims, train_loss, test_cost, se]":
                         ref[["sims", "train_loss", "test_cost", "test_cost_se"]].round(4).values.tolist(),
                         "raybrain_holdout": {k: {col: _num(hold.loc[k, col]) for col in ("val_loss", "test_loss")}
                                              for k in (r, ref_id) if k in hold.index}}
            emit(what="speedup", target=f"{which} run's final test cost", subject=subj, seed=int(seed),
                 surrogate_run=r, reference_run=ref_id, **sp, **extra)
            bounds.append(sp["bound"])
            tot["sur"] += sp["sims_surrogate"]
            tot["ref"] += sp["sims_reference"]
            train_once[subj] = (sp["train_sims"], sp.get("train_wall_s", 0.0))
            if "wall_surrogate" in sp:
                tot["wall_sur"] += sp["wall_surrogate"]
                tot["wall_ref"] += sp["wall_reference"]
        tot["sur_train"] = tot["sur"] + sum(v[0] for v in train_once.values())
        tot["wall_sur_train"] = tot["wall_sur"] + sum(v[1] for v in train_once.values())
        saved = tot["ref"] - tot["sur"]
        bound = ("=" if set(bounds) == {"="} else ">=" if set(bounds) <= {"=", ">"}
                 else "<=" if set(bounds) <= {"=", "<"} else "mixed")
        emit(what="speedup_total", target=f"{which} run's final test cost", tol=tol, bound=bound, runs=len(bounds),
             definition=("speed-up = real simulations plain CMA-ES (same population, subject, seed) needs until "
                         "its incumbent's test cost (mean of fresh-noise re-simulations at the validation "
                         f"fidelity) is <= the target (the {which} run's final test cost) + tol, divided by those the "
                         "surrogate run needed to get there; a run that never does is charged its whole budget "
                         "(bound '>=': a lower bound, '<=': an upper bound); totals are ratios of sums over "
                         "subjects x seeds; 'with training' adds every simulation (and the per-subject share of "
                         "the wall-clock) of the training experiment to the surrogate runs', once per subject (its "
                         "seeds share it); break_even_runs: surrogate runs per subject that one training set must "
                         "serve before the saved simulations pay for it"),
             speedup_sims=tot["ref"] / tot["sur"], speedup_sims_with_training=tot["ref"] / tot["sur_train"],
             sims_reference=tot["ref"], sims_surrogate=tot["sur"], sims_training=tot["sur_train"] - tot["sur"],
             break_even_runs=((tot["sur_train"] - tot["sur"]) / saved * len(bounds) / max(len(train_once), 1))
             if saved > 0 else None,
             speedup_wall=(tot["wall_ref"] / tot["wall_sur"]) if tot["wall_sur"] else None,
             speedup_wall_with_training=(tot["wall_ref"] / tot["wall_sur_train"]) if tot["wall_sur_train"] else None,
             train_wall_s_per_subject=train_wall_per_subject,
             train_wall_source="measured wall-clock of the training experiment / subjects" if t_wall is not None
             else "reused results: the training rows' simulator wall_s / subjects (a lower bound)")


def _num(x):
    x = float(x)
    return x if np.isfinite(x) else None


# -- the earlier Hopf check ---------------------------------------------------------------------

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


def main_hopf(a):
    from raybrain.surrogate import Surrogate

    obj = hopf_objective()
    t0 = time.perf_counter()
    df = simulate(obj, a.n, a.seed)
    emit(what="simulate", n=a.n, wall_s=round(time.perf_counter() - t0, 3))
    test = np.random.default_rng(a.seed).random(len(df)) < a.test_fraction
    t0 = time.perf_counter()
    sur = Surrogate.fit(df[~test], seed=a.seed, ensemble=a.ensemble)
    emit(what="fit", fit_s=round(time.perf_counter() - t0, 3), n_train=sur.n_train, target=sur.target,
         outputs=sur.outputs, ensemble=a.ensemble)
    score = sur.score(df[test])
    names = list(obj.parametrisation.names)
    th = df[test][names].to_numpy(dtype=float)
    again = np.array([r["loss"] for r in obj.evaluate(th, seed=a.seed + 1)])
    score["repeat_r"] = float(np.corrcoef(df[test]["loss"].to_numpy(dtype=float), again)[0, 1])
    score["cost_r_vs_repeat"] = float(np.corrcoef(sur.predict(th)[0], again)[0, 1])
    emit(what="score", **score)
    b = obj.parametrisation.bounds
    th = np.random.default_rng(2).uniform(b[:, 0], b[:, 1], (a.sim_batch, b.shape[0]))
    obj.evaluate(th, seed=0)
    t0 = time.perf_counter()
    obj.evaluate(th, seed=1)
    sim = a.sim_batch / (time.perf_counter() - t0)
    big = np.random.default_rng(1).uniform(b[:, 0], b[:, 1], (a.batch, b.shape[0]))
    t0 = time.perf_counter()
    sur.predict(big)
    sps = a.batch / (time.perf_counter() - t0)
    emit(what="speed", surrogate_evals_per_s=sps, simulator_evals_per_s=sim, ratio=sps / sim,
         simulator="hopf dt 0.08 s, 21.6 s BOLD, pfic")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", default="results/bench-surrogate", help="where both experiments write")
    ap.add_argument("--train-config", default="experiments/quickstart.yaml")
    ap.add_argument("--config", default="experiments/surrogate.yaml")
    ap.add_argument("--g-max", type=float, default=3.5, help="upper G bound of both experiments (default 3.5)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the surrogate experiment (default 3)")
    ap.add_argument("--budget", type=int, default=None, help="override the surrogate experiment's budget")
    ap.add_argument("--test-repeats", type=int, default=8, help="fresh-noise simulations per incumbent")
    ap.add_argument("--reuse", action="store_true", help="reuse existing results under --storage")
    ap.add_argument("--hopf", action="store_true", help="the earlier quick Hopf check instead")
    ap.add_argument("--n", type=int, default=400, help="--hopf: records to simulate")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--sim-batch", type=int, default=16)
    a = ap.parse_args(argv)
    (main_hopf if a.hopf else main_rww)(a)


if __name__ == "__main__":
    main()
