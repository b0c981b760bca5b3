"""Kernel compile / load time is recorded apart from simulation wall time (issue 12, item 4):
every path that simulates (Objective.evaluate, successive halving, the coalescing evaluator)
calls ``Simulation.prepare`` before it starts its clock and records the prepare time as
``compile_s``, so ``wall_s`` (and the ``cum_wall_s`` of the convergence axes) is simulation only.

``prepare`` is replaced by one that sleeps a known time and reports it: the records must carry
that time in ``compile_s`` (shared over the batch) and not in ``wall_s``."""
import time

import numpy as np
import pytest

from raybrain.data import load_subject
from raybrain.evaluator import EvalRequest, evaluate_many
from raybrain.integrate import Simulation, SimulationSettings
from raybrain.objective import Objective
from raybrain.parametrisation import Global
from raybrain.search.halving import successive_halving

PAUSE = 0.4


@pytest.fixture
def slow_prepare(monkeypatch):
    real = Simulation.prepare

    def prepare(self):
        real(self)  # the real kernels, so the timed run() below has nothing left to compile
        time.sleep(PAUSE)
        return PAUSE

    monkeypatch.setattr(Simulation, "prepare", prepare)


def _objective(duration=21.6):
    par = Global("hopf", names=("G", "sigma"), bounds_override={"G": (0.1, 1.0), "sigma": (0.01, 0.1)})
    # the array path: nothing to compile, so the timed run() holds simulation only
    s = SimulationSettings(duration=duration, dt=0.08, burn_in=0.0, dtype="float64", fused="never")
    return Objective(load_subject("hcp/101309"), "hopf", par, "pfic", s, window=10, step=2)


THETA = np.array([[0.3, 0.02], [0.5, 0.05], [0.8, 0.03], [0.2, 0.04]])


def test_objective_records_compile_time_apart_from_wall_time(slow_prepare):
    recs = _objective().evaluate(THETA, seed=1)
    assert sum(r["compile_s"] for r in recs) == pytest.approx(PAUSE)
    assert all(r["wall_s"] < PAUSE / len(recs) for r in recs)  # the sleep is not in the wall time


def test_successive_halving_records_compile_time_apart(slow_prepare):
    rungs = successive_halving([_objective(21.6), _objective(43.2)], THETA, eta=2, seed=3)
    for rung in rungs:
        assert sum(r["compile_s"] for r in rung.records) == pytest.approx(PAUSE)
        assert sum(r["wall_s"] for r in rung.records) < PAUSE


def test_coalesced_evaluation_records_compile_time_apart(slow_prepare):
    obj = _objective()
    reqs = [EvalRequest(obj, THETA[:2], seed=1), EvalRequest(obj, THETA[2:], seed=2)]
    out = evaluate_many(reqs)
    assert sum(r["compile_s"] for recs in out for r in recs) == pytest.approx(PAUSE)
    assert all(r["wall_s"] < PAUSE / 4 for recs in out for r in recs)
