"""Experiment reports: figures and tables from any experiment's results, and one HTML page.

``raybrain report PATH [--out DIR]`` (or :func:`build`) writes ``DIR/index.html`` (default
``PATH/report``), a self-contained page (figures embedded as base64 PNG, no script, no external
resource), each figure as a PNG file and each table as ``tables/<name>.csv``. Sections:

* **Convergence**: best training loss so far (top fidelity) against simulations started, simulator
  wall time and simulated seconds (:mod:`raybrain.report.stats` defines them), per optimizer
  (median and interquartile band over seeds), every subject pooled and one panel per subject;
* **Final fit**: best loss per run per optimizer (boxes where a group has ≥ 5 runs, points always) and per-subject ranks; the ranking
  table; a Friedman test over subjects × optimizers with post-hoc pairwise Wilcoxon signed-rank
  tests, Holm-corrected (or why there is none: fewer than 3 optimizers or 3 subjects); the cost to
  reach within 5 % of the best (:func:`raybrain.results.analyze`); held-out validation / test losses;
* **The fitted brains**: each subject's best candidate simulated again (optional, duration capped)
  with simulated vs empirical FC and FCD; fitted parameters per subject (regional ones over regions);
  the E/I ratio per subject;
* **Parameter recovery** (synthetic subjects, ``truth.json``): fitted vs true, recovery error;
* **Loss landscapes**: loss over the first two parameters (a grid optimizer's map, else every
  evaluation interpolated or binned) with every optimizer's samples on top;
* **Cohort** (a cohort experiment, ``covariates.tsv``): the per-subject fits, each fitted quantity
  regressed on each covariate (slope, 95 % CI, permutation p, corrected across tests), the
  distributions and the significant associations (:mod:`raybrain.report.cohort`).

A section with nothing to show says why. For notebooks, every figure is a function returning a
:class:`matplotlib.figure.Figure` (Agg canvas, no pyplot) and every table one returning a DataFrame;
they take :class:`raybrain.results.Results`, an evaluations DataFrame or a results path, and raise
:class:`NothingToShow` (a ValueError) when the results hold nothing for them::

    from raybrain import report, results
    res = results.load("results/quickstart")
    report.convergence(res, x="sims")          # Figure
    report.ranking(res)                         # DataFrame
    report.friedman(res), report.pairwise(res)  # DataFrames
    report.build("results/quickstart")          # Path of index.html
"""
from .brains import Brain, load_experiment, regional_values, resimulate
from .cohort import associate, fits_table, plot_association, plot_distributions, plot_glass_brain, read_covariates
from .figures import brains, convergence, ei_ratio, final_fit, holdout, landscape, parameters, recovery
from .html import build, sections
from .stats import (X_AXES, NothingToShow, as_results, best_so_far, convergence_table, cost, fitted_parameters,
                    friedman, holm, landscape_map, optimizer_fits, pairwise, ranking, run_best, score_matrix,
                    sim_seconds, with_costs)
from .stats import holdout as holdout_table
from .stats import recovery as recovery_table

__all__ = [
    "build", "sections", "NothingToShow", "as_results",
    # figures
    "convergence", "final_fit", "holdout", "brains", "parameters", "ei_ratio", "recovery", "landscape",
    # tables
    "convergence_table", "best_so_far", "run_best", "ranking", "score_matrix", "friedman", "pairwise", "holm",
    "cost", "holdout_table", "fitted_parameters", "optimizer_fits", "recovery_table", "landscape_map",
    "sim_seconds", "with_costs", "X_AXES",
    # re-simulation
    "resimulate", "Brain", "load_experiment", "regional_values",
    # cohort
    "fits_table", "associate", "plot_distributions", "plot_association", "plot_glass_brain", "read_covariates",
]
