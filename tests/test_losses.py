"""Tests for raybrain.losses: known answers and independent numpy/scipy computations."""
import numpy as np
import pytest
from scipy.stats import ks_2samp

from raybrain import features as F
from raybrain import losses as L

T, N, WIN, STEP = 120, 8, 20, 2


def _bold(seed, B=None, T=T, N=N):
    rng = np.random.default_rng(seed)
    shape = (T, N) if B is None else (B, T, N)
    shared = rng.standard_normal(shape[:-1] + (1,))
    x = 0.5 * shared + rng.standard_normal(shape)
    return np.cumsum(x, axis=-2) * 0.2 + x  # some slow drift so windows differ


def _all_finite(res):
    arrays = [res.total, *res.components.values()]
    return all(np.all(np.isfinite(a)) for a in arrays)


@pytest.fixture(scope="module")
def emp():
    return _bold(0)


@pytest.fixture(scope="module")
def target(emp):
    return L.Target.from_bold(emp, window=WIN, step=STEP)


@pytest.mark.parametrize("name", ["pfic", "pmfm", "fc_corr"])
def test_identical_bold_costs_zero(name, emp, target):
    res = L.get_loss(name)(emp[None], target)
    assert res.total.shape == (1,)
    assert res.valid[0]
    assert res.total[0] == pytest.approx(0.0, abs=1e-12)
    assert res.components["fc_corr"][0] == pytest.approx(1.0, abs=1e-12)
    if "fcd_ks" in res.components:
        assert res.components["fcd_ks"][0] == 0.0


def test_pfic_matches_independent_computation(emp, target):
    sims = _bold(1, B=3)
    res = L.PFICLoss()(sims, target)
    iu = np.triu_indices(N, 1)
    fe = np.corrcoef(emp.T)[iu]
    for b in range(3):
        fs = np.corrcoef(sims[b].T)[iu]
        r = np.corrcoef(fs, fe)[0, 1]
        mean_diff = abs(fs.mean() - fe.mean())
        W = (T - WIN) // STEP + 1
        ks = ks_2samp(F.fcd(sims[b], WIN, STEP)[np.triu_indices(W, 1)], target.fcd_dist).statistic
        assert res.components["fc_corr"][b] == pytest.approx(r, abs=1e-12)
        assert res.components["fc_corr_cost"][b] == pytest.approx(1 - r, abs=1e-12)
        assert res.components["fc_mean_diff"][b] == pytest.approx(mean_diff, abs=1e-12)
        assert res.components["fcd_ks"][b] == pytest.approx(ks, abs=1e-12)
        assert res.total[b] == pytest.approx(1 - r + mean_diff + ks, abs=1e-12)
    assert res.valid.all()


def test_pfic_known_perturbation_offset_fc():
    """Empirical FC = simulated FC + c off the diagonal: r = 1, mean diff = c, KS = 0."""
    sim = _bold(2)
    fc_sim = F.fc(sim)
    c = 0.05
    fc_emp = fc_sim + c * (1 - np.eye(N))
    tgt = L.Target.from_features(fc_emp, F.fcd_distribution(sim, WIN, STEP), window=WIN, step=STEP)
    res = L.get_loss("pfic")(sim[None], tgt)
    assert res.components["fc_corr"][0] == pytest.approx(1.0, abs=1e-12)
    assert res.components["fc_mean_diff"][0] == pytest.approx(c, abs=1e-12)
    assert res.components["fcd_ks"][0] == 0.0
    assert res.total[0] == pytest.approx(c, abs=1e-12)
    # the FC-correlation loss is blind to the offset
    assert L.get_loss("fc_corr")(sim[None], tgt).total[0] == pytest.approx(0.0, abs=1e-12)


def test_pmfm_affine_in_fisher_z_gives_zero_fc_cost():
    """pMFM compares arctanh FCs: an affine change of z leaves r = 1 (but not for pFIC)."""
    sim = _bold(3)
    fc_sim = F.fc(sim)
    z = np.arctanh(np.clip(fc_sim, -0.999999, 0.999999))
    fc_emp = np.tanh(0.5 * z + 0.2)
    np.fill_diagonal(fc_emp, 1.0)
    dist = F.fcd_distribution(sim, WIN, STEP)
    tgt = L.Target.from_features(fc_emp, dist, window=WIN, step=STEP)
    res = L.get_loss("pmfm")(sim[None], tgt)
    assert res.components["fc_corr"][0] == pytest.approx(1.0, abs=1e-9)
    assert res.total[0] == pytest.approx(0.0, abs=1e-9)
    assert L.get_loss("pfic")(sim[None], tgt).components["fc_corr"][0] < 1 - 1e-4


@pytest.mark.parametrize("name", ["pfic", "pmfm", "fc_corr"])
def test_invalid_candidates_get_worst_and_never_nan(name, target):
    sims = _bold(4, B=4)
    sims[1, 10, 3] = np.nan
    sims[2, :, 5] = 1.5  # constant region: FC undefined
    loss = L.get_loss(name)
    res = loss(sims, target, valid=np.array([True, True, True, False]))
    assert _all_finite(res)
    np.testing.assert_array_equal(res.valid, [True, False, False, False])
    assert np.all(res.total[1:] == loss.worst)
    for c in loss.components:
        assert np.all(res.components[c][1:] == loss.component_worst[c])
    # the valid candidate is unaffected by its neighbours
    alone = loss(sims[:1], target)
    assert res.total[0] == pytest.approx(alone.total[0], abs=1e-12)
    assert 0 <= res.total[0] < loss.worst
    assert loss.worst == (2.0 if name == "fc_corr" else 10.0)


def test_all_nan_batch(target):
    res = L.PFICLoss(worst=5.0)(np.full((2, T, N), np.nan), target)
    assert _all_finite(res)
    assert not res.valid.any()
    np.testing.assert_array_equal(res.total, [5.0, 5.0])


def test_float32_input_matches_float64(target):
    sims = _bold(5, B=2)
    r64 = L.PFICLoss()(sims, target)
    r32 = L.PFICLoss()(sims.astype(np.float32), target)
    assert r32.valid.all()
    np.testing.assert_allclose(r32.total, r64.total, atol=2e-3)  # KS moves in steps of 1/M
    np.testing.assert_allclose(r32.components["fc_corr"], r64.components["fc_corr"], atol=1e-6)


@pytest.mark.parametrize("name", ["pfic", "pmfm"])
def test_slicing_gives_same_results(name, target):
    sims = _bold(6, B=5)
    sims[3, 0, 0] = np.inf
    whole = L.get_loss(name, slice_size=5)(sims, target)
    one = L.get_loss(name, slice_size=1)(sims, target)
    auto_tiny_budget = L.get_loss(name, memory_budget=1)(sims, target)  # forces slices of 1
    for other in (one, auto_tiny_budget):
        np.testing.assert_allclose(other.total, whole.total, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(other.valid, whole.valid)
        for c in whole.components:
            np.testing.assert_allclose(other.components[c], whole.components[c], rtol=0, atol=1e-13)
    assert not whole.valid[3]


def test_auto_slice_bounds_memory_for_hcp_sized_batch():
    """T = 1200 TRs, N = 80, window 83: one candidate's FCD working set is over 100 MB (W^2 FCD,
    W x N(N-1)/2 window FCs, T x N(N-1)/2 running sums), so the default 512 MiB budget evaluates
    only one or two candidates at a time."""
    fc = np.eye(80) * 0.5 + 0.5
    tgt = L.Target.from_features(fc, np.linspace(-1, 1, 10), window=83, step=1)
    loss = L.PFICLoss()
    per = loss._per_candidate_bytes(1200, 80, tgt, 8)
    W, M = 1118, 80 * 79 // 2
    assert per > 8 * (W * W + W * M + 1200 * M)
    s = loss._slice(1200, 80, tgt, 8)
    assert 1 <= s <= 2 and s * per <= loss.memory_budget
    assert L.FCCorrLoss()._slice(1200, 80, L.Target.from_features(fc), 8) > 1


def test_memory_estimate_bounds_measured_peak(target):
    """The slice-size estimate must bound what a loss call really allocates (NumPy reports its
    buffers to tracemalloc)."""
    import tracemalloc

    sims = _bold(10, B=4)
    loss = L.PFICLoss(slice_size=4)
    loss(sims, target)  # warm caches / lazy imports outside the measurement
    tracemalloc.start()
    try:
        loss(sims, target)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    est = 4 * loss._per_candidate_bytes(T, N, target, 8)
    assert peak <= est


def test_fc_corr_works_without_fcd_and_fcd_losses_refuse(emp):
    tgt = L.Target.from_bold(emp, window=None)
    assert tgt.fcd_dist is None
    sims = _bold(7, B=2)
    res = L.get_loss("fc_corr")(sims, tgt)
    iu = np.triu_indices(N, 1)
    for b in range(2):
        r = np.corrcoef(np.corrcoef(sims[b].T)[iu], np.corrcoef(emp.T)[iu])[0, 1]
        assert res.total[b] == pytest.approx(1 - r, abs=1e-12)
    for name in ("pfic", "pmfm"):
        with pytest.raises(ValueError, match="fcd_dist"):
            L.get_loss(name)(sims, tgt)


def test_as_records(target):
    sims = _bold(8, B=3)
    sims[2] = np.nan
    res = L.PFICLoss()(sims, target)
    recs = res.as_records()
    assert len(recs) == 3
    assert set(recs[0]) == {"loss", "fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks", "valid"}
    assert recs[2] == {"loss": 10.0, "fc_corr": -1.0, "fc_corr_cost": 2.0, "fc_mean_diff": 2.0,
                       "fcd_ks": 1.0, "valid": False}
    assert recs[0]["loss"] == pytest.approx(float(res.total[0]))
    assert isinstance(recs[0]["valid"], bool) and isinstance(recs[0]["loss"], float)


def test_get_loss_registry_and_suggestion():
    assert isinstance(L.get_loss("pfic"), L.PFICLoss)
    assert set(L.LOSSES) == {"pfic", "pmfm", "fc_corr", "spectral"}
    with pytest.raises(ValueError, match="did you mean 'pfic'"):
        L.get_loss("pfci")


def test_bad_inputs_raise(target, emp):
    loss = L.PFICLoss()
    with pytest.raises(ValueError, match="bold"):
        loss(emp, target)  # missing batch axis
    with pytest.raises(ValueError, match="regions"):
        loss(_bold(9, B=1, N=N + 1), target)
    with pytest.raises(ValueError, match="window"):
        loss(_bold(9, B=1, T=WIN - 1), target)
    with pytest.raises(ValueError, match="valid"):
        loss(_bold(9, B=2), target, valid=np.ones(3, bool))
    with pytest.raises(ValueError, match="Target.fc"):
        L.Target.from_features(np.ones((3, 4)))
    with pytest.raises(ValueError, match="window"):
        L.Target.from_bold(emp, window=T + 1)
    with pytest.raises(ValueError, match="step"):
        L.Target.from_features(np.eye(4), np.zeros(5), window=10, step=0)
    const = emp.copy()
    const[:, 0] = 3.0
    with pytest.raises(ValueError, match="constant"):
        L.Target.from_bold(const)


def test_target_sorts_fcd_dist():
    d = np.array([0.3, -0.2, 0.9, 0.1])
    tgt = L.Target.from_features(np.eye(4), d, window=10, step=1)
    np.testing.assert_array_equal(tgt.fcd_dist, np.sort(d))
