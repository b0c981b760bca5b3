"""Tests of the user-file loaders (raybrain.data.io): a neuroscientist's own files, written here
in the formats the pipelines write (MRtrix tck2connectome CSV, XCP-D timeseries TSV, BIDS dseg
TSV, CBIG FCD CDF, TVB zip), load with the documented policy."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from raybrain import features as F
from raybrain.data import (
    Subject,
    fcd_cdf_to_sample,
    group_average,
    load_atlas,
    load_connectome,
    load_fcd_target,
    load_map,
    load_timeseries,
    load_user_subject,
)

N, T = 5, 60
LABELS = ("Vis_1", "Vis_2", "SomMot_1", "Default_1", "Default_2")


@pytest.fixture()
def data():
    rng = np.random.default_rng(3)
    full = rng.uniform(0.5, 4.0, (N, N))
    full = np.round((full + full.T) / 2, 3)
    diag = np.round(rng.uniform(1, 2, N), 3)
    np.fill_diagonal(full, 0.0)
    bold = rng.standard_normal((T, N)) + 0.6 * rng.standard_normal((T, 1))
    centres = np.round(rng.uniform(-60, 60, (N, 3)), 2)
    return {"full": full, "diag": diag, "bold": np.round(bold, 6), "centres": centres}


def _mrtrix_csv(path: Path, full, diag) -> Path:
    """tck2connectome default: upper triangle including the diagonal, comma-separated, no header."""
    upper = np.triu(full) + np.diag(diag)
    path.write_text("\n".join(",".join(f"{v:g}" for v in row) for row in upper) + "\n")
    return path


def _xcpd_tsv(path: Path, bold, labels, na_cells=()) -> Path:
    """XCP-D parcellated time series: header of region labels, tab-separated, "n/a" cells."""
    rows = [[f"{v:.6f}" for v in r] for r in bold]
    for t, j in na_cells:
        rows[t][j] = "n/a"
    path.write_text("\t".join(labels) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def _dseg_tsv(path: Path, labels, centres, order=None) -> Path:
    order = range(len(labels)) if order is None else order
    lines = ["index\tname\tx\ty\tz"] + [f"{i + 1}\t{labels[i]}\t{centres[i][0]:g}\t{centres[i][1]:g}\t{centres[i][2]:g}"
                                       for i in order]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- connectome
def test_mrtrix_upper_triangle_mirrored_and_diagonal_zeroed(tmp_path, data):
    p = _mrtrix_csv(tmp_path / "sub-001_seg-x_connectome.csv", data["full"], data["diag"])
    c = load_connectome(p)
    np.testing.assert_allclose(c.sc, data["full"])  # symmetric, diagonal 0
    assert c.labels is None and c.centres is None and c.lengths is None
    assert c.note == (f"sub-001_seg-x_connectome.csv: upper-triangular (MRtrix tck2connectome) mirrored to symmetric; "
                      f"diagonal (sum {data['diag'].sum():.6g}) set to 0")
    kept = load_connectome(p, diagonal="keep")
    np.testing.assert_allclose(kept.sc, data["full"] + np.diag(data["diag"]))
    assert "diagonal" not in kept.note
    with pytest.raises(ValueError, match="diagonal: must be one of 'zero', 'keep'"):
        load_connectome(p, diagonal="drop")


def test_lower_triangle_and_asymmetric_and_symmetric(tmp_path, data):
    lower = tmp_path / "lower.txt"
    np.savetxt(lower, np.tril(data["full"]))
    c = load_connectome(lower)
    np.testing.assert_allclose(c.sc, data["full"])
    assert "lower-triangular mirrored" in c.note
    directed = data["full"].copy()
    directed[0, 1] += 1.0
    np.save(tmp_path / "directed.npy", directed)
    c = load_connectome(tmp_path / "directed.npy")
    np.testing.assert_array_equal(c.sc, directed)
    assert "asymmetric" in c.note and "kept as a directed SC" in c.note
    np.save(tmp_path / "sym.npy", data["full"])
    assert load_connectome(tmp_path / "sym.npy").note == ""


def test_labelled_connectome_header_and_label_column(tmp_path, data):
    # pandas-style: a corner cell, a header row and a first column of labels
    p = tmp_path / "conn.csv"
    rows = ["," + ",".join(LABELS)] + [LABELS[i] + "," + ",".join(f"{v:g}" for v in data["full"][i]) for i in range(N)]
    p.write_text("\n".join(rows) + "\n")
    c = load_connectome(p)
    assert c.labels == LABELS and c.note == ""
    np.testing.assert_allclose(c.sc, data["full"])
    order = [3, 0, 4, 1, 2]
    r = load_connectome(p, labels=[LABELS[i] for i in order])
    np.testing.assert_allclose(r.sc, data["full"][np.ix_(order, order)])
    assert r.labels == tuple(LABELS[i] for i in order) and "reordered" in r.note
    with pytest.raises(ValueError, match=r"conn\.csv: region labels differ .*missing 1 .*'Limbic_1'.*'Default_2'"):
        load_connectome(p, labels=list(LABELS[:4]) + ["Limbic_1"])
    # a header row only, tab-separated
    q = tmp_path / "conn.tsv"
    q.write_text("\t".join(LABELS) + "\n" + "".join("\t".join(f"{v:g}" for v in r) + "\n" for r in data["full"]))
    assert load_connectome(q).labels == LABELS
    # header and first column disagree
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([rows[0]] + [rows[1 + i].replace(LABELS[i], LABELS[(i + 1) % N], 1) for i in range(N)]))
    with pytest.raises(ValueError, match="bad.csv: the header row and the first column list different region labels"):
        load_connectome(bad)


def test_connectome_binary_and_tvb_zip(tmp_path, data):
    scipy.io.savemat(tmp_path / "c.mat", {"SC": np.triu(data["full"]), "other": np.eye(2)})
    np.testing.assert_allclose(load_connectome(tmp_path / "c.mat", key="SC").sc, data["full"])
    lengths = np.round(np.random.default_rng(1).uniform(10, 90, (N, N)), 2)
    z = tmp_path / "conn.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("weights.txt", "\n".join(" ".join(f"{v:g}" for v in r) for r in data["full"]))
        zf.writestr("tract_lengths.txt", "\n".join(" ".join(f"{v:g}" for v in r) for r in lengths))
        zf.writestr("centres.txt", "".join(f"{lab} {x:g} {y:g} {w:g}\n"
                                           for lab, (x, y, w) in zip(LABELS, data["centres"])))
    c = load_connectome(z)
    assert c.labels == LABELS
    np.testing.assert_allclose(c.centres, data["centres"])
    np.testing.assert_allclose(c.lengths, lengths)
    s = load_user_subject(z)  # TVB centres survive into the subject
    np.testing.assert_allclose(s.centres, data["centres"])
    assert s.labels == LABELS


def test_words_that_are_not_a_connectome(tmp_path):
    p = tmp_path / "words.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="words.csv: cannot parse as a numeric table: 3 region labels"):
        load_connectome(p)


# ---------------------------------------------------------------------------- time series
def test_xcpd_timeseries_na_policies(tmp_path, data):
    bold = data["bold"]
    na = [(5, 1), (17, 1), (17, 3)] + [(t, 4) for t in range(T)]  # region 4 has no coverage
    p = _xcpd_tsv(tmp_path / "sub-001_task-rest_run-1_seg-x_stat-mean_timeseries.tsv", bold, LABELS, na)
    with pytest.raises(ValueError) as err:
        load_timeseries(p)
    msg = str(err.value)
    assert msg.startswith(str(p)) and f"found {3 + T} missing (n/a or NaN) cells" in msg
    assert "'Vis_2'" in msg and "entirely n/a ['Default_2']" in msg and "na='drop-regions'" in msg
    with pytest.raises(ValueError, match=r"1 region\(s\) are entirely n/a \(no coverage\) \['Default_2'\]"):
        load_timeseries(p, na="drop-frames")
    got, labels, note = load_timeseries(p, na="drop-regions")
    keep_t = [t for t in range(T) if t not in (5, 17)]
    np.testing.assert_allclose(got, bold[np.ix_(keep_t, range(4))], atol=1e-6)
    assert labels == LABELS[:4]
    assert "dropped 1 region(s) that are entirely n/a (no coverage) ['Default_2']" in note
    assert "dropped 2 of 60 frames with n/a cells (frames [5, 17])" in note
    # without the empty region, drop-frames works alone
    q = _xcpd_tsv(tmp_path / "censored.tsv", bold, LABELS, [(5, 1), (17, 1), (17, 3)])
    got, labels, note = load_timeseries(q, na="drop-frames")
    np.testing.assert_allclose(got, bold[keep_t], atol=1e-6)
    assert labels == LABELS and note == "censored.tsv: dropped 2 of 60 frames with n/a cells (frames [5, 17])"
    with pytest.raises(ValueError, match="na: must be one of"):
        load_timeseries(q, na="zero")


def test_timeseries_non_numeric_cell_and_formats(tmp_path, data):
    bold = data["bold"]
    p = _xcpd_tsv(tmp_path / "typo.tsv", bold, LABELS)
    lines = p.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[2] = "0.1.2"
    lines[3] = "\t".join(cells)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"typo.tsv: .*data row 3 \(line 4\), column 3 \('SomMot_1'\): '0.1.2' "
                                         r"is not a number"):
        load_timeseries(p)
    np.save(tmp_path / "b.npy", bold)
    got, labels, note = load_timeseries(tmp_path / "b.npy")
    np.testing.assert_array_equal(got, bold)
    assert labels is None and note == ""
    scipy.io.savemat(tmp_path / "b.mat", {"tc": bold, "tr": np.array([[0.72]])})
    np.testing.assert_array_equal(load_timeseries(tmp_path / "b.mat", key="tc")[0], bold)
    nan = bold.copy()
    nan[[2, 9], 0] = np.nan
    np.savez(tmp_path / "b.npz", ts=nan)
    got, _, note = load_timeseries(tmp_path / "b.npz", na="drop-frames")
    np.testing.assert_array_equal(got, np.delete(bold, [2, 9], axis=0))
    # a pandas index column (unnamed) is not a region
    q = tmp_path / "indexed.csv"
    q.write_text("," + ",".join(LABELS) + "\n" + "".join(f"{t}," + ",".join(f"{v:.6f}" for v in bold[t]) + "\n"
                                                         for t in range(T)))
    got, labels, note = load_timeseries(q)
    assert labels == LABELS and got.shape == (T, N) and "frame index" in note


# ------------------------------------------------------------------------ atlas, maps, FCD
def test_load_atlas(tmp_path, data):
    p = _dseg_tsv(tmp_path / "atlas-x_dseg.tsv", LABELS, data["centres"], order=[2, 0, 4, 1, 3])
    labels, centres = load_atlas(p)  # rows put in index order
    assert labels == LABELS
    np.testing.assert_allclose(centres, data["centres"])
    q = tmp_path / "names.csv"
    q.write_text("label\n" + "\n".join(LABELS) + "\n")
    assert load_atlas(q) == (LABELS, None)
    r = tmp_path / "centres.txt"
    r.write_text("".join(f"{lab} {x:g} {y:g} {w:g}\n" for lab, (x, y, w) in zip(LABELS, data["centres"])))
    np.testing.assert_allclose(load_atlas(r)[1], data["centres"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\tx\ty\n" + "".join(f"{lab}\t1\t2\n" for lab in LABELS))
    with pytest.raises(ValueError, match="bad.tsv: give all three centre columns"):
        load_atlas(bad)
    dup = tmp_path / "dup.tsv"
    dup.write_text("name\n" + "\n".join(LABELS + LABELS[:1]) + "\n")
    with pytest.raises(ValueError, match=r"dup.tsv: duplicate region labels \['Vis_1'\]"):
        load_atlas(dup)


def test_load_map(tmp_path):
    myelin = np.array([1.2, 1.5, 1.1, 1.9, 1.4])
    grad = np.array([-0.5, 0.1, 0.3, 0.9, -0.2])
    order = [4, 2, 0, 3, 1]
    p = tmp_path / "maps.csv"
    p.write_text("region,myelin,gradient\n" + "".join(f"{LABELS[i]},{myelin[i]},{grad[i]}\n" for i in order))
    got = load_map(p, N, labels=LABELS)
    np.testing.assert_allclose(got, np.stack([myelin, grad]))  # (K, N) in the SC's order
    with pytest.raises(ValueError, match=r"maps.csv: region labels differ from the SC's: missing 1 .*'Limbic_1'"):
        load_map(p, N, labels=list(LABELS[:4]) + ["Limbic_1"])
    # a file with more regions than the subject (e.g. one dropped for lack of BOLD coverage)
    np.testing.assert_allclose(load_map(p, 4, labels=[LABELS[i] for i in (3, 0, 1, 2)]),
                               np.stack([myelin, grad])[:, [3, 0, 1, 2]])
    one = tmp_path / "myelin.tsv"
    one.write_text("myelin\n" + "\n".join(f"{v}" for v in myelin) + "\n")
    np.testing.assert_allclose(load_map(one, N), myelin)
    row = tmp_path / "row.tsv"
    row.write_text("\t".join(LABELS[i] for i in order) + "\n" + "\t".join(f"{myelin[i]}" for i in order) + "\n")
    np.testing.assert_allclose(load_map(row, N, labels=LABELS), myelin)
    np.testing.assert_allclose(load_map(row, 2, labels=LABELS[3:]), myelin[3:])
    np.save(tmp_path / "m.npy", grad)
    np.testing.assert_allclose(load_map(tmp_path / "m.npy", N), grad)
    np.save(tmp_path / "short.npy", grad[:4])
    with pytest.raises(ValueError, match=r"short.npy: expected 5 values per map"):
        load_map(tmp_path / "short.npy", N)
    np.save(tmp_path / "flat.npy", np.ones(N))
    with pytest.raises(ValueError, match="flat.npy: map is constant"):
        load_map(tmp_path / "flat.npy", N)
    gap = tmp_path / "gap.tsv"
    gap.write_text("myelin\n" + "\n".join(["1.2", "n/a", "1.1", "1.9", "1.4"]) + "\n")
    with pytest.raises(ValueError, match=r"gap.tsv: map must be finite, found 1 .*first at region 1"):
        load_map(gap, N)


def _fcd_like(rng, n):
    return np.clip(2 * rng.beta(5, 2, n) - 1, -1, 1)


def test_fcd_target_plain_and_cbig_cdf(tmp_path):
    rng = np.random.default_rng(0)
    y = _fcd_like(rng, 30000)  # the recording's FCD values
    np.savetxt(tmp_path / "fcd.txt", rng.permutation(y[:500]))
    np.testing.assert_array_equal(load_fcd_target(tmp_path / "fcd.txt"), np.sort(y[:500]))
    # the CBIG CDF of y: cumulative counts over 10000 equal bins on [-1, 1]
    cdf = np.cumsum(np.histogram(y, bins=10000, range=(-1, 1))[0])
    np.savetxt(tmp_path / "fcd_cdf.csv", cdf[None, :], delimiter=",", fmt="%d")  # one row
    s = load_fcd_target(tmp_path / "fcd_cdf.csv")
    assert s.ndim == 1 and np.all(np.diff(s) >= 0) and s.min() >= -1 and s.max() <= 1
    for x in (_fcd_like(rng, 4000), 2 * rng.beta(4, 2.5, 3000) - 1, 0.2 + 0.8 * _fcd_like(rng, 2000)):
        ks_cdf = float(F.ks_distance(x, y, bins=10000))  # CBIG: KS against the CDF
        assert abs(float(F.ks_distance(x, s)) - ks_cdf) < 1e-3
        assert abs(float(F.ks_distance(x, s, bins=10000)) - ks_cdf) <= 0.5 / 10000 + 1e-12
    # a normalised CDF (ending at 1) gives the same sample; a .mat column too
    np.testing.assert_allclose(fcd_cdf_to_sample(cdf / cdf[-1]), s)
    scipy.io.savemat(tmp_path / "cdf.mat", {"emp_fcd_cum": cdf[:, None].astype(float)})
    np.testing.assert_array_equal(load_fcd_target(tmp_path / "cdf.mat"), s)
    np.savetxt(tmp_path / "bad.txt", np.arange(50.0))
    with pytest.raises(ValueError, match="bad.txt: values outside \\[-1, 1\\].*not a CBIG FCD CDF"):
        load_fcd_target(tmp_path / "bad.txt")


# ----------------------------------------------------------------------------- Subject
def test_subject_with_precomputed_targets(data):
    rng = np.random.default_rng(2)
    fc = np.corrcoef(data["bold"].T)
    fc_file = fc.copy()
    np.fill_diagonal(fc_file, 0.0)  # the diagonal of a file is tolerated
    fcd = rng.uniform(-0.2, 0.9, 300)
    s = Subject(name="sub-009", sc=data["full"], tr=0.72, fc_target=fc_file, fcd_target=fcd,
                centres=data["centres"], notes=("one", "two"))
    assert s.has_functional and s.n_frames is None and s.min_frames is None and s.notes == ("one", "two")
    np.testing.assert_allclose(s.fc(), fc, atol=1e-12)
    np.testing.assert_array_equal(s.fcd_distribution(83, 1, 200), np.sort(fcd))
    only_fc = Subject(name="sub-010", sc=data["full"], tr=0.72, fc_target=fc)
    assert only_fc.has_functional
    with pytest.raises(ValueError, match="subject 'sub-010' has a precomputed FC target but no BOLD and no FCD"):
        only_fc.fcd_distribution(10, 1)
    with pytest.raises(ValueError, match="give BOLD or precomputed targets, not both"):
        Subject(name="x", sc=data["full"], tr=1.0, bold=data["bold"], fc_target=fc)
    with pytest.raises(ValueError, match="an FCD target needs an FC target"):
        Subject(name="x", sc=data["full"], tr=1.0, fcd_target=fcd)
    with pytest.raises(ValueError, match=r"centres must be \(5, 3\)"):
        Subject(name="x", sc=data["full"], tr=1.0, centres=data["centres"][:4])
    with pytest.raises(ValueError, match="Fisher z"):
        Subject(name="x", sc=data["full"], tr=1.0, fc_target=np.arctanh(np.clip(fc, -0.999, 0.999)) * 3)
    g = group_average([s, Subject(name="b", sc=data["full"], tr=0.72, fc_target=fc, fcd_target=fcd[:100])])
    np.testing.assert_allclose(g.fc(), fc, atol=1e-12)
    np.testing.assert_array_equal(g.fcd_distribution(83, 1), np.sort(np.concatenate([fcd, fcd[:100]])))


def test_objective_on_subject_with_targets(data):
    from raybrain.integrate import SimulationSettings
    from raybrain.models import get_model
    from raybrain.objective import Objective
    from raybrain.parametrisation import Global

    fc = np.corrcoef(data["bold"].T)
    fcd = np.random.default_rng(4).uniform(-0.2, 0.9, 300)
    model = get_model("hopf")
    settings = SimulationSettings(duration=30.0, burn_in=0.0, dt=1e-2)
    s = Subject(name="sub-009", sc=data["full"], tr=1.0, fc_target=fc, fcd_target=fcd)
    obj = Objective(s, model, Global(model, names=("G",)), "pfic", settings, window=5)
    np.testing.assert_array_equal(obj.target.fcd_dist, np.sort(fcd))
    assert obj.target_for(20).fcd_dist is s.fcd_target or np.array_equal(obj.target_for(20).fcd_dist, np.sort(fcd))
    only_fc = Subject(name="sub-010", sc=data["full"], tr=1.0, fc_target=fc)
    assert Objective(only_fc, model, Global(model, names=("G",)), "fc_corr", settings).target.fcd_dist is None
    with pytest.raises(ValueError, match="subject 'sub-010'"):
        Objective(only_fc, model, Global(model, names=("G",)), "pfic", settings, window=5)


# ----------------------------------------------------------------------- whole subjects
def test_user_subject_from_pipeline_files(tmp_path, data):
    """MRtrix SC (no labels) + atlas (labels, centres) + XCP-D BOLD in another column order."""
    sc = _mrtrix_csv(tmp_path / "sub-001_connectome.csv", data["full"], data["diag"])
    atlas = _dseg_tsv(tmp_path / "atlas-x_dseg.tsv", LABELS, data["centres"])
    order = [2, 4, 0, 1, 3]
    ts = _xcpd_tsv(tmp_path / "sub-001_task-rest_run-1_timeseries.tsv", data["bold"][:, order],
                   [LABELS[i] for i in order])
    s = load_user_subject(sc, bold=ts, tr=0.72, name="sub-001", centres=atlas)
    assert s.labels == LABELS and s.name == "sub-001"
    np.testing.assert_allclose(s.sc, data["full"])
    np.testing.assert_allclose(s.bold, data["bold"], atol=1e-6)  # columns back in the SC order
    np.testing.assert_allclose(s.centres, data["centres"])
    assert any("upper-triangular (MRtrix tck2connectome) mirrored" in n for n in s.notes)
    assert any("BOLD columns reordered to the SC's region order" in n for n in s.notes)
    # different region sets: one error naming the BOLD file and the labels
    other = _xcpd_tsv(tmp_path / "other.tsv", data["bold"], list(LABELS[:4]) + ["Limbic_1"])
    with pytest.raises(ValueError) as err:
        load_user_subject(sc, bold=other, tr=0.72, centres=atlas)
    msg = str(err.value)
    assert msg.startswith(str(other)) and "'Default_2'" in msg and "'Limbic_1'" in msg


def test_user_subject_drop_regions_drops_them_from_the_sc(tmp_path, data):
    sc = _mrtrix_csv(tmp_path / "sc.csv", data["full"], data["diag"])
    lengths = np.round(np.random.default_rng(5).uniform(10, 90, (N, N)), 2)
    lengths = (lengths + lengths.T) / 2
    np.save(tmp_path / "len.npy", lengths)
    atlas = _dseg_tsv(tmp_path / "atlas.tsv", LABELS, data["centres"])
    ts = _xcpd_tsv(tmp_path / "ts.tsv", data["bold"], LABELS, [(t, 1) for t in range(T)] + [(9, 3)])
    with pytest.raises(ValueError, match="na='drop-frames'"):
        load_user_subject(sc, bold=ts, tr=2.0, centres=atlas)
    s = load_user_subject(sc, bold=ts, tr=2.0, lengths=tmp_path / "len.npy", centres=atlas, na="drop-regions")
    keep = [0, 2, 3, 4]
    assert s.labels == tuple(LABELS[i] for i in keep) and s.n_regions == 4 and s.n_frames == T - 1
    np.testing.assert_allclose(s.sc, data["full"][np.ix_(keep, keep)])
    np.testing.assert_allclose(s.lengths, lengths[np.ix_(keep, keep)])
    np.testing.assert_allclose(s.centres, data["centres"][keep])
    np.testing.assert_allclose(s.bold, np.delete(data["bold"], 9, axis=0)[:, keep], atol=1e-6)
    assert any("['Vis_2'] (no BOLD coverage) dropped from the SC" in n for n in s.notes)


def test_user_subject_runs(tmp_path, data):
    rng = np.random.default_rng(8)
    sc = _mrtrix_csv(tmp_path / "sc.csv", data["full"], data["diag"])
    b1, b2 = data["bold"], rng.standard_normal((40, N)) + 0.5 * rng.standard_normal((40, 1))
    r1 = _xcpd_tsv(tmp_path / "sub-1_task-rest_run-1_timeseries.tsv", b1, LABELS)
    r2 = _xcpd_tsv(tmp_path / "sub-1_task-rest_run-2_timeseries.tsv", b2[:, ::-1], LABELS[::-1])
    b2 = np.round(b2, 6)
    pooled = load_user_subject(sc, bold=[r1, r2], tr=0.8, name="sub-1")
    assert pooled.is_group and [m.name for m in pooled.members] == ["sub-1/run-1", "sub-1/run-2"]
    assert pooled.min_frames == 40 and pooled.labels == LABELS
    np.testing.assert_allclose(pooled.fc(), (np.corrcoef(b1.T) + np.corrcoef(b2.T)) / 2, atol=1e-6)
    want = np.sort(np.concatenate([F.fcd_distribution(b1, 10, 5), F.fcd_distribution(b2, 10, 5)]))
    np.testing.assert_allclose(pooled.fcd_distribution(10, 5), want, atol=1e-6)
    cat = load_user_subject(sc, bold=[r1, r2], tr=[0.8, 0.8], runs="concatenate")
    z = [(b - b.mean(0)) / b.std(0) for b in (b1, b2)]
    np.testing.assert_allclose(cat.bold, np.concatenate(z), atol=1e-5)
    assert cat.n_frames == T + 40 and any("z-scored per region and concatenated" in n for n in cat.notes)
    first = load_user_subject(sc, bold=[r1, r2], tr=0.8, runs="first")
    np.testing.assert_allclose(first.bold, b1, atol=1e-6)
    with pytest.raises(ValueError, match="different TRs"):
        load_user_subject(sc, bold=[r1, r2], tr=[0.8, 2.0])
    r3 = _xcpd_tsv(tmp_path / "run-3.tsv", b2, list(LABELS[:4]) + ["Limbic_1"])
    with pytest.raises(ValueError, match=r"run-3.tsv: region labels differ"):
        load_user_subject(sc, bold=[r1, r3], tr=0.8)


def test_user_subject_with_precomputed_targets(tmp_path, data):
    sc = _mrtrix_csv(tmp_path / "sc.csv", data["full"], data["diag"])
    fc = np.corrcoef(data["bold"].T)
    order = [1, 0, 2, 4, 3]
    p = tmp_path / "fc.csv"
    p.write_text("," + ",".join(LABELS[i] for i in order) + "\n" + "".join(
        LABELS[i] + "," + ",".join(f"{fc[i, j]:.17g}" for j in order) + "\n" for i in order))
    rng = np.random.default_rng(0)
    cdf = np.cumsum(np.histogram(_fcd_like(rng, 5000), bins=10000, range=(-1, 1))[0])
    np.savetxt(tmp_path / "cdf.txt", cdf, fmt="%d")
    s = load_user_subject(sc, tr=0.72, fc=p, fcd=tmp_path / "cdf.txt", labels=LABELS)
    np.testing.assert_allclose(s.fc(), fc, atol=1e-12)  # reordered to the SC's labels
    np.testing.assert_array_equal(s.fcd_distribution(83, 1), fcd_cdf_to_sample(cdf))
    assert s.has_functional and s.bold is None
    with pytest.raises(ValueError, match="TR .* is required"):
        load_user_subject(sc, fc=p, labels=LABELS)
    with pytest.raises(ValueError, match="not both"):
        load_user_subject(sc, bold=data["bold"], tr=1.0, fc=fc)
