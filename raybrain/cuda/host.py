"""The CPU harness of a model's CUDA kernel: the kernel's own code run serially, for CI.

:func:`run_host` takes a :class:`~raybrain.kernel_call.KernelCall` of NumPy arrays (updated in
place, as :func:`raybrain.cuda.launch.run_cuda` updates CuPy arrays) and runs ``model_host.cpp``:
the per-step maths and the per-thread program of ``model_core.cuh`` with the model's generated
header (:mod:`raybrain.cuda.codegen`) -- the code the CUDA kernel runs -- compiled for the host,
with the kernel's schedule emulated (every thread of a block, one after the other, between the
barriers). The tiling, the uniform-parameter mask, the launch plan and the packed argument struct
come from :mod:`raybrain.cuda.plan`, as for the GPU launcher.

The shared library is compiled on first use per (model declaration, N, K, uniform mask) with
``$CXX``, ``g++``, ``c++`` or ``clang++`` (``-O2 -ffp-contract=off``; else ``nvcc -x cu`` for the
host) into ``$RAYBRAIN_CACHE_DIR/cuda-host`` (default ``~/.cache/raybrain/kernels/cuda-host``, or a
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
N_CONFIG = 9  # rb_host_config: N, K, UMASK, shared bytes (float32, float64), S, C, P, O


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


def build_host_library(model, n: int, k: int, umask: int) -> ctypes.CDLL:
    """The compiled harness of ``model`` for ``n`` regions, ``k`` simulations per block and uniform
    mask ``umask`` (both precisions in one library); RuntimeError when no compiler is found or it
    fails, or when the library's configuration or argument layout is not the planned one."""
    key = (plan.source_hash(model), int(n), int(k), int(umask))
    if key in _LIBS:
        return _LIBS[key]
    cmd = host_compiler()
    if cmd is None:
        raise RuntimeError("no C++ compiler (g++/c++/clang++) or nvcc found to build the CUDA kernel's host harness")
    defines = list(plan.compile_defines(np.float32, n, k, umask)[1:4])
    tag = hashlib.sha256((key[0] + " ".join(cmd[1:] + defines)).encode()).hexdigest()[:16]
    d = _cache_dir()
    path = os.path.join(d, f"{model.name}_host_n{n}_k{k}_u{umask:x}_{tag}.so")
    if not os.path.exists(path):
        fd, src = tempfile.mkstemp(suffix=".cpp", dir=d)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(plan.host_source(model))
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
        os.close(fd)
        full = [*cmd, *defines, src, "-o", tmp]
        proc = subprocess.run(full, capture_output=True, text=True)
        os.unlink(src)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise RuntimeError(f"building the host harness failed ({' '.join(full)}):\n{proc.stderr[-4000:]}")
        os.replace(tmp, path)
    lib = ctypes.CDLL(path)
    P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    for name in ("rb_host_f32", "rb_host_f64"):
        f = getattr(lib, name)
        f.argtypes = [P, I, L, L, I]
        f.restype = I
    for name in ("rb_host_config", "rb_host_layout_f32", "rb_host_layout_f64"):
        getattr(lib, name).argtypes = [P]
    cfg = config(lib)
    m = model
    want = (n, k, umask, plan.smem_bytes(m, np.float32, n, k), plan.smem_bytes(m, np.float64, n, k),
            len(m.state_variables), len(m.coupled_variables), len(m.kernel_parameters), len(m.summary_observables))
    if cfg != want:
        raise RuntimeError(f"host harness configuration {cfg} does not match the plan {want}")
    for dtype in (np.float32, np.float64):
        if layout(lib, dtype) != expected_layout(dtype):
            raise RuntimeError(f"rb::Args<{np.dtype(dtype).name}> is laid out {layout(lib, dtype)}, "
                               f"plan.args_dtype says {expected_layout(dtype)}")
    _LIBS[key] = lib
    return lib


def config(lib) -> tuple:
    """The library's compile-time configuration (``rb_host_config``)."""
    cfg = np.zeros(N_CONFIG, np.int64)
    lib.rb_host_config(cfg.ctypes.data)
    c = [int(x) for x in cfg]
    c[2] &= (1 << 64) - 1
    return tuple(c)


def layout(lib, dtype) -> tuple:
    """``(sizeof, offsets...)`` of ``rb::Args<T>`` as the compiler laid it out."""
    out = np.zeros(1 + len(args_fields()), np.int64)
    (lib.rb_host_layout_f32 if np.dtype(dtype) == np.float32 else lib.rb_host_layout_f64)(out.ctypes.data)
    return tuple(int(x) for x in out)


def args_fields() -> tuple[str, ...]:
    return plan.ARGS_POINTERS + plan.ARGS_INTEGERS + plan.ARGS_REALS + ("h", "bold_on", "n_out")


def expected_layout(dtype) -> tuple:
    dt = plan.args_dtype(dtype)
    return (dt.itemsize, *(dt.fields[f][1] for f in args_fields()))


def run_host(call, lanes=None, steps_per_launch=None, umask=None) -> None:
    """Advance ``call`` (NumPy arrays) in place with the CUDA kernel's code on the host.

    ``lanes``: simulations per block K (default :func:`raybrain.cuda.plan.choose_sims_per_block`);
    ``steps_per_launch``: split the call as the GPU launcher would; ``umask``: override the
    uniform-parameter mask (0 reads every parameter per element; a set bit must be truly uniform).

    The CUDA kernel keeps the hemodynamic state in the simulation's dtype, while a CPU simulation
    holds it in float64 (:attr:`raybrain.integrate.Simulation.hemo_dtype`): such a state is run
    as the device would hold it (a rounded copy) and written back.
    """
    dtype = call.X.dtype
    lp = plan.plan_call(call, lanes, umask, steps_per_launch, hemo_dtype=call.H.dtype)
    if not lp.launches:
        return
    H = call.H
    work = H if H.dtype == dtype else np.ascontiguousarray(H, dtype=dtype)
    lib = build_host_library(call.model, lp.N, lp.k, lp.umask)
    tile_subj, tile_src, tile_real = plan.make_tiles(call.subject_index, lp.k)
    PS = np.ascontiguousarray(call.PAR[0, :, 0])
    arrays = dict(X=call.X, H=work, acc=call.acc, sums=call.sums, CS=call.CS, tile_subj=tile_subj,
                  tile_src=tile_src, tile_real=tile_real, PAR=call.PAR, PS=PS, keys=call.keys, bold_out=call.bold_out)
    args = plan.pack_args(call, {k: a.ctypes.data for k, a in arrays.items()}, lp.B)
    f = lib.rb_host_f32 if dtype == np.float32 else lib.rb_host_f64
    for s0, n, o0 in lp.launches:
        rc = f(args.ctypes.data, len(tile_subj), s0, n, o0)
        if rc != 0:
            raise RuntimeError(f"host harness returned {rc}")
    if work is not H:
        H[...] = work
