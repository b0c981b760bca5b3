"""The CPU harness of the CUDA kernel: the kernel's own code run serially, for CI.

:func:`run_rww_host` takes exactly the arguments of :func:`raybrain.fused.run_rww` (NumPy arrays,
updated in place) and runs ``rww_host.cpp``: the per-step maths and the per-thread program of
``rww_core.cuh`` -- the code the CUDA kernel runs -- compiled for the host, with the kernel's
schedule emulated (every thread of a block, one after the other, between the barriers). The
tiling, the uniform-parameter mask and the launch plan come from :mod:`raybrain.cuda.plan`, as
for the GPU launcher.

The shared library is compiled on first use per (N, K, uniform mask) with ``$CXX``, ``g++``,
``c++`` or ``clang++`` (``-O2 -ffp-contract=off``; else ``nvcc -x cu`` for the host) into
``$RAYBRAIN_CACHE_DIR/cuda-host`` (default ``~/.cache/raybrain/kernels/cuda-host``, or a
temporary directory when that is off or not writable); file names carry a hash of the sources
and flags, files are written atomically. Slow (one core, no SIMD across regions): meant for tests.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from . import plan

_LIBS: dict = {}
_CFLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")


def host_compiler() -> list[str] | None:
    """The command that builds the harness: a C++ compiler, else nvcc (host code only), else None."""
    cands = [os.environ["CXX"]] if os.environ.get("CXX") else []
    for c in cands + ["g++", "c++", "clang++"]:
        path = shutil.which(c)
        if path:
            return [path, *_CFLAGS]
    nvcc = shutil.which("nvcc")
    if nvcc:
        return [nvcc, "-x", "cu", "-O2", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-ffp-contract=off"]
    return None


def _cache_dir() -> str:
    d = os.environ.get("RAYBRAIN_CACHE_DIR")
    if d is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "raybrain", "kernels")
    if d:
        d = os.path.join(d, "cuda-host")
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    return tempfile.mkdtemp(prefix="raybrain-cuda-host-")


def build_host_library(n: int, k: int, umask: int) -> ctypes.CDLL:
    """The compiled harness for ``n`` regions, ``k`` simulations per block and uniform mask
    ``umask`` (both precisions in one library); RuntimeError when no compiler is found or it fails."""
    key = (int(n), int(k), int(umask))
    if key in _LIBS:
        return _LIBS[key]
    cmd = host_compiler()
    if cmd is None:
        raise RuntimeError("no C++ compiler (g++/c++/clang++) or nvcc found to build the CUDA kernel's host harness")
    defines = list(plan.compile_defines(np.float32, n, k, umask)[1:4])
    tag = hashlib.sha256((plan.source_hash() + " ".join(cmd[1:] + defines)).encode()).hexdigest()[:16]
    d = _cache_dir()
    path = os.path.join(d, f"rww_host_n{n}_k{k}_u{umask:05x}_{tag}.so")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
        os.close(fd)
        full = [*cmd, *defines, "-I", plan.HERE, os.path.join(plan.HERE, "rww_host.cpp"), "-o", tmp]
        proc = subprocess.run(full, capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise RuntimeError(f"building the host harness failed ({' '.join(full)}):\n{proc.stderr[-4000:]}")
        os.replace(tmp, path)
    lib = ctypes.CDLL(path)
    for name, real in (("rb_host_rww_f32", ctypes.c_float), ("rb_host_rww_f64", ctypes.c_double)):
        f = getattr(lib, name)
        P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
        f.argtypes = [P] * 10 + [P, P, P, P, I, P, P, P, L, L, real, L, real, real, L, L, P, I, P, I, I]
        f.restype = I
    lib.rb_host_config.argtypes = [ctypes.c_void_p]
    cfg = np.zeros(5, np.int32)
    lib.rb_host_config(cfg.ctypes.data)
    if tuple(cfg[:3]) != (n, k, umask) or cfg[3] != plan.smem_bytes(np.float32, n, k) \
            or cfg[4] != plan.smem_bytes(np.float64, n, k):
        raise RuntimeError(f"host harness configuration {cfg} does not match (N, K, mask) = {key}")
    _LIBS[key] = lib
    return lib


def run_rww_host(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys, step0,
                 n_steps, dt, k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out, lanes=None,
                 steps_per_launch=None, umask=None):
    """:func:`raybrain.fused.run_rww`'s contract, computed by the CUDA kernel's code on the host.

    ``lanes``: simulations per block K (default :func:`raybrain.cuda.plan.choose_sims_per_block`);
    ``steps_per_launch``: split the call as the GPU launcher would; ``umask``: override the
    uniform-parameter mask (0 reads every parameter per element; a set bit must be truly uniform).

    The CUDA kernel keeps the hemodynamic state in the simulation's dtype, while a CPU simulation
    holds it in float64 (:attr:`raybrain.integrate.Simulation.hemo_dtype`): such a state is run
    as the device would hold it (rounded copies) and written back.
    """
    hemo = (hs, hf, hv, hq)
    if any(h.dtype != SE.dtype for h in hemo):
        work = [np.ascontiguousarray(h, dtype=SE.dtype) for h in hemo]
        run_rww_host(SE, SI, *work, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys, step0, n_steps, dt,
                     k_h, inv_kh, dt_h, k_tr, m_burn, coef, bold_on, bold_out, lanes=lanes,
                     steps_per_launch=steps_per_launch, umask=umask)
        for h, w in zip(hemo, work):
            h[...] = w
        return
    c = plan.prepare_call(SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS, subject_index, PAR, keys,
                          step0, n_steps, k_h, k_tr, m_burn, coef, bold_on, bold_out, lanes, umask)
    if c is None:
        return
    step0, n_steps, k_h, k_tr, m_burn, k = c.step0, c.n_steps, c.k_h, c.k_tr, c.m_burn, c.k
    dtype = SE.dtype
    lib = build_host_library(c.N, k, c.umask)
    tile_subj, tile_src, tile_real = plan.make_tiles(subject_index, k)
    PS = np.ascontiguousarray(PAR[0, :, 0])
    coef_a = np.asarray([dtype.type(c) for c in coef], dtype=dtype)
    real = dtype.type
    f = lib.rb_host_rww_f32 if dtype == np.float32 else lib.rb_host_rww_f64
    ptr = [a.ctypes.data for a in (SE, SI, hs, hf, hv, hq, acc, sum_rE, sum_SE, sum_SI, CS)]
    tiles = [a.ctypes.data for a in (tile_subj, tile_src, tile_real)]
    for s0, n, o0 in plan.launch_plan(step0, n_steps, k_h, k_tr, m_burn, steps_per_launch):
        rc = f(*ptr, *tiles, len(tile_subj), PAR.ctypes.data, PS.ctypes.data, keys.ctypes.data, s0, n,
               real(dt), k_h, real(inv_kh), real(dt_h), k_tr, m_burn, coef_a.ctypes.data, int(bool(bold_on)),
               bold_out.ctypes.data, bold_out.shape[1], o0)
        if rc != 0:
            raise RuntimeError(f"host harness returned {rc}")
