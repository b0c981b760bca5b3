"""A cohort in the experiment config: subjects from a participants table and path patterns,
covariates, every broken subject named at once, ``bounds: {G: auto}``, SC normalisation,
synthetic subjects from any connectome file, maps and targets from files."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raybrain.connectome import normalise, statistic
from raybrain.data import load_connectome
from raybrain.data.synthetic import edr_connectome, make_cohort
from raybrain.experiment import ConfigError, ExperimentConfig
from raybrain.landscape import stable_g_range
from raybrain.parametrisation import standardise_map

SC_PAT = "sub-{sub}/dwi/sub-{sub}_seg-{atlas}_connectome.csv"
BOLD_PAT = "sub-{sub}/func/sub-{sub}_task-rest_run-*_seg-{atlas}_stat-mean_timeseries.tsv"


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root / "data", 5, connectomes=[("EDRA", edr_connectome(10, seed=1)),
                                               ("EDRB", edr_connectome(12, seed=2))],
                covariate_effects={"G": (1.6, -0.005)}, duration=60.0, burn_in=5.0, dt=2e-3,
                norm="spectral", norm_value=None, seed=3)
    return root


def config(root: Path, **cohort) -> dict:
    return {
        "name": "coh", "storage": str(root / "results"),
        "subjects": {"cohort": {"participants": "data/participants.tsv", "sc": SC_PAT, "bold": BOLD_PAT,
                                "atlas": "atlas-{atlas}_dseg.tsv", "covariates": ["age", "sex"], **cohort}},
        "parametrisation": {"kind": "global", "names": ["G"], "bounds": {"G": "auto"}},
        "loss": "fc_corr",
        "simulation": {"fidelities": [{"duration": 30.0, "dt": 0.002}], "burn_in": 5.0, "window": 10},
        "optimizers": [{"name": "random", "population": 4}],
        "budget": {"evaluations": 4},
    }


def validate(data: dict, root: Path) -> ExperimentConfig:
    return ExperimentConfig.model_validate(copy.deepcopy(data), context={"base_dir": str(root)})


def test_a_cohort_section_declares_every_subject_with_its_covariates_and_tr(cohort_root):
    cfg = validate(config(cohort_root), cohort_root)
    table = pd.read_csv(cohort_root / "data" / "participants.tsv", sep="\t")
    assert cfg.subjects.names() == list(table["participant_id"])
    assert [r.subject for r in cfg.runs()] == list(table["participant_id"])
    cov = cfg.covariates()
    assert list(cov.columns) == ["subject", "age", "sex"]
    np.testing.assert_array_equal(cov["age"].to_numpy(float), table["age"].to_numpy(float))
    assert set(cfg._subject_trs().values()) == {0.72}  # RepetitionTime of the JSON sidecars
    s = cfg.build_subject("sub-002")  # the second connectome (round-robin): 12 regions, MRtrix CSV
    assert s.n_regions == 12 and s.labels[0].startswith("L_") and s.centres.shape == (12, 3)
    assert np.array_equal(s.sc, s.sc.T) and not s.sc.diagonal().any()


def test_missing_files_of_several_subjects_are_named_in_one_error(cohort_root, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(cohort_root / "data", root / "data")
    (root / "data/sub-001/dwi/sub-001_seg-EDRA_connectome.csv").unlink()
    for f in (root / "data/sub-004/func").glob("*_timeseries.tsv"):
        f.unlink()
    with pytest.raises(ConfigError) as e:
        validate(config(root), root)
    msg = str(e.value)
    assert "subjects.cohort" in msg and "sub-001" in msg and "sub-004" in msg
    with pytest.warns(UserWarning, match="skipped 2 subjects"):
        cfg = validate(config(root, on_missing="skip"), root)
    assert cfg.subjects.names() == ["sub-002", "sub-003", "sub-005"]


def test_subjects_that_load_badly_are_found_together_before_any_simulation(cohort_root, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(cohort_root / "data", root / "data")
    f = next((root / "data/sub-003/func").glob("*_timeseries.tsv"))
    f.write_text(f.read_text().replace("\n", "\nnot-a-number\t", 1))  # a broken row
    g = next((root / "data/sub-005/func").glob("*_timeseries.tsv"))
    lines = g.read_text().splitlines()
    g.write_text("\n".join([lines[0]] + lines[1:4]) + "\n")  # 3 frames: too short for the window
    data = config(root)
    data["loss"] = "pfic"  # needs FCD: the recording must hold two windows
    cfg = validate(data, root)
    problems = dict(cfg.check_subjects())
    assert sorted(problems) == ["sub-003", "sub-005"]
    assert "sub-003" in problems["sub-003"] and "frames" in problems["sub-005"]
    assert cfg.excluding(problems).subjects.names() == ["sub-001", "sub-002", "sub-004"]


def test_auto_bounds_end_below_the_lowest_stable_edge_of_the_cohort(cohort_root):
    cfg = validate(config(cohort_root), cohort_root)
    edges = []
    for sub, atlas in (("001", "EDRA"), ("002", "EDRB"), ("003", "EDRA"), ("004", "EDRB"), ("005", "EDRA")):
        sc = load_connectome(cohort_root / "data" / f"sub-{sub}/dwi/sub-{sub}_seg-{atlas}_connectome.csv").sc
        edges.append(stable_g_range("rww", normalise(sc, "spectral", 0.49))[1])
    resolved = cfg.resolved()
    assert resolved.parametrisation.bounds["G"] == pytest.approx([0.0, 0.95 * min(edges)])
    assert resolved.parametrisation.auto == () and cfg.parametrisation.auto == ("G",)
    par = resolved.build_parametrisation("sub-001")
    assert tuple(par.bounds[0]) == pytest.approx((0.0, 0.95 * min(edges)))


def test_auto_bounds_apply_to_G_only():
    data = config(Path("."))
    data["parametrisation"] = {"kind": "global", "names": ["G", "sigma"], "bounds": {"sigma": "auto"}}
    data["subjects"] = {"ids": ["hcp/101309"]}
    with pytest.raises(ConfigError, match="parametrisation.bounds.sigma: 'auto' bounds are defined for G only"):
        ExperimentConfig.model_validate(data)


def test_sc_normalisation_in_the_config():
    base = config(Path("."))
    base["subjects"] = {"ids": ["hcp/101309"]}
    base["parametrisation"] = {"kind": "global", "names": ["G"]}
    sim = base["simulation"]
    assert ExperimentConfig.model_validate(base).simulation.sc_scaling == ("spectral", 0.49)
    for extra, want in (({"sc_max": 0.2}, ("max", 0.2)), ({"sc_norm": "strength"}, ("strength", 0.36)),
                        ({"sc_norm": "spectral", "sc_scale": 1.0}, ("spectral", 1.0)),
                        ({"sc_norm": "none"}, ("none", None))):
        cfg = ExperimentConfig.model_validate({**base, "simulation": {**sim, **extra}})
        assert cfg.simulation.sc_scaling == want
        # the round trip through experiment.json keeps it
        assert ExperimentConfig.model_validate_json(cfg.model_dump_json()).simulation.sc_scaling == want
    sc = cfg.build_subject("hcp/101309").sc
    obj = ExperimentConfig.model_validate(base).build_objective("hcp/101309")
    assert statistic(obj.sc, "spectral") == pytest.approx(0.49) and obj.sc_norm == "spectral"
    np.testing.assert_allclose(obj.sc, sc * 0.49 / np.abs(np.linalg.eigvalsh(sc)).max(), rtol=1e-12)
    with pytest.raises(ConfigError, match="simulation.sc_max"):
        ExperimentConfig.model_validate({**base, "simulation": {**sim, "sc_max": 0.2, "sc_norm": "spectral"}})


SYNTH = {
    "name": "syn", "subjects": {"synthetic": []},
    "parametrisation": {"kind": "global", "names": ["G"], "bounds": {"G": [0.0, 3.0]}},
    "loss": "fc_corr",
    "simulation": {"fidelities": [{"duration": 30.0, "dt": 0.002}], "burn_in": 5.0, "window": 10},
    "optimizers": [{"name": "random", "population": 4}], "budget": {"evaluations": 4},
}


def test_a_synthetic_subject_beyond_the_stable_range_is_refused_before_it_runs():
    data = copy.deepcopy(SYNTH)
    data["subjects"]["synthetic"] = [{"name": "ok", "from_subject": "hcp/101309", "params": {"G": 1.5}},
                                     {"name": "runaway", "from_subject": "hcp/101309", "params": {"G": 2.95}}]
    cfg = ExperimentConfig.model_validate(data)
    problems = cfg.check_subjects()
    assert [n for n, _ in problems] == ["runaway"] and "stable" in problems[0][1]


def test_a_synthetic_subject_from_a_connectome_file(tmp_path):
    conn = edr_connectome(10, seed=4)
    f = tmp_path / "sc.csv"
    np.savetxt(f, np.triu(conn.sc) + np.eye(10), delimiter=",")  # MRtrix style with self-connections
    data = copy.deepcopy(SYNTH)
    data["subjects"]["synthetic"] = [{"name": "s", "from_file": "sc.csv", "tr": 1.0, "params": {"G": 1.0}}]
    cfg = ExperimentConfig.model_validate(data, context={"base_dir": str(tmp_path)})
    s = cfg.build_subject("s")
    np.testing.assert_allclose(s.sc, conn.sc, rtol=1e-12, atol=0)
    assert s.tr == 1.0 and s.bold.shape == (30, 10) and np.isfinite(s.bold).all()
    with pytest.raises(ConfigError, match="exactly one of from_subject"):
        bad = copy.deepcopy(data)
        bad["subjects"]["synthetic"][0]["from_subject"] = "hcp/101309"
        ExperimentConfig.model_validate(bad, context={"base_dir": str(tmp_path)})


def test_maps_and_targets_from_files(tmp_path):
    conn = edr_connectome(8, seed=5)
    labels = list(conn.labels)
    np.savetxt(tmp_path / "sc.csv", conn.sc, delimiter=",")
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=8), rng.normal(size=8)
    order = np.arange(8)[::-1]  # the map files list the regions in another order, by label
    pd.DataFrame({"region": [labels[i] for i in order], "myelin": m1[order]}).to_csv(tmp_path / "m1.csv", index=False)
    pd.DataFrame({"region": [labels[i] for i in order], "gradient": m2[order]}).to_csv(tmp_path / "m2.csv",
                                                                                     index=False)
    (tmp_path / "atlas.tsv").write_text("name\tx\ty\tz\n" + "".join(
        f"{lab}\t{x}\t{y}\t{z}\n" for lab, (x, y, z) in zip(labels, conn.centres)))
    x = rng.normal(size=(200, 8))
    fc = np.corrcoef(x.T)
    np.savetxt(tmp_path / "fc.csv", fc, delimiter=",")
    fcd = np.sort(rng.uniform(-0.5, 1.0, size=500))
    np.savetxt(tmp_path / "fcd.txt", fcd)
    data = copy.deepcopy(SYNTH)
    data["subjects"] = {"paths": [{"name": "t", "sc": "sc.csv", "atlas": "atlas.tsv", "fc": "fc.csv",
                                   "fcd": "fcd.txt", "tr": 0.72}]}
    data["parametrisation"] = {"kind": "maps", "maps": ["m1.csv", "m2.csv"]}
    data["loss"] = "pfic"
    cfg = ExperimentConfig.model_validate(data, context={"base_dir": str(tmp_path)})
    par = cfg.build_parametrisation("t")
    np.testing.assert_allclose(par.maps, np.stack([standardise_map(m1), standardise_map(m2)]))
    obj = cfg.build_objective("t")
    np.testing.assert_allclose(obj.subject.fc(), fc, atol=1e-12)
    np.testing.assert_allclose(obj.subject.fcd_distribution(10, 1), fcd)
    assert cfg.check_subjects() == []


def test_landscape_of_an_experiment_lists_every_subjects_stable_range(cohort_root, tmp_path, capsys):
    import json

    import yaml

    from raybrain.cli import main

    data = config(cohort_root)
    data["subjects"]["cohort"]["participants"] = str(cohort_root / "data" / "participants.tsv")
    f = tmp_path / "exp.yaml"
    f.write_text(yaml.safe_dump(data))
    assert main(["landscape", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = validate(config(cohort_root), cohort_root)
    edges = cfg.stable_g_ranges()
    assert [r["subject"] for r in out["subjects"]] == list(edges["subject"])
    assert [r["G_high"] for r in out["subjects"]] == pytest.approx(list(edges["G_high"]))
    assert out["auto_bounds"]["G"] == pytest.approx([0.0, 0.95 * edges["G_high"].min()])
    assert out["norm"] == "spectral" and out["value"] == 0.49


def test_shards_of_a_cohort_cover_every_subject_once(cohort_root):
    from raybrain.execution import Selection

    cfg = validate(config(cohort_root), cohort_root)
    parts = [[s.subject for s in Selection.parse(f"{i}/3").apply(cfg.runs())] for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == cfg.subjects.names() and all(parts)


def test_a_spectral_fit_of_a_cohort_is_refused(cohort_root):
    data = config(cohort_root)
    data.update(model={"name": "lanmm", "options": {"output": "eeg"}}, loss="spectral",
                parametrisation={"kind": "global", "names": ["G"], "bounds": {"G": [0.0, 20.0]}})
    data["simulation"] = {"fidelities": [{"duration": 2.0, "dt": 0.0005}], "burn_in": 0.5, "sc_max": 1.0,
                          "meeg": {"fs": 250, "segment": 0.5}}
    with pytest.raises(ConfigError, match="subjects.cohort: loss 'spectral' needs an M/EEG spectrum"):
        validate(data, cohort_root)
