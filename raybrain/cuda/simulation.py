"""Running a :class:`raybrain.integrate.Simulation` chunk through a fused kernel with the
``run_rww`` contract: :func:`run_chunk` is ``Simulation._run_kernel`` (which ``_run_fused`` and
``_run_cuda`` use) with the kernel (``runner``) and the array module (``xp``) as arguments, so
the GPU path is ``run_chunk(sim, n_steps, run_rww_cuda, xp=cupy)`` and the CPU harness of the same
kernel ``run_chunk(sim, n_steps, run_rww_host)`` (the tests use it).
"""
from __future__ import annotations

import numpy as np


def run_chunk(sim, n_steps: int, runner, xp=np, **runner_kwargs):
    """Advance ``sim`` by ``n_steps`` neural steps with ``runner``; returns ``(bold, times)``
    (:meth:`raybrain.integrate.Simulation._run_kernel`)."""
    return sim._run_kernel(n_steps, runner, xp, **runner_kwargs)
