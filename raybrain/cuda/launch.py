"""The GPU launcher of the fused rWW-FIC + Balloon-Windkessel CUDA kernel (CuPy ``RawModule``).

:func:`run_rww_cuda` has the argument list of :func:`raybrain.fused.run_rww` with CuPy arrays:
the state arrays are updated in place and the BOLD samples written into ``bold_out``. CuPy is
imported lazily, so this module imports (and its planning is tested) on machines without it.

NOT YET RUN ON A GPU: this module was written on a machine without one. What *is* verified in CI
(``tests/test_cuda_kernel.py``): the kernel's maths and per-thread program (``rww_core.cuh``,
compiled for the host and run with the kernel's schedule by :mod:`raybrain.cuda.host`) against
the NumPy path; the planning shared with this launcher (:mod:`raybrain.cuda.plan`); that
``rww.cu`` compiles for sm_90 with nvcc (registers, no spills). Unverified until run on a device:
the NVRTC build through CuPy, the argument marshalling below, the dynamic shared-memory opt-in
above 48 KiB, device-side maths (CUDA's libdevice functions instead of glibc, FMA contraction)
and the performance. ``tests/test_cuda_kernel.py::test_gpu_matches_host_harness`` checks the first
four where CuPy and a device are present.
"""
from __future__ import annotations

import numpy as np

from . import plan

_KERNELS: dict = {}  # (dtype, N, K, umask, fast_math) -> (RawKernel, shared bytes)


def _cupy():
    try:
        import cupy
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError("the CUDA path needs CuPy and a CUDA GPU (pip install 'raybrain[gpu]')") from e
    return cupy


def compile_options(dtype, n: int, k: int, umask: int, fast_math: bool = False) -> tuple[str, ...]:
    """NVRTC options of one kernel variant (CuPy adds ``-arch`` for the current device)."""
    return ("--std=c++17", *plan.compile_defines(dtype, n, k, umask, fast_math))


def get_kernel(dtype, n: int, k: int, umask: int, fast_math: bool = False):
    """``(kernel, shared_bytes)`` of one variant, compiled once per process (and cached on disk by
    CuPy). N is a compile-time constant (the coupling loop and the shared-memory layout are
    static), so there is one module per connectome size; K is the simulations per block and
    ``umask`` the batch-uniform parameters."""
    key = (np.dtype(dtype).name, int(n), int(k), int(umask), bool(fast_math))
    if key not in _KERNELS:
        cp = _cupy()
        mod = cp.RawModule(code=plan.kernel_source(), options=compile_options(*key))
        kern = mod.get_function("rww_fused")
        smem = plan.smem_bytes(dtype, n, k)
        if smem > 48 * 1024:  # dynamic shared memory above 48 KiB must be opted into
            kern.max_dynamic_shared_size_bytes = smem
        _KERNELS[key] = (kern, smem)
    return _KERNELS[key]


def run_rww_cuda(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys, step0,
                 n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out, lanes=None,
                 steps_per_launch=None, fast_math=False):
    """Run the fused loop on the GPU, in place (the contract of :func:`raybrain.fused.run_rww`).

    Arrays are CuPy arrays (C-contiguous; ``subject_index`` may be NumPy): state ``(B, N)`` in
    float32/float64, sums ``(B, N)`` float64, ``CS`` ``(S, N, N)``, ``PAR`` ``(B, 18, N)`` in
    :data:`raybrain.fused.RWW_PARAM_ORDER`, ``keys`` ``(B,)`` uint64, ``bold_out`` ``(B, T, N)``;
    ``coef`` the 11 hemodynamic coefficients. ``lanes``: simulations per thread block (1, 2, 4, 8;
    default by :func:`raybrain.cuda.plan.choose_sims_per_block`); ``steps_per_launch``: split long
    runs into several launches (same result bit for bit); ``fast_math``: ``__expf``/``__fdividef``
    in float32. Asynchronous on the current stream, like any CuPy call. Not yet run on a GPU
    (see the module docstring).
    """
    cp = _cupy()
    c = plan.prepare_call(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys,
                          step0, n_steps, k_h, k_tr, m_burn, coef, bold_on, bold_out, lanes)
    if c is None:
        return
    step0, n_steps, k_h, k_tr, m_burn, k, N = c.step0, c.n_steps, c.k_h, c.k_tr, c.m_burn, c.k, c.N
    dtype = SE.dtype
    real = dtype.type
    kern, smem = get_kernel(dtype, N, k, c.umask, fast_math)
    tile_subj, tile_src, tile_real = (cp.asarray(a) for a in plan.make_tiles(subject_index, k))
    PS = cp.ascontiguousarray(PAR[0, :, 0])
    coef_d = cp.asarray(np.asarray([real(c) for c in coef], dtype=dtype))
    grid, block = (int(tile_subj.shape[0]),), (plan.threads_per_block(N),)
    for s0, n, o0 in plan.launch_plan(step0, n_steps, k_h, k_tr, m_burn, steps_per_launch):
        args = (SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, tile_subj, tile_src, tile_real, PAR, PS,
                keys, np.int64(s0), np.int64(n), real(dt), np.int64(k_h), real(inv_kh), real(dt_h), np.int64(k_tr),
                np.int64(m_burn), coef_d, np.int32(bool(bold_on)), bold_out, np.int32(bold_out.shape[1]),
                np.int32(o0))
        kern(grid, block, args, shared_mem=smem)
