"""Experiment configs: the shipped YAML files, validation errors by key path, run expansion,
subjects (bundled, user files, synthetic with known parameters, groups) and objectives."""
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from raybrain.data import list_subjects, load_subject
from raybrain.experiment import ConfigError, ExperimentConfig, known_optimizers, load_config
from raybrain.integrate import Simulation, SimulationSettings

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SHIPPED = sorted(EXPERIMENTS.glob("*.yaml"))


@pytest.fixture(scope="module")
def quickstart_dict():
    return yaml.safe_load((EXPERIMENTS / "quickstart.yaml").read_text())


# ------------------------------------------------------------------------------ shipped files
def test_the_three_required_configs_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"quickstart", "compare-optimizers", "pfic-cmaes"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    runs = cfg.runs()
    assert len(runs) == len(cfg.targets()) * len(cfg.optimizers) * len(cfg.seeds)
    assert len({r.run_id for r in runs}) == len(runs)


def test_quickstart_is_small_and_has_four_families_with_asha():
    cfg = load_config(EXPERIMENTS / "quickstart.yaml")
    assert cfg.resources.cpu <= 2 and cfg.resources.gpu == 0
    assert cfg.targets() == ["hcp/101309", "hcp/102311"]
    assert len({o.name for o in cfg.optimizers}) >= 4
    assert any(o.mode == "trial" and o.scheduler == "asha" for o in cfg.optimizers)
    assert cfg.parametrisation.kind == "global" and cfg.parametrisation.names == ["G", "sigma"]
    assert min(f.dt for f in cfg.simulation.fidelities) >= 1e-3
    # compute: runs × evaluations × the longest fidelity's steps × 80 regions, at most 2e10
    # region-steps (≈ 3 min of one core at the measured 1e8 region-steps/s for B = 1)
    longest = cfg.simulation.fidelities[-1]
    steps = (longest.duration + cfg.simulation.burn_in) / longest.dt
    assert len(cfg.runs()) * cfg.budget.evaluations * steps * 80 * cfg.simulation.repeats < 2e10


def test_compare_optimizers_covers_every_family_subject_and_five_seeds():
    cfg = load_config(EXPERIMENTS / "compare-optimizers.yaml")
    # every search family (the learned-surrogate and gradient families need earlier results or JAX
    # and have their own example experiments)
    assert set(known_optimizers()) - {"surrogate-cmaes", "gradient"} <= {o.name for o in cfg.optimizers}
    assert cfg.targets() == list_subjects()
    assert len(cfg.seeds) >= 5
    assert cfg.resources.gpu > 0


def test_pfic_cmaes_follows_the_zhang_2024_protocol():
    cfg = load_config(EXPERIMENTS / "pfic-cmaes.yaml")
    (opt,) = cfg.optimizers
    assert opt.name == "cmaes" and opt.population == 100 and opt.settings == {"parents": 10, "sigma0": 0.25}
    assert cfg.budget.evaluations == 100 * 100
    sim = cfg.simulation
    assert (sim.fidelities[0].dt, sim.fidelities[0].duration, sim.burn_in, sim.repeats) == (0.006, 864.0, 144.0, 3)
    assert cfg.loss == "pfic" and cfg.subjects.group
    split = cfg.subjects.split
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert cfg.targets() == ["group/train"]
    par = cfg.build_parametrisation("group/train")
    assert par.size == 10 and par.names[-1] == "G"


# ------------------------------------------------------------------------------ bad configs
def _set(path, value):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[last] = value
    return edit


def _pop(path):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        del d[last]
    return edit


def _rename(path, new):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        d[new] = d.pop(last)
    return edit


BAD = [
    (_set(["optimizers", 2, "name"], "cmaa"), r"^optimizers\[2\]\.name: unknown optimizer 'cmaa' \(did you mean 'cmaes'\?\)$"),
    (_rename(["optimizers", 1, "population"], "polpulation"),
     r"^optimizers\[1\]\.polpulation: unknown key \(did you mean 'population'\?\)$"),
    (_rename(["simulation", "fidelities"], "fidelitees"), r"^simulation\.fidelitees: unknown key \(did you mean 'fidelities'\?\)"),
    (_rename(["budget"], "budgett"), r"^budgett: unknown key \(did you mean 'budget'\?\)"),
    (_set(["budget", "evaluations"], 0), r"^budget\.evaluations: must be a positive integer, got 0$"),
    (_set(["budget", "evaluations"], -3), r"^budget\.evaluations: must be a positive integer, got -3$"),
    (_set(["budget", "evaluations"], "ten"), r"^budget\.evaluations: .*valid integer, got 'ten'$"),
    (_set(["budget", "evaluations"], True), r"^budget\.evaluations: .*valid integer, got True$"),
    (_pop(["budget"]), r"^budget: required key is missing$"),
    (_set(["parametrisation", "bounds", "G"], [2.0, 1.0]), r"^parametrisation\.bounds\.G: bounds reversed"),
    (_set(["parametrisation", "bounds", "G"], [1.0]), r"^parametrisation\.bounds\.G: bounds must be a pair"),
    (_set(["parametrisation", "bounds", "Gg"], [1.0, 2.0]),
     r"^parametrisation\.bounds\.Gg: .*unknown parameter 'Gg' \(did you mean 'G'\?\)"),
    (_set(["parametrisation", "names", 1], "sigmaa"),
     r"^parametrisation\.names\[1\]: model 'rww' has no parameter 'sigmaa' \(did you mean 'sigma'\?\)"),
    (_set(["parametrisation", "regional"], ["w_EE"]), r"^parametrisation\.regional: only applies to kind 'maps'"),
    (_set(["parametrisation", "kind"], "local"), r"^parametrisation\.kind: .*'global', 'maps' or 'regional'"),
    (_set(["subjects", "ids", 1], "hcp/10231"),
     r"^subjects\.ids\[1\]: unknown bundled subject 'hcp/10231' \(did you mean 'hcp/102311'\?\)"),
    (_set(["subjects", "ids"], []), r"^subjects: no subjects"),
    (_set(["model", "name"], "rw"), r"^model\.name: unknown model 'rw' \(did you mean 'rww'\?\)"),
    (_set(["model", "options"], {"fc": False}), r"^model\.options\.fc: unknown option .*did you mean 'fic'"),
    (_set(["loss"], "pfc"), r"^loss: unknown loss 'pfc' \(did you mean 'pfic'\?\)"),
    (_set(["simulation", "fidelities"], [{"duration": 172.8, "dt": 0.001}, {"duration": 86.4, "dt": 0.001}]),
     r"^simulation\.fidelities\[1\]: fidelities must ascend"),
    (_set(["simulation", "fidelities", 0, "dt"], 0.007), r"^simulation\.fidelities\[0\]\.dt: the TR \(0\.72 s\)"),
    (_set(["simulation", "fidelities", 0, "duration"], 30.0),
     r"^simulation\.fidelities\[0\]\.duration: .*too few for FCD with window 60"),
    (_set(["simulation", "noise"], "shared"), r"^simulation\.noise: .*'common' or 'independent', got 'shared'"),
    (_set(["seeds"], 0), r"^seeds: a number of seeds must be >= 1"),
    (_set(["seeds"], [1, 1]), r"^seeds: seeds repeat"),
    (_set(["optimizers", 3, "mode"], "population"), r"^optimizers\[3\]\.scheduler: scheduler 'asha' applies to mode 'trial'"),
    (_set(["optimizers", 0, "successive_halving"], True), None),  # valid: population mode
    (_set(["optimizers", 3, "successive_halving"], True), r"^optimizers\[3\]\.successive_halving: applies to mode 'population'"),
    (_set(["optimizers", 1, "label"], "random"), r"^optimizers\[1\]\.label: label 'random' is used by optimizers\[0\]"),
    (_set(["simulation", "fidelities"], [{"duration": 172.8, "dt": 0.001}]),
     r"^optimizers\[3\]\.scheduler: scheduler asha needs at least 2 simulation\.fidelities"),
    (_set(["optimizers", 1, "settings"], {"sigma00": 0.3}),
     r"^optimizers\[1\]\.settings\.sigma00: .*'sigma00'.*did you mean 'sigma0'"),
    (_set(["optimizers", 1, "settings"], []), r"^optimizers\[1\]\.settings: .*valid dictionary"),
    (_set(["resources", "gpu"], -1.0), r"^resources\.gpu: must be >= 0"),
    (_set(["name"], "my exp"), r"^name: experiment name 'my exp' may hold only"),
    (_set(["subjects", "split"], {"train": ["hcp/101309"], "test": ["hcp/131217"]}),
     r"^subjects\.split\.test\[0\]: 'hcp/131217' is not one of the experiment's subjects"),
    (_set(["subjects", "split"], {"train": ["hcp/101309"], "test": ["101309"]}),
     r"^subjects\.split\.test\[0\]: subject 'hcp/101309' is already in split\.train"),
    (_set(["subjects", "synthetic"], [{"name": "syn", "from_subject": "hcp/101309", "params": {"G": 9.0}}]),
     r"^subjects\.synthetic\[0\]\.params\.G: true value 9\.0 lies outside the search bounds \[0\.5, 2\.5\]"),
    (_set(["subjects", "synthetic"], [{"name": "syn", "from_subject": "hcp/101309", "params": {"g": 1.0}}]),
     r"^subjects\.synthetic\[0\]\.params\.g: not a parameter of the parametrisation \(did you mean 'G'\?\)"),
    (_set(["subjects", "synthetic"], [{"name": "hcp/101309", "from_subject": "hcp/101309"}]),
     r"^subjects\.synthetic\[0\]\.name: subject name 'hcp/101309' is already used"),
    (_set(["subjects", "synthetic"], [{"name": "syn", "from_subject": "hcp/1"}]),
     r"^subjects\.synthetic\[0\]\.from_subject: unknown bundled subject 'hcp/1'"),
    (_set(["optimizers", 0, "successive_halving"], {"eta": 1.0}),
     r"^optimizers\[0\]\.successive_halving\.eta: .*eta must be > 1"),
    (_set(["optimizers", 0, "successive_halving"], {"eta": 3, "rungs": 2}),
     r"^optimizers\[0\]\.successive_halving\.rungs: unknown key"),
    (_set(["optimizers", 0], {"name": "grid", "settings": {"points_per_dim": 9}}),
     r"^optimizers\[0\]\.settings\.points_per_dim: a grid of 81 points exceeds budget\.evaluations = 64"),
    (_set(["validation"], {"top": -1}), r"^validation\.top: .*must be >= 0"),
    (_set(["validation"], {"tpo": 3}), r"^validation\.tpo: unknown key \(did you mean 'top'\?\)"),
]


@pytest.mark.parametrize("edit,expected", BAD)
def test_bad_configs_name_the_key_path(quickstart_dict, edit, expected):
    d = copy.deepcopy(quickstart_dict)
    edit(d)
    if expected is None:
        ExperimentConfig.model_validate(d)
        return
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.model_validate(d)
    assert isinstance(info.value, ValueError)
    assert any(re.search(expected, f"{p}: {m}") for p, m in info.value.errors), str(info.value)


def test_group_of_subjects_with_different_trs_is_refused(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["subjects"] = {"ids": ["hcp/101309", "gw/NAP_001"], "group": True}
    d["simulation"]["fidelities"] = [{"duration": 180.0, "dt": 0.001}, {"duration": 360.0, "dt": 0.001}]
    with pytest.raises(ConfigError, match=r"subjects\.group: the train subjects have different TRs \[0\.72, 2\.0\]"):
        ExperimentConfig.model_validate(d)


def test_regional_bounds_are_checked_against_the_region_count(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["parametrisation"] = {"kind": "regional", "parameter": "w_EE", "bounds": {"w_EE[79]": [1.0, 2.0]}}
    cfg = ExperimentConfig.model_validate(d)
    par = cfg.build_parametrisation("hcp/101309")
    assert par.size == 81 and tuple(par.bounds[79]) == (1.0, 2.0)
    d["parametrisation"]["bounds"] = {"w_EE[80]": [1.0, 2.0]}  # 80 regions: indices 0..79
    with pytest.raises(ConfigError, match=r"parametrisation\.bounds\.w_EE\[80\]: .*unknown parameter"):
        ExperimentConfig.model_validate(d)


def test_load_config_reports_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsubjects: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid experiment config\n  not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys, got list"):
        load_config(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("name: x\nbudget: {evaluations: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    paths = [p for p, _ in info.value.errors]
    assert {"budget.evaluations", "subjects", "simulation", "optimizers"} <= set(paths)
    assert str(bad) in str(info.value)


def test_yaml_is_read_with_safe_load(tmp_path, quickstart_dict):
    text = yaml.safe_dump(quickstart_dict) + "extra: !!python/object/apply:os.system ['echo pwned']\n"
    p = tmp_path / "evil.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


# ------------------------------------------------------------------------------ expansion
def test_runs_expand_subjects_optimizers_and_seeds(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["seeds"] = 3
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.seeds == [0, 1, 2]
    runs = cfg.runs()
    assert len(runs) == 2 * 4 * 3
    assert runs[0].run_id == "hcp-101309__random__seed0"
    assert runs[-1].run_id == "hcp-102311__tpe-asha__seed2"
    assert runs[-1].mode == "trial" and runs[-1].optimizer.scheduler == "asha" and runs[-1].seed == 2
    assert [r.run_id for r in cfg.runs()] == [r.run_id for r in ExperimentConfig.model_validate(d).runs()]
    d["subjects"]["group"] = True
    assert [r.subject for r in ExperimentConfig.model_validate(d).runs()] == ["group"] * 12
    d["seeds"] = [5, 11]
    assert [r.seed for r in ExperimentConfig.model_validate(d).runs()][:2] == [5, 11]


def test_dataset_ids_and_bare_ids_expand(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["subjects"] = {"ids": ["gw", "101309", "hcp/101309"]}
    d["simulation"]["fidelities"] = [{"duration": 180.0, "dt": 0.001}, {"duration": 360.0, "dt": 0.001}]
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.targets() == list_subjects("gw") + ["hcp/101309"]


# ------------------------------------------------------------------------------ subjects, objectives
def test_group_target_averages_the_training_subjects_fc(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["subjects"]["group"] = True
    cfg = ExperimentConfig.model_validate(d)
    g = cfg.build_subject("group")
    expected = np.mean([np.corrcoef(load_subject(n).bold.T) for n in ("hcp/101309", "hcp/102311")], axis=0)
    np.testing.assert_allclose(g.fc(), expected, atol=1e-10)
    with pytest.raises(ValueError, match="unknown group target 'group/train'"):
        cfg.build_subject("group/train")


def test_objective_uses_the_fidelity_and_simulation_settings(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["loss"] = "fc_corr"  # no FCD target to compute: fast
    cfg = ExperimentConfig.model_validate(d)
    obj = cfg.build_objective("hcp/102311", 1)
    s = obj.settings
    assert (s.duration, s.dt, s.burn_in, s.tr, s.noise, s.dtype) == (172.8, 0.001, 30.0, 0.72, "common", "float32")
    assert obj.parametrisation.names == ("G", "sigma")
    np.testing.assert_allclose(obj.parametrisation.bounds, [[0.5, 2.5], [0.001, 0.01]])
    assert np.isclose(obj.sc.max(), 0.2) and obj.subject.name == "hcp/102311"
    assert cfg.build_objective("102311", 0).settings.duration == 86.4
    assert cfg.build_objective("hcp/102311", "validation").settings.duration == 172.8
    with pytest.raises(ValueError, match="fidelity index"):
        cfg.build_objective("hcp/102311", 2)
    with pytest.raises(ValueError, match="not part of experiment"):
        cfg.build_subject("hcp/131217")


def test_user_subject_paths_resolve_against_the_config_folder(tmp_path, quickstart_dict):
    rng = np.random.default_rng(0)
    sc = rng.random((6, 6))
    bold = rng.standard_normal((100, 6))
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "sc.npy", sc)
    np.save(tmp_path / "data" / "bold.npy", bold)
    d = copy.deepcopy(quickstart_dict)
    d["subjects"] = {"paths": [{"name": "me", "sc": "data/sc.npy", "bold": "data/bold.npy", "tr": 2.0}]}
    d["simulation"]["fidelities"] = [{"duration": 180.0, "dt": 0.001}, {"duration": 360.0, "dt": 0.001}]
    d["simulation"]["window"] = 20
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(d))
    cfg = load_config(p)
    s = cfg.build_subject("me")
    np.testing.assert_allclose(s.bold, bold)
    np.testing.assert_allclose(s.sc, sc - np.diag(np.diag(sc)))  # self-connections removed (diagonal="zero")
    assert s.tr == 2.0 and cfg.true_params("me") is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "exp.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"subjects\.paths\[0\]\.sc: file not found"):
        load_config(elsewhere / "exp.yaml")


SYNTHETIC = {
    "name": "recovery",
    "subjects": {"synthetic": [{"name": "syn", "from_subject": "hcp/101309", "params": {"G": 0.8},
                                "duration": 57.6, "dt": 0.01, "seed": 7}]},
    "model": {"name": "hopf"},
    "parametrisation": {"kind": "global", "names": ["G", "a"], "bounds": {"G": [0.0, 2.0], "a": [-0.2, 0.2]}},
    "loss": "pfic",
    "simulation": {"fidelities": [{"duration": 57.6, "dt": 0.01}], "burn_in": 10.0, "noise": "common",
                   "dtype": "float64", "window": 20, "step": 1},
    "optimizers": [{"name": "random", "population": 4}],
    "budget": {"evaluations": 8},
}


def test_synthetic_subject_is_the_simulation_at_its_true_parameters():
    cfg = ExperimentConfig.model_validate(copy.deepcopy(SYNTHETIC))
    truth = cfg.true_params("syn")
    assert truth == {"G": 0.8, "a": 0.0}  # 'a' not given: the middle of its bounds
    assert cfg.true_params("hcp/101309") is None
    subj = cfg.build_subject("syn")
    # independently: the same simulation set up by hand
    src = load_subject("hcp/101309")
    settings = SimulationSettings(duration=57.6, dt=0.01, burn_in=10.0, tr=0.72, seed=7, dtype="float64")
    assert cfg.simulation.sc_scaling == ("spectral", 0.49)  # the default: spectral radius 0.49
    sc = src.sc * (0.49 / np.abs(np.linalg.eigvalsh(src.sc)).max())
    res = Simulation("hopf", sc, {"G": np.array([0.8]), "a": np.array([0.0])}, settings,
                     batch=1, streams=np.array([0])).run()
    np.testing.assert_array_equal(subj.bold, np.asarray(res.bold[0]))
    assert subj.bold.shape == (80, 80) and subj.tr == 0.72
    np.testing.assert_array_equal(subj.sc, src.sc)
    # fitting it: the truth with the same noise reproduces it exactly, other noise or G do not
    obj = cfg.build_objective("syn", 0)
    theta = np.array([[truth["G"], truth["a"]]])
    exact = obj.evaluate(theta, seed=7)[0]
    assert exact["fc_corr"] == pytest.approx(1.0, abs=1e-12) and exact["loss"] == pytest.approx(0.0, abs=1e-12)
    other_noise = obj.evaluate(theta, seed=8)[0]
    wrong_g = obj.evaluate(np.array([[1.8, 0.0]]), seed=7)[0]
    assert other_noise["loss"] > 0.05 and wrong_g["loss"] > 0.05


def test_config_pickles_without_its_subject_cache_and_round_trips(quickstart_dict):
    import pickle

    cfg = ExperimentConfig.model_validate(copy.deepcopy(quickstart_dict))
    cfg.build_subject("hcp/101309")  # ~1 MB of BOLD in the cache
    blob = pickle.dumps(cfg)
    assert len(blob) < 20_000
    again = pickle.loads(blob)
    assert again.runs() == cfg.runs()
    dumped = ExperimentConfig.model_validate(cfg.model_dump())
    assert dumped.runs() == cfg.runs() and dumped.simulation == cfg.simulation


def test_successive_halving_eta_and_grid_points_from_the_budget(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    d["optimizers"] = [{"name": "cmaes", "successive_halving": True},
                       {"name": "de", "successive_halving": {"eta": 3}},
                       {"name": "grid"}, {"name": "random"}]
    cfg = ExperimentConfig.model_validate(d)
    assert [o.halving_eta for o in cfg.optimizers] == [2.0, 3.0, None, None]
    # budget 64 over 2 parameters: 8 x 8; a budget of 63 gives 7 x 7
    assert cfg.optimizer_settings(cfg.optimizers[2], 2) == {"points_per_dim": 8}
    d["budget"]["evaluations"] = 63
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.optimizer_settings(cfg.optimizers[2], 2) == {"points_per_dim": 7}
    assert cfg.optimizer_settings(cfg.optimizers[0], 2) == {}


def test_holdout_targets_follow_the_split_and_the_group(quickstart_dict):
    d = copy.deepcopy(quickstart_dict)
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.holdout_targets("validation", "hcp/101309") == ["hcp/101309"]  # no split: itself, fresh noise
    assert cfg.holdout_targets("test", "hcp/101309") == []
    d["subjects"] = {"ids": ["hcp"], "split": {"train": ["101309", "102311"], "validation": ["102816"],
                                               "test": ["131217", "211619"]}}
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.holdout_targets("validation", "hcp/101309") == ["hcp/102816"]
    assert cfg.holdout_targets("test", "hcp/102311") == ["hcp/131217", "hcp/211619"]
    d["subjects"]["group"] = True
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.targets() == ["group/train"]
    assert cfg.holdout_targets("validation", "group/train") == ["group/validation"]
    assert cfg.holdout_targets("test", "group/train") == ["group/test"]
    d["validation"] = {"top": 0}
    cfg = ExperimentConfig.model_validate(d)
    assert cfg.holdout_targets("validation", "group/train") == [] == cfg.holdout_targets("test", "group/train")
