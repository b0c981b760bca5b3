"""Running a :class:`raybrain.integrate.Simulation` chunk through a fused kernel that takes a
:class:`~raybrain.kernel_call.KernelCall`: :func:`run_chunk` is what ``Simulation._run_cuda`` does,
with the kernel (``runner``) and the array module (``xp``) as arguments, so the GPU path is
``run_chunk(sim, n_steps, run_cuda, xp=cupy)`` and the CPU harness of the same kernel
``run_chunk(sim, n_steps, run_host)`` (the tests use it).
"""
from __future__ import annotations

import numpy as np


def run_chunk(sim, n_steps: int, runner, xp=np, **runner_kwargs):
    """Advance ``sim`` by ``n_steps`` neural steps with ``runner(call, **runner_kwargs)``; returns
    ``(bold, times)`` and leaves the advanced state in ``sim.state``."""
    call, times = sim._kernel_call(n_steps, xp)
    runner(call, **runner_kwargs)
    return sim._finish_kernel_call(call), times
