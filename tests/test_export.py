"""Results that any tool reads: one parquet schema per experiment (pandas, pyarrow.dataset, polars,
DuckDB see every column of every file), the schema an experiment declares, compacting older
results to one schema, and the ``raybrain export`` / ``raybrain compact`` commands."""
import copy

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from raybrain import results as R
from raybrain.cli import main

from test_results import record  # a record as Objective.evaluate builds it

META = dict(mode="population", subject="hcp/101309", optimizer="cmaes", seed=3, fidelity=0, duration=300.0, dt=1e-3,
            params=["G", "sigma"])
RUN = "hcp-101309__cmaes__seed3"


def write_train_and_validation(root, schema=None):
    """Two training generations (population mode: ``new_sims``) and one validation file that
    re-simulates training evaluations 1 and 2 (``source_eval``) on another target."""
    w = R.ResultsWriter(root, "exp", schema=schema)
    w.write_generation(RUN, 0, [record(1.0, 0.4, new_sims=1), record(2.0, 0.3, new_sims=1)], META)
    w.write_generation(RUN, 1, [record(1.5, 0.2, new_sims=1)], META)
    w.write_generation(RUN, 0, [record(2.0, 0.35, source_eval=1, new_sims=2, repeats=2),
                                record(1.5, 0.25, source_eval=2, new_sims=2, repeats=2)],
                       {**META, "phase": "validation", "subject": "hcp/102311", "fidelity": -1, "duration": 600.0})
    return w


def _by_phase(df):
    """Rows in a fixed order, whatever order a reader returned the files in."""
    order = {"train": 0, "validation": 1}
    return (df.assign(_p=df["phase"].map(order))
            .sort_values(["_p", "generation", "loss"], ascending=[True, True, False], kind="stable")
            .drop(columns="_p").reset_index(drop=True))


def _stored_columns(res):
    return [c for c in res.columns if c not in R.DERIVED]


@pytest.mark.parametrize("declared", [False, True], ids=["inferred", "declared"])
def test_pandas_reads_every_column_of_every_file(tmp_path, declared):
    schema = R.Schema(["G", "sigma"], ["fc_corr", "fcd_ks"]) if declared else None
    write_train_and_validation(tmp_path, schema)
    files = sorted((tmp_path / "evaluations").rglob("*.parquet"))
    assert len(files) == 3
    assert len({pq.read_schema(f).remove_metadata() for f in files}) == 1  # one schema, types included

    df = _by_phase(pd.read_parquet(tmp_path / "evaluations"))
    expected = _stored_columns(R.load(tmp_path).evaluations)
    assert expected[-2:] == ["new_sims", "source_eval"]
    assert list(df.columns) == expected
    assert df["phase"].tolist() == ["train"] * 3 + ["validation"] * 2
    assert df["source_eval"].isna().tolist() == [True, True, True, False, False]
    assert df["source_eval"].iloc[3:].tolist() == [1, 2]
    assert df["new_sims"].tolist() == [1, 1, 1, 2, 2]
    assert df["subject"].tolist() == ["hcp/101309"] * 3 + ["hcp/102311"] * 2
    assert df["G"].tolist() == [1.0, 2.0, 1.5, 2.0, 1.5] and df["loss"].tolist() == [0.4, 0.3, 0.2, 0.35, 0.25]
    assert df["repeats"].tolist() == [1, 1, 1, 2, 2] and df["duration"].tolist() == [300.0] * 3 + [600.0] * 2

    # pyarrow.dataset on the folder: the same columns and types
    table = pads.dataset(tmp_path / "evaluations", format="parquet").to_table()
    assert table.column_names == expected
    assert table.schema.field("source_eval").type == pa.int64() and table.schema.field("time").type.tz == "UTC"
    assert sorted(table.column("source_eval").drop_null().to_pylist()) == [1, 2]


def test_load_of_the_same_files_is_unchanged(tmp_path):
    write_train_and_validation(tmp_path)
    df = R.load(tmp_path).evaluations
    assert df["eval_index"].tolist() == [0, 1, 2, 3, 4]
    assert df["cum_sims"].tolist() == [1, 2, 3, 5, 7]  # new_sims 1, 1, 1, 2, 2
    assert df["source_eval"].iloc[3:].tolist() == [1, 2]
    h = R.holdout(df)
    assert h[["run_id", "val_loss", "winner_eval"]].values.tolist() == [[RUN, 0.25, 2]] and np.isnan(h["test_loss"][0])
    # a training-only experiment: the known extras nobody carried stay out of the frame
    w = R.ResultsWriter(tmp_path / "train-only", "e")
    w.write_generation("r", 0, [record(1.0, 0.5)], META)
    assert "source_eval" not in R.load(tmp_path / "train-only").evaluations
    assert "new_sims" not in R.load(tmp_path / "train-only").evaluations
    assert {"source_eval", "new_sims"} <= set(pq.read_schema(w.path("r", 0)).names)


def test_duckdb_reads_every_column(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    write_train_and_validation(tmp_path)
    pattern = str(tmp_path / "evaluations" / "**" / "*.parquet")
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{pattern}') ORDER BY phase, generation, loss DESC")
    df = rel.df()
    assert list(df.columns) == _stored_columns(R.load(tmp_path).evaluations)
    assert df["source_eval"].isna().tolist() == [True, True, True, False, False]
    assert df["source_eval"].iloc[3:].tolist() == [1, 2]
    assert duckdb.sql(f"SELECT sum(new_sims) FROM read_parquet('{pattern}')").fetchall() == [(7,)]


def test_polars_reads_every_column(tmp_path):
    pl = pytest.importorskip("polars")
    write_train_and_validation(tmp_path)
    for source in (str(tmp_path / "evaluations" / "**" / "*.parquet"), str(tmp_path / "evaluations") + "/"):
        df = pl.read_parquet(source).sort(["phase", "generation", "loss"], descending=[False, False, True])
        assert df.columns == _stored_columns(R.load(tmp_path).evaluations)
        assert df["source_eval"].to_list() == [None, None, None, 1, 2]
        assert df["new_sims"].to_list() == [1, 1, 1, 2, 2]


# ------------------------------------------------------------------------- the declared schema
def test_declared_schema_fixes_every_files_columns(tmp_path):
    schema = R.Schema(["G", "sigma"], ["fc_corr", "fcd_ks"], {"alpha_power": "double", "note": "string"})
    assert schema.columns[-len(R.KNOWN_EXTRAS) - 2:] == list(R.KNOWN_EXTRAS) + ["alpha_power", "note"]
    R.ResultsWriter(tmp_path, "e", schema=schema)
    assert R.read_schema(tmp_path) == schema  # saved as schema.json
    w = R.ResultsWriter(tmp_path, "e")         # another writer (another trial, node, a resume) takes it
    assert w.schema == schema
    # records that lack a declared parameter, components, the extras: nulls, same columns and types
    w.write_generation("r", 0, [{"G": 1.0, "loss": 0.5}], META)
    w.write_generation("r", 1, [record(2.0, 0.4, alpha_power=3.5, note="x")], META)
    s0, s1 = (pq.read_schema(w.path("r", g)).remove_metadata() for g in (0, 1))
    assert s0 == s1 == schema.arrow()
    t0 = pq.read_table(w.path("r", 0))
    assert t0.column("sigma").to_pylist() == [None] and t0.column("note").to_pylist() == [None]
    assert pq.read_table(w.path("r", 1)).column("alpha_power").to_pylist() == [3.5]
    # a field the schema does not declare is refused, naming it and the schema file
    with pytest.raises(ValueError, match=r"records carry 'beta_power', which the experiment's schema \(.*schema.json\)"):
        w.write_generation("r", 2, [record(1.0, 0.5, beta_power=1.0)], META)
    with pytest.raises(ValueError, match="records carry 'w_EE'"):
        w.write_generation("r", 2, [record(1.0, 0.5)], {**META, "params": ["G", "sigma", "w_EE"]})
    assert not w.path("r", 2).exists()


def test_schema_groups_and_errors(tmp_path):
    s = R.Schema(["G", "loss", "G"], ["G", "fc_corr", "repeats"], ["fc_corr", "x"])
    assert (s.params, s.components, list(s.extras)) == (("G",), ("fc_corr",), ["x"])
    assert s.type_of("x") == pa.float64() and s.type_of("repeats") == pa.int64() and s.type_of("G") == pa.float64()
    assert s.union(R.Schema(["w"], ["c2"], {"y": "int64"})).columns == \
        s.columns[:s.columns.index("loss")] + ["w", "loss", "fc_corr", "c2"] + \
        s.columns[s.columns.index("fc_corr") + 1:] + ["y"]
    with pytest.raises(ValueError, match="column 'x': unknown Arrow type 'float99'"):
        R.Schema(["G"], extras={"x": "float99"})
    (tmp_path / "schema.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="schema.json: not a results schema"):
        R.ResultsWriter(tmp_path, "e")


BASE = {
    "name": "schema-test",
    "subjects": {"ids": ["hcp/101309"]},
    "model": {"name": "rww"},
    "parametrisation": {"kind": "global", "names": ["G", "sigma"]},
    "loss": "pfic",
    "simulation": {"fidelities": [{"duration": 72.0, "dt": 0.001}], "burn_in": 0.0, "window": 20, "step": 2},
    "optimizers": [{"name": "random", "population": 2}],
    "budget": {"evaluations": 2},
}
SPECTRAL = {
    "name": "schema-spec",
    "subjects": {"synthetic": [{"name": "healthy", "from_subject": "hcp/101309",
                                "params": {"G": 10.0, "C_P2_PV": 200.0}, "seed": 5}]},
    "model": {"name": "lanmm", "options": {"output": "eeg"}},
    "parametrisation": {"kind": "global", "names": ["G", "C_P2_PV"],
                        "bounds": {"G": [0.0, 20.0], "C_P2_PV": [100.0, 300.0]}},
    "loss": {"spectral": 1.0, "fc_corr": 0.5},
    "simulation": {"fidelities": [{"duration": 7.2, "dt": 0.0005}], "burn_in": 0.5, "noise": "common",
                   "dtype": "float64", "sc_max": 1.0, "meeg": {"fs": 250, "segment": 0.5, "duration": 1.0}},
    "optimizers": [{"name": "random", "population": 2}],
    "budget": {"evaluations": 2},
    "validation": {"top": 0},
}


@pytest.mark.parametrize("config", [BASE, SPECTRAL], ids=["pfic", "spectral+fc"])
def test_an_experiments_schema_holds_its_objectives_records(tmp_path, config):
    """The schema ``raybrain run`` declares (raybrain.tuning.results_schema) holds every field the
    experiment's objective puts in a record, so no write is refused and nothing is lost."""
    from raybrain.experiment import ExperimentConfig
    from raybrain.tuning import results_schema

    cfg = ExperimentConfig.model_validate(copy.deepcopy(config))
    schema = results_schema(cfg)
    target = cfg.targets()[0]
    obj = cfg.build_objective(target, 0)
    records = obj.evaluate(np.array([[float(np.mean(b)) for b in obj.parametrisation.bounds]] * 2), seed=1)
    for r, src in zip(records, (0, 1)):
        r.update(new_sims=1, source_eval=src)
    assert set(records[0]) <= set(schema.columns)
    assert schema.params == tuple(obj.parametrisation.names)
    if cfg.spectral:
        assert {"spectral.total", "spectral.psd_log_mse", "fc_corr.total", "fc_corr.fc_corr"} <= set(schema.components)
        assert list(schema.extras) == ["alpha_power", "gamma_power", "alpha_peak_hz", "gamma_peak_hz"]
    else:
        assert schema.components == ("fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks") and not schema.extras
    w = R.ResultsWriter(tmp_path, cfg.name, schema=schema)
    meta = dict(mode="population", subject=target, optimizer="random", seed=0, fidelity=0, duration=7.2, dt=1e-3,
                params=list(obj.parametrisation.names))
    w.write_generation("r", 0, records, meta)
    df = pd.read_parquet(tmp_path / "evaluations")
    assert list(df.columns) == schema.columns
    assert df["loss"].tolist() == pytest.approx([r["loss"] for r in records])


def test_regional_schema_has_one_parameter_per_region():
    from raybrain.experiment import ExperimentConfig
    from raybrain.tuning import results_schema

    cfg = ExperimentConfig.model_validate({**copy.deepcopy(BASE), "parametrisation": {"kind": "regional"}})
    schema = results_schema(cfg)
    assert schema.params == tuple(f"w_EE[{i}]" for i in range(80)) + ("G",)


# ------------------------------------------------------------------------------ compacting
def _old_layout(root):
    """Files as raybrain 0.1.0 wrote them: each with only the fields its records carried (the
    validation file alone has source_eval; the training file of run b has no new_sims and an
    extra 'note'); one file of the oldest layout (no phase column, no -f in the name)."""
    ev = root / "evaluations"
    now = pd.Timestamp("2026-01-01", tz="UTC")

    def write(run, name, rows, extras):
        head = dict(experiment="old", run_id=run, mode="population", phase="train", subject="s", optimizer="o",
                    seed=0, generation=0, fidelity=0, duration=60.0, dt=1e-3)
        cols = {**head, "G": 1.0, "loss": 0.5, "fc_corr": 0.5, "valid": True, "diverged": False, "plausible": True,
                "rate_mean": 3.0, "ei_ratio": 1.0, "wall_s": 0.25, "node": "n", "time": now, **extras}
        table = pa.table({k: [v(i) if callable(v) else v for i in range(rows)] for k, v in cols.items()})
        table = table.set_column(table.schema.get_field_index("time"), "time",
                                 table["time"].cast(pa.timestamp("ms", tz="UTC")))
        (ev / run).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, ev / run / name)
        return table

    write("a", "gen-000000-f0.parquet", 2, {"G": lambda i: float(i), "repeats": 1, "new_sims": 1})
    write("a", "validation-000000.parquet", 1,
          {"phase": "validation", "fidelity": -1, "loss": 0.6, "repeats": 1, "new_sims": 1, "source_eval": 1})
    t = write("b", "gen-000000.parquet", 1, {"repeats": 2, "note": "x"})
    pq.write_table(t.drop(["phase"]), ev / "b" / "gen-000000.parquet")


def test_compact_brings_old_results_to_one_schema(tmp_path):
    _old_layout(tmp_path)
    before = R.load(tmp_path).evaluations
    assert before["phase"].tolist() == ["train", "train", "validation", "train"]
    assert before["cum_sims"].tolist() == [1, 2, 3, 2]
    assert before["source_eval"].isna().tolist() == [True, True, False, True]
    assert before["note"].isna().tolist() == [True, True, True, False] and before["note"].iloc[3] == "x"
    assert R.compact(tmp_path) == 3
    files = sorted((tmp_path / "evaluations").rglob("*.parquet"))
    assert [f.parent.name + "/" + f.name for f in files] == ["a/compacted.parquet", "b/compacted.parquet"]
    assert len({pq.read_schema(f).remove_metadata() for f in files}) == 1
    pd.testing.assert_frame_equal(R.load(tmp_path).evaluations, before)
    df = pd.read_parquet(tmp_path / "evaluations").sort_values(["run_id", "phase", "G"]).reset_index(drop=True)
    assert df["source_eval"].isna().tolist() == [True, True, False, True] and df["source_eval"][2] == 1
    assert df["note"].isna().tolist() == [True, True, True, False] and df["note"][3] == "x"
    assert df["new_sims"].isna().tolist() == [False] * 3 + [True]
    assert R.compact(tmp_path) == 0 and sorted((tmp_path / "evaluations").rglob("*.parquet")) == files


# ------------------------------------------------------------------------------ commands
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_writes_load_in_one_file(tmp_path, capsys, suffix):
    write_train_and_validation(tmp_path / "res")
    out = tmp_path / "out" / f"all{suffix}"
    (tmp_path / "out").mkdir()
    assert main(["export", str(tmp_path / "res"), "--to", str(out)]) == 0
    n_cols = len(R.load(tmp_path / "res").evaluations.columns)  # the columns load() gives, every one exported
    assert capsys.readouterr().out.strip() == f"exported 5 evaluations of 1 runs ({n_cols} columns) to {out}"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind
    want = R.load(tmp_path / "res").evaluations
    got = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(got.columns) == list(want.columns)
    assert got["eval_index"].tolist() == [0, 1, 2, 3, 4] and got["cum_sims"].tolist() == [1, 2, 3, 5, 7]
    assert got["source_eval"].iloc[3:].tolist() == [1, 2] and got["source_eval"].iloc[:3].isna().all()
    assert got["loss"].tolist() == want["loss"].tolist() and got["G"].tolist() == want["G"].tolist()
    if suffix == ".parquet":
        pd.testing.assert_frame_equal(got, want)


def test_export_and_compact_errors_are_one_line_exit_2(tmp_path, capsys):
    write_train_and_validation(tmp_path / "res")
    (tmp_path / "empty" / "evaluations").mkdir(parents=True)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["export", str(tmp_path / "res"), "--to", str(tmp_path / "all.json")], "all.json: must end with .parquet or .csv"),
        (["export", str(tmp_path / "nope"), "--to", str(tmp_path / "all.csv")], "nope: no such results directory"),
        (["export", str(tmp_path), "--to", str(tmp_path / "all.csv")], "not an experiment results directory"),
        (["export", str(tmp_path / "empty"), "--to", str(tmp_path / "all.csv")], "empty: holds no evaluations"),
        (["export", str(tmp_path / "res"), "--to", str(tmp_path / "no" / "dir" / "all.csv")], "all.csv: cannot write"),
        (["export", str(tmp_path / "res"), "--to", str(tmp_path / "afile" / "all.csv")], "all.csv: cannot write"),
        (["export", str(tmp_path / "res"), "--to", str(tmp_path / "res" / "evaluations" / "x.parquet")],
         "x.parquet: is inside"),
        (["export", str(tmp_path / "res")], "--to"),
        (["compact", str(tmp_path / "nope")], "nope: no such results directory"),
        (["compact", str(tmp_path / "afile")], "afile: no such results directory"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("raybrain: error:") and needle in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "all.csv").exists() and not (tmp_path / "all.json").exists()
    # a damaged results file: named in the one line
    bad = tmp_path / "res" / "evaluations" / RUN / "gen-000005-f0.parquet"
    bad.write_bytes(b"not parquet")
    assert main(["export", str(tmp_path / "res"), "--to", str(tmp_path / "all.csv")]) == 2
    assert "gen-000005-f0.parquet: cannot read this results file" in capsys.readouterr().err


def test_compact_command(tmp_path, capsys):
    w = write_train_and_validation(tmp_path)
    before = R.load(tmp_path).evaluations
    assert main(["compact", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"compacted {tmp_path}: 3 -> 1 files (3 generation files merged and removed)"
    assert [p.name for p in w.path(RUN, 0).parent.iterdir()] == ["compacted.parquet"]
    pd.testing.assert_frame_equal(R.load(tmp_path).evaluations.drop(columns="time"), before.drop(columns="time"))
    assert list(pd.read_parquet(tmp_path / "evaluations").columns) == _stored_columns(before)
    assert main(["compact", str(tmp_path)]) == 0
    assert "1 -> 1 files (0 generation files" in capsys.readouterr().out
