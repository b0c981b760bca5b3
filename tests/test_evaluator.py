"""Coalesced evaluation (raybrain.evaluator): per-element noise keys, coalesced == alone record for
record (fused rWW in float32, the array path with Hopf in float64 and float32), chunking under a
memory budget, and the evaluator actor gathering concurrent callers (plain asyncio and on Ray).

Small problems: bundled HCP subjects (N = 80), 21.6 s of BOLD; rWW at dt 1 ms after a 2 s burn-in
(fused kernels: the single-element and one tiled float32 variant, loaded from the kernel cache or
compiled once), Hopf at dt 0.08 s without hemodynamics.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from raybrain.data import list_subjects, load_subject
from raybrain.evaluator import (EvalRequest, Evaluator, bytes_per_element, chunk_size, compat_key,
                                evaluate_many)
from raybrain.integrate import SimState, Simulation, SimulationSettings
from raybrain.objective import Objective
from raybrain.parametrisation import Global
from raybrain.random import stream_keys

SUBJECTS = list_subjects("hcp")[:2]


@pytest.fixture(scope="module")
def subjects():
    return [load_subject(s) for s in SUBJECTS]


@pytest.fixture(scope="module")
def rww(subjects):
    par = Global("rww", names=("G", "sigma"), bounds_override={"G": (0.5, 2.5), "sigma": (0.001, 0.01)})

    def make(k, noise="independent", dtype="float32"):
        s = SimulationSettings(duration=21.6, dt=1e-3, burn_in=2.0, dtype=dtype, noise=noise)
        return Objective(subjects[k], "rww", par, "pfic", s, window=10, step=2)

    return make


@pytest.fixture(scope="module")
def hopf(subjects):
    par = Global("hopf", names=("G", "sigma"), bounds_override={"G": (0.1, 1.0), "sigma": (0.01, 0.1)})

    def make(k, noise="independent", dtype="float64", dt=0.08):  # on the array path
        s = SimulationSettings(duration=21.6, dt=dt, burn_in=0.0, dtype=dtype, noise=noise, fused="never")
        return Objective(subjects[k], "hopf", par, "pfic", s, window=10, step=2)

    return make


def _theta(rng, lo, hi, B):
    return np.column_stack([rng.uniform(lo[0], hi[0], B), rng.uniform(lo[1], hi[1], B)])


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "compile_s")} for r in records]


def _alone(req):
    """The request evaluated on its own (``evaluate`` has no ``candidates``: simulate + score)."""
    o = req.objective
    if req.candidates is None:
        return _strip(o.evaluate(req.theta, seed=req.seed, repeats=req.repeats, first_stream=req.first_stream,
                                 duration=req.duration))
    res = o.simulation(req.theta, seed=req.seed, repeats=req.repeats, first_stream=req.first_stream,
                       candidates=req.candidates, duration=req.duration).run()
    return _strip(o.score(req.theta, res.bold, res, repeats=req.repeats))


def _assert_same(requests, results):
    assert len(results) == len(requests)
    for i, (req, recs) in enumerate(zip(requests, results)):
        assert all(r["wall_s"] >= 0 for r in recs)
        expected = _alone(req)
        assert _strip(recs) == expected, f"request {i}"


# -- keys -------------------------------------------------------------------------------------
def test_keys_override_the_seeded_streams(subjects):
    sc = subjects[0].sc / subjects[0].sc.max() * 0.2
    s = SimulationSettings(duration=7.2, dt=0.08, tr=0.72, burn_in=0.0, dtype="float64")
    p = dict(G=np.array([0.3, 0.6, 0.9]), sigma=0.05)
    a = Simulation("hopf", sc, p, s.replace(seed=1), streams=[0, 5, 7]).run()
    b = Simulation("hopf", sc, p, s.replace(seed=99), keys=stream_keys(1, [0, 5, 7])).run()
    np.testing.assert_array_equal(a.bold, b.bold)
    # elements of different seeds in one batch draw exactly their own noise
    k = np.concatenate([stream_keys(1, [0]), stream_keys(2, [3]), stream_keys(3, [0])])
    mixed = Simulation("hopf", sc, p, s, keys=k).run()
    for j, (seed, stream) in enumerate([(1, 0), (2, 3), (3, 0)]):
        one = Simulation("hopf", sc, dict(G=p["G"][[j]], sigma=0.05), s.replace(seed=seed), streams=[stream]).run()
        np.testing.assert_array_equal(one.bold[0], mixed.bold[j])
    with pytest.raises(ValueError, match=r"keys must have shape \(3,\)"):
        Simulation("hopf", sc, p, s, keys=stream_keys(1, [0, 1]))
    with pytest.raises(ValueError, match="keys must be uint64"):
        Simulation("hopf", sc, p, s, keys=np.arange(3))
    with pytest.raises(ValueError, match="lanes must be a non-negative integer"):
        Simulation("hopf", sc, p, s, lanes=-1)
    state = SimState.from_arrays(Simulation("hopf", sc, p, s).state.to_arrays())
    with pytest.raises(ValueError, match="keys differ"):
        Simulation("hopf", sc, p, s, state=state, keys=stream_keys(5, [0, 1, 2]))


# -- coalesced == alone -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def rww_requests(rww):
    """Two subjects, five seeds, common and independent noise, 1 to 9 elements: the single-element
    fused kernel for the small ones and one tiled variant for the 4 x 2 ones (2 numba threads)."""
    rng = np.random.default_rng(1)

    def th(B):
        return _theta(rng, (0.5, 0.001), (2.5, 0.01), B)

    return [EvalRequest(rww(0), th(1), seed=3),
            EvalRequest(rww(1, noise="common"), th(2), seed=4),
            EvalRequest(rww(0), th(4), seed=5, repeats=2, first_stream=10),
            EvalRequest(rww(1), th(4), seed=6, repeats=2),
            EvalRequest(rww(0), th(3), seed=7, repeats=1, candidates=[5, 2, 9])]


def test_coalesced_equals_alone_fused_float32(rww_requests):
    launches = []
    results = evaluate_many(rww_requests, launches=launches)
    _assert_same(rww_requests, results)
    assert all(isinstance(r["loss"], float) for recs in results for r in recs)
    assert sum(x["rows"] for x in launches) == sum(r.size for r in rww_requests)
    assert len(launches) < len(rww_requests)  # coalesced
    assert any(x["requests"] > 1 and x["rows"] > 1 for x in launches)


def test_chunking_under_a_tiny_budget_changes_nothing(rww_requests, hopf):
    launches = []
    results = evaluate_many(rww_requests, memory_budget=1, launches=launches)
    # one element per launch; the requests vary G and sigma only, which no kernel variant hoists,
    # so no chunk needs completion rows to restore its group's parameter pattern
    assert len(launches) == sum(r.size for r in rww_requests)
    assert not any(x["padding"] for x in launches)
    _assert_same(rww_requests, results)
    # a budget of a few elements on the array path: several launches, same records
    rng = np.random.default_rng(2)
    reqs = [EvalRequest(hopf(k % 2), _theta(rng, (0.1, 0.01), (1.0, 0.1), 3), seed=k, repeats=2) for k in range(3)]
    probe = reqs[0].simulation()
    budget = 5 * bytes_per_element(probe, 2) + 2 * 80 * 80 * 16
    assert chunk_size(probe, 2, budget) == 5
    launches = []
    _assert_same(reqs, evaluate_many(reqs, memory_budget=budget, launches=launches))
    assert [x["rows"] for x in launches] == [5, 5, 5, 3]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_coalesced_equals_alone_array_path(hopf, dtype):
    rng = np.random.default_rng(3)

    def th(B):
        return _theta(rng, (0.1, 0.01), (1.0, 0.1), B)

    reqs = [EvalRequest(hopf(0, dtype=dtype), th(1), seed=11),
            EvalRequest(hopf(1, dtype=dtype), th(5), seed=12, repeats=2, first_stream=3),
            EvalRequest(hopf(1, "common", dtype), th(3), seed=13, repeats=3),
            EvalRequest(hopf(0, "common", dtype), th(2), seed=11, duration=14.4),
            EvalRequest(hopf(0, dtype=dtype), th(4), seed=14, candidates=[7, 1, 3, 0])]
    launches = []
    _assert_same(reqs, evaluate_many(reqs, launches=launches))
    # one launch for all but the shorter duration, across subjects, seeds and noise modes
    assert sorted(x["requests"] for x in launches) == [1, 4]


def test_what_is_compatible(hopf, rww):
    theta = np.array([[0.5, 0.05]])
    sim = hopf(0).simulation(theta, seed=1)
    assert compat_key(sim) == compat_key(hopf(1, "common").simulation(theta, seed=2, repeats=3))
    assert compat_key(sim) != compat_key(hopf(0, dt=0.04).simulation(theta))
    assert compat_key(sim) != compat_key(hopf(0, dtype="float32").simulation(theta))
    assert compat_key(rww(0).simulation(np.array([[1.0, 0.005]]))) != compat_key(sim)
    # bytes per element: BOLD, state, sums, parameters, temporaries; a gathered connectome with S > 1
    b1, b2 = bytes_per_element(sim, 1), bytes_per_element(sim, 2)
    assert b2 - b1 == 8 * 80 * 80
    frames = 31  # ceil(21.6 / 0.72) + 1
    assert b1 == 8 * 80 * (2 * frames + 2 + 5) + 8 * 80 * 2 + 16 * 80 * len(sim.params_host) + 8 * 80 * 12 + 32
    assert chunk_size(sim, 1, 2 * 1024 ** 3) > 10_000


# -- the actor --------------------------------------------------------------------------------
def test_evaluator_gathers_concurrent_callers_without_ray(hopf):
    rng = np.random.default_rng(4)
    reqs = [EvalRequest(hopf(k % 2), _theta(rng, (0.1, 0.01), (1.0, 0.1), 2), seed=k) for k in range(4)]

    async def main():
        ev = Evaluator(window_ms=200.0, max_batch=8)
        good = [ev.evaluate({"objective": r.objective, "theta": r.theta, "seed": r.seed}) for r in reqs]
        bad = ev.evaluate({"objective": reqs[0].objective, "theta": np.zeros((2, 5))})
        out = await asyncio.gather(*good, bad, return_exceptions=True)
        return out, await ev.stats()

    out, stats = asyncio.run(main())
    assert isinstance(out[-1], ValueError)  # only the bad caller fails
    _assert_same(reqs, out[:-1])
    # the four good requests (8 elements = max_batch) in one batch, one launch; the bad one alone
    assert stats["batches"][0]["requests"] == 4 and stats["batches"][0]["launches"] == 1
    assert stats["requests"] == 5


EXPERIMENT = {
    "name": "evaluator", "storage": "results", "subjects": {"ids": SUBJECTS}, "model": {"name": "hopf"},
    "parametrisation": {"kind": "global", "names": ["G", "sigma"], "bounds": {"G": [0.1, 1.0], "sigma": [0.01, 0.1]}},
    "loss": "fc_corr", "simulation": {"fidelities": [{"duration": 21.6, "dt": 0.08}], "burn_in": 0.0, "fused": "never",
                                      "noise": "independent", "dtype": "float64"},
    "optimizers": [{"name": "random", "population": 4}], "budget": {"evaluations": 8}}


# the fused rWW path through the actor: float32, FCD window of 10 TRs
EXPERIMENT_RWW = dict(EXPERIMENT, name="evaluator-rww", model={"name": "rww"}, loss="pfic",
                      parametrisation={"kind": "global", "names": ["G", "sigma"],
                                       "bounds": {"G": [0.5, 2.5], "sigma": [0.001, 0.01]}},
                      simulation={"fidelities": [{"duration": 21.6, "dt": 0.001}], "burn_in": 2.0,
                                  "dtype": "float32", "window": 10, "step": 2})


def test_actor_coalesces_ray_tasks(ray_local):
    import ray

    from raybrain.evaluator import get_evaluator, remote_evaluate, shutdown_evaluators
    from raybrain.experiment import ExperimentConfig
    from raybrain.experiment import objective_from_json as _objective

    text = ExperimentConfig.model_validate(EXPERIMENT).model_dump_json()
    ns = "raybrain-test-evaluator"
    K = 4
    rng = np.random.default_rng(5)
    calls = [(SUBJECTS[k % 2], _theta(rng, (0.1, 0.01), (1.0, 0.1), 2), 100 + k, 2 * k) for k in range(K)]
    # one batch once all K callers are in (4 x 2 elements), however slowly their workers start
    ev = get_evaluator(namespace=ns, window_ms=60_000, max_batch=2 * K)

    @ray.remote(num_cpus=0)
    def caller(subject, theta, seed, first):
        from raybrain.evaluator import get_evaluator as find

        return remote_evaluate(text, subject, 0, theta, seed=seed, first_stream=first,
                               evaluator=find(namespace=ns))

    out = ray.get([caller.remote(*c) for c in calls], timeout=120)
    for (subject, theta, seed, first), recs in zip(calls, out):
        direct = _objective(text, subject, 0).evaluate(theta, seed=seed, first_stream=first)
        assert _strip(recs) == _strip(direct)
    stats = ray.get(ev.stats.remote())
    assert [b["requests"] for b in stats["batches"]] == [K]
    assert [x["rows"] for x in stats["launches"]] == [2 * K]  # two subjects, one launch
    # the client helper from the driver: the same actor, the same records as a direct call
    # (2 candidates x 4 repeats fill max_batch: no wait for the window)
    recs = remote_evaluate(text, SUBJECTS[0], 0, calls[0][1], seed=7, repeats=4,
                           evaluator=get_evaluator(namespace=ns))
    assert _strip(recs) == _strip(_objective(text, SUBJECTS[0], 0).evaluate(calls[0][1], seed=7, repeats=4))
    # the fused float32 path: the actor reproduces the caller's own kernel choice
    text_rww = ExperimentConfig.model_validate(EXPERIMENT_RWW).model_dump_json()
    theta = _theta(rng, (0.5, 0.001), (2.5, 0.01), 4)
    recs = remote_evaluate(text_rww, SUBJECTS[1], 0, theta, seed=3, repeats=2, evaluator=ev)
    assert _strip(recs) == _strip(_objective(text_rww, SUBJECTS[1], 0).evaluate(theta, seed=3, repeats=2))
    assert shutdown_evaluators(ns) == 1
