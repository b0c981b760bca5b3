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


# -- the end-to-end speed-up at equal final test cost (raybrain.surrogate.speedup) -------------------

def _curve(sims, test, wall=None):
    c = pd.DataFrame({"sims": np.asarray(sims, dtype=float), "test_cost": np.asarray(test, dtype=float)})
    if wall is not None:
        c["wall_s"] = np.asarray(wall, dtype=float)
    return c


def test_speedup_at_equal_final_test_cost_known_answer():
    from raybrain.surrogate import speedup

    # the surrogate run reaches its final test cost 0.5 after 16 sims (an earlier incumbent, then a
    # noisier one, then back); plain CMA-ES first gets to <= 0.5 after 56 sims
    sur = _curve([8, 16, 24], [0.9, 0.5, 0.5], wall=[10, 20, 30])
    ref = _curve([8, 16, 24, 32, 40, 48, 56, 64], [1.0, 0.9, 0.8, 0.7, 0.6, 0.55, 0.49, 0.45],
                 wall=[1, 2, 3, 4, 5, 6, 7, 8])
    sp = speedup(sur, ref, train_sims=96, train_wall=40)
    assert sp["target_test_cost"] == 0.5 and sp["reached_reference"] and sp["bound"] == "="
    assert (sp["sims_surrogate"], sp["sims_reference"]) == (16, 56)
    assert sp["speedup_sims"] == pytest.approx(56 / 16)
    assert sp["speedup_sims_with_training"] == pytest.approx(56 / (16 + 96))
    assert (sp["wall_surrogate"], sp["wall_reference"]) == (20, 7)
    assert sp["speedup_wall"] == pytest.approx(7 / 20)
    assert sp["speedup_wall_with_training"] == pytest.approx(7 / 60)
    assert sp["reference_final_test_cost"] == 0.45
    # with a margin of 0.06 (reached: test cost <= 0.56) the surrogate run still needs 16 sims
    # (0.9 misses), the reference 48 (0.55; 0.6 misses)
    sp = speedup(sur, ref, tol=0.06)
    assert (sp["sims_surrogate"], sp["sims_reference"]) == (16, 48) and sp["tol"] == 0.06


def test_speedup_is_a_lower_bound_when_the_reference_never_reaches_the_target():
    from raybrain.surrogate import speedup

    sur, ref = _curve([8, 16], [0.7, 0.4]), _curve([8, 16, 24, 32], [0.9, 0.6, 0.41, 0.41])
    sp = speedup(sur, ref)
    assert not sp["reached_reference"] and sp["bound"] == ">"
    assert (sp["sims_surrogate"], sp["sims_reference"]) == (16, 32)   # the reference's whole budget
    assert sp["speedup_sims"] == pytest.approx(2.0) and "speedup_wall" not in sp
    # the other way round, at the reference's final test cost: the surrogate run reaches 0.41
    # after 16 sims, the reference after 24
    sp = speedup(sur, ref, target=0.41)
    assert sp["bound"] == "=" and (sp["sims_surrogate"], sp["sims_reference"]) == (16, 24)
    # a target only the reference reaches: an upper bound
    sp = speedup(_curve([8, 16], [0.7, 0.5]), ref, target=0.41)
    assert sp["bound"] == "<" and (sp["sims_surrogate"], sp["sims_reference"]) == (16, 24)


def test_incumbents_per_generation_from_a_run_dataframe():
    from raybrain.surrogate import incumbents

    # 3 generations of 2 at the top fidelity (1) plus, in generation 1, two cheap-rung rows
    # (fidelity 0, one sim each) and a continued row (new_sims 0); held-out rows are ignored
    rows = [(0, 0, 1, 0.8, 1), (0, 1, 1, np.nan, 1),
            (1, 2, 0, 0.1, 1), (1, 3, 0, 0.2, 1), (1, 4, 1, 0.9, 0), (1, 5, 1, 0.6, 1),
            (2, 6, 1, 0.6, 1), (2, 7, 1, 0.7, 1)]
    df = pd.DataFrame(rows, columns=["generation", "eval_index", "fidelity", "loss", "new_sims"]).assign(phase="train")
    df = pd.concat([df, pd.DataFrame({"generation": [0], "eval_index": [0], "fidelity": [-1], "loss": [0.01],
                                      "new_sims": [1], "phase": ["test"]})], ignore_index=True)
    inc = incumbents(df)
    assert inc["generation"].tolist() == [0, 1, 2]
    assert inc["sims"].tolist() == [2, 5, 7]
    assert inc["eval_index"].tolist() == [0, 5, 5]        # a tie (0.6 in generation 2) keeps the earlier
    assert inc["train_loss"].tolist() == [0.8, 0.6, 0.6]


# -- training rows of the run's own subject (train_subjects) --------------------------------------

OPT_B = np.array([0.0, -0.5])   # subject B's bowl minimum


def _two_subjects():
    a = synthetic(300, seed=0).assign(subject="hcp/A")
    b = synthetic(300, seed=1).assign(subject="hcp/B")
    d = (b[["G", "sigma"]].to_numpy() - OPT_B) / (BOUNDS[:, 1] - BOUNDS[:, 0])
    c1, c2 = 4 * d[:, 0] ** 2, 4 * d[:, 1] ** 2
    b = b.assign(fc_corr_cost=c1, fc_corr=1 - c1, fc_mean_diff=c2, fcd_ks=0.0, loss=c1 + c2, plausible=True)
    return pd.concat([a, b], ignore_index=True)


def _unit(theta):
    return (theta - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0])


class _Obj:
    def __init__(self, name, worst=10.0):
        self.subject = type("S", (), {"name": name})()
        self.loss = type("L", (), {"worst": worst})()


def test_failed_evaluations_stay_out_of_refits_given_the_losss_worst():
    def first_tell(attach):
        opt = get_optimizer("surrogate-cmaes", BOUNDS, seed=0, population=8, generations=10, ensemble=1)
        if attach:
            opt.attach_objective(_Obj("hcp/A", worst=10.0))
        t = opt.ask()
        y = _true_loss(t)
        y[[1, 5]] = 10.0          # two failed simulations (the loss's worst)
        opt.tell(t, y)
        return opt.surrogate

    assert first_tell(True).n_train == 6
    assert first_tell(False).n_train == 8   # nothing tells the optimizer what a failure is


def test_train_subjects_same_keeps_the_attached_subjects_rows():
    df = _two_subjects()
    opt = _opt(df, refit=0)
    assert opt.surrogate.n_train == 600 and opt.subject is None
    opt.attach_objective(_Obj("hcp/B"), seed=0, repeats=1)
    assert opt.subject == "hcp/B" and opt.surrogate.n_train == 300 and set(opt._rows["subject"]) == {"hcp/B"}
    u = _unit(opt.ask())
    assert np.linalg.norm(u - _unit(OPT_B), axis=1).max() < 0.1     # B's optimum, not A's
    opt.tell(opt.from_unit(u), np.ones(len(u)))
    restored = SurrogateCMAES.from_state(opt.state())
    restored.attach_objective(_Obj("hcp/A"), seed=0, repeats=1)     # after a restore: no change
    assert restored.subject == "hcp/B" and restored.surrogate.n_train == 300
    # a subject the data do not hold: every row kept
    other = _opt(df, refit=0)
    assert not other.use_subject("hcp/C") and other.surrogate.n_train == 600


def test_train_subjects_all_and_a_list():
    df = _two_subjects()
    opt = _opt(df, refit=0, train_subjects="all")
    assert not opt.use_subject("hcp/B") and opt.surrogate.n_train == 600
    opt = _opt(df, refit=0, train_subjects=["hcp/A"])
    assert opt.surrogate.n_train == 300
    u = _unit(opt.ask())
    assert np.linalg.norm(u - _unit(OPT), axis=1).max() < 0.1
    with pytest.raises(ValueError, match="no training rows"):
        _opt(df, train_subjects=["hcp/Z"])
    with pytest.raises(ValueError, match="train_subjects"):
        _opt(df, train_subjects="mine")


# -- under Tune: a relative ``train:`` path, read by the trial in its own working directory --------

HOPF_BOUNDS = np.array([[0.1, 1.0], [0.01, 0.1]])
HOPF_OPT = {"hcp/101309": np.array([0.8, 0.03]), "hcp/other": np.array([0.2, 0.09])}


def _write_training_results(root):
    """A results directory of synthetic records (loss = a bowl around HOPF_OPT[subject])."""
    from raybrain.results import ResultsWriter

    w = ResultsWriter(root, "syn")
    rng = np.random.default_rng(0)
    for subject, opt in HOPF_OPT.items():
        X = rng.uniform(HOPF_BOUNDS[:, 0], HOPF_BOUNDS[:, 1], (200, 2))
        cost = 4 * np.sum(((X - opt) / (HOPF_BOUNDS[:, 1] - HOPF_BOUNDS[:, 0])) ** 2, axis=1)
        recs = [{"G": g, "sigma": s, "loss": c, "fc_corr": 1 - c, "fc_corr_cost": c, "valid": True, "plausible": True}
                for (g, s), c in zip(X, cost)]
        w.write_generation(f"{subject}/random", 0, recs, {"mode": "population", "subject": subject,
                                                          "optimizer": "random", "seed": 0, "fidelity": 0,
                                                          "duration": 21.6, "dt": 0.08, "params": ["G", "sigma"]})


def test_relative_train_path_is_read_under_tune(ray_local, tmp_path, monkeypatch):
    from raybrain import results
    from raybrain.experiment import ExperimentConfig
    from raybrain.tuning import run_experiment

    _write_training_results(tmp_path / "prior" / "syn")
    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig.model_validate({
        "name": "sur", "storage": "out", "subjects": {"ids": ["hcp/101309"]}, "model": {"name": "hopf"},
        "parametrisation": {"kind": "global", "names": ["G", "sigma"],
                            "bounds": {"G": HOPF_BOUNDS[0].tolist(), "sigma": HOPF_BOUNDS[1].tolist()}},
        "loss": "fc_corr", "simulation": {"fidelities": [{"duration": 21.6, "dt": 0.08}], "burn_in": 0.0,
                                          "fused": "never", "noise": "common"},
        "optimizers": [{"name": "surrogate-cmaes", "population": 4,
                        "settings": {"train": "prior/syn", "generations": 30, "ensemble": 1, "refit": 0}}],
        "budget": {"evaluations": 4}, "validation": {"top": 0}})
    assert cfg.optimizers[0].settings["train"] == str(tmp_path / "prior" / "syn")   # absolute once validated
    root, errors = run_experiment(cfg)
    assert errors == 0   # a path left relative fails in the trial (Tune runs it in its own directory)
    df = results.load(root).evaluations
    assert len(df) == 4
    # learned from the run's own subject's records: all four candidates near its bowl's minimum,
    # far from the other subject's (a cold start would draw them uniformly)
    u = (df[["G", "sigma"]].to_numpy() - HOPF_BOUNDS[:, 0]) / (HOPF_BOUNDS[:, 1] - HOPF_BOUNDS[:, 0])
    uopt = (HOPF_OPT["hcp/101309"] - HOPF_BOUNDS[:, 0]) / (HOPF_BOUNDS[:, 1] - HOPF_BOUNDS[:, 0])
    assert np.linalg.norm(u - uopt, axis=1).max() < 0.15
