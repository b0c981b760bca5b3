"""raybrain's reduced Wong–Wang E–I drift (Deco et al. 2014) against The Virtual Brain.

The fixture ``tests/fixtures/tvb_rww_dfun.npz`` holds derivatives computed by TVB's
``ReducedWongWangExcInh`` (tvb-library, numpy path), converted from TVB's milliseconds to seconds;
``scripts/make_tvb_reference.py`` rebuilds it and documents the unit conversion. TVB has no w_EI
(it is 1 in every fixture row); the w_EI != 1 case is checked against a hand transcription below.
API under test: ``get_model("rww").drift((S_E, S_I), params, coupling=(c0,))`` with ``c0`` the raw
network input sum_j C_ij S_E,j (one entry per coupled variable; rww couples S_E only).
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "tvb_rww_dfun.npz"

PARAM_NAMES = (
    "G", "w_EE", "w_EI", "w_IE", "I0", "J_NMDA", "W_E", "W_I",
    "a_E", "b_E", "d_E", "a_I", "b_I", "d_I", "tau_E", "tau_I", "gamma",
)  # fmt: skip


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def rww():
    from raybrain.models import get_model

    return get_model("rww")


def _hand_drift(S_E, S_I, c0, p):
    """Direct transcription of Deco et al. 2014 (science reference §1), scalars, seconds/Hz/nA."""

    def H(x, a, b, d):
        y = a * x - b
        return y / (1.0 - math.exp(-d * y))

    I_E = p["W_E"] * p["I0"] + p["w_EE"] * p["J_NMDA"] * S_E + p["G"] * p["J_NMDA"] * c0 - p["w_IE"] * S_I
    I_I = p["W_I"] * p["I0"] + p["w_EI"] * p["J_NMDA"] * S_E - S_I
    r_E = H(I_E, p["a_E"], p["b_E"], p["d_E"])
    r_I = H(I_I, p["a_I"], p["b_I"], p["d_I"])
    dSE = -S_E / p["tau_E"] + (1.0 - S_E) * p["gamma"] * r_E
    dSI = -S_I / p["tau_I"] + r_I
    return dSE, dSI


def _row(ref, i):
    return {k: float(ref[k][i]) for k in PARAM_NAMES}


def test_fixture_is_sane(ref):
    n = ref["S_E"].size
    assert n >= 200
    for k in (*PARAM_NAMES, "S_E", "S_I", "c0", "dSE_dt", "dSI_dt"):
        assert ref[k].shape == (n,), k
    assert np.all(ref["w_EI"] == 1.0)  # TVB has no w_EI
    # Row 0 is the Deco 2014 default set (science reference table), in seconds.
    p0 = _row(ref, 0)
    assert p0["tau_E"] == 0.1 and p0["tau_I"] == 0.01 and p0["gamma"] == 0.641
    assert (p0["a_E"], p0["b_E"], p0["d_E"]) == (310.0, 125.0, 0.16)
    assert (p0["a_I"], p0["b_I"], p0["d_I"]) == (615.0, 177.0, 0.087)
    assert (p0["W_E"], p0["W_I"], p0["I0"], p0["J_NMDA"], p0["w_EE"]) == (1.0, 0.7, 0.382, 0.15, 1.4)
    # Both branches of both transfer functions are exercised.
    assert (ref["dSE_dt"] > 0).any() and (ref["dSE_dt"] < 0).any()
    assert (ref["dSI_dt"] > 0).any() and (ref["dSI_dt"] < 0).any()


@pytest.mark.parametrize("i", [0, 1, 37, 64, 101, 150, 199, 255])
def test_fixture_matches_hand_transcription(ref, i):
    """Catches unit-conversion errors in the fixture (ms vs s, gamma/1000) independently of raybrain."""
    dSE, dSI = _hand_drift(float(ref["S_E"][i]), float(ref["S_I"][i]), float(ref["c0"][i]), _row(ref, i))
    assert dSE == pytest.approx(float(ref["dSE_dt"][i]), rel=1e-11, abs=1e-12)
    assert dSI == pytest.approx(float(ref["dSI_dt"][i]), rel=1e-11, abs=1e-12)


def test_raybrain_drift_matches_tvb(ref, rww):
    p = rww.params(**{k: ref[k] for k in PARAM_NAMES})
    # coupling is one network input per coupled variable (rww couples S_E only): a 1-tuple.
    dSE, dSI = rww.drift((ref["S_E"], ref["S_I"]), p, coupling=(ref["c0"],))
    np.testing.assert_allclose(np.asarray(dSE), ref["dSE_dt"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dSI), ref["dSI_dt"], rtol=1e-10, atol=1e-12)


def test_raybrain_drift_w_EI_not_one_matches_hand(ref, rww):
    """w_EI is absent from TVB; check it against the hand transcription instead."""
    idx = np.arange(0, ref["S_E"].size, 17)
    w_EI = np.linspace(0.5, 1.5, idx.size)
    kw = {k: ref[k][idx] for k in PARAM_NAMES}
    kw["w_EI"] = w_EI
    p = rww.params(**kw)
    dSE, dSI = rww.drift((ref["S_E"][idx], ref["S_I"][idx]), p, coupling=(ref["c0"][idx],))
    for j, i in enumerate(idx):
        row = _row(ref, i)
        row["w_EI"] = float(w_EI[j])
        eSE, eSI = _hand_drift(float(ref["S_E"][i]), float(ref["S_I"][i]), float(ref["c0"][i]), row)
        assert float(np.asarray(dSE)[j]) == pytest.approx(eSE, rel=1e-10, abs=1e-12)
        assert float(np.asarray(dSI)[j]) == pytest.approx(eSI, rel=1e-10, abs=1e-12)


def test_raybrain_drift_at_threshold_is_finite_limit(rww):
    """At a_E*I_E = b_E, H_E has the limit 1/d_E (removable singularity): dS_E = -S_E/tau_E + (1-S_E)*gamma/d_E."""
    g = dict(
        G=1.0, w_EE=1.4, w_EI=1.0, w_IE=1.0, I0=0.382, J_NMDA=0.15, W_E=1.0, W_I=0.7,
        a_E=310.0, b_E=125.0, d_E=0.16, a_I=615.0, b_I=177.0, d_I=0.087, tau_E=0.1, tau_I=0.01, gamma=0.641,
    )  # fmt: skip
    c0, S_E = 0.3, 0.4
    I_star = g["b_E"] / g["a_E"]
    # Choose S_I so that I_E sits at the threshold (to rounding).
    S_I = (g["W_E"] * g["I0"] + g["w_EE"] * g["J_NMDA"] * S_E + g["G"] * g["J_NMDA"] * c0 - I_star) / g["w_IE"]
    p = rww.params(**g)
    dSE, _ = rww.drift((np.array([S_E]), np.array([S_I])), p, coupling=(np.array([c0]),))
    expected = -S_E / g["tau_E"] + (1.0 - S_E) * g["gamma"] / g["d_E"]
    assert np.all(np.isfinite(np.asarray(dSE)))
    assert float(np.asarray(dSE)[0]) == pytest.approx(expected, rel=1e-6)
