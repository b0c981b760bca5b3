"""Fused CUDA path for the rWW-FIC model with Balloon-Windkessel BOLD (through CuPy).

One kernel launch runs many Euler-Maruyama steps of a batch: the network coupling, the
counter-based noise of :mod:`raybrain.random` (the same hash and Box-Muller, so a simulation's
noise does not depend on its batch and common random numbers work), the rWW update with clipping,
the hemodynamics at their own step, the TR sampling (only BOLD samples reach global memory) and
the running sums of r_E, S_E, S_I after the burn-in -- the algorithm of :mod:`raybrain.fused`.

Files: ``rww_core.cuh`` (the maths and the per-thread program, ``__host__ __device__``),
``rww.cu`` (the kernel), ``rww_host.cpp`` (the CPU harness), :mod:`~raybrain.cuda.plan` (tiling,
launch plan, checks shared by both), :mod:`~raybrain.cuda.launch` (:func:`run_rww_cuda`, CuPy),
:mod:`~raybrain.cuda.host` (:func:`run_rww_host`, ctypes), :mod:`~raybrain.cuda.simulation`
(:func:`run_chunk`, a ``Simulation`` chunk through either).

Layout: one thread block per tile of K simulations sharing a connectome (K = 1, 2, 4, 8; a batch
may mix subjects: tiles are formed per subject), one thread per region (N rounded up to 32
threads), the K simulations' state of the region in registers; shared memory holds the
connectome transposed (N^2 values: conflict-free loads across a warp) and S_E of the tile
double-buffered (2 N K values; one vector broadcast load per j serves the K simulations), one
``__syncthreads()`` per step. ptxas (CUDA 13.0, sm_90, N = 80, G and w_IE per element): float32
K = 4: 166 registers, 0 spills, 28,160 B shared -> 4 blocks (12 warps, 16 simulations) per SM;
float64 K = 2: 162 registers, 53,760 B shared -> 4 blocks per SM.

Not yet run on a GPU (see :mod:`raybrain.cuda.launch`).
"""
from .host import build_host_library, host_compiler, run_rww_host
from .launch import get_kernel, run_rww_cuda
from .plan import RWW_PARAM_ORDER, choose_sims_per_block, kernel_source, launch_plan, make_tiles
from .simulation import run_chunk

__all__ = ["RWW_PARAM_ORDER", "build_host_library", "choose_sims_per_block", "get_kernel", "host_compiler",
           "kernel_source", "launch_plan", "make_tiles", "run_chunk", "run_rww_cuda", "run_rww_host"]
