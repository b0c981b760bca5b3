"""Tests of the on-disk cache of the fused kernels (:mod:`raybrain.fused`).

A kernel variant built with a cache directory is written there (its generated module and numba's
index and data files); a fresh process loads it from there instead of compiling it, and the
loaded kernel gives bit for bit the results of the kernel compiled in-process from the closure,
as without a cache (float32 with fast maths: numba's plain ``cache=True`` would not). Two
compilations of one float32 tiled variant, ~30 s.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from raybrain import _kernel_cache as kc, fused

# the problem, as source: run here and in the fresh process alike
PROBLEM = r'''
import numpy as np
from raybrain import _kernel_cache as kc, fused

def run_problem(lanes=8):
    """A small tiled float32 run: 10 elements on 2 connectomes (two tiles of 8 lanes with padding),
    G and sigma per element, the rest batch-wide; 120 steps, BOLD every 10 hemodynamic steps."""
    ft = np.float32
    B, N = 10, 16
    r = np.random.default_rng(0)
    SE = r.uniform(0.1, 0.3, (B, N)).astype(ft)
    SI = r.uniform(0.05, 0.1, (B, N)).astype(ft)
    hs, acc = np.zeros((B, N), ft), np.zeros((B, N), ft)
    hf, hv, hq = (np.ones((B, N), ft) for _ in range(3))
    sums = [np.zeros((B, N)) for _ in range(3)]
    CS = r.uniform(0, 0.05, (2, N, N)).astype(ft)
    subj = np.repeat(np.arange(2), B // 2)
    base = dict(G=1.5, sigma=0.005, w_EE=1.4, w_EI=1.0, w_IE=1.0, I0=0.382, J_NMDA=0.15, W_E=1.0,
                W_I=0.7, a_E=310., b_E=125., d_E=0.16, a_I=615., b_I=177., d_I=0.087, tau_E=0.1,
                tau_I=0.01, gamma=0.641)
    PAR = np.empty((B, len(fused.RWW_PARAM_ORDER), N), ft)
    for q, k in enumerate(fused.RWW_PARAM_ORDER):
        PAR[:, q, :] = base[k]
    PAR[:, 0, :] = np.linspace(0.5, 2.5, B)[:, None]
    PAR[:, 1, :] = np.linspace(0.003, 0.01, B)[:, None]
    keys = np.arange(B, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(7)
    coef = tuple(ft(x) for x in (0.65, 0.41, 1 / 0.98, 1 / 0.32, 0.66, 1 / 0.34, 0.02, 2.38, 2.0, 0.48, 1.0))
    bold = np.zeros((B, 6, N), ft)
    fused.run_rww(SE, SI, hs, hf, hv, hq, acc, *sums, CS, subj, PAR, keys, 0, 120, ft(5e-4), 2, ft(0.5),
                  ft(1e-3), 10, 0, coef, True, bold, lanes=lanes)
    return dict(SE=SE, SI=SI, hs=hs, hf=hf, hv=hv, hq=hq, sum_rE=sums[0], sum_SE=sums[1], sum_SI=sums[2],
                bold=bold)

def only_kernel():
    (k,) = fused._KERNELS.values()
    return k
'''

FRESH = PROBLEM + r'''
import json, sys
out = run_problem()
k = only_kernel()
np.savez(sys.argv[1], **out)
print(json.dumps({"hits": k.stats.cache_hits.total(), "misses": k.stats.cache_misses.total(),
                  "cache_path": k.stats.cache_path}))
'''


def _problem():
    ns = {}
    exec(PROBLEM, ns)
    return ns["run_problem"], ns["only_kernel"]


def _assert_identical(a, b):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


@pytest.fixture
def fresh_kernels(monkeypatch):
    """An empty in-process memo of kernels (restored afterwards)."""
    monkeypatch.setattr(fused, "_KERNELS", {})


def test_cache_dir_settings(monkeypatch, tmp_path):
    monkeypatch.setattr(kc, "CACHE_DIR", None)
    monkeypatch.setenv("RAYBRAIN_CACHE_DIR", str(tmp_path / "env"))
    assert kc.kernel_cache_dir() == str(tmp_path / "env")
    assert (tmp_path / "env").is_dir()
    monkeypatch.setattr(kc, "CACHE_DIR", tmp_path / "mod")  # the module setting wins
    assert kc.kernel_cache_dir() == str(tmp_path / "mod")
    monkeypatch.setattr(kc, "CACHE_DIR", "")  # off
    assert kc.kernel_cache_dir() is None and kc.cached_kernel_path("rww_float32") is None
    monkeypatch.setattr(kc, "CACHE_DIR", None)
    monkeypatch.setenv("RAYBRAIN_CACHE_DIR", "")
    assert kc.kernel_cache_dir() is None
    monkeypatch.delenv("RAYBRAIN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kc.kernel_cache_dir() == str(tmp_path / "xdg" / "raybrain" / "kernels")
    (tmp_path / "file").write_text("")  # not a directory: no cache, no error
    monkeypatch.setattr(kc, "CACHE_DIR", tmp_path / "file" / "sub")
    assert kc.kernel_cache_dir() is None


def test_generated_module_is_deterministic_and_keyed_by_sources():
    args = dict(BT=8, R=8, phi=fused.phi32, exp=fused.exp32, log=fused.log32, halves=fused._halves32,
                box_muller=fused._box_muller32, fastmath=True, uniform=(True, False) * 9)
    src = kc.kernel_module_source(fused._make_tiled_rww_kernel, args)
    assert src == kc.kernel_module_source(fused._make_tiled_rww_kernel, dict(args))
    assert "BT = 8\n" in src and "fastmath = True\n" in src and "from raybrain.fused import phi32 as phi" in src
    assert "uniform = (True, False, True," in src and "\ndef kernel(" in src
    compile(src, "<generated>", "exec")
    h = kc.source_hash()
    assert len(h) == 16 and kc.cached_kernel_path("x", "/d") == f"/d/x_{h}.py"


def test_kernel_cached_on_disk_and_loaded_by_a_fresh_process(monkeypatch, tmp_path, fresh_kernels):
    run_problem, only_kernel = _problem()
    monkeypatch.setattr(kc, "CACHE_DIR", str(tmp_path))

    # 1. in-process with an empty cache: compiled, and written to the cache directory
    cached = run_problem()
    k = only_kernel()
    assert (k.stats.cache_hits.total(), k.stats.cache_misses.total()) == (0, 1)
    (gen,) = glob.glob(str(tmp_path / f"rww_tiled_float32_l8_u{'0' * 5}{'1' * 13}_{kc.source_hash()}.py"))
    assert k.py_func.__code__.co_filename == gen
    stem = os.path.basename(gen)[:-3]
    index_dir = k.stats.cache_path  # tmp_path/__pycache__, unless NUMBA_CACHE_DIR is set
    assert glob.glob(os.path.join(index_dir, f"{stem}.kernel-*.nbi"))
    assert glob.glob(os.path.join(index_dir, f"{stem}.kernel-*.nbc"))

    # the entry cannot be loaded a second time into this process (its code is loaded already):
    # a miss, not a crash; nor can an entry compiled for another CPU (in a shared directory)
    cache = k._cache
    key = cache._index_key(next(iter(k.overloads)), k.targetctx.codegen())
    payload = cache._cache_file.load(key)
    assert payload[0] == k.targetctx.codegen().magic_tuple()
    assert cache._impl.rebuild(k.targetctx, payload) is None
    assert cache._impl.rebuild(k.targetctx, (("other", "cpu", ""), ("no such symbol",)) + payload[2:]) is None

    # 2. a fresh process with the same cache directory loads the kernel, compiling nothing
    env = dict(os.environ, RAYBRAIN_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "fresh.npz")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (stats["hits"], stats["misses"]) == (1, 0), stats
    assert os.path.samefile(stats["cache_path"], index_dir)
    with np.load(tmp_path / "fresh.npz") as f:
        fresh = dict(f)

    # 3. without a cache: the closure compiled in-process, as before
    monkeypatch.setattr(kc, "CACHE_DIR", "")
    monkeypatch.setattr(fused, "_KERNELS", {})
    closure = run_problem()
    assert only_kernel().py_func.__qualname__ == "_make_tiled_rww_kernel.<locals>.kernel"

    _assert_identical(cached, closure)
    _assert_identical(fresh, closure)
    assert np.all(np.isfinite(closure["bold"])) and np.ptp(closure["bold"]) > 0


def test_unwritable_cache_falls_back_to_in_process(monkeypatch, tmp_path, fresh_kernels):
    monkeypatch.setattr(kc, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kc, "_write_atomic", lambda *a: (_ for _ in ()).throw(PermissionError("ro")))
    with pytest.warns(RuntimeWarning, match="compiling in-process"):
        k = fused.rww_kernel("float64")
    assert k.py_func.__qualname__ == "_make_rww_kernel.<locals>.kernel"  # not compiled: lazy
