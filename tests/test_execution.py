"""The run layer's records: one execution per results folder, interrupts, small Tune state,
trial-mode runs side by side, sharding, and a progress line that stays cheap.

The experiments are those of tests/test_tune.py: the Hopf model on the array path (no compile, no
hemodynamics), 2 parameters, a few tens of milliseconds per generation, so Ray and Tune are what
is tested. The CLI runs in subprocesses that join the session's Ray instance (``ray_local``).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from raybrain import execution as X
from raybrain import results as R
from raybrain.cli import main

from test_tune import (FIDELITIES, POPULATION, REPO, SUBJECT, TOP, experiment, subprocess_env, validate)

KEY = ["run_id", "phase", "generation", "fidelity", "eval_index", "G", "sigma", "loss"]
POP_OPTS = [{"name": "cmaes", "population": POPULATION}, {"name": "de", "population": POPULATION}]
# trial mode, one trial in flight per run, common noise: a run's records depend on its seed only
TRIAL_OPTS = [{"name": "tpe", "label": "t-tpe", "mode": "trial", "scheduler": "asha", "population": 1},
              {"name": "random", "label": "t-random", "mode": "trial", "population": 1}]


def write_config(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


def cli(args, address, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "raybrain.cli", *args], cwd=REPO, env=subprocess_env(address),
                          capture_output=True, text=True, timeout=timeout, **kw)


def sorted_records(root, runs=None):
    df = R.load(root).evaluations
    if runs is not None:
        df = df[df["run_id"].isin(runs)]
    return df.sort_values(KEY[:5]).reset_index(drop=True)[KEY]


# ------------------------------------------------------------------ one execution per folder
def test_selection_parses_and_slices_the_grid_disjointly():
    cfg = validate(experiment("sel", "/tmp/unused", POP_OPTS, seeds=[0, 1, 2, 3, 4]))
    ids = [s.run_id for s in cfg.runs()]
    shards = [X.Selection.parse(f"{i}/3").apply(cfg.runs()) for i in (1, 2, 3)]
    got = [s.run_id for sh in shards for s in sh]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)) == 10
    assert [s.run_id for s in X.Selection.parse(pattern="*__de__*").apply(cfg.runs())] == \
        [i for i in ids if "__de__" in i]
    assert len({X.Selection.parse(f"{i}/3").key for i in (1, 2, 3)} | {X.Selection().key}) == 4
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            X.Selection.parse(bad)


def test_run_into_a_folder_with_records_refuses_and_overwrite_moves_them_aside(ray_local, tmp_path, capsys):
    """A second ``run`` of the same experiment refuses (exit 2, one line naming the folder and both
    ways on); ``--overwrite`` moves the earlier results aside before anything starts, so the new
    records are those of one execution only (no leftover trial-mode rung file of the first)."""
    d = experiment("again", tmp_path / "res", TRIAL_OPTS[:1], budget=4, validation={"top": 0})
    path = write_config(tmp_path / "again.yaml", d)
    root = tmp_path / "res" / "again"
    r = cli(["run", str(path), "--quiet"], ray_local)
    assert r.returncode == 0, r.stderr[-3000:]
    first = sorted_records(root)
    # a stray rung file of an earlier execution (e.g. a trial numbered beyond this budget)
    run_dir = next((root / "evaluations").iterdir())
    stray = run_dir / "gen-000099-f0.parquet"
    os.link(run_dir / "gen-000000-f0.parquet", stray)

    r = cli(["run", str(path), "--quiet"], ray_local)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and str(root) in err[0] and "raybrain resume" in err[0] and "--overwrite" in err[0]
    assert stray.exists()  # nothing was touched

    r = cli(["run", str(path), "--quiet", "--overwrite"], ray_local)
    assert r.returncode == 0, r.stderr[-3000:]
    aside = [p for p in (tmp_path / "res").iterdir() if p.name.startswith("again.old-")]
    assert len(aside) == 1 and (aside[0] / "evaluations").is_dir()  # moved, not deleted
    assert not (root / "evaluations" / run_dir.name / stray.name).exists()
    pd.testing.assert_frame_equal(sorted_records(root), first, check_exact=True)


def test_resume_of_a_finished_experiment_has_nothing_to_do(ray_local, tmp_path, capsys, monkeypatch):
    import raybrain.tuning as T
    from raybrain.tuning import driver

    d = experiment("done", tmp_path, POP_OPTS[:1], budget=2 * POPULATION, validation={"top": 0})
    root, errors = T.run_experiment(validate(d))
    assert errors == 0 and X.status(root, X.Selection())["status"] == "complete"
    before = {p: p.stat().st_mtime_ns for p in Path(root).rglob("*")}

    def no(*a, **k):
        raise AssertionError("resume of a finished experiment started Ray or the experiment")

    monkeypatch.setattr(T, "run_experiment", no)  # where the CLI looks it up
    monkeypatch.setattr(driver, "run_experiment", no)
    monkeypatch.setattr(driver, "_init_ray", no)
    assert main(["resume", str(root), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in Path(root).rglob("*")} == before


# ------------------------------------------------------------------ interrupts
def _wait_for_records(proc, root, pattern, n, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(list(root.glob(pattern))) >= n:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode,sig", [("population", signal.SIGINT), ("trial", signal.SIGTERM)])
def test_interrupt_stops_saves_and_resume_equals_uninterrupted(ray_local, tmp_path, mode, sig):
    """The first SIGINT/SIGTERM stops the experiment after Tune saved its state: exit 130/143, one
    line with the evaluations recorded and the resume command, no table, no Tune advice or
    FileNotFoundError; ``raybrain resume`` then ends with exactly the records of an uninterrupted
    run (holdout included)."""
    from raybrain.tuning import run_experiment

    opts = POP_OPTS if mode == "population" else TRIAL_OPTS
    budget = 10 * POPULATION if mode == "population" else 10
    kw = dict(budget=budget, seeds=[3], validation={"top": TOP})
    full_root, errors = run_experiment(validate(experiment("cut", tmp_path / "full", opts, **kw)))
    assert errors == 0
    full = sorted_records(full_root)

    path = write_config(tmp_path / "cut.yaml", experiment("cut", tmp_path / "cut", opts, **kw))
    root = tmp_path / "cut" / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "raybrain.cli", "run", str(path)], cwd=REPO,
                            env=subprocess_env(ray_local), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for_records(proc, root, "evaluations/*/gen-*.parquet", 4), "no records before the run ended"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, (proc.returncode, err[-3000:])
    name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
    last = err.strip().splitlines()[-1]
    n = X.count_evaluations(root)
    assert last == f"raybrain: stopped by {name} with {n} evaluations recorded; 'raybrain resume {root}' continues"
    assert "Tuner.restore" not in err + out and "FileNotFoundError" not in err + out
    assert "best loss" not in out and "results:" not in out  # no partial table as if it were the result
    assert X.status(root, X.Selection())["status"] == "interrupted"
    # the latest checkpoint of each run (population) or unfinished trial (trial mode), one file each
    ckpts = list((root / "checkpoints").rglob("*.pkl.z")) if (root / "checkpoints").is_dir() else []
    if mode == "population":  # every unfinished run has exactly its latest state
        assert ckpts and {p.name for p in ckpts} == {"run.pkl.z"}
    else:
        assert all(p.name.startswith("trial-") for p in ckpts)
    before = R.load(root).evaluations
    assert 0 < len(before) < len(full)

    r = cli(["resume", str(root), "--quiet"], ray_local)
    assert r.returncode == 0, r.stderr[-3000:]
    pd.testing.assert_frame_equal(sorted_records(root), full, check_exact=True)
    assert X.status(root, X.Selection())["status"] == "complete"


SECOND_SIGNAL = """
import os, signal, sys, time
from raybrain.tuning.driver import _StopOnSignals
stop = _StopOnSignals()
with stop:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
    assert stop.signum == signal.SIGINT, stop.signum   # the first one only asks for a stop
    print("stopping", flush=True)
    if sys.argv[1] == "during":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
if sys.argv[1] == "after":  # the experiment has stopped and the process is on its way out
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
print("not reached", flush=True)
"""


@pytest.mark.parametrize("when", ["during", "after"])
def test_a_second_sigint_exits_at_once(when):
    """The first SIGINT asks for a stop and nothing else; a second one, while the experiment stops
    or while the process is on its way out after the stop, exits at once with status 130."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", SECOND_SIGNAL, when], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["stopping"] and "stopped at once" in r.stderr
    assert time.time() - t0 < 30


# ------------------------------------------------------------------ small Tune state
def test_tune_state_holds_no_config_copy_and_one_checkpoint_per_trial(ray_local, tmp_path):
    from raybrain.tuning import run_experiment

    d = experiment("small", tmp_path, POP_OPTS[:1] + TRIAL_OPTS[:1], budget=6 * POPULATION, validation={"top": TOP})
    d["subjects"]["ids"] = [SUBJECT]
    root, errors = run_experiment(validate(d))
    assert errors == 0
    tune = Path(root) / "tune"
    text = validate(d).model_dump_json()
    marker = '"parametrisation"'  # a key of the experiment config, in its JSON
    assert marker in text
    for f in tune.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".pkl", ".csv"):
            assert marker not in f.read_text(errors="ignore"), f"{f} holds a copy of the experiment config"
    names = {f.name for f in tune.rglob("*") if f.is_file()}
    assert not names & {"result.json", "progress.csv", "params.json"}
    assert not list(tune.rglob("checkpoint_*"))  # checkpoints are raybrain's (one file per trial)
    assert not (Path(root) / "checkpoints").exists() or not any((Path(root) / "checkpoints").iterdir())
    assert not (tune / "holdout").exists()  # never restored: not kept after it finished


# ------------------------------------------------------------------ trial mode side by side
def test_per_run_searchers_are_independent_of_interleaving():
    """Two runs' suggestions in one ``PerRun`` equal each run's alone, whatever the interleaving;
    each run stops at its budget and the whole at FINISHED."""
    from ray.tune.search import ConcurrencyLimiter, Searcher

    from raybrain.tuning.searchers import INDEX, Numbered, PerRun, SeededRandom

    space = {"G": (0.1, 1.0), "sigma": (0.01, 0.1)}

    def chain(seed):
        return ConcurrencyLimiter(Numbered(SeededRandom(space, seed=seed)), max_concurrent=1)

    alone = {}
    for seed in (1, 2):
        s, out = chain(seed), []
        for k in range(3):
            out.append(s.suggest(f"t{k}"))
            s.on_trial_complete(f"t{k}", {"loss": 0.0})
        alone[seed] = out
    mux = PerRun({"a": chain(1), "b": chain(2)}, {"a": 3, "b": 3}, metric="loss", mode="min")
    got, k = {"a": [], "b": []}, 0
    while True:
        cfg = mux.suggest(f"m{k}")
        if cfg == Searcher.FINISHED:
            break
        assert cfg is not None
        run = cfg.pop("run_id")
        got[run].append(cfg)
        mux.on_trial_complete(f"m{k}", {"loss": 0.0})
        k += 1
    assert got == {"a": alone[1], "b": alone[2]}
    assert [c[INDEX] for c in got["a"]] == [0, 1, 2]
    # with a trial of run a in flight (concurrency 1), only b is asked
    mux2 = PerRun({"a": chain(1), "b": chain(2)}, {"a": 3, "b": 3}, metric="loss", mode="min")
    assert mux2.suggest("x0")["run_id"] == "a"
    assert mux2.suggest("x1")["run_id"] == "b"
    assert mux2.suggest("x2") is None


def test_trial_mode_runs_run_side_by_side_in_one_tune_experiment(ray_local, tmp_path):
    from raybrain.tuning import run_experiment

    d = experiment("side", tmp_path, TRIAL_OPTS[1:], budget=6, seeds=[0, 1], validation={"top": 0})
    root, errors = run_experiment(validate(d))
    assert errors == 0
    df = R.load(root).evaluations
    assert df["run_id"].nunique() == 2 and (df.groupby("run_id").size() == 6 * 2).all()
    assert [p.name for p in (Path(root) / "tune").iterdir() if p.is_dir()] == ["trial"]
    # one Tune experiment whose trials were created alternately for the two runs (both had a trial
    # submitted before either had finished), not one run after the other
    state = max((Path(root) / "tune" / "trial").glob("experiment_state-*.json"))
    trials = [json.loads(t[0]) for t in json.loads(state.read_text())["trial_data"]]
    order = [t["config"]["run_id"] for t in trials]
    assert len(order) == 12 and order[0] != order[1]


# ------------------------------------------------------------------ sharding
def test_three_shards_one_killed_and_resumed_merge_into_the_unsharded_records(ray_local, tmp_path):
    from raybrain.tuning import run_experiment

    kw = dict(budget=8 * POPULATION, seeds=[0, 1, 2], validation={"top": TOP})
    full_root, errors = run_experiment(validate(experiment("sharded", tmp_path / "full", POP_OPTS, **kw)))
    assert errors == 0
    full = sorted_records(full_root)

    path = write_config(tmp_path / "sharded.yaml", experiment("sharded", tmp_path / "cut", POP_OPTS, **kw))
    root = tmp_path / "cut" / "sharded"
    for i in (1, 3):
        r = cli(["run", str(path), "--quiet", "--shard", f"{i}/3"], ray_local)
        assert r.returncode == 0, r.stderr[-3000:]
    env = subprocess_env(ray_local)
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "0.5"
    proc = subprocess.Popen([sys.executable, "-m", "raybrain.cli", "run", str(path), "--quiet", "--shard", "2/3"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        before = len(list(root.glob("evaluations/*/gen-*.parquet")))
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list(root.glob("evaluations/*/gen-*.parquet"))) >= before + 3:
                break
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL: a node lost in the middle of its array task
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(1.0)
    # the same shard run again refuses (its records exist); resumed, it finishes
    assert cli(["run", str(path), "--quiet", "--shard", "2/3"], ray_local).returncode == 2
    r = cli(["resume", str(root), "--quiet", "--shard", "2/3"], ray_local)
    assert r.returncode == 0, r.stderr[-3000:]
    got = sorted_records(root)
    assert not got.duplicated(["run_id", "phase", "generation", "fidelity", "eval_index"]).any()
    pd.testing.assert_frame_equal(got, full, check_exact=True)
    assert {k: v["status"] for k, v in X.executions(root).items()} == \
        {f"shard-{i}-of-3": "complete" for i in (1, 2, 3)}
    # a plain resume of a sliced experiment names the slices instead of running everything again
    r = cli(["resume", str(root), "--quiet"], ray_local)
    assert r.returncode == 2 and "--shard" in r.stderr


# ------------------------------------------------------------------ progress
def test_progress_lists_only_changed_folders_and_shows_an_eta(tmp_path):
    """With 200 runs × 50 files, a tick after nothing changed lists no folder; a new file in one
    run's folder costs one listing; the line carries an ETA once evaluations arrive."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raybrain.progress import Progress
    from raybrain.results import sanitise

    opts = [{"name": "random", "population": 2}]
    d = experiment("prog", tmp_path, opts, budget=100, seeds=list(range(200)), validation={"top": 0},
                   fidelities=[FIDELITIES[1]])
    cfg = validate(d)
    root = tmp_path / "prog"
    table = pa.table({"loss": [0.5, 0.4]})
    ids = [s.run_id for s in cfg.runs()]
    for rid in ids:
        rd = root / "evaluations" / sanitise(rid)
        rd.mkdir(parents=True)
        for g in range(50):
            pq.write_table(table, rd / f"gen-{g:06d}-f0.parquet")
    past = time.time_ns() - 10 * 10**9
    for p in (root / "evaluations").rglob("*"):
        os.utime(p, ns=(past, past))
    p = Progress(root, cfg)
    assert "evals 20000/20000" in p.line()
    first = p.listings
    assert first >= 200
    p.line()
    assert p.listings == first  # nothing changed: no folder listed again
    rd = root / "evaluations" / sanitise(ids[7])
    pq.write_table(table, rd / "gen-000050-f0.parquet")
    line = p.line()
    assert p.listings == first + 1 and "evals 20002/20000" in line and "best 0.4" in line

    q = Progress(root, cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"evaluations": 200})}))
    q.line()  # the baseline
    q.t0 -= 10.0
    pq.write_table(table, rd / "gen-000051-f0.parquet")
    assert "eta" in q.line()
