"""Tests of raybrain.integrate (array reference path) and raybrain.fused (numba hot path).

The fused kernel is held to the array path on the same counter-based noise; runs are chunked,
checkpointed and re-batched and must give the same numbers. The numba kernels compile once per
dtype per process (~10–15 s each), so every fused test here shares them.
"""
from __future__ import annotations

import numpy as np
import pytest

from raybrain.data import list_subjects, load_subject
from raybrain.integrate import SimState, Simulation, SimulationSettings, simulate
from raybrain.models.hopf import Hopf, hopf_drift

N_REG = 80


def _scaled_sc(i):
    sc = np.asarray(load_subject(list_subjects()[i]).sc, dtype=np.float64)
    return sc / sc.max() * 0.02


@pytest.fixture(scope="module")
def sc():
    return _scaled_sc(0)


@pytest.fixture(scope="module")
def sc2():
    return np.stack([_scaled_sc(0), _scaled_sc(1)])


B = 9  # 9 elements: the same tile width for one and two connectomes, so one compiled kernel


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(42)
    return dict(G=np.linspace(0.5, 2.5, B), w_EE=rng.uniform(1.2, 1.7, (B, N_REG)),
                w_EI=rng.uniform(1.0, 1.5, N_REG), sigma=rng.uniform(0.003, 0.01, B))


def _pick(params, idx):
    """The parameters of batch elements ``idx`` (per-batch entries are those with B rows)."""
    return {k: (np.asarray(v)[idx] if np.ndim(v) and np.shape(v)[0] == B else v) for k, v in params.items()}


# fine dt, burn-in not a whole number of hemodynamic steps on purpose
EQUIV = SimulationSettings(duration=0.48, dt=1e-4, tr=0.24, burn_in=0.2505, dtype="float64")
# coarser dt (2 neural steps per hemodynamic step) for the runs that only compare a path with itself
FAST = SimulationSettings(duration=0.96, dt=5e-4, tr=0.12, burn_in=0.0505, dtype="float64")


def _corr_upper(a, b):
    iu = np.triu_indices(a.shape[0], 1)
    return np.corrcoef(a[iu], b[iu])[0, 1]


def _max_rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# -- fused vs array -------------------------------------------------------------------------------

@pytest.mark.parametrize("two_subjects", [False, True])
def test_fused_matches_array_float64(sc, sc2, params, two_subjects):
    kw = dict(subject_index=np.arange(B) % 2) if two_subjects else {}
    conn = sc2 if two_subjects else sc
    fused = Simulation("rww", conn, params, EQUIV, **kw).run()
    ref = Simulation("rww", conn, params, EQUIV.replace(fused="never"), **kw).run()
    assert fused.fused and not ref.fused
    # BOLD samples at the TRs inside the recorded window 0.2505 s .. 0.7305 s
    np.testing.assert_allclose(ref.times, [0.48, 0.72])
    np.testing.assert_array_equal(fused.times, ref.times)
    assert fused.bold.shape == ref.bold.shape == (B, 2, N_REG)
    assert fused.bold.dtype == np.float64
    assert np.all(np.abs(ref.bold) > 0)  # BOLD away from rest (the Balloon starts at its steady state)
    assert _max_rel(fused.bold, ref.bold) < 1e-12
    assert set(fused.means) == set(ref.means) == {"S_E", "S_I", "r_E"}
    for k in ref.means:
        assert _max_rel(fused.means[k], ref.means[k]) < 1e-12, k
    assert not fused.diverged.any() and not ref.diverged.any()
    # FIC holds the rates near 3 Hz; the batch elements differ from each other
    assert np.all(np.abs(ref.means["r_E"] - 3.06) < 1.5)
    # (the Balloon starts at its steady state, so over 0.7 s BOLD moves by ~1e-3 of its level)
    assert _max_rel(ref.bold[0], ref.bold[2]) > 1e-4
    if two_subjects:
        # element 1 uses connectome 1: it differs from the same parameters on connectome 0
        one = Simulation("rww", sc, _pick(params, [1, 3]), EQUIV.replace(fused="never"), streams=[1, 3]).run()
        assert _max_rel(one.bold[0], ref.bold[1]) > 1e-8  # the equality tolerance is 1e-12


def test_fused_matches_array_float32(sc, params):
    s = EQUIV.replace(dtype="float32")
    fused = Simulation("rww", sc, params, s).run()
    ref = Simulation("rww", sc, params, s.replace(fused="never")).run()
    ref64 = Simulation("rww", sc, params, EQUIV.replace(fused="never")).run()
    assert fused.bold.dtype == np.float32 and ref.bold.dtype == np.float32
    np.testing.assert_allclose(fused.bold, ref.bold, rtol=1e-4, atol=1e-4 * np.abs(ref.bold).max())
    np.testing.assert_allclose(fused.bold, ref64.bold, rtol=1e-3, atol=1e-3 * np.abs(ref64.bold).max())
    for k in ref.means:
        np.testing.assert_allclose(fused.means[k], ref.means[k], rtol=1e-5)
        np.testing.assert_allclose(fused.means[k], ref64.means[k], rtol=1e-4)


def test_float32_fc_agrees_with_float64(sc, params):
    """A longer, coarser run (dt 2 ms, 60 s after 10 s, TR 0.1 s, 40 regions): the FC of the
    float32 fused run matches the float64 one."""
    s = SimulationSettings(duration=60.0, dt=2e-3, bold_dt=2e-3, tr=0.1, burn_in=10.0, dtype="float64")
    sub = sc[:40, :40] * 2
    p = dict(G=np.linspace(0.5, 2.5, B), sigma=0.01)
    b64 = Simulation("rww", sub, p, s).run().bold
    b32 = Simulation("rww", sub, p, s.replace(dtype="float32")).run().bold
    assert b32.shape == b64.shape == (B, 600, 40)
    for b in (0, B - 1):
        fc64 = np.corrcoef(b64[b].T)
        fc32 = np.corrcoef(b32[b].T.astype(np.float64))
        assert _corr_upper(fc32, fc64) >= 0.99
    # different couplings give genuinely different FC (the comparison has teeth)
    assert _corr_upper(np.corrcoef(b64[0].T), np.corrcoef(b64[B - 1].T)) < 0.95


# -- chunking and checkpoints ---------------------------------------------------------------------

@pytest.mark.parametrize("fused", ["auto", "never"])
def test_chunked_equals_single_run(sc, params, fused):
    s = FAST.replace(fused=fused)
    whole = Simulation("rww", sc, params, s).run()
    assert whole.bold.shape == (B, 8, N_REG)
    # D = 0.48 s ends the first chunk mid hemodynamic step (burn-in 0.0505 s = 101 steps of 0.5 ms);
    # D = 0.4795 s ends it on a hemodynamic step boundary
    for D in (0.48, 0.4795):
        sim = Simulation("rww", sc, params, s)
        a = sim.run(D)
        b = sim.run(0.96 - D)
        assert sim.state.step == s.n_steps(s.burn_in) + s.n_steps(s.duration)
        np.testing.assert_array_equal(np.concatenate([a.bold, b.bold], axis=1), whole.bold)
        np.testing.assert_array_equal(np.concatenate([a.times, b.times]), whole.times)
        for k in whole.means:
            if fused == "never" or D == 0.4795:
                np.testing.assert_array_equal(b.means[k], whole.means[k])
            else:  # a mid-step chunk end flushes the fused block sums early: equal to rounding
                np.testing.assert_allclose(b.means[k], whole.means[k], rtol=1e-13)


@pytest.mark.parametrize("fused", ["auto", "never"])
def test_checkpoint_round_trip(sc, params, fused, tmp_path):
    s = FAST.replace(fused=fused, duration=0.48)
    sim = Simulation("rww", sc, params, s)
    sim.run()
    path = tmp_path / "state.npz"
    np.savez(path, **sim.state.to_arrays())
    cont = sim.run()
    with np.load(path) as d:
        state = SimState.from_arrays(dict(d))
    resumed = Simulation("rww", sc, params, s, state=state)
    assert resumed.time == pytest.approx(0.5305)
    again = resumed.run()
    np.testing.assert_array_equal(again.bold, cont.bold)
    np.testing.assert_array_equal(again.times, cont.times)
    for k in cont.means:
        np.testing.assert_array_equal(again.means[k], cont.means[k])


def test_state_snapshot_is_not_mutated_by_fused_run(sc, params):
    s = FAST.replace(duration=0.12, burn_in=0.0)
    sim = Simulation("rww", sc, params, s)
    sim.run()
    snap = sim.state.to_arrays()
    copy = {k: v.copy() for k, v in snap.items()}
    sim.run()
    for k in copy:
        np.testing.assert_array_equal(snap[k], copy[k], err_msg=k)


# -- noise: reproducibility, batch independence, common random numbers ----------------------------

@pytest.mark.parametrize("fused", ["auto", "never"])
def test_reproducible_and_batch_independent(sc, params, fused):
    s = FAST.replace(fused=fused, duration=0.48, burn_in=0.0)
    a = Simulation("rww", sc, params, s).run()
    b = Simulation("rww", sc, params, s).run()
    np.testing.assert_array_equal(a.bold, b.bold)
    for m in a.means:
        np.testing.assert_array_equal(a.means[m], b.means[m])
    c = Simulation("rww", sc, params, s.replace(seed=1)).run()
    assert np.all(a.bold != c.bold)
    # a candidate run alone on its own stream reproduces its row of the batch
    for k in (0, B - 1):
        alone = Simulation("rww", sc, _pick(params, [k]), s, streams=[k]).run()
        np.testing.assert_allclose(alone.bold[0], a.bold[k], rtol=1e-12, atol=0)
        for m in a.means:
            np.testing.assert_allclose(alone.means[m][0], a.means[m][k], rtol=1e-12, atol=0)
        assert _max_rel(alone.bold[0], a.bold[(k + 1) % B]) > 1e-6  # the equality tolerance is 1e-12
    # the position in the batch does not matter (same batch size): bit for bit
    rev = Simulation("rww", sc, _pick(params, slice(None, None, -1)), s, streams=np.arange(B)[::-1]).run()
    np.testing.assert_array_equal(rev.bold[::-1], a.bold)
    for m in a.means:
        np.testing.assert_array_equal(rev.means[m][::-1], a.means[m])


@pytest.mark.parametrize("fused", ["auto", "never"])
def test_alone_equals_batch_bit_for_bit(sc, params, fused):
    s = FAST.replace(fused=fused, duration=0.48, burn_in=0.0)
    a = Simulation("rww", sc, params, s).run()
    for k in range(B):
        alone = Simulation("rww", sc, _pick(params, [k]), s, streams=[k]).run()
        np.testing.assert_array_equal(alone.bold[0], a.bold[k])
        for m in a.means:
            np.testing.assert_array_equal(alone.means[m][0], a.means[m][k])


@pytest.mark.parametrize("fused", ["auto", "never"])
def test_common_random_numbers(sc, fused):
    s = FAST.replace(fused=fused, duration=0.48, burn_in=0.0)
    G = np.full(B, 1.0)
    G[-1] = 2.0
    common = Simulation("rww", sc, dict(G=G), s.replace(noise="common")).run()
    for k in range(1, B - 1):
        np.testing.assert_array_equal(common.bold[k], common.bold[0])
    assert np.all(common.bold[-1] != common.bold[0])  # different G, same noise: still different
    indep = Simulation("rww", sc, dict(G=G), s).run()
    assert np.all(indep.bold[1] != indep.bold[0])
    assert np.all(indep.bold[1] != common.bold[1])
    np.testing.assert_array_equal(indep.bold[0], common.bold[0])  # stream 0 is stream 0


def test_sigma_zero_is_deterministic_regardless_of_seed(sc):
    s = FAST.replace(duration=0.24, burn_in=0.0, fused="never")
    a = Simulation("rww", sc, dict(sigma=0.0), s).run()
    b = Simulation("rww", sc, dict(sigma=0.0), s.replace(seed=7)).run()
    np.testing.assert_array_equal(a.bold, b.bold)


# -- divergence -----------------------------------------------------------------------------------

def test_divergence_is_flagged_per_batch_element():
    s = SimulationSettings(duration=5.0, dt=0.05, tr=0.5, bold_dt=0.05, hemodynamics="none", dtype="float64")
    N = 4
    conn = np.ones((N, N)) - np.eye(N)
    res = simulate("hopf", conn, dict(a=np.array([0.1, 500.0, -0.1]), sigma=0.0, G=0.1), s)
    np.testing.assert_array_equal(res.diverged, [False, True, False])
    assert np.isfinite(res.bold[[0, 2]]).all()
    assert not np.isfinite(res.bold[1]).all()


def test_divergence_flag_sticks_across_chunks():
    s = SimulationSettings(duration=2.0, dt=0.05, tr=0.5, bold_dt=0.05, hemodynamics="none", dtype="float64")
    sim = Simulation("hopf", np.zeros((3, 3)), dict(a=np.array([0.1, 500.0]), sigma=0.0), s)
    assert sim.run().diverged.tolist() == [False, True]
    assert sim.run().diverged.tolist() == [False, True]


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(dt=0.0), "'dt'"),
    (dict(dt=-1e-4), "'dt'"),
    (dict(duration=float("nan")), "'duration'"),
    (dict(burn_in=-1.0), "'burn_in'"),
    (dict(tr=0.7205), r"TR \(0.7205 s\)"),
    (dict(tr=0.72, bold_dt=0.0007), "TR"),
    (dict(noise="shared"), "'noise'.*'shared'"),
    (dict(dtype="float16"), "'dtype'"),
    (dict(fused="sometimes"), "'fused'"),
    (dict(hemodynamics="ballon"), "'hemodynamics'"),
    (dict(bw_convention="rate"), "convention"),
    (dict(dt=1.0, tr=0.72), "'dt'"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimulationSettings(**kwargs)


def test_bad_simulation_inputs(sc):
    s = FAST.replace(duration=0.24, burn_in=0.0)
    with pytest.raises(ValueError, match="'w_EE'.*does not broadcast"):
        Simulation("rww", sc, dict(w_EE=np.ones((3, N_REG + 1))), s)
    with pytest.raises(ValueError, match="'w_EE'.*matches neither"):
        Simulation("rww", sc, dict(w_EE=np.ones(N_REG + 1)), s, batch=3)
    with pytest.raises(ValueError, match="'w_EE'.*ambiguous"):
        Simulation("rww", sc, dict(w_EE=np.ones(N_REG)), s, batch=N_REG)
    with pytest.raises(ValueError, match="'w_EEE'.*did you mean 'w_EE'"):
        Simulation("rww", sc, dict(w_EEE=1.5), s)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        Simulation("rww", sc, dict(G=np.ones(3), w_EE=np.ones((4, N_REG))), s)
    bad = sc.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="sc.*non-finite"):
        Simulation("rww", bad, {}, s)
    with pytest.raises(ValueError, match="sc"):
        Simulation("rww", np.ones((3, 4)), {}, s)
    with pytest.raises(ValueError, match="subject_index"):
        Simulation("rww", np.stack([sc, sc]), dict(G=np.ones(3)), s)
    with pytest.raises(ValueError, match="subject_index"):
        Simulation("rww", np.stack([sc, sc]), dict(G=np.ones(3)), s, subject_index=[0, 1, 2])
    with pytest.raises(ValueError, match="'sigma'.*non-finite"):
        Simulation("rww", sc, dict(sigma=np.inf), s)
    with pytest.raises(ValueError, match="streams"):
        Simulation("rww", sc, dict(G=np.ones(3)), s, streams=[0, 1])
    with pytest.raises(ValueError, match="fused='always'"):  # a model with array drift only
        Simulation(_ArrayOnlyHopf(), sc, {}, s.replace(fused="always"))
    with pytest.raises(ValueError, match="unknown model 'rwv'"):
        Simulation("rwv", sc, {}, s)
    with pytest.raises(ValueError, match="duration"):
        Simulation("rww", sc, {}, s).run(-1.0)


class _ArrayOnlyHopf(Hopf):
    """Hopf declared over arrays only (no scalar drift): no fused path."""

    scalar_drift = None

    def drift_and_observables(self, state, p, coupling):
        return hopf_drift(*state, *coupling, *(p[k] for k in self.kernel_parameters), 1.0), {}


def test_batch_disagreement_names_the_parameters(sc):
    with pytest.raises(ValueError, match="G.*w_EE|w_EE.*G"):
        Simulation("rww", sc, dict(G=np.ones(3), w_EE=np.ones((4, N_REG))), FAST)


def test_global_parameter_per_region_is_rejected(sc):
    with pytest.raises(ValueError, match="'G'"):
        Simulation("rww", sc, dict(G=np.linspace(0.0, 3.0, N_REG)), FAST)


@pytest.mark.parametrize("fused", ["never", "always"])
def test_prepared_parameters_run_exactly_as_the_params_they_came_from(sc, params, fused):
    s = FAST.replace(fused=fused, dtype="float64")
    ref = Simulation("rww", sc, params, s)
    # the FIC w_IE computed from these params must be used as given, not solved again
    assert "w_IE" in ref.params_host and np.ptp(ref.params_host["w_IE"]) > 0
    again = Simulation("rww", sc, settings=s, batch=ref.batch, prepared=ref.params_host)
    for k, v in ref.params_host.items():
        np.testing.assert_array_equal(again.params_host[k], v)
    a, b = ref.run(), again.run()
    np.testing.assert_array_equal(np.asarray(a.bold), np.asarray(b.bold))
    # a doctored w_IE is honoured (no re-solve): the run differs
    doctored = {**ref.params_host, "w_IE": ref.params_host["w_IE"] * 1.5}
    c = Simulation("rww", sc, settings=s, batch=ref.batch, prepared=doctored).run()
    assert not np.allclose(np.asarray(c.bold), np.asarray(a.bold))


def test_prepared_parameters_bad_input_is_named(sc, params):
    ref = Simulation("rww", sc, params, FAST)
    B = ref.batch
    with pytest.raises(ValueError, match="not both"):
        Simulation("rww", sc, {"G": 1.0}, FAST, batch=B, prepared=ref.params_host)
    with pytest.raises(ValueError, match="lack 'G'"):
        Simulation("rww", sc, settings=FAST, batch=B, prepared={k: v for k, v in ref.params_host.items() if k != "G"})
    with pytest.raises(ValueError, match=rf"'sigma' must have shape \({B}, {N_REG}\)"):
        Simulation("rww", sc, settings=FAST, batch=B, prepared={**ref.params_host, "sigma": np.ones(3)})
    with pytest.raises(ValueError, match="'w_EE' contains non-finite"):
        Simulation("rww", sc, settings=FAST, batch=B,
                   prepared={**ref.params_host, "w_EE": np.full((B, N_REG), np.nan)})
