"""Running a :class:`raybrain.integrate.Simulation` chunk through a fused kernel with the
``run_rww`` contract: :func:`run_chunk` is ``Simulation._run_fused`` with the kernel (``runner``)
and the array module (``xp``) as arguments, so the GPU path is

    bold, times = run_chunk(sim, n_steps, run_rww_cuda, xp=cupy)

and the CPU harness of the same kernel is ``run_chunk(sim, n_steps, run_rww_host)`` (the tests
use it; it exercises this very function). It reads the Simulation's settings, parameters,
connectomes and state and replaces ``sim.state`` as ``_run_fused`` does.
"""
from __future__ import annotations

import numpy as np

from .plan import RWW_PARAM_ORDER


def run_chunk(sim, n_steps: int, runner, xp=np, **runner_kwargs):
    """Advance ``sim`` by ``n_steps`` neural steps with ``runner``; returns ``(bold, times)``."""
    from ..integrate import SimState

    s, st, B, n = sim.settings, sim.state, sim.batch, sim.n_regions
    k_h, k_tr, m_burn, times = sim._sample_plan(n_steps)
    dt_ = sim.dtype.type
    bold = xp.zeros((B, len(times), n), dtype=sim.dtype)
    PAR = xp.ascontiguousarray(xp.stack([xp.asarray(sim.params[k]) for k in RWW_PARAM_ORDER], axis=1))
    CS = xp.ascontiguousarray(xp.asarray(sim.sc.astype(sim.dtype)))
    SE, SI = (xp.ascontiguousarray(a) for a in st.neural)
    hemo = tuple(xp.ascontiguousarray(a) for a in st.hemo)
    sums = {k: xp.ascontiguousarray(v) for k, v in st.sums.items()}
    acc = xp.ascontiguousarray(st.acc)
    coef = s.hemodynamic_model.coefficients(dt_)
    runner(SE, SI, *hemo, acc, sums["r_E"], sums["S_E"], sums["S_I"], CS, sim.subject_index, PAR,
           xp.ascontiguousarray(st.keys), st.step, n_steps, dt_(s.dt), k_h, dt_(1.0 / k_h), dt_(k_h * s.dt), k_tr,
           m_burn, coef, s.hemodynamics == "balloon", bold, **runner_kwargs)
    n_rec = max(0, st.step + n_steps - max(st.step, m_burn * k_h))
    sim.state = SimState(st.step + n_steps, (SE, SI), hemo, acc, st.keys, sums, st.n_summed + n_rec, st.diverged)
    return bold, times
