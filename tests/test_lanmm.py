"""LaNMM (raybrain.models.lanmm) and spectral features/losses (raybrain.spectral): known answers."""
from __future__ import annotations

import numpy as np
import pytest

from raybrain.integrate import Simulation, SimulationSettings
from raybrain.losses import CompositeLoss, FCCorrLoss, SpectralLoss, Target
from raybrain.models import get_model
from raybrain.models.lanmm import LaNMM
from raybrain.spectral import ALPHA, GAMMA, SpectralTarget, band_power, peak_frequency, welch

FS = 1000.0  # output sampled every bold_dt = 1 ms


def _settings(duration, burn_in=0.5, seed=3):
    return SimulationSettings(duration=duration, dt=1e-4, burn_in=burn_in, tr=1e-3, bold_dt=1e-3,
                              hemodynamics="none", dtype="float64", seed=seed)


@pytest.fixture(scope="module")
def single_node():
    """One isolated node, default vs PV→P2 halved (B=2), P1 and P2 outputs with the same noise."""
    params = {"C_P2_PV": np.array([200.0, 100.0])}
    out = {}
    for which in ("P1", "P2"):
        res = Simulation(LaNMM(output=which), np.zeros((1, 1)), params, _settings(2.0)).run()
        assert not np.asarray(res.diverged).any()
        out[which] = (np.asarray(res.bold), res.means)
    return out


def test_registered_and_described():
    m = get_model("lanmm", output="P2")
    assert isinstance(m, LaNMM) and m.default_hemodynamics == "none"
    assert get_model("lanmm", output="eeg").default_hemodynamics == "none"
    assert get_model("lanmm", output="rate").default_hemodynamics == "balloon"
    assert m.bold_variant().output == "rate"
    assert "C_P2_PV" in m.parameter_names and m.describe().startswith("lanmm:")
    with pytest.raises(ValueError, match="output"):
        LaNMM(output="lfp")


def test_single_node_alpha_in_P1_gamma_in_P2(single_node):
    # measured (2 s, 1 Hz resolution): P1 alpha peak 11 Hz, P2 gamma peak ≈ 46 Hz;
    # published: alpha ≈ 10 Hz (8–12) in the deep generator, gamma ≈ 40 Hz (30–50) superficial
    f, p1 = welch(single_node["P1"][0][:1], FS, 1000)
    f, p2 = welch(single_node["P2"][0][:1], FS, 1000)
    fa = float(peak_frequency(f, p1, (4.0, 20.0))[0, 0])
    fg = float(peak_frequency(f, p2, (25.0, 100.0))[0, 0])
    assert 8.0 <= fa <= 12.0, fa
    assert 30.0 <= fg <= 55.0, fg
    # each generator dominates its own layer's signal
    assert band_power(f, p1, ALPHA)[0, 0] > 10 * band_power(f, p1, GAMMA)[0, 0]
    assert band_power(f, p2, GAMMA)[0, 0] > band_power(f, p2, ALPHA)[0, 0]


def test_reduced_pv_disinhibits_P2(single_node):
    # Aβ-impaired PV (weaker PV→P2): P2 fires more (the early hyperactivity of the AD studies)
    r = np.asarray(single_node["P2"][1]["r_P2"])[:, 0]
    assert r[1] > 1.1 * r[0], r


@pytest.mark.xfail(strict=True, reason="at these (unverified) defaults halving PV→P2 lowers gamma power "
                   "(measured ≈0.45 → ≈0.1 mV²); the LaNMM AD study reports higher gamma with early PV "
                   "dysfunction: the operating point must be checked against the published table")
def test_reduced_pv_raises_gamma_power(single_node):
    f, p2 = welch(single_node["P2"][0], FS, 1000)
    g = band_power(f, p2, GAMMA)[:, 0]
    assert g[1] > g[0]


def test_eeg_output_is_the_sum_of_the_pyramidal_potentials():
    """output="eeg" samples v_EEG, integrated from the sum of the derivatives of v_P1 and v_P2:
    the same trajectory as v_P1 + v_P2 (same noise), to rounding."""
    sc = np.array([[0.0, 1.0], [0.5, 0.0]])
    s = _settings(0.3, burn_in=0.0)
    params = {"G": np.array([[0.0], [10.0]]), "C_P2_PV": np.array([[200.0], [120.0]])}
    out = {w: np.asarray(Simulation(LaNMM(output=w), sc, params, s).run().bold) for w in ("P1", "P2", "eeg")}
    assert np.abs(out["P2"]).max() > 1.0  # not trivially zero
    np.testing.assert_allclose(out["eeg"], out["P1"] + out["P2"], rtol=0, atol=1e-9)


def test_batch_independence():
    """B=3 equals three B=1 runs with the same noise streams (and per-candidate parameters)."""
    sc = np.array([[0.0, 1.0], [0.5, 0.0]])
    params = {"G": np.array([0.0, 5.0, 10.0]), "C_P2_PV": np.array([200.0, 150.0, 100.0])}
    s = _settings(0.05, burn_in=0.0)
    full = np.asarray(Simulation(LaNMM(output="P2"), sc, params, s).run().bold)
    for b in range(3):
        one = Simulation(LaNMM(output="P2"), sc, {k: v[b] for k, v in params.items()}, s,
                         streams=np.array([b])).run().bold
        np.testing.assert_allclose(full[b], np.asarray(one)[0], rtol=1e-12, atol=1e-12)


def test_coupling_drives_the_other_node():
    sc = np.array([[0.0, 1.0], [1.0, 0.0]])
    s = _settings(0.05, burn_in=0.0)
    a = np.asarray(Simulation(LaNMM(), sc, {"G": np.array([[0.0], [20.0]])}, s).run().bold)
    assert np.all(np.isfinite(a)) and not np.allclose(a[0], a[1])


def test_spectral_features_recover_a_sinusoid():
    rng = np.random.default_rng(0)
    t = np.arange(4000) / FS
    freqs_true = [(10.3, 41.7), (9.0, 60.2)]
    x = np.stack([np.stack([np.sin(2 * np.pi * fa * t) + 0.5 * np.sin(2 * np.pi * fg * t)
                            for fa, fg in freqs_true], axis=1)])  # (1, T, 2)
    x = x + 0.5 * rng.standard_normal(x.shape)
    f, p = welch(x, FS, 1000)
    res = f[1] - f[0]  # 1 Hz
    fa = peak_frequency(f, p, ALPHA)[0]
    fg = peak_frequency(f, p, GAMMA)[0]
    for i, (ta, tg) in enumerate(freqs_true):
        assert abs(fa[i] - ta) <= res and abs(fg[i] - tg) <= res
    # Parseval: total power ≈ variance (1/2 + 1/8 + 1/4)
    total = band_power(f, p, (0.0, FS / 2))[0]
    np.testing.assert_allclose(total, 0.875, rtol=0.1)
    # agrees with scipy's Welch (same window, overlap, detrending, scaling)
    sig = pytest.importorskip("scipy.signal")
    f2, p2 = sig.welch(x[0, :, 0], fs=FS, nperseg=1000)
    np.testing.assert_allclose(f, f2)
    np.testing.assert_allclose(p[0, :, 0], p2, rtol=1e-10, atol=1e-14)


def test_spectral_loss_zero_identical_worst_for_nan():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2000, 2))
    target = SpectralTarget.from_signal(x[0], FS, 500)
    x[2, 10, 1] = np.nan
    loss = SpectralLoss()
    r = loss(x, target)
    tot = np.asarray(r.total)
    assert tot[0] == 0.0 and 0.0 < tot[1] < 1.0 and tot[2] == loss.worst == 1.0
    assert np.all(np.isfinite(tot)) and list(np.asarray(r.valid)) == [True, True, False]
    assert all(np.all(np.isfinite(v)) for v in r.components.values())
    r2 = loss(x, target, valid=np.array([True, False, True]))
    assert np.asarray(r2.total)[1] == 1.0


def test_composite_fc_plus_spectrum():
    rng = np.random.default_rng(2)
    bold = rng.standard_normal((2, 200, 4))
    lfp = rng.standard_normal((2, 2000, 4))
    fc_t = Target(fc=np.corrcoef(bold[0].T))
    sp_t = SpectralTarget.from_signal(lfp[0], FS, 500)
    loss = CompositeLoss({"fc": (FCCorrLoss(), 1.0), "psd": (SpectralLoss(), 0.5)})
    r = loss({"fc": bold, "psd": lfp}, {"fc": fc_t, "psd": sp_t})
    tot = np.asarray(r.total)
    assert abs(tot[0]) < 1e-12 and tot[1] > 0
    np.testing.assert_allclose(tot, np.asarray(r.components["fc.total"]) + 0.5 * np.asarray(r.components["psd.total"]))
    lfp[1, 0, 0] = np.inf
    r = loss({"fc": bold, "psd": lfp}, {"fc": fc_t, "psd": sp_t})
    assert np.asarray(r.total)[1] == loss.worst == 2.0 + 0.5
