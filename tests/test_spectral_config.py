"""Spectral (M/EEG) fits from experiment configs: ``loss: spectral`` and composites, the
``simulation.meeg`` section, synthetic subjects carrying an M/EEG target, errors by key path, and
records with the spectral columns (known answers at the truth with the same noise)."""
import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from raybrain.experiment import ConfigError, ExperimentConfig, load_config
from raybrain.spectral import FEATURE_COLUMNS, SpectralTarget, log_psd_distance, spectral_features, welch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

# small and quick: dt 0.5 ms (a·dt ≤ 0.11 for every LaNMM synapse), 2 s of M/EEG at 250 Hz,
# 0.5 s Welch segments (2 Hz resolution)
BASE = {
    "name": "spec-test",
    "subjects": {"synthetic": [{"name": "healthy", "from_subject": "hcp/101309",
                                "params": {"G": 10.0, "C_P2_PV": 200.0}, "seed": 5}]},
    "model": {"name": "lanmm", "options": {"output": "eeg"}},
    "parametrisation": {"kind": "global", "names": ["G", "C_P2_PV"],
                        "bounds": {"G": [0.0, 20.0], "C_P2_PV": [100.0, 300.0]}},
    "loss": "spectral",
    "simulation": {"fidelities": [{"duration": 2.0, "dt": 0.0005}], "burn_in": 0.5, "noise": "common",
                   "dtype": "float64", "sc_max": 1.0, "meeg": {"fs": 250, "segment": 0.5}},
    "optimizers": [{"name": "random", "population": 4}],
    "budget": {"evaluations": 8},
    "validation": {"top": 0},
}


def _cfg(**changes):
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = d
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is _DROP:
            node.pop(keys[-1])
        else:
            node[keys[-1]] = value
    return d


_DROP = object()


def _error(d) -> tuple:
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.model_validate(d)
    return [p for p, _ in e.value.errors], str(e.value)


# ----------------------------------------------------------------------------- schema
def test_shipped_lanmm_ad_is_a_spectral_bayesopt_fit_of_two_subjects():
    cfg = load_config(EXPERIMENTS / "lanmm-ad.yaml")
    assert cfg.spectral and not cfg.fits_fc and cfg.loss == "spectral"
    assert cfg.model.options["output"] == "eeg"
    assert cfg.parametrisation.names == ["G", "C_P2_PV"]
    assert {o.name for o in cfg.optimizers} == {"bayesopt"}
    truth = cfg.truths()
    assert truth["lanmm-ad"]["C_P2_PV"] < truth["lanmm-healthy"]["C_P2_PV"]  # AD-like: reduced PV
    meeg = cfg.simulation.meeg.build()
    assert meeg.fs == 250 and meeg.nperseg == 250


def test_base_validates_and_composite_normalises_weights():
    cfg = ExperimentConfig.model_validate(_cfg())
    assert cfg.loss_weights == {"spectral": 1.0} and not cfg.needs_fcd
    cfg = ExperimentConfig.model_validate(_cfg(loss={"spectral": 1, "fc_corr": 0.5}))
    assert cfg.loss_weights == {"spectral": 1.0, "fc_corr": 0.5} and cfg.fits_fc and not cfg.needs_fcd


@pytest.mark.parametrize("changes, key, words", [
    ({"simulation__meeg": _DROP}, "simulation.meeg", "required by loss"),
    ({"loss": "fc_corr", "model__options": {"output": "rate"}}, "simulation.meeg", "spectral loss only"),
    ({"model__options": {"output": "rate"}}, "model.options.output", "M/EEG output"),
    ({"loss": {"spectrall": 1.0}}, "loss.spectrall", "did you mean 'spectral'"),
    ({"loss": {"spectral": 1.0, "fc_corr": -0.5}}, "loss.fc_corr", ">= 0"),
    ({"loss": {"spectral": 0.0}}, "loss", "at least one weight"),
    ({"loss": ["spectral"]}, "loss", "mapping of loss names"),
    ({"simulation__meeg__fs": 300}, "simulation.meeg.fs", "whole number of time steps"),
    ({"simulation__meeg__fs": 100}, "simulation.meeg.fs", "Nyquist"),
    ({"simulation__meeg__segment": 0.05}, "simulation.meeg.segment", "no frequency bin"),
    ({"simulation__meeg__segment": 4.0}, "simulation.fidelities[0].duration", "shorter than one Welch segment"),
    ({"simulation__meeg__duration": 1.0}, "simulation.meeg.duration", "composite loss only"),
    ({"simulation__meeg__band": [50, 10]}, "simulation.meeg.band", "low < high"),
    ({"simulation__meeg__fss": 250}, "simulation.meeg.fss", "did you mean 'fs'"),
    ({"subjects__ids": ["hcp/101309"]}, "subjects.ids", "only subjects.synthetic"),
    ({"optimizers": [{"name": "gradient", "population": 2}]}, "optimizers[0].name",
     "the gradient family differentiates the FC loss of BOLD simulations; it cannot fit loss 'spectral'"),
    ({"loss": {"spectral": 1.0, "fc_corr": 0.5}, "optimizers": [{"name": "random", "mode": "trial"}]},
     "optimizers[0].mode", "population mode"),
    ({"loss": {"spectral": 1.0, "fc_corr": 0.5}, "optimizers": [{"name": "random", "successive_halving": True}],
      "simulation__fidelities": [{"duration": 2.0, "dt": 0.0005}, {"duration": 3.0, "dt": 0.0005}]},
     "optimizers[0].successive_halving", "composite"),
])
def test_errors_name_the_key(changes, key, words):
    paths, text = _error(_cfg(**changes))
    assert paths[0] == key, (paths, text)
    assert words in text, text


def test_existing_fc_configs_are_unchanged():
    cfg = load_config(EXPERIMENTS / "quickstart.yaml")
    assert cfg.simulation.meeg is None and not cfg.spectral and cfg.loss_weights == {cfg.loss: 1.0}


# ----------------------------------------------------------------------------- known answers
@pytest.fixture(scope="module")
def spectral_cfg():
    return ExperimentConfig.model_validate(_cfg())


def test_synthetic_subject_carries_its_meeg_target(spectral_cfg):
    subj = spectral_cfg.build_subject("healthy")
    assert subj.bold is None and subj.meeg_fs == 250.0
    assert subj.meeg.shape == (500, 80)  # 2 s at 250 Hz, 80 regions
    assert np.all(np.isfinite(subj.meeg))


def test_truth_with_the_same_noise_gives_zero_loss_and_wrong_pv_more(spectral_cfg):
    obj = spectral_cfg.build_objective("healthy", 0)
    assert obj.target is None and obj.settings.hemodynamics == "none" and obj.settings.tr == 0.004
    theta = np.array([[10.0, 200.0], [10.0, 120.0], [0.0, 200.0]])
    # the subject was simulated with seed 5, stream 0: common noise of seed 5 is the same realisation
    recs = obj.evaluate(theta, seed=5)
    loss = [r["loss"] for r in recs]
    assert loss[0] == pytest.approx(0.0, abs=1e-12)
    assert loss[1] > 0.05 and loss[2] > 0.05, loss  # reduced PV strength, no coupling
    # columns: loss components and the simulated signal's spectral features
    for r in recs:
        assert set(FEATURE_COLUMNS) | {"psd_log_mse", "alpha_peak_diff", "gamma_peak_diff"} <= set(r)
        assert r["loss"] == pytest.approx(r["psd_log_mse"] / (1 + r["psd_log_mse"]))
    feats = spectral_features(obj.subject.meeg[None], 250.0, 125)
    for k in FEATURE_COLUMNS:
        assert recs[0][k] == pytest.approx(float(feats[k][0]), rel=1e-9)
    # the truth's spectrum, recomputed independently
    f, p = welch(np.asarray(obj.last_result.bold[1:2], dtype=float), 250.0, 125)
    d = float(log_psd_distance(p, SpectralTarget.from_signal(obj.subject.meeg, 250.0, 125).psd, f)[0])
    assert recs[1]["psd_log_mse"] == pytest.approx(d, rel=1e-9)
    # weaker PV inhibition onto P2 → less gamma power in this model (see test_lanmm)
    assert recs[1]["gamma_power"] < recs[0]["gamma_power"]
    # no coupling → less alpha power
    assert recs[2]["alpha_power"] < recs[0]["alpha_power"]


def test_composite_spectral_plus_fc():
    cfg = ExperimentConfig.model_validate(_cfg(
        loss={"spectral": 1.0, "fc_corr": 0.5},
        simulation__fidelities=[{"duration": 7.2, "dt": 0.0005}],
        simulation__meeg={"fs": 250, "segment": 0.5, "duration": 1.0}))
    subj = cfg.build_subject("healthy")
    assert subj.bold.shape == (10, 80) and subj.meeg.shape == (250, 80)
    obj = cfg.build_objective("healthy", 0)
    assert obj.composite and obj.target is not None and obj.spectral_target is not None
    recs = obj.evaluate(np.array([[10.0, 200.0], [10.0, 120.0]]), seed=5)
    assert recs[0]["loss"] == pytest.approx(0.0, abs=1e-9)
    assert recs[0]["fc_corr.fc_corr"] == pytest.approx(1.0, abs=1e-9)
    assert recs[1]["loss"] > 0.05
    for r in recs:
        np.testing.assert_allclose(r["loss"], r["spectral.total"] + 0.5 * r["fc_corr.total"], rtol=1e-12)
        assert set(FEATURE_COLUMNS) <= set(r) and "spectral.psd_log_mse" in r
    with pytest.raises(ValueError, match="bold_signal"):
        obj.score(np.array([[10.0, 200.0]]), obj.last_result.bold[:1], obj.last_result)
