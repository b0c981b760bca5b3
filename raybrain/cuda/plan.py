"""Host-side planning shared by the CUDA launcher and its CPU harness (NumPy only, no CuPy).

Everything here that decides *what* the kernel is asked to do -- the kernel source and its
compile-time configuration, the tiles of simulations per thread block, the uniform-parameter mask,
the split of a run into launches and the index of each launch's first BOLD sample, the argument
checks -- is used unchanged by :func:`raybrain.cuda.launch.run_rww_cuda` (GPU) and
:func:`raybrain.cuda.host.run_rww_host` (CI), so the tests of the harness cover it.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import NamedTuple

import numpy as np

from .._backend import array_module, asnumpy

# rows of the packed parameter array (B, P, N): raybrain.fused.RWW_PARAM_ORDER (a test holds them equal;
# not imported from there, which would import numba)
RWW_PARAM_ORDER = ("G", "sigma", "w_EE", "w_EI", "w_IE", "I0", "J_NMDA", "W_E", "W_I",
                   "a_E", "b_E", "d_E", "a_I", "b_I", "d_I", "tau_E", "tau_I", "gamma")
N_PARAMS = len(RWW_PARAM_ORDER)
N_COEF = 11  # BalloonWindkessel.coefficients()

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("rww_core.cuh", "rww.cu", "rww_host.cpp")

SIMS_PER_BLOCK = (1, 2, 4, 8)


def read_source(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def kernel_source() -> str:
    """The kernel source as one string (``rww_core.cuh`` inlined into ``rww.cu``), for NVRTC:
    CuPy's kernel cache keys on the source text, so an edit of the header cannot be missed."""
    core = read_source("rww_core.cuh")
    return re.sub(r'^#include "rww_core\.cuh"\s*$', lambda _: core, read_source("rww.cu"), count=1,
                  flags=re.M)


def source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(read_source(name).encode())
    return h.hexdigest()[:16]


def threads_per_block(n: int) -> int:
    """One thread per region, rounded up to whole warps."""
    return -(-int(n) // 32) * 32


def smem_bytes(dtype, n: int, k: int) -> int:
    """Dynamic shared memory per block: ``rb::Smem<T, N, K>::BYTES`` (connectome transposed,
    64-byte aligned, then two S_E buffers of N x K)."""
    size = np.dtype(dtype).itemsize
    return -(-n * n * size // 64) * 64 + 2 * n * k * size


def uniform_mask(PAR) -> int:
    """Bit q set when row q of ``PAR`` (B, P, N) holds one value for the whole batch (NumPy or
    CuPy; one small reduction and a host copy of P booleans)."""
    xp = array_module(PAR)
    if PAR.shape[0] == 0:
        return 0
    same = asnumpy(xp.all(PAR == PAR[:1, :, :1], axis=(0, 2)))
    return int(sum(1 << q for q, u in enumerate(same) if u))


def choose_sims_per_block(dtype, umask: int) -> int:
    """Simulations per thread block K (registers grow with K times the per-element parameters).

    From ptxas for sm_90 at N = 80 (CUDA 13.0 nvcc; NVRTC 12.9 within 2): float32 K = 4 takes 166
    registers with G and w_IE per element, 245 with all 18 per element (K = 2 then: 127); float64
    K = 2 takes 162 with G and w_IE per element, 214 with all 18, and K = 4 reaches 254-255 and
    spills. No spills in the variants chosen here at N = 80. Not yet tuned on a GPU.
    """
    per_element = N_PARAMS - bin(umask & ((1 << N_PARAMS) - 1)).count("1")
    if np.dtype(dtype) == np.float32:
        return 4 if per_element <= 6 else 2
    return 2 if per_element <= 6 else 1


def compile_defines(dtype, n: int, k: int, umask: int, fast_math: bool = False) -> tuple[str, ...]:
    name = np.dtype(dtype).name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if k not in SIMS_PER_BLOCK:
        raise ValueError(f"simulations per block must be one of {SIMS_PER_BLOCK}, got {k!r}")
    return (f"-DRB_REAL={'float' if name == 'float32' else 'double'}", f"-DRB_N={int(n)}", f"-DRB_K={int(k)}",
            f"-DRB_UMASK={int(umask)}u", f"-DRB_FAST_INTRINSICS={int(bool(fast_math))}")


def make_tiles(subject_index, k: int):
    """Group the batch into tiles of ``k`` simulations with one connectome each
    (:func:`raybrain.fused.make_tiles`, in the kernel's types): ``tile_subj`` (T,) int32,
    ``tile_src`` (T, k) int32 (padding lanes repeat the tile's last element; they compute but never
    write) and ``tile_real`` (T, k) uint8."""
    from ..fused import make_tiles as _make_tiles

    subj, src, real = _make_tiles(np.asarray(asnumpy(subject_index), dtype=np.int64).reshape(-1), k)
    return subj.astype(np.int32), src.astype(np.int32), real.astype(np.uint8)


def n_samples(step_a: int, step_b: int, k_h: int, k_tr: int, m_burn: int) -> int:
    """BOLD samples produced by the steps ``step_a .. step_b - 1``: hemodynamic steps m in
    ``(step_a // k_h, step_b // k_h]`` with ``m % k_tr == 0`` and ``m > m_burn``."""
    lo = max(step_a // k_h + 1, m_burn + 1)
    hi = step_b // k_h
    return max(0, hi // k_tr - (lo - 1) // k_tr) if hi >= lo else 0


def launch_plan(step0: int, n_steps: int, k_h: int, k_tr: int, m_burn: int, steps_per_launch=None):
    """``[(step0_i, n_i, o0_i), ...]``: the launches of one call. With ``steps_per_launch`` the
    launches end on hemodynamic-step boundaries (global step a multiple of ``k_h``) but the last, so
    the kernel's block flushes fall where one launch would have them and the result is the same
    bit for bit; ``o0_i`` is the index in ``bold_out`` of the launch's first sample."""
    step0, n_steps, k_h = int(step0), int(n_steps), int(k_h)
    end = step0 + n_steps
    if n_steps <= 0:
        return []
    if steps_per_launch is None or int(steps_per_launch) >= n_steps:
        return [(step0, n_steps, 0)]
    per = max(1, int(steps_per_launch))
    plan, cur, o = [], step0, 0
    while cur < end:
        e = (cur + per) // k_h * k_h
        if e <= cur:
            e = (cur // k_h + 1) * k_h
        e = min(e, end)
        plan.append((cur, e - cur, o))
        o += n_samples(cur, e, k_h, k_tr, m_burn)
        cur = e
    return plan


def check_arguments(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys,
                    coef, bold_out, n_needed: int):
    """Shapes, dtypes and contiguity the kernel relies on (it indexes raw pointers): ValueError else."""
    dtype = SE.dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"state dtype must be float32 or float64, got {dtype}")
    if SE.ndim != 2:
        raise ValueError(f"SE must be (B, N), got shape {SE.shape}")
    B, N = SE.shape

    def need(name, a, shape, dt):
        if tuple(a.shape) != tuple(shape) or a.dtype != dt:
            raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {np.dtype(dt).name}, "
                             f"got {tuple(a.shape)} {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")

    for name, a in (("SE", SE), ("SI", SI), ("hs", hs), ("hf", hf), ("hv", hv), ("hq", hq), ("acc", acc)):
        need(name, a, (B, N), dtype)
    for name, a in (("sum_rE", sum_rE), ("sum_SE", sum_SE), ("sum_SI", sum_SI)):
        need(name, a, (B, N), np.float64)
    if CS.ndim != 3:
        raise ValueError(f"CS must be (S, N, N), got shape {CS.shape}")
    need("CS", CS, (CS.shape[0], N, N), dtype)
    need("PAR", PAR, (B, N_PARAMS, N), dtype)
    need("keys", keys, (B,), np.uint64)
    if bold_out.ndim != 3 or bold_out.shape[0] != B or bold_out.shape[2] != N:
        raise ValueError(f"bold_out must be (B, T, N) = ({B}, T, {N}), got {bold_out.shape}")
    need("bold_out", bold_out, bold_out.shape, dtype)
    if bold_out.shape[1] < n_needed:
        raise ValueError(f"bold_out holds {bold_out.shape[1]} samples, the run produces {n_needed}")
    si = np.asarray(asnumpy(subject_index)).reshape(-1)
    if si.shape != (B,) or (B and (si.min() < 0 or si.max() >= CS.shape[0])):
        raise ValueError(f"subject_index must have shape ({B},) with values in [0, {CS.shape[0]})")
    if len(coef) != N_COEF:
        raise ValueError(f"coef must hold the {N_COEF} hemodynamic coefficients, got {len(coef)}")
    return B, N


class Call(NamedTuple):
    """A checked kernel call: integer step counters, batch shape, uniform mask and tile width."""

    step0: int
    n_steps: int
    k_h: int
    k_tr: int
    m_burn: int
    B: int
    N: int
    umask: int
    k: int


def prepare_call(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys, step0,
                 n_steps, k_h, k_tr, m_burn, coef, bold_on, bold_out, lanes=None, umask=None) -> Call | None:
    """What :func:`raybrain.cuda.launch.run_rww_cuda` and its host harness share before launching:
    :func:`check_arguments`, the uniform mask (from ``PAR`` unless given) and K simulations per
    block (:func:`choose_sims_per_block` unless ``lanes``); None when there is nothing to run."""
    step0, n_steps, k_h, k_tr, m_burn = (int(x) for x in (step0, n_steps, k_h, k_tr, m_burn))
    n_needed = n_samples(step0, step0 + n_steps, k_h, k_tr, m_burn) if bold_on else 0
    B, N = check_arguments(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR,
                           keys, coef, bold_out, n_needed)
    if B == 0 or n_steps <= 0:
        return None
    umask = uniform_mask(PAR) if umask is None else int(umask)
    k = choose_sims_per_block(SE.dtype, umask) if lanes is None else int(lanes)
    return Call(step0, n_steps, k_h, k_tr, m_burn, B, N, umask, k)
