"""Optimizer families in an experiment's two modes: settings reach the trial-mode searcher with the
population mode's defaults, settings a mode cannot honour are refused by key, and families of one's
own (``package.module:Class``: an ask/tell subclass, or a Tune ``Searcher``) resolve, run, or are
refused with one line naming the key. Trial-mode searchers are driven by hand (no Ray cluster);
the last test runs the shipped example experiment end to end on the session's Ray.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from raybrain.experiment import ConfigError, ExperimentConfig
from raybrain.search import Optimizer, SettingError, family, get_optimizer, validate_settings

pytest.importorskip("ray.tune")
from ray import tune  # noqa: E402

from raybrain.tuning import tune_searcher  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAR = types.SimpleNamespace(names=["G", "sigma"], bounds=np.array([[0.1, 1.0], [0.01, 0.1]]))
SPACE = {n: tune.uniform(float(lo), float(hi)) for n, (lo, hi) in zip(PAR.names, PAR.bounds)}
EXAMPLE = "examples.my_optimizer:OnePlusLambda"
_unique = itertools.count()


def searcher(name, settings, conc, seed=0):
    """The trial-mode searcher as ``run_experiment`` builds it, given its search space."""
    s = tune_searcher(name, PAR, seed, settings, conc)
    s.set_search_properties("loss", "min", SPACE)
    return s


def base(s):
    """The family's own searcher under the numbering and concurrency wrappers."""
    while hasattr(s, "searcher"):
        s = s.searcher
    return s


def suggest(s, n, first=0):
    """``n`` suggestions as rows (n, P) in PAR's order, trial ids t{first}..."""
    out = [s.suggest(f"t{first + i}") for i in range(n)]
    return np.array([[c[k] for k in PAR.names] for c in out])


def config(optimizers, **over):
    d = {"name": "fam", "storage": "unused", "subjects": {"ids": ["hcp/101309"]}, "model": {"name": "hopf"},
         "parametrisation": {"kind": "global", "names": PAR.names,
                             "bounds": {n: list(b) for n, b in zip(PAR.names, PAR.bounds.tolist())}},
         "loss": "fc_corr", "simulation": {"fidelities": [{"duration": 21.6, "dt": 0.08}], "burn_in": 0.0,
                                           "fused": "never"},  # the families under test
         "optimizers": optimizers, "budget": {"evaluations": 8}}
    d.update(over)
    return ExperimentConfig.model_validate(d, context={"base_dir": str(REPO)})


def config_error(optimizers) -> str:
    with pytest.raises(ConfigError) as e:
        config(optimizers)
    return str(e.value)


# ------------------------------------------------------------------- settings reach the searcher
@pytest.mark.parametrize("mode", ["population", "trial"])
def test_tpe_is_multivariate_with_constant_liar_and_its_settings_in_both_modes(mode):
    settings = {"n_startup_trials": 3, "n_ei_candidates": 7}
    if mode == "population":
        sampler = get_optimizer("tpe", PAR.bounds, seed=0, population=2, **settings)._study.sampler
    else:
        sampler = base(searcher("tpe", settings, 2))._sampler
    assert sampler._n_startup_trials == 3 and sampler._n_ei_candidates == 7
    assert sampler._multivariate is True and sampler._constant_liar is True
    # the defaults too: 10 uniform start-up trials in both modes
    default = (get_optimizer("tpe", PAR.bounds, population=2)._study.sampler if mode == "population"
               else base(searcher("tpe", {}, 2))._sampler)
    assert default._n_startup_trials == 10 and default._multivariate and default._constant_liar


@pytest.mark.parametrize("sigma0", [0.02, 0.3])
def test_trial_mode_cmaes_honours_sigma0_as_population_mode_does(sigma0):
    """The first generation is drawn around the box's centre with step sigma0 (in units of each
    range) in both modes; with the same seed and population it is the same generation."""
    trial = suggest(searcher("cmaes", {"sigma0": sigma0}, 8, seed=3), 8)
    pop = get_optimizer("cmaes", PAR.bounds, seed=3, population=8, sigma0=sigma0).ask()
    np.testing.assert_allclose(trial, pop, rtol=0, atol=1e-12)
    u = (trial - PAR.bounds[:, 0]) / (PAR.bounds[:, 1] - PAR.bounds[:, 0])
    rms = np.sqrt(np.mean((u - 0.5) ** 2))
    assert 0.4 * sigma0 < rms < 1.6 * sigma0


@pytest.mark.parametrize("name, settings", [
    ("tpe", {"n_startup_trials": 2}), ("optuna-cmaes", {"sigma0": 0.05}), ("cmaes", {"sigma0": 0.05}),
    (EXAMPLE, {"sigma0": 0.05}),
])
def test_same_seed_same_first_generation_in_both_modes(name, settings):
    trial = suggest(searcher(name, settings, 8, seed=5), 8)
    pop = get_optimizer(name, PAR.bounds, seed=5, population=8, **settings).ask()
    np.testing.assert_allclose(trial, pop, rtol=0, atol=1e-12)


def test_trial_mode_generations_are_at_least_the_family_default():
    """One trial in flight does not make CMA-ES a (1, 1)-ES: its generation is the default
    population 4 + floor(3 ln P), as population mode's default."""
    assert family("cmaes").trial_population(2, 1) == family("cmaes").default_population(2) == 6
    assert family("cmaes").trial_population(2, 16) == 16
    trial = suggest(searcher("cmaes", {"sigma0": 0.05}, 1, seed=5), 1)
    pop = get_optimizer("cmaes", PAR.bounds, seed=5, population=None, sigma0=0.05).ask()
    np.testing.assert_allclose(trial, pop[:1], rtol=0, atol=1e-12)
    assert base(searcher("optuna-cmaes", {}, 1))._sampler._popsize == 6


def test_every_family_setting_reaches_its_trial_searcher():
    b = base(searcher("optuna-cmaes", {"sigma0": 0.05, "use_separable_cma": True}, 8))
    assert b._sampler._sigma0 == 0.05 and b._sampler._popsize == 8 and b._sampler._use_separable_cma
    assert b._sampler._n_startup_trials == 0  # as in population mode
    algo = base(searcher("hyperopt-tpe", {"n_startup_jobs": 4, "n_EI_candidates": 7, "gamma": 0.3,
                                          "prior_weight": 0.5}, 3)).algo
    assert algo.keywords == {"n_startup_jobs": 4, "gamma": 0.3, "n_EI_candidates": 7, "prior_weight": 0.5}
    b = base(searcher("bayesopt", {"init_points": 3, "alpha": 1e-3, "gp_restarts": 1, "kind": "ei", "xi": 0.1}, 3))
    assert b.random_search_trials == 3 and b._random_state == 0
    assert b.optimizer._gp.alpha == 1e-3 and b.optimizer._gp.n_restarts_optimizer == 1
    assert b.utility.kind == "ei" and b.utility.xi == 0.1
    assert base(searcher("bayesopt", {}, 3)).random_search_trials == 5  # init_points' default
    de = base(searcher("de", {"F1": 0.3, "crossover": 0.9}, 12))._opt_factory
    assert (de.F1, de.crossover, de.popsize) == (0.3, 0.9, 12)
    assert base(searcher("de", {}, 2))._opt_factory.popsize == 10   # DE's default population
    pso = base(searcher("pso", {"omega": 0.3}, 48))._opt_factory
    assert (pso.omega, pso.popsize) == (0.3, 48)
    cma = base(searcher("cmaes", {"parents": 2, "diagonal": True}, 8))._opt_factory
    assert cma._config["inopts"] == {"CMA_mu": 2} and cma._config["diagonal"] and cma._config["popsize"] == 8


def test_trial_mode_grid_walks_the_population_grid():
    points = base(searcher("grid", {"points_per_dim": [2, 3]}, 2)).points
    grid = get_optimizer("grid", PAR.bounds, population=16, points_per_dim=[2, 3]).ask()
    np.testing.assert_allclose([[p[n] for n in PAR.names] for p in points], grid, rtol=0, atol=1e-15)
    assert len(points) == 6


@pytest.mark.parametrize("mode", ["population", "trial"])
def test_unknown_setting_is_refused_by_key_in_each_mode(mode):
    with pytest.raises(SettingError, match=r"unknown setting 'sigma00' for optimizer 'cmaes' "
                                           r"\(did you mean 'sigma0'\?\)") as e:
        validate_settings("cmaes", {"sigma00": 0.3}, mode)
    assert e.value.key == "settings.sigma00"
    msg = config_error([{"name": "cmaes", "mode": mode, "settings": {"sigma00": 0.3}}])
    assert msg.startswith("optimizers[0].settings.sigma00: unknown setting 'sigma00'") and "\n" not in msg
    with pytest.raises(ValueError, match="sigma00"):  # and at run time, if it got that far
        tune_searcher("cmaes", PAR, 0, {"sigma00": 0.3}, 2)


def test_settings_and_families_a_mode_cannot_honour_are_refused_at_validation():
    assert validate_settings("bayesopt", {"n_iter": 3}, "population")["n_iter"] == 3
    with pytest.raises(SettingError, match=r"'n_iter'.*'population' only") as e:
        validate_settings("bayesopt", {"n_iter": 3}, "trial")
    assert e.value.key == "settings.n_iter"
    msg = config_error([{"name": "bayesopt", "mode": "trial", "settings": {"n_warmup": 100}}])
    assert msg.startswith("optimizers[0].settings.n_warmup: setting 'n_warmup'")
    for name in ("gradient", "surrogate-cmaes"):
        with pytest.raises(SettingError, match=r"runs in mode 'population' only, not 'trial'") as e:
            validate_settings(name, {}, "trial")
        assert e.value.key == "mode"
    msg = config_error([{"name": "surrogate-cmaes", "mode": "trial"}])
    assert msg.startswith("optimizers[0].mode: optimizer 'surrogate-cmaes' runs in mode 'population' only")


def test_attach_objective_is_a_hook_of_every_family():
    assert "attach_objective" in vars(Optimizer)
    opt = get_optimizer("random", PAR.bounds, seed=0, population=2)
    assert opt.attach_objective(object(), seed=1, repeats=2) is None
    first = opt.ask()
    np.testing.assert_array_equal(first, get_optimizer("random", PAR.bounds, seed=0, population=2).ask())


def test_grid_completes_its_settings_from_the_budget():
    grid = family("grid")
    assert grid.complete_settings({}, 2, 10) == {"points_per_dim": 3}
    assert family("cmaes").complete_settings({"sigma0": 0.2}, 2, 10) == {"sigma0": 0.2}
    with pytest.raises(SettingError, match="a grid of 16 points exceeds budget.evaluations = 10") as e:
        grid.complete_settings({"points_per_dim": 4}, 2, 10)
    assert e.value.key == "settings.points_per_dim"


# -------------------------------------------------------------------------- families of one's own
def _module(tmp_path, monkeypatch, source: str) -> str:
    """A fresh importable module holding ``source``; its name."""
    name = f"my_family_{next(_unique)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_custom_ask_tell_family_resolves_and_runs_generations():
    from examples.my_optimizer import OnePlusLambda

    assert family(EXAMPLE) is OnePlusLambda
    assert validate_settings(EXAMPLE, {"sigma0": 0.1}) == {"sigma0": 0.1, "adapt": 1.5}
    span = PAR.bounds[:, 1] - PAR.bounds[:, 0]
    target = PAR.bounds[:, 0] + np.array([0.3, 0.7]) * span

    def loss(t):
        return (((t - target) / span) ** 2).sum(axis=1)

    def run(seed):
        opt = get_optimizer(EXAMPLE, PAR.bounds, seed=seed, population=6, sigma0=0.1)
        asks = []
        for _ in range(15):
            t = opt.ask()
            asks.append(t)
            opt.tell(t[::-1], loss(t)[::-1])   # any order
        return opt, np.concatenate(asks)

    opt, asks = run(0)
    assert opt.generation == 15 and opt.n_told == 90
    assert np.all((asks >= PAR.bounds[:, 0]) & (asks <= PAR.bounds[:, 1]))
    assert opt.best_loss < 1e-3 and loss(asks[:6]).min() > 0.01     # it moved to the optimum
    assert opt.sigma < 0.1                                          # and adapted its step
    np.testing.assert_array_equal(asks, run(0)[1])            # seeded
    again = Optimizer.from_state(opt.state())                 # checkpoints by pickle
    np.testing.assert_array_equal(again.ask(), opt.ask())
    cfg = config([{"name": EXAMPLE, "label": "mine", "population": 4, "settings": {"sigma0": 0.2}}])
    assert cfg.runs()[0].run_id == "hcp-101309__mine__seed0"
    cfg = config([{"name": EXAMPLE, "population": 4}])
    assert cfg.runs()[0].run_id == "hcp-101309__examples.my_optimizer-OnePlusLambda__seed0"  # file-system safe


def test_custom_ask_tell_family_in_trial_mode_runs_a_generation_at_a_time():
    s = searcher(EXAMPLE, {"sigma0": 0.1}, 10, seed=2)   # a generation of the 10 trials in flight
    first = suggest(s, 10)
    assert s.suggest("t10") is None                       # waits for the generation
    for i, row in enumerate(first[::-1]):                 # completions in any order
        s.on_trial_complete(f"t{9 - i}", {"loss": float(row[0])} if i else None, error=not i)
    opt = base(s).optimizer
    assert opt.population == 10 and opt.n_told == 10
    assert opt.best_loss == first[:9, 0].min()           # the erred trial is told the worst loss
    second = suggest(s, 10, first=11)
    assert s.suggest("t21") is None
    assert not np.allclose(second, first)
    assert list(base(s).live) == [f"t{i}" for i in range(11, 21)]


def test_custom_tune_searcher_runs_in_trial_mode_only(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, """
        from ray.tune.search import Searcher

        class Centre(Searcher):
            '''Always the point at ``fraction`` of each range.'''

            def __init__(self, fraction=0.5, seed=None, metric=None, mode=None):
                super().__init__(metric=metric, mode=mode)
                self.fraction, self.seed = fraction, seed

            def set_search_properties(self, metric, mode, config, **spec):
                self._metric, self._mode, self.space = metric, mode, config
                return True

            def suggest(self, trial_id):
                f = self.fraction
                return {k: d.lower + f * (d.upper - d.lower) for k, d in self.space.items()}
    """)
    name = f"{mod}:Centre"
    assert validate_settings(name, {"fraction": 0.25}, "trial") == {"fraction": 0.25}
    s = searcher(name, {"fraction": 0.25}, 2, seed=7)
    b = base(s)
    assert type(b).__name__ == "Centre" and b.seed == 7 and b.fraction == 0.25
    np.testing.assert_allclose(suggest(s, 1)[0], PAR.bounds[:, 0] + 0.25 * (PAR.bounds[:, 1] - PAR.bounds[:, 0]))
    cfg = config([{"name": name, "mode": "trial", "population": 2, "settings": {"fraction": 0.25}}])
    assert cfg.optimizers[0].name == name
    with pytest.raises(SettingError, match="is a Tune Searcher: it runs in mode 'trial' only") as e:
        validate_settings(name, {}, "population")
    assert e.value.key == "mode"
    msg = config_error([{"name": name, "population": 2}])
    assert msg.startswith(f"optimizers[0].mode: optimizer '{name}' is a Tune Searcher") and "\n" not in msg
    msg = config_error([{"name": name, "mode": "trial", "settings": {"fractoin": 0.2}}])
    assert msg.startswith("optimizers[0].settings.fractoin: setting 'fractoin' is not a keyword argument of "
                          "Centre.__init__ (accepted: fraction, metric, mode)")


@pytest.mark.parametrize("name, why", [
    ("no_such_module_xyz:Thing", r"cannot import module 'no_such_module_xyz' \(ModuleNotFoundError: No module "
                                 r"named 'no_such_module_xyz'\)"),
    ("examples.my_optimizer:Nope", r"module 'examples.my_optimizer' has no attribute 'Nope'"),
    ("raybrain.search:get_optimizer", r"get_optimizer is not a subclass of raybrain.search.Optimizer \(ask/tell\) "
                                      r"nor of ray.tune.search.Searcher"),
    ("examples.my_optimizer:", r"name your own family as 'package.module:Class'"),
])
def test_a_bad_import_path_is_one_line_naming_the_key(name, why):
    msg = config_error([{"name": "random"}, {"name": name}])
    assert "\n" not in msg
    assert msg.startswith(f"optimizers[1].name: optimizer '{name}': ")
    assert __import__("re").search(why, msg), msg


def test_a_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch):
    mod = _module(tmp_path, monkeypatch, "raise RuntimeError('broken on purpose\\nsecond line')\n")
    msg = config_error([{"name": f"{mod}:X"}])
    assert msg == (f"optimizers[0].name: optimizer '{mod}:X': cannot import module '{mod}' "
                   "(RuntimeError: broken on purpose)")


def test_the_example_module_is_found_from_the_working_directory_without_pythonpath():
    """``raybrain run`` from the repository root: the console script's sys.path does not hold the
    working directory, yet the example resolves (as Ray workers find it: their sys.path holds the
    driver's working directory)."""
    code = ("import sys, os; sys.path[:] = [p for p in sys.path if p not in ('', os.getcwd())]; "
            "from raybrain.search import family; print(family(%r).__name__)" % EXAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OnePlusLambda"


# ----------------------------------------------------------------------------- end to end on Ray
@pytest.mark.slow
def test_the_custom_optimizer_example_runs_in_both_modes(ray_local, tmp_path, monkeypatch):
    from raybrain import results as R
    from raybrain.tuning import run_experiment

    monkeypatch.chdir(REPO)  # the example's module is found from the repository root
    d = yaml.safe_load((REPO / "experiments" / "custom-optimizer.yaml").read_text())
    d["storage"] = str(tmp_path)
    d["budget"]["evaluations"] = 8
    d["validation"]["top"] = 0
    d["optimizers"] = [o for o in d["optimizers"] if ":" in o["name"]]
    cfg = ExperimentConfig.model_validate(d, context={"base_dir": str(REPO)})
    root, errors = run_experiment(cfg)
    assert errors == 0
    ev = R.load(root).evaluations
    for label, mode in (("one-plus-lambda", "population"), ("one-plus-lambda-trial", "trial")):
        rows = ev[ev["optimizer"] == label]
        assert len(rows) == 8 and (rows["mode"] == mode).all(), (label, len(rows))
        assert np.isfinite(rows["loss"]).all()
    pop = ev[ev["optimizer"] == "one-plus-lambda"].sort_values("eval_index")
    assert len(pop[["G", "sigma"]].drop_duplicates()) > 4   # it moved after the first generation
