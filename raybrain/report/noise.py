"""Comparisons that survive fresh noise: the validated ranking of optimizer families, its ties, the
critical-difference diagram, boundary flags and the identifiability profiles (tables and figures;
no Ray).

**Validated loss.** A run's training loss is the best of many noisy evaluations, so it is
optimistic and its order between families can be noise. The holdout stage re-simulates each
run's best candidates with ``validation.repeats`` fresh-noise repeats; a run's *validated loss*
is its winner's mean over those repeats (and validation targets), with its standard error
(:func:`raybrain.results.holdout`). Families are compared on it.

**Blocks and paired tests.** A block is one (subject, seed): the runs of every family on the
same subject with the same seed. Only complete blocks (every family has a validated loss) are
used, so that every comparison is paired. Each family's score is the mean over blocks, with a
confidence interval from Student's t over blocks (a single block: the normal interval of its
fresh-noise standard error, the only noise known then). Two families differ when the two-sided
paired t-test of their per-block differences, Holm-corrected over all pairs (Holm 1979), has
p < ``alpha``; otherwise the difference is within noise and they are **tied**. With one block the
test is a z-test of the difference against its fresh-noise standard error,
sqrt(se_a² + se_b²). The paired t-test is chosen over the Wilcoxon signed-rank test because
studies here have few blocks (an exact two-sided Wilcoxon test cannot reach p < 0.05 with fewer
than 6).

**Critical difference** (Demšar 2006, J. Mach. Learn. Res. 7:1–30): with at least
:data:`MIN_CD_BLOCKS` complete blocks and 3 families, the Friedman test over the blocks' ranks
and the Nemenyi critical difference CD = q_α · sqrt(k (k + 1) / (6 N)), q_α the studentized range
quantile over √2; families whose mean ranks differ by less than CD are joined by a bar.

**Identifiability** (profile likelihood in spirit: Raue et al. 2009, Bioinformatics 25:1923):
the holdout stage's ``profile`` phase moves each fitted parameter of the winner a few steps each
side. At each step the loss change from the fit is compared with its noise,
SE = sqrt(se_step² + se_fit²) (the two as independent; under ``simulation.noise: common`` the
profile's points share their noise streams, the errors are positively correlated and this SE
is conservative): a change above ``z``·SE is a rise. A parameter is
*identified* when the loss rises on both sides, *unidentified* when nothing rises (flat within
noise across the profile), *one-sided* when it rises on one side and stays flat on the other,
*at bound* when it rises on one side and the other lies beyond the search range, and *not a
minimum* when a step lowers the loss beyond noise.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from .. import results as R
from . import stats as S
from .stats import NothingToShow

MIN_CD_BLOCKS = 5  # fewer complete blocks than this: no Friedman/Nemenyi critical-difference diagram
ALPHA = 0.05
Z = 2.0  # a profile step's loss change must exceed Z standard errors to count as a rise (or a fall)
STATUSES = ("identified", "one-sided", "at bound", "unidentified", "not a minimum", "no noise estimate")


# ------------------------------------------------------------------------------ validated runs
def validated_runs(res) -> pd.DataFrame:
    """One row per run with a validation phase: ``run_id, subject, optimizer, seed, train`` (its
    best training loss), ``val_loss, val_se`` (:func:`raybrain.results.holdout`) and ``at_bound``
    (where the search bounds are known, :func:`raybrain.results.summary`)."""
    r = S.as_results(res)
    cols = ["run_id", "subject", "optimizer", "seed", "train", "val_loss", "val_se", "at_bound"]
    df = r.evaluations
    h = R.holdout(df) if not df.empty else pd.DataFrame()
    if h.empty:
        return pd.DataFrame(columns=cols)
    out = S.run_best(r).rename(columns={"best": "train"}).merge(h[["run_id", "val_loss", "val_se"]], on="run_id")
    bounds = r.bounds or (r.truth or {}).get("bounds")
    if bounds:
        flags = R.summary(df, bounds).set_index("run_id")["at_bound"]
        out["at_bound"] = out["run_id"].map(flags)
    else:
        out["at_bound"] = None
    out = out[out["val_loss"].notna()]
    return out[cols].sort_values(["subject", "optimizer", "seed"], kind="stable").reset_index(drop=True)


def blocks(res) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The complete blocks: ``(val, se, train)``, each blocks (subject, seed) × families, of the
    runs' validated losses, their noise standard errors and their best training losses; only
    blocks where every family has a validated loss."""
    v = validated_runs(res)
    if v.empty:
        e = pd.DataFrame()
        return e, e, e
    piv = {c: v.pivot_table(index=["subject", "seed"], columns="optimizer", values=c, aggfunc="first", dropna=False)
           for c in ("val_loss", "val_se", "train")}
    val = piv["val_loss"].dropna(axis=0, how="any")
    order = sorted(val.columns)
    return val[order], piv["val_se"].reindex(index=val.index, columns=order), piv["train"].reindex(
        index=val.index, columns=order)


# ----------------------------------------------------------------------------- paired tests
def pairs(res, alpha: float = ALPHA) -> pd.DataFrame:
    """Every pair of families over the complete blocks (:func:`blocks`): ``a, b, n_blocks,
    mean_diff`` (a − b; negative: a validated lower), ``se_diff``, ``test`` ("paired t" or, with
    one block, "noise z"), ``statistic, p_value, p_holm`` (Holm over the pairs), ``tie``
    (p_holm ≥ ``alpha``: the difference is within noise) and ``better`` ("-" on a tie). See the
    module docstring."""
    from scipy import stats

    cols = ["a", "b", "n_blocks", "mean_diff", "se_diff", "test", "statistic", "p_value", "p_holm", "tie", "better"]
    val, se, _ = blocks(res)
    if val.empty or val.shape[1] < 2:
        return pd.DataFrame(columns=cols)
    n = len(val)
    rows = []
    for a, b in combinations(val.columns, 2):
        d = (val[a] - val[b]).to_numpy(float)
        mean = float(d.mean())
        if n >= 2:
            sd = float(d.std(ddof=1))
            se_d = sd / math.sqrt(n)
            test = "paired t"
            if sd == 0:
                stat, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
            else:
                stat = mean / se_d
                p = float(2 * stats.t.sf(abs(stat), n - 1))
        else:
            se_d = float(np.sqrt(se[a].iloc[0] ** 2 + se[b].iloc[0] ** 2))
            test = "noise z"
            if not np.isfinite(se_d) or se_d == 0:  # no noise estimate (one repeat): nothing to test
                stat, p = np.nan, np.nan
            else:
                stat = mean / se_d
                p = float(2 * stats.norm.sf(abs(stat)))
        rows.append({"a": a, "b": b, "n_blocks": n, "mean_diff": mean, "se_diff": se_d, "test": test,
                     "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows)
    out["p_holm"] = S.holm(out["p_value"])
    out["tie"] = ~(out["p_holm"] < alpha)  # NaN (untestable) is a tie: no evidence of a difference
    out["better"] = np.where(out["tie"], "-", np.where(out["mean_diff"] < 0, out["a"], out["b"]))
    out.attrs["alpha"] = alpha
    return out[cols]


def ranking(res, alpha: float = ALPHA, level: float = 0.95) -> pd.DataFrame:
    """Families ranked by validated loss over the complete blocks, best first: ``optimizer,
    n_blocks, val_mean, val_se`` (over blocks: sd / sqrt(n); one block: its noise standard error),
    ``ci_low, ci_high`` (``level`` confidence interval: Student's t over blocks, normal for one
    block), ``rank`` (1 = lowest ``val_mean``; tied families share the rank of the best of them),
    ``tied_with`` (the families whose difference from this one is within noise, :func:`pairs`),
    ``train_mean`` and ``train_rank`` (the same blocks' best training losses) and ``sim_s``, the
    mean simulated seconds of a run's search (model time × noise repeats, the burn-in of every
    fresh simulation included: :func:`raybrain.report.stats.sim_seconds`; the held-out phases,
    the same for every family, not counted) — the cost at which the validated loss was reached.
    ``attrs``: ``"ties"``, ``"order"`` (:func:`order_sentence`) and ``"alpha"``."""
    from scipy import stats

    cols = ["optimizer", "n_blocks", "val_mean", "val_se", "ci_low", "ci_high", "rank", "tied_with",
            "train_mean", "train_rank", "sim_s"]
    val, se, train = blocks(res)
    if val.empty:
        out = pd.DataFrame(columns=cols)
        out.attrs.update(ties="", order="", alpha=alpha)
        return out
    n = len(val)
    mean = val.mean(axis=0)
    if n >= 2:
        sem = val.std(axis=0, ddof=1) / math.sqrt(n)
        q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    else:
        sem = se.iloc[0]
        q = float(stats.norm.ppf(0.5 + level / 2))
    out = pd.DataFrame({"optimizer": val.columns, "n_blocks": n, "val_mean": mean.to_numpy(),
                        "val_se": sem.to_numpy(float)})
    out["ci_low"] = out["val_mean"] - q * out["val_se"]
    out["ci_high"] = out["val_mean"] + q * out["val_se"]
    out["train_mean"] = train.mean(axis=0).reindex(out["optimizer"]).to_numpy()
    out = out.sort_values(["val_mean", "optimizer"], kind="stable").reset_index(drop=True)
    out["train_rank"] = out["train_mean"].rank(method="min").astype("Int64")
    r = S.as_results(res)
    df = r.evaluations
    tr = df[df["phase"] == "train"] if "phase" in df else df
    per_run = S.sim_seconds(tr, getattr(r, "burn_in", 0.0)).groupby(tr["run_id"]).sum()
    runs = validated_runs(res).set_index(["subject", "seed"])
    runs = runs[runs.index.isin(val.index)]
    cost = per_run.reindex(runs["run_id"]).to_numpy()
    out["sim_s"] = pd.Series(cost).groupby(runs["optimizer"].to_numpy()).mean().reindex(out["optimizer"]).to_numpy()
    pw = pairs(res, alpha)
    tied = {o: [] for o in out["optimizer"]}
    for r in pw.itertuples():
        if r.tie:
            tied[r.a].append(r.b)
            tied[r.b].append(r.a)
    # rank: 1 + the number of families better beyond noise
    better = {o: 0 for o in out["optimizer"]}
    for r in pw.itertuples():
        if not r.tie:
            better[r.b if r.better == r.a else r.a] += 1
    out["rank"] = [1 + better[o] for o in out["optimizer"]]
    order = list(out["optimizer"])
    out["tied_with"] = [", ".join(sorted(tied[o], key=order.index)) for o in out["optimizer"]]
    ties = ties_sentence(out, pw, alpha)
    left_out = validated_runs(res).groupby(["subject", "seed"]).ngroups - n
    if left_out:
        ties += (f" {left_out} subject×seed block{'s' if left_out > 1 else ''} without a validated loss for every "
                 "family left out (the comparison is paired).")
    out.attrs.update(ties=ties, order=order_sentence(out, pw), alpha=alpha)
    return out[cols]


def ties_sentence(rank: pd.DataFrame, pw: pd.DataFrame, alpha: float = ALPHA) -> str:
    """What the validated ranking can and cannot say, in words."""
    if rank.empty:
        return ""
    n = int(rank["n_blocks"].iloc[0])
    k = len(rank)
    if k < 2:
        return f"one family ({rank['optimizer'].iloc[0]}): nothing to compare."
    test = ("paired t-tests over" if n >= 2 else "a z-test against the fresh-noise standard error of") + \
        f" {n} subject×seed block{'s' if n != 1 else ''}, Holm-corrected"
    top = rank[rank["rank"] == 1]["optimizer"].tolist()
    if len(top) == k:
        return (f"No family is better than another beyond noise ({test}, α = {alpha:g}): all {k} are tied, "
                "and their order in the table is not a result.")
    if len(top) == 1 and (rank["tied_with"] == "").all():
        return f"{top[0]} has the lowest validated loss, ahead of every other family beyond noise ({test})."
    order = rank["optimizer"].tolist()
    rest = []
    for o in order:
        if o in top:
            continue
        beaten_by = sorted({r.better for r in pw.itertuples() if not r.tie and o in (r.a, r.b) and r.better != o},
                           key=order.index)
        tied = rank.loc[rank["optimizer"] == o, "tied_with"].iloc[0]
        rest.append(f"{o} is worse beyond noise than {', '.join(beaten_by)}"
                    + (f" (tied with {tied})" if tied else ""))
    lead = (f"{', '.join(top)} are tied for the lowest validated loss (their differences are within noise; "
            f"{test})" if len(top) > 1 else f"{top[0]} has the lowest validated loss ({test})")
    return lead + "; " + "; ".join(rest) + "."


def order_sentence(rank: pd.DataFrame, pw: pd.DataFrame | None = None) -> str:
    """Whether ordering the families by best training loss and by validated loss agree, plainly;
    given the pairwise tests ``pw`` (:func:`pairs`), also whether the pairs that swap places are
    within noise of each other."""
    if len(rank) < 2 or rank["train_mean"].isna().any():
        return ""
    by_val = list(rank.sort_values(["val_mean", "optimizer"], kind="stable")["optimizer"])
    by_train = list(rank.sort_values(["train_mean", "optimizer"], kind="stable")["optimizer"])
    if by_val == by_train:
        return "Training and validation order the families the same way: " + " < ".join(by_val) + "."
    text = ("Training and validation order DISAGREE: by best training loss " + " < ".join(by_train)
            + ", by validated loss (fresh noise) " + " < ".join(by_val) + ". The training loss is the best of "
            "many noisy evaluations and is optimistic; rank by the validated loss, and read the ties.")
    if pw is not None and not pw.empty:
        tv, vv = {o: i for i, o in enumerate(by_train)}, {o: i for i, o in enumerate(by_val)}
        swapped = pw[[(tv[a] < tv[b]) != (vv[a] < vv[b]) for a, b in zip(pw["a"], pw["b"])]]
        if swapped["tie"].all():
            names = ", ".join(f"{a}/{b}" for a, b in zip(swapped["a"], swapped["b"]))
            text += f" Every pair that swaps places ({names}) is within noise: neither order of those is a result."
        else:
            beyond = swapped[~swapped["tie"]]
            text += (" Validation reverses " + ", ".join(f"{a}/{b}" for a, b in zip(beyond["a"], beyond["b"]))
                     + " beyond noise.")
    return text


# ---------------------------------------------------------------------- critical difference
def critical_difference(res, alpha: float = ALPHA, min_blocks: int = MIN_CD_BLOCKS) -> dict | None:
    """Friedman test and Nemenyi critical difference over the complete blocks (Demšar 2006):
    ``{"mean_ranks": Series (1 = best), "cd", "n_blocks", "k", "statistic", "p_value", "alpha"}``;
    None with fewer than ``min_blocks`` blocks or 3 families."""
    from scipy import stats

    val, _, _ = blocks(res)
    if val.empty:
        return None
    n, k = val.shape
    if n < min_blocks or k < 3:
        return None
    ranks = val.rank(axis=1, method="average")
    if np.all(val.to_numpy() == val.to_numpy()[:, :1]):
        stat, p = 0.0, 1.0
    else:
        r = stats.friedmanchisquare(*[val[c].to_numpy() for c in val.columns])
        stat, p = float(r.statistic), float(r.pvalue)
    q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6.0 * n))
    return {"mean_ranks": ranks.mean(axis=0).sort_values(), "cd": cd, "n_blocks": n, "k": k, "statistic": stat,
            "p_value": p, "alpha": alpha}


def cd_groups(mean_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal runs of families (in mean-rank order) whose mean ranks span less than ``cd``: the
    bars of the diagram (only runs of two or more)."""
    names, r = list(mean_ranks.index), mean_ranks.to_numpy(float)
    groups = []
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and not any(g[0] <= i and j <= g[1] for g in groups):
            groups.append((i, j))
    return [names[i:j + 1] for i, j in groups]


def cd_figure(res, alpha: float = ALPHA):
    """The critical-difference diagram (Demšar 2006): families at their mean rank over the blocks
    (1 = best, left), the CD as a scale bar, a bar joining families not different beyond it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .figures import colours

    c = critical_difference(res, alpha)
    if c is None:
        val, _, _ = blocks(res)
        n, k = val.shape if not val.empty else (0, 0)
        raise NothingToShow(f"no critical-difference diagram: it needs at least {MIN_CD_BLOCKS} complete "
                            f"subject×seed blocks and 3 families, these results have {n} and {k}")
    mr, cd, k = c["mean_ranks"], c["cd"], c["k"]
    col = colours(S.optimizers(res))
    groups = cd_groups(mr, cd)
    fig = Figure(figsize=(7.5, 1.4 + 0.3 * (k + len(groups))), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xlim(0.7, k + 1.4)
    y_groups = [-0.2 - 0.18 * g for g in range(len(groups))]
    y0 = (y_groups[-1] if groups else 0.0) - 0.35
    ax.set_ylim(y0 - 0.45 * k, 1.5)
    ax.hlines(0, 1, k, color="k", lw=1)
    for i in range(1, k + 1):
        ax.vlines(i, -0.06, 0.06, color="k", lw=1)
        ax.text(i, 0.12, str(i), ha="center", va="bottom", fontsize=9)
    ax.hlines(1.0, 1, 1 + cd, color="k", lw=2)
    ax.vlines([1, 1 + cd], 0.94, 1.06, color="k", lw=1)
    ax.text(1 + cd / 2, 1.08, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for j, (name, r) in enumerate(mr.items()):
        y = y0 - 0.45 * j
        colour = col.get(name, "k")
        ax.plot([r, r, k + 0.3], [0, y, y], color=colour, lw=1)
        ax.plot([r], [0], "o", color=colour, ms=5)
        ax.text(k + 0.35, y, f"{name} ({r:.2f})", ha="left", va="center", fontsize=9, color=colour)
    for g, y in zip(groups, y_groups):  # families not different beyond the CD
        ax.hlines(y, mr[g[0]] - 0.04, mr[g[-1]] + 0.04, color="0.2", lw=4, alpha=0.7)
    ax.axis("off")
    ax.set_title(f"Mean rank of the validated loss over {c['n_blocks']} subject×seed blocks "
                 f"(Friedman p = {c['p_value']:.3g}; bars: within CD, α = {alpha:g})", fontsize=9)
    return fig


# ---------------------------------------------------------------------------- identifiability
def profiles(res) -> pd.DataFrame:
    """The profile points of every run (phase ``"profile"``), averaged over validation targets:
    ``run_id, subject, optimizer, seed, param, step, value, fit`` (the winner's value),
    ``offset`` ((value − fit) / search range, where the bounds are known, else value − fit),
    ``loss, se`` and ``delta, delta_se`` (the change from the fit's loss on the profile's noise,
    and its standard error sqrt(se² + se_fit²)). The fit (step 0) appears under every parameter."""
    r = S.as_results(res)
    df = r.evaluations
    cols = ["run_id", "subject", "optimizer", "seed", "param", "step", "value", "fit", "offset", "loss", "se",
            "delta", "delta_se"]
    if df.empty or "profile_step" not in df:
        return pd.DataFrame(columns=cols)
    p = df[df["phase"] == "profile"]
    if p.empty:
        return pd.DataFrame(columns=cols)
    params = R.param_columns(df)
    bounds = r.bounds or (r.truth or {}).get("bounds") or {}
    train = df[df["phase"] == "train"].groupby("run_id")["subject"].first()
    se2 = (p["loss_se"] if "loss_se" in p else pd.Series(np.nan, index=p.index)).astype(float) ** 2
    p = p.assign(_se2=se2, _param=p["profile_param"].fillna(""), _k=p["profile_step"].astype(int))
    g = p.groupby(["run_id", "_param", "_k"], sort=False)
    agg = g.agg(optimizer=("optimizer", "first"), seed=("seed", "first"), loss=("loss", "mean"),
                _v=("_se2", "sum"), _nan=("_se2", lambda v: v.isna().any()), _n=("loss", "size"),
                **{f"_p_{n}": (n, "first") for n in params}).reset_index()
    agg["se"] = np.where(agg["_nan"], np.nan, np.sqrt(agg["_v"]) / agg["_n"])
    rows = []
    for run, d in agg.groupby("run_id", sort=False):
        fit = d[d["_k"] == 0]
        if fit.empty:
            continue
        f = fit.iloc[0]
        for name in [n for n in params if n in set(d["_param"])]:
            sub = pd.concat([fit, d[d["_param"] == name]]).sort_values("_k")
            width = (bounds[name][1] - bounds[name][0]) if name in bounds else 1.0
            for s in sub.to_dict("records"):
                value, fv = float(s[f"_p_{name}"]), float(f[f"_p_{name}"])
                rows.append({"run_id": run, "subject": train.get(run), "optimizer": s["optimizer"],
                             "seed": s["seed"], "param": name, "step": int(s["_k"]), "value": value, "fit": fv,
                             "offset": (value - fv) / width, "loss": float(s["loss"]), "se": float(s["se"]),
                             "delta": float(s["loss"] - f["loss"]),
                             "delta_se": float(math.sqrt(s["se"] ** 2 + f["se"] ** 2)) if s["_k"] != 0 else 0.0})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["subject", "optimizer", "seed", "param", "step"], kind="stable").reset_index(drop=True)


def classify(prof: pd.DataFrame, z: float = Z) -> str:
    """The identifiability status (module docstring) of one run's profile of one parameter
    (:func:`profiles` rows: ``step, offset, delta, delta_se``)."""
    side = {"lower": prof[prof["step"] < 0], "upper": prof[prof["step"] > 0]}
    if any(d["delta_se"].isna().any() for d in side.values()):
        return "no noise estimate"
    # a step clipped onto the fit (the fit is at that bound) explores nothing
    side = {s: d[d["offset"].abs() > 1e-12] for s, d in side.items()}
    rises = {s: bool((d["delta"] > z * d["delta_se"]).any()) for s, d in side.items()}
    falls = any(bool((d["delta"] < -z * d["delta_se"]).any()) for d in side.values())
    explored = {s: not d.empty for s, d in side.items()}
    if falls:
        return "not a minimum"
    if rises["lower"] and rises["upper"]:
        return "identified"
    if not (rises["lower"] or rises["upper"]):
        return "unidentified"
    flat = "upper" if rises["lower"] else "lower"
    return "one-sided" if explored[flat] else "at bound"


def identifiability(res, z: float = Z) -> pd.DataFrame:
    """Per run × fitted parameter with a profile: ``run_id, subject, optimizer, seed, param, fit,
    status`` (:func:`classify`), ``max_rise`` (the largest loss rise over the profile in units of
    its standard error) and ``span`` (the profile's extent, in units of the search range)."""
    cols = ["run_id", "subject", "optimizer", "seed", "param", "fit", "status", "max_rise", "span"]
    p = profiles(res)
    if p.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (run, name), d in p.groupby(["run_id", "param"], sort=False):
        steps = d[d["step"] != 0]
        with np.errstate(all="ignore"):
            rise = (steps["delta"] / steps["delta_se"]).max() if not steps.empty else np.nan
        rows.append({"run_id": run, "subject": d["subject"].iloc[0], "optimizer": d["optimizer"].iloc[0],
                     "seed": d["seed"].iloc[0], "param": name, "fit": d["fit"].iloc[0], "status": classify(d, z),
                     "max_rise": float(rise), "span": float(d["offset"].max() - d["offset"].min())})
    return pd.DataFrame(rows, columns=cols)


def identifiability_summary(res, z: float = Z) -> pd.DataFrame:
    """Per fitted parameter: ``param, n_runs``, one column per status (runs with that status) and
    ``verdict``: the status of most runs ("mixed" when none has more than half)."""
    ident = identifiability(res, z)
    if ident.empty:
        return pd.DataFrame(columns=["param", "n_runs", *STATUSES, "verdict"])
    rows = []
    for name, d in ident.groupby("param", sort=False):
        counts = d["status"].value_counts()
        top = counts.index[0]
        rows.append({"param": name, "n_runs": len(d), **{s: int(counts.get(s, 0)) for s in STATUSES},
                     "verdict": top if counts.iloc[0] * 2 > len(d) else "mixed"})
    return pd.DataFrame(rows)


def boundary_summary(res) -> pd.DataFrame:
    """Runs whose fit (validated winner, else best training fit) lies within
    :data:`raybrain.results.BOUND_FRACTION` of a search bound: ``run_id, subject, optimizer,
    seed, at_bound``; empty when none (or the bounds are unknown)."""
    r = S.as_results(res)
    bounds = r.bounds or (r.truth or {}).get("bounds")
    cols = ["run_id", "subject", "optimizer", "seed", "at_bound"]
    if not bounds or r.evaluations.empty:
        return pd.DataFrame(columns=cols)
    s = R.summary(r.evaluations, bounds)
    s = s[s["at_bound"].fillna("") != ""]
    return s[cols].reset_index(drop=True)


def flag_lines(res, z: float = Z) -> list[str]:
    """Plain sentences for ``raybrain analyze``: the runs at a bound, per parameter, and each
    parameter's identifiability verdict."""
    lines = []
    b = boundary_summary(res)
    if not b.empty:
        n_runs = S.as_results(res).evaluations["run_id"].nunique()
        tags = [t for f in b["at_bound"] for t in f.split(", ")]
        for t in dict.fromkeys(tags):
            name, side = t.split(":")
            lines.append(f"AT BOUND: {name} is within {R.BOUND_FRACTION:.0%} of its {side} bound in "
                         f"{tags.count(t)}/{n_runs} runs' fits: the search range cut the fit short (or the "
                         f"model's valid range ends there); its value there is not an estimate.")
    for r in identifiability_summary(res, z).to_dict("records"):
        counts = ", ".join(f"{r[s]} {s}" for s in STATUSES if r[s])
        what = {"identified": "the data identify it", "unidentified":
                "UNIDENTIFIED: the validated loss is flat within noise around the fit, the data do not pin it down",
                "one-sided": "bounded on one side only", "at bound": "rises away from a bound it sits on",
                "not a minimum": "the fit is not a minimum of the validated loss",
                "no noise estimate": "cannot be judged (one noise repeat: no standard error)",
                "mixed": "no common verdict across runs"}[r["verdict"]]
        lines.append(f"PROFILE {r['param']}: {what} ({counts} of {r['n_runs']} runs).")
    return lines


def profile_figure(res, z: float = Z):
    """One panel per fitted parameter: each run's validated loss change from its fit against the
    parameter's offset (fraction of the search range), coloured by optimizer, with the ±``z``·SE
    noise band of each point (shaded)."""
    from .figures import _figure, _optimizer_handles, colours

    p = profiles(res)
    if p.empty:
        raise NothingToShow("no identifiability profile in these results (validation.profile.points: 0, or "
                            "results from before profiles were recorded)")
    names = list(dict.fromkeys(p["param"]))
    col = colours(S.optimizers(res))
    fig, axes = _figure(len(names), ncols=min(3, len(names)))
    bounds = S.as_results(res).bounds or {}
    for ax, name in zip(axes, names):
        d = p[p["param"] == name]
        for run, g in d.groupby("run_id", sort=False):
            g = g.sort_values("offset")
            c = col.get(str(g["optimizer"].iloc[0]), "k")
            x, y, e = g["offset"].to_numpy(float), g["delta"].to_numpy(float), z * g["delta_se"].to_numpy(float)
            ax.plot(x, y, "o-", color=c, lw=1, ms=3, alpha=0.8)
            if np.isfinite(e).all():
                ax.fill_between(x, y - e, y + e, color=c, alpha=0.12, lw=0)
        ax.axhline(0, color="0.4", lw=0.8, ls="--")
        ax.set_xlabel(f"{name} − fit" + (" (fraction of the search range)" if name in bounds else ""))
        ax.set_ylabel("validated loss − loss at the fit")
        ax.set_title(name)
    opts = [o for o in S.optimizers(res) if o in set(p["optimizer"])]
    fig.legend(*_optimizer_handles(opts, col), loc="outside lower center", ncol=min(len(opts), 6), frameon=False)
    return fig


def section(res, sec, alpha: float = ALPHA) -> None:
    """Fill the report's section ``sec`` (:class:`raybrain.report.html.Section`): the validated
    ranking with its ties and order sentences, the pairwise tests, the CD diagram where there are
    enough blocks, the boundary flags, the identifiability table and the profiles."""
    rank = ranking(res, alpha)
    sec.table("validated-ranking", rank, "Families ranked by validated loss (each run's winner re-simulated "
              "with fresh noise): mean over the complete subject×seed blocks, its standard error and "
              "95 % confidence interval; rank 1 + the families better beyond noise (paired tests over the blocks, "
              "Holm-corrected); tied_with: families whose difference from this one is within noise. train_mean / "
              "train_rank: the same blocks' best training losses.",
              empty="no validation phase in these results (validation.top: 0): no noise-aware ranking")
    if not rank.empty:
        sec.text(rank.attrs["ties"])
        if rank.attrs["order"]:
            (sec.note if "DISAGREE" in rank.attrs["order"] else sec.text)(rank.attrs["order"])
        sec.table("validated-pairs", pairs(res, alpha), "Every pair of families: mean_diff = a − b of the "
                  "validated loss over the blocks, its standard error, the test, Holm-corrected p; tie: within noise.")
        sec.figure("cd-diagram", lambda: cd_figure(res, alpha),
                   "Critical-difference diagram (Demšar 2006): mean rank of each family's validated loss over the "
                   "blocks (1 = best); families joined by a bar differ by less than the Nemenyi critical difference.")
    sec.h3("Fits on a bound")
    b = boundary_summary(res)
    if b.empty:
        sec.text(f"No run's fit lies within {R.BOUND_FRACTION:.0%} of a search bound (or the bounds are unknown).")
    else:
        for line in [x for x in flag_lines(res) if x.startswith("AT BOUND")]:
            sec.note(line)
        sec.table("at-bound", b, f"Runs whose fit lies within {R.BOUND_FRACTION:.0%} of its search range from a bound.")
    sec.h3("Identifiability")
    ident = identifiability_summary(res)
    sec.table("identifiability", ident, f"Per parameter, runs by profile status: the validated loss moved "
              f"±{Z:g} standard errors (identified: it rises on both sides; unidentified: flat within noise).",
              empty="no identifiability profile in these results (validation.profile.points: 0)")
    for line in [x for x in flag_lines(res) if x.startswith("PROFILE") and "UNIDENTIFIED" in x]:
        sec.note(line)
    sec.figure("profiles", lambda: profile_figure(res),
               f"Profiles: each run's validated loss change from its winner as one parameter moves (the others "
               f"held), against the offset in units of the search range; shaded: ±{Z:g} standard errors of the "
               "change (fresh-noise repeats). A curve inside its band on both sides: the data do not identify the "
               "parameter.")
