"""The fused CUDA kernels (raybrain/cuda) without a GPU, and on one where there is.

* Host harness: ``model_core.cuh`` with a model's generated header -- the maths and per-thread
  program the kernel runs -- compiled for the host (g++, else nvcc) and run with the kernel's
  schedule (raybrain.cuda.host), held to the NumPy array path (``fused="never"``) on the same noise
  keys. rWW: 2 connectomes in one batch, 22 s at dt 1 ms with 2 neural steps per hemodynamic step
  and a burn-in that is not a whole number of them (B = 4, 28 TRs). Measured (g++ 12, x86-64), as
  max |diff| / max |reference|: float64: BOLD 2.3e-15, summaries (r_E, S_E, S_I) <= 2.0e-14, FC max
  |diff| 1.3e-15; float32 vs the float32 array path: BOLD 2.0e-6, summaries <= 5.9e-8, FC r >=
  0.99999997; float32 vs the float64 array path: BOLD 5.0e-5, summaries <= 1.1e-6, FC r >= 0.99998
  (the float32 array path itself: 0.99998). In float64 it equals raybrain.fused's single-element
  numba kernel to 1e-13 (same operations in the same order, glibc's libm on both sides).
  Hopf (two coupled variables, diffusive coupling, x sampled without hemodynamics) and LaNMM (22
  state variables, the P1 rate relay coupled, exp; its output sampled, and through the Balloon) on
  the same two connectomes, as max relative difference of samples, running sums and final state
  (g++ 12): float64 Hopf <= 2.3e-15, LaNMM <= 1.2e-13; float32 Hopf <= 4.4e-7, LaNMM <= 5.2e-5. A
  test model declared here with three noise variables (two Box-Muller pairs per step) and a clip
  checks the noise counters and the clipping of the generic core (float64: 1.7e-16).
* Launch plan, tiling, batch independence, common random numbers, chunking: bit for bit; the
  launcher's argument marshalling checked against the kernel's C signature and the argument
  struct's layout against the compiler's, with a stand-in for CuPy.
* The translation of a declaration to C++ rejects what it cannot translate faithfully.
* nvcc: ``model.cu`` with each model compiles to sm_90 cubin; registers and spills are reported
  (spills must be 0 for the default variants); NVRTC (where CuPy is installed) compiles the very
  source CuPy gets.
* With CuPy and a CUDA device: the GPU kernel against the host harness, for every model.
Skipped with a reason where the compiler, nvcc, CuPy or a device is missing.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from raybrain import features as F
from raybrain.cuda import codegen, host, plan
from raybrain.cuda.simulation import run_chunk
from raybrain.data import list_subjects, load_subject
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.models import LaNMM, Model, Parameter, StateVariable, get_model
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
# Hopf: x sampled every 0.1 s (no hemodynamics), dt 10 ms, k_h = 2, burn-in not a whole block
HOPF = SimulationSettings(duration=10.0, burn_in=0.51, dt=1e-2, bold_dt=2e-2, tr=0.1, dtype="float64", fused="never")
# LaNMM: v_P1 sampled at 250 Hz, dt 0.1 ms, k_h = 10
LANMM = SimulationSettings(duration=0.2, burn_in=0.0505, dt=1e-4, bold_dt=1e-3, tr=4e-3, dtype="float64",
                           fused="never")


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
    bold, times = run_chunk(sim, n_steps, host.run_host, **kw)
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


# -- the declaration, translated ------------------------------------------------------------------

@pytest.mark.parametrize("model", [get_model("rww"), get_model("hopf"), LaNMM()], ids=lambda m: m.name)
def test_header_reads_the_declared_packing(model):
    """The generated drift reads state s from x[s], network input j from c[j] and kernel parameter q
    from p[q] in the order of the declaration (the order KernelCall packs them in), and the counts
    are the model's."""
    h = codegen.model_header(model)
    for s, sv in enumerate(model.state_variables):
        assert f"const T v_{sv.name} = x[{s}];" in h
    for q, name in enumerate(model.kernel_parameters):
        assert f"const T v_{name} = p[{q}];" in h
    assert f"constexpr int S = {len(model.state_variables)};" in h
    assert f"constexpr int C = {len(model.coupled_variables)};" in h
    assert f"constexpr int P = {len(model.kernel_parameters)};" in h
    assert f"constexpr int O = {len(model.summary_observables)};" in h
    assert f"constexpr int BOLD_INPUT = {model.bold_input};" in h
    assert "sigma" in model.kernel_parameters and f"SIGMA = {model.kernel_parameters.index('sigma')};" in h


def _with_literal(x, c, G, sigma, one):
    return -x + G * c + 2.0 * sigma, x


def _with_power(x, c, G, sigma, one):
    return x ** G, x


def _with_branch(x, c, G, sigma, one):
    if x:
        return x, x
    return c, c


class _Toy(Model):
    name = "toy"
    state_variables = (StateVariable("x", 0.0),)
    parameters = (Parameter("G", 1.0, "1", (0, 1), "coupling"), Parameter("sigma", 0.1, "1", (0, 1), "noise"))
    noise_variables = (0,)


@pytest.mark.parametrize("fn,match", [(_with_literal, "literal 2.0"), (_with_power, "Pow"),
                                      (_with_branch, "If is not accepted")])
def test_translation_rejects_what_it_cannot_translate(fn, match):
    toy = type("BadToy", (_Toy,), {"scalar_drift": staticmethod(fn)})()
    with pytest.raises(codegen.DeclarationError, match=match):
        codegen.model_header(toy)


# -- planning (shared with the GPU launcher) ----------------------------------------------------------

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


def test_uniform_mask_never_hoists_searched_parameters():
    """A searched parameter is read per element even when the batch holds one value of it (its
    uniform patterns would multiply the kernel variants); a constant uniform parameter is hoisted."""
    m = get_model("rww")
    P = len(m.kernel_parameters)
    PAR = np.ones((3, P, N_REG))
    mask = plan.uniform_mask(m, PAR)
    for q, name in enumerate(m.kernel_parameters):
        assert bool(mask >> q & 1) == (name not in m.searched_parameters), name
    PAR[1, m.kernel_parameters.index("I0"), 5] = 2.0
    assert not plan.uniform_mask(m, PAR) >> m.kernel_parameters.index("I0") & 1
    # rWW keeps the K of the measured rWW kernel: float32 4, float64 2 (all per element: 2, 1)
    assert [plan.choose_sims_per_block(m, d, u) for d in ("float32", "float64") for u in (mask, 0)] == [4, 2, 2, 1]


@needs_cxx
@pytest.mark.parametrize("model", [get_model("rww"), get_model("hopf"), LaNMM()], ids=lambda m: m.name)
def test_argument_struct_layout_is_the_compilers(model):
    """plan.args_dtype (what the launcher packs) against offsetof/sizeof of rb::Args<T> as g++ laid it
    out -- the layout nvcc uses on the device for the same struct."""
    lib = host.build_host_library(model, N_REG, 2, 0)
    for dtype in (np.float32, np.float64):
        assert host.layout(lib, dtype) == host.expected_layout(dtype)
        assert host.layout(lib, dtype)[0] == plan.args_dtype(dtype).itemsize
    assert host.config(lib)[5:] == (len(model.state_variables), len(model.coupled_variables),
                                    len(model.kernel_parameters), len(model.summary_observables))


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


# the other models: (model, parameters, settings), each held to its array path
OTHER_MODELS = {
    "hopf": (lambda: get_model("hopf"), dict(G=np.linspace(0.2, 1.0, B), a=np.linspace(-0.05, 0.02, B),
                                              sigma=np.linspace(0.01, 0.04, B)), HOPF),
    "lanmm": (lambda: LaNMM(), dict(G=np.linspace(2.0, 10.0, B), C_P2_PV=np.linspace(150, 200, B)), LANMM),
    "lanmm-balloon": (lambda: LaNMM(output="rate"), dict(G=np.linspace(2.0, 10.0, B)),
                      LANMM.replace(duration=0.72, tr=0.036, bold_dt=1e-3)),
}


@needs_cxx
@pytest.mark.parametrize("case", sorted(OTHER_MODELS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_host_harness_matches_numpy_for_every_model(sc2, case, dtype):
    """Hopf and LaNMM (sampled, and through the Balloon) run by the kernel generated from their
    declarations, against the array path evaluating the same scalar drift: samples, every running
    sum (state variables and summary observables) and the final state. Measured (g++ 12): float64
    <= 1.2e-13, float32 <= 5.2e-5 (LaNMM's fast PSP derivatives; Hopf 4.4e-7)."""
    make, params, st = OTHER_MODELS[case]
    s = st.replace(dtype=dtype)
    ref_sim = Simulation(make(), sc2, params, s, subject_index=SUBJ)
    ref = ref_sim.run()
    sim = Simulation(make(), sc2, params, s, subject_index=SUBJ)
    bold, times, means = _host(sim)
    np.testing.assert_array_equal(times, ref.times)
    assert bold.shape == ref.bold.shape and bold.shape[1] >= 20 and bold.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(bold)) and _max_rel(ref.bold[0], ref.bold[3]) > 1e-3  # elements differ
    assert sorted(means) == sorted(ref.means)
    tol = 1e-10 if dtype == "float64" else 1e-3
    assert _max_rel(bold, ref.bold) < tol
    for k in means:
        assert _max_rel(means[k], ref.means[k]) < tol, k
    for a, b in zip(sim.state.neural, ref_sim.state.neural):
        assert _max_rel(a, b) < tol
    if ref_sim.settings.hemodynamics == "balloon":
        for a, b in zip(sim.state.hemo, ref_sim.state.hemo):
            assert _max_rel(a, b) < tol


class _ThreeOU(Model):
    """Three Ornstein-Uhlenbeck processes, the first coupled and clipped to [-0.05, 0.05]: three noise
    variables, so two Box-Muller pairs per region and step."""

    name = "three-ou"
    state_variables = (StateVariable("x", 0.0, (-0.05, 0.05)), StateVariable("y", 0.0), StateVariable("z", 0.0))
    coupled_variables = (0,)
    noise_variables = (0, 1, 2)
    default_hemodynamics = "none"
    summary_observables = ("xy",)
    scalar_observables = ("xy",)
    parameters = (Parameter("G", 0.5, "1", (0, 1), "coupling", regional=False),
                  Parameter("sigma", 0.1, "1", (0, 1), "noise"), Parameter("tau", 0.1, "s", (0.01, 1), "decay"))

    @staticmethod
    def scalar_drift(x, y, z, c, G, sigma, tau, one):
        return -x / tau + G * c, -y / tau, (x - z) / tau, x * y


@needs_cxx
def test_two_noise_pairs_and_clipping_match_numpy(sc2):
    st = HOPF.replace(dt=1e-3, bold_dt=1e-3, duration=2.0, burn_in=0.1)
    params = dict(G=np.linspace(0.1, 0.5, B), tau=np.linspace(0.05, 0.2, B))
    ref = Simulation(_ThreeOU(), sc2, params, st, subject_index=SUBJ)
    r = ref.run()
    sim = Simulation(_ThreeOU(), sc2, params, st, subject_index=SUBJ)
    bold, _, means = _host(sim)
    assert np.abs(r.bold).max() == 0.05  # the clip binds
    assert _max_rel(bold, r.bold) < 1e-10
    for k in means:
        assert _max_rel(means[k], r.means[k]) < 1e-10, k
    for a, b in zip(sim.state.neural, ref.state.neural):
        assert _max_rel(a, b) < 1e-10
    # y and z draw the second variate of pair 0 and the first of pair 1: independent of x's
    y, z = np.asarray(sim.state.neural[1]).ravel(), np.asarray(sim.state.neural[2]).ravel()
    assert abs(np.corrcoef(y, z)[0, 1]) < 0.5


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


@needs_cxx
def test_host_harness_tiling_is_bit_for_bit_with_two_coupled_variables(sc2):
    """Hopf (two coupled variables in the shared buffers): K and padding lanes change nothing."""
    make, params, st = OTHER_MODELS["hopf"]
    s = st.replace(duration=2.0)
    base, _, bm = _host(Simulation(make(), sc2, params, s, subject_index=SUBJ), lanes=1)
    for kw in (dict(lanes=8), dict(lanes=2, steps_per_launch=45)):
        bold, _, means = _host(Simulation(make(), sc2, params, s, subject_index=SUBJ), **kw)
        np.testing.assert_array_equal(bold, base, err_msg=str(kw))
        for k in means:
            np.testing.assert_array_equal(means[k], bm[k], err_msg=str(kw))


# -- device code: nvcc / NVRTC ------------------------------------------------------------------------

def _ptxas_info(text):
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", text)]
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill stores", text)]
    return regs, spills


def _default_variant(model, dtype):
    """(K, umask) of a batch at the model's defaults with its searched parameters varied."""
    sim = Simulation(model, np.ones((N_REG, N_REG)) / N_REG, {}, SimulationSettings(duration=0.72, dt=1e-3),
                     batch=2)
    PAR = np.stack([sim.params_host[k] for k in model.kernel_parameters], axis=1)
    umask = plan.uniform_mask(model, PAR)
    return plan.choose_sims_per_block(model, dtype, umask), umask


@needs_nvcc
@pytest.mark.parametrize("model", [get_model("rww"), get_model("hopf"), LaNMM()], ids=lambda m: m.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nvcc_compiles_kernel_for_sm90(tmp_path, model, dtype):
    """sm_90 cubin of model.cu with the model's header (N = 80, the default variant). Measured with
    CUDA 13.0: rWW float32 K=4 168 registers, float64 K=2 156; Hopf 128, 126; LaNMM (K=1) 127, 248;
    0 spills."""
    k, umask = _default_variant(model, dtype)
    src = tmp_path / "model.cu"
    src.write_text(plan.kernel_source(model))
    cmd = [NVCC, "-cubin", "-arch=sm_90", "-std=c++17", "-Xptxas", "-v", *plan.compile_defines(dtype, N_REG, k, umask),
           str(src), "-o", str(tmp_path / "model.cubin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    regs, spills = _ptxas_info(proc.stderr)
    print(f"\nsm_90 {model.name} {dtype} N={N_REG} K={k} umask={umask:#x}: {regs[0]} registers, {spills[0]} bytes "
          f"spill stores, {plan.smem_bytes(model, dtype, N_REG, k)} B shared per block of "
          f"{plan.threads_per_block(N_REG)} threads")
    assert regs and regs[0] <= 255 and spills == [0]


@pytest.mark.parametrize("model", [get_model("rww"), get_model("hopf"), LaNMM()], ids=lambda m: m.name)
def test_nvrtc_compiles_kernel_source(model):
    """The exact source and options CuPy's RawModule gets, through NVRTC (needs CuPy's NVRTC, no device)."""
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy not installed: NVRTC check skipped")
    from raybrain.cuda.launch import compile_options
    k, umask = _default_variant(model, "float32")
    try:
        prog = compiler._NVRTCProgram(plan.kernel_source(model), "model.cu", method="ptx")
        prog.compile(compile_options("float32", N_REG, k, umask) + ("-arch=compute_90",
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

_C_TYPES = {"int": np.int32, "long long": np.int64}


def _kernel_signature():
    """[(C base type, is_pointer, name)] of ``rb_fused`` as declared in model.cu."""
    src = plan.read_source("model.cu")
    decl = src[src.index("rb_fused(") + len("rb_fused("):src.index(")\n{")]
    out = []
    for p in decl.split(","):
        p = " ".join(p.replace("__restrict__", " ").replace("const", " ").split())
        ptr = "*" in p
        words = p.replace("*", " ").split()
        out.append((" ".join(words[:-1]), ptr, words[-1]))
    return out


class _FakeKernel:
    """Stands in for CuPy's RawKernel: checks each launch against the kernel's C signature, the
    compile-time configuration and the argument struct's layout, then runs the host harness of that
    configuration on the packed struct."""

    def __init__(self, code, options):
        d = dict(o[2:].split("=", 1) for o in options if o.startswith("-D"))
        self.real = np.float32 if d["RB_REAL"] == "float" else np.float64
        self.n, self.k, self.umask = int(d["RB_N"]), int(d["RB_K"]), int(d["RB_UMASK"].rstrip("ul"))
        self.model = _FakeCupy.models[code]
        self.max_dynamic_shared_size_bytes = 48 * 1024
        self.launches = []

    def __call__(self, grid, block, args, shared_mem=0):
        sig = _kernel_signature()
        assert [s[0] for s in sig] == ["rb::Args<RB_REAL>", "long long", "long long", "int"]
        assert len(args) == len(sig)
        (ctype, ptr, _), packed = sig[0], args[0]
        assert ptr and isinstance(packed, np.ndarray) and packed.dtype == np.uint8 and packed.flags.c_contiguous
        assert packed.nbytes == plan.args_dtype(self.real).itemsize
        for (ctype, ptr, name), a in zip(sig[1:], args[1:]):
            assert not ptr and isinstance(a, np.generic) and a.dtype == _C_TYPES[ctype], (name, type(a))
        assert block == (plan.threads_per_block(self.n),)
        smem = plan.smem_bytes(self.model, self.real, self.n, self.k)
        assert shared_mem == smem <= self.max_dynamic_shared_size_bytes
        lib = host.build_host_library(self.model, self.n, self.k, self.umask)
        cfg = host.config(lib)
        assert shared_mem == cfg[3 if self.real == np.float32 else 4]  # rb::Smem<T, N, K>::BYTES
        assert host.layout(lib, self.real)[0] == packed.nbytes
        rec = packed.view(plan.args_dtype(self.real))[0]
        assert rec["tile_subj"] != 0 and rec["B"] > 0
        f = lib.rb_host_f32 if self.real == np.float32 else lib.rb_host_f64
        assert f(packed.ctypes.data, grid[0], *(a.item() for a in args[1:])) == 0
        self.launches.append(int(args[2]))


class _FakeCupy:
    asarray = staticmethod(np.asarray)
    ascontiguousarray = staticmethod(np.ascontiguousarray)
    models: dict = {}  # kernel source -> model

    class RawModule:
        def __init__(self, code, options):
            assert code in _FakeCupy.models and '#include "' not in code  # the core and the header inlined
            self.code, self.options = code, options

        def get_function(self, name):
            assert name == "rb_fused"
            return _FakeKernel(self.code, self.options)


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["rww", "lanmm"])
def test_launcher_marshalling_matches_kernel_signature(sc2, params, dtype, case, monkeypatch):
    """run_cuda with a stand-in for CuPy that checks every argument against the signature of
    rb_fused and the packed struct against rb::Args, then runs the host harness: the same results as
    run_host. prepare_kernel builds the variant run_cuda launches, for a call of zero steps too."""
    from raybrain.cuda import launch
    monkeypatch.setattr(launch, "_cupy", lambda: _FakeCupy)
    monkeypatch.setattr(launch, "_KERNELS", {})
    # a CuPy simulation holds its hemodynamic state in its own dtype, as the kernel does
    monkeypatch.setattr(Simulation, "hemo_dtype", property(lambda self: self.dtype))
    if case == "rww":
        model, p, s = get_model("rww"), params, SHORT.replace(dtype=dtype)
    else:
        model, p, s = LaNMM(output="rate"), dict(G=np.linspace(2.0, 10.0, B)), LANMM.replace(
            dtype=dtype, duration=0.072, tr=0.036)
    _FakeCupy.models[plan.kernel_source(model)] = model
    want, _, wm = _host(Simulation(model, sc2, p, s, subject_index=SUBJ))
    n = s.n_steps(s.burn_in) + s.n_steps(s.duration)
    for kw in (dict(), dict(steps_per_launch=300, lanes=1)):
        sim = Simulation(model, sc2, p, s, subject_index=SUBJ)
        kern0, smem0 = launch.prepare_kernel(sim._kernel_call(0, np)[0], lanes=kw.get("lanes"))
        before = len(kern0.launches)  # preparing launches nothing
        bold, _ = run_chunk(sim, n, launch.run_cuda, **kw)
        np.testing.assert_array_equal(bold, want)
        for k in wm:
            np.testing.assert_array_equal(sim.state.sums[k] / sim.state.n_summed, wm[k])
        # the prepared variant is the one launched
        assert len(kern0.launches) - before == len(plan.launch_plan(0, n, s.steps_per_bold_step, 1, 0,
                                                                    kw.get("steps_per_launch")))
    by_k = {key[3]: kern for key, (kern, _) in launch._KERNELS.items()}
    PAR = np.stack([sim.params_host[k] for k in model.kernel_parameters], axis=1)
    assert sorted(by_k) == sorted({1, plan.choose_sims_per_block(model, dtype, plan.uniform_mask(model, PAR))})
    if case == "rww":
        assert by_k[1].launches == [300] * 5 + [140]  # split on hemodynamic-step boundaries (k_h = 2)
    for kern in by_k.values():  # above 48 KiB (float64 rWW: 52,480 and 53,760 B) the kernel is opted in
        smem = plan.smem_bytes(model, dtype, N_REG, kern.k)
        assert kern.max_dynamic_shared_size_bytes == (smem if smem > 48 * 1024 else 48 * 1024)


# -- on a GPU -----------------------------------------------------------------------------------------

def _cupy_device():
    try:
        import cupy as cp
        cp.cuda.runtime.getDeviceCount()
        return cp
    except Exception:
        return None


GPU_CASES = {"rww": (lambda: get_model("rww"), None, SHORT.replace(duration=14.4)),
             "hopf": (*OTHER_MODELS["hopf"][:2], HOPF),
             "lanmm": (*OTHER_MODELS["lanmm"][:2], LANMM),
             "lanmm-balloon": OTHER_MODELS["lanmm-balloon"]}


@pytest.mark.gpu
@needs_cxx
@pytest.mark.skipif(_cupy_device() is None, reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("case", sorted(GPU_CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_matches_host_harness(sc2, params, case, dtype):
    from raybrain.cuda.launch import run_cuda
    cp = _cupy_device()
    make, p, st = GPU_CASES[case]
    p = params if p is None else p
    s = st.replace(dtype=dtype)
    hb, _, hm = _host(Simulation(make(), sc2, p, s, subject_index=SUBJ))
    res = {}
    for kw in (dict(), dict(steps_per_launch=1001)):
        sim = Simulation(make(), sc2, p, s.replace(backend="cupy"), subject_index=SUBJ)
        end = s.n_steps(s.burn_in) + s.n_steps(s.duration)
        bold, _ = run_chunk(sim, end, run_cuda, xp=cp, **kw)
        res[str(kw)] = (cp.asnumpy(bold), {k: cp.asnumpy(v) / sim.state.n_summed for k, v in sim.state.sums.items()})
    (gb, gm), (gb2, gm2) = res.values()
    np.testing.assert_array_equal(gb2, gb)  # split launches: bit for bit
    tol = 1e-9 if dtype == "float64" else 1e-4
    assert _max_rel(gb, hb) < tol
    for k in hm:
        assert _max_rel(gm[k], hm[k]) < (1e-9 if dtype == "float64" else 1e-3), k
    if gb.shape[1] > 2:
        for b in range(B):
            assert _fc_r(gb[b], hb[b]) >= (1 - 1e-9 if dtype == "float64" else 0.999)
