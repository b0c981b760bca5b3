"""Fused CUDA path for every model that declares a scalar drift (through CuPy).

One kernel launch runs many Euler–Maruyama steps of a batch: the network coupling of each coupled
variable, the counter-based noise of :mod:`raybrain.random` (the same hash and Box–Muller, so a
simulation's noise does not depend on its batch and common random numbers work), the model's
update with clipping, the hemodynamics at their own step (or the model's output sampled directly),
the TR sampling (only samples reach global memory) and the running sums of the state variables and
summary observables after the burn-in -- the algorithm of :mod:`raybrain.fused`.

**Generated source, not numba.cuda.** A model is declared once (:class:`raybrain.models.Model`:
``scalar_drift`` and its metadata); :mod:`~raybrain.cuda.codegen` translates the scalar drift (and
the plain functions of its module it calls, inlined) from its Python syntax tree into a C++
header, and one generic core in C++, ``model_core.cuh`` (time loop, noise, Balloon–Windkessel step,
sums, tiling), is compiled with it. Reasons: (1) the same C++ is compiled for the host by g++ and run
with the kernel's schedule (:mod:`~raybrain.cuda.host`), so CI without a GPU tests the very code
the device runs, bit for bit in float64 against NumPy's operation order -- numba.cuda's simulator
runs Python, not the compiled kernel; (2) the kernel's layout needs what numba.cuda expresses poorly
or not at all: K simulations per thread in registers with compile-time unrolling, 16-byte vector
loads from dynamic shared memory, ``__launch_bounds__``, per-variant ``-D`` constants (N, K, the
uniform mask) and ptxas register/spill reports; (3) NVRTC through CuPy needs no CUDA toolkit at run
time and CuPy caches the binaries on disk, whereas numba.cuda needs a matching toolkit/NVVM and
compiles per process; (4) the declaration's language is deliberately tiny (assignments, ``+ - * /``,
unary minus, tuples, calls; no literals), so the translation is ~200 lines and rejects anything
else with the offending line. The price: the drift is translated rather than shared as bytecode,
so the tests hold each model's kernel (through the harness) to the array path, which evaluates the
very same Python function.

Files: ``model_core.cuh`` (maths, the per-thread program, ``__host__ __device__``; includes the
generated ``rb_model.cuh``), ``model.cu`` (the kernel), ``model_host.cpp`` (the CPU harness),
:mod:`~raybrain.cuda.codegen` (declaration -> C++), :mod:`~raybrain.cuda.plan` (kernel source,
tiling, launch plan, packed arguments, checks shared by both), :mod:`~raybrain.cuda.launch`
(:func:`run_cuda`, :func:`prepare_kernel`, CuPy), :mod:`~raybrain.cuda.host` (:func:`run_host`,
ctypes), :mod:`~raybrain.cuda.simulation` (:func:`run_chunk`, a ``Simulation`` chunk through either).
Every entry point takes one :class:`~raybrain.kernel_call.KernelCall`; the kernel itself takes one
struct (``rb::Args``, packed by :func:`raybrain.cuda.plan.pack_args`) plus the three values that
differ between the launches of a call.

Layout: one thread block per tile of K simulations sharing a connectome (K = 1, 2, 4, 8; a batch
may mix subjects: tiles are formed per subject), one thread per region (N rounded up to 32
threads), the K simulations' state of the region in registers; shared memory holds the
connectome transposed (N^2 values: conflict-free loads across a warp) and the coupled variables of
the tile double-buffered (2 C N K values; one vector broadcast load per (variable, j) serves the K
simulations), one ``__syncthreads()`` per step. ptxas (nvcc 13.0, sm_90, N = 80, the default
variants: searched parameters per element, the others batch-uniform), registers / shared bytes per
block, 0 spills in each: rWW float32 K = 4 168 / 28,160, float64 K = 2 156 / 53,760; Hopf float32
K = 4 128 / 30,720, float64 K = 2 126 / 56,320; LaNMM (22 state variables) float32 K = 1 127 /
26,240, float64 K = 1 248 / 52,480. K per model and precision:
:func:`~raybrain.cuda.plan.choose_sims_per_block`.

Not yet run on a GPU (see :mod:`raybrain.cuda.launch`); ``benchmarks/gpu_check.sh`` is the check
to run where one is lent.
"""
from .codegen import DeclarationError, model_header
from .host import build_host_library, host_compiler, run_host
from .launch import get_kernel, prepare_kernel, run_cuda
from .plan import choose_sims_per_block, kernel_source, launch_plan, make_tiles
from .simulation import run_chunk

__all__ = ["DeclarationError", "build_host_library", "choose_sims_per_block", "get_kernel", "host_compiler",
           "kernel_source", "launch_plan", "make_tiles", "model_header", "prepare_kernel", "run_chunk", "run_cuda",
           "run_host"]
