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
GRID_POP = 3    # population-mode grid: 3 x 3 = 9 points > BUDGET, so the budget cuts it to 8
GRID_TRIAL = 2  # trial-mode grid: 2 x 2 = 4 trials (a Tune grid_search runs every point)


def experiment(name, storage, optimizers, budget=BUDGET, fidelities=FIDELITIES, **over):
    d = {"name": name, "storage": str(storage), "subjects": {"ids": [SUBJECT]}, "model": {"name": "hopf"},
         "parametrisation": {"kind": "global", "names": ["G", "sigma"], "bounds": BOUNDS},
         "loss": "fc_corr",
         # common noise: a candidate's loss depends on its parameters only, whatever its trial id
         "simulation": {"fidelities": fidelities, "burn_in": 0.0, "noise": "common"},
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


def rows_of(df, label):
    return df[df["optimizer"] == label].sort_values("eval_index").reset_index(drop=True)


def assert_inside_bounds(rows):
    for p, (lo, hi) in BOUNDS.items():
        assert rows[p].between(lo, hi).all(), (p, rows[p].tolist())


# ------------------------------------------------------------------------- one study, both modes
@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    from raybrain.search.tune import run_experiment

    opts = [{"name": f, "population": POPULATION, **({"settings": {"points_per_dim": GRID_POP}} if f == "grid" else {})}
            for f in FAMILIES]
    opts += [{"name": f, "label": f"t-{f}", "mode": "trial", "scheduler": s, "population": c,
              **({"settings": {"points_per_dim": GRID_TRIAL}} if f == "grid" else {})} for f, s, c in TRIAL]
    cfg = validate(experiment("study", tmp_path_factory.mktemp("study"), opts))
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
    assert len(rows) == BUDGET
    assert (rows["mode"] == "population").all() and (rows["seed"] == 0).all()
    assert rows["eval_index"].tolist() == list(range(BUDGET))
    # generations of POPULATION candidates, numbered from 0, in evaluation order
    assert rows["generation"].tolist() == [i // POPULATION for i in range(BUDGET)]
    # population mode evaluates at the last (highest) fidelity
    assert (rows["fidelity"] == 1).all() and (rows["duration"] == 43.2).all() and (rows["dt"] == 0.08).all()
    assert np.allclose(rows["sim_seconds"], 43.2)
    assert np.isfinite(rows["loss"]).all() and rows["valid"].all()
    assert ((rows["loss"] >= 0) & (rows["loss"] <= 2)).all()  # fc_corr cost is 1 - r
    assert_inside_bounds(rows)
    assert rows["cum_sims"].tolist() == list(range(1, BUDGET + 1))
    if family == "grid":  # the first 8 points of the 3 x 3 grid, last parameter fastest
        g = np.linspace(*BOUNDS["G"], GRID_POP)
        s = np.linspace(*BOUNDS["sigma"], GRID_POP)
        expect = [(a, b) for a in g for b in s][:BUDGET]
        np.testing.assert_allclose(rows[["G", "sigma"]].to_numpy(), expect, rtol=0, atol=1e-12)
    else:  # the optimizer moved: the second generation is not the first again (DE may re-propose
        # a member, and a repeated candidate gets a fresh noise seed, so equal rows can differ in loss)
        assert len(rows[["G", "sigma"]].drop_duplicates()) > POPULATION
    # the run summary the trial wrote agrees with its records
    run = res.runs.set_index("run_id").loc[rows["run_id"][0]]
    assert run["evaluations"] == BUDGET and run["generations"] == BUDGET // POPULATION
    assert run["best_loss_reported"] == rows["loss"].min() == run["best_loss"]
    best = rows.loc[rows["loss"].idxmin()]
    assert run["best"] == {"G": best["G"], "sigma": best["sigma"]}


@pytest.mark.parametrize("family, scheduler, conc", TRIAL)
def test_trial_mode_every_searcher_and_scheduler(study, family, scheduler, conc):
    cfg, root, errors, res = study
    rows = rows_of(res.evaluations, f"t-{family}")
    n = GRID_TRIAL ** 2 if family == "grid" else BUDGET
    assert len(rows) == n  # one record per trial, at the last fidelity the trial reached
    assert (rows["mode"] == "trial").all()
    assert rows["generation"].is_unique  # one record file per trial
    assert rows["fidelity"].isin([0, 1]).all()
    durations = np.array([f["duration"] for f in FIDELITIES])
    np.testing.assert_allclose(rows["duration"], durations[rows["fidelity"]])
    # a trial reaching the second rung continued its simulation: its BOLD covers both chunks
    np.testing.assert_allclose(rows["sim_seconds"], rows["duration"])
    assert np.isfinite(rows["loss"]).all() and rows["valid"].all()
    assert_inside_bounds(rows)
    assert len(rows[["G", "sigma"]].drop_duplicates()) == n
    if scheduler == "fifo":  # nothing stops a trial early
        assert (rows["fidelity"] == 1).all()
    if family == "grid":
        corners = {(a, b) for a in BOUNDS["G"] for b in BOUNDS["sigma"]}
        assert {(round(a, 12), round(b, 12)) for a, b in rows[["G", "sigma"]].to_numpy()} == corners
    tune_dir = root / "tune" / f"trial-{rows['run_id'][0]}"
    assert tune_dir.is_dir()


def test_asha_stops_poor_trials_at_the_first_rung(study):
    """t-tpe runs one trial at a time (seeded TPE, common noise), so which trials ASHA stops is
    fixed: some stop at 21.6 s, the others go on to 43.2 s. ASHA's rule (reduction factor 2: a
    trial stops at the rung when its loss is above the median of the losses recorded there
    before it) is re-applied here to Tune's own log of each trial's reports."""
    cfg, root, errors, res = study
    rows = rows_of(res.evaluations, "t-tpe")
    top = int((rows["fidelity"] == 1).sum())
    assert 1 <= top < BUDGET
    assert (rows["fidelity"] == 0).sum() == BUDGET - top
    reports = []
    for d in (root / "tune" / f"trial-{rows['run_id'][0]}").glob("trial_trainable_*"):
        order = int(re.match(r"trial_trainable_[0-9a-f]+_(\d+)_", d.name).group(1))  # Tune's trial counter
        reports.append((order, [json.loads(x) for x in (d / "result.json").read_text().splitlines()]))
    assert len(reports) == BUDGET
    seen = []
    for _, rep in sorted(reports):
        assert [r["sim_seconds"] for r in rep] == [21.6, 43.2][:len(rep)]
        first = rep[0]["loss"]
        stopped = bool(seen) and first > np.median(seen)
        assert len(rep) == (1 if stopped else 2), (first, seen)
        seen.append(first)
    # raybrain recorded each trial's last report
    assert sorted(rows["loss"]) == sorted(rep[-1]["loss"] for _, rep in reports)


# ------------------------------------------------------------------------- interrupt and resume
RESUME_OPTS = [{"name": "cmaes", "population": POPULATION}, {"name": "tpe", "population": POPULATION},
               {"name": "de", "population": POPULATION}]
RESUME_BUDGET = 12 * POPULATION
KEY = ["run_id", "generation", "eval_index", "G", "sigma", "loss"]


def test_interrupted_and_resumed_equals_uninterrupted(ray_local, tmp_path):
    """The CLI runs the experiment in a subprocess and is SIGKILLed once some generations are
    recorded and Tune has snapshotted the experiment; ``raybrain resume`` then finishes it. The
    evaluations equal those of an uninterrupted run exactly (population mode is deterministic
    given the seed: noise seeds per generation, optimizer state in the checkpoints)."""
    from raybrain.search.tune import run_experiment

    fid = [FIDELITIES[1]]
    full_root, errors = run_experiment(validate(experiment("resume", tmp_path / "full", RESUME_OPTS,
                                                           budget=RESUME_BUDGET, fidelities=fid, seeds=[3])))
    assert errors == 0
    full = R.load(full_root).evaluations
    assert len(full) == 3 * RESUME_BUDGET

    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(experiment("resume", tmp_path / "cut", RESUME_OPTS, budget=RESUME_BUDGET,
                                              fidelities=fid, seeds=[3])))
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
    assert (after.groupby("run_id").size() == RESUME_BUDGET).all()
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
    assert len(table) == 2 + 2  # header, rule, one row per optimizer
    assert all(len(line) <= 80 for line in table), table
    # every other line fits too, except those that print the results path
    assert all(len(line) <= 80 for line in r.stdout.splitlines() if str(root) not in line), r.stdout
    df = R.load(root).evaluations
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
    labels = set(FAMILIES) | {f"t-{f}" for f, _, _ in TRIAL}
    assert set(table["optimizer"]) == labels
    # best loss per optimizer: the lowest loss at the top fidelity, computed here from the records
    df = res.evaluations
    top = df[df["fidelity"] == 1].groupby("optimizer")["loss"].min()
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
