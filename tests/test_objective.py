"""Parametrisations and the objective: known mappings, records, and a fitted-looking point."""
import numpy as np
import pytest

from raybrain.data import list_subjects, load_subject
from raybrain.integrate import SimulationSettings
from raybrain.objective import Objective, scale_sc
from raybrain.parametrisation import Global, Maps, Regional, fc_gradient, standardise_map


@pytest.fixture(scope="module")
def subject():
    return load_subject(list_subjects("hcp")[0])


def test_global_maps_names_bounds_and_values():
    par = Global("rww", names=("G", "sigma"), bounds_override={"G": (0.0, 2.5)})
    assert par.names == ("G", "sigma")
    np.testing.assert_allclose(par.bounds, [[0.0, 2.5], [0.0005, 0.01]])
    p = par.to_model_params([[1.2, 0.004], [0.3, 0.002]])
    np.testing.assert_allclose(p["G"], [1.2, 0.3])
    np.testing.assert_allclose(p["sigma"], [0.004, 0.002])
    with pytest.raises(ValueError, match="reversed"):
        Global("rww", bounds_override={"G": (2.0, 1.0)})
    with pytest.raises(ValueError, match="did you mean 'sigma'"):
        Global("rww", names=("G", "sigmaa"))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        par.check(np.zeros((3, 3)))


def test_maps_is_c0_plus_c1_m1_plus_c2_m2():
    rng = np.random.default_rng(0)
    n = 12
    m1, m2 = rng.random(n), rng.standard_normal(n)
    par = Maps("rww", np.stack([m1, m2]))
    assert par.size == 10 and par.names[:3] == ("w_EE.c0", "w_EE.c1", "w_EE.c2") and par.names[-1] == "G"
    theta = np.array([[2.0, 0.3, -0.2, 1.5, 0.1, 0.1, 0.005, 0.001, -0.001, 1.7]])
    p = par.to_model_params(theta)
    s1, s2 = standardise_map(m1), standardise_map(m2)
    assert abs(s1.mean()) < 1e-12 and np.isclose(np.abs(s1).max(), 1.0)
    np.testing.assert_allclose(p["w_EE"][0], 2.0 + 0.3 * s1 - 0.2 * s2)
    np.testing.assert_allclose(p["w_EI"][0], 1.5 + 0.1 * s1 + 0.1 * s2)
    np.testing.assert_allclose(p["sigma"][0], np.clip(0.005 + 0.001 * s1 - 0.001 * s2, 0.0005, 0.01))
    np.testing.assert_allclose(p["G"], [1.7])


def test_fc_gradient_recovers_a_one_dimensional_gradient():
    # FC decaying with distance along a line: the principal gradient is monotone in position
    x = np.sort(np.random.default_rng(1).random(30))
    fc = np.exp(-np.abs(x[:, None] - x[None, :]) / 0.3)
    g = fc_gradient(fc)
    rho = np.corrcoef(np.argsort(np.argsort(g)), np.arange(30))[0, 1]  # Spearman
    assert abs(rho) > 0.9
    assert g[np.argmax(np.abs(g))] > 0  # orientation convention


def test_regional_places_values_per_region():
    par = Regional("rww", n_regions=4, parameter="w_EE", bounds_override={"w_EE": (1.0, 3.0)})
    assert par.names == ("w_EE[0]", "w_EE[1]", "w_EE[2]", "w_EE[3]", "G")
    np.testing.assert_allclose(par.bounds[:4], [[1.0, 3.0]] * 4)
    p = par.to_model_params([[1.1, 1.2, 1.3, 1.4, 0.5]])
    np.testing.assert_allclose(p["w_EE"], [[1.1, 1.2, 1.3, 1.4]])
    np.testing.assert_allclose(p["G"], [0.5])


def test_scale_sc():
    sc = np.array([[0.0, 4.0], [2.0, 0.0]])
    np.testing.assert_allclose(scale_sc(sc, 0.2), [[0.0, 0.2], [0.1, 0.0]])
    with pytest.raises(ValueError, match="all-zero"):
        scale_sc(np.zeros((2, 2)), 0.2)


@pytest.fixture(scope="module")
def sweep(subject):
    """G sweep with FIC on a bundled HCP subject (600 TRs at dt 1 ms: coarse but cheap)."""
    settings = SimulationSettings(duration=432.0, burn_in=20.0, dt=1e-3, seed=3)
    obj = Objective(subject, "rww", Global("rww", names=("G", "sigma")), "pfic", settings)
    theta = np.array([[0.0, 0.005], [1.0, 0.005], [2.0, 0.005]])
    return obj, obj.evaluate(theta, seed=3)


def test_g_sweep_finds_a_fitted_looking_point(sweep):
    _, recs = sweep
    r = [rec["fc_corr"] for rec in recs]
    # no coupling: simulated FC is noise (r ~ 0); near G = 2 the SC shapes FC (r ~ 0.5 on this subject)
    assert abs(r[0]) < 0.1
    assert max(r) > r[0] + 0.3
    assert recs[int(np.argmax(r))]["loss"] < recs[0]["loss"] - 0.3


def test_records_are_complete_and_consistent(sweep):
    obj, recs = sweep
    for rec in recs:
        for k in ("G", "sigma", "loss", "fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks", "valid", "diverged",
                  "rate_mean", "rate_min", "rate_max", "plausible", "ei_ratio", "wall_s", "sim_seconds"):
            assert k in rec, k
        assert rec["valid"] and not rec["diverged"]
        # the pFIC total is the sum of its components
        assert rec["loss"] == pytest.approx(rec["fc_corr_cost"] + rec["fc_mean_diff"] + rec["fcd_ks"], abs=1e-9)
        # FIC holds every region at r_E ~ 3.06 Hz while the fixed point is stable
        assert 2.7 <= rec["rate_min"] <= rec["rate_max"] <= 3.3 and rec["plausible"]
        assert rec["ei_ratio"] > 1


def test_candidate_result_does_not_depend_on_batch(subject):
    settings = SimulationSettings(duration=72.0, burn_in=0.0, dt=1e-3, seed=5)
    obj = Objective(subject, "rww", Global("rww", names=("G",)), "fc_corr", settings)
    both = obj.evaluate(np.array([[1.0], [2.0]]), seed=5, first_stream=10)
    alone = obj.evaluate(np.array([[2.0]]), seed=5, first_stream=11)
    assert both[1]["loss"] == pytest.approx(alone[0]["loss"], abs=1e-12)


def test_too_short_for_fcd_window_is_a_clear_error(subject):
    with pytest.raises(ValueError, match="window"):
        Objective(subject, "rww", Global("rww"), "pfic", SimulationSettings(duration=36.0, dt=1e-3))


def test_diverged_candidate_gets_finite_worst_loss(subject):
    settings = SimulationSettings(duration=14.4, burn_in=0.0, dt=0.04, tr=0.72, hemodynamics="none")
    obj = Objective(subject, "hopf", Global("hopf", names=("a", "G"), bounds_override={"a": (-1, 1e4)}),
                    "fc_corr", settings)
    recs = obj.evaluate(np.array([[-0.02, 0.5], [1e4, 0.5]]), seed=0)
    assert recs[0]["valid"] and not recs[0]["diverged"]
    assert recs[1]["diverged"] and not recs[1]["valid"]
    assert recs[1]["loss"] == 2.0 and np.isfinite(recs[0]["loss"])
