"""Every model with a scalar declaration runs on the fused numba path generated from it
(:mod:`raybrain.fused`), held to the array path (:mod:`raybrain.integrate`) on the same noise:
rWW, Hopf and LaNMM, with the Balloon or sampling a state variable, float64 and float32."""
from __future__ import annotations

import numpy as np
import pytest

from raybrain import fused
from raybrain.data import load_subject
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.models import get_model


@pytest.fixture(scope="module")
def sc():
    c = load_subject("hcp/101309").sc[:20, :20]
    return c / c.max()


CASES = {
    # model, options, parameters (per batch element where a search would vary them), settings
    "hopf": (dict(), dict(G=np.array([0.2, 0.5, 1.0]), sigma=np.array([0.01, 0.02, 0.03])),
             dict(dt=0.01, bold_dt=0.01, tr=0.5, duration=10.0, burn_in=2.0)),
    "lanmm": (dict(), dict(G=np.array([0.0, 5.0, 10.0]), C_P2_PV=np.array([200.0, 150.0, 200.0])),
              dict(dt=1e-4, bold_dt=1e-3, tr=4e-3, duration=0.3, burn_in=0.1)),
    "lanmm-rate": (dict(output="rate"), dict(G=np.array([0.0, 10.0, 10.0])),
                   dict(dt=1e-4, bold_dt=1e-3, tr=0.02, duration=0.4, burn_in=0.0)),
}


def _pair(sc, case, dtype, **kw):
    opts, params, settings = CASES[case]
    model = get_model(case.split("-")[0], **opts)
    s = SimulationSettings(dtype=dtype, seed=3, **settings)
    fast = Simulation(model, sc, params, s, **kw)
    ref = Simulation(model, sc, params, s.replace(fused="never"))
    assert fast.use_fused and not ref.use_fused
    return fast.run(), ref.run()


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_matches_array_float64(sc, case):
    fast, ref = _pair(sc, case, "float64")
    assert fast.fused and fast.bold.shape == ref.bold.shape and fast.bold.shape[1] > 10
    np.testing.assert_array_equal(fast.times, ref.times)
    assert _rel(fast.bold, ref.bold) < 1e-9
    assert set(fast.means) == set(ref.means)
    for k in ref.means:
        assert _rel(fast.means[k], ref.means[k]) < 1e-9, k
    assert np.ptp(ref.bold) > 0 and not fast.diverged.any()


def test_fused_float32_tracks_float64_and_lanes_do_not_change_results(sc):
    """float32 follows float64 to float32 precision, and every tile width computes a batch element
    with the same operations (bit for bit)."""
    ref64 = _pair(sc, "hopf", "float64")[1]
    hopf32 = _pair(sc, "hopf", "float32")[0]
    assert hopf32.bold.dtype == np.float32 and _rel(hopf32.bold, ref64.bold) < 2e-3
    a, ref64 = _pair(sc, "lanmm", "float32", lanes=1)[0], _pair(sc, "lanmm", "float64")[1]
    assert _rel(a.bold, ref64.bold) < 2e-3
    b = _pair(sc, "lanmm", "float32", lanes=4)[0]
    np.testing.assert_array_equal(a.bold, b.bold)


def test_generated_source_follows_the_declaration():
    src = fused.kernel_source(get_model("lanmm"), "float32", 8, (False,) * 25, n_regions=20)
    assert "from raybrain.models.lanmm import lanmm_drift as _drift" in src
    assert "RS = 272 " in src  # the row stride: 20 regions x 8 lanes rounded up to a power of two, plus 16
    assert "XS = np.empty(22 * RS, dtype=ft)" in src and "XS[21 * RS + k]" in src and "XS[22 * RS" not in src
    assert "a * n0[k]" in src and src.count(" + a * n") == 2  # two noisy variables
    rww = fused.kernel_source(get_model("rww"), "float64", 0)
    assert "min(max(y0, zero), one)" in rww  # S_E clipped to [0, 1]
    compile(src, "<generated>", "exec")
    # LaNMM's outputs (the sampled variable) and connectomes of similar size share one variant
    v = fused.variant(get_model("lanmm", output="P2"), "float32", 8, None, n_regions=30)
    assert v == fused.variant(get_model("lanmm"), "float32", 8, (True,) * 25, n_regions=20)
