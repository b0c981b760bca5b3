"""The start of a simulation: the Balloon at the steady state of the initial neural input, and a
default burn-in covering the hemodynamic transient (:class:`raybrain.integrate.SimulationSettings`).

Before, the Balloon started at rest (f = v = q = 1) while its input S_E sat at its fixed point
(≈ 0.165), so the first tens of seconds of BOLD were one common relaxation of all regions and a
run without burn-in had an FC mean near 1 (0.9997 on hcp/101309).
"""
from __future__ import annotations

import numpy as np
import pytest

from raybrain import data
from raybrain.hemodynamics import BalloonWindkessel
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.models.rww import fic_target_current, transfer
from raybrain.objective import scale_sc


@pytest.fixture(scope="module")
def sc():
    return scale_sc(data.load_subject("hcp/101309").sc, 0.2)


def test_default_burn_in_covers_the_hemodynamic_transient():
    s = SimulationSettings()
    bw = s.hemodynamic_model
    # the slowest Balloon mode decays as exp(-kappa t / 2): the default is ~10 e-foldings of it
    assert s.burn_in >= 9 * 2 / bw.kappa
    assert s.burn_in >= 9 * 2 / BalloonWindkessel("time_constants").kappa


@pytest.mark.parametrize("fused", ["never", "always"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_hemodynamics_stay_put_when_the_input_does(sc, fused, dtype):
    """Every path starts the Balloon at the steady state of the initial S_E; and without noise, with
    G = 0 and the neural state at FIC's fixed point, the Balloon's state and the BOLD do not move."""
    s = SimulationSettings(duration=7.2, burn_in=0.0, dt=1e-3, dtype=dtype, fused=fused)
    sim = Simulation("rww", sc, {"G": 0.0, "sigma": 0.0}, s, batch=2)
    bw = BalloonWindkessel()
    x0 = np.array(sim.state.neural[0], dtype=np.float64)
    for a, b in zip(sim.state.hemo, bw.steady_state(x0)):  # the wiring: started at the steady state
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=1e-6, atol=1e-12)
    # the exact fixed point (Demirtas 2019 FIC, G = 0): S_E* from I_E*, S_I* from the E current balance
    p = sim.params_host
    I_E = fic_target_current(p)
    r = transfer(I_E, p["a_E"], p["b_E"], p["d_E"])
    S_E = p["tau_E"] * p["gamma"] * r / (1 + p["tau_E"] * p["gamma"] * r)
    S_I = (p["W_E"] * p["I0"] + p["w_EE"] * p["J_NMDA"] * S_E - I_E) / p["w_IE"]
    st = sim.state
    st.neural = (S_E.astype(dtype), S_I.astype(dtype))
    st.hemo = bw.initial_state(2, sc.shape[0], dtype=np.dtype(dtype), x=st.neural[0])
    assert np.all(st.hemo[1] > 1.3)  # f = 1 + S_E/gamma, far from the resting 1
    sim = Simulation("rww", sc, {"G": 0.0, "sigma": 0.0}, s, batch=2, state=st)
    h0 = tuple(np.array(a, dtype=np.float64) for a in sim.state.hemo)
    res = sim.run()
    assert res.fused == (fused == "always")
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(np.asarray(sim.state.neural[0], dtype=np.float64), S_E, rtol=tol)
    for a, b in zip(sim.state.hemo, h0):
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=0, atol=tol)
    bold = np.asarray(res.bold, dtype=np.float64)
    assert bold.shape == (2, 10, sc.shape[0])
    # from rest, BOLD would swing by ~1e-2 over these 7 s
    np.testing.assert_allclose(bold, np.broadcast_to(bold[:, :1], bold.shape), rtol=0, atol=tol * 1e-1)


def _fc_mean(bold):
    iu = np.triu_indices(bold.shape[-1], 1)
    return np.array([np.corrcoef(b.T.astype(np.float64))[iu].mean() for b in bold])


def test_fc_mean_without_burn_in_equals_fc_mean_after_a_long_one(sc):
    """Same seeds, the FC mean of a run without burn-in and of one after 60 s agree within their
    noise (paired over 8 noise streams); before the fix the first was ≈ 1."""
    s = SimulationSettings(duration=72.0, dt=1e-3, dtype="float32", seed=4)
    p = {"G": 2.0, "sigma": 0.005}
    seeds = 8
    m0 = _fc_mean(Simulation("rww", sc, p, s.replace(burn_in=0.0), batch=seeds).run().bold)
    m60 = _fc_mean(Simulation("rww", sc, p, s.replace(burn_in=60.0), batch=seeds).run().bold)
    d = m0 - m60
    se = d.std(ddof=1) / np.sqrt(seeds)
    assert abs(d.mean()) < 3 * se + 1e-3, (m0, m60)
    assert m0.mean() < 0.5 and m60.mean() < 0.5
