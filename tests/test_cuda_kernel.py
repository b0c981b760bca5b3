"""The fused CUDA kernel (raybrain/cuda) without a GPU, and on one where there is.

* Host harness: ``rww_core.cuh`` -- the maths and per-thread program the kernel runs -- compiled
  for the host (g++, else nvcc) and run with the kernel's schedule (raybrain.cuda.host), held to
  the NumPy array path (``fused="never"``) on the same noise keys: 2 connectomes in one batch,
  22 s at dt 1 ms with 2 neural steps per hemodynamic step and a burn-in that is not a whole
  number of them (B = 4, 28 TRs). Measured (g++ 12, x86-64), as max |diff| / max |reference|:
  float64: BOLD 2.3e-15, summaries (r_E, S_E, S_I) <= 2.0e-14, FC max |diff| 1.3e-15;
  float32 vs the float32 array path: BOLD 2.0e-6, summaries <= 5.9e-8, FC r >= 0.99999997;
  float32 vs the float64 array path: BOLD 5.0e-5, summaries <= 1.1e-6, FC r >= 0.99998 (the float32
  array path itself: 0.99998).
  In float64 it equals raybrain.fused's single-element numba kernel bit for bit (same operations in
  the same order, glibc's libm on both sides).
* Launch plan, tiling, batch independence, common random numbers, chunking: bit for bit; the
  launcher's argument marshalling checked against the kernel's C signature with a stand-in for CuPy.
* nvcc: ``rww.cu`` compiles to sm_90 cubin; registers and spills are reported (and spills must be 0
  for the default variants); NVRTC (where CuPy is installed) compiles the very source CuPy gets.
* With CuPy and a CUDA device: the GPU kernel against the host harness.
Skipped with a reason where the compiler, nvcc, CuPy or a device is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from raybrain import features as F
from raybrain.cuda import host, plan
from raybrain.cuda.simulation import run_chunk
from raybrain.data import list_subjects, load_subject
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.objective import scale_sc
from raybrain.random import stream_keys

N_REG = 80
B = 4

needs_cxx = pytest.mark.skipif(host.host_compiler() is None,
                               reason="no C++ compiler (g++/c++/clang++) or nvcc to build the kernel's host harness")
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found: cannot compile the kernel for sm_90")

# 20 s recorded after a 2.0005 s burn-in, dt 1 ms, hemodynamic step 2 ms (k_h = 2)
LONG = SimulationSettings(duration=20.0, burn_in=2.0005, dt=1e-3, bold_dt=2e-3, tr=0.72, dtype="float64",
                          fused="never")
SHORT = LONG.replace(duration=1.44, burn_in=0.2005)


@pytest.fixture(scope="module")
def sc2():
    return np.stack([scale_sc(load_subject(s).sc, 0.2) for s in list_subjects("hcp")[:2]])


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(7)
    return dict(G=np.linspace(0.6, 2.0, B), w_EE=rng.uniform(1.3, 1.5, (B, N_REG)), sigma=np.linspace(0.004, 0.008, B))


SUBJ = np.arange(B) % 2  # both connectomes in one batch


def _host(sim, n_steps=None, **kw):
    """Advance ``sim`` by ``n_steps`` (default: to the end of its burn-in + duration, as
    ``Simulation.run``) through the kernel's host harness; returns BOLD, times, summaries."""
    s = sim.settings
    if n_steps is None:
        n_steps = max(sim.state.step, s.n_steps(s.burn_in)) + s.n_steps(s.duration) - sim.state.step
    bold, times = run_chunk(sim, n_steps, host.run_rww_host, **kw)
    means = {k: v / max(sim.state.n_summed, 1) for k, v in sim.state.sums.items()}
    return bold, times, means


def _max_rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def _fc_r(a, b):
    """Pearson r of the upper triangles of the FCs of two (T, N) series."""
    iu = np.triu_indices(a.shape[1], 1)
    fa, fb = F.fc(np.asarray(a, np.float64)), F.fc(np.asarray(b, np.float64))
    return float(np.corrcoef(fa[iu], fb[iu])[0, 1])


@pytest.fixture(scope="module")
def ref64(sc2, params):
    return Simulation("rww", sc2, params, LONG, subject_index=SUBJ).run()


# -- planning (shared with the GPU launcher) ----------------------------------------------------------

def test_param_order_matches_fused():
    from raybrain.fused import RWW_PARAM_ORDER
    assert plan.RWW_PARAM_ORDER == RWW_PARAM_ORDER


def test_launch_plan_counts_samples():
    for step0, n, k_h, k_tr, m_burn, per in [(0, 100, 3, 4, 5, 17), (7, 1000, 10, 72, 3, 250), (5, 9, 1, 1, 0, 2),
                                            (0, 50, 2, 3, 100, 7), (13, 400, 4, 5, 2, None)]:
        p = plan.launch_plan(step0, n, k_h, k_tr, m_burn, per)
        assert p[0][0] == step0 and sum(c[1] for c in p) == n
        for (a, na, oa), (b, _, ob) in zip(p, p[1:]):
            assert a + na == b and b % k_h == 0  # launches end on hemodynamic-step boundaries
            assert ob - oa == plan.n_samples(a, b, k_h, k_tr, m_burn)
        brute = sum(1 for m in range(step0 // k_h + 1, (step0 + n) // k_h + 1) if m % k_tr == 0 and m > m_burn)
        assert plan.n_samples(step0, step0 + n, k_h, k_tr, m_burn) == brute
    subj, src, real = plan.make_tiles([1, 0, 1, 1, 0], 2)
    assert subj.tolist() == [0, 1, 1] and src.tolist() == [[1, 4], [0, 2], [3, 3]]
    assert real.tolist() == [[1, 1], [1, 1], [1, 0]]


# -- host harness vs the NumPy path ---------------------------------------------------------------

@needs_cxx
def test_host_harness_float64_matches_numpy(sc2, params, ref64):
    sim = Simulation("rww", sc2, params, LONG, subject_index=SUBJ)
    bold, times, means = _host(sim)
    np.testing.assert_array_equal(times, ref64.times)
    assert bold.shape == ref64.bold.shape == (B, 28, N_REG) and bold.dtype == np.float64
    assert np.all(np.isfinite(bold)) and np.abs(ref64.bold).max() > 0
    assert _max_rel(bold, ref64.bold) < 1e-9  # measured 2.3e-15
    for k in ("r_E", "S_E", "S_I"):
        assert _max_rel(means[k], ref64.means[k]) < 1e-9, k  # measured <= 2.0e-14
    np.testing.assert_allclose(F.fc(bold), F.fc(ref64.bold), atol=1e-9)
    # the comparison has teeth: elements (and connectomes) differ
    assert _max_rel(ref64.bold[0], ref64.bold[2]) > 1e-3 and _max_rel(ref64.bold[0], ref64.bold[1]) > 1e-3


@needs_cxx
def test_host_harness_float32_matches_numpy(sc2, params, ref64):
    s32 = LONG.replace(dtype="float32")
    ref32 = Simulation("rww", sc2, params, s32, subject_index=SUBJ).run()
    sim = Simulation("rww", sc2, params, s32, subject_index=SUBJ)
    bold, _, means = _host(sim)
    assert bold.dtype == np.float32
    assert _max_rel(bold, ref32.bold) < 1e-4  # measured 2.0e-6
    for k in ("r_E", "S_E", "S_I"):
        assert _max_rel(means[k], ref32.means[k]) < 1e-5, k  # measured <= 5.9e-8
        assert _max_rel(means[k], ref64.means[k]) < 1e-4, k  # measured <= 1.1e-6
    for b in range(B):
        assert _fc_r(bold[b], ref32.bold[b]) >= 0.9999  # measured >= 0.99999997
        assert _fc_r(bold[b], ref64.bold[b]) >= 0.99  # measured >= 0.99998


@needs_cxx
def test_host_harness_float64_matches_numba_single_element_kernel(sc2, params):
    """The same operations in the same order as raybrain.fused's single-element kernel (lanes=0):
    bit for bit here (g++ 12 and numba both calling glibc's libm); held to 1e-13."""
    s = SHORT.replace(fused="always")
    fused = Simulation("rww", sc2, params, s, subject_index=SUBJ, lanes=0).run()
    bold, _, means = _host(Simulation("rww", sc2, params, s, subject_index=SUBJ))
    assert _max_rel(bold, fused.bold) < 1e-13
    for k in means:
        assert _max_rel(means[k], fused.means[k]) < 1e-13, k


@needs_cxx
def test_host_harness_is_batch_tiling_and_chunk_independent(sc2, params):
    """Bit for bit: simulations per block K (padding lanes), the uniform mask, launches split on
    hemodynamic-step boundaries, a simulation alone or in a batch; common random numbers."""
    base, _, bm = _host(Simulation("rww", sc2, params, SHORT, subject_index=SUBJ), lanes=4)
    assert base.shape == (B, 2, N_REG)
    for kw in (dict(lanes=1), dict(lanes=8), dict(lanes=2, umask=0), dict(lanes=4, steps_per_launch=37)):
        bold, _, means = _host(Simulation("rww", sc2, params, SHORT, subject_index=SUBJ), **kw)
        np.testing.assert_array_equal(bold, base, err_msg=str(kw))
        for k in means:
            np.testing.assert_array_equal(means[k], bm[k], err_msg=str(kw))
    # element 3 alone, with its own noise stream and connectome
    one = {k: (np.asarray(v)[[3]] if np.ndim(v) else v) for k, v in params.items()}
    alone, _, am = _host(Simulation("rww", sc2[[1]], one, SHORT, streams=[3]), lanes=4)
    np.testing.assert_array_equal(alone[0], base[3])
    np.testing.assert_array_equal(am["r_E"][0], bm["r_E"][3])
    # two chunks, the first ending mid hemodynamic step (k_h = 2), give the same BOLD
    total = SHORT.n_steps(SHORT.burn_in) + SHORT.n_steps(SHORT.duration)
    sim = Simulation("rww", sc2, params, SHORT, subject_index=SUBJ)
    first, _, _ = _host(sim, 921)
    second, _, m2 = _host(sim, total - 921)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), base)
    for k in m2:  # the early flush of the block sums at the chunk end: equal to rounding
        np.testing.assert_allclose(m2[k], bm[k], rtol=1e-13)
    # common random numbers: equal keys and parameters give equal results
    keys = stream_keys(0, np.zeros(B, np.int64))
    same = dict(G=1.2, sigma=0.006)
    crn, _, _ = _host(Simulation("rww", sc2[[0]], same, SHORT, batch=B, keys=keys))
    for b in range(1, B):
        np.testing.assert_array_equal(crn[b], crn[0])


# -- device code: nvcc / NVRTC ------------------------------------------------------------------------

def _ptxas_info(text):
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", text)]
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill stores", text)]
    return regs, spills


@needs_nvcc
@pytest.mark.parametrize("dtype,k,umask", [("float32", 4, 0x3FFEE), ("float64", 2, 0x3FFEE), ("float32", 2, 0)])
def test_nvcc_compiles_kernel_for_sm90(tmp_path, dtype, k, umask):
    """sm_90 cubin of rww.cu (N = 80; umask 0x3FFEE: G and w_IE per element). Measured with CUDA
    13.0: float32 K=4 166 registers, float64 K=2 162, float32 K=2 (all per element) 127; 0 spills."""
    defines = plan.compile_defines(dtype, N_REG, k, umask)
    cmd = [NVCC, "-cubin", "-arch=sm_90", "-std=c++17", "-Xptxas", "-v", *defines, "-I", plan.HERE,
           os.path.join(plan.HERE, "rww.cu"), "-o", str(tmp_path / "rww.cubin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    regs, spills = _ptxas_info(proc.stderr)
    print(f"\nsm_90 {dtype} N={N_REG} K={k} umask={umask:#x}: {regs[0]} registers, {spills[0]} bytes spill stores, "
          f"{plan.smem_bytes(dtype, N_REG, k)} B shared per block of {plan.threads_per_block(N_REG)} threads")
    assert regs and regs[0] <= 255 and spills == [0]


def test_nvrtc_compiles_kernel_source():
    """The exact source and options CuPy's RawModule gets, through NVRTC (needs CuPy's NVRTC, no device)."""
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy not installed: NVRTC check skipped")
    from raybrain.cuda.launch import compile_options
    try:
        prog = compiler._NVRTCProgram(plan.kernel_source(), "rww.cu", method="ptx")
        prog.compile(compile_options("float32", N_REG, 4, 0x3FFEE) + ("-arch=compute_90",
                                                                      "--device-as-default-execution-space"))
    except compiler.CompileException:
        raise
    except Exception as e:  # NVRTC library missing or private API moved
        pytest.skip(f"NVRTC not usable here: {e}")


def test_launcher_imports_without_cupy():
    code = ("import sys, raybrain.cuda, raybrain.cuda.launch; "
            "assert 'cupy' not in sys.modules, 'raybrain.cuda imported cupy'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- the launcher's marshalling, against the kernel's signature, without a GPU ----------------------

_C_TYPES = {"RB_REAL": None, "double": np.float64, "int": np.int32, "unsigned char": np.uint8,
            "unsigned long long": np.uint64, "long long": np.int64}


def _kernel_signature():
    """[(C base type, is_pointer, name)] of ``rww_fused`` as declared in rww.cu."""
    src = plan.read_source("rww.cu")
    decl = src[src.index("rww_fused(") + len("rww_fused("):src.index(")\n{")]
    out = []
    for p in decl.split(","):
        p = " ".join(p.replace("__restrict__", " ").replace("const", " ").split())
        ptr = "*" in p
        words = p.replace("*", " ").split()
        out.append((" ".join(words[:-1]), ptr, words[-1]))
    return out


class _FakeKernel:
    """Stands in for CuPy's RawKernel: checks each launch against the kernel's C signature and the
    compile-time configuration, then runs the host harness of that configuration."""

    def __init__(self, options):
        d = dict(o[2:].split("=", 1) for o in options if o.startswith("-D"))
        self.real = np.float32 if d["RB_REAL"] == "float" else np.float64
        self.n, self.k, self.umask = int(d["RB_N"]), int(d["RB_K"]), int(d["RB_UMASK"].rstrip("u"))
        self.max_dynamic_shared_size_bytes = 48 * 1024
        self.launches = []

    def __call__(self, grid, block, args, shared_mem=0):
        sig = _kernel_signature()
        assert len(args) == len(sig)
        for (ctype, ptr, name), a in zip(sig, args):
            want = self.real if ctype == "RB_REAL" else _C_TYPES[ctype]
            if ptr:
                assert isinstance(a, np.ndarray) and a.dtype == want and a.flags.c_contiguous, name
            else:
                assert isinstance(a, np.generic) and a.dtype == want, (name, type(a))
        assert block == (plan.threads_per_block(self.n),)
        assert shared_mem == plan.smem_bytes(self.real, self.n, self.k) <= self.max_dynamic_shared_size_bytes
        lib = host.build_host_library(self.n, self.k, self.umask)
        cfg = np.zeros(5, np.int32)
        lib.rb_host_config(cfg.ctypes.data)
        assert shared_mem == cfg[3 if self.real == np.float32 else 4]  # rb::Smem<T, N, K>::BYTES
        f = lib.rb_host_rww_f32 if self.real == np.float32 else lib.rb_host_rww_f64
        c = [a.ctypes.data if isinstance(a, np.ndarray) else a.item() for a in args]
        assert args[11].shape[0] == grid[0]  # one block per tile
        assert f(*c[:14], grid[0], *c[14:]) == 0
        self.launches.append(int(args[18]))


class _FakeCupy:
    asarray = staticmethod(np.asarray)
    ascontiguousarray = staticmethod(np.ascontiguousarray)

    class RawModule:
        def __init__(self, code, options):
            assert code == plan.kernel_source() and '#include "rww_core.cuh"' not in code  # inlined
            self.options = options

        def get_function(self, name):
            assert name == "rww_fused"
            return _FakeKernel(self.options)


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_launcher_marshalling_matches_kernel_signature(sc2, params, dtype, monkeypatch):
    """run_rww_cuda with a stand-in for CuPy that checks every argument's C type against the
    signature of rww_fused and runs the host harness: the same results as run_rww_host."""
    from raybrain.cuda import launch
    monkeypatch.setattr(launch, "_cupy", lambda: _FakeCupy)
    monkeypatch.setattr(launch, "_KERNELS", {})
    # a CuPy simulation holds its hemodynamic state in its own dtype, as the kernel does
    monkeypatch.setattr(Simulation, "hemo_dtype", property(lambda self: self.dtype))
    s = SHORT.replace(dtype=dtype)
    want, _, wm = _host(Simulation("rww", sc2, params, s, subject_index=SUBJ))
    for kw in (dict(), dict(steps_per_launch=300, lanes=1)):
        sim = Simulation("rww", sc2, params, s, subject_index=SUBJ)
        n = s.n_steps(s.burn_in) + s.n_steps(s.duration)
        bold, _ = run_chunk(sim, n, launch.run_rww_cuda, **kw)
        np.testing.assert_array_equal(bold, want)
        for k in wm:
            np.testing.assert_array_equal(sim.state.sums[k] / sim.state.n_summed, wm[k])
    by_k = {key[2]: kern for key, (kern, _) in launch._KERNELS.items()}
    assert sorted(by_k) == [1, plan.choose_sims_per_block(dtype, plan.uniform_mask(
        np.stack([sim.params[k] for k in plan.RWW_PARAM_ORDER], axis=1)))]
    assert by_k[1].launches == [300] * 5 + [140]  # split on hemodynamic-step boundaries (k_h = 2)
    for kern in by_k.values():  # above 48 KiB (float64: 52,480 and 53,760 B) the kernel is opted in
        smem = plan.smem_bytes(dtype, N_REG, kern.k)
        assert kern.max_dynamic_shared_size_bytes == (smem if smem > 48 * 1024 else 48 * 1024)


# -- on a GPU -----------------------------------------------------------------------------------------

def _cupy_device():
    try:
        import cupy as cp
        cp.cuda.runtime.getDeviceCount()
        return cp
    except Exception:
        return None


@pytest.mark.gpu
@needs_cxx
@pytest.mark.skipif(_cupy_device() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_matches_host_harness(sc2, params, dtype):
    from raybrain.cuda.launch import run_rww_cuda
    cp = _cupy_device()
    s = SHORT.replace(dtype=dtype, duration=14.4)
    hb, _, hm = _host(Simulation("rww", sc2, params, s, subject_index=SUBJ))
    res = {}
    for kw in (dict(), dict(steps_per_launch=1001)):
        sim = Simulation("rww", sc2, params, s.replace(backend="cupy"), subject_index=SUBJ)
        end = s.n_steps(s.burn_in) + s.n_steps(s.duration)
        bold, _ = run_chunk(sim, end, run_rww_cuda, xp=cp, **kw)
        res[str(kw)] = (cp.asnumpy(bold), {k: cp.asnumpy(v) / sim.state.n_summed for k, v in sim.state.sums.items()})
    (gb, gm), (gb2, gm2) = res.values()
    np.testing.assert_array_equal(gb2, gb)  # split launches: bit for bit
    tol = 1e-9 if dtype == "float64" else 1e-4
    assert _max_rel(gb, hb) < tol
    for k in hm:
        assert _max_rel(gm[k], hm[k]) < (1e-9 if dtype == "float64" else 1e-5), k
    for b in range(B):
        assert _fc_r(gb[b], hb[b]) >= (1 - 1e-9 if dtype == "float64" else 0.999)
