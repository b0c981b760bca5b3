r"""Synthetic connectomes, subjects and cohorts with known parameters, written as users' files.

Three pieces, each usable alone:

:func:`edr_connectome`
    A connectome from the exponential distance rule (EDR; Ercsey-Ravasz et al. 2013, Neuron
    80(1):184): N region centres drawn uniformly inside a brain-sized ellipsoid (mm, MNI-like,
    semi-axes 70 × 100 × 60 mm, the left hemisphere at x < 0 and the right at x > 0), and each pair
    ``i < j`` connected with probability

    .. math:: p_{ij} = \min\bigl(1,\ c\, e^{-\lambda d_{ij}}\bigr),

    ``d_ij`` the Euclidean distance between the centres and ``c`` set (by bisection) so that the
    expected fraction of connected pairs is ``density``. Weights are lognormal,
    ``w_ij ~ LogNormal(0, weight_sigma)`` (scaled to a largest weight of 1), the matrix is symmetric
    with a zero diagonal, and the graph is made connected by joining its components through their
    closest pair of regions. Tract lengths are ``tortuosity · d_ij`` on connected pairs and 0
    elsewhere (the bundled data's convention). λ: Ercsey-Ravasz et al. measured 0.19 /mm in the
    macaque; a human brain is about 2.7 times larger in each direction, so the default is
    0.19 / 2.7 ≈ 0.07 /mm.
:func:`simulate_bold`
    One subject's BOLD (T, N) from a connectome and model parameters, as
    :meth:`raybrain.experiment.ExperimentConfig` simulates a synthetic subject (one batch element,
    independent noise of stream ``stream`` under ``seed``; the SC normalised first,
    :func:`raybrain.connectome.normalise`).
:func:`make_cohort`
    A cohort written to disk in the BIDS-derivative layout fMRIPrep/XCP-D/MRtrix users have
    (``participants.tsv``, ``atlas-<atlas>_dseg.tsv``, per subject an MRtrix upper-triangular
    connectome CSV, XCP-D time-series TSVs and their JSON sidecars), whose parameters follow a known
    linear age effect plus subject noise,

    .. math:: \theta_s = a_\theta + b_\theta \cdot \mathrm{age}_s + \varepsilon_s,\quad
              \varepsilon_s \sim N(0, \mathrm{sd}_\theta^2),

    and whose SCs are the templates times a symmetric lognormal jitter,
    ``C_s = C · exp(sc_jitter · Z)``, ``Z`` symmetric with iid N(0, 1) entries. The true
    parameters go to ``truth.tsv`` (and the rule to ``truth.json``), never to
    ``participants.tsv``: a fit that reads the cohort as a user would can be checked against them.

Everything is deterministic in ``seed``; subject ``i`` of a cohort draws from its own generator
``default_rng([seed, i])``, so its data do not depend on how many subjects the cohort has.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from raybrain.data.io import Connectivity

__all__ = ["edr_connectome", "simulate_bold", "make_cohort", "as_connectivity", "BRAIN_SEMI_AXES_MM"]

#: semi-axes (x, y, z) in mm of the ellipsoid the EDR centres are drawn in (MNI-like brain size)
BRAIN_SEMI_AXES_MM = (70.0, 100.0, 60.0)

_ATLAS_NAME = re.compile(r"[A-Za-z0-9]+")


# -- EDR connectome -----------------------------------------------------------------------------
def _points_in_ellipsoid(rng: np.random.Generator, n: int, semi_axes) -> np.ndarray:
    """``n`` points uniform inside the ellipsoid (rejection from the enclosing cube)."""
    out = np.empty((0, 3))
    while len(out) < n:
        u = rng.uniform(-1.0, 1.0, size=(2 * (n - len(out)) + 8, 3))
        out = np.concatenate([out, u[(u * u).sum(axis=1) <= 1.0]])
    return out[:n] * np.asarray(semi_axes, dtype=np.float64)


def _distances(centres: np.ndarray) -> np.ndarray:
    diff = centres[:, None, :] - centres[None, :, :]
    return np.sqrt((diff * diff).sum(axis=-1))


def _edr_scale(d: np.ndarray, lam: float, density: float) -> float:
    """``c`` with ``mean(min(1, c·exp(-λ d))) = density`` over the pairs' distances ``d``."""
    if density >= 1.0:
        return math.inf
    base = np.exp(-lam * d)
    lo, hi = 0.0, 1.0
    while np.minimum(1.0, hi * base).mean() < density:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(1.0, mid * base).mean() < density:
            lo = mid
        else:
            hi = mid
    return hi


def _components(adj: np.ndarray) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    return connected_components(adj, directed=False)[1]


def edr_connectome(n_regions: int, seed: int = 0, *, lam: float = 0.07, density: float = 0.3,
                   weight_sigma: float = 1.0, tortuosity: float = 1.25,
                   semi_axes: Sequence[float] = BRAIN_SEMI_AXES_MM) -> Connectivity:
    r"""An exponential-distance-rule connectome of ``n_regions`` regions (module docstring).

    Parameters
    ----------
    n_regions : int
        N ≥ 2; ``N // 2`` regions in the left hemisphere (labels ``"L_000"``, ...; x < 0), the
        rest in the right (``"R_000"``, ...; x > 0), left first.
    seed : int
        Everything (centres, edges, weights) is a function of the seed.
    lam : float
        λ of the EDR in 1/mm (connection probability ∝ exp(-λ d)).
    density : float
        Expected fraction of connected region pairs, in (0, 1]; the joins that make the graph
        connected may add a few edges.
    weight_sigma : float
        σ of the lognormal weights (log-space standard deviation); 0 gives binary weights.
    tortuosity : float
        Tract length / Euclidean distance (≥ 1).
    semi_axes : 3 floats
        Semi-axes (x, y, z) of the ellipsoid in mm.

    Returns
    -------
    :class:`raybrain.data.io.Connectivity` ``(sc, lengths, labels, centres)``: SC (N, N)
    symmetric, zero diagonal, largest weight 1; lengths (N, N) in mm (0 where unconnected);
    labels; centres (N, 3) in mm.
    """
    if isinstance(n_regions, bool) or not isinstance(n_regions, (int, np.integer)) or n_regions < 2:
        raise ValueError(f"n_regions: an EDR connectome needs an integer number of regions >= 2, got {n_regions!r}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam: the EDR decay rate must be a number >= 0 (1/mm), got {lam!r}")
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density: the fraction of connected pairs must be in (0, 1], got {density!r}")
    if not (isinstance(weight_sigma, (int, float)) and math.isfinite(weight_sigma) and weight_sigma >= 0):
        raise ValueError(f"weight_sigma: must be a number >= 0, got {weight_sigma!r}")
    if not (isinstance(tortuosity, (int, float)) and math.isfinite(tortuosity) and tortuosity >= 1):
        raise ValueError(f"tortuosity: tract length / distance must be >= 1, got {tortuosity!r}")
    axes = np.asarray(semi_axes, dtype=np.float64)
    if axes.shape != (3,) or not np.all(np.isfinite(axes) & (axes > 0)):
        raise ValueError(f"semi_axes: three positive lengths (mm) expected, got {semi_axes!r}")
    n = int(n_regions)
    rng = np.random.default_rng(int(seed))
    n_left = n // 2
    centres = _points_in_ellipsoid(rng, n, axes)
    centres[:n_left, 0] = -np.abs(centres[:n_left, 0])
    centres[n_left:, 0] = np.abs(centres[n_left:, 0])
    labels = tuple(f"L_{i:03d}" for i in range(n_left)) + tuple(f"R_{i:03d}" for i in range(n - n_left))

    dist = _distances(centres)
    iu = np.triu_indices(n, k=1)
    d = dist[iu]
    c = _edr_scale(d, float(lam), float(density))
    p = np.ones_like(d) if math.isinf(c) else np.minimum(1.0, c * np.exp(-float(lam) * d))
    edge = rng.random(d.size) < p
    w = rng.lognormal(0.0, float(weight_sigma), size=d.size)
    adj = np.zeros((n, n), dtype=bool)
    adj[iu] = edge
    adj |= adj.T
    # join the components, closest pair first, until the graph is connected
    comp = _components(adj)
    while comp.max() > 0:
        between = comp[:, None] != comp[None, :]
        i, j = np.unravel_index(np.argmin(np.where(between, dist, np.inf)), dist.shape)
        adj[i, j] = adj[j, i] = True
        comp = _components(adj)
    weights = np.zeros((n, n))
    weights[iu] = w
    weights = weights + weights.T
    sc = np.where(adj, weights, 0.0)
    sc /= sc.max()
    lengths = np.where(adj, tortuosity * dist, 0.0)
    return Connectivity(sc=sc, lengths=lengths, labels=labels, centres=centres)


# -- one subject's BOLD -------------------------------------------------------------------------
def _normalise(sc: np.ndarray, norm: str, value, who: str) -> np.ndarray:
    from raybrain.connectome import normalise

    try:
        return normalise(sc, norm, value)
    except ValueError as exc:
        raise ValueError(f"{who}: {exc}") from None


def _square_sc(sc, who: str) -> np.ndarray:
    a = np.asarray(sc)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{who}: SC must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2:
        raise ValueError(f"{who}: SC must be a square (N, N) matrix with N >= 2, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: SC holds NaN or infinite values")
    if np.any(a < 0):
        raise ValueError(f"{who}: SC holds negative weights")
    if not np.any(a > 0):
        raise ValueError(f"{who}: SC has no positive weight")
    return a


def simulate_bold(sc, params: Mapping[str, Any], *, tr: float, duration: float, dt: float = 1e-3,
                  burn_in: float = 30.0, seed: int, model="rww", norm: str = "max",
                  norm_value: float | None = 0.2, dtype: str = "float64", stream: int = 0,
                  backend: str = "numpy", name: str | None = None) -> np.ndarray:
    """One subject's simulated BOLD, float64 ``(T, N)`` with ``T = duration / tr``.

    ``sc`` (N, N) is normalised (:func:`raybrain.connectome.normalise` with ``norm``,
    ``norm_value``) and simulated with ``model`` (a name of :data:`raybrain.models.MODELS` or a
    model) at ``params`` (model parameter names → scalars or (N,) arrays; missing ones take the
    model's defaults), one batch element drawing the independent noise stream ``stream`` under
    ``seed`` (:func:`raybrain.random.stream_keys`), after ``burn_in`` seconds. The same arguments
    give the same BOLD. ``name`` (e.g. the subject) starts every error message; a diverged
    simulation is a ValueError naming it and the parameters.
    """
    from raybrain._backend import asnumpy
    from raybrain.integrate import Simulation, SimulationSettings
    from raybrain.models import get_model

    who = name or "simulate_bold"
    a = _square_sc(sc, who)
    try:
        m = get_model(model) if isinstance(model, str) else model
    except ValueError as exc:
        raise ValueError(f"{who}: {exc}") from None
    if not isinstance(params, Mapping):
        raise ValueError(f"{who}: params must be a mapping of model parameter names to values, got {type(params).__name__}")
    unknown = [k for k in params if k not in m.parameter_names]
    if unknown:
        raise ValueError(f"{who}: unknown parameter(s) {unknown} for model {m.name!r}; it has {list(m.parameter_names)}")
    if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)) or stream < 0:
        raise ValueError(f"{who}: stream must be an integer >= 0, got {stream!r}")
    scaled = _normalise(a, norm, norm_value, who)
    try:
        settings = SimulationSettings(duration=float(duration), dt=float(dt), burn_in=float(burn_in), tr=float(tr),
                                      noise="independent", seed=int(seed), dtype=dtype, backend=backend)
        res = Simulation(m, scaled, dict(params), settings, batch=1, streams=np.array([int(stream)])).run()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{who}: {exc}") from None
    shown = {k: (float(v) if np.ndim(v) == 0 else "array") for k, v in params.items()}
    bold = np.asarray(asnumpy(res.bold[0]), dtype=np.float64)
    if bool(np.asarray(asnumpy(res.diverged))[0]) or not np.all(np.isfinite(bold)):
        raise ValueError(f"{who}: the simulation diverged at params {shown} (seed {seed}, stream {stream}); "
                         "choose other parameters or a smaller dt")
    return bold


# -- cohorts ------------------------------------------------------------------------------------
def as_connectivity(obj, source: str = "connectome") -> Connectivity:
    """A :class:`Connectivity` from anything with ``sc`` (and optionally ``lengths``, ``labels``,
    ``centres``; e.g. a :class:`raybrain.data.Subject` or a loaded connectome) or a bare (N, N)
    array (labels ``"region_000"``, ...). Missing lengths/centres stay None."""
    if isinstance(obj, np.ndarray):
        sc, lengths, labels, centres = obj, None, None, None
    elif hasattr(obj, "sc"):
        sc = obj.sc
        lengths, labels, centres = (getattr(obj, k, None) for k in ("lengths", "labels", "centres"))
    else:
        raise ValueError(f"{source}: expected a Connectivity, a Subject or an (N, N) array, got {type(obj).__name__}")
    sc = _square_sc(sc, source)
    n = sc.shape[0]
    if labels is None:
        labels = tuple(f"region_{i:03d}" for i in range(n))
    labels = tuple(str(x) for x in labels)
    if len(labels) != n:
        raise ValueError(f"{source}: {len(labels)} labels for {n} regions")
    if len(set(labels)) != n:
        raise ValueError(f"{source}: region labels are not unique")
    bad = [lab for lab in labels if not lab.strip() or any(ch in lab for ch in "\t\n\r")]
    if bad:
        raise ValueError(f"{source}: region labels must be non-empty and hold no tabs or newlines, got {bad[:3]}")
    if centres is not None:
        centres = np.asarray(centres, dtype=np.float64)
        if centres.shape != (n, 3):
            raise ValueError(f"{source}: centres must be ({n}, 3), got shape {centres.shape}")
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.float64)
        if lengths.shape != (n, n):
            raise ValueError(f"{source}: lengths must be ({n}, {n}), got shape {lengths.shape}")
    return Connectivity(sc=sc, lengths=lengths, labels=labels, centres=centres)


def _symmetric_template(sc: np.ndarray, source: str) -> np.ndarray:
    """The template's upper triangle mirrored, diagonal 0 (an MRtrix file can hold nothing else)."""
    if not np.allclose(sc, sc.T, rtol=1e-6, atol=1e-12 * float(np.abs(sc).max())):
        raise ValueError(f"{source}: SC is not symmetric; an MRtrix upper-triangular connectome file cannot hold a directed SC")
    up = np.triu(sc, k=1)
    return up + up.T


def _jitter(template: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """``template · exp(sd · Z)``, Z symmetric with iid N(0, 1) entries (zero weights stay 0)."""
    n = template.shape[0]
    z = np.triu(rng.standard_normal((n, n)), k=1)
    if sd == 0:
        return template.copy()
    return template * np.exp(sd * (z + z.T))


def _check_params(covariate_effects, subject_sd, fixed, model) -> tuple[dict, dict, dict]:
    from raybrain.models import get_model

    try:
        m = get_model(model) if isinstance(model, str) else model
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from None
    names = m.parameter_names
    effects: dict[str, tuple[float, float]] = {}
    for k, v in dict(covariate_effects).items():
        if k not in names:
            raise ValueError(f"covariate_effects: unknown parameter {k!r} of model {m.name!r}; it has {list(names)}")
        try:
            a, b = (float(x) for x in v)
        except (TypeError, ValueError):
            raise ValueError(f"covariate_effects[{k!r}]: expected (intercept, slope per year), got {v!r}") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"covariate_effects[{k!r}]: intercept and slope must be finite, got {v!r}")
        effects[k] = (a, b)
    sds: dict[str, float] = {}
    for k, v in dict(subject_sd or {}).items():
        if k not in effects:
            raise ValueError(f"subject_sd: {k!r} is not a parameter of covariate_effects {list(effects)}")
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"subject_sd[{k!r}]: must be a number >= 0, got {v!r}")
        sds[k] = float(v)
    fx: dict[str, float] = {}
    for k, v in dict(fixed or {}).items():
        if k not in names:
            raise ValueError(f"fixed: unknown parameter {k!r} of model {m.name!r}; it has {list(names)}")
        if k in effects:
            raise ValueError(f"fixed: {k!r} is also in covariate_effects; give each parameter once")
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"fixed[{k!r}]: must be a finite number, got {v!r}")
        fx[k] = float(v)
    return effects, sds, fx


def _write_tsv(df, path: Path, float_format: str | None) -> None:
    df.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format=float_format, lineterminator="\n")


_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "subject identifier (BIDS)"},
    "age": {"Description": "age at scan (synthetic)", "Units": "year"},
    "sex": {"Description": "sex (synthetic, drawn at random)", "Levels": {"F": "female", "M": "male"}},
    "atlas": {"Description": "parcellation (seg-<atlas>) of this subject's connectome and time series"},
}


def make_cohort(root, n_subjects: int, *, connectomes: Sequence[tuple[str, Any]],
                covariate_effects: Mapping[str, tuple[float, float]] | None = None,
                age_range: tuple[float, float] = (8.0, 80.0),
                subject_sd: Mapping[str, float] | None = None,
                fixed: Mapping[str, float] | None = None,
                tr: float = 0.72, duration: float = 300.0, dt: float = 1e-3, burn_in: float = 30.0,
                runs: int = 1, sc_jitter: float = 0.1, self_connection: float = 0.01,
                censor_fraction: float = 0.0, seed: int = 0, model="rww", norm: str = "max",
                norm_value: float | None = 0.2, dtype: str = "float64", float_format: str | None = None,
                overwrite: bool = False, progress: Callable[[int, int, str], None] | None = None):
    """Simulate a cohort and write it under ``root`` in the shared BIDS-derivative layout.

    Parameters
    ----------
    root : path
        Output folder; created if missing. It must be empty unless ``overwrite``.
    n_subjects : int
        Subjects ``sub-001``, ``sub-002``, ... (wider numbers past 999).
    connectomes : list of (atlas, connectome)
        Templates, assigned to the subjects round-robin. ``atlas`` is a BIDS label (letters and
        digits) naming the files' ``seg-<atlas>``; ``connectome`` a :class:`Connectivity`
        (e.g. :func:`edr_connectome`), a :class:`raybrain.data.Subject` (e.g. a bundled
        ``load_subject("hcp/101309")``) or an (N, N) array; its SC must be symmetric, and its
        diagonal is dropped. Regions without centres get ``n/a`` coordinates in the dseg file.
    covariate_effects : {name: (intercept, slope per year)}
        Default ``{"G": (2.0, -0.005)}``: θ = intercept + slope · age (+ subject noise).
    age_range : (low, high)
        Ages are uniform in it, rounded to 0.1 year (so ``participants.tsv`` holds them exactly).
    subject_sd : {name: sd}
        Standard deviation of each parameter's subject noise; default ``{"G": 0.05}``; 0 or
        missing: none.
    fixed : {name: value}
        Parameters equal in every subject; default ``{"sigma": 0.005}``. Others take the model's
        defaults.
    tr, duration, dt, burn_in : float
        Seconds: repetition time, recorded length of each run, integration step, discarded
        transient.
    runs : int
        Runs per subject; run ``r`` draws noise stream ``r - 1`` under the subject's ``sim_seed``.
    sc_jitter : float
        σ of the symmetric lognormal jitter of each subject's SC (0: the template itself).
    self_connection : float
        Diagonal written into the connectome CSVs as a fraction of the largest weight (MRtrix
        counts self-connections); the simulations never use it, so a loader must drop the diagonal
        to recover the simulated SC. 0 writes a zero diagonal.
    censor_fraction : float
        Fraction of frames of each run, chosen at random, written as whole rows of ``n/a``
        (motion censoring), in [0, 1).
    seed : int
        Everything is a function of it (module docstring).
    model, norm, norm_value, dtype
        As for :func:`simulate_bold`.
    float_format : str or None
        Format of the time series and connectome numbers; None writes the shortest text that
        reads back to the same float64 (the files hold the simulated values exactly).
    progress : callable, optional
        ``progress(done, n_subjects, participant_id)`` after each subject.

    Returns
    -------
    pandas.DataFrame
        The truth table, also written to ``root/truth.tsv``: participant_id, age, sex, atlas, every
        simulated parameter (covariate_effects then fixed), sim_seed.
    """
    import pandas as pd

    root = Path(os.fspath(root)).expanduser()
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
        raise ValueError(f"n_subjects: must be an integer >= 1, got {n_subjects!r}")
    n_subjects = int(n_subjects)
    if covariate_effects is None:
        covariate_effects = {"G": (2.0, -0.005)}
    if subject_sd is None:
        subject_sd = {k: 0.05 for k in ("G",) if k in covariate_effects}
    if fixed is None:
        fixed = {"sigma": 0.005} if "sigma" not in covariate_effects else {}
    effects, sds, fx = _check_params(covariate_effects, subject_sd, fixed, model)
    try:
        lo, hi = (float(x) for x in age_range)
    except (TypeError, ValueError):
        raise ValueError(f"age_range: expected (low, high) in years, got {age_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"age_range: expected 0 <= low <= high, got {age_range!r}")
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ValueError(f"runs: must be an integer >= 1, got {runs!r}")
    for key, v in (("sc_jitter", sc_jitter), ("self_connection", self_connection)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{key}: must be a number >= 0, got {v!r}")
    if not (isinstance(censor_fraction, (int, float)) and 0 <= censor_fraction < 1):
        raise ValueError(f"censor_fraction: must be in [0, 1), got {censor_fraction!r}")
    if float_format is not None:
        try:
            float_format % 1.5
        except (TypeError, ValueError):
            raise ValueError(f"float_format: not a %-format for one float, got {float_format!r}") from None
    if isinstance(connectomes, (str, bytes)) or not isinstance(connectomes, Sequence) or not connectomes:
        raise ValueError("connectomes: expected a non-empty list of (atlas, connectome) pairs")
    templates: list[tuple[str, Connectivity, np.ndarray]] = []
    for k, item in enumerate(connectomes):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"connectomes[{k}]: expected an (atlas, connectome) pair, got {type(item).__name__}")
        atlas, conn = item
        if not (isinstance(atlas, str) and _ATLAS_NAME.fullmatch(atlas)):
            raise ValueError(f"connectomes[{k}]: atlas name {atlas!r} must be letters and digits only (BIDS seg-<label>)")
        if any(atlas == a for a, _, _ in templates):
            raise ValueError(f"connectomes[{k}]: atlas {atlas!r} given twice; give each template its own atlas name")
        c = as_connectivity(conn, f"connectomes[{k}] ({atlas})")
        templates.append((atlas, c, _symmetric_template(c.sc, f"connectomes[{k}] ({atlas})")))
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root}: exists and is not a folder")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ValueError(f"{root}: folder is not empty; choose a new folder or pass overwrite=True")
    root.mkdir(parents=True, exist_ok=True)

    for atlas, c, _ in templates:
        xyz = c.centres if c.centres is not None else np.full((len(c.labels), 3), np.nan)
        dseg = pd.DataFrame({"index": np.arange(1, len(c.labels) + 1), "name": list(c.labels),
                             "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
        _write_tsv(dseg, root / f"atlas-{atlas}_dseg.tsv", float_format)

    width = max(3, len(str(n_subjects)))
    param_names = list(effects) + list(fx)
    rows = []
    for i in range(n_subjects):
        pid = f"sub-{i + 1:0{width}d}"
        label = pid[4:]
        atlas, conn, template = templates[i % len(templates)]
        rng = np.random.default_rng([int(seed), i])
        age = round(float(rng.uniform(lo, hi)), 1)
        sex = "F" if rng.random() < 0.5 else "M"
        params = {}
        for k, (a, b) in effects.items():
            noise = float(rng.normal(0.0, sds[k])) if sds.get(k, 0.0) > 0 else 0.0
            params[k] = a + b * age + noise
        params.update(fx)
        sim_seed = int(rng.integers(0, 2**31 - 1))
        sc = _jitter(template, float(sc_jitter), rng)

        dwi, func = root / pid / "dwi", root / pid / "func"
        dwi.mkdir(parents=True, exist_ok=True)
        func.mkdir(parents=True, exist_ok=True)
        upper = np.triu(sc)
        np.fill_diagonal(upper, float(self_connection) * float(sc.max()))
        np.savetxt(dwi / f"sub-{label}_seg-{atlas}_connectome.csv", upper, delimiter=",",
                   fmt=float_format or "%.17g")
        for r in range(1, int(runs) + 1):
            bold = simulate_bold(sc, params, tr=tr, duration=duration, dt=dt, burn_in=burn_in, seed=sim_seed,
                                 model=model, norm=norm, norm_value=norm_value, dtype=dtype, stream=r - 1,
                                 name=f"subject {pid} run {r}")
            if censor_fraction > 0:
                k = int(round(censor_fraction * bold.shape[0]))
                bold[rng.choice(bold.shape[0], size=k, replace=False)] = np.nan
            stem = f"sub-{label}_task-rest_run-{r}"
            _write_tsv(pd.DataFrame(bold, columns=list(conn.labels)),
                       func / f"{stem}_seg-{atlas}_stat-mean_timeseries.tsv", float_format)
            (func / f"{stem}_bold.json").write_text(
                json.dumps({"RepetitionTime": float(tr), "TaskName": "rest"}, indent=2) + "\n")
        rows.append({"participant_id": pid, "age": age, "sex": sex, "atlas": atlas, **params, "sim_seed": sim_seed})
        if progress is not None:
            progress(i + 1, n_subjects, pid)

    truth = pd.DataFrame(rows, columns=["participant_id", "age", "sex", "atlas", *param_names, "sim_seed"])
    _write_tsv(truth[["participant_id", "age", "sex", "atlas"]], root / "participants.tsv", None)
    (root / "participants.json").write_text(json.dumps(_PARTICIPANTS_JSON, indent=2) + "\n")
    _write_tsv(truth, root / "truth.tsv", None)
    model_name = model if isinstance(model, str) else getattr(model, "name", str(model))
    rule = {
        "Description": "Hidden true parameters of this synthetic cohort (raybrain.data.synthetic.make_cohort); "
                       "not part of the data a fit may read. Each parameter = intercept + slope * age + N(0, sd^2).",
        "model": model_name, "covariate_effects": {k: list(v) for k, v in effects.items()},
        "subject_sd": sds, "fixed": fx, "norm": norm, "norm_value": norm_value,
        "tr": float(tr), "duration": float(duration), "dt": float(dt), "burn_in": float(burn_in),
        "runs": int(runs), "noise": "independent; run r draws stream r-1 under sim_seed",
        "sc_jitter": float(sc_jitter), "self_connection": float(self_connection),
        "censor_fraction": float(censor_fraction), "seed": int(seed), "dtype": dtype,
        "atlases": [a for a, _, _ in templates],
    }
    (root / "truth.json").write_text(json.dumps(rule, indent=2) + "\n")
    return truth
