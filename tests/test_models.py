"""Tests of raybrain.models: rWW transfer function, analytic FIC (Deco 2014 / Demirtas 2019),
Hopf normal form, parameter handling.

Known answers are computed here independently of the package (naive formulas, scipy root
finding) and compared with what the model code and the integrator produce.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.signal import hilbert

from raybrain.data import list_subjects, load_subject
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.models import broadcast_param, get_model
from raybrain.models.rww import fic_w_IE, phi, transfer

# Deco 2014 constants, restated (science.md §1)
A_E, B_E, D_E = 310.0, 125.0, 0.16
A_I, B_I, D_I = 615.0, 177.0, 0.087
TAU_E, TAU_I, GAMMA = 0.1, 0.01, 0.641
W_E, W_I, I0, J = 1.0, 0.7, 0.382, 0.15


def H_naive(x, a, b, d):
    """The textbook transfer function (fine away from a x = b)."""
    y = a * x - b
    return y / (1.0 - np.exp(-d * y))


def fic_fixed_point(w_EI):
    """(I_E*, r_E*, S_E*, I_I*, S_I*) from the published recipe, with scipy's brentq."""
    I_Es = B_E / A_E - 0.026
    r_Es = H_naive(I_Es, A_E, B_E, D_E)
    x = TAU_E * GAMMA * r_Es
    S_Es = x / (1.0 + x)
    K = W_I * I0 + w_EI * J * S_Es
    I_Is = brentq(lambda i: i - K + TAU_I * H_naive(i, A_I, B_I, D_I), K - 1.0, K, xtol=1e-15, rtol=1e-15)
    S_Is = TAU_I * H_naive(I_Is, A_I, B_I, D_I)
    return I_Es, r_Es, S_Es, I_Is, S_Is


@pytest.fixture(scope="module")
def sc_hcp():
    sc = np.asarray(load_subject(list_subjects()[0]).sc, dtype=np.float64)
    return sc / sc.max() * 0.02


# -- transfer function ---------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,d", [(A_E, B_E, D_E), (A_I, B_I, D_I)])
def test_transfer_removable_singularity(a, b, d):
    x0 = b / a
    # exactly at the threshold: the limit 1/d, finite
    h0 = transfer(np.float64(x0), a, b, d)
    assert np.isfinite(h0)
    assert h0 == pytest.approx(1.0 / d, rel=1e-12)
    # continuity through the threshold: a dense grid of tiny offsets on both sides
    eps = np.concatenate([-np.logspace(-16, -3, 200), [0.0], np.logspace(-16, -3, 200)])
    h = transfer(x0 + eps, a, b, d)
    assert np.all(np.isfinite(h))
    # H is smooth with H'(x0) = a/2 (series z/2): values within a*|eps| of 1/d
    assert np.all(np.abs(h - 1.0 / d) <= a * np.abs(eps) + 1e-9)
    # monotone increasing across the guard (a step at |z| = 1e-6 would break this)
    order = np.argsort(eps)
    assert np.all(np.diff(h[order]) >= -1e-12)


@pytest.mark.parametrize("a,b,d", [(A_E, B_E, D_E), (A_I, B_I, D_I)])
def test_transfer_matches_naive_formula(a, b, d):
    x = np.linspace(0.0, 1.0, 2001)
    x = x[np.abs(a * x - b) > 1e-3]
    np.testing.assert_allclose(transfer(x, a, b, d), H_naive(x, a, b, d), rtol=1e-10, atol=1e-300)
    # large negative drive: rate -> 0 (not NaN), large positive: ~ a x - b
    assert transfer(np.float64(-10.0), a, b, d) >= 0.0
    assert transfer(np.float64(10.0), a, b, d) == pytest.approx(a * 10.0 - b, rel=1e-12)


def test_phi_series_and_exact_agree_at_guard():
    # near the guard |z| = 1e-6 both branches must agree with the high-precision value
    z = np.array([-2e-6, -1e-6, -0.999e-6, 0.999e-6, 1e-6, 2e-6, 1e-3, -1e-3, 0.3, 5.0, -5.0, 40.0, -40.0])
    ref = np.array([float(_phi_mp(v)) for v in z])
    np.testing.assert_allclose(phi(z), ref, rtol=1e-13)


def _phi_mp(z):
    """phi(z) = z / (1 - exp(-z)) by a long Taylor series in Python floats for |z| small
    (Bernoulli-number expansion), else the plain formula."""
    if abs(z) < 1e-2:
        # z/(1-e^{-z}) = sum B_n^+ z^n / n!  : 1 + z/2 + z^2/12 - z^4/720 + z^6/30240
        return 1.0 + z / 2 + z ** 2 / 12 - z ** 4 / 720 + z ** 6 / 30240
    return z / (1.0 - np.exp(-z))


# -- analytic FIC --------------------------------------------------------------------------------

def test_fic_w_IE_solves_its_equations(sc_hcp):
    model = get_model("rww")
    N = sc_hcp.shape[0]
    B = 3
    rng = np.random.default_rng(5)
    w_EE = rng.uniform(1.0, 2.0, (B, N))
    w_EI = rng.uniform(1.0, 3.0, (B, N))
    G = np.array([[0.0], [1.0], [2.5]])
    p = model.params(G=G, w_EE=w_EE, w_EI=w_EI)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}
    row = sc_hcp.sum(axis=1)[None, :]
    w_IE = fic_w_IE(p, row)
    assert w_IE.shape == (B, N)
    I_Es, r_Es, S_Es, _, _ = fic_fixed_point(1.0)
    # the inhibitory current solving I_I = W_I I0 + w_EI J S_E* - tau_I H_I(I_I), from w_IE back:
    # at the fixed point, S_I* = (W_E I0 + w_EE J S_E* + G J S_E* k - I_E*) / w_IE
    S_Is = (W_E * I0 + w_EE * J * S_Es + G * J * S_Es * row - I_Es) / w_IE
    I_Is = W_I * I0 + w_EI * J * S_Es - S_Is
    # S_I* = tau_I H_I(I_I*) and the I_I equation hold to ~1e-12
    resid_S = S_Is - TAU_I * H_naive(I_Is, A_I, B_I, D_I)
    assert np.abs(resid_S).max() < 1e-12
    # and the drift of the model vanishes there (both populations), coupling from the SC
    S_E = np.full((B, N), S_Es)
    drift = model.drift((S_E, S_Is), {**p, "w_IE": w_IE}, (S_E @ sc_hcp.T,))
    assert np.abs(drift[0]).max() < 1e-10 * (S_Es / TAU_E)
    assert np.abs(drift[1]).max() < 1e-10 * (S_Is.max() / TAU_I)
    # cross-check one region against scipy's root
    _, _, _, _, S_Is_ref = fic_fixed_point(w_EI[1, 7])
    assert S_Is[1, 7] == pytest.approx(S_Is_ref, rel=1e-12)


def test_fic_target_constants():
    I_Es, r_Es, S_Es, _, _ = fic_fixed_point(1.0)
    assert I_Es == pytest.approx(0.3772260, abs=1e-6)
    assert r_Es == pytest.approx(3.06, abs=0.01)
    # the package's prepare() fills w_IE; fic=False leaves the default 1.0
    m_off = get_model("rww", fic=False)
    p = m_off.prepare(m_off.params(), np.ones((1, 4)))
    assert p["w_IE"] == 1.0


def test_fic_fixed_point_is_reached_in_simulation(sc_hcp):
    """sigma = 0, array path, float64: from a perturbed start every region's I_E settles at
    I_E* = b_E/a_E - 0.026 nA and r_E at H_E(I_E*) ≈ 3.06 Hz (Deco 2014), for several
    (G, w_EE, w_EI) including regional w_EE and a real connectome."""
    N = sc_hcp.shape[0]
    rng = np.random.default_rng(1)
    G = np.array([0.0, 1.0, 2.0, 0.5])
    w_EE = np.stack([np.full(N, 1.4), np.full(N, 1.4), np.full(N, 1.8), rng.uniform(1.1, 1.7, N)])
    w_EI = np.array([1.0, 1.0, 1.5, 2.0])
    B = len(G)
    I_Es, r_Es, S_Es, _, _ = fic_fixed_point(1.0)
    S_Is = np.array([fic_fixed_point(w)[4] for w in w_EI])
    settings = SimulationSettings(duration=2.0, burn_in=0.0, dt=1e-4, tr=0.5, dtype="float64", hemodynamics="none",
                                  fused="never")
    sim = Simulation("rww", sc_hcp, dict(G=G, w_EE=w_EE, w_EI=w_EI, sigma=0.0), settings)
    # independent w_IE (Demirtas 2019 closed form)
    w_IE = (W_E * I0 + w_EE * J * S_Es + G[:, None] * J * S_Es * sc_hcp.sum(1)[None] - I_Es) / S_Is[:, None]
    np.testing.assert_allclose(sim.params_host["w_IE"], w_IE, rtol=1e-12)
    # start 5 % away from the fixed point
    SE0 = S_Es * (1 + 0.05 * rng.standard_normal((B, N)))
    SI0 = S_Is[:, None] * (1 + 0.05 * rng.standard_normal((B, N)))
    sim.state.neural = (SE0, SI0)
    res = sim.run()
    assert not res.diverged.any()
    SE, SI = sim.state.neural
    obs = sim.model.observables((SE, SI), sim.params, (SE @ sc_hcp.T,))
    np.testing.assert_allclose(obs["I_E"], I_Es, atol=1e-6)
    np.testing.assert_allclose(obs["I_E"], 0.3772260, atol=1e-6)
    np.testing.assert_allclose(obs["r_E"], r_Es, rtol=1e-4)  # dH_E/dI ≈ 300 Hz/nA
    np.testing.assert_allclose(SE, S_Es, rtol=1e-5)
    np.testing.assert_allclose(SI, np.broadcast_to(S_Is[:, None], (B, N)), rtol=1e-5)
    # time-averaged rate over the whole (transient included) run is already close to 3.06 Hz
    assert np.all(np.abs(res.means["r_E"] - 3.06) < 0.1)
    # recorded samples (S_E at each TR) approach S_E* monotonically in the max norm
    err = np.abs(res.bold - S_Es).max(axis=(0, 2))
    assert np.all(np.diff(err) < 0)


# -- Hopf ----------------------------------------------------------------------------------------

def _hopf_run(a, omega, duration=120.0):
    settings = SimulationSettings(duration=duration, burn_in=0.0, dt=0.01, tr=0.1, bold_dt=0.01, hemodynamics="none",
                                  dtype="float64")
    N = 3
    sc = np.ones((N, N)) - np.eye(N)
    return Simulation("hopf", sc, dict(G=0.0, sigma=0.0, a=a, omega=omega), settings)


def test_hopf_limit_cycle_amplitude_and_frequency():
    a = np.array([0.25, 0.04])
    f_hz = np.array([[0.1, 0.2, 0.05]])  # per region
    omega = 2 * np.pi * np.broadcast_to(f_hz, (2, 3))
    sim = _hopf_run(a, omega)
    res = sim.run()
    x = res.bold  # (B, T, N): x sampled every 0.1 s
    assert x.shape == (2, 1200, 3)
    x_end, y_end = sim.state.neural
    amp = np.sqrt(x_end ** 2 + y_end ** 2)
    # forward Euler's limit cycle: (1 + dt (a - r^2))^2 + (omega dt)^2 = 1, i.e.
    # r^2 = a + (1 - sqrt(1 - omega^2 dt^2)) / dt  (≈ a + omega^2 dt / 2)
    dt = 0.01
    r_euler = np.sqrt(a[:, None] + (1 - np.sqrt(1 - (omega * dt) ** 2)) / dt)
    np.testing.assert_allclose(amp, r_euler, rtol=1e-4)  # a=0.04 converges like exp(-2at)
    np.testing.assert_allclose(amp, np.broadcast_to(np.sqrt(a)[:, None], amp.shape), rtol=0.1)
    # the sampled x swings between ±r
    np.testing.assert_allclose(np.abs(x[:, -200:]).max(axis=1), r_euler, rtol=1e-2)
    # frequency from the phase of the analytic signal of the sampled x (last 60 s)
    tail = x[:, 600:, :]
    t = np.arange(tail.shape[1]) * 0.1
    phase = np.unwrap(np.angle(hilbert(tail, axis=1)), axis=1)[:, 50:-50]  # drop edge effects
    slope = np.array([[np.polyfit(t[50:-50], phase[b, :, n], 1)[0] for n in range(3)] for b in range(2)])
    np.testing.assert_allclose(slope, omega, rtol=1e-2)


def test_hopf_subcritical_decays():
    sim = _hopf_run(-0.2, 2 * np.pi * 0.1, duration=60.0)
    res = sim.run()
    x_end, y_end = sim.state.neural
    r0 = np.hypot(0.1, 0.1)
    # |z| decays like r0 exp(a t) (plus the tiny Euler factor)
    assert np.all(np.hypot(x_end, y_end) < r0 * np.exp(-0.2 * 60.0) * 1.5)
    assert np.all(np.hypot(x_end, y_end) > 0)
    assert np.abs(res.bold[:, -1]).max() < 1e-5


# -- parameters ----------------------------------------------------------------------------------

def test_unknown_parameter_suggests():
    with pytest.raises(ValueError, match=r"'sigam'.*did you mean 'sigma'"):
        get_model("rww").params(sigam=1.0)
    with pytest.raises(ValueError, match=r"'w_EEE'.*did you mean 'w_EE'"):
        get_model("rww").params(w_EEE=1.0)
    with pytest.raises(ValueError, match=r"'omgea'.*did you mean 'omega'"):
        get_model("hopf").params(omgea=1.0)
    with pytest.raises(ValueError, match="did you mean 'rww'"):
        get_model("rwww")


def test_unknown_parameter_suggests_case_insensitive():
    with pytest.raises(ValueError, match=r"did you mean 'w_EE'"):
        get_model("rww").params(w_ee=1.0)


def test_broadcast_param_shapes_and_errors():
    assert broadcast_param("G", 2.0, 3, 5).shape == (1, 1)
    assert broadcast_param("G", [1, 2, 3], 3, 5).shape == (3, 1)
    assert broadcast_param("w_EE", np.ones(5), 3, 5).shape == (1, 5)
    assert broadcast_param("w_EE", np.ones((3, 5)), 3, 5).shape == (3, 5)
    with pytest.raises(ValueError, match="'w_EE'.*ambiguous"):
        broadcast_param("w_EE", np.ones(4), 4, 4)
    with pytest.raises(ValueError, match="'w_EE'.*length 7"):
        broadcast_param("w_EE", np.ones(7), 3, 5)
    with pytest.raises(ValueError, match=r"'w_EE'.*\(2, 5\)"):
        broadcast_param("w_EE", np.ones((2, 5)), 3, 5)
