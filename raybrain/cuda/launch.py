"""The GPU launcher of a model's fused CUDA kernel (CuPy ``RawModule``).

:func:`run_cuda` advances a :class:`~raybrain.kernel_call.KernelCall` of CuPy arrays in place
and writes its samples into ``call.bold_out``; :func:`prepare_kernel` builds the variant a call
will use. CuPy is imported lazily, so this module imports (and its planning is tested) on
machines without it.

NOT YET RUN ON A GPU: the generated kernels were written on a machine without one. What *is*
verified in CI (``tests/test_cuda_kernel.py``): the kernel's maths and per-thread program
(``model_core.cuh`` with each model's generated header, compiled for the host and run with the
kernel's schedule by :mod:`raybrain.cuda.host`) against the NumPy array path for rWW, Hopf and
LaNMM; the planning and the packed argument struct shared with this launcher
(:mod:`raybrain.cuda.plan`; the struct's layout against the compiler's); this launcher's
marshalling against the kernel's signature (a stand-in for CuPy); that ``model.cu`` compiles for
sm_90 with nvcc (registers, no spills). Unverified until run on a device: the NVRTC build through
CuPy, the dynamic shared-memory opt-in above 48 KiB, device-side maths (CUDA's libdevice functions
instead of glibc, FMA contraction) and the performance.
``tests/test_cuda_kernel.py::test_gpu_matches_host_harness`` checks them where CuPy and a device
are present (``benchmarks/gpu_check.sh``).
"""
from __future__ import annotations

import numpy as np

from . import plan

_KERNELS: dict = {}  # (source hash, dtype, N, K, umask, fast_math) -> (RawKernel, shared bytes)
KERNEL_NAME = "rb_fused"


def _cupy():
    try:
        import cupy
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError("the CUDA path needs CuPy and a CUDA GPU (pip install 'raybrain[gpu]')") from e
    return cupy


def compile_options(dtype, n: int, k: int, umask: int, fast_math: bool = False) -> tuple[str, ...]:
    """NVRTC options of one kernel variant (CuPy adds ``-arch`` for the current device)."""
    return ("--std=c++17", *plan.compile_defines(dtype, n, k, umask, fast_math))


def get_kernel(model, dtype, n: int, k: int, umask: int, fast_math: bool = False):
    """``(kernel, shared_bytes)`` of one variant, compiled once per process (and cached on disk by
    CuPy). The model's declaration is compiled in (its generated header); N is a compile-time
    constant (the coupling loop and the shared-memory layout are static), so there is one module
    per connectome size; K is the simulations per block and ``umask`` the batch-uniform parameters."""
    key = (plan.source_hash(model), np.dtype(dtype).name, int(n), int(k), int(umask), bool(fast_math))
    if key not in _KERNELS:
        cp = _cupy()
        mod = cp.RawModule(code=plan.kernel_source(model), options=compile_options(*key[1:]))
        kern = mod.get_function(KERNEL_NAME)
        smem = plan.smem_bytes(model, dtype, n, k)
        if smem > 48 * 1024:  # dynamic shared memory above 48 KiB must be opted into
            kern.max_dynamic_shared_size_bytes = smem
        _KERNELS[key] = (kern, smem)
    return _KERNELS[key]


def prepare_kernel(call, lanes=None, fast_math=False):
    """Build (or load) the kernel variant :func:`run_cuda` will launch for ``call`` (also for a call
    of zero steps); returns ``(kernel, shared_bytes)``."""
    lp = plan.plan_call(call, lanes)
    return get_kernel(call.model, call.X.dtype, lp.N, lp.k, lp.umask, fast_math)


def run_cuda(call, lanes=None, steps_per_launch=None, fast_math=False) -> None:
    """Run the fused loop of ``call.model`` on the GPU, in place on ``call``'s CuPy arrays.

    Arrays are C-contiguous CuPy arrays (``subject_index`` may be NumPy) as
    :class:`~raybrain.kernel_call.KernelCall` describes them, ``H`` in the state's dtype.
    ``lanes``: simulations per thread block (1, 2, 4, 8; default by
    :func:`raybrain.cuda.plan.choose_sims_per_block`); ``steps_per_launch``: split long runs into
    several launches (same result bit for bit); ``fast_math``: ``__expf``/``__fdividef`` in float32.
    Asynchronous on the current stream, like any CuPy call. Not yet run on a GPU (see the module
    docstring).
    """
    cp = _cupy()
    lp = plan.plan_call(call, lanes, steps_per_launch=steps_per_launch)
    if not lp.launches:
        return
    dtype = call.X.dtype
    kern, smem = get_kernel(call.model, dtype, lp.N, lp.k, lp.umask, fast_math)
    tile_subj, tile_src, tile_real = (cp.asarray(a) for a in plan.make_tiles(call.subject_index, lp.k))
    PS = cp.ascontiguousarray(call.PAR[0, :, 0])
    arrays = dict(X=call.X, H=call.H, acc=call.acc, sums=call.sums, CS=call.CS, tile_subj=tile_subj,
                  tile_src=tile_src, tile_real=tile_real, PAR=call.PAR, PS=PS, keys=call.keys, bold_out=call.bold_out)
    # the call as one struct in device memory (rb::Args<T>), read by the threads through a const pointer
    args = cp.asarray(plan.pack_args(call, {k: _address(a) for k, a in arrays.items()}, lp.B))
    grid, block = (int(tile_subj.shape[0]),), (plan.threads_per_block(lp.N),)
    for s0, n, o0 in lp.launches:
        kern(grid, block, (args, np.int64(s0), np.int64(n), np.int32(o0)), shared_mem=smem)
    # the temporaries (args, tiles, PS) go back to CuPy's pool when this returns: the pool reuses a
    # block only in stream order, after these launches


def _address(a) -> int:
    """The device address of a CuPy array (the host address of a NumPy array: the tests' stand-in
    for CuPy)."""
    return int(a.ctypes.data) if isinstance(a, np.ndarray) else int(a.data.ptr)
