"""Tests of the on-disk cache of the fused kernels (:mod:`raybrain.fused`).

A kernel variant built with a cache directory is written there (its generated module and numba's
index and data files); a fresh process loads it from there instead of compiling it, and the
loaded kernel gives bit for bit the results of the kernel compiled in-process from the same
generated source, as without a cache (float32 with fast maths: numba's plain ``cache=True`` would not). Two
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
from raybrain.kernel_call import KernelCall
from raybrain.models import get_model

def run_problem(lanes=8):
    """A small tiled float32 run: 10 elements on 2 connectomes (two tiles of 8 lanes with padding),
    G and sigma per element, the rest batch-wide; 120 steps, BOLD every 10 hemodynamic steps."""
    ft = np.float32
    B, N = 10, 16
    model = get_model("rww")
    r = np.random.default_rng(0)
    X = np.stack([r.uniform(0.1, 0.3, (B, N)), r.uniform(0.05, 0.1, (B, N))]).astype(ft)
    H = np.stack([np.zeros((B, N)), np.ones((B, N)), np.ones((B, N)), np.ones((B, N))])
    acc = np.zeros((B, N), ft)
    sums = np.zeros((3, B, N))
    CS = r.uniform(0, 0.05, (2, N, N)).astype(ft)
    subj = np.repeat(np.arange(2), B // 2)
    base = model.params(G=1.5)
    PAR = np.empty((B, len(model.kernel_parameters), N), ft)
    for q, k in enumerate(model.kernel_parameters):
        PAR[:, q, :] = base[k]
    PAR[:, 0, :] = np.linspace(0.5, 2.5, B)[:, None]
    PAR[:, 1, :] = np.linspace(0.003, 0.01, B)[:, None]
    keys = np.arange(B, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(7)
    coef = tuple(ft(x) for x in (0.65, 0.41, 1 / 0.98, 1 / 0.32, 0.66, 1 / 0.34, 0.02, 2.38, 2.0, 0.48, 1.0))
    bold = np.zeros((B, 6, N), ft)
    call = KernelCall(model, X, H, acc, sums, CS, subj, PAR, keys, step0=0, n_steps=120, dt=ft(5e-4), k_h=2,
                      inv_kh=ft(0.5), dt_h=ft(1e-3), k_tr=10, m_burn=0, coef=coef, bold_on=True, bold_out=bold)
    fused.run(call, lanes=lanes)
    return dict(SE=X[0], SI=X[1], hs=H[0], hf=H[1], hv=H[2], hq=H[3], sum_SE=sums[0], sum_SI=sums[1],
                sum_rE=sums[2], bold=bold)

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
    from raybrain.models import get_model

    model = get_model("rww")
    uniform = (True, False) * 9
    src = fused.kernel_source(model, "float32", 8, uniform, n_regions=16)
    assert src == fused.kernel_source(get_model("rww", fic=False), "float32", 8, list(uniform), n_regions=16)
    assert "BT = 8\n" in src and "N = 16 " not in src and "from raybrain.models.rww import rww_drift as _drift" in src
    assert "fastmath={'contract', 'ninf', 'nnan', 'nsz'}" in src and "\ndef kernel(" in src
    assert "s0 = PS[0]" in src and "s1 = PS[1]" not in src  # uniform parameters hoisted, the others read
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
    (gen,) = glob.glob(str(tmp_path / f"rww_s2_b0_tiled_float32_l8_u{'0' * 5}{'1' * 13}_{kc.source_hash()}.py"))
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

    # 3. without a cache: the same source compiled in-process, as an in-memory module
    monkeypatch.setattr(kc, "CACHE_DIR", "")
    monkeypatch.setattr(fused, "_KERNELS", {})
    closure = run_problem()
    assert only_kernel().py_func.__code__.co_filename.startswith("<raybrain kernel rww_s2_b0_tiled_float32_l8")

    _assert_identical(cached, closure)
    _assert_identical(fresh, closure)
    assert np.all(np.isfinite(closure["bold"])) and np.ptp(closure["bold"]) > 0


def test_unwritable_cache_falls_back_to_in_process(monkeypatch, tmp_path, fresh_kernels):
    monkeypatch.setattr(kc, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kc, "_write_atomic", lambda *a: (_ for _ in ()).throw(PermissionError("ro")))
    from raybrain.models import get_model

    with pytest.warns(RuntimeWarning, match="compiling in-process"):
        k = fused.get_kernel(get_model("rww"), "float64", 0)
    assert k.py_func.__code__.co_filename == "<raybrain kernel rww_s2_b0_single_float64>"
    assert not k.overloads  # not compiled: lazy
