"""Successive halving inside a population generation: rung sizes, exact continuation, selection,
and the rank-preserving losses told to the optimizer."""
import numpy as np
import pytest

from raybrain.data import list_subjects, load_subject
from raybrain.integrate import SimulationSettings
from raybrain.objective import Objective
from raybrain.parametrisation import Global
from raybrain.search.halving import Rung, rung_sizes, successive_halving, told_losses


def test_rung_sizes_are_ceil_p_over_eta_to_the_k():
    assert rung_sizes(16, 3, 2) == [16, 8, 4]
    assert rung_sizes(10, 3, 3) == [10, 4, 2]
    assert rung_sizes(3, 4, 2) == [3, 2, 1, 1]
    with pytest.raises(ValueError, match="eta > 1"):
        rung_sizes(8, 2, 1.0)


@pytest.fixture(scope="module")
def objectives():
    subject = load_subject(list_subjects("hcp")[0])
    par = Global("rww", names=("G", "sigma"), bounds_override={"G": (0.5, 2.5), "sigma": (0.001, 0.01)})

    def obj(duration, dt):
        s = SimulationSettings(duration=duration, dt=dt, burn_in=5.0, dtype="float64", noise="independent")
        return Objective(subject, "rww", par, "pfic", s, window=20, step=2)

    return obj


def test_survivors_continue_exactly_as_one_straight_simulation(objectives):
    low, high = objectives(21.6, 1e-3), objectives(43.2, 1e-3)
    theta = np.column_stack([np.linspace(0.5, 2.5, 6), np.full(6, 0.005)])
    rungs = successive_halving([low, high], theta, eta=2, seed=7, repeats=2, first_stream=100)
    assert [r.index.size for r in rungs] == [6, 3]
    # the survivors are the best half at the first rung, kept in generation order
    first = np.array([r["loss"] for r in rungs[0].records])
    np.testing.assert_array_equal(rungs[1].index, np.sort(np.argsort(first)[:3]))
    assert [r["new_sims"] for r in rungs[0].records] == [2] * 6
    assert [r["new_sims"] for r in rungs[1].records] == [0] * 3
    assert rungs[1].records[0]["sim_seconds"] == pytest.approx(43.2)
    # each survivor's top-rung loss is that of a plain evaluation at the top fidelity on its streams
    for i, rec in zip(rungs[1].index, rungs[1].records):
        plain = high.evaluate(theta[[i]], seed=7, repeats=2, first_stream=100 + 2 * i)[0]
        assert rec["loss"] == pytest.approx(plain["loss"], rel=1e-9, abs=1e-12)
        assert rec["rate_mean"] == pytest.approx(plain["rate_mean"], rel=1e-9)


def test_a_change_of_dt_starts_the_survivors_afresh(objectives):
    low, fine = objectives(21.6, 2e-3), objectives(43.2, 1e-3)
    theta = np.column_stack([np.linspace(0.8, 2.2, 4), np.full(4, 0.004)])
    rungs = successive_halving([low, fine], theta, eta=2, seed=3, repeats=1)
    assert [r["new_sims"] for r in rungs[1].records] == [1, 1]
    for i, rec in zip(rungs[1].index, rungs[1].records):
        plain = fine.evaluate(theta[[i]], seed=3, first_stream=int(i))[0]
        assert rec["loss"] == pytest.approx(plain["loss"], rel=1e-9, abs=1e-12)


def _rung(fidelity, index, losses):
    return Rung(fidelity, np.array(index), [{"loss": x} for x in losses])


def test_told_losses_rank_later_rungs_first_and_keep_order_within_a_rung():
    # 6 candidates; rung 0 scores all, rung 1 keeps 1, 3, 4; rung 2 keeps 3
    rungs = [_rung(0, range(6), [0.5, 0.2, 0.9, 0.1, 0.3, 0.4]),
             _rung(1, [1, 3, 4], [0.8, 0.6, 0.7]),
             _rung(2, [3], [1.2])]
    told = told_losses(rungs, 6)
    assert told[3] == 1.2                                   # the top rung: its own loss
    assert told[1] > told[4] > told[3]                      # stopped at rung 1: lifted above 1.2
    assert told[4] - told[1] == pytest.approx(0.7 - 0.8)    # spacing kept within the rung
    assert min(told[[0, 2, 5]]) > max(told[[1, 4]])         # stopped at rung 0 rank last
    assert told[2] - told[0] == pytest.approx(0.4) and told[5] - told[0] == pytest.approx(-0.1)
    order = np.argsort(told)
    assert order.tolist() == [3, 4, 1, 5, 0, 2]


def test_told_losses_leave_a_single_rung_alone_and_need_every_candidate():
    np.testing.assert_array_equal(told_losses([_rung(0, [0, 1, 2], [3.0, 1.0, 2.0])], 3), [3.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="no rung"):
        told_losses([_rung(0, [0, 1], [1.0, 2.0])], 3)
