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
    """A fixed colour per optimizer label (tab10, then tab20), by the label's place in the sorted
    set of ``labels``: pass every optimizer of the experiment (:func:`optimizer_colours`) and a
    figure that shows only some of them still gives each its experiment-wide colour."""
    from matplotlib import colormaps

    labels = sorted({str(x) for x in labels})
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def optimizer_colours(res) -> dict[str, tuple]:
    """The colour of each optimizer of ``res``, the same in every figure of the report."""
    return colours(S.optimizers(res))


def _optimizer_handles(opts: Sequence[str], col: dict) -> tuple[list, list]:
    """Legend entries (coloured dots) for the optimizers ``opts``."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="o", ls="", color=col[o]) for o in opts], list(opts)


def seeds(res) -> int:
    """The most runs (seeds) any subject × optimizer has among the top-fidelity training results:
    1 means every point is a single run, so nothing in the report is "over seeds"."""
    rb = S.run_best(res)
    return int(rb.groupby(["subject", "optimizer"]).size().max()) if not rb.empty else 0


def has_test(res) -> bool:
    """Whether the results hold a test phase (``subjects.split`` with test subjects)."""
    df = S.as_results(res).evaluations
    return "phase" in df and bool((df["phase"] == "test").any())


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
    per optimizer: median over seeds (line) and interquartile band (a single seed: the run itself,
    no band). First panel: every subject pooled, as the relative excess over each subject's best
    loss (median and band over every subject's runs); then one panel per subject."""
    table = S.convergence_table(res, x, burn_in)
    if table.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    subs, note = _shown(S.subjects(res), max_subjects, "subjects")
    subs = [s for s in subs if s in set(table["subject"])]
    panels = ["pooled"] + subs
    fig, axes = _figure(len(panels))
    opts = S.optimizers(res)
    col = optimizer_colours(res)
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
    n_seeds = seeds(res)
    what = ("median and IQR over seeds" if n_seeds > 1 else
            "one run per subject and optimizer (a single seed)") + "; pooled: over every subject's runs"
    fig.suptitle(f"Convergence: best training loss (top fidelity) vs {S.X_AXES[x][1]}; {what}{note}",
                 fontsize="medium")
    return fig


# --------------------------------------------------------------------------------- final fit
MIN_BOX = 5  # a box (median, quartiles, whiskers) only over at least this many points; fewer: points only
SUBJECT_MARKERS = "osD^vP<>hX"


def _strip(ax, groups: list[np.ndarray], point_colours=None, point_markers=None, seed: int = 0,
           min_box: int = MIN_BOX) -> int:
    """One jittered point per value and, over a group of at least ``min_box`` finite values, a box
    (no outliers): a box over fewer points would pretend to a distribution. ``point_colours[i]`` /
    ``point_markers[i]``: a colour / marker per value of group i. Returns the number of boxes.
    Boxes carry the gid ``"box"``, the point collections ``"points"``."""
    rng = np.random.default_rng(seed)
    data = [np.asarray(g, float) for g in groups]
    finite = [d[np.isfinite(d)] for d in data]
    boxed = [i for i, d in enumerate(finite) if len(d) >= min_box]
    if boxed:
        bp = ax.boxplot([finite[i] for i in boxed], positions=boxed, widths=0.55, showfliers=False,
                        manage_ticks=False, medianprops={"color": "k"}, boxprops={"color": "0.4"},
                        whiskerprops={"color": "0.4"}, capprops={"color": "0.4"})
        for line in bp["boxes"]:
            line.set_gid("box")
    for i, d in enumerate(data):
        if not len(d):
            continue
        c = list(point_colours[i]) if point_colours is not None else ["C0"] * len(d)
        mk = list(point_markers[i]) if point_markers is not None else ["o"] * len(d)
        x = i + rng.uniform(-0.18, 0.18, len(d))
        for m in dict.fromkeys(mk):
            sel = [k for k, v in enumerate(mk) if v == m]
            sc = ax.scatter(x[sel], d[sel], s=18, c=[c[k] for k in sel], marker=m, alpha=0.85, zorder=3,
                            edgecolors="none")
            sc.set_gid("points")
    ax.set_xlim(-0.6, len(data) - 0.4)
    return len(boxed)


def _subject_markers(subs: Sequence[str]) -> dict[str, str]:
    """A marker per subject (all dots past :data:`SUBJECT_MARKERS`' length)."""
    return {s: (SUBJECT_MARKERS[k] if len(subs) <= len(SUBJECT_MARKERS) else "o") for k, s in enumerate(subs)}


def _with_subjects(handles_labels, subs: Sequence[str], smk: dict) -> tuple[list, list]:
    """Legend entries plus one grey marker per subject (when every subject has its own marker)."""
    from matplotlib.lines import Line2D

    hs, ls = list(handles_labels[0]), list(handles_labels[1])
    if 1 < len(subs) <= len(SUBJECT_MARKERS):
        hs += [Line2D([], [], marker=smk[s], ls="", color="0.35") for s in subs]
        ls += list(subs)
    return hs, ls


def _points_said(groups: list[np.ndarray], what: str, min_box: int = MIN_BOX) -> str:
    """A phrase for a title: what the points are, and where there are boxes."""
    n = [int(np.isfinite(np.asarray(g, float)).sum()) for g in groups]
    if n and min(n) >= min_box:
        return f"box and one point per {what}"
    if any(k >= min_box for k in n):
        return f"one point per {what}; boxes where ≥ {min_box}"
    return f"one point per {what}, too few for boxes"


def final_fit(res) -> Figure:
    """Left: the best training loss of every run, per optimizer (one point per run, coloured by
    optimizer, its marker the subject; a box where an optimizer has at least :data:`MIN_BOX`
    runs). Right: each optimizer's rank on each subject (by the mean over seeds where there are
    several; 1 = best), the numbers the Friedman test ranks."""
    rb = S.run_best(res)
    if rb.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    rank = S.ranking(res)
    order = [o for o in rank["optimizer"] if o in set(rb["optimizer"])]
    subs = S.subjects(res)
    col = optimizer_colours(res)
    smk = _subject_markers(subs)
    fig, (a1, a2) = _figure(2, ncols=2, w=max(4.3, 0.8 * len(order) + 2))
    groups = [rb.loc[rb["optimizer"] == o, "best"].to_numpy(float) for o in order]
    pm = [[smk[s] for s in rb.loc[rb["optimizer"] == o, "subject"]] for o in order]
    _strip(a1, groups, point_colours=[[col[o]] * len(g) for o, g in zip(order, groups)], point_markers=pm)
    a1.set_ylabel("best training loss (top fidelity)")
    a1.set_title(f"best loss per run ({_points_said(groups, 'run')})", fontsize="medium")
    m = S.score_matrix(res)
    if not m.empty:
        ranks = m.rank(axis=1, method="average")
        rg = [ranks[o].to_numpy(float) if o in ranks else np.array([]) for o in order]
        _strip(a2, rg, point_colours=[[col[o]] * len(g) for o, g in zip(order, rg)],
               point_markers=[[smk[s] for s in ranks.index] for _ in order], seed=1)
        a2.set_ylabel("rank on subject (1 = best)")
        a2.invert_yaxis()
        by = "mean over seeds" if seeds(res) > 1 else "one run each"
        a2.set_title(f"rank per subject ({len(m)} with every optimizer; {by})", fontsize="medium")
    else:
        a2.text(0.5, 0.5, "no subject has a result for every optimizer", ha="center", va="center",
                transform=a2.transAxes)
    for ax in (a1, a2):
        ax.set_xticks(np.arange(len(order)), order, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
    _legend(fig, _with_subjects(_optimizer_handles(order, col), subs, smk))
    fig.suptitle("Final fit: optimizers ordered by mean rank", fontsize="medium")
    return fig


def holdout(res) -> Figure:
    """Per optimizer, the runs' best training loss next to the validation loss of their winner
    (fresh noise, the validation targets) and its test loss (only where a test phase exists)."""
    h = S.holdout(res)
    if h.empty:
        raise NothingToShow("no validation or test phase in these results (validation.top: 0)")
    phases = [("best", "training (best)"), ("val_loss", "validation (winner)")]
    if h["test_loss"].notna().any():
        phases.append(("test_loss", "test (winner)"))
    order = [o for o in S.optimizers(res) if o in set(h["optimizer"])]
    col = optimizer_colours(res)
    subs = S.subjects(res)
    smk = _subject_markers(subs)
    fig, axes = _figure(len(phases), ncols=3, w=max(3.6, 0.7 * len(order) + 1.6))
    said = ""
    for ax, (c, title) in zip(axes, phases):
        vals = [h.loc[h["optimizer"] == o, c].to_numpy(float) for o in order]
        _strip(ax, vals, point_colours=[[col[o]] * len(v) for o, v in zip(order, vals)],
               point_markers=[[smk.get(s, "o") for s in h.loc[h["optimizer"] == o, "subject"]] for o in order])
        said = said or _points_said(vals, "run")
        ax.set_title(title, fontsize="medium")
        ax.set_xticks(np.arange(len(order)), order, rotation=30, ha="right")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("loss")
    _legend(fig, _with_subjects(_optimizer_handles(order, col), subs, smk))
    what = "training, validation and test" if len(phases) == 3 else "training and validation"
    fig.suptitle(f"Held-out losses per run: {what} ({said})", fontsize="medium")
    return fig


# ----------------------------------------------------------------------------- fitted brains
def _region_axes(ax, labels, n: int, blocks, names: bool = True, y: bool = True) -> None:
    """Label a region-indexed panel drawn in the display order of
    :func:`raybrain.report.brains.region_order`: lines at the hemisphere boundaries (gid
    ``"hemisphere"``; on x, and on y when ``y``), the hemispheres named on the x axis, and, when
    ``names`` and ``y``, one y tick per region with its name."""
    from .brains import region_order

    order, _ = region_order(labels, n)
    for _, _, stop in blocks[:-1]:
        ax.axvline(stop - 0.5, color="k", lw=1.2, gid="hemisphere")
        if y:
            ax.axhline(stop - 0.5, color="k", lw=1.2, gid="hemisphere")
    centres = [(a + b - 1) / 2 for _, a, b in blocks]
    if y:
        if labels is not None and names:
            ax.set_yticks(np.arange(n), [str(labels[k]) for k in order], fontsize=max(2.5, min(7.0, 330.0 / n)))
        elif blocks:
            ax.set_yticks(centres, [nm for nm, _, _ in blocks], rotation=90, va="center", fontsize="small")
            ax.set_ylabel("region")
        else:
            ax.set_ylabel("region")
    if blocks:
        ax.set_xticks(centres, [f"{nm} hemisphere" for nm, _, _ in blocks], fontsize="small")
        ax.set_xlabel("regions: " + ", ".join(f"{nm} {b - a}" for nm, a, b in blocks))
    elif labels is None:
        ax.set_xlabel("region (the subject's order; no region names, hemispheres unknown)")
    else:
        ax.set_xlabel("region (the subject's order; its names do not say the hemisphere)")


def brains(fits: list, max_subjects: int = 8, optimizers: Sequence[str] | None = None) -> Figure:
    """For each re-simulated best fit (:func:`raybrain.report.brains.resimulate`): empirical FC,
    simulated FC (with their correlation) and both FCD distributions (with their KS distance; the
    simulated one in the colour of the optimizer that found the fit, over ``optimizers``: every
    optimizer of the experiment, default those of ``fits``). FC regions are ordered left
    hemisphere, then right, with the boundary drawn, when the subject's region names say which is
    which; with names, every region is labelled."""
    from .brains import region_order

    if not fits:
        raise NothingToShow("no subject was simulated")
    fits = fits[:max_subjects]
    col = colours(optimizers if optimizers is not None else [b.optimizer for b in fits])
    n_max = max(b.fc_emp.shape[0] for b in fits)
    labelled = any(getattr(b, "labels", None) is not None for b in fits)
    # named regions: matrices large enough for one name per row (and saved at a higher resolution)
    row_h = 3.7 if not labelled else max(4.6, min(8.0, 0.07 * n_max + 1.0))
    fig = Figure(figsize=(13 if not labelled else 2.45 * row_h + 2.9, row_h * len(fits) + 0.4),
                 layout="constrained")
    FigureCanvasAgg(fig)
    if labelled:
        fig.report_dpi = 160  # raybrain.report.html saves it at this resolution
    rows = fig.subfigures(len(fits), 1, squeeze=False)[:, 0]
    for sf, b in zip(rows, fits):
        a_emp, a_sim, a_fcd = sf.subplots(1, 3, width_ratios=[1, 1, 0.8] if not labelled else [1, 1, 0.55])
        n = b.fc_emp.shape[0]
        labels = getattr(b, "labels", None)
        labels = labels if labels is not None and len(labels) == n else None
        order, blocks = region_order(labels, n)
        off = ~np.eye(n, dtype=bool)
        vals = np.concatenate([b.fc_emp[off], b.fc_sim[off]])
        vals = vals[np.isfinite(vals)]
        lim = float(np.percentile(np.abs(vals), 99)) if vals.size else 1.0
        lim = lim if lim > 0 else 1.0
        for ax, m, title in ((a_emp, b.fc_emp, "empirical FC"),
                             (a_sim, b.fc_sim, f"simulated FC (r = {b.fc_corr:.2f})")):
            shown = np.where(off, m, np.nan)[np.ix_(order, order)]
            im = ax.imshow(shown, vmin=-lim, vmax=lim, cmap="RdBu_r", interpolation="nearest")
            ax.set_title(title, fontsize="medium")
            _region_axes(ax, labels, n, blocks, names=ax is a_emp)
        sf.colorbar(im, ax=[a_emp, a_sim], shrink=0.8, label="FC (Pearson r)")
        if b.fcd_emp is not None or b.fcd_sim is not None:
            bins = np.linspace(-1, 1, 61)
            if b.fcd_emp is not None:
                a_fcd.hist(b.fcd_emp, bins=bins, density=True, histtype="step", color="k", lw=1.5,
                           label="empirical")
            if b.fcd_sim is not None:
                a_fcd.hist(b.fcd_sim, bins=bins, density=True, histtype="stepfilled", color=col.get(b.optimizer, "0.5"),
                           alpha=0.5, label=f"simulated ({b.optimizer})")
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


def _subject_styles(subs: Sequence[str]) -> dict[str, dict]:
    """Line styles per subject in greys (dash patterns), so no subject takes an optimizer's colour."""
    dashes = ["-", "--", ":", "-."]
    return {s: {"color": str(round(0.55 * (k // len(dashes)) / max(1, (len(subs) - 1) // len(dashes)), 2)),
                "ls": dashes[k % len(dashes)]} for k, s in enumerate(subs)}


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
    col = optimizer_colours(res)
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
    sty = _subject_styles(list(dict.fromkeys(lines_subs + [s for s in (regional or {})])))
    for ax, (base, items) in zip(axes[k:], groups.items()):
        items = sorted(items)
        idx = [i for i, _ in items]
        for s in lines_subs:
            ax.plot(idx, f.loc[s, [c for _, c in items]].astype(float).to_numpy(), lw=1, label=s, **sty[s])
        ax.set_title(f"{base} per region (best fit)", fontsize="medium")
        ax.set_xlabel("region")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", frameon=False)
    for ax, name in zip(axes[k + len(groups):], derived):
        for s, maps in (regional or {}).items():
            if name in maps:
                ax.plot(np.arange(len(maps[name])), maps[name], lw=1, label=s, **sty[s])
        ax.set_title(f"{name} per region (derived from the best fit)", fontsize="medium")
        ax.set_xlabel("region")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", frameon=False)
    if scalars_shown:
        _legend(fig, axes[0].get_legend_handles_labels())
    fig.suptitle(f"Fitted parameters per subject{note}{snote}", fontsize="medium")
    return fig


EI_CONSTANT = 0.02  # E/I whose relative range over every fit and region is below this counts as constant


def ei_ratio(res, max_subjects: int = 30, fits: list | None = None, fic: bool | None = None,
             tol: float = EI_CONSTANT) -> Figure:
    """Left: the E/I ratio (mean over regions of time-mean S_E / time-mean S_I) of each subject's
    best fit (bar) and of each optimizer's best fit (dots). Right, given ``fits`` (the re-simulated
    best fits, :func:`raybrain.report.brains.resimulate`): E/I per region of each subject's best
    fit, regions ordered by hemisphere where the names say it.

    ``fic``: the model uses feedback inhibition control (the reduced Wong-Wang default), which sets
    ``w_IE`` per region so the excitatory rate sits at its target: that fixes S_E, and unless the
    fit moves the inhibitory population (``w_EI``, ...) S_I too, so E/I is a constant of the model.
    When it is (relative range over every top-fidelity evaluation and every re-simulated region
    below ``tol``) this raises :class:`NothingToShow` saying so, with the value, instead of
    plotting a constant."""
    fitted = S.fitted_parameters(res)
    if fitted.empty:
        raise NothingToShow("no training evaluation with a finite loss at the top fidelity")
    if "ei_ratio" not in fitted or not np.isfinite(fitted["ei_ratio"].astype(float)).any():
        raise NothingToShow("the model reports no E/I ratio (it has no excitatory and inhibitory "
                            "populations, e.g. hopf)")
    df = S.as_results(res).evaluations
    top = S.top_fidelity(df)
    every = top["ei_ratio"].astype(float).to_numpy() if "ei_ratio" in top else np.array([])
    every = every[np.isfinite(every)]
    regional = [b for b in (fits or []) if getattr(b, "ei", None) is not None][:max_subjects]
    reg = np.concatenate([np.asarray(b.ei, float) for b in regional]) if regional else np.array([])
    reg = reg[np.isfinite(reg)]
    both = np.concatenate([every, reg])
    mean = float(np.mean(both)) if both.size else float("nan")
    spread = float((both.max() - both.min()) / abs(mean)) if both.size and mean else float("inf")
    if fic and spread < tol:
        params = ", ".join(R.param_columns(df))
        where = f"{len(every)} evaluations" + (" and every region of the re-simulated best fits" if reg.size else "")
        raise NothingToShow(
            f"E/I is constant under FIC, so it is not plotted: feedback inhibition control sets w_IE in every "
            f"region so that the excitatory population fires at its target rate (about 3 Hz), which fixes S_E; "
            f"the fitted parameters ({params}) leave the inhibitory population where it is, so every fit has "
            f"E/I = mean S_E / mean S_I = {mean:.4g} (range {both.min():.4g} to {both.max():.4g}, "
            f"a spread of {spread:.2%}, over {where}). It varies only where a fit moves the inhibitory population "
            f"(e.g. a regional w_EI).")
    per_opt = S.optimizer_fits(res)
    subs, note = _shown(list(fitted["subject"]), max_subjects, "subjects")
    n_panels = 2 if regional else 1
    fig, axes = _figure(n_panels, ncols=2, w=max(5.0, 0.4 * len(subs) + 2.5) if not regional else 6.5)
    ax = axes[0]
    xs = np.arange(len(subs))
    f = fitted.set_index("subject").loc[subs]
    ax.bar(xs, f["ei_ratio"].astype(float), color="0.8", edgecolor="k", width=0.6, label="best over optimizers")
    opts = S.optimizers(res)
    col = optimizer_colours(res)
    for k, opt in enumerate(opts):  # side by side, so equal values do not hide each other
        po = per_opt[per_opt["optimizer"] == opt].set_index("subject").reindex(subs)
        ax.scatter(xs + (k - (len(opts) - 1) / 2) * 0.5 / max(len(opts), 1), po["ei_ratio"].astype(float),
                   color=col[opt], s=16, zorder=3, label=opt)
    ax.set_xticks(xs, subs, rotation=45, ha="right", fontsize="small")
    ax.set_xlim(-0.5 - max(0.0, (4 - len(subs)) / 2), len(subs) - 0.5 + max(0.0, (4 - len(subs)) / 2))
    ax.set_ylabel("E/I ratio (mean S_E / mean S_I)")
    ax.set_title("mean over regions, per subject", fontsize="medium")
    ax.grid(alpha=0.3, axis="y")
    hs, ls = ax.get_legend_handles_labels()
    if regional:
        from .brains import region_order

        ax = axes[1]
        sty = _subject_styles([b.subject for b in regional])
        n = len(regional[0].ei)
        same = all(b.labels == regional[0].labels and len(b.ei) == n for b in regional)
        labels = regional[0].labels if same else None
        order, blocks = region_order(labels, n)
        for b in regional:
            e = np.asarray(b.ei, float)
            ax.plot(np.arange(len(e)), e[order] if len(e) == n else e, lw=1.2, color=col.get(b.optimizer, "0.3"),
                    ls=sty[b.subject]["ls"], label=f"{b.subject} ({b.optimizer})", gid="ei-region")
        _region_axes(ax, labels, n, blocks, y=False)
        ax.set_ylabel("E/I ratio (S_E / S_I)")
        ax.set_title("per region, each subject's best fit simulated again", fontsize="medium")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="x-small", frameon=False)
    _legend(fig, (hs, ls))
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
    col = optimizer_colours(res)
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
    _legend(fig, _optimizer_handles(opts, col))
    fig.suptitle(f"Parameter recovery on synthetic subjects ({_points_said(vals, 'run')}){note}",
                 fontsize="medium")
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
    col = optimizer_colours(r)
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
            ax.scatter([t[p1]], [t[p2]], marker="X", s=110, color="k", edgecolor="w", zorder=4, label="truth")
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
