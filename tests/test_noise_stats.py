"""Noise-aware comparison (raybrain.report.noise, raybrain.results.holdout/summary/analyze): validated
ranking with ties, the training/validation disagreement, the critical difference, boundary flags
and identifiability profiles, on synthetic results written with ResultsWriter (no Ray)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raybrain import results as R
from raybrain.report import noise as NZ

BOUNDS = {"G": [0.0, 2.5], "sigma": [0.0005, 0.01]}
SUBJECTS = ("s1", "s2")
SEEDS = (0, 1, 2)
# validated losses of each family's winner, one per block (s1/0, s1/1, s1/2, s2/0, s2/1, s2/2):
# A and B within noise of each other (differences of both signs), C worse by ~0.1 in every block
VAL = {"A": [0.601, 0.595, 0.607, 0.598, 0.603, 0.600],
       "B": [0.597, 0.602, 0.596, 0.604, 0.595, 0.599],
       "C": [0.702, 0.699, 0.705, 0.697, 0.701, 0.704]}
TRAIN = {"A": 0.50, "B": 0.51, "C": 0.52}  # training order A < B < C: it disagrees with validation (B < A)
SE = 0.004  # each validation record's noise standard error


def rec(G, sigma, loss, **kw):
    return {"G": G, "sigma": sigma, "loss": loss, "valid": True, "diverged": False, "repeats": 3,
            "sim_seconds": 100.0, "wall_s": 0.1, **kw}


def meta(subject, opt, seed, phase="train", target=None):
    return dict(mode="population", subject=target or subject, optimizer=opt, seed=seed,
                fidelity=0 if phase == "train" else -1, duration=100.0, dt=1e-3, phase=phase,
                params=["G", "sigma"])


def write_study(root, profile=True):
    """Runs of families A, B, C on two subjects × three seeds, each with two validated candidates."""
    w = R.ResultsWriter(root, "noise")
    (root / "truth.json").write_text(json.dumps({"params": {}, "bounds": BOUNDS}))
    for i, (s, seed) in enumerate((s, seed) for s in SUBJECTS for seed in SEEDS):
        for opt in VAL:
            run = f"{s}-{opt}-{seed}"
            G_best = 2.49 if (s, opt, seed) == ("s2", "B", 0) else 1.5
            G_win = 2.46 if (s, opt, seed) == ("s1", "A", 0) else 1.2
            # training: eval 0 the best training fit, eval 1 the runner-up, eval 2 a poor one
            w.write_generation(run, 0, [rec(G_best, 0.005, TRAIN[opt]), rec(G_win, 0.005, TRAIN[opt] + 0.01),
                                        rec(0.3, 0.002, 2.0)], meta(s, opt, seed))
            # validation: the runner-up (eval 1) wins on fresh noise
            w.write_generation(run, 0, [rec(G_best, 0.005, VAL[opt][i] + 0.05, loss_se=SE, source_eval=0),
                                        rec(G_win, 0.005, VAL[opt][i], loss_se=SE, source_eval=1)],
                               meta(s, opt, seed, "validation", s))
    if profile:  # the s1-A-0 winner (G = 2.46): G rises on the lower side only (upper clipped), sigma flat
        recs = [rec(2.46, 0.005, 0.60, loss_se=SE, source_eval=1, profile_step=0)]
        for name, steps in (("G", (-2, -1, 1, 2)), ("sigma", (-2, -1, 1, 2))):
            for k in steps:
                if name == "G":
                    g, sg, loss = min(2.46 + k * 0.125, 2.5), 0.005, 0.60 + (0.05 * k * k if k < 0 else 0.001)
                else:
                    g, sg, loss = 2.46, 0.005 + k * 0.000475, 0.60 + 0.002 * (-1) ** k
                recs.append(rec(g, sg, loss, loss_se=SE, source_eval=1, profile_param=name, profile_step=k))
        w.write_generation("s1-A-0", 0, recs, meta("s1", "A", 0, "profile", "s1"))
    return R.load(root)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("noise"))


def test_holdout_standard_error_over_targets(tmp_path):
    """val_se is sqrt(Σ se²) / n_targets over the validation targets; without loss_se it is NaN."""
    w = R.ResultsWriter(tmp_path, "e")
    w.write_generation("r", 0, [rec(1.0, 0.005, 0.5)], meta("s", "A", 0))
    for j, (t, loss, se) in enumerate((("t1", 0.6, 0.03), ("t2", 0.8, 0.04))):
        w.write_generation("r", j, [rec(1.0, 0.005, loss, loss_se=se, source_eval=0)],
                           meta("s", "A", 0, "validation", t))
    h = R.holdout(R.load(tmp_path).evaluations).iloc[0]
    assert h["val_loss"] == pytest.approx(0.7)
    assert h["val_se"] == pytest.approx(math.sqrt(0.03 ** 2 + 0.04 ** 2) / 2)
    w.write_generation("r", 1, [rec(1.0, 0.005, 0.8, source_eval=0)], meta("s", "A", 0, "validation", "t2"))
    assert np.isnan(R.holdout(R.load(tmp_path).evaluations)["val_se"].iloc[0])


def test_runs_flag_the_validated_winner_at_a_bound(study):
    """at_bound looks at the validated winner (not the best training fit) within 2 % of a bound."""
    runs = study.runs.set_index("run_id")
    assert runs.loc["s1-A-0", "at_bound"] == "G:upper"   # winner G = 2.46 >= 2.5 - 0.02·2.5
    assert runs.loc["s2-B-0", "at_bound"] == ""          # best training G = 2.49, but the winner is G = 1.2
    assert runs.loc["s1-A-0", "val_loss"] == pytest.approx(VAL["A"][0])
    assert runs.loc["s1-A-0", "val_se"] == pytest.approx(SE)
    assert R.at_bound({"G": 2.44, "sigma": 0.00055}, BOUNDS) == "sigma:lower"  # 2.44 < 2.45: not at G's bound
    assert R.at_bound({"G": 2.44}, None) is None
    a = R.analyze(study.evaluations, bounds=study.bounds).set_index(["subject", "optimizer"])
    assert a.loc[("s1", "A"), "at_bound"] == "G:upper 1/3" and a.loc[("s2", "C"), "at_bound"] == ""
    # val_se over seeds: sd / sqrt(3) of the three validated losses
    assert a.loc[("s1", "B"), "val_se"] == pytest.approx(np.std(VAL["B"][:3], ddof=1) / math.sqrt(3))
    assert "G is within 2% of its upper bound in 1/18" in " ".join(NZ.flag_lines(study))


def test_ranking_ties_within_noise_and_separates_beyond(study):
    """A and B differ by less than their noise: tied for rank 1; C is worse beyond noise. The
    p-values are the paired t-test's (scipy's ttest_rel), Holm-corrected over the three pairs."""
    rank = NZ.ranking(study).set_index("optimizer")
    assert list(rank.index) == ["B", "A", "C"]  # by validated mean
    assert rank.loc["A", "rank"] == rank.loc["B", "rank"] == 1 and rank.loc["C", "rank"] == 3
    assert rank.loc["A", "tied_with"] == "B" and rank.loc["C", "tied_with"] == ""
    assert rank.loc["B", "val_mean"] == pytest.approx(np.mean(VAL["B"]))
    sem = np.std(VAL["C"], ddof=1) / math.sqrt(6)
    assert rank.loc["C", "ci_high"] - rank.loc["C", "val_mean"] == pytest.approx(stats.t.ppf(0.975, 5) * sem)
    pw = NZ.pairs(study).set_index(["a", "b"])
    raw = {p: stats.ttest_rel(VAL[p[0]], VAL[p[1]]).pvalue for p in [("A", "B"), ("A", "C"), ("B", "C")]}
    order = sorted(raw, key=raw.get)
    holm = np.maximum.accumulate([min(1, (3 - i) * raw[p]) for i, p in enumerate(order)])
    for p, h in zip(order, holm):
        assert pw.loc[p, "p_holm"] == pytest.approx(h)
    assert pw.loc[("A", "B"), "tie"] and not pw.loc[("A", "C"), "tie"] and pw.loc[("A", "C"), "better"] == "A"
    ties = NZ.ranking(study).attrs["ties"]
    assert "tied for the lowest validated loss" in ties and "C is worse beyond noise than B, A." in ties, ties


def test_training_and_validation_order_disagreement_is_said(study):
    rank = NZ.ranking(study)
    assert rank.set_index("optimizer")["train_rank"].to_dict() == {"A": 1, "B": 2, "C": 3}
    assert rank.attrs["order"].startswith("Training and validation order DISAGREE")
    assert "A < B < C" in rank.attrs["order"] and "B < A < C" in rank.attrs["order"]
    assert "Every pair that swaps places (A/B) is within noise" in rank.attrs["order"]


def test_single_block_ties_by_the_noise_z_test(tmp_path):
    """One block: the difference is tested against sqrt(se_a² + se_b²) of the fresh noise."""
    w = R.ResultsWriter(tmp_path, "e")
    for opt, v in (("A", 0.60), ("B", 0.605), ("C", 0.70)):
        w.write_generation(opt, 0, [rec(1.0, 0.005, 0.5)], meta("s", opt, 0))
        w.write_generation(opt, 0, [rec(1.0, 0.005, v, loss_se=SE, source_eval=0)],
                           meta("s", opt, 0, "validation", "s"))
    res = R.load(tmp_path)
    pw = NZ.pairs(res).set_index(["a", "b"])
    z = 0.005 / math.hypot(SE, SE)
    assert pw.loc[("A", "B"), "p_value"] == pytest.approx(2 * stats.norm.sf(z)) and pw.loc[("A", "B"), "tie"]
    assert not pw.loc[("A", "C"), "tie"]
    rank = NZ.ranking(res).set_index("optimizer")
    assert rank.loc["A", "ci_high"] - rank.loc["A", "val_mean"] == pytest.approx(1.959964 * SE, rel=1e-5)
    assert NZ.critical_difference(res) is None  # one block: no CD diagram


def test_critical_difference_matches_demsar(study):
    """Nemenyi CD for k = 3, N = 6 at α = 0.05: q = 2.343 (Demšar 2006, Table 5a) · sqrt(k(k+1)/6N)."""
    c = NZ.critical_difference(study)
    assert c["cd"] == pytest.approx(2.343 * math.sqrt(3 * 4 / 36), abs=2e-3)
    ranks = pd.DataFrame(VAL).rank(axis=1).mean()
    assert c["mean_ranks"].to_dict() == pytest.approx(ranks.to_dict())
    assert c["p_value"] == pytest.approx(stats.friedmanchisquare(*VAL.values()).pvalue)
    # mean ranks B 8/6, A 10/6, C 3: A–C (4/3) is within the CD (≈ 1.353), B–C (5/3) is not
    assert NZ.cd_groups(c["mean_ranks"], c["cd"]) == [["B", "A"], ["A", "C"]]
    fig = NZ.cd_figure(study)
    assert fig.axes


def _profile(deltas, offsets, se=0.01):
    steps = [-2, -1, 0, 1, 2]
    return pd.DataFrame({"step": steps, "offset": offsets, "delta": deltas,
                         "delta_se": [se if k else 0.0 for k in steps]})


@pytest.mark.parametrize("deltas,offsets,status", [
    ([0.2, 0.05, 0, 0.04, 0.3], [-0.1, -0.05, 0, 0.05, 0.1], "identified"),
    ([0.01, -0.015, 0, 0.012, -0.005], [-0.1, -0.05, 0, 0.05, 0.1], "unidentified"),
    ([0.2, 0.05, 0, 0.0, 0.0], [-0.1, -0.05, 0, 0.0, 0.0], "at bound"),      # upper steps clipped onto the fit
    ([0.2, 0.05, 0, 0.005, 0.01], [-0.1, -0.05, 0, 0.05, 0.1], "one-sided"),
    ([0.2, 0.05, 0, -0.05, 0.01], [-0.1, -0.05, 0, 0.05, 0.1], "not a minimum"),
])
def test_classify_profile(deltas, offsets, status):
    assert NZ.classify(_profile(deltas, offsets)) == status
    assert NZ.classify(_profile(deltas, offsets, se=np.nan)) == "no noise estimate"


def test_profiles_from_records(study):
    """The written profile of s1-A-0: G rises on its explored side and sits on the upper bound;
    sigma's loss moves by ±0.002, well inside 2·sqrt(2)·0.004: unidentified."""
    p = NZ.profiles(study)
    g = p[p["param"] == "G"].set_index("step")
    assert g.loc[-1, "offset"] == pytest.approx(-0.125 / 2.5) and g.loc[2, "offset"] == pytest.approx(0.04 / 2.5)
    assert g.loc[-2, "delta"] == pytest.approx(0.2) and g.loc[-2, "delta_se"] == pytest.approx(math.sqrt(2) * SE)
    ident = NZ.identifiability(study).set_index("param")["status"].to_dict()
    assert ident == {"G": "one-sided", "sigma": "unidentified"}
    lines = " ".join(NZ.flag_lines(study))
    assert "PROFILE sigma: UNIDENTIFIED" in lines
    assert NZ.profile_figure(study).axes


def test_no_validation_says_so(tmp_path):
    w = R.ResultsWriter(tmp_path, "e")
    w.write_generation("r", 0, [rec(1.0, 0.005, 0.5)], meta("s", "A", 0))
    res = R.load(tmp_path)
    assert NZ.ranking(res).empty and NZ.profiles(res).empty
    with pytest.raises(NZ.NothingToShow):
        NZ.profile_figure(res)


def test_objective_records_the_standard_error_over_noise_repeats():
    """loss_se is sd(ddof=1)/sqrt(R) of the R repeats' losses: each repeat is simulated alone on its
    own noise stream (stream r of candidate 0 is first_stream r with one repeat) and compared."""
    from raybrain.data import list_subjects, load_subject
    from raybrain.integrate import SimulationSettings
    from raybrain.objective import Objective
    from raybrain.parametrisation import Global

    subject = load_subject(list_subjects("hcp")[0])
    obj = Objective(subject, "rww", Global("rww", names=("G",)), "fc_corr",
                    SimulationSettings(duration=36.0, burn_in=0.0, dt=1e-3, seed=5))
    three = obj.evaluate(np.array([[1.5]]), seed=5, repeats=3)[0]
    alone = [obj.evaluate(np.array([[1.5]]), seed=5, repeats=1, first_stream=r)[0]["loss"] for r in range(3)]
    assert three["loss"] == pytest.approx(np.mean(alone), abs=1e-12)
    assert three["loss_se"] == pytest.approx(np.std(alone, ddof=1) / math.sqrt(3), abs=1e-12)
    assert three["loss_se"] > 0
    assert obj.evaluate(np.array([[1.5]]), seed=5, repeats=1)[0]["loss_se"] is None


def test_validation_config_defaults_and_errors_name_the_key():
    from raybrain.experiment import ValidationConfig
    from pydantic import ValidationError

    v = ValidationConfig()
    assert (v.repeats, v.profile.points, v.profile.span, v.profile.max_params) == (3, 2, 0.1, 12)
    with pytest.raises(ValidationError, match=r"profile\.span[\s\S]*fraction of the search range"):
        ValidationConfig.model_validate({"profile": {"span": 1.5}})
    with pytest.raises(ValidationError, match=r"profile\.points[\s\S]*0 turns the profile off"):
        ValidationConfig.model_validate({"profile": {"points": -1}})


def test_profile_points_are_clipped_steps_of_the_range():
    from raybrain.experiment import ProfileConfig
    from raybrain.tuning import profile_points

    pts, which, steps = profile_points([2.46, 0.005], [(0.0, 2.5), (0.0005, 0.01)], ProfileConfig())
    assert steps == [0, -2, -1, 1, 2, -2, -1, 1, 2] and which == [None] + [0] * 4 + [1] * 4
    np.testing.assert_allclose(pts[1:5, 0], [2.46 - 0.25, 2.46 - 0.125, 2.5, 2.5])  # clipped at 2.5
    np.testing.assert_allclose(pts[5:, 1], 0.005 + np.array([-2, -1, 1, 2]) * 0.05 * 0.0095)
    assert (pts[1:5, 1] == 0.005).all() and (pts[5:, 0] == 2.46).all()
    assert profile_points([1.0, 0.005], [(0, 2.5), (0.0005, 0.01)], ProfileConfig(points=0)) is None
    assert profile_points([1.0, 0.005], [(0, 2.5), (0.0005, 0.01)], ProfileConfig(max_params=1)) is None


def test_analyze_command_prints_ranking_ties_disagreement_and_flags(tmp_path, capsys):
    from raybrain.cli import main

    write_study(tmp_path)
    assert main(["analyze", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Families by validated loss" in out
    rows = {}  # the ranking table's rows (its first block; a wide table continues below)
    for line in out.splitlines():
        if line[:2] in ("A ", "B ", "C "):
            rows.setdefault(line.split()[0], line.split())
    assert rows["B"][1] == rows["A"][1] == "1" and rows["C"][1] == "3"  # A and B tied at rank 1
    assert "order DISAGREE" in out and "tied for the lowest" in out
    assert "AT BOUND: G is within 2% of its upper bound" in out and "G:upper 1/3" in out
    assert "PROFILE sigma: UNIDENTIFIED" in out
