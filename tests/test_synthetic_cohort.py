"""Tests of raybrain.data.synthetic: EDR connectomes, simulated BOLD and cohorts written to disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.sparse.csgraph import connected_components

from raybrain.data import io as rio
from raybrain.data import load_subject
from raybrain.data.synthetic import BRAIN_SEMI_AXES_MM, edr_connectome, make_cohort, simulate_bold

TR = 0.72
SIM = dict(tr=TR, duration=20 * TR, dt=1e-3, burn_in=5.0)  # 20 frames, 19.4 s simulated


def _dist(centres):
    return np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)


def _read_tsv(path):
    return pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)


def _read_connectome_csv(path):
    return np.loadtxt(path, delimiter=",", ndmin=2)


def _mirror(upper):
    off = np.triu(upper, k=1)
    return off + off.T


# -- EDR connectome -----------------------------------------------------------------------------
@pytest.mark.parametrize("n, seed", [(12, 0), (13, 5), (60, 2)])
def test_edr_symmetric_zero_diagonal_connected(n, seed):
    c = edr_connectome(n, seed)
    assert c.sc.shape == c.lengths.shape == (n, n) and c.centres.shape == (n, 3)
    np.testing.assert_array_equal(c.sc, c.sc.T)
    np.testing.assert_array_equal(np.diag(c.sc), 0.0)
    assert np.all(c.sc >= 0) and c.sc.max() == 1.0
    assert connected_components(c.sc > 0, directed=False)[0] == 1
    assert np.all((c.sc > 0).sum(axis=1) >= 1)
    # hemispheres, labels, centres inside the ellipsoid, lengths = tortuosity x distance on edges
    n_left = n // 2
    assert c.labels == tuple(f"L_{i:03d}" for i in range(n_left)) + tuple(f"R_{i:03d}" for i in range(n - n_left))
    assert np.all(c.centres[:n_left, 0] <= 0) and np.all(c.centres[n_left:, 0] >= 0)
    assert np.all(((c.centres / np.asarray(BRAIN_SEMI_AXES_MM)) ** 2).sum(axis=1) <= 1.0)
    np.testing.assert_allclose(c.lengths, np.where(c.sc > 0, 1.25 * _dist(c.centres), 0.0), rtol=1e-12)


def test_edr_deterministic_per_seed():
    a, b, other = edr_connectome(20, 7), edr_connectome(20, 7), edr_connectome(20, 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(a.sc, other.sc) and not np.array_equal(a.centres, other.centres)


def test_edr_connection_probability_follows_the_distance_rule():
    """Pooled over seeds: the expected density, and log(fraction connected) against distance
    falls with slope -λ in the unsaturated regime (lam small, density low); with λ = 0 the
    fraction does not depend on distance."""
    lam = 0.03
    dists, edges, flat = [], [], []
    iu = np.triu_indices(100, k=1)
    for s in range(5):
        c = edr_connectome(100, s, lam=lam, density=0.1)
        dists.append(_dist(c.centres)[iu])
        edges.append(c.sc[iu] > 0)
        flat.append(edr_connectome(100, s, lam=0.0, density=0.1))
    d, e = np.concatenate(dists), np.concatenate(edges)
    assert abs(e.mean() - 0.1) < 0.01
    bins = np.quantile(d, np.linspace(0, 1, 9))
    k = np.digitize(d, bins[1:-1])
    mid = np.array([d[k == b].mean() for b in range(8)])
    frac = np.array([e[k == b].mean() for b in range(8)])
    assert np.all(np.diff(frac) < 0)  # falls monotonically
    assert frac[0] > 10 * frac[-1]
    slope = np.polyfit(mid, np.log(frac), 1)[0]
    assert slope == pytest.approx(-lam, rel=0.2)
    # λ = 0: near and far pairs connected equally often
    d0 = np.concatenate([_dist(c.centres)[iu] for c in flat])
    e0 = np.concatenate([c.sc[iu] > 0 for c in flat])
    near, far = e0[d0 < np.median(d0)].mean(), e0[d0 >= np.median(d0)].mean()
    assert abs(near - far) < 0.02


def test_edr_rejects_bad_arguments():
    for kw, word in [(dict(n_regions=1), "n_regions"), (dict(n_regions=10, density=0), "density"),
                     (dict(n_regions=10, lam=-1), "lam"), (dict(n_regions=10, tortuosity=0.5), "tortuosity")]:
        with pytest.raises(ValueError, match=f"^{word}:"):
            edr_connectome(**kw)


# -- simulate_bold ------------------------------------------------------------------------------
def test_simulate_bold_deterministic_seeded_and_normalised():
    c = edr_connectome(12, 1)
    p = {"G": 1.8, "sigma": 0.005}
    a = simulate_bold(c.sc, p, seed=3, **SIM)
    assert a.shape == (20, 12) and a.dtype == np.float64 and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, simulate_bold(c.sc, p, seed=3, **SIM))
    assert not np.array_equal(a, simulate_bold(c.sc, p, seed=4, **SIM))
    assert not np.array_equal(a, simulate_bold(c.sc, p, seed=3, stream=1, **SIM))
    # the SC is normalised to max 0.2 first: 4x the SC (exact in floating point) gives the same BOLD,
    # and the SC pre-scaled by hand with norm "none" too
    np.testing.assert_array_equal(a, simulate_bold(4.0 * c.sc, p, seed=3, **SIM))
    np.testing.assert_array_equal(a, simulate_bold(0.2 * c.sc, p, seed=3, norm="none", norm_value=None, **SIM))
    assert not np.array_equal(a, simulate_bold(c.sc, p, seed=3, norm_value=0.1, **SIM))


def test_simulate_bold_errors_name_the_subject():
    c = edr_connectome(12, 1)
    with pytest.raises(ValueError, match=r"^sub-9: the simulation diverged at params \{'G': 10000.0\}"):
        simulate_bold(c.sc, {"G": 1e4}, seed=1, model="hopf", name="sub-9", **SIM)
    with pytest.raises(ValueError, match=r"^simulate_bold: unknown parameter\(s\) \['g'\]"):
        simulate_bold(c.sc, {"g": 1.0}, seed=1, **SIM)
    with pytest.raises(ValueError, match="^simulate_bold: SC must be a square"):
        simulate_bold(np.ones((3, 4)), {}, seed=1, **SIM)


# -- make_cohort --------------------------------------------------------------------------------
EDR = edr_connectome(12, 0)
EFFECTS = {"G": (2.0, -0.006)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """4 subjects alternating between an EDR connectome (12 regions) and the first 16 regions of a
    bundled HCP subject (no centres), 2 runs, 10% censored frames, jittered SCs."""
    hcp = load_subject("hcp/101309")
    sub = rio.Connectivity(sc=hcp.sc[:16, :16], lengths=hcp.lengths[:16, :16], labels=hcp.labels[:16], centres=None)
    root = tmp_path_factory.mktemp("cohort")
    calls = []
    truth = make_cohort(root, 4, connectomes=[("EDR12", EDR), ("AAL2", sub)], covariate_effects=EFFECTS,
                        subject_sd={"G": 0.05}, fixed={"sigma": 0.004}, runs=2, sc_jitter=0.1,
                        censor_fraction=0.1, seed=11, progress=lambda *a: calls.append(a), **SIM)
    return root, truth, {"EDR12": EDR, "AAL2": sub}, calls


def test_cohort_writes_every_file_of_the_layout(cohort):
    root, truth, templates, calls = cohort
    expected = {"participants.tsv", "participants.json", "truth.tsv", "truth.json",
                "atlas-EDR12_dseg.tsv", "atlas-AAL2_dseg.tsv"}
    for i, atlas in enumerate(["EDR12", "AAL2", "EDR12", "AAL2"], start=1):
        s = f"sub-{i:03d}"
        expected.add(f"{s}/dwi/{s}_seg-{atlas}_connectome.csv")
        for r in (1, 2):
            expected.add(f"{s}/func/{s}_task-rest_run-{r}_seg-{atlas}_stat-mean_timeseries.tsv")
            expected.add(f"{s}/func/{s}_task-rest_run-{r}_bold.json")
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert written == expected
    assert calls == [(i, 4, f"sub-{i:03d}") for i in range(1, 5)]
    for p in root.glob("sub-*/func/*_bold.json"):
        assert json.loads(p.read_text())["RepetitionTime"] == TR


def test_participants_round_trip_without_the_truth(cohort):
    root, truth, _, _ = cohort
    part = _read_tsv(root / "participants.tsv")
    assert list(part.columns) == ["participant_id", "age", "sex", "atlas"]
    assert list(part.participant_id) == ["sub-001", "sub-002", "sub-003", "sub-004"]
    pd.testing.assert_frame_equal(part, truth[["participant_id", "age", "sex", "atlas"]])
    assert set(part.sex) <= {"F", "M"} and part.age.between(8, 80).all()
    assert set(json.loads((root / "participants.json").read_text())) == set(part.columns)
    hidden = _read_tsv(root / "truth.tsv")
    pd.testing.assert_frame_equal(hidden, truth)
    assert list(hidden.columns) == ["participant_id", "age", "sex", "atlas", "G", "sigma", "sim_seed"]
    assert (hidden.sigma == 0.004).all()
    resid = hidden.G - (2.0 - 0.006 * hidden.age)
    assert np.all(resid != 0) and np.all(np.abs(resid) < 5 * 0.05)


def test_dseg_files(cohort):
    root, _, templates, _ = cohort
    edr = _read_tsv(root / "atlas-EDR12_dseg.tsv")
    assert list(edr.columns) == ["index", "name", "x", "y", "z"]
    assert list(edr["index"]) == list(range(1, 13)) and tuple(edr.name) == EDR.labels
    np.testing.assert_array_equal(edr[["x", "y", "z"]].to_numpy(), EDR.centres)
    aal = _read_tsv(root / "atlas-AAL2_dseg.tsv")
    assert tuple(aal.name) == templates["AAL2"].labels and aal[["x", "y", "z"]].isna().all().all()
    assert "\tn/a\tn/a\tn/a" in (root / "atlas-AAL2_dseg.tsv").read_text()


def test_connectome_csv_is_upper_triangular_jittered_template(cohort):
    root, truth, templates, _ = cohort
    for row in truth.itertuples():
        upper = _read_connectome_csv(root / row.participant_id / "dwi" / f"{row.participant_id}_seg-{row.atlas}_connectome.csv")
        template = templates[row.atlas].sc
        np.testing.assert_array_equal(np.tril(upper, k=-1), 0.0)
        sc = _mirror(upper)
        np.testing.assert_allclose(np.diag(upper), 0.01 * sc.max(), rtol=1e-15)  # self-connections to drop
        on = np.triu(template, k=1) > 0
        np.testing.assert_array_equal(np.triu(sc, k=1) > 0, on)  # zeros stay zero
        logratio = np.log(sc[on] / template[on])
        assert np.all(logratio != 0) and np.all(np.abs(logratio) < 6 * 0.1)
        if row.atlas == "AAL2":  # 120 connections: the jitter's sd is 0.1
            assert np.std(logratio) == pytest.approx(0.1, rel=0.25)


def test_bold_files_equal_simulate_bold_with_censored_rows(cohort):
    root, truth, templates, _ = cohort
    n_frames = 20
    for row in truth.itertuples():
        s, atlas = row.participant_id, row.atlas
        sc = _mirror(_read_connectome_csv(root / s / "dwi" / f"{s}_seg-{atlas}_connectome.csv"))
        for r in (1, 2):
            path = root / s / "func" / f"{s}_task-rest_run-{r}_seg-{atlas}_stat-mean_timeseries.tsv"
            lines = path.read_text().splitlines()
            assert lines[0].split("\t") == list(templates[atlas].labels)
            assert len(lines) == 1 + n_frames
            cells = [ln.split("\t") for ln in lines[1:]]
            censored = [all(c == "n/a" for c in cs) for cs in cells]
            assert sum(censored) == 2  # round(0.1 * 20), whole rows only
            assert not any("n/a" in cs for cs, cen in zip(cells, censored) if not cen)
            got = _read_tsv(path)
            assert list(got.columns) == list(templates[atlas].labels)
            want = simulate_bold(sc, {"G": row.G, "sigma": row.sigma}, seed=int(row.sim_seed), stream=r - 1, **SIM)
            keep = ~np.array(censored)
            np.testing.assert_array_equal(got.to_numpy()[keep], want[keep])
            assert np.isnan(got.to_numpy()[~keep]).all()


def test_age_rule_exact_without_subject_noise_and_noise_sd(tmp_path):
    tiny = dict(tr=TR, duration=2 * TR, dt=1e-3, burn_in=0.0)
    truth = make_cohort(tmp_path / "a", 60, connectomes=[("EDR12", EDR)], covariate_effects=EFFECTS,
                        subject_sd={"G": 0.0}, fixed={"sigma": 0.004}, sc_jitter=0.0, seed=2, **tiny)
    part = _read_tsv(tmp_path / "a" / "participants.tsv")
    hidden = _read_tsv(tmp_path / "a" / "truth.tsv")
    np.testing.assert_array_equal(hidden.G, 2.0 + (-0.006) * part.age)  # exactly the rule
    np.testing.assert_array_equal(part.age, np.round(part.age, 1))
    assert part.age.min() < 20 and part.age.max() > 68 and part.age.between(8, 80).all()
    assert 15 <= (part.sex == "F").sum() <= 45
    # sc_jitter 0: the file holds the template (diagonal 1% of its max)
    upper = _read_connectome_csv(tmp_path / "a" / "sub-001" / "dwi" / "sub-001_seg-EDR12_connectome.csv")
    np.testing.assert_array_equal(_mirror(upper), EDR.sc)
    np.testing.assert_array_equal(np.diag(upper), 0.01)
    # subject noise: same ages (a subject's draws do not depend on the other settings), G = rule + N(0, 0.05)
    noisy = make_cohort(tmp_path / "b", 60, connectomes=[("EDR12", EDR)], covariate_effects=EFFECTS,
                        subject_sd={"G": 0.05}, fixed={"sigma": 0.004}, sc_jitter=0.0, seed=2, **tiny)
    np.testing.assert_array_equal(noisy.age, truth.age)
    resid = noisy.G - (2.0 - 0.006 * noisy.age)
    assert abs(resid.mean()) < 3 * 0.05 / np.sqrt(60)
    assert np.std(resid, ddof=1) == pytest.approx(0.05, rel=0.3)


def test_cohort_deterministic_per_seed(tmp_path):
    tiny = dict(tr=TR, duration=3 * TR, dt=1e-3, burn_in=0.0, connectomes=[("EDR12", EDR)], censor_fraction=0.3)
    make_cohort(tmp_path / "a", 2, seed=4, **tiny)
    make_cohort(tmp_path / "b", 2, seed=4, **tiny)
    make_cohort(tmp_path / "c", 2, seed=5, **tiny)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    f = Path("sub-001/func/sub-001_task-rest_run-1_seg-EDR12_stat-mean_timeseries.tsv")
    assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_cohort_bad_inputs(tmp_path):
    kw = dict(connectomes=[("EDR12", EDR)], tr=TR, duration=2 * TR, burn_in=0.0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ValueError, match=r"full: folder is not empty"):
        make_cohort(tmp_path / "full", 1, **kw)
    cases = [
        (dict(connectomes=[("my-atlas", EDR)]), r"^connectomes\[0\]: atlas name 'my-atlas'"),
        (dict(connectomes=[("A", EDR), ("A", EDR)]), r"^connectomes\[1\]: atlas 'A' given twice"),
        (dict(connectomes=[("A", np.triu(EDR.sc))]), r"^connectomes\[0\] \(A\): SC is not symmetric"),
        (dict(covariate_effects={"g": (1, 0)}), r"^covariate_effects: unknown parameter 'g'"),
        (dict(fixed={"G": 1.0}), r"^fixed: 'G' is also in covariate_effects"),
        (dict(subject_sd={"sigma": 0.1}), r"^subject_sd: 'sigma' is not a parameter of covariate_effects"),
        (dict(censor_fraction=1.0), r"^censor_fraction:"),
        (dict(age_range=(50, 10)), r"^age_range:"),
    ]
    for extra, msg in cases:
        with pytest.raises(ValueError, match=msg):
            make_cohort(tmp_path / "new", 1, **{**kw, **extra})
    with pytest.raises(ValueError, match=r"^subject sub-001 run 1: the simulation diverged"):
        make_cohort(tmp_path / "div", 1, model="hopf", covariate_effects={"G": (1e4, 0.0)}, subject_sd={},
                    fixed={}, **kw)


# -- the loaders read the cohort back (raybrain.data.io, written by another helper) -------------
def _loaders():
    names = ("load_connectome", "load_timeseries", "load_atlas")
    if not all(hasattr(rio, n) for n in names):
        pytest.skip("raybrain.data.io has no load_connectome/load_timeseries/load_atlas yet")
    return (getattr(rio, n) for n in names)


def test_loaders_read_the_cohort(cohort):
    load_connectome, load_timeseries, load_atlas = _loaders()
    root, truth, templates, _ = cohort
    labels, centres = load_atlas(root / "atlas-EDR12_dseg.tsv")
    assert tuple(labels) == EDR.labels
    np.testing.assert_allclose(centres, EDR.centres, rtol=0, atol=1e-12)
    for row in truth.itertuples():
        s, atlas = row.participant_id, row.atlas
        path = root / s / "dwi" / f"{s}_seg-{atlas}_connectome.csv"
        con = load_connectome(path)
        np.testing.assert_allclose(con.sc, _mirror(_read_connectome_csv(path)), rtol=1e-15, atol=0)
        np.testing.assert_array_equal(np.diag(con.sc), 0.0)
        ts = root / s / "func" / f"{s}_task-rest_run-1_seg-{atlas}_stat-mean_timeseries.tsv"
        bold, lab, _ = load_timeseries(ts, na="drop-frames")
        assert tuple(lab) == templates[atlas].labels
        want = simulate_bold(con.sc, {"G": row.G, "sigma": row.sigma}, seed=int(row.sim_seed), **SIM)
        kept = ~np.isnan(_read_tsv(ts).to_numpy()).all(axis=1)
        np.testing.assert_allclose(bold, want[kept], rtol=1e-14, atol=0)
        with pytest.raises(ValueError):
            load_timeseries(ts)  # n/a frames are an error by default


def test_loader_reads_an_atlas_without_centres(cohort):
    """A template without centres (bundled data) has x, y, z written as BIDS "n/a": no centres."""
    _, _, load_atlas = _loaders()
    root, _, templates, _ = cohort
    labels, centres = load_atlas(root / "atlas-AAL2_dseg.tsv")
    assert tuple(labels) == templates["AAL2"].labels and centres is None
