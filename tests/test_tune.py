"""End to end on a local Ray instance (one per session, ``ray_local`` in conftest.py).

The problem is tiny so that Ray and Tune are what is tested: the Hopf model (array path, no numba
compile, no hemodynamics) on the bundled subject hcp/101309 (TR 0.72 s), 2 parameters, 21.6 s and
43.2 s of simulated BOLD at dt 0.08 s (~50 ms per generation of 4), loss fc_corr (no FCD).

* ``study``: one experiment holding every optimizer family in population mode and every Tune
  search algorithm in trial mode, spread over every scheduler; several tests read its results.
* an interrupted run (the CLI in a subprocess, SIGKILLed) resumed with ``raybrain resume`` ends
  with exactly the evaluations of an uninterrupted run;
* the CLI: ``run`` prints the analysis in 80 columns, ``analyze`` needs no Ray, a bad config is one
  line naming the key path, exit status 2.

Subprocesses join the session's Ray instance through ``RAY_ADDRESS`` (about 1.5 s instead of 5 s).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from raybrain import results as R

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SUBJECT = "hcp/101309"
BOUNDS = {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}
FIDELITIES = [{"duration": 21.6, "dt": 0.08}, {"duration": 43.2, "dt": 0.08}]
BUDGET = 8
POPULATION = 4
FAMILIES = ["random", "grid", "cmaes", "de", "pso", "tpe", "optuna-cmaes", "hyperopt-tpe", "bayesopt"]
# trial mode: (search algorithm, scheduler, concurrent trials); every searcher and scheduler once or
# more. tpe + asha runs one trial at a time, so ASHA's decisions do not depend on timing.
TRIAL = [("random", "fifo", 2), ("grid", "fifo", 2), ("tpe", "asha", 1), ("optuna-cmaes", "hyperband", 2),
         ("hyperopt-tpe", "median", 2), ("cmaes", "asha", 2), ("de", "fifo", 2), ("pso", "median", 2),
         ("bayesopt", "hyperband", 2)]
GRID_TRIAL = 2  # trial-mode grid: 2 x 2 = 4 trials (a Tune grid_search runs every point)
TOP = 2         # validation.top: best training candidates re-simulated per run
PROFILE = 1 + 2 * 2 * 2  # validation.profile rows per run (default points 2; G and sigma; plus the winner)


def experiment(name, storage, optimizers, budget=BUDGET, fidelities=FIDELITIES, **over):
    d = {"name": name, "storage": str(storage), "subjects": {"ids": [SUBJECT]}, "model": {"name": "hopf"},
         "parametrisation": {"kind": "global", "names": ["G", "sigma"], "bounds": BOUNDS},
         "loss": "fc_corr",
         # common noise: a candidate's loss depends on its parameters only, whatever its trial id
         "simulation": {"fidelities": fidelities, "burn_in": 0.0, "noise": "common",
                        "fused": "never"},  # the run layer under test: no kernel to compile
         "optimizers": optimizers, "budget": {"evaluations": budget}}
    d.update(over)
    return d


def validate(d):
    from raybrain.experiment import ExperimentConfig

    return ExperimentConfig.model_validate(d, context={"base_dir": str(REPO)})


def subprocess_env(address):
    env = dict(os.environ, RAY_ADDRESS=address, PYTHONPATH=str(REPO))
    env.pop("RAYBRAIN_DEBUG", None)
    return env


def rows_of(df, label, phase="train"):
    df = df[(df["optimizer"] == label) & (df["phase"] == phase)]
    return df.sort_values("eval_index").reset_index(drop=True)


def assert_inside_bounds(rows):
    for p, (lo, hi) in BOUNDS.items():
        assert rows[p].between(lo, hi).all(), (p, rows[p].tolist())


# ------------------------------------------------------------------------- one study, both modes
@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    from raybrain.tuning import run_experiment

    opts = [{"name": f, "population": POPULATION} for f in FAMILIES]  # grid: the budget sets its size
    opts += [{"name": "cmaes", "label": "cmaes-sh", "population": POPULATION, "successive_halving": True}]
    opts += [{"name": f, "label": f"t-{f}", "mode": "trial", "scheduler": s, "population": c,
              **({"settings": {"points_per_dim": GRID_TRIAL}} if f == "grid" else {})} for f, s, c in TRIAL]
    cfg = validate(experiment("study", tmp_path_factory.mktemp("study"), opts, validation={"top": TOP}))
    root, errors = run_experiment(cfg)
    return cfg, Path(root), errors, R.load(root)


def test_study_runs_without_failed_trials(study):
    cfg, root, errors, res = study
    assert errors == 0
    assert root == Path(cfg.storage).resolve() / "study"
    assert (root / "experiment.json").is_file()
    assert sorted(res.evaluations["run_id"].unique()) == sorted(s.run_id for s in cfg.runs())
    assert (res.evaluations["experiment"] == "study").all() and (res.evaluations["subject"] == SUBJECT).all()
    assert R.param_columns(res.evaluations) == ["G", "sigma"]


@pytest.mark.parametrize("family", FAMILIES)
def test_population_mode_every_family(study, family):
    cfg, root, errors, res = study
    rows = rows_of(res.evaluations, family)
    n = 4 if family == "grid" else BUDGET  # grid: floor(sqrt(8)) = 2 points per parameter
    assert len(rows) == n
    assert (rows["mode"] == "population").all() and (rows["seed"] == 0).all()
    assert rows["eval_index"].tolist() == list(range(n))
    # generations of POPULATION candidates, numbered from 0, in evaluation order
    assert rows["generation"].tolist() == [i // POPULATION for i in range(n)]
    # population mode evaluates at the last (highest) fidelity
    assert (rows["fidelity"] == 1).all() and (rows["duration"] == 43.2).all() and (rows["dt"] == 0.08).all()
    assert np.allclose(rows["sim_seconds"], 43.2)
    assert np.isfinite(rows["loss"]).all() and rows["valid"].all()
    assert ((rows["loss"] >= 0) & (rows["loss"] <= 2)).all()  # fc_corr cost is 1 - r
    assert_inside_bounds(rows)
    assert rows["cum_sims"].tolist() == list(range(1, n + 1))
    if family == "grid":  # the 2 x 2 grid (the corners), last parameter fastest
        expect = [(a, b) for a in BOUNDS["G"] for b in BOUNDS["sigma"]]
        np.testing.assert_allclose(rows[["G", "sigma"]].to_numpy(), expect, rtol=0, atol=1e-12)
    else:  # the optimizer moved: the second generation is not the first again (DE may re-propose
        # a member, and a repeated candidate gets a fresh noise seed, so equal rows can differ in loss)
        assert len(rows[["G", "sigma"]].drop_duplicates()) > POPULATION
    # the run summary the trial wrote agrees with its records
    run = res.runs.set_index("run_id").loc[rows["run_id"][0]]
    assert run["evaluations"] == n and run["generations"] == n // POPULATION
    assert run["best_loss_reported"] == rows["loss"].min() == run["best_loss"]
    best = rows.loc[rows["loss"].idxmin()]
    assert run["best"] == {"G": best["G"], "sigma": best["sigma"]}


@pytest.mark.parametrize("family, scheduler, conc", TRIAL)
def test_trial_mode_every_searcher_and_scheduler(study, family, scheduler, conc):
    cfg, root, errors, res = study
    rows = rows_of(res.evaluations, f"t-{family}")
    n = GRID_TRIAL ** 2 if family == "grid" else BUDGET
    assert (rows["mode"] == "trial").all()
    # one record per trial and rung reached; trials numbered 0..n-1 in suggestion order
    first = rows[rows["fidelity"] == 0]
    assert sorted(first["generation"]) == list(range(n))
    assert not rows.duplicated(["generation", "fidelity"]).any()
    assert set(rows.loc[rows["fidelity"] == 1, "generation"]) <= set(first["generation"])
    durations = np.array([f["duration"] for f in FIDELITIES])
    np.testing.assert_allclose(rows["duration"], durations[rows["fidelity"]])
    # a trial reaching the second rung continued its simulation: its BOLD covers both chunks, and
    # the continuation started no new simulation
    np.testing.assert_allclose(rows["sim_seconds"], rows["duration"])
    assert (rows["new_sims"] == np.where(rows["fidelity"] == 0, 1, 0)).all()
    assert rows["cum_sims"].iloc[-1] == n
    assert np.isfinite(rows["loss"]).all() and rows["valid"].all()
    assert_inside_bounds(rows)
    assert len(first[["G", "sigma"]].drop_duplicates()) == n
    if scheduler == "fifo":  # nothing stops a trial early
        assert (rows["fidelity"] == 1).sum() == n
    if family == "grid":
        corners = {(a, b) for a in BOUNDS["G"] for b in BOUNDS["sigma"]}
        assert {(round(a, 12), round(b, 12)) for a, b in first[["G", "sigma"]].to_numpy()} == corners
    assert (root / "tune" / "trial").is_dir()  # every trial-mode run in one Tune experiment


def test_successive_halving_in_population_mode(study):
    """cmaes-sh: each generation of 4 scores all 4 at 21.6 s and its best 2 (at 21.6 s) again at
    43.2 s, continuing their simulations; the budget counts candidates, not rungs."""
    cfg, root, errors, res = study
    rows = rows_of(res.evaluations, "cmaes-sh")
    assert errors == 0
    for g in range(BUDGET // POPULATION):
        gen = rows[rows["generation"] == g]
        low, high = gen[gen["fidelity"] == 0], gen[gen["fidelity"] == 1]
        assert len(low) == POPULATION and len(high) == POPULATION // 2
        kept = low.nsmallest(POPULATION // 2, "loss")[["G", "sigma"]].sort_values("G").to_numpy()
        np.testing.assert_array_equal(high[["G", "sigma"]].sort_values("G").to_numpy(), kept)
        assert (low["new_sims"] == 1).all() and (high["new_sims"] == 0).all()
        np.testing.assert_allclose(high["sim_seconds"], 43.2)
    assert rows["cum_sims"].iloc[-1] == BUDGET
    run = res.runs.set_index("run_id").loc[rows["run_id"][0]]
    assert run["evaluations"] == BUDGET
    assert run["best_loss"] == rows.loc[rows["fidelity"] == 1, "loss"].min()


def test_holdout_resimulates_the_best_candidates_and_picks_a_winner(study):
    """Without a split, validation re-simulates each run's TOP best distinct training candidates on
    its own subject with fresh noise at the validation fidelity (here the last); there is no test."""
    cfg, root, errors, res = study
    df = res.evaluations
    assert not (df["phase"] == "test").any()
    for spec in cfg.runs():
        train = df[(df["run_id"] == spec.run_id) & (df["phase"] == "train") & (df["fidelity"] == 1)]
        val = df[(df["run_id"] == spec.run_id) & (df["phase"] == "validation")]
        best = train.sort_values(["loss", "eval_index"], kind="stable").drop_duplicates(["G", "sigma"]).head(TOP)
        assert val["source_eval"].tolist() == best["eval_index"].tolist()
        np.testing.assert_array_equal(val[["G", "sigma"]].to_numpy(), best[["G", "sigma"]].to_numpy())
        assert (val["fidelity"] == -1).all() and (val["duration"] == 43.2).all() and (val["subject"] == SUBJECT).all()
        assert val["eval_index"].min() > train["eval_index"].max()  # held-out rows come after training
        run = res.runs.set_index("run_id").loc[spec.run_id]
        assert run["val_loss"] == val["loss"].min()
        assert run["winner_eval"] == val.loc[val["loss"].idxmin(), "source_eval"]
    # common noise: a training evaluation's noise is the run's generation seed, validation's fresh
    val = df[df["phase"] == "validation"].merge(df[df["phase"] == "train"][["run_id", "eval_index", "loss"]],
                                                left_on=["run_id", "source_eval"], right_on=["run_id", "eval_index"],
                                                suffixes=("", "_train"))
    assert (val["loss"] != val["loss_train"]).mean() > 0.9
    table = R.analyze(df)
    assert "val_mean" in table and "test_mean" not in table
    runs = res.runs.set_index("run_id")
    for _, row in table.iterrows():
        mine = runs[(runs["optimizer"] == row["optimizer"])]
        assert row["val_mean"] == pytest.approx(mine["val_loss"].mean())


def test_holdout_repeats_give_standard_errors_and_the_winner_is_profiled(study):
    """Validation uses validation.repeats (default 3, whatever simulation.repeats) and records the
    standard error of each mean; the winner is profiled: each parameter moved 2 steps of 5 % of its
    range each side (clipped to the bounds), the others at the fit, and the recorded losses are
    those of re-simulating the same points with the profile's seed."""
    from raybrain.experiment import objective_from_json as _objective
    from raybrain.tuning import holdout_seed

    cfg, root, errors, res = study
    df = res.evaluations
    assert cfg.simulation.repeats == 1 and cfg.validation.repeats == 3
    val = df[df["phase"] == "validation"]
    assert (val["repeats"] == 3).all() and (val["loss_se"] >= 0).all() and (val["loss_se"] > 0).any()
    runs = res.runs.set_index("run_id")
    text = cfg.model_dump_json()
    for i, spec in enumerate(cfg.runs()):
        prof = df[(df["run_id"] == spec.run_id) & (df["phase"] == "profile")].sort_values("generation", kind="stable")
        winner = val[(val["run_id"] == spec.run_id) & (val["source_eval"] == runs.loc[spec.run_id, "winner_eval"])]
        fit = winner[["G", "sigma"]].to_numpy()[0]
        assert len(prof) == PROFILE and (prof["source_eval"] == runs.loc[spec.run_id, "winner_eval"]).all()
        for r in prof.itertuples():
            want = fit.copy()
            if r.profile_step:
                j = ["G", "sigma"].index(r.profile_param)
                lo, hi = BOUNDS[r.profile_param]
                want[j] = np.clip(fit[j] + r.profile_step * 0.05 * (hi - lo), lo, hi)
            else:
                assert pd.isna(r.profile_param)
            np.testing.assert_allclose([r.G, r.sigma], want, rtol=0, atol=1e-12)
        if i == 0:  # the records are those of the profile's points simulated with the profile's seed
            again = _objective(text, spec.subject, "validation").evaluate(
                prof[["G", "sigma"]].to_numpy(), seed=holdout_seed(spec.seed, "profile", 0), repeats=3)
            np.testing.assert_allclose([a["loss"] for a in again], prof["loss"], rtol=1e-12)
            np.testing.assert_allclose([a["loss_se"] for a in again], prof["loss_se"], rtol=1e-12)


def test_asha_stops_poor_trials_at_the_first_rung(study):
    """t-tpe runs one trial at a time (seeded TPE, common noise), so which trials ASHA stops is
    fixed: some stop at 21.6 s, the others go on to 43.2 s. ASHA's rule (reduction factor 2: a
    trial stops at the rung when its loss is above the median of the losses recorded there
    before it) is re-applied here to the records of each trial, in trial order (one at a time:
    the order in which Tune saw their reports); the run shared its Tune experiment with every
    other trial-mode run, and its scheduler compared its trials with each other only."""
    cfg, root, errors, res = study
    rows = rows_of(res.evaluations, "t-tpe")
    top = int((rows["fidelity"] == 1).sum())
    assert 1 <= top < BUDGET
    assert (rows["fidelity"] == 0).sum() == BUDGET  # every trial has its first rung recorded
    seen = []
    for trial, rep in rows.sort_values(["generation", "fidelity"]).groupby("generation", sort=True):
        assert rep["fidelity"].tolist() == [0, 1][:len(rep)]
        first = float(rep["loss"].iloc[0])
        stopped = bool(seen) and first > np.median(seen)
        assert len(rep) == (1 if stopped else 2), (trial, first, seen)
        seen.append(first)
    assert len(seen) == BUDGET


# ------------------------------------------- train/validation/test, parameter recovery, seeds
TRUTH = {"G": 0.55, "sigma": 0.04}


def protocol_experiment(storage):
    """A synthetic training subject (known parameters, simulated from hcp/101309's SC) with real
    validation and test subjects; population CMA-ES and trial-mode Nevergrad CMA (one trial at a
    time, independent noise: reproducible only if trial numbers and the searcher seed are)."""
    d = experiment("protocol", storage, [
        {"name": "cmaes", "population": POPULATION},
        {"name": "cmaes", "label": "t-cmaes", "mode": "trial", "population": 1}],
        fidelities=[FIDELITIES[1]], seeds=[5], validation={"top": TOP})
    d["subjects"] = {"ids": ["hcp/102311", "hcp/102816"],
                     "synthetic": [{"name": "synth", "from_subject": SUBJECT, "params": TRUTH}],
                     "split": {"train": ["synth"], "validation": ["hcp/102311"], "test": ["hcp/102816"]}}
    d["simulation"]["noise"] = "independent"
    return validate(d)


@pytest.fixture(scope="module")
def protocol(ray_local, tmp_path_factory):
    from raybrain.tuning import run_experiment

    roots = [run_experiment(protocol_experiment(tmp_path_factory.mktemp(f"protocol{k}")))[0] for k in range(2)]
    return [R.load(r) for r in roots]


def test_split_validation_on_validation_subjects_and_the_winner_on_test(protocol):
    res = protocol[0]
    df = res.evaluations
    assert set(df.loc[df["phase"] == "train", "subject"]) == {"synth"}
    for run_id, rows in df.groupby("run_id"):
        val, test = rows[rows["phase"] == "validation"], rows[rows["phase"] == "test"]
        assert (val["subject"] == "hcp/102311").all() and len(val) == TOP
        assert (test["subject"] == "hcp/102816").all() and len(test) == 1
        # the winner is the validation-best candidate, and test re-simulates exactly its parameters
        win = val.loc[val["loss"].idxmin()]
        assert test["source_eval"].iloc[0] == win["source_eval"]
        np.testing.assert_array_equal(test[["G", "sigma"]].to_numpy()[0], win[["G", "sigma"]].to_numpy())
        run = res.runs.set_index("run_id").loc[run_id]
        assert run["val_loss"] == win["loss"] and run["test_loss"] == test["loss"].iloc[0]
    table = R.analyze(df, truth=res.truth)
    assert {"val_mean", "test_mean", "recovery"} <= set(table.columns)


def test_parameter_recovery_is_measured_against_the_known_truth(protocol):
    res = protocol[0]
    assert res.truth["params"] == {"synth": TRUTH}
    assert res.truth["bounds"] == BOUNDS
    for _, run in res.runs.iterrows():
        d = [(run[p] - TRUTH[p]) / (BOUNDS[p][1] - BOUNDS[p][0]) for p in ("G", "sigma")]
        assert run["recovery_err"] == pytest.approx(np.sqrt(np.mean(np.square(d))))


def test_a_run_is_reproducible_from_its_config_and_seed_in_both_modes(protocol):
    a, b = (r.evaluations.sort_values(["run_id", "eval_index"]).reset_index(drop=True) for r in protocol)
    cols = ["run_id", "phase", "subject", "generation", "fidelity", "eval_index", "G", "sigma", "loss"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    trial = a[(a["mode"] == "trial") & (a["phase"] == "train")]
    assert sorted(trial["generation"]) == list(range(BUDGET))


# ------------------------------------------------------------------------- interrupt and resume
RESUME_OPTS = [{"name": "cmaes", "population": POPULATION}, {"name": "tpe", "population": POPULATION},
               {"name": "de", "population": POPULATION}]
RESUME_BUDGET = 12 * POPULATION
KEY = ["run_id", "phase", "generation", "eval_index", "G", "sigma", "loss"]


def test_interrupted_and_resumed_equals_uninterrupted(ray_local, tmp_path):
    """The CLI runs the experiment in a subprocess and is SIGKILLed once some generations are
    recorded and Tune has snapshotted the experiment; ``raybrain resume`` then finishes it. The
    evaluations equal those of an uninterrupted run exactly (population mode is deterministic
    given the seed: noise seeds per generation, optimizer state in the checkpoints)."""
    from raybrain.tuning import run_experiment

    fid = [FIDELITIES[1]]
    full_root, errors = run_experiment(validate(experiment("resume", tmp_path / "full", RESUME_OPTS,
                                                           budget=RESUME_BUDGET, fidelities=fid, seeds=[3],
                                                           validation={"top": TOP})))
    assert errors == 0
    full = R.load(full_root).evaluations
    assert len(full) == 3 * (RESUME_BUDGET + TOP + PROFILE)

    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(experiment("resume", tmp_path / "cut", RESUME_OPTS, budget=RESUME_BUDGET,
                                              fidelities=fid, seeds=[3], validation={"top": TOP})))
    root = tmp_path / "cut" / "resume"
    env = subprocess_env(ray_local)
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0.5"  # snapshot the experiment often, so the kill finds one
    proc = subprocess.Popen([sys.executable, "-m", "raybrain.cli", "run", str(path), "--quiet"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_files, deadline = None, time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            n = len(list(root.glob("evaluations/*/gen-*.parquet")))
            if t_files is None and n >= 4:
                t_files = time.time()
            states = list(root.glob("tune/population/experiment_state-*.json"))
            if t_files and any(s.stat().st_mtime > t_files + 0.3 for s in states):
                break
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind in the driver
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be interrupted: {err[-2000:]!r}"
    time.sleep(1.0)  # let Ray reap the killed driver's workers
    before = R.load(root).evaluations
    assert 0 < len(before) < len(full), "the interrupted run should be partial"
    assert len(list(root.glob("runs/*.json"))) < 3  # a run writes its summary when it finishes

    r = subprocess.run([sys.executable, "-m", "raybrain.cli", "resume", str(root), "--quiet"], cwd=REPO,
                       env=subprocess_env(ray_local), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    after = R.load(root).evaluations

    assert not after.duplicated(["run_id", "eval_index"]).any()
    assert (after[after["phase"] == "train"].groupby("run_id").size() == RESUME_BUDGET).all()
    pd.testing.assert_frame_equal(after[KEY], full[KEY], check_exact=True)
    # the resumed runs continued from their checkpoints: evaluations recorded before the kill were
    # kept (same write time), not recomputed
    merged = before[["run_id", "generation", "time"]].drop_duplicates().merge(
        after[["run_id", "generation", "time"]].drop_duplicates(), on=["run_id", "generation"], suffixes=("_b", "_a"))
    assert (merged["time_b"] == merged["time_a"]).any()
    assert len(list(root.glob("runs/*.json"))) == 3


# ------------------------------------------------------------------------- the command line
def table_lines(stdout):
    """The analysis table's lines: from its header ('subject …') to the line before 'results:'."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("subject"))
    end = next((i for i, line in enumerate(lines) if line.startswith("results:")), len(lines))
    return lines[start:end]


def test_cli_run_prints_the_analysis_in_80_columns(ray_local, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment(
        "tiny-cli", tmp_path / "out", [{"name": "random", "population": POPULATION},
                                       {"name": "cmaes", "label": "cmaes-with-a-long-label", "population": POPULATION}],
        budget=POPULATION, fidelities=[FIDELITIES[0]])))
    r = subprocess.run([sys.executable, "-m", "raybrain.cli", "run", str(path)], cwd=REPO,
                       env=subprocess_env(ray_local), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    root = (tmp_path / "out" / "tiny-cli").resolve()
    table = table_lines(r.stdout)
    blocks = "\n".join(table).strip().split("\n\n")  # a wide table wraps into blocks
    assert all(len(b.splitlines()) == 2 + 2 for b in blocks), table  # header, rule, a row per optimizer
    assert "val loss" in table[0] or any("val loss" in b.splitlines()[0] for b in blocks)
    assert all(len(line) <= 80 for line in table), table
    # every other line fits too, except those that print the results path
    assert all(len(line) <= 80 for line in r.stdout.splitlines() if str(root) not in line), r.stdout
    df = R.load(root).evaluations
    df = df[df["phase"] == "train"]
    assert len(df) == 2 * POPULATION
    for label in ("random", "cmaes-with-a-long-label"):
        best = df.loc[df["optimizer"] == label, "loss"].min()
        assert any(f"{best:.4g}" in line for line in table), (label, best, table)


def test_cli_analyze_needs_no_ray(study, tmp_path):
    cfg, root, errors, res = study
    code = ("import sys\n"
            "from raybrain.cli import main\n"
            f"rc = main(['analyze', {str(root)!r}, '--csv', {str(tmp_path / 'a.csv')!r}])\n"
            "assert 'ray' not in sys.modules, 'analyze imported ray'\n"
            "sys.exit(rc)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("subject") and all(len(line) <= 80 for line in lines), r.stdout
    table = pd.read_csv(tmp_path / "a.csv")
    labels = set(FAMILIES) | {"cmaes-sh"} | {f"t-{f}" for f, _, _ in TRIAL}
    assert set(table["optimizer"]) == labels
    # best loss per optimizer: the lowest loss at the top fidelity, computed here from the records
    df = res.evaluations
    top = df[(df["fidelity"] == 1) & (df["phase"] == "train")].groupby("optimizer")["loss"].min()
    np.testing.assert_allclose(table.set_index("optimizer")["best_mean"].sort_index(), top.sort_index())


@pytest.mark.parametrize("edit, key_path, hint", [
    (lambda d: d["simulation"].update(fidelitees=d["simulation"].pop("fidelities")), "simulation.fidelitees",
     "did you mean 'fidelities'"),
    (lambda d: d["optimizers"].append({"name": "cmaa"}), "optimizers[1].name", "did you mean 'cmaes'"),
    (lambda d: d["parametrisation"]["bounds"].update(G=[1.0, 0.1]), "parametrisation.bounds.G", "reversed"),
])
def test_cli_bad_config_is_one_line_naming_the_key_path(tmp_path, capsys, edit, key_path, hint):
    from raybrain.cli import main

    d = experiment("bad", tmp_path, [{"name": "random", "population": 2}], budget=2)
    d["parametrisation"]["bounds"] = {k: list(v) for k, v in BOUNDS.items()}
    edit(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raybrain: error:") and err.count("\n") == 1, err
    assert str(path) in err and key_path in err and hint in err, err
    assert not (tmp_path / "bad").exists()  # nothing was run


def test_cli_resume_of_a_folder_that_is_no_experiment(tmp_path, capsys):
    from raybrain.cli import main

    assert main(["resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raybrain: error:") and "experiment.json" in err and err.count("\n") == 1


# ------------------------------------------------------------------------- coalescing evaluator
def test_population_runs_through_the_coalescing_evaluator_give_the_same_records(ray_local, tmp_path):
    """``resources.evaluator: on``: population runs and the held-out stage send their generations to
    the node's evaluator actor, which batches concurrent runs into one launch; the records equal
    those of the same experiment evaluated in the trials themselves."""
    from raybrain.tuning import run_experiment

    opts = [{"name": "cmaes", "population": POPULATION}, {"name": "random", "population": POPULATION}]
    frames = []
    for mode in ("off", "on"):
        cfg = validate(experiment("coalesce", tmp_path / mode, opts, seeds=[4], validation={"top": TOP},
                                  resources={"cpu": 1, "gpu": 0, "evaluator": mode}))
        assert cfg.use_evaluator is (mode == "on")
        root, errors = run_experiment(cfg)
        assert errors == 0
        frames.append(R.load(root).evaluations.sort_values(["run_id", "eval_index"]).reset_index(drop=True))
    cols = ["run_id", "phase", "generation", "fidelity", "eval_index", "G", "sigma", "loss", "valid"]
    pd.testing.assert_frame_equal(frames[0][cols], frames[1][cols], check_exact=True)
    assert len(frames[1]) == 2 * (BUDGET + TOP + PROFILE)


# -- trials lost with their node -------------------------------------------------------------------
def _lost_errors():
    from ray import exceptions as rx
    from ray.tune.error import TuneError

    def task_error(cause):
        return rx.RayTaskError("train", "Traceback ...", cause)

    lost = [rx.ActorUnavailableError("RPC error: recvmsg: Connection reset by peer", b"\0" * 16),
            rx.ActorDiedError(), rx.NodeDiedError("node gone"), task_error(rx.ActorDiedError()),
            TuneError("Failure # 1\nray.exceptions.ActorDiedError: The actor died unexpectedly")]
    own = [task_error(ValueError("bad theta")), ValueError("bad theta"),
           TuneError("Failure # 1\nValueError: parametrisation 'G' out of bounds")]
    return lost, own


def test_node_loss_is_told_apart_from_the_trials_own_errors():
    from raybrain.tuning.driver import _lost_with_node

    lost, own = _lost_errors()
    assert [_lost_with_node(e) for e in lost] == [True] * len(lost)
    assert [_lost_with_node(e) for e in own] == [False] * len(own)


class _Result:
    def __init__(self, error=None):
        self.error = error


class _Tuner:
    def __init__(self, grids, log):
        self.grids, self.log = grids, log

    def fit(self):
        self.log.append("fit")
        return self.grids.pop(0)


@pytest.mark.parametrize("case", ["lost-then-done", "own-error", "always-lost"])
def test_trials_lost_with_their_node_are_resumed_and_own_errors_are_not(case):
    from raybrain.tuning import driver as T

    lost, own = _lost_errors()
    grids = {"lost-then-done": [[_Result(), _Result(lost[0])], [_Result(), _Result()]],
             "own-error": [[_Result(own[0]), _Result()]],
             "always-lost": [[_Result(lost[1])]] * (T._NODE_LOSS_RESUMES + 1)}[case]
    log = []
    tuner = _Tuner(list(grids), log)
    grid = T._fit_resuming(tuner, lambda: (log.append("restore"), tuner)[1])
    expected = {"lost-then-done": ["fit", "restore", "fit"], "own-error": ["fit"],
                "always-lost": ["fit"] + ["restore", "fit"] * T._NODE_LOSS_RESUMES}[case]
    assert log == expected
    assert sum(r.error is not None for r in grid) == {"lost-then-done": 0, "own-error": 1, "always-lost": 1}[case]


def test_every_results_file_has_the_experiments_schema(study):
    """Every file the study's trials wrote (both modes, halving rungs, the held-out phase) has the
    schema the experiment declared, so a plain parquet reader sees every column of every file."""
    import pyarrow.parquet as pq

    cfg, root, _, res = study
    schema = R.read_schema(root)
    assert schema == R.Schema(["G", "sigma"], ["fc_corr", "fc_corr_cost"])
    files = sorted((root / "evaluations").rglob("*.parquet"))
    assert {f.name.split("-")[0] for f in files} == {"gen", "validation", "profile"}
    assert {pq.read_schema(f).remove_metadata() for f in files} == {schema.arrow()}
    raw = pd.read_parquet(root / "evaluations")
    assert list(raw.columns) == schema.columns and len(raw) == len(res.evaluations)
    held = raw[raw["phase"] == "validation"]
    assert held["source_eval"].notna().all() and raw.loc[raw["phase"] == "train", "source_eval"].isna().all()
