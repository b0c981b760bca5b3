"""raybrain.results: parquet round trip, resume without duplicates, concurrent writers, analysis."""
import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raybrain import results as R

META = dict(mode="population", subject="hcp/101309", optimizer="cmaes", seed=3, fidelity=0,
            duration=300.0, dt=1e-3)


def record(G, loss, **kw):
    """A record in the order Objective.evaluate builds it: parameters, loss, components, the rest."""
    rec = {"G": G, "sigma": G / 100, "loss": loss, "fc_corr": 1 - loss, "fcd_ks": loss / 2, "valid": True,
           "diverged": False, "rate_mean": 3.0, "rate_min": 1.0, "rate_max": 5.0, "plausible": True,
           "ei_ratio": 1.1, "repeats": 1, "sim_seconds": 300.0, "wall_s": 0.5}
    rec.update(kw)
    return rec


def test_round_trip_schema_and_values(tmp_path):
    w = R.ResultsWriter(tmp_path, "exp1")
    w.write_generation("hcp/101309|cmaes|seed3", 0, [record(1.0, 0.4), record(2.0, 0.3, plausible=None)],
                       {**META, "node": "node-a"})
    w.write_generation("hcp/101309|cmaes|seed3", 1, [record(1.5, np.nan, valid=False, repeats=3, wall_s=2.0)],
                       {**META, "fidelity": 1, "duration": 600.0, "node": "node-b"})
    df = R.load(tmp_path).evaluations
    assert list(df.columns) == (list(R.HEAD) + ["G", "sigma", "loss", "fc_corr", "fcd_ks"] + list(R.TAIL)
                                + ["rate_min", "rate_max", "repeats", "sim_seconds",
                                   "loss_se", "profile_param", "profile_step"])  # kept even when null
    assert R.param_columns(df) == ["G", "sigma"]
    assert df["experiment"].tolist() == ["exp1"] * 3
    assert df["run_id"].tolist() == ["hcp/101309|cmaes|seed3"] * 3
    assert df["eval_index"].tolist() == [0, 1, 2]
    assert df["generation"].tolist() == [0, 0, 1]
    assert df["fidelity"].tolist() == [0, 0, 1] and df["duration"].tolist() == [300.0, 300.0, 600.0]
    assert df["G"].tolist() == [1.0, 2.0, 1.5] and df["sigma"].tolist() == [0.01, 0.02, 0.015]
    assert df["loss"].iloc[:2].tolist() == [0.4, 0.3] and np.isnan(df["loss"].iloc[2])
    assert df["fc_corr"].iloc[:2].tolist() == pytest.approx([0.6, 0.7])
    assert df["valid"].tolist() == [True, True, False]
    assert df["plausible"].iloc[0] and pd.isna(df["plausible"].iloc[1])
    assert df["cum_sims"].tolist() == [1, 2, 5]                 # repeats 1, 1, 3
    assert df["cum_wall_s"].tolist() == [0.5, 1.0, 3.0]
    assert df["node"].tolist() == ["node-a", "node-a", "node-b"]
    assert df["seed"].dtype == np.int64 and df["loss"].dtype == np.float64
    assert str(df["time"].dt.tz) == "UTC"


def test_explicit_roles_and_changing_columns(tmp_path):
    w = R.ResultsWriter(tmp_path, "e")
    # meta names the parameters (in another order than the records) and the components
    w.write_generation("r", 0, [{"loss": 1.0, "b": 2.0, "a": 1.0, "c1": 0.5, "note": "x"}],
                       {**META, "params": ["a", "b"], "components": ["c1"]})
    w.write_generation("r", 1, [{"a": 3.0, "b": 4.0, "loss": 0.5, "c1": 0.1, "c2": 0.2}], META)
    df = R.load(tmp_path).evaluations
    cols = list(df.columns)
    assert cols[cols.index("dt") + 1:cols.index("valid")] == ["a", "b", "loss", "c1", "c2"]
    assert cols[-1] == "note"
    assert df["c2"].isna().tolist() == [True, False]
    assert df["a"].tolist() == [1.0, 3.0] and df["b"].tolist() == [2.0, 4.0]


def test_rewritten_generation_replaces_not_duplicates(tmp_path):
    w = R.ResultsWriter(tmp_path, "e")
    rid = "gw/sub-01|de|seed0"
    for g in range(3):
        w.write_generation(rid, g, [record(g + 0.1 * i, 1.0) for i in range(4)], {**META, "optimizer": "de"})
    # a resume re-evaluates generation 1 (other values) and 2; a crash left a temporary file behind
    w.write_generation(rid, 1, [record(9.0 + i, 0.2) for i in range(4)], {**META, "optimizer": "de"})
    w.write_generation(rid, 2, [record(2.0 + 0.1 * i, 1.0) for i in range(4)], {**META, "optimizer": "de"})
    (w.path(rid, 3).parent / ".gen-000003.parquet.host.1.abc.tmp").write_bytes(b"partial")
    df = R.load(tmp_path).evaluations
    assert len(df) == 12
    assert df["eval_index"].tolist() == list(range(12))
    assert df["generation"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert df.loc[df.generation == 1, "G"].tolist() == [9.0, 10.0, 11.0, 12.0]
    assert not df.duplicated(["run_id", "eval_index"]).any()
    assert df["cum_sims"].iloc[-1] == 12
    assert sorted(p.name for p in w.path(rid, 0).parent.iterdir() if not p.name.startswith(".")) == \
        [f"gen-{g:06d}-f0.parquet" for g in range(3)]


def test_compact_keeps_the_same_frame_and_newer_rewrites_win(tmp_path):
    w = R.ResultsWriter(tmp_path, "e")
    for run in ("r1", "r2"):
        for g in range(5):
            w.write_generation(run, g, [record(10.0 * g + i, 1.0 / (g + 1)) for i in range(3)], META)
    before = R.load(tmp_path).evaluations
    assert R.compact(tmp_path) == 10
    assert sorted(p.name for p in (tmp_path / "evaluations").rglob("*.parquet")) == ["compacted.parquet"] * 2
    pd.testing.assert_frame_equal(R.load(tmp_path).evaluations.drop(columns="time"), before.drop(columns="time"))
    # after compaction, a resumed run rewrites generation 2 and goes on to generation 5
    w.write_generation("r1", 2, [record(-1.0, 0.01), record(-2.0, 0.02)], META)
    w.write_generation("r1", 5, [record(50.0, 0.1)], META)
    ev = R.load(tmp_path).evaluations
    r1 = ev[ev.run_id == "r1"]
    assert r1["generation"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5]
    assert r1["G"].tolist()[6:8] == [-1.0, -2.0] and r1["eval_index"].tolist() == list(range(15))
    assert r1["cum_sims"].iloc[-1] == 15 and len(ev) == 30
    assert R.compact(tmp_path) == 2
    pd.testing.assert_frame_equal(R.load(tmp_path).evaluations, ev)


def _hammer(root, k):
    w = R.ResultsWriter(root, "e")
    for _ in range(30):  # everyone rewrites the same generation of run "shared" (a zombie and its resume)
        w.write_generation("shared", 0, [record(float(k), 0.5)] * 50, META)
    for g in range(5):   # and writes its own run
        w.write_generation(f"run{k}", g, [record(float(g), 0.5)] * 3, META)


def test_concurrent_writers_and_reader(tmp_path):
    ctx = mp.get_context("spawn")  # not fork: the test process may hold threads (JAX, numba) by now
    procs = [ctx.Process(target=_hammer, args=(tmp_path, k)) for k in range(4)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):  # a reader during the writes sees whole files only
        ev = R.load(tmp_path).evaluations
        shared = ev[ev.run_id == "shared"]
        assert len(shared) in (0, 50)
        if len(shared):
            assert shared["G"].nunique() == 1  # one writer's whole file, never a mix
    for p in procs:
        p.join()
        assert p.exitcode == 0
    ev = R.load(tmp_path).evaluations
    assert len(ev) == 50 + 4 * 5 * 3
    assert ev.groupby("run_id").size().to_dict() == {"shared": 50, **{f"run{k}": 15 for k in range(4)}}
    assert not list(tmp_path.rglob("*.tmp"))


def test_sanitise_is_safe_and_keeps_ids_apart(tmp_path):
    ids = ["a/b|c", "a_b_c", "a|b/c", "../escape", "..", "plain-id_1.x"]
    names = [R.sanitise(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert R.sanitise("plain-id_1.x") == "plain-id_1.x"
    for n in names:
        assert "/" not in n and not n.startswith(".")
    w = R.ResultsWriter(tmp_path, "e")
    for i in ids:
        w.write_generation(i, 0, [record(1.0, 1.0)], META)
    assert sorted(R.load(tmp_path).evaluations["run_id"]) == sorted(ids)
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("args, message", [
    (("r", 0, [record(1, 1)], {k: v for k, v in META.items() if k != "seed"}), "missing seed"),
    (("r", 0, [], META), "records for run 'r' generation 0 is empty"),
    (("r", 0, [{"G": 1.0}], META), "records[0] for run 'r' generation 0 has no 'loss'"),
    (("r", -1, [record(1, 1)], META), "generation must be an integer >= 0"),
    (("r", 1.5, [record(1, 1)], META), "generation must be an integer >= 0"),
    (("", 0, [record(1, 1)], META), "run_id must be a non-empty string"),
    (("r", 0, [{**record(1, 1), "G": "big"}], META), "column 'G'"),
])
def test_write_errors(tmp_path, args, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        R.ResultsWriter(tmp_path, "e").write_generation(*args)


def test_load_errors_and_empty(tmp_path):
    with pytest.raises(ValueError, match="no such results directory"):
        R.load(tmp_path / "missing")
    res = R.load(tmp_path)
    assert res.evaluations.empty and res.runs.empty
    assert list(res.evaluations.columns) == list(R.HEAD) + ["loss"] + list(R.TAIL)
    assert R.analyze(res.evaluations).empty
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x.json").write_text("{broken")
    with pytest.raises(ValueError, match="x.json: not valid JSON"):
        R.load(tmp_path)


def test_load_needs_no_ray(tmp_path):
    R.ResultsWriter(tmp_path, "e").write_generation("r", 0, [record(1.0, 1.0)], META)
    code = ("import sys, raybrain.results as r; n = len(r.load(sys.argv[1]).evaluations); "
            "assert 'ray' not in sys.modules; print(n)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


# ------------------------------------------------------------------------------ analysis

# (subject, optimizer, seed) -> generations of (fidelity, losses); repeats 1 on A, 2 on B; wall 0.5 s
RUNS = {
    ("A", "X", 0): [(1, [1.0, 0.5, 0.2])],
    ("A", "X", 1): [(1, [0.8, 0.4, 0.3])],
    ("A", "X", 2): [(1, [0.209, 0.9])],
    ("A", "Y", 0): [(1, [0.9, 0.205, 0.7])],
    ("A", "Y", 1): [(1, [0.6, 0.6, 0.6])],
    ("B", "X", 0): [(0, [0.1]), (1, [5.0, 4.0])],   # the cheap fidelity's 0.1 must not count as a loss
    ("B", "Y", 0): [(1, [4.09, 3.9])],
}


@pytest.fixture
def study(tmp_path):
    w = R.ResultsWriter(tmp_path, "study")
    for (s, o, seed), gens in RUNS.items():
        for g, (fid, losses) in enumerate(gens):
            recs = [record(float(10 * g + i), L, repeats=1 if s == "A" else 2) for i, L in enumerate(losses)]
            w.write_generation(f"{s}|{o}|seed{seed}", g, recs, {**META, "subject": s, "optimizer": o,
                                                               "seed": seed, "fidelity": fid})
    return tmp_path


def test_analyze_matches_hand_computation(study):
    a = R.analyze(R.load(study).evaluations)
    assert a[["subject", "optimizer"]].values.tolist() == [["A", "X"], ["A", "Y"], ["B", "Y"], ["B", "X"]]
    a = a.set_index(["subject", "optimizer"])
    # A: target L* = 0.2 (X seed 0), threshold 0.21
    ax, ay = a.loc[("A", "X")], a.loc[("A", "Y")]
    assert ax.n_seeds == 3 and ax.reached == 2
    assert ax.best_mean == pytest.approx((0.2 + 0.3 + 0.209) / 3)
    assert ax.best_sd == pytest.approx(np.std([0.2, 0.3, 0.209], ddof=1))
    assert ax.sims_to_target == 3 and ax.wall_s_to_target == 1.5      # median of {3, inf, 1}
    assert ay.n_seeds == 2 and ay.reached == 1
    assert ay.best_mean == pytest.approx(0.4025)
    assert np.isinf(ay.sims_to_target) and np.isinf(ay.wall_s_to_target)  # median of {2, inf}
    # B: L* = 3.9, threshold 4.095; X's hit is its 3rd evaluation (after the cheap one), 2 sims each
    bx, by = a.loc[("B", "X")], a.loc[("B", "Y")]
    assert bx.best_mean == 4.0 and np.isnan(bx.best_sd) and bx.reached == 1
    assert bx.sims_to_target == 6 and bx.wall_s_to_target == 1.5
    assert by.best_mean == 3.9 and by.sims_to_target == 2 and by.wall_s_to_target == 0.5


def test_best_and_summary(study):
    res = R.load(study)
    b = R.best(res.evaluations).set_index(["subject", "optimizer"])
    assert b.loc[("A", "X"), "loss"] == 0.2 and b.loc[("A", "X"), "run_id"] == "A|X|seed0"
    assert b.loc[("B", "X"), "loss"] == 4.0 and b.loc[("B", "X"), "G"] == 11.0
    assert R.best(res.evaluations, by="run_id").loc[lambda d: d.run_id == "A|Y|seed1", "eval_index"].item() == 0
    s = res.runs.set_index("run_id")
    assert len(s) == len(RUNS)
    bx = s.loc["B|X|seed0"]
    assert (bx.n_evals, bx.n_sims, bx.wall_s, bx.best_loss, bx.best_eval, bx.G) == (3, 6, 1.5, 4.0, 2, 11.0)
    assert s.loc["A|X|seed2", "best_eval"] == 0 and s.loc["A|X|seed2", "sigma"] == 0.0


def test_run_summaries_are_merged(study):
    w = R.ResultsWriter(study, "study")
    w.write_run_summary("A|X|seed0", {"status": "done", "best_loss": np.float64(0.2), "theta": np.arange(2)})
    w.write_run_summary("A|X|seed0", {"status": "resumed-done", "best_loss": np.float64(0.2)})  # replaces
    raw = json.loads(next((study / "runs").glob("*.json")).read_text())
    assert raw == {"run_id": "A|X|seed0", "status": "resumed-done", "best_loss": 0.2}
    runs = R.load(study).runs.set_index("run_id")
    assert runs.loc["A|X|seed0", "status"] == "resumed-done"
    assert runs.loc["A|X|seed0", "best_loss_reported"] == runs.loc["A|X|seed0", "best_loss"] == 0.2
    assert pd.isna(runs.loc["A|Y|seed0", "status"])


def test_format_table_fits_and_shows_values(study):
    a = R.analyze(R.load(study).evaluations)
    text = R.format_table(a)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "\n\n" not in text        # fits on one block
    assert lines[0].split() == ["subject", "optimizer", "seeds", "best", "loss", "reached", "sims→5%", "wall→5%"]
    assert lines[2].split() == ["A", "X", "3", f"{(0.709) / 3:.4g}", "±", f"{np.std([0.2, 0.3, 0.209], ddof=1):.2g}",
                                "2", "3", "1.5s"]
    assert lines[3].split() == ["Y", "2", "0.4025", "±", "0.28", "1", "never", "never"]  # subject blanked
    assert lines[5].split() == ["X", "1", "4", "1", "6", "1.5s"]                          # sd of one seed: none

    # long names on a narrow terminal: wrapped into blocks that repeat the (shortened) keys
    wide = a.assign(subject=a.subject + "/very-long-subject-identifier-0001",
                    optimizer="nevergrad-" + a.optimizer + "-with-a-long-label")
    for width in (80, 60, 40):
        text = R.format_table(wide, width=width)
        assert max(map(len, text.splitlines())) <= width
        blocks = text.split("\n\n")
        assert all(b.splitlines()[0].startswith("subject") for b in blocks)
        assert "never" in text and "0.4025" in text
        assert all(len(b.splitlines()) == 2 + len(a) for b in blocks)
