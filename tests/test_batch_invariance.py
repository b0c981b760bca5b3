"""A candidate's simulated outputs do not depend on the batch it runs in, bit for bit.

On the default path (fused numba kernel, variant chosen per batch by
:func:`raybrain.fused.choose_lanes`, uniform parameters hoisted per batch) a candidate is run
alone, in a batch of 7 and in a batch of 64 whose other candidates have different parameters
and noise, in float32 and float64, for every shape a parametrisation produces: global scalars,
per-candidate ``(B,)``, regional ``(N,)`` and per-candidate maps ``(B, N)``. BOLD, the
time-averaged summaries and the divergence flags must be equal, not merely close.
"""
from __future__ import annotations

import numpy as np
import pytest

from raybrain import data
from raybrain.fused import choose_lanes
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.objective import scale_sc

K = 3  # the candidate followed, at this index in every batch
BIG = 64


@pytest.fixture(scope="module")
def sc():
    return scale_sc(data.load_subject("hcp/101309").sc, 0.2)


def _shapes(n):
    """Parameters of BIG candidates in each shape; candidate K is the same in all of them."""
    rng = np.random.default_rng(7)
    G = rng.uniform(0.5, 2.4, BIG)
    sigma = rng.uniform(0.002, 0.01, BIG)
    m1, m2 = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    c = rng.uniform(-0.2, 0.2, (BIG, 4))
    return {
        "global": {"G": 1.9, "sigma": 0.004},
        "per_candidate": {"G": G, "sigma": sigma},
        "regional": {"G": 1.6, "w_EE": 1.4 + 0.1 * m1},
        "maps": {"G": G, "sigma": np.clip(0.005 + 0.002 * c[:, :1] * m1, 5e-4, 0.01),
                 "w_EE": 1.4 + c[:, 1:2] * m1 + c[:, 2:3] * m2, "w_EI": 1.2 + c[:, 3:4] * m2},
    }


def _take(params, idx):
    return {k: (np.asarray(v)[idx] if np.ndim(v) and np.shape(v)[0] == BIG else v) for k, v in params.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", ["global", "per_candidate", "regional", "maps"])
def test_candidate_alone_equals_candidate_in_batches(sc, dtype, shape):
    s = SimulationSettings(duration=1.44, burn_in=0.72, dt=1e-3, tr=0.72, dtype=dtype, seed=5)
    params = _shapes(sc.shape[0])[shape]
    # the batches below do get different kernel variants (lanes per tile), so the test has teeth
    assert len({choose_lanes(dtype, b) for b in (1, 7, BIG)}) > 1
    alone = Simulation("rww", sc, _take(params, [K]), s, batch=1, streams=[K]).run()
    assert alone.fused and alone.bold.shape == (1, 2, sc.shape[0])
    for size in (7, BIG):
        idx = np.arange(size)
        res = Simulation("rww", sc, _take(params, idx), s, batch=size, streams=idx).run()
        np.testing.assert_array_equal(res.bold[K], alone.bold[0])
        for k in alone.means:
            np.testing.assert_array_equal(res.means[k][K], alone.means[k][0])
        assert res.diverged[K] == alone.diverged[0]
        # the other candidates really are different (noise, and parameters where per candidate)
        assert not np.array_equal(res.bold[K + 1], res.bold[K])
