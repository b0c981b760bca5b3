"""The learned cost surrogate (raybrain.surrogate) and the surrogate-cmaes family: known answers on a
synthetic bowl-plus-disc problem, reproducibility, checkpoints, and a fit on real Hopf evaluations."""
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from raybrain.search import get_optimizer, validate_settings  # noqa: E402
from raybrain.search.surrogate_cmaes import SurrogateCMAES, cmaes_minimise  # noqa: E402
from raybrain.surrogate import Surrogate, cost_components, training_rows  # noqa: E402

BOUNDS = np.array([[-1.0, 3.0], [-1.0, 1.0]])
OPT = np.array([1.5, 0.3])          # the bowl's minimum, inside the plausible disc
CENTRE, RADIUS = np.array([1.0, 0.0]), 0.6   # plausible: inside this disc (unit-box radius)


def synthetic(n, seed=0, noise=0.02, pfic=True):
    """Evaluations in the results schema: cost = a quadratic bowl split into pFIC-named components
    (their sum is the loss), plausible = inside a disc (2 % labels flipped)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(BOUNDS[:, 0], BOUNDS[:, 1], (n, 2))
    span = BOUNDS[:, 1] - BOUNDS[:, 0]
    d = (X - OPT) / span
    c1 = 4 * d[:, 0] ** 2 + noise * rng.standard_normal(n)
    c2 = 4 * d[:, 1] ** 2 + noise * rng.standard_normal(n)
    c3 = 0.5 * np.abs(d).sum(axis=1)
    plaus = np.sum(((X - CENTRE) / span) ** 2, axis=1) < (RADIUS / 2) ** 2
    plaus ^= rng.random(n) < 0.02
    df = pd.DataFrame({"experiment": "syn", "run_id": "r0", "phase": "train", "fidelity": 0, "duration": 1.0,
                       "dt": 0.1, "G": X[:, 0], "sigma": X[:, 1], "loss": c1 + c2 + c3,
                       "fc_corr": 1 - c1, "fc_corr_cost": c1, "fc_mean_diff": c2, "fcd_ks": c3,
                       "valid": True, "plausible": plaus})
    if not pfic:
        df = df.drop(columns=["fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks"])
    return df


@pytest.fixture(scope="module")
def train():
    df = synthetic(600, seed=0)
    # rows the surrogate must ignore: another phase, a lower fidelity
    extra = synthetic(50, seed=5).assign(phase="validation", loss=99.0)
    low = synthetic(50, seed=6).assign(fidelity=-1, loss=99.0)
    return pd.concat([df, extra, low], ignore_index=True)


@pytest.fixture(scope="module")
def fitted(train):
    return Surrogate.fit(train, seed=0)


def test_training_rows_keep_the_train_phase_at_the_top_fidelity(train):
    rows = training_rows(train)
    assert len(rows) == 600 and (rows["loss"] < 99).all()


def test_a_pfic_loss_decomposes_into_its_cost_components(train):
    assert cost_components(training_rows(train)) == ["fc_corr_cost", "fc_mean_diff", "fcd_ks"]
    assert cost_components(training_rows(synthetic(20, pfic=False))) is None


def test_held_out_cost_correlation_and_classifier_accuracy(fitted):
    assert fitted.target == "components" and fitted.params == ["G", "sigma"]
    sc = fitted.score(synthetic(400, seed=1))
    assert sc["n_train"] == 600 and sc["n_test"] == 400
    assert sc["cost_r"] > 0.9 and sc["cost_spearman"] > 0.9
    assert sc["class_accuracy"] > 0.9 and sc["class_accuracy"] > sc["class_majority"]
    cost, p = fitted.predict(np.array([OPT, [-0.9, -0.9]]))
    assert cost[0] < cost[1] and p[0] > 0.5 > p[1]


def test_loss_target_without_components():
    s = Surrogate.fit(synthetic(600, pfic=False), seed=0, ensemble=1)
    assert s.target == "loss" and s.outputs == ["loss"]
    assert s.score(synthetic(300, seed=2, pfic=False))["cost_r"] > 0.9


def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    back = Surrogate.load(path)
    theta = np.random.default_rng(0).uniform(BOUNDS[:, 0], BOUNDS[:, 1], (50, 2))
    for a, b in zip(fitted.predict(theta), back.predict(theta)):
        np.testing.assert_array_equal(a, b)
    assert back.outputs == fitted.outputs and back.n_train == fitted.n_train
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)


def test_fit_is_reproducible_for_a_seed(train):
    theta = np.array([[0.0, 0.0], [2.0, 0.5]])
    a = Surrogate.fit(train, seed=3, ensemble=1).predict(theta)
    b = Surrogate.fit(train, seed=3, ensemble=1).predict(theta)
    np.testing.assert_array_equal(a[0], b[0])


def test_inner_cmaes_finds_a_bowl_minimum():
    rng = np.random.default_rng(0)
    X, F = cmaes_minimise(lambda u: np.sum((u - 0.7) ** 2, axis=1), np.full(3, 0.2), 0.3, 10, 150, rng)
    assert np.all((X >= 0) & (X <= 1))
    np.testing.assert_allclose(X[np.argmin(F)], 0.7, atol=1e-3)


def _opt(train, seed=0, **kw):
    settings = {"train": train, "generations": 40, "ensemble": 1, **kw}
    return get_optimizer("surrogate-cmaes", BOUNDS, seed=seed, population=6, **settings)


def _true_loss(theta):
    d = (theta - OPT) / (BOUNDS[:, 1] - BOUNDS[:, 0])
    return 4 * np.sum(d ** 2, axis=1) + 0.5 * np.abs(d).sum(axis=1)


def test_registry_and_settings():
    assert validate_settings("surrogate-cmaes", {"train": "x"})["generations"] == 100
    with pytest.raises(ValueError, match="unknown setting"):
        validate_settings("surrogate-cmaes", {"trian": "x"})
    with pytest.raises(ValueError, match="parameter"):
        get_optimizer("surrogate-cmaes", np.array([[0, 1.0]] * 3), train=synthetic(50))


def test_proposes_candidates_near_the_known_optimum(train):
    opt = _opt(train, refit=0)
    theta = opt.ask()
    assert theta.shape == (6, 2)
    assert np.all(theta >= BOUNDS[:, 0]) and np.all(theta <= BOUNDS[:, 1])
    u = (theta - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0])
    uopt = (OPT - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0])
    assert np.linalg.norm(u - uopt, axis=1).max() < 0.1          # all near the optimum
    assert np.min([np.linalg.norm(a - b) for i, a in enumerate(u) for b in u[i + 1:]]) >= 0.02  # distinct
    assert opt.n_surrogate_evals >= 40 * 8


def test_asks_and_refits_keep_the_contract(train):
    opt = _opt(train, refit=1)
    for _ in range(3):
        theta = opt.ask()
        opt.tell(theta[::-1], _true_loss(theta[::-1]))   # tell order is free
    assert opt.n_refits == 3 and opt.surrogate.target == "loss"
    assert opt.surrogate.meta["n_extra"] == 18
    assert opt.best_loss < 0.01 and np.linalg.norm((opt.best_theta - OPT) / (BOUNDS[:, 1] - BOUNDS[:, 0])) < 0.1


def test_seed_reproducibility_and_state_round_trip(train):
    def run(opt, gens):
        out = []
        for _ in range(gens):
            t = opt.ask()
            opt.tell(t, _true_loss(t))
            out.append(t)
        return out

    a, b = _opt(train, seed=4), _opt(train, seed=4)
    ra, rb = run(a, 2), run(b, 1)
    restored = SurrogateCMAES.from_state(b.state())
    rb += run(restored, 1)
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.ask(), restored.ask())
    assert not np.array_equal(_opt(train, seed=5).ask(), _opt(train, seed=4).ask())


def test_train_from_a_parquet_file(train, tmp_path):
    path = tmp_path / "evals.parquet"
    train.to_parquet(path)
    assert _opt(str(path)).surrogate.n_train == 600


def test_fits_real_hopf_evaluations():
    from raybrain.data import list_subjects, load_subject
    from raybrain.integrate import SimulationSettings
    from raybrain.objective import Objective
    from raybrain.parametrisation import Global

    par = Global("hopf", names=("G", "sigma"), bounds_override={"G": (0.1, 1.0), "sigma": (0.01, 0.1)})
    s = SimulationSettings(duration=21.6, dt=0.08, burn_in=0.0, dtype="float64", noise="independent")
    obj = Objective(load_subject(list_subjects("hcp")[0]), "hopf", par, "fc_corr", s)
    theta = np.random.default_rng(0).uniform(par.bounds[:, 0], par.bounds[:, 1], (40, 2))
    recs = obj.evaluate(theta, seed=0)
    df = pd.DataFrame([{"experiment": "hopf", "phase": "train", "fidelity": 0, "dt": 0.08, **r} for r in recs])
    df = df[["experiment", "phase", "fidelity", "dt", "G", "sigma", "loss", "fc_corr", "fc_corr_cost",
             "valid", "diverged"]]
    sur = Surrogate.fit(df.iloc[:30], seed=0, ensemble=1)
    assert sur.target == "components" and sur.outputs == ["fc_corr_cost"]   # fc_corr: loss = 1 - r
    cost, p = sur.predict(theta[30:])
    assert cost.shape == (10,) and np.all(np.isfinite(cost)) and np.all((p >= 0) & (p <= 1))
    sc = sur.score(df.iloc[30:])
    assert sc["n_test"] == 10 and np.isfinite(sc["cost_rmse"])


def test_cold_start_learns_from_told_evaluations():
    opt = get_optimizer("surrogate-cmaes", BOUNDS, seed=0, population=8, generations=40, ensemble=1)
    first = opt.ask()
    assert opt.surrogate is None and first.shape == (8, 2)
    opt.tell(first, _true_loss(first))
    assert opt.surrogate is not None and opt.surrogate.params == ["x0", "x1"]
    for _ in range(3):
        t = opt.ask()
        opt.tell(t, _true_loss(t))
    assert opt.best_loss < _true_loss(first).min()
