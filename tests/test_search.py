"""raybrain.search: registry, ask-tell contract, determinism, checkpoints and search quality.

Quality is measured on the range-normalised sphere f(theta) = sum(((theta - c) / (hi - lo))**2)
with the optimum c off the centre of an anisotropic box, so a family that ignored the bounds'
scales or sat at the centre would fail.
"""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from raybrain.search import OPTIMIZERS, Optimizer, get_optimizer, validate_settings

BOUNDS5 = np.array([[-3.0, 1.0], [10.0, 20.0], [0.0, 1e-3], [-1.0, 1.0], [100.0, 150.0]])
OPTIMUM = np.array([0.3, 0.7, 0.62, 0.2, 0.45])      # in units of each range
# cheap acquisition maximisation and GP fit for bayesopt; a small grid
FAST = {"bayesopt": {"n_iter": 1, "n_warmup": 1000, "gp_restarts": 0}, "grid": {"points_per_dim": 3}}
# the ask/tell contract of every family that proposes from losses alone; "gradient" steps along the
# gradient of a differentiable loss it is given (tests/test_gradient.py)
NAMES = sorted(set(OPTIMIZERS) - {"gradient"})


def bounds(P):
    return BOUNDS5[:P]


def sphere(P):
    b = bounds(P)
    span = b[:, 1] - b[:, 0]
    c = b[:, 0] + OPTIMUM[:P] * span
    return lambda t: (((t - c) / span) ** 2).sum(axis=1)


def corner(P):
    """Linear loss pushing every parameter to its upper bound (stresses bound handling)."""
    b = bounds(P)
    return lambda t: -((t - b[:, 0]) / (b[:, 1] - b[:, 0])).sum(axis=1)


def make(name, P, seed=0, population=6, **settings):
    return get_optimizer(name, bounds(P), seed=seed, population=population,
                         **{**FAST.get(name, {}), **settings})


def run(opt, f, budget, target=-np.inf):
    """Best loss after ``budget`` evaluations, or as soon as it is below ``target``."""
    while opt.n_told < budget and not opt.done and not opt.best_loss < target:
        t = opt.ask()
        opt.tell(t, f(t))
    return opt.best_loss


def trajectory(opt, f, generations):
    out = []
    for _ in range(generations):
        if opt.done:
            break
        t = opt.ask()
        out.append(t)
        opt.tell(t, f(t))
    return out


# --- registry ---------------------------------------------------------------------------------

def test_registry_holds_every_family():
    assert set(OPTIMIZERS) == {"random", "grid", "cmaes", "de", "pso", "tpe", "optuna-cmaes",
                               "hyperopt-tpe", "bayesopt", "surrogate-cmaes", "gradient"}
    for name, cls in OPTIMIZERS.items():
        assert cls.name == name and issubclass(cls, Optimizer)


def test_unknown_optimizer_and_setting_suggest_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'cmaa' \(did you mean 'cmaes'\?\)"):
        get_optimizer("cmaa", bounds(2))
    with pytest.raises(ValueError, match=r"did you mean 'optuna-cmaes'"):
        validate_settings("optuna-cmae", {})
    with pytest.raises(ValueError, match=r"unknown setting 'sigma' for optimizer 'cmaes' \(did you mean 'sigma0'\?\)"):
        get_optimizer("cmaes", bounds(2), sigma=0.2)
    with pytest.raises(ValueError, match=r"did you mean 'points_per_dim'"):
        validate_settings("grid", {"points_per_dims": 3})
    assert validate_settings("grid", {"points_per_dim": 3}) == {"points_per_dim": 3}
    assert validate_settings("cmaes")["sigma0"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("bad, message", [
    ([[1.0, 0.0]], r"bounds\[0\] = \[1, 0\]: lower must be < upper"),
    ([[0.0, 1.0], [2.0, 2.0]], r"bounds\[1\]"),
    ([0.0, 1.0], r"shape \(P, 2\)"),
    ([[0.0, np.inf]], "finite"),
    ([["a", "b"]], "numbers"),
])
def test_bad_bounds_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        get_optimizer("random", bad)


def test_bad_seed_population_and_setting_values():
    with pytest.raises(ValueError, match="seed"):
        get_optimizer("random", bounds(2), seed=-1)
    with pytest.raises(ValueError, match="population"):
        get_optimizer("random", bounds(2), population=0)
    with pytest.raises(ValueError, match="parents"):
        make("cmaes", 2, population=6, parents=7)
    with pytest.raises(ValueError, match="sigma0"):
        make("cmaes", 2, sigma0=-0.1)
    with pytest.raises(ValueError, match="kind"):
        make("bayesopt", 2, kind="ucbb")
    with pytest.raises(ValueError, match="points_per_dim"):
        make("grid", 2, points_per_dim=[3, 0])
    with pytest.raises(ValueError, match="points_per_dim"):
        make("grid", 2, points_per_dim=[3, 3, 3])
    with pytest.raises(ValueError, match="points_per_dim"):
        make("grid", 2, points_per_dim=2.5)


def test_backends_are_imported_lazily():
    code = ("import sys, raybrain.search as s; s.validate_settings('tpe', {}); "
            "print(sorted(m for m in ('optuna', 'nevergrad', 'hyperopt', 'bayes_opt', 'cmaes') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, module, package", [
    ("cmaes", "nevergrad", "nevergrad"), ("tpe", "optuna", "optuna"),
    ("optuna-cmaes", "cmaes", "cmaes"), ("hyperopt-tpe", "hyperopt", "hyperopt"),
    ("bayesopt", "bayes_opt", "bayesian-optimization<2"),
])
def test_missing_backend_names_pip_package(monkeypatch, name, module, package):
    monkeypatch.setitem(sys.modules, module, None)       # makes `import module` fail
    with pytest.raises(ImportError, match=f'pip install "{package}"'):
        make(name, 2)


# --- contract, every family -------------------------------------------------------------------

@pytest.mark.parametrize("P", [2, 5])
@pytest.mark.parametrize("name", NAMES)
def test_asks_stay_in_bounds_with_population_rows(name, P):
    opt = make(name, P, population=7)
    b = bounds(P)
    f = corner(P)
    for _ in range(4):
        if opt.done:
            break
        t = opt.ask()
        assert t.dtype == np.float64 and t.shape[1] == P
        assert len(t) == 7 or (name == "grid" and 0 < len(t) < 7)
        assert np.all(t >= b[:, 0]) and np.all(t <= b[:, 1])
        opt.tell(t, f(t))
    assert opt.n_told == opt.n_asked > 0


@pytest.mark.parametrize("P", [2, 5])
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_asks_other_seed_other_asks(name, P):
    f = sphere(P)
    a = trajectory(make(name, P, seed=3), f, 3)
    b = trajectory(make(name, P, seed=3), f, 3)
    c = trajectory(make(name, P, seed=4), f, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    if name == "grid":                                   # the seed has no effect on a grid
        assert all(np.array_equal(x, y) for x, y in zip(a, c))
    else:
        assert not np.allclose(a[0], c[0]) or not np.allclose(a[-1], c[-1])


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_continues_identically(name):
    P = 3
    f = sphere(P)
    # (pycma's mirrored sampling below population 6 warns about orphaned injections: use 6)
    opt = make(name, P, seed=1, population=4 if name == "bayesopt" else 6)
    trajectory(opt, f, 2)
    pending = opt.ask()                                  # checkpoint with a generation outstanding
    clone = Optimizer.from_state(opt.state())
    assert type(clone) is type(opt) and clone is not opt
    for o in (opt, clone):
        o.tell(pending, f(pending))
    rest_a, rest_b = trajectory(opt, f, 2), trajectory(clone, f, 2)
    assert all(np.array_equal(x, y) for x, y in zip(rest_a, rest_b))
    assert clone.best_loss == opt.best_loss and clone.n_told == opt.n_told
    if name != "random":
        with pytest.raises(ValueError, match="not a RandomSearch"):
            OPTIMIZERS["random"].from_state(opt.state())


@pytest.mark.parametrize("name", ["cmaes", "de", "tpe", "hyperopt-tpe", "bayesopt"])
def test_tell_order_does_not_change_the_next_ask(name):
    P = 2
    f = sphere(P)
    a, b = make(name, P, seed=2), make(name, P, seed=2)
    for _ in range(3):
        ta, tb = a.ask(), b.ask()
        np.testing.assert_array_equal(ta, tb)
        a.tell(ta, f(ta))
        perm = np.random.default_rng(0).permutation(len(tb))
        b.tell(tb[perm], f(tb[perm]))
    np.testing.assert_array_equal(a.ask(), b.ask())


def test_tell_contract_errors_and_partial_tells():
    f = sphere(2)
    opt = make("cmaes", 2, population=6)
    with pytest.raises(RuntimeError, match="before any ask"):
        opt.tell(np.zeros((1, 2)), [0.0])
    t = opt.ask()
    with pytest.raises(RuntimeError, match="6 untold"):
        opt.ask()
    with pytest.raises(ValueError, match="losses must have shape"):
        opt.tell(t, f(t)[:-1])
    with pytest.raises(ValueError, match=r"theta must have shape \(n, 2\)"):
        opt.tell(t[:, :1], f(t))
    with pytest.raises(ValueError, match=r"losses\[1\] = nan is not finite"):
        opt.tell(t[:2], [0.0, np.nan])
    with pytest.raises(ValueError, match=r"theta\[0\].*not an untold candidate"):
        opt.tell(t[:1] + 0.01, [0.0])
    opt.tell(t[:4], f(t[:4]))                            # a generation may be told in parts
    with pytest.raises(ValueError, match="not an untold candidate"):
        opt.tell(t[:1], [0.0])                           # already told
    with pytest.raises(RuntimeError, match="2 untold"):
        opt.ask()
    opt.tell(t[4:], f(t[4:]))
    assert opt.ask().shape == (6, 2) and opt.n_told == 6


def test_best_is_the_lowest_told_loss():
    opt = make("random", 3, population=5)
    t = opt.ask()
    losses = np.array([3.0, -1.0, 2.0, -0.5, 7.0])
    opt.tell(t, losses)
    assert opt.best_loss == -1.0
    np.testing.assert_array_equal(opt.best_theta, t[1])
    t2 = opt.ask()
    opt.tell(t2, np.full(5, 0.0))
    assert opt.best_loss == -1.0


# --- family specifics -------------------------------------------------------------------------

def test_grid_covers_exactly_the_cartesian_points_in_chunks():
    b = np.array([[0.0, 1.0], [-2.0, 2.0]])
    opt = get_optimizer("grid", b, population=5, points_per_dim=[3, 4])
    chunks = []
    while not opt.done:
        t = opt.ask()
        chunks.append(t)
        opt.tell(t, np.zeros(len(t)))
    assert [len(c) for c in chunks] == [5, 5, 2]
    expected = np.array(list(itertools.product([0.0, 0.5, 1.0], [-2.0, -2.0 + 4 / 3, 2.0 - 4 / 3, 2.0])))
    np.testing.assert_allclose(np.vstack(chunks), expected, rtol=0, atol=1e-15)
    with pytest.raises(RuntimeError, match="nothing left"):
        opt.ask()


def test_grid_single_point_is_the_midpoint_and_corners_for_two():
    one = get_optimizer("grid", [[2.0, 4.0], [-1.0, 0.0]], points_per_dim=1)
    np.testing.assert_array_equal(one.ask(), [[3.0, -0.5]])
    assert one.done
    corners = get_optimizer("grid", bounds(3), population=100, points_per_dim=2)
    got = {tuple(r) for r in corners.ask()}
    assert got == set(itertools.product(*bounds(3))) and len(got) == 8


def test_random_search_is_uniform_over_the_box():
    b = np.array([[-3.0, 1.0], [100.0, 150.0]])
    t = get_optimizer("random", b, seed=5, population=20000).ask()
    for j, (lo, hi) in enumerate(b):
        assert stats.kstest(t[:, j], stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(t.T)[0, 1]) < 0.03


@pytest.mark.parametrize("P", [2, 20])                  # nevergrad scales CMA differently from 18-D
def test_cmaes_sigma0_is_a_fraction_of_each_range(P):
    b = np.stack([np.zeros(P), np.linspace(1.0, 10.0, P)], axis=1)
    t = get_optimizer("cmaes", b, seed=0, population=1500, sigma0=0.1).ask()
    span = b[:, 1] - b[:, 0]
    np.testing.assert_allclose(t.std(axis=0) / span, 0.1, rtol=0.08)
    np.testing.assert_allclose((t.mean(axis=0) - b[:, 0]) / span, 0.5, atol=0.012)


def test_cmaes_parents_reach_pycma():
    opt = make("cmaes", 5, population=10, parents=3)
    t = opt.ask()
    opt.tell(t, sphere(5)(t))
    assert opt._ng.es.sp.weights.mu == 3


def test_optuna_cmaes_starts_uniform_then_centred_with_sigma0():
    b = np.array([[0.0, 10.0], [-1.0, 1.0]])
    opt = get_optimizer("optuna-cmaes", b, seed=0, population=150, sigma0=0.1)
    first = opt.ask()                                    # optuna needs one finished trial first
    opt.tell(first, np.zeros(len(first)))
    span = b[:, 1] - b[:, 0]
    np.testing.assert_allclose(first.std(axis=0) / span, 1 / np.sqrt(12), rtol=0.15)
    second = opt.ask()
    np.testing.assert_allclose(second.std(axis=0) / span, 0.1, rtol=0.2)
    np.testing.assert_allclose((second.mean(axis=0) - b[:, 0]) / span, 0.5, atol=0.03)


# --- search quality ---------------------------------------------------------------------------

@pytest.mark.parametrize("P", [2, 5])
@pytest.mark.parametrize("name", ["cmaes", "de"])
def test_cmaes_and_de_reach_1e3_on_the_sphere_in_400_evaluations(name, P):
    best = np.array([run(make(name, P, seed=s, population=10), sphere(P), 400, target=1e-3)
                     for s in range(5)])
    assert np.median(best) < 1e-3, best
    if name == "cmaes":
        assert best.max() < 1e-3, best


def _random_median(P, budget, population):
    return np.median([run(make("random", P, seed=1000 + s, population=population), sphere(P), budget)
                      for s in range(21)])


@pytest.mark.parametrize("P", [2, 5])
@pytest.mark.parametrize("name, budget, population, seeds", [
    ("pso", 200, 20, 3), ("tpe", 100, 10, 3), ("optuna-cmaes", 200, 10, 3),
    ("hyperopt-tpe", 150, 10, 3), ("bayesopt", 30, 5, 2),
])
def test_model_based_families_beat_random_search(name, budget, population, seeds, P):
    """Median (over seeds) best loss within the budget is below half the median best loss of
    random search with the same budget (21 seeds)."""
    baseline = _random_median(P, budget, population)
    settings = {"n_iter": 2, "gp_restarts": 2} if name == "bayesopt" else {}
    best = [run(make(name, P, seed=s, population=population, **settings), sphere(P), budget,
                target=0.5 * baseline) for s in range(seeds)]
    assert np.median(best) < 0.5 * baseline, (best, baseline)
