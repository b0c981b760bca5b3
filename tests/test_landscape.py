"""Connectome normalisation and the FIC fixed point's stability landscape: the numerical Jacobian
against the hand-derived one, the edge of the stable G range against the sign of max Re λ and
against simulation, and the command line."""
import json

import numpy as np
import pytest

from raybrain import landscape as L
from raybrain.cli import main
from raybrain.connectome import DEFAULT_VALUES, normalise, statistic
from raybrain.data import load_subject
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.models import get_model
from raybrain.models.rww import phi
from raybrain.objective import Objective, scale_sc
from raybrain.parametrisation import Global


def _sc(n, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0.0, 1.0, (n, n)) * (rng.random((n, n)) < 0.7)
    a = np.triu(a, 1)
    return a + a.T


# -- normalise ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, value", [("max", 0.3), ("spectral", 0.49), ("strength", 0.36), ("spectral", 2.0)])
def test_normalise_sets_the_statistic(norm, value):
    sc = _sc(7)
    out = normalise(sc, norm, value)
    direct = {"max": out.max(), "spectral": np.abs(np.linalg.eigvals(out)).max(),
              "strength": out.sum() / 7}[norm]
    assert direct == pytest.approx(value, rel=1e-12)
    ratio = out[sc > 0] / sc[sc > 0]  # one factor for every weight
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-14)


def test_normalise_directed_spectral_radius_and_defaults():
    sc = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])  # directed ring: 2 × cube roots of 1
    assert statistic(sc, "spectral") == pytest.approx(2.0)
    assert np.abs(np.linalg.eigvals(normalise(sc, "spectral"))).max() == pytest.approx(DEFAULT_VALUES["spectral"])
    assert normalise(sc, "strength").sum(axis=1).mean() == pytest.approx(0.36)
    np.testing.assert_array_equal(normalise(sc, "none"), sc)
    with pytest.raises(ValueError, match="takes no value"):
        normalise(sc, "none", 1.0)
    with pytest.raises(ValueError, match="unknown SC normalisation 'l2'"):
        normalise(sc, "l2")
    with pytest.raises(ValueError, match="all-zero"):
        normalise(np.zeros((3, 3)), "spectral")


def test_max_norm_is_scale_sc_bit_for_bit():
    sc = load_subject("hcp/101309").sc
    old = np.asarray(sc, dtype=np.float64) * (0.2 / np.asarray(sc, dtype=np.float64).max())  # the former scale_sc
    np.testing.assert_array_equal(normalise(sc, "max", 0.2), old)
    np.testing.assert_array_equal(scale_sc(sc, 0.2), old)
    np.testing.assert_array_equal(scale_sc(sc, None), sc)
    with pytest.raises(ValueError, match="sc_max must be None or a finite number > 0"):
        scale_sc(sc, -1.0)


def test_objective_sc_norm():
    s = load_subject("hcp/101309")
    par = Global("rww")
    st = SimulationSettings(duration=72.0, burn_in=0.0, dt=1e-3)
    kw = dict(settings=st, window=20)
    np.testing.assert_array_equal(Objective(s, "rww", par, **kw).sc, scale_sc(s.sc, 0.2))
    assert Objective(s, "rww", par, **kw).sc_max == 0.2
    o = Objective(s, "rww", par, sc_norm="spectral", **kw)
    assert o.sc_max == 0.49 and statistic(o.sc, "spectral") == pytest.approx(0.49)
    o = Objective(s, "rww", par, sc_norm="strength", sc_max=1.5, **kw)
    assert statistic(o.sc, "strength") == pytest.approx(1.5)
    np.testing.assert_array_equal(Objective(s, "rww", par, sc_max=None, **kw).sc, s.sc)
    with pytest.raises(ValueError, match="sc_norm: unknown SC normalisation"):
        Objective(s, "rww", par, sc_norm="eig", **kw)


# -- Jacobian -----------------------------------------------------------------------------------
def _analytic_rww_jacobian(S_E, S_I, p, C):
    """Hand-derived Jacobian of Deco 2014's rWW network drift (variable-major [S_E, S_I])."""
    g = lambda k: np.asarray(p[k], dtype=np.float64).reshape(-1)  # noqa: E731
    G, wEE, wEI, wIE, J = g("G"), g("w_EE"), g("w_EI"), g("w_IE"), g("J_NMDA")
    I_E = g("W_E") * g("I0") + wEE * J * S_E + G * J * (C @ S_E) - wIE * S_I
    I_I = g("W_I") * g("I0") + wEI * J * S_E - S_I

    def H_and_slope(x, a, b, d):
        z = d * (a * x - b)
        dphi = ((1 - np.exp(-z)) - z * np.exp(-z)) / (1 - np.exp(-z)) ** 2  # phi'(z)
        return phi(z) / d, a * dphi  # H, dH/dx

    rE, hE = H_and_slope(I_E, g("a_E"), g("b_E"), g("d_E"))
    _, hI = H_and_slope(I_I, g("a_I"), g("b_I"), g("d_I"))
    gam, tE, tI = g("gamma"), g("tau_E"), g("tau_I")
    k = gam * (1 - S_E) * hE
    n = len(S_E)
    Jm = np.zeros((2 * n, 2 * n))
    Jm[:n, :n] = np.diag(-1 / tE - gam * rE + k * wEE * J) + (k * G * J)[:, None] * C
    Jm[:n, n:] = np.diag(-k * wIE)
    Jm[n:, :n] = np.diag(hI * wEI * J)
    Jm[n:, n:] = np.diag(-1 / tI - hI)
    return Jm


def test_numerical_jacobian_matches_the_analytic_one():
    rng = np.random.default_rng(3)
    C = normalise(_sc(3, seed=1), "max", 0.2)  # a symmetric 3-region network
    C[0, 2] *= 1.7  # and a directed weight, so C ≠ Cᵀ is covered
    m = get_model("rww", fic=False)
    p = {k: np.full((1, 3), v) for k, v in m.params(G=1.3).items()}
    p["w_EE"] = rng.uniform(1.2, 1.8, (1, 3))
    p["w_IE"] = rng.uniform(0.8, 1.5, (1, 3))
    S_E, S_I = rng.uniform(0.1, 0.4, 3), rng.uniform(0.02, 0.08, 3)
    num = L.jacobian(m, C, (S_E, S_I), p)
    ana = _analytic_rww_jacobian(S_E, S_I, p, C)
    assert np.abs(ana[:3, :3] - np.diag(np.diag(ana[:3, :3]))).max() > 0.1  # the coupling is present
    np.testing.assert_allclose(num, ana, rtol=1e-7, atol=1e-6 * np.abs(ana).max())


# -- the stable range ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """A 6-region network (max 0.2) and the upper edge of its FIC-stable G range."""
    sc = normalise(_sc(6, seed=4), "max", 0.2)
    return sc, L.stable_g_range("rww", sc, tol=2e-4)


def test_edge_is_where_max_real_eig_changes_sign(small):
    sc, (g_lo, g_hi) = small
    assert g_lo == 0.0 and 0.0 < g_hi < np.inf
    below, above = L.stability("rww", sc, g_hi - 2e-3), L.stability("rww", sc, g_hi + 2e-3)
    assert below.stable and below.max_real_eig < 0 and below.w_IE_ok and below.residual < 1e-9
    assert not above.stable and above.max_real_eig > 0
    df = L.landscape("rww", sc, np.linspace(0, 2 * g_hi, 9))
    assert list(df["stable"]) == [True] * 5 + [False] * 4
    assert np.all(np.diff(df["max_real_eig"]) > 0)
    # the HCP figure of the issue: max 0.2 keeps FIC's fixed point to G ≈ 2.8
    hcp = normalise(load_subject("hcp/101309").sc, "max", 0.2)
    assert 2.6 < L.stable_g_range("rww", hcp, np.linspace(0, 4, 9))[1] < 3.0


def test_edge_agrees_with_simulation(small):
    """Nearly noise-free float64 runs from the fixed point: 3 % below the edge the run stays at it,
    60 % above (max Re λ ≈ +3.7/s) it leaves it."""
    sc, (_, g_hi) = small
    m = get_model("rww")
    G = np.array([0.97 * g_hi, 1.6 * g_hi])
    st = SimulationSettings(duration=6.0, burn_in=0.0, dt=5e-4, tr=0.5, bold_dt=5e-4, hemodynamics="none",
                            dtype="float64")
    sim = Simulation(m, sc, {"G": G, "sigma": 1e-5}, st)
    S_E0 = np.asarray(sim.state.neural[0]).copy()
    res = sim.run()
    dev = np.abs(np.asarray(res.bold) - S_E0[:, None, :]).max(axis=(1, 2))
    assert np.all(np.isfinite(res.bold[0]))
    assert dev[0] < 0.01 and (dev[1] > 0.1 or bool(res.diverged[1]))


def test_auto_g_bounds_and_errors(small):
    sc, (_, g_hi) = small
    lo, hi = L.auto_g_bounds("rww", sc, margin=0.9)
    assert lo == 0.0 and hi == pytest.approx(0.9 * g_hi, abs=2e-3)
    with pytest.raises(ValueError, match="undefined without one"):
        L.stable_g_range(get_model("rww", fic=False), sc)
    with pytest.raises(ValueError, match="undefined without one"):
        L.stability("hopf", sc, 0.5)
    with pytest.raises(ValueError, match="already unstable"):
        L.auto_g_bounds("rww", sc, low=2 * g_hi)
    with pytest.raises(ValueError, match="margin"):
        L.auto_g_bounds("rww", sc, margin=1.5)


# -- command line -------------------------------------------------------------------------------
def test_cli_landscape(tmp_path, capsys):
    assert main(["landscape", "hcp/101309", "--norm", "max", "--points", "5", "--g-max", "4"]) == 0
    out = capsys.readouterr().out
    assert "stable G range: [0, 2.8" in out and out.count(" NO ") >= 2
    f = tmp_path / "sc.npy"
    np.save(f, _sc(6, seed=4))
    assert main(["landscape", str(f), "--norm", "spectral", "--value", "0.49", "--points", "4", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    ref = L.stable_g_range("rww", normalise(_sc(6, seed=4), "spectral", 0.49), np.linspace(0, 5, 4))
    assert rec["norm"] == "spectral" and len(rec["rows"]) == 4 and rec["stable_range"] == list(ref)
    for argv, needle in ([["landscape", "nope/x"], "nope/x"], [["landscape", "hcp/101309", "--norm", "l1"], "--norm"],
                         [["landscape", "hcp/101309", "--model", "hopf"], "undefined without one"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("raybrain: error:") and needle in err and err.count("\n") == 1
