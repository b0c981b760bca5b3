"""The report's figures, as :class:`matplotlib.figure.Figure` objects drawn with the Agg canvas
(no pyplot state, no display needed). Each raises :class:`~raybrain.report.stats.NothingToShow`
when the results hold nothing for it; the message says why.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import results as R
from . import stats as S
from .stats import NothingToShow

MAX_PANELS = 12
_REGIONAL = re.compile(r"^(.+)\[(\d+)\]$")


def _figure(n_panels: int, ncols: int = 3, w: float = 4.3, h: float = 3.3, **kw):
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows + 0.6), layout="constrained", **kw)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def colours(labels: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per optimizer label (tab10, then tab20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _legend(fig, handles_labels, ncol=None):
    handles, labels = handles_labels
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), 6), frameon=False,
                   fontsize="small")


def _pad(lo: float, hi: float, frac: float = 0.03) -> tuple[float, float]:
    d = (hi - lo) * frac
    return lo - d, hi + d


def _shown(items: list, limit: int, what: str) -> tuple[list, str]:
    if len(items) <= limit:
        return items, ""
    return items[:limit], f" (first {limit} of {len(items)} {what})"


# ------------------------------------------------------------------------------- convergence
def convergence(res, x: str = "sims", burn_in: float = 0.0, max_subjects: int = MAX_PANELS - 1) -> Figure:
    """Best training loss so far (top fidelity) against cost ``x`` ("sims": simulations started,
    "wall": simulator wall time, "sim_seconds": simulated seconds, see :mod:`raybrain.report.stats`),
    per optimizer: median over seeds (line) and interquartile band. First panel: every subject
    pooled, as the relative excess over each subject's best loss; then one panel per subject."""
    table = S.convergence_table(res, x, burn_in)
    if table.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    subs, note = _shown(S.subjects(res), max_subjects, "subjects")
    subs = [s for s in subs if s in set(table["subject"])]
    panels = ["pooled"] + subs
    fig, axes = _figure(len(panels))
    opts = S.optimizers(res)
    col = colours(opts)
    for ax, subject in zip(axes, panels):
        t = table[table["subject"] == subject]
        for opt in opts:
            c = t[t["optimizer"] == opt]
            if c.empty:
                continue
            n = int(c["n_runs"].max())
            ax.plot(c["x"], c["median"], drawstyle="steps-post", color=col[opt], lw=1.6, label=opt)
            if n > 1:
                ax.fill_between(c["x"], c["q25"], c["q75"], step="post", color=col[opt], alpha=0.2, lw=0)
        if subject == "pooled":
            ax.set_title(f"all subjects pooled ({len(S.subjects(res))})", fontsize="medium")
            ax.set_ylabel("(best so far − subject's best) / |subject's best|")
            ax.axhline(0.05, color="0.5", lw=0.8, ls="--")
            ax.set_yscale("symlog", linthresh=0.05, linscale=0.5)
            ax.set_ylim(bottom=0)
        else:
            ax.set_title(subject, fontsize="medium")
            ax.set_ylabel("best loss so far")
        ax.set_xlabel(S.X_AXES[x][1])
        ax.grid(alpha=0.3)
    _legend(fig, axes[0].get_legend_handles_labels())
    fig.suptitle(f"Convergence: best training loss (top fidelity) vs {S.X_AXES[x][1]}; "
                 f"median and IQR over seeds{note}", fontsize="medium")
    return fig


# --------------------------------------------------------------------------------- final fit
def _strip(ax, groups: list[np.ndarray], point_colours=None, seed: int = 0):
    """Box per group (no outliers) and one jittered point per value; ``point_colours[i]``: a
    colour per value of group i."""
    rng = np.random.default_rng(seed)
    data = [np.asarray(g, float)[np.isfinite(np.asarray(g, float))] for g in groups]
    ax.boxplot([d if len(d) else [np.nan] for d in data], positions=np.arange(len(data)), widths=0.55,
               showfliers=False, medianprops={"color": "k"}, boxprops={"color": "0.4"},
               whiskerprops={"color": "0.4"}, capprops={"color": "0.4"})
    for i, d in enumerate(groups):
        d = np.asarray(d, float)
        if not len(d):
            continue
        c = list(point_colours[i]) if point_colours is not None else ["C0"] * len(d)
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=16, c=c, alpha=0.8, zorder=3, edgecolors="none")


def final_fit(res) -> Figure:
    """Left: the best training loss of every run, per optimizer (box over all runs, one point per
    run coloured by subject). Right: each optimizer's rank on each subject (by the mean over seeds;
    1 = best), the numbers the Friedman test ranks."""
    rb = S.run_best(res)
    if rb.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    rank = S.ranking(res)
    order = [o for o in rank["optimizer"] if o in set(rb["optimizer"])]
    subs = S.subjects(res)
    scol = colours(subs) if len(subs) <= 20 else {s: "C0" for s in subs}
    fig, (a1, a2) = _figure(2, ncols=2, w=max(4.3, 0.8 * len(order) + 2))
    groups = [rb.loc[rb["optimizer"] == o, "best"].to_numpy(float) for o in order]
    pc = [[scol[s] for s in rb.loc[rb["optimizer"] == o, "subject"]] for o in order]
    _strip(a1, groups, point_colours=pc)
    a1.set_ylabel("best training loss (top fidelity)")
    a1.set_title("best loss per run", fontsize="medium")
    m = S.score_matrix(res)
    if not m.empty:
        ranks = m.rank(axis=1, method="average")
        _strip(a2, [ranks[o].to_numpy(float) if o in ranks else np.array([]) for o in order],
               point_colours=[[scol[s] for s in ranks.index] for _ in order], seed=1)
        a2.set_ylabel("rank on subject (1 = best)")
        a2.invert_yaxis()
        a2.set_title(f"rank per subject ({len(m)} with every optimizer)", fontsize="medium")
    else:
        a2.text(0.5, 0.5, "no subject has a result for every optimizer", ha="center", va="center",
                transform=a2.transAxes)
    for ax in (a1, a2):
        ax.set_xticks(np.arange(len(order)), order, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
    if len(subs) <= 20:
        from matplotlib.lines import Line2D

        hs = [Line2D([], [], marker="o", ls="", color=scol[s]) for s in subs]
        _legend(fig, (hs, subs))
    fig.suptitle("Final fit: optimizers ordered by mean rank", fontsize="medium")
    return fig


def holdout(res) -> Figure:
    """Per optimizer, the runs' best training loss next to the validation loss of their winner
    (fresh noise, the validation targets) and its test loss (where a test phase exists)."""
    h = S.holdout(res)
    if h.empty:
        raise NothingToShow("no validation or test phase in these results (validation.top: 0)")
    phases = [("best", "training (best)"), ("val_loss", "validation (winner)")]
    if h["test_loss"].notna().any():
        phases.append(("test_loss", "test (winner)"))
    order = [o for o in S.optimizers(res) if o in set(h["optimizer"])]
    col = colours(S.optimizers(res))
    fig, axes = _figure(len(phases), ncols=3, w=max(3.6, 0.7 * len(order) + 1.6))
    for ax, (c, title) in zip(axes, phases):
        vals = [h.loc[h["optimizer"] == o, c].to_numpy(float) for o in order]
        _strip(ax, vals, point_colours=[[col[o]] * len(v) for o, v in zip(order, vals)])
        ax.set_title(title, fontsize="medium")
        ax.set_xticks(np.arange(len(order)), order, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("loss")
    fig.suptitle("Held-out losses per run", fontsize="medium")
    return fig


# ----------------------------------------------------------------------------- fitted brains
def brains(fits: list, max_subjects: int = 8) -> Figure:
    """For each re-simulated best fit (:func:`raybrain.report.brains.resimulate`): empirical FC,
    simulated FC (with their correlation) and both FCD distributions (with their KS distance)."""
    if not fits:
        raise NothingToShow("no subject was simulated")
    fits = fits[:max_subjects]
    fig = Figure(figsize=(13, 3.7 * len(fits) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    rows = fig.subfigures(len(fits), 1, squeeze=False)[:, 0]
    for sf, b in zip(rows, fits):
        a_emp, a_sim, a_fcd = sf.subplots(1, 3)
        off = ~np.eye(b.fc_emp.shape[0], dtype=bool)
        vals = np.concatenate([b.fc_emp[off], b.fc_sim[off]])
        vals = vals[np.isfinite(vals)]
        lim = float(np.percentile(np.abs(vals), 99)) if vals.size else 1.0
        lim = lim if lim > 0 else 1.0
        for ax, m, title in ((a_emp, b.fc_emp, "empirical FC"),
                             (a_sim, b.fc_sim, f"simulated FC (r = {b.fc_corr:.2f})")):
            im = ax.imshow(np.where(off, m, np.nan), vmin=-lim, vmax=lim, cmap="RdBu_r", interpolation="nearest")
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel("region")
            ax.set_ylabel("region")
        sf.colorbar(im, ax=[a_emp, a_sim], shrink=0.8, label="FC (Pearson r)")
        if b.fcd_emp is not None or b.fcd_sim is not None:
            bins = np.linspace(-1, 1, 61)
            if b.fcd_emp is not None:
                a_fcd.hist(b.fcd_emp, bins=bins, density=True, histtype="step", color="k", lw=1.5,
                           label="empirical")
            if b.fcd_sim is not None:
                a_fcd.hist(b.fcd_sim, bins=bins, density=True, histtype="stepfilled", color="C1", alpha=0.5,
                           label="simulated")
            ks = b.fcd_ks
            a_fcd.set_title("FCD distribution" + ("" if math.isnan(ks) else f" (KS = {ks:.2f})"),
                            fontsize="medium")
            a_fcd.set_xlabel("FCD (r between window FCs)")
            a_fcd.set_ylabel("density")
            a_fcd.legend(fontsize="small", frameon=False)
        else:
            a_fcd.text(0.5, 0.5, "no FCD: the BOLD is shorter\nthan two FCD windows", ha="center",
                       va="center", transform=a_fcd.transAxes)
            a_fcd.set_axis_off()
        p = ", ".join(f"{k}={v:.3g}" for k, v in list(b.params.items())[:4]) + (" …" if len(b.params) > 4 else "")
        sf.suptitle(f"{b.subject}: best fit by {b.optimizer} ({p}); loss {b.fitted_loss:.3g} in the search, "
                    f"{b.loss:.3g} simulated again for {b.duration:g} s", fontsize="medium")
    return fig


def parameters(res, bounds=None, regional: dict | None = None, max_subjects: int = 30) -> Figure:
    """Fitted parameters per subject: for each scalar parameter, each optimizer's best fit (dots)
    and the best over optimizers (black bar); for a regional parametrisation (``name[i]``) one line
    per subject over regions; ``regional`` ({subject: {parameter: (N,)}}, from
    :func:`raybrain.report.brains.regional_values`) adds the derived regional maps."""
    fits = S.fitted_parameters(res)
    if fits.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    per_opt = S.optimizer_fits(res)
    params = R.param_columns(S.as_results(res).evaluations)
    groups: dict[str, list[tuple[int, str]]] = {}
    scalars = []
    for p in params:
        m = _REGIONAL.match(p)
        if m:
            groups.setdefault(m.group(1), []).append((int(m.group(2)), p))
        else:
            scalars.append(p)
    derived = list(dict.fromkeys(k for v in (regional or {}).values() for k in v))
    scalars_shown, note = _shown(scalars, MAX_PANELS, "scalar parameters")
    n = len(scalars_shown) + len(groups) + len(derived)
    subs, snote = _shown(list(fits["subject"]), max_subjects, "subjects")
    fig, axes = _figure(n, ncols=3, w=max(4.3, 0.35 * len(subs) + 2))
    opts = S.optimizers(res)
    col = colours(opts)
    xs = np.arange(len(subs))
    f = fits.set_index("subject").loc[subs]
    for ax, p in zip(axes, scalars_shown):
        ax.bar(xs, f[p].astype(float), color="0.8", edgecolor="k", width=0.6, label="best over optimizers")
        for k, opt in enumerate(opts):
            po = per_opt[per_opt["optimizer"] == opt].set_index("subject").reindex(subs)
            ax.scatter(xs + (k - (len(opts) - 1) / 2) * 0.5 / max(len(opts), 1), po[p].astype(float),
                       color=col[opt], s=14, zorder=3, label=opt)
        b = (bounds or {}).get(p)
        if b is not None:
            ax.set_ylim(*_pad(b[0], b[1]))
        ax.set_title(p, fontsize="medium")
        ax.set_xticks(xs, subs, rotation=45, ha="right", fontsize="small")
        ax.grid(alpha=0.3, axis="y")
    k = len(scalars_shown)
    lines_subs = subs[:8]
    for ax, (base, items) in zip(axes[k:], groups.items()):
        items = sorted(items)
        idx = [i for i, _ in items]
        for s in lines_subs:
            ax.plot(idx, f.loc[s, [c for _, c in items]].astype(float).to_numpy(), lw=1, label=s)
        ax.set_title(f"{base} per region (best fit)", fontsize="medium")
        ax.set_xlabel("region")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", frameon=False)
    for ax, name in zip(axes[k + len(groups):], derived):
        for s, maps in (regional or {}).items():
            if name in maps:
                ax.plot(np.arange(len(maps[name])), maps[name], lw=1, label=s)
        ax.set_title(f"{name} per region (derived from the best fit)", fontsize="medium")
        ax.set_xlabel("region")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", frameon=False)
    if scalars_shown:
        _legend(fig, axes[0].get_legend_handles_labels())
    fig.suptitle(f"Fitted parameters per subject{note}{snote}", fontsize="medium")
    return fig


def ei_ratio(res, max_subjects: int = 30) -> Figure:
    """The E/I ratio (mean S_E / mean S_I over regions) of each subject's best fit (bar) and of
    each optimizer's best fit (dots)."""
    fits = S.fitted_parameters(res)
    if fits.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    if "ei_ratio" not in fits or not np.isfinite(fits["ei_ratio"].astype(float)).any():
        raise NothingToShow("the model reports no E/I ratio (it has no excitatory and inhibitory "
                            "populations, e.g. hopf)")
    per_opt = S.optimizer_fits(res)
    subs, note = _shown(list(fits["subject"]), max_subjects, "subjects")
    fig, (ax,) = _figure(1, w=max(5.0, 0.4 * len(subs) + 2.5))
    xs = np.arange(len(subs))
    f = fits.set_index("subject").loc[subs]
    ax.bar(xs, f["ei_ratio"].astype(float), color="0.8", edgecolor="k", width=0.6, label="best over optimizers")
    opts = S.optimizers(res)
    col = colours(opts)
    for opt in opts:
        po = per_opt[per_opt["optimizer"] == opt].set_index("subject").reindex(subs)
        ax.scatter(xs, po["ei_ratio"].astype(float), color=col[opt], s=16, zorder=3, label=opt)
    ax.set_xticks(xs, subs, rotation=45, ha="right", fontsize="small")
    ax.set_xlim(-0.5 - max(0.0, (4 - len(subs)) / 2), len(subs) - 0.5 + max(0.0, (4 - len(subs)) / 2))
    ax.set_ylabel("E/I ratio (mean S_E / mean S_I)")
    ax.grid(alpha=0.3, axis="y")
    _legend(fig, ax.get_legend_handles_labels())
    fig.suptitle(f"E/I ratio of the fitted brains{note}", fontsize="medium")
    return fig


# --------------------------------------------------------------------------------- recovery
def recovery(res) -> Figure:
    """Synthetic subjects: each run's best candidate against the true parameters (one panel per
    parameter, identity line, axes spanning the search range), then each optimizer's recovery error
    (RMS distance to the truth in units of the search range)."""
    t = S.recovery(res)
    if t.empty:
        raise NothingToShow("no synthetic subjects with known parameters (no truth.json)")
    names, note = _shown(t.attrs["params"], MAX_PANELS - 1, "parameters")
    truth = S.as_results(res).truth or {}
    bounds = truth.get("bounds", {})
    opts = [o for o in S.optimizers(res) if o in set(t["optimizer"])]
    col = colours(S.optimizers(res))
    fig, axes = _figure(len(names) + 1, ncols=3)
    for ax, n in zip(axes, names):
        for o in opts:
            r = t[t["optimizer"] == o]
            ax.scatter(r[f"{n}_true"], r[n], color=col[o], s=20, alpha=0.8, label=o)
        b = bounds.get(n)
        lo, hi = (b if b is not None else (np.nanmin(t[[n, f"{n}_true"]].to_numpy()),
                                           np.nanmax(t[[n, f"{n}_true"]].to_numpy())))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
        ax.set_xlim(*_pad(lo, hi))
        ax.set_ylim(*_pad(lo, hi))
        ax.set_xlabel(f"true {n}")
        ax.set_ylabel(f"fitted {n}")
        ax.set_title(n, fontsize="medium")
        ax.grid(alpha=0.3)
    ax = axes[len(names)]
    vals = [t.loc[t["optimizer"] == o, "recovery_err"].to_numpy(float) for o in opts]
    _strip(ax, vals, point_colours=[[col[o]] * len(v) for o, v in zip(opts, vals)])
    ax.set_xticks(np.arange(len(opts)), opts, rotation=30, ha="right")
    ax.set_ylabel("recovery error (RMS, fraction of range)")
    ax.set_title("recovery error per run", fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    _legend(fig, axes[0].get_legend_handles_labels())
    fig.suptitle(f"Parameter recovery on synthetic subjects{note}", fontsize="medium")
    return fig


# -------------------------------------------------------------------------------- landscapes
def landscape(res, params: tuple[str, str] | None = None, subjects: Sequence[str] | None = None,
              bounds=None, max_subjects: int = 6) -> Figure:
    """Loss landscape over two parameters (default the first two) per subject
    (:func:`raybrain.report.stats.landscape_map`: a grid optimizer's map, else every evaluation
    interpolated or binned), every optimizer's samples on top, the best sample (star) and, for
    synthetic subjects, the truth (cross)."""
    r = S.as_results(res)
    truth = r.truth or {}
    bounds = bounds if bounds is not None else truth.get("bounds")
    subs = list(subjects) if subjects is not None else S.subjects(r)
    if not subs:
        raise NothingToShow("no training evaluations")
    subs, note = _shown(subs, max_subjects, "subjects")
    maps, reasons = [], []
    for s in subs:
        try:
            maps.append((s, S.landscape_map(r, s, params, bounds)))
        except NothingToShow as e:
            reasons.append(str(e))
    if not maps:
        raise NothingToShow("; ".join(dict.fromkeys(reasons)))
    fig, axes = _figure(len(maps), ncols=3, w=4.6, h=3.8)
    opts = S.optimizers(r)
    col = colours(opts)
    markers = "osD^vP<>hX*"
    for ax, (s, m) in zip(axes, maps):
        p1, p2 = m["params"]
        z = np.ma.masked_invalid(m["z"])
        if m["method"] == "interpolated":
            im = ax.pcolormesh(m["x"], m["y"], z, shading="nearest", cmap="viridis")
        else:
            im = ax.pcolormesh(m["x"], m["y"], z, shading="flat", cmap="viridis")
        fig.colorbar(im, ax=ax, label="loss", shrink=0.9)
        smp = m["samples"]
        for k, o in enumerate(opts):
            q = smp[smp["optimizer"] == o]
            if len(q):
                ax.scatter(q[p1], q[p2], s=14, marker=markers[k % len(markers)], facecolor=col[o],
                           edgecolor="w", linewidth=0.4, label=o, zorder=3)
        b = smp.loc[smp["loss"].idxmin()]
        ax.scatter([b[p1]], [b[p2]], marker="*", s=150, color="gold", edgecolor="k", zorder=4, label="best")
        t = (truth.get("params") or {}).get(s)
        if t and p1 in t and p2 in t:
            ax.scatter([t[p1]], [t[p2]], marker="X", s=110, color="red", edgecolor="w", zorder=4, label="truth")
        ax.set_xlim(*_pad(*m["limits"][p1]))
        ax.set_ylim(*_pad(*m["limits"][p2]))
        ax.set_xlabel(p1)
        ax.set_ylabel(p2)
        how = {"grid": f"grid run {m.get('grid_optimizer', '')!r}", "interpolated": "all evaluations, interpolated",
               "binned": "all evaluations, lowest per bin"}[m["method"]]
        ax.set_title(f"{s} ({how})", fontsize="medium")
    h, l = [], []
    for ax in axes:
        for hh, ll in zip(*ax.get_legend_handles_labels()):
            if ll not in l:
                h.append(hh)
                l.append(ll)
    _legend(fig, (h, l))
    extra = f"; {'; '.join(dict.fromkeys(reasons))}" if reasons else ""
    fig.suptitle(f"Loss landscapes (training, top fidelity){note}{extra}", fontsize="medium")
    return fig
