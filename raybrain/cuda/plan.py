"""Host-side planning shared by the CUDA launcher and its CPU harness (NumPy only, no CuPy).

Everything here that decides *what* the kernel is asked to do -- the kernel source of a model and
its compile-time configuration, the tiles of simulations per thread block, the uniform-parameter
mask, the split of a call into launches and the index of each launch's first sample, the argument
checks, the packed argument struct -- is used unchanged by :func:`raybrain.cuda.launch.run_cuda`
(GPU) and :func:`raybrain.cuda.host.run_host` (CI), so the tests of the harness cover it.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import NamedTuple

import numpy as np

from .._backend import array_module, asnumpy
from ..kernel_call import make_tiles as _make_tiles
from . import codegen

N_COEF = 11  # BalloonWindkessel.coefficients()

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("model_core.cuh", "model.cu", "model_host.cpp")
MODEL_HEADER = "rb_model.cuh"  # the generated header's name in the #include of model_core.cuh

SIMS_PER_BLOCK = (1, 2, 4, 8)


def read_source(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def _inline(src: str, name: str, text: str) -> str:
    return re.sub(r'^#include "' + re.escape(name) + r'"\s*$', lambda _: text, src, count=1, flags=re.M)


def core_source(model) -> str:
    """``model_core.cuh`` with the model's generated header inlined."""
    return _inline(read_source("model_core.cuh"), MODEL_HEADER, codegen.model_header(model))


def kernel_source(model) -> str:
    """The kernel source of ``model`` as one string (``model.cu`` with the core and the generated
    header inlined), for NVRTC: CuPy's kernel cache keys on the source text, so neither an edit of
    the core nor a change of the model can be missed."""
    return _inline(read_source("model.cu"), "model_core.cuh", core_source(model))


def host_source(model) -> str:
    """The host harness of ``model`` as one translation unit (``model_host.cpp``, core, header)."""
    return _inline(read_source("model_host.cpp"), "model_core.cuh", core_source(model))


def source_hash(model) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(read_source(name).encode())
    h.update(codegen.model_header(model).encode())
    return h.hexdigest()[:16]


def threads_per_block(n: int) -> int:
    """One thread per region, rounded up to whole warps."""
    return -(-int(n) // 32) * 32


def smem_bytes(model, dtype, n: int, k: int) -> int:
    """Dynamic shared memory per block: ``rb::Smem<T, N, K>::BYTES`` (connectome transposed,
    64-byte aligned, then two buffers of the C coupled variables, C x N x K each)."""
    size = np.dtype(dtype).itemsize
    return -(-n * n * size // 64) * 64 + 2 * len(model.coupled_variables) * n * k * size


def uniform_mask(model, PAR) -> int:
    """Bit q set when row q of ``PAR`` (B, P, N) holds one value for the whole batch and parameter
    q is not one a search varies (``model.searched_parameters``: read per element in every
    variant, so the variants do not multiply with the candidates). NumPy or CuPy; one small
    reduction and a host copy of P booleans."""
    xp = array_module(PAR)
    if PAR.shape[0] == 0:
        return 0
    same = asnumpy(xp.all(PAR == PAR[:1, :, :1], axis=(0, 2)))
    searched = model.searched_parameters
    return int(sum(1 << q for q, (u, name) in enumerate(zip(same, model.kernel_parameters))
                   if u and name not in searched))


#: registers a thread may spend on the per-simulation values of its K simulations (of 255): above
#: it K halves. Calibrated on rWW with ptxas for sm_90 at N = 80 (CUDA 13.0): float32 K = 4 with
#: few parameters per element fits (168 registers), with all 18 per element it did not (245; K = 2:
#: 127); float64 K = 2 fits (156), K = 4 spilled. The generated Hopf and LaNMM defaults compile
#: without spills (tests/test_cuda_kernel.py). Not yet tuned on a GPU (benchmarks/gpu_check.sh
#: reports registers and local memory of the variants it times).
REGISTER_BUDGET = 80


def per_simulation_registers(model, dtype, umask: int) -> int:
    """An estimate of the registers one simulation takes in a thread: the state, the block sums and
    the per-element parameters, plus the Balloon (4), its input, sigma sqrt(dt), in the precision
    (2 per value in float64), and the noise key (2)."""
    P = len(model.kernel_parameters)
    per_element = P - bin(umask & ((1 << P) - 1)).count("1")
    S, O = len(model.state_variables), len(model.summary_observables)
    width = 2 if np.dtype(dtype) == np.float64 else 1
    return width * (2 * S + O + per_element + 6) + 2


def choose_sims_per_block(model, dtype, umask: int) -> int:
    """Simulations per thread block K: the largest of 8, 4, 2, 1 whose per-simulation registers
    (:func:`per_simulation_registers`) fit :data:`REGISTER_BUDGET` (registers grow with K times
    the per-simulation values; K = 1 always). rWW at N = 80 gets the K of the measured rWW kernel:
    float32 4 (2 with every parameter per element), float64 2 (1)."""
    r = per_simulation_registers(model, dtype, umask)
    for k in (8, 4, 2):
        if k * r <= REGISTER_BUDGET:
            return k
    return 1


def compile_defines(dtype, n: int, k: int, umask: int, fast_math: bool = False) -> tuple[str, ...]:
    name = np.dtype(dtype).name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if k not in SIMS_PER_BLOCK:
        raise ValueError(f"simulations per block must be one of {SIMS_PER_BLOCK}, got {k!r}")
    return (f"-DRB_REAL={'float' if name == 'float32' else 'double'}", f"-DRB_N={int(n)}", f"-DRB_K={int(k)}",
            f"-DRB_UMASK={int(umask)}ull", f"-DRB_FAST_INTRINSICS={int(bool(fast_math))}")


def make_tiles(subject_index, k: int):
    """The tiling of :func:`raybrain.kernel_call.make_tiles` in the kernel's types: ``tile_subj``
    (T,) int32, ``tile_src`` (T, k) int32 (padding lanes repeat the tile's last element; they
    compute but never write) and ``tile_real`` (T, k) uint8."""
    subj, src, real = _make_tiles(np.asarray(asnumpy(subject_index), dtype=np.int64).reshape(-1), k)
    return subj.astype(np.int32), src.astype(np.int32), real.astype(np.uint8)


def n_samples(step_a: int, step_b: int, k_h: int, k_tr: int, m_burn: int) -> int:
    """Samples produced by the steps ``step_a .. step_b - 1``: hemodynamic steps m in
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


def check_call(call, hemo_dtype=None) -> tuple[int, int]:
    """Shapes, dtypes and contiguity the kernel relies on (it indexes raw pointers): ValueError else.
    ``hemo_dtype``: the dtype ``H`` must have (default: the state's, as on the device)."""
    m = call.model
    if not m.fused_path:
        raise ValueError(f"model {m.name!r} declares no scalar_drift: it has no fused CUDA path")
    X = call.X
    dtype = X.dtype
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"state dtype must be float32 or float64, got {dtype}")
    S, P, NS = len(m.state_variables), len(m.kernel_parameters), len(m.state_variables) + len(m.summary_observables)
    if X.ndim != 3 or X.shape[0] != S:
        raise ValueError(f"X must be (S, B, N) with S = {S}, got shape {X.shape}")
    _, B, N = X.shape

    def need(name, a, shape, dt):
        if tuple(a.shape) != tuple(shape) or a.dtype != dt:
            raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {np.dtype(dt).name}, "
                             f"got {tuple(a.shape)} {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")

    need("X", X, (S, B, N), dtype)
    need("H", call.H, (4, B, N), dtype if hemo_dtype is None else hemo_dtype)
    need("acc", call.acc, (B, N), dtype)
    need("sums", call.sums, (NS, B, N), np.float64)
    CS = call.CS
    if CS.ndim != 3:
        raise ValueError(f"CS must be (S, N, N), got shape {CS.shape}")
    need("CS", CS, (CS.shape[0], N, N), dtype)
    need("PAR", call.PAR, (B, P, N), dtype)
    need("keys", call.keys, (B,), np.uint64)
    bold_out = call.bold_out
    if bold_out.ndim != 3 or bold_out.shape[0] != B or bold_out.shape[2] != N:
        raise ValueError(f"bold_out must be (B, T, N) = ({B}, T, {N}), got {bold_out.shape}")
    need("bold_out", bold_out, bold_out.shape, dtype)
    n_needed = n_samples(int(call.step0), int(call.step0) + int(call.n_steps), int(call.k_h), int(call.k_tr),
                         int(call.m_burn))
    if bold_out.shape[1] < n_needed:
        raise ValueError(f"bold_out holds {bold_out.shape[1]} samples, the call produces {n_needed}")
    si = np.asarray(asnumpy(call.subject_index)).reshape(-1)
    if si.shape != (B,) or (B and (si.min() < 0 or si.max() >= CS.shape[0])):
        raise ValueError(f"subject_index must have shape ({B},) with values in [0, {CS.shape[0]})")
    if len(call.coef) != N_COEF:
        raise ValueError(f"coef must hold the {N_COEF} hemodynamic coefficients, got {len(call.coef)}")
    return B, N


class Launch(NamedTuple):
    """A checked call's kernel variant: batch shape, uniform mask, simulations per block, launches."""

    B: int
    N: int
    umask: int
    k: int
    launches: list  # launch_plan(...)


def plan_call(call, lanes=None, umask=None, steps_per_launch=None, hemo_dtype=None) -> Launch:
    """What :func:`raybrain.cuda.launch.run_cuda` and its host harness share before launching:
    :func:`check_call`, the uniform mask (from ``PAR`` unless given), K simulations per block
    (:func:`choose_sims_per_block` unless ``lanes``) and the launches (none for an empty call)."""
    B, N = check_call(call, hemo_dtype)
    umask = uniform_mask(call.model, call.PAR) if umask is None else int(umask)
    k = choose_sims_per_block(call.model, call.X.dtype, umask) if lanes is None else int(lanes)
    launches = [] if B == 0 else launch_plan(call.step0, call.n_steps, call.k_h, call.k_tr, call.m_burn,
                                             steps_per_launch)
    return Launch(B, N, umask, k, launches)


# ---- rb::Args<T> (model_core.cuh), packed: one layout on the host and the device ------------------
ARGS_POINTERS = ("X", "H", "acc", "sums", "CS", "tile_subj", "tile_src", "tile_real", "PAR", "PS", "keys",
                 "bold_out")
ARGS_INTEGERS = ("B", "k_h", "k_tr", "m_burn")
ARGS_REALS = ("dt", "inv_kh", "dt_h")


def args_dtype(dtype) -> np.dtype:
    """The NumPy structured dtype of ``rb::Args<T>`` for ``T`` = ``dtype`` (C alignment rules, as
    nvcc and g++ lay the struct out; the host harness reports its layout, and a test compares)."""
    real = np.dtype(dtype)
    fields = ([(p, np.uint64) for p in ARGS_POINTERS] + [(n, np.int64) for n in ARGS_INTEGERS]
              + [(r, real) for r in ARGS_REALS] + [("h", real, (N_COEF,)), ("bold_on", np.int32),
                                                   ("n_out", np.int32)])
    return np.dtype(fields, align=True)


def pack_args(call, pointers: dict, B: int) -> np.ndarray:
    """``rb::Args<T>`` of ``call`` as one packed record (a ``uint8`` array of its bytes):
    ``pointers`` maps each of :data:`ARGS_POINTERS` to its address (host or device)."""
    real = call.X.dtype.type
    rec = np.zeros((), dtype=args_dtype(call.X.dtype))
    for name in ARGS_POINTERS:
        rec[name] = pointers[name]
    rec["B"], rec["k_h"], rec["k_tr"], rec["m_burn"] = B, int(call.k_h), int(call.k_tr), int(call.m_burn)
    rec["dt"], rec["inv_kh"], rec["dt_h"] = real(call.dt), real(call.inv_kh), real(call.dt_h)
    rec["h"] = np.asarray([real(c) for c in call.coef], dtype=call.X.dtype)
    rec["bold_on"] = int(bool(call.bold_on))
    rec["n_out"] = int(call.bold_out.shape[1])
    return np.frombuffer(rec.tobytes(), dtype=np.uint8).copy()
