"""Tests of raybrain.data.cohort: one declaration finds a whole cohort's files."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raybrain.data import cohort as ch
from raybrain.data.cohort import CohortError, CohortSpec, resolve

N = 6
T = 120
SC_PAT = "sub-{sub}/dwi/sub-{sub}_seg-{atlas}_connectome.csv"
BOLD_PAT = "{participant_id}/func/{participant_id}_task-rest_run-*_seg-{atlas}_stat-mean_timeseries.tsv"
ATLAS_PAT = "atlas-{atlas}_dseg.tsv"


def _labels(atlas: str, n: int = N) -> list[str]:
    return [f"{atlas}_R{i + 1}" for i in range(n)]


# ------------------------------------------------------------------ a tiny writer of the shared layout
def write_participants(root: Path, rows: list[dict], name: str = "participants.tsv") -> Path:
    cols = list(rows[0])
    sep = "\t" if name.endswith(".tsv") else ","
    lines = [sep.join(cols)] + [sep.join(str(r[c]) for c in cols) for r in rows]
    p = root / name
    p.write_text("\n".join(lines) + "\n")
    return p


def write_atlas(root: Path, atlas: str, n: int = N) -> Path:
    rng = np.random.default_rng(7)
    xyz = rng.uniform(-60, 60, size=(n, 3))
    lines = ["index\tname\tx\ty\tz"] + [
        f"{i + 1}\t{lab}\t{x:.2f}\t{y:.2f}\t{z:.2f}" for i, (lab, (x, y, z)) in enumerate(zip(_labels(atlas, n), xyz))
    ]
    p = root / f"atlas-{atlas}_dseg.tsv"
    p.write_text("\n".join(lines) + "\n")
    return p


def write_sc(root: Path, pid: str, atlas: str, n: int = N, seed: int = 0) -> tuple[Path, np.ndarray]:
    """MRtrix style: upper triangle including the diagonal, lower triangle zero, no header."""
    rng = np.random.default_rng(seed)
    full = rng.uniform(1, 100, size=(n, n))
    upper = np.triu(full)
    d = root / pid / "dwi"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{pid}_seg-{atlas}_connectome.csv"
    np.savetxt(p, upper, delimiter=",", fmt="%.6f")
    return p, upper


def write_bold(root: Path, pid: str, atlas: str, run: int, n: int = N, t: int = T, seed: int = 0,
               labels: list[str] | None = None, tr: float | None = 0.72) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, n))
    d = root / pid / "func"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{pid}_task-rest_run-{run}_seg-{atlas}_stat-mean_timeseries.tsv"
    head = labels if labels is not None else _labels(atlas, n)
    p.write_text("\t".join(head) + "\n" + "\n".join("\t".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    if tr is not None:
        (d / f"{pid}_task-rest_run-{run}_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": "rest"}))
    return p


def make_cohort(root: Path, n_subjects: int = 5, runs: tuple[int, ...] = (1, 2), atlases=None, trs=None) -> Path:
    """participants.tsv + atlas + per-subject SC, BOLD runs and sidecars; returns the participants path."""
    atlases = atlases or ["AAL"] * n_subjects
    trs = trs or [0.72] * n_subjects
    sexes = ["F", "M", "F", "n/a", "M", "F"]
    groups = ["control", "patient", "control", "control", "patient", "control"]
    rows = []
    for k in range(n_subjects):
        pid = f"sub-{k + 1:03d}"
        rows.append({"participant_id": pid, "age": [17, 25.5, 40, "n/a", 63, 30][k], "sex": sexes[k],
                     "group": groups[k], "atlas": atlases[k], "tr": trs[k]})
        write_sc(root, pid, atlases[k], seed=k)
        for r in runs:
            write_bold(root, pid, atlases[k], r, seed=100 * k + r, tr=trs[k])
    for a in set(atlases):
        write_atlas(root, a)
    return write_participants(root, rows)


def spec(parts: Path, **kw) -> CohortSpec:
    base = dict(participants=parts, sc=SC_PAT, bold=BOLD_PAT)
    base.update(kw)
    return CohortSpec(**base)


# ------------------------------------------------------------------ helpers
def test_natural_key_and_entities():
    names = ["run-10", "run-2", "run-1", "run-02b"]
    assert sorted(names, key=ch.natural_key) == ["run-1", "run-2", "run-02b", "run-10"]
    ents, suffix = ch.bids_entities("sub-01_task-rest_run-1_seg-X_stat-mean_timeseries.tsv")
    assert ents == {"sub": "01", "task": "rest", "run": "1", "seg": "X", "stat": "mean"} and suffix == "timeseries"
    assert ch.bids_entities("task-rest_bold.json") == ({"task": "rest"}, "bold")


# ------------------------------------------------------------------ patterns
def test_patterns_resolve_sub_participant_id_and_columns(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4, atlases=["AAL", "AAL", "DK", "DK"])
    c = resolve(spec(parts, atlas=ATLAS_PAT, tr=2.0))
    assert c.names == ["sub-001", "sub-002", "sub-003", "sub-004"]
    e3 = c.entry("sub-003")
    assert e3.sc == tmp_path.resolve() / "sub-003/dwi/sub-003_seg-DK_connectome.csv"
    assert e3.atlas == tmp_path.resolve() / "atlas-DK_dseg.tsv"
    assert [b.name for b in e3.bold] == [
        "sub-003_task-rest_run-1_seg-DK_stat-mean_timeseries.tsv",
        "sub-003_task-rest_run-2_seg-DK_stat-mean_timeseries.tsv",
    ]
    assert all(e.tr == 2.0 for e in c.entries)
    assert c.entry("sub-001").atlas.name == "atlas-AAL_dseg.tsv"


def test_base_dir_and_csv_participants(tmp_path):
    data = tmp_path / "derivatives"
    data.mkdir()
    make_cohort(data, n_subjects=4)
    rows = pd.read_csv(data / "participants.tsv", sep="\t", dtype=str)
    meta = tmp_path / "meta"
    meta.mkdir()
    rows.to_csv(meta / "participants.csv", index=False)
    c = resolve(spec(meta / "participants.csv", base_dir=data, tr=1.0))
    assert c.names == [f"sub-{k:03d}" for k in range(1, 5)]
    assert c.entry("sub-004").sc.parent == (data / "sub-004" / "dwi").resolve()


def test_unknown_pattern_field_is_one_clear_error(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    with pytest.raises(ValueError, match=r"participants\.tsv: the sc pattern .* uses \{site\}, which is not a column"):
        resolve(spec(parts, sc="sub-{sub}/dwi/{site}.csv", tr=1.0))


def test_runs_globbed_and_naturally_sorted(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4, runs=(1, 2, 10))
    c = resolve(spec(parts))
    runs = [ch.bids_entities(b.name)[0]["run"] for b in c.entry("sub-002").bold]
    assert runs == ["1", "2", "10"]  # lexicographic order would put 10 before 2
    c1 = resolve(spec(parts, runs="first"))
    assert [b.name for b in c1.entry("sub-002").bold] == ["sub-002_task-rest_run-1_seg-AAL_stat-mean_timeseries.tsv"]


def test_several_sc_matches_is_a_problem(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    write_sc(tmp_path, "sub-002", "XYZ", seed=9)
    with pytest.raises(CohortError) as ei:
        resolve(spec(parts, sc="sub-{sub}/dwi/sub-{sub}_seg-*_connectome.csv", tr=1.0))
    assert [p[0] for p in ei.value.problems] == ["sub-002"]
    assert "2 files match, expected one" in str(ei.value)


# ------------------------------------------------------------------ TR
def test_tr_from_number_column_and_sidecar(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4, trs=[0.72, 0.8, 2.0, 1.5])
    assert resolve(spec(parts, tr=1.25)).trs == {f"sub-{k:03d}": 1.25 for k in range(1, 5)}
    expect = {"sub-001": 0.72, "sub-002": 0.8, "sub-003": 2.0, "sub-004": 1.5}
    assert resolve(spec(parts, tr={"column": "tr"})).trs == expect
    assert resolve(spec(parts, tr="sidecar")).trs == expect
    assert resolve(spec(parts)).trs == expect  # default with BOLD: sidecar


def test_tr_sidecar_inherited_from_root(tmp_path):
    """BIDS inheritance: a root task-rest_bold.json applies; a run-level sidecar overrides it."""
    parts = make_cohort(tmp_path, n_subjects=4)
    for f in tmp_path.glob("sub-*/func/*_bold.json"):
        f.unlink()
    (tmp_path / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 3.0}))
    (tmp_path / "task-other_bold.json").write_text(json.dumps({"RepetitionTime": 9.0}))  # other task: ignored
    (tmp_path / "sub-002/func/sub-002_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 1.1}))
    trs = resolve(spec(parts)).trs
    assert trs == {"sub-001": 3.0, "sub-002": 1.1, "sub-003": 3.0, "sub-004": 3.0}


def test_tr_explicit_sidecar_pattern_with_entities(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    raw = tmp_path / "raw"
    for k in range(1, 5):
        d = raw / f"sub-{k:03d}" / "func"
        d.mkdir(parents=True)
        for r in (1, 2):
            (d / f"sub-{k:03d}_task-rest_run-{r}_bold.json").write_text(json.dumps({"RepetitionTime": 0.5 * k}))
    c = resolve(spec(parts, tr="sidecar", sidecar="raw/sub-{sub}/func/sub-{sub}_task-{task}_run-{run}_bold.json"))
    assert c.trs == {f"sub-{k:03d}": 0.5 * k for k in range(1, 5)}


def test_tr_conflicting_runs_is_an_error(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    (tmp_path / "sub-003/func/sub-003_task-rest_run-2_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    with pytest.raises(CohortError) as ei:
        resolve(spec(parts))
    assert ei.value.problems == [("sub-003", "", ei.value.problems[0][2])]
    msg = str(ei.value)
    assert "sub-003: the runs disagree on the TR" in msg and "0.72 s" in msg and "2 s" in msg


def test_tr_column_must_be_positive(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4, trs=[0.72, 0.72, -1, "n/a"])
    with pytest.raises(CohortError) as ei:
        resolve(spec(parts, tr={"column": "tr"}))
    assert [p[0] for p in ei.value.problems] == ["sub-003", "sub-004"]
    assert "got '-1'" in str(ei.value) and "got n/a" in str(ei.value)


def test_spec_validation():
    with pytest.raises(ValueError, match="cohort.runs"):
        CohortSpec(participants="p.tsv", sc="x", runs="average")
    with pytest.raises(ValueError, match="cohort.tr"):
        CohortSpec(participants="p.tsv", sc="x", tr=0)
    with pytest.raises(ValueError, match="cohort.tr"):
        CohortSpec(participants="p.tsv", sc="x", tr={"col": "tr"})
    with pytest.raises(ValueError, match="needs a bold pattern"):
        CohortSpec(participants="p.tsv", sc="x", tr="sidecar")
    with pytest.raises(ValueError, match="positional field"):
        CohortSpec(participants="p.tsv", sc="sub-{}/x.csv")


# ------------------------------------------------------------------ selection
def test_subset_include_exclude(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=5)
    # ages 17, 25.5, 40, n/a, 63; groups control, patient, control, control, patient
    assert resolve(spec(parts, tr=1, subset="age >= 18")).names == ["sub-002", "sub-003", "sub-005"]
    assert resolve(spec(parts, tr=1, subset="age >= 18 and group == 'control'")).names == ["sub-003"]
    assert resolve(spec(parts, tr=1, include=["sub-004", "002"])).names == ["sub-002", "sub-004"]
    assert resolve(spec(parts, tr=1, exclude=["sub-001"], subset="group == 'control'")).names == ["sub-003",
                                                                                                  "sub-004"]


def test_bad_subset_names_file_and_column(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    with pytest.raises(ValueError, match=r"participants\.tsv: cohort\.subset .* uses 'agee', which is not a column"):
        resolve(spec(parts, tr=1, subset="agee > 3"))
    with pytest.raises(ValueError, match=r"participants\.tsv: cohort\.subset .* is not a valid query"):
        resolve(spec(parts, tr=1, subset="age >>> 3"))
    with pytest.raises(ValueError, match=r"participants\.tsv: cohort\.include .* not in the table: sub-999"):
        resolve(spec(parts, tr=1, include=["sub-999"]))
    with pytest.raises(CohortError, match="no subjects left"):
        resolve(spec(parts, tr=1, subset="age > 1000"))


def test_participants_table_errors(tmp_path):
    rows = [{"participant_id": "sub-01", "age": 1}, {"participant_id": "sub-02", "age": 2},
            {"participant_id": "sub-01", "age": 3}, {"participant_id": "n/a", "age": 4}]
    p = write_participants(tmp_path, rows)
    with pytest.raises(ValueError) as ei:
        ch.read_participants(p)
    msg = str(ei.value)
    assert msg.startswith(str(p))
    assert "'sub-01' appears 2 times (lines 2, 4)" in msg and "empty participant_id on line 5" in msg
    with pytest.raises(ValueError, match="no column 'subject'"):
        ch.read_participants(p, id_column="subject")
    with pytest.raises(ValueError, match="no such file"):
        ch.read_participants(tmp_path / "nope.tsv")


# ------------------------------------------------------------------ all problems at once
def _break_three(root: Path) -> None:
    (root / "sub-002/dwi/sub-002_seg-AAL_connectome.csv").unlink()          # missing SC
    for f in (root / "sub-003/func").glob("*_timeseries.tsv"):               # missing BOLD
        f.unlink()
    (root / "sub-005/func/sub-005_task-rest_run-1_bold.json").write_text(json.dumps({"RepetitionTime": "fast"}))


def test_three_broken_subjects_in_one_error(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=6)
    _break_three(tmp_path)
    with pytest.raises(CohortError) as ei:
        resolve(spec(parts))
    err = ei.value
    assert isinstance(err, ValueError)
    assert [p[0] for p in err.problems] == ["sub-002", "sub-003", "sub-005"]
    lines = str(err).splitlines()
    assert lines[0].startswith(str(parts)) and "3 problems in 3 subjects" in lines[0]
    assert lines[1] == "sub-002: sub-002/dwi/sub-002_seg-AAL_connectome.csv: no such file"
    assert lines[2] == ("sub-003: sub-003/func/sub-003_task-rest_run-*_seg-AAL_stat-mean_timeseries.tsv: "
                        "no file matches this pattern")
    assert lines[3] == ("sub-005: sub-005/func/sub-005_task-rest_run-1_bold.json: "
                        "RepetitionTime must be a positive number of seconds, got 'fast'")


def test_skip_keeps_the_others_and_lists_the_three(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=6)
    _break_three(tmp_path)
    with pytest.warns(UserWarning, match="skipped 3 subjects"):
        c = resolve(spec(parts, on_missing="skip"))
    assert c.names == ["sub-001", "sub-004", "sub-006"]
    assert c.skipped_names == ["sub-002", "sub-003", "sub-005"]
    assert list(c.covariates.index) == ["sub-001", "sub-004", "sub-006"]
    with pytest.raises(ValueError, match="it was skipped: sub-002/dwi/sub-002_seg-AAL_connectome.csv: no such file"):
        c.entry("sub-002")


def test_skip_everything_is_an_error(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    for f in tmp_path.glob("sub-*/dwi/*.csv"):
        f.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CohortError, match="no subjects left") as ei:
            resolve(spec(parts, tr=1, on_missing="skip"))
    assert len(ei.value.problems) == 4


# ------------------------------------------------------------------ covariates
def test_covariates_dtypes(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=5)
    c = resolve(spec(parts, tr=1.0))
    cov = c.covariates
    assert list(cov.columns) == ["age", "sex", "group", "atlas", "tr"]
    assert cov.index.name == "participant_id" and list(cov.index) == c.names
    assert cov["age"].dtype == np.float64 and cov["tr"].dtype == np.float64
    assert pd.api.types.is_string_dtype(cov["sex"]) and not pd.api.types.is_numeric_dtype(cov["sex"])
    np.testing.assert_array_equal(cov["age"].to_numpy(), [17.0, 25.5, 40.0, np.nan, 63.0])
    assert pd.isna(cov.loc["sub-004", "sex"]) and cov.loc["sub-002", "sex"] == "M"
    assert c.entry("sub-002").covariates == {"age": 25.5, "sex": "M", "group": "patient", "atlas": "AAL", "tr": 0.72}
    assert c.entry("sub-004").covariates["age"] is None and c.entry("sub-004").covariates["sex"] is None
    sel = resolve(spec(parts, tr=1.0, covariates=["age"])).covariates
    assert list(sel.columns) == ["age"]
    with pytest.raises(ValueError, match=r"cohort\.covariates .* not in the table: height"):
        resolve(spec(parts, tr=1.0, covariates=["age", "height"]))


# ------------------------------------------------------------------ loading (needs the new loaders in data/io.py)
def _need_loaders():
    from raybrain.data import io

    missing = [f for f in ("load_atlas", "load_connectome", "load_timeseries") if not hasattr(io, f)]
    if missing:
        pytest.skip(f"raybrain.data.io lacks {', '.join(missing)} (written by another helper)")


def test_load_subject_mrtrix_upper_triangular_with_atlas(tmp_path):
    _need_loaders()
    parts = make_cohort(tmp_path, n_subjects=4, runs=(1,))
    c = resolve(spec(parts, atlas=ATLAS_PAT))
    s = c.load_subject("sub-002")
    _p, upper = write_sc(tmp_path / "scratch", "x", "AAL", seed=1)  # the same matrix sub-002 got (seed 1)
    expect = upper + upper.T
    np.fill_diagonal(expect, 0.0)
    np.testing.assert_allclose(s.sc, expect, rtol=1e-6)
    np.testing.assert_array_equal(s.sc, s.sc.T)
    assert np.all(np.diag(s.sc) == 0)
    assert s.labels == tuple(_labels("AAL"))
    assert s.tr == 0.72 and s.n_frames == T and s.name == "sub-002"
    atlas = pd.read_csv(tmp_path / "atlas-AAL_dseg.tsv", sep="\t")
    np.testing.assert_allclose(s.centres, atlas[["x", "y", "z"]].to_numpy())


def test_load_subject_several_runs(tmp_path):
    _need_loaders()
    parts = make_cohort(tmp_path, n_subjects=4, runs=(1, 2, 10))
    pooled = resolve(spec(parts)).load_subject("sub-001")
    assert len(pooled.members) == 3 and pooled.min_frames == T
    # the pooled runs are the files in natural order: run-10 last
    run10 = pd.read_csv(tmp_path / "sub-001/func/sub-001_task-rest_run-10_seg-AAL_stat-mean_timeseries.tsv", sep="\t")
    np.testing.assert_allclose(pooled.members[2].bold, run10.to_numpy(), atol=1e-12)
    concat = resolve(spec(parts, runs="concatenate")).load_subject("sub-001")
    assert concat.n_frames == 3 * T and not concat.members
    first = resolve(spec(parts, runs="first")).load_subject("sub-001")
    assert first.n_frames == T and not first.members


def test_preflight_catches_label_mismatch_and_short_bold(tmp_path):
    _need_loaders()
    parts = make_cohort(tmp_path, n_subjects=5, runs=(1,))
    bad_labels = _labels("AAL")
    bad_labels[2] = "Thalamus_L"  # a label the atlas does not have
    write_bold(tmp_path, "sub-003", "AAL", 1, labels=bad_labels)
    write_bold(tmp_path, "sub-004", "AAL", 1, t=20)
    c = resolve(spec(parts, atlas=ATLAS_PAT, min_frames=50))
    with pytest.raises(CohortError) as ei:
        c.preflight()
    assert [p[0] for p in ei.value.problems] == ["sub-003", "sub-004"]
    assert "2 problems in 2 subjects" in str(ei.value).splitlines()[0]
    sub3 = ei.value.problems[0]
    assert sub3[1] == "sub-003/func/sub-003_task-rest_run-1_seg-AAL_stat-mean_timeseries.tsv"
    assert "Thalamus_L" in sub3[2] and "AAL_R3" in sub3[2]
    assert ei.value.problems[1][2] == "BOLD has 20 frames, at least 50 are needed"
    assert c.preflight(load=False) == []  # the files are all there
    (tmp_path / "sub-001/dwi/sub-001_seg-AAL_connectome.csv").write_text("1,2,x\n0,1,2\n0,0,1\n")  # a broken file
    c = resolve(spec(parts, atlas=ATLAS_PAT, min_frames=50, on_missing="skip"))
    with pytest.warns(UserWarning, match="preflight skipped 3 subjects"):
        probs = c.preflight()
    assert [p[0] for p in probs] == ["sub-001", "sub-003", "sub-004"]
    assert probs[0][1] == "sub-001/dwi/sub-001_seg-AAL_connectome.csv"
    assert c.names == ["sub-002", "sub-005"] and c.skipped_names == ["sub-001", "sub-003", "sub-004"]
    assert c.check_consistency() == {N: ["sub-002", "sub-005"]}
    assert c.describe() == "2 subjects, 2 BOLD runs, TR 0.72 s, 6 regions: 2, 3 skipped"


def test_check_consistency_counts_parcellations(tmp_path):
    _need_loaders()
    parts = make_cohort(tmp_path, n_subjects=4, runs=(1,), atlases=["AAL", "AAL", "AAL", "DK"])
    write_sc(tmp_path, "sub-004", "DK", n=8, seed=3)
    c = resolve(spec(parts, bold=None, tr=None))
    assert c.check_consistency() == {6: ["sub-001", "sub-002", "sub-003"], 8: ["sub-004"]}


def test_na_pattern_field_is_a_subject_problem(tmp_path):
    parts = make_cohort(tmp_path, n_subjects=4)
    text = parts.read_text().replace("sub-002\t25.5\tM\tpatient\tAAL", "sub-002\t25.5\tM\tpatient\tn/a")
    parts.write_text(text)
    with pytest.raises(CohortError) as ei:
        resolve(spec(parts, tr=1.0))
    assert ei.value.problems == [
        ("sub-002", "participants.tsv", "column 'atlas' is n/a, and the sc pattern needs it"),
        ("sub-002", "participants.tsv", "column 'atlas' is n/a, and the bold pattern needs it"),
    ]
