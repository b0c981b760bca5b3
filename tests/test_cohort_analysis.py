"""raybrain.report.cohort: per-subject fits to group effects (no Ray, no simulation).

Every number is checked against an independent computation: OLS slope, SE and CI against
scipy.stats.linregress and numpy lstsq; the permutation p of a strong effect is its floor
1/(n_perm + 1) and, over null datasets, rejects at about the nominal rate; Holm and
Benjamini–Hochberg against hand computations; Freedman–Lane with a correlated confound against
the multiple-regression coefficient; a binary covariate's slope against the difference of group
means; fits_table on hand-built results picks the lowest validated loss per subject and joins the
covariates file; the figures carry the expected artists.
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raybrain import results as R
from raybrain.report import cohort as C
from raybrain.report.stats import NothingToShow


# --------------------------------------------------------------------------------- statistics
def test_ols_slope_se_ci_match_linregress_and_lstsq():
    rng = np.random.default_rng(1)
    x = rng.normal(40, 12, 37)
    y = 0.03 * x + rng.normal(0, 0.5, 37)
    r = C.ols_test(y, x, n_perm=0)
    lr = stats.linregress(x, y)
    assert r["slope"] == pytest.approx(lr.slope, rel=1e-10)
    assert r["se"] == pytest.approx(lr.stderr, rel=1e-10)
    assert r["r"] == pytest.approx(lr.rvalue, rel=1e-10)
    assert r["p_value"] == pytest.approx(lr.pvalue, rel=1e-8)
    q = stats.t.ppf(0.975, len(x) - 2)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lr.slope - q * lr.stderr, lr.slope + q * lr.stderr))
    # independently: lstsq and the textbook (XᵀX)⁻¹ variance
    X = np.column_stack([np.ones_like(x), x])
    beta, rss, *_ = np.linalg.lstsq(X, y, rcond=None)
    se = math.sqrt(rss[0] / (len(x) - 2) * np.linalg.inv(X.T @ X)[1, 1])
    assert (r["slope"], r["se"]) == pytest.approx((beta[1], se), rel=1e-10)
    assert r["df"] == len(x) - 2 and math.isnan(r["p_perm"])


def test_permutation_p_strong_effect_is_the_floor():
    rng = np.random.default_rng(2)
    x = rng.normal(size=30)
    y = 3 * x + rng.normal(0, 0.3, 30)
    r = C.ols_test(y, x, n_perm=999, seed=4)
    assert r["p_perm"] == pytest.approx(1 / 1000)


def test_permutation_p_is_uniform_under_the_null():
    # 40 null data sets at n_perm 199: P(p_perm <= 0.05) = 10/200 exactly, so the number below
    # 0.05 is Binomial(40, 0.05); 0..7 covers 99.7 % of it. Also the mean p is ~0.5.
    rng = np.random.default_rng(3)
    ps = np.array([C.ols_test(rng.normal(size=25), rng.normal(size=25), n_perm=199, seed=k)["p_perm"]
                   for k in range(40)])
    assert ps.min() >= 1 / 200 and ps.max() <= 1
    assert int(np.sum(ps <= 0.05)) <= stats.binom.ppf(0.997, 40, 0.05)
    assert 0.35 < ps.mean() < 0.65
    # and the permutation p agrees with the parametric one on normal data (within Monte Carlo error)
    y, x = rng.normal(size=40), rng.normal(size=40)
    y = y + 0.35 * x
    r = C.ols_test(y, x, n_perm=4000, seed=0)
    assert abs(r["p_perm"] - r["p_value"]) < 4 * math.sqrt(r["p_value"] * (1 - r["p_value"]) / 4000) + 0.005


def test_holm_and_bh_match_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.2])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04, 0.2 (m = 5) -> 5*.005, 4*.01, 3*.03, 2*.04, 1*.2 then running max
    holm = np.array([0.04, 0.09, 0.09, 0.025, np.nan, 0.2])
    np.testing.assert_allclose(C.adjust_p(p, "holm"), holm, equal_nan=True)
    # BH: p*m/rank = .025, .025, .05, .05, .2 then running min from the top
    bh = np.array([0.025, 0.05, 0.05, 0.025, np.nan, 0.2])
    np.testing.assert_allclose(C.adjust_p(p, "fdr_bh"), bh, equal_nan=True)
    np.testing.assert_allclose(C.fdr_bh([0.9, 0.8]), [0.9, 0.9])
    with pytest.raises(ValueError, match="correction"):
        C.adjust_p(p, "bonferroni")


def test_freedman_lane_with_a_confound_matches_multiple_regression():
    rng = np.random.default_rng(5)
    n = 60
    z = rng.normal(size=n)
    x = 0.8 * z + 0.6 * rng.normal(size=n)          # covariate correlated with the nuisance
    y = 1.0 + 0.0 * x + 2.0 * z + rng.normal(0, 0.5, n)  # y depends on the nuisance only
    table = pd.DataFrame({"subject": [f"s{i}" for i in range(n)], "G": y, "age": x, "motion": z})
    table.attrs.update(quantities=["G"], covariates=["age", "motion"])
    adj = C.associate(table, ["G"], ["age"], adjust=["motion"], n_perm=999, seed=1)
    raw = C.associate(table, ["G"], ["age"], n_perm=999, seed=1)
    X = np.column_stack([np.ones(n), z, x])
    beta, rss, *_ = np.linalg.lstsq(X, y, rcond=None)
    se = math.sqrt(rss[0] / (n - 3) * np.linalg.inv(X.T @ X)[2, 2])
    a = adj.iloc[0]
    assert a["slope"] == pytest.approx(beta[2], rel=1e-9) and a["se"] == pytest.approx(se, rel=1e-9)
    assert a["df"] == n - 3 and a["adjusted_for"] == "motion"
    # partial correlation = correlation of the residuals on the nuisance
    Z = np.column_stack([np.ones(n), z])
    ry = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    rx = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    assert a["r"] == pytest.approx(np.corrcoef(ry, rx)[0, 1], rel=1e-9)
    # the confound makes the raw association strong; the adjusted permutation p agrees with the
    # parametric one of the multiple regression (normal errors), within Monte Carlo error
    assert raw.iloc[0]["p_perm"] == pytest.approx(1 / 1000)
    assert abs(a["p_perm"] - a["p_value"]) < 4 * math.sqrt(a["p_value"] * (1 - a["p_value"]) / 999) + 0.005
    # and it is calibrated: 40 null data sets with the confound reject at about the nominal rate
    # (Binomial(40, 0.05): 0..7 covers 99.7 %), where the unadjusted test would reject nearly always
    ps = []
    for k in range(40):
        z = rng.normal(size=n)
        x = 0.8 * z + 0.6 * rng.normal(size=n)
        y = 2.0 * z + rng.normal(0, 0.5, n)
        ps.append(C.ols_test(y, x, z[:, None], n_perm=199, seed=k)["p_perm"])
    assert int(np.sum(np.array(ps) <= 0.05)) <= stats.binom.ppf(0.997, 40, 0.05)


def test_binary_covariate_slope_is_difference_of_means():
    rng = np.random.default_rng(6)
    sex = np.array(["M", "F"] * 15)
    y = np.where(sex == "M", 1.5, 1.0) + rng.normal(0, 0.2, 30)
    table = pd.DataFrame({"subject": [f"s{i}" for i in range(30)], "G": y, "sex": sex})
    table.loc[3, "G"] = np.nan  # dropped for this pair
    table.attrs.update(quantities=["G"], covariates=["sex"])
    r = C.associate(table, n_perm=199).iloc[0]
    d = table.dropna()
    diff = d.loc[d["sex"] == "M", "G"].mean() - d.loc[d["sex"] == "F", "G"].mean()
    assert r["kind"] == "binary" and r["contrast"] == "M − F" and r["n"] == 29
    assert r["slope"] == pytest.approx(diff, rel=1e-10)
    t = stats.ttest_ind(d.loc[d["sex"] == "M", "G"], d.loc[d["sex"] == "F", "G"])  # pooled-variance t
    assert r["statistic"] == pytest.approx(t.statistic, rel=1e-9)
    assert r["p_value"] == pytest.approx(t.pvalue, rel=1e-7)


def test_many_level_covariate_f_test_matches_anova_and_is_skipped_by_default():
    rng = np.random.default_rng(7)
    site = np.array(["a", "b", "c"] * 10)
    y = np.where(site == "c", 1.0, 0.0) + rng.normal(0, 0.5, 30)
    table = pd.DataFrame({"subject": [f"s{i}" for i in range(30)], "G": y, "site": site, "age": rng.normal(size=30)})
    table.attrs.update(quantities=["G"], covariates=["site", "age"])
    default = C.associate(table, n_perm=0)
    assert list(default["covariate"]) == ["age"]
    r = C.associate(table, ["G"], ["site"], n_perm=199).iloc[0]
    f = stats.f_oneway(*[y[site == s] for s in "abc"])
    assert r["test"] == "F" and r["statistic"] == pytest.approx(f.statistic, rel=1e-9)
    assert r["p_value"] == pytest.approx(f.pvalue, rel=1e-7) and math.isnan(r["slope"])


def test_associate_adjusts_over_every_pair_and_says_so():
    rng = np.random.default_rng(8)
    n = 40
    age = rng.normal(50, 10, n)
    table = pd.DataFrame({"subject": [f"s{i}" for i in range(n)], "G": 0.05 * age + rng.normal(0, 0.2, n),
                          "sigma": rng.normal(size=n), "ei_ratio": rng.normal(size=n), "age": age,
                          "iq": rng.normal(100, 15, n), "status[sigma]": ["unidentified"] * 30 + ["identified"] * 10})
    table.loc[0, "iq"] = np.nan
    table.attrs.update(quantities=["G", "sigma", "ei_ratio"], covariates=["age", "iq"])
    out = C.associate(table, n_perm=299, correction="fdr_bh")
    assert len(out) == 6 and set(out["correction"]) == {"fdr_bh"}
    np.testing.assert_allclose(out["p_adj"], C.fdr_bh(out["p_perm"]))
    assert list(out.loc[out["covariate"] == "iq", "n"]) == [n - 1] * 3
    assert out.set_index(["quantity", "covariate"]).loc[("G", "age"), "significant"]
    assert out.loc[out["quantity"] == "sigma", "unidentified"].all()
    assert not out.loc[out["quantity"] != "sigma", "unidentified"].any()
    assert "6 quantity × covariate tests" in out.attrs["sentence"] and "Benjamini–Hochberg" in out.attrs["sentence"]
    with pytest.raises(ValueError, match="no column 'weight'"):
        C.associate(table, ["G"], ["weight"])


# -------------------------------------------------------------------------------- fits table
PARAMS = ("G", "sigma")


def _rows(run, subject, opt, seed, losses, params, phase="train", source=None, rates=None):
    rows = []
    for k, (loss, p) in enumerate(zip(losses, params)):
        rows.append({"experiment": "coh", "run_id": run, "mode": "fit", "phase": phase, "subject": subject,
                     "optimizer": opt, "seed": seed, "eval_index": k, "generation": k, "fidelity": 0 if phase ==
                     "train" else -1, "duration": 60.0, "dt": 0.01, "G": p[0], "sigma": p[1], "loss": loss,
                     "valid": True, "diverged": False, "plausible": True,
                     "rate_mean": (rates[k] if rates else 3.0), "ei_ratio": 1.0 + p[0], "wall_s": 1.0,
                     "compile_s": 0.0, "cum_sims": k + 1, "cum_wall_s": float(k + 1), "node": "n", "time": None,
                     "loss_se": 0.01 if phase != "train" else None,
                     "source_eval": (source[k] if source else None)})
    return rows


def synthetic_results():
    """Two subjects × two optimizers: sub-01's lowest *training* loss is run a, but its lowest
    *validated* loss is run b (its winner eval 1, not its best eval 0); sub-02 has no validation."""
    rows = []
    # sub-01, run a (cmaes): best training 0.10, validated 0.50
    rows += _rows("a", "sub-01", "cmaes", 0, [0.10, 0.30], [(0.5, 0.01), (0.6, 0.02)])
    rows += _rows("a", "sub-01", "cmaes", 0, [0.50], [(0.5, 0.01)], phase="validation", source=[0], rates=[2.0])
    # sub-01, run b (random): best training 0.20 (eval 0), validated winner eval 1 at 0.30
    rows += _rows("b", "sub-01", "random", 0, [0.20, 0.25], [(0.7, 0.03), (0.8, 0.04)])
    rows += _rows("b", "sub-01", "random", 0, [0.40, 0.30], [(0.7, 0.03), (0.8, 0.04)], phase="validation",
                  source=[0, 1], rates=[2.5, 3.3])
    # sub-02: no validation; run d has the lower best training loss
    rows += _rows("c", "sub-02", "cmaes", 0, [0.40], [(0.2, 0.05)])
    rows += _rows("d", "sub-02", "random", 0, [0.35, 0.9], [(0.3, 0.06), (0.9, 0.09)])
    df = pd.DataFrame(rows)
    for c in ("generation", "eval_index"):
        df[c] = df[c].astype("int64")
    df["source_eval"] = df["source_eval"].astype("Int64")
    return R.Results(df, R.summary(df), None)


def test_fits_table_picks_validated_winner_and_joins_covariates(tmp_path):
    (tmp_path / "covariates.tsv").write_text("subject\tage\tsex\tsite\nsub-01\t31.5\tF\tx\nsub-02\tn/a\tM\tx\n"
                                             "sub-99\t50\tM\ty\n")
    res = synthetic_results()
    t = C.fits_table(res, covariates=tmp_path)
    assert list(t["subject"]) == ["sub-01", "sub-02"]
    s1, s2 = t.iloc[0], t.iloc[1]
    assert (s1["run_id"], s1["selected_by"], s1["n_runs"], s1["fit_eval"]) == ("b", "val_loss", 2, 1)
    assert (s1["G"], s1["sigma"]) == (0.8, 0.04)        # the validated winner's, not run b's best (0.7)
    assert s1["val_loss"] == pytest.approx(0.30) and s1["best_loss"] == pytest.approx(0.20)
    assert s1["rate_mean"] == pytest.approx(3.3)         # the winner's validation record
    assert s1["ei_ratio"] == pytest.approx(1.8)
    assert (s2["run_id"], s2["selected_by"], s2["G"]) == ("d", "best_loss", 0.3)
    assert math.isnan(s2["val_loss"])
    assert s1["age"] == 31.5 and math.isnan(s2["age"]) and list(t["sex"]) == ["F", "M"]
    assert t["age"].dtype == float and t.attrs["covariates"] == ["age", "sex", "site"]
    assert t.attrs["quantities"] == ["G", "sigma", "rate_mean", "ei_ratio"]
    per_opt = C.fits_table(res, by_optimizer=True)
    assert list(zip(per_opt["subject"], per_opt["optimizer"], per_opt["run_id"])) == [
        ("sub-01", "cmaes", "a"), ("sub-01", "random", "b"), ("sub-02", "cmaes", "c"), ("sub-02", "random", "d")]
    # default quantities and covariates: site is constant among the fitted subjects -> noted, not tested
    a = C.associate(t, n_perm=0)
    assert set(a["covariate"]) == {"age", "sex", "site"}
    assert (a.loc[a["covariate"] == "site", "note"].str.contains("one value")).all()
    # from the results folder: root/covariates.tsv is read by default
    assert C.read_covariates(tmp_path)["subject"].tolist() == ["sub-01", "sub-02", "sub-99"]
    assert C.read_covariates(tmp_path / "nothing") is None


def test_fits_table_from_runs_only_and_resimulate_needs_a_path():
    res = synthetic_results()
    bare = R.Results(res.evaluations.iloc[:0], res.runs, None)  # only the run summaries
    t = C.fits_table(bare, covariates=pd.DataFrame({"subject": ["sub-01"], "age": [20.0]}))
    assert list(t["run_id"]) == ["b", "d"] and (t.iloc[0]["G"], t.iloc[1]["G"]) == (0.7, 0.3)  # best eval's
    assert t.iloc[0]["age"] == 20.0 and "1 of 2 fitted subjects have no row" in t.attrs["notes"][0]
    with pytest.raises(ValueError, match="regional=True needs resimulate=True"):
        C.fits_table(res, regional=True)
    with pytest.raises(ValueError, match="needs the results folder"):
        C.fits_table(res, resimulate=True)


@pytest.mark.parametrize("text, match", [
    ("name\tage\nsub-01\t3\n", "first column must be 'subject'"),
    ("subject\tage\nsub-01\t3\nsub-01\t4\n", "'sub-01' appears more than once"),
    ("subject\tage\n", "no subject rows"),
])
def test_read_covariates_bad_files_name_the_file(tmp_path, text, match):
    f = tmp_path / "covariates.tsv"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        C.read_covariates(tmp_path)
    assert str(e.value).startswith(str(f))


def test_read_covariates_types_and_participant_id(tmp_path):
    (tmp_path / "covariates.tsv").write_text("participant_id\tage\tgroup\tcode\nsub-001\t 20 \tctl\t001\n"
                                             "sub-002\tn/a\tn/a\t002\nsub-003\t\tpat\tn/a\n")
    c = C.read_covariates(tmp_path)
    assert list(c.columns) == ["subject", "age", "group", "code"]
    assert c["age"].tolist()[0] == 20.0 and c["age"].isna().sum() == 2
    assert c["group"].tolist()[0] == "ctl" and pd.isna(c["group"].iloc[1])
    assert c["code"].dtype == float and c["subject"].tolist()[0] == "sub-001"


# ---------------------------------------------------------------------------------- figures
def _cohort(n=24, seed=9):
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 70, n)
    t = pd.DataFrame({"subject": [f"s{i}" for i in range(n)], "G": 0.2 + 0.01 * age + rng.normal(0, 0.05, n),
                      "sigma": rng.normal(size=n), "age": age, "sex": np.array(["F", "M"])[np.arange(n) % 2]})
    t.attrs.update(quantities=["G", "sigma"], covariates=["age", "sex"])
    return t


def test_plot_association_has_points_line_band_and_says_the_slope():
    from matplotlib.figure import Figure

    t = _cohort()
    row = C.associate(t, ["G"], ["age"], n_perm=199).iloc[0]
    fig = C.plot_association(t, "G", "age", row, truth=(0.2, 0.01))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    pts = [c for c in ax.collections if c.get_gid() == "points"]
    assert len(pts) == 1 and len(pts[0].get_offsets()) == len(t)
    ols = [line for line in ax.lines if line.get_gid() == "ols"][0]
    xs, ys = ols.get_data()
    lr = stats.linregress(t["age"], t["G"])
    np.testing.assert_allclose(ys, lr.intercept + lr.slope * xs)
    assert any(c.get_gid() == "band" for c in ax.collections)
    assert any(line.get_gid() == "truth" for line in ax.lines)
    assert f"{row['slope']:.3g}" in ax.get_title() and "permutation p" in ax.get_title()
    assert ax.get_legend() is not None and ax.get_xlabel() == "age"
    fig.canvas.draw()
    # binary covariate: points at 0/1 (jittered) and a line through the group means
    fig = C.plot_association(t, "G", "sex", n_perm=99)
    ax = fig.axes[0]
    xs, ys = [line for line in ax.lines if line.get_gid() == "ols"][0].get_data()
    means = t.groupby("sex")["G"].mean()
    assert ys[0] == pytest.approx(means["F"]) and ys[-1] == pytest.approx(means["M"])


def test_plot_distributions_one_panel_per_quantity_split_by_group():
    from matplotlib.figure import Figure

    t = _cohort()
    fig = C.plot_distributions(t, ["G", "sigma"], by="sex")
    assert isinstance(fig, Figure)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 2 and [a.get_ylabel() for a in axes] == ["G", "sigma"]
    n_points = sum(len(c.get_offsets()) for c in axes[0].collections if c.get_gid() == "points")
    assert n_points == len(t)
    assert len(fig.legends) == 1 and [x.get_text() for x in fig.legends[0].get_texts()] == ["sex = F", "sex = M"]
    with pytest.raises(NothingToShow):
        C.plot_distributions(t, ["nothing"])


def test_glass_brain_errors_without_centres_or_nilearn():
    with pytest.raises(NothingToShow, match="centres"):
        C.plot_glass_brain([1.0, 2.0], None)
    with pytest.raises(ValueError, match="2 values for 3 region centres"):
        C.plot_glass_brain([1.0, 2.0], np.zeros((3, 3)))
    try:
        import nilearn  # noqa: F401
    except ImportError:
        with pytest.raises(NothingToShow, match="nilearn"):
            C.plot_glass_brain([1.0, 2.0, 3.0], np.zeros((3, 3)))


def test_glass_brain_with_nilearn():
    pytest.importorskip("nilearn")
    from matplotlib.figure import Figure

    centres = np.array([[-40.0, -20, 50], [40, -20, 50], [0, 40, 10]])
    fig = C.plot_glass_brain([0.5, 1.0, 1.5], centres, title="E/I")
    assert isinstance(fig, Figure) and len(fig.axes) >= 3


# ------------------------------------------------------------------------------------- report
def cohort_results(n=14, seed=11):
    """``n`` subjects, one validated run each; G rises with age (0.01 per year), sigma does not."""
    rng = np.random.default_rng(seed)
    age = np.linspace(20, 75, n)
    rows = []
    for i in range(n):
        g = 0.1 + 0.01 * age[i] + rng.normal(0, 0.03)
        sig = rng.uniform(0.01, 0.1)
        rows += _rows(f"r{i}", f"sub-{i:02d}", "cmaes", 0, [0.3, 0.2], [(g + 0.2, sig), (g, sig)])
        rows += _rows(f"r{i}", f"sub-{i:02d}", "cmaes", 0, [0.25], [(g, sig)], phase="validation", source=[1])
    df = pd.DataFrame(rows)
    for c in ("generation", "eval_index"):
        df[c] = df[c].astype("int64")
    df["source_eval"] = df["source_eval"].astype("Int64")
    cov = pd.DataFrame({"subject": [f"sub-{i:02d}" for i in range(n)], "age": age,
                        "sex": np.array(["F", "M"])[np.arange(n) % 2]})
    return R.Results(df, R.summary(df), None), cov


def test_cohort_section_in_the_report(tmp_path):
    from raybrain.report import html as H

    res, cov = cohort_results()
    sec = H.Section("cohort", "Cohort")
    cov.to_csv(tmp_path / "covariates.tsv", sep="\t", index=False)
    C.section(res, sec, tmp_path, n_perm=199)
    kinds = {b.name: b for b in sec.blocks if b.kind in ("table", "figure")}
    assoc = kinds["cohort-associations"].content
    assert set(assoc["covariate"]) == {"age", "sex"} and len(assoc) == 8  # G, sigma, rate_mean, ei_ratio
    g_age = assoc.set_index(["quantity", "covariate"]).loc[("G", "age")]
    assert g_age["significant"] and abs(g_age["slope"] - 0.01) < 4 * g_age["se"]
    assert "cohort-distributions" in kinds
    scat = [n for n in kinds if n.startswith("cohort-assoc-")]
    assert scat and all(assoc.set_index(["quantity", "covariate"]).loc[(kinds[n].content.axes[0].get_ylabel(),
                                                                           kinds[n].content.axes[0].get_xlabel()),
                                                                          "significant"] for n in scat)
    said = " ".join(b.content for b in sec.blocks if b.kind == "text")
    assert "Holm–Bonferroni" in said and "n = 14 subjects" in said and "199 permutations" in said
    # the report has the section when covariates.tsv exists (without it: tests/test_report.py's
    # section lists, which have no "cohort")
    secs = H.sections(tmp_path, res, simulate=False)[0]
    assert [s.id for s in secs][-1] == "cohort"
    assert [b.name for b in secs[-1].blocks if b.kind == "table"] == ["cohort-fits", "cohort-associations"]


def test_fits_table_regional_resimulates_each_winner(monkeypatch, tmp_path):
    """The re-simulation (brains.resimulate, faked here: simulating is tested in test_report) is
    given exactly each subject's fitted evaluation, and its per-region E/I becomes ei[<label>]."""
    import sys

    from raybrain.report.stats import fitted_parameters

    BR = sys.modules["raybrain.report.brains"]  # (raybrain.report.brains is the figure function)

    asked = []

    def fake(path, res, *, subjects=None, max_subjects=8, cfg=None, **kw):
        fits = fitted_parameters(res)
        asked.append(fits)
        out = []
        for _, r in fits.iterrows():
            labels = ("L_a", "R_a") if r["subject"] == "sub-01" else None
            out.append(BR.Brain(subject=r["subject"], optimizer=r["optimizer"], run_id=r["run_id"],
                                params={"G": r["G"]}, fitted_loss=r["loss"], loss=10 * r["G"], duration=1.0, seed=0,
                                fc_emp=np.eye(2), fc_sim=np.eye(2), labels=labels, ei=np.array([r["G"], 2 * r["G"]]),
                                regional={"w_EE": np.array([1.0, 1.5])}))
        return out

    monkeypatch.setattr(BR, "resimulate", fake)
    t = C.fits_table(synthetic_results(), path=tmp_path, resimulate=True, regional=True)
    chosen = asked[0].set_index("subject")
    assert (chosen.loc["sub-01", "run_id"], chosen.loc["sub-01", "eval_index"]) == ("b", 1)  # validated winner
    assert (chosen.loc["sub-02", "run_id"], chosen.loc["sub-02", "eval_index"]) == ("d", 0)
    assert list(t["resim_loss"]) == pytest.approx([8.0, 3.0])
    assert t.loc[0, "ei[L_a]"] == 0.8 and t.loc[0, "ei[R_a]"] == 1.6 and t.loc[0, "w_EE[R_a]"] == 1.5
    assert t.loc[1, "ei[0]"] == 0.3 and t.loc[1, "ei[1]"] == 0.6 and math.isnan(t.loc[1, "ei[L_a]"])
    assert "ei[L_a]" in t.attrs["regional"]
    a = C.associate(t, ["ei[0]"], ["G"], n_perm=0)  # regional columns are quantities like any other
    assert a.iloc[0]["n"] == 1 and "one value" in a.iloc[0]["note"]


def test_regional_maps_average_the_largest_parcellation_with_centres():
    from types import SimpleNamespace

    from raybrain.report.cohort import regional_maps

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 3))
    subjects = {f"s{i}": SimpleNamespace(n_regions=5, labels=tuple("abcde"), centres=centres) for i in range(3)}
    subjects["other"] = SimpleNamespace(n_regions=4, labels=tuple("wxyz"), centres=rng.normal(size=(4, 3)))
    subjects["nocoords"] = SimpleNamespace(n_regions=5, labels=tuple("abcde"), centres=None)
    cfg = SimpleNamespace(build_subject=lambda name: subjects[name])
    w = {n: rng.uniform(1, 2, size=5) for n in subjects}
    brains = [SimpleNamespace(subject=n, regional={"w_EE": w[n], "G": np.full(5, 1.5)}, ei=np.full(5, 0.4))
              for n in subjects]
    maps = regional_maps(brains, cfg)
    # w_EE varies over regions: its mean over the three 5-region subjects with centres; G and the
    # (FIC-constant) E/I do not vary, so they get no map
    assert [m[0] for m in maps] == ["w_EE"]
    name, values, where, n = maps[0]
    np.testing.assert_allclose(values, np.mean([w["s0"], w["s1"], w["s2"]], axis=0))
    assert n == 3 and where is centres
