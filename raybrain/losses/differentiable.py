r"""Differentiable stand-ins of the BOLD losses, on JAX arrays, for gradient-based fitting.

Not registered losses (:data:`raybrain.losses.LOSSES` score NumPy/CuPy batches and return finite
per-candidate values); these are scalar functions of JAX arrays that ``jax.grad`` differentiates
through the simulator of :mod:`raybrain.jax_backend`:

* :func:`fc_matrix`, :func:`fc_loss`: Pearson FC and ``1 − r(FC_sim, FC_emp)`` over upper triangles
  plus ``mean_weight · |mean FC_sim − mean FC_emp|`` (the first two terms of the ``pfic`` loss,
  :mod:`raybrain.losses.fc`), averaged over repeats.
* :func:`fcd_distribution`, :func:`soft_ks`: the FCD KS term has zero gradient almost everywhere;
  its stand-in is the KS distance between logistic-smoothed empirical CDFs (bandwidth ``h``; the
  exact KS statistic as ``h → 0``) of the FCD values.
* :class:`ObjectiveLoss`: an :class:`raybrain.objective.Objective`'s loss assembled from these
  (what the ``gradient`` optimizer, :mod:`raybrain.search.gradient`, differentiates in
  experiments; the losses it is *told* and ranks by stay the objective's real ones);
  :func:`vector_loss`: an FC loss of one parameter vector, for the optimizer's ``loss_fn``.

JAX is optional: importing this module works without it; calling these functions needs it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..jax_backend import JaxSimulator, require_jax

__all__ = ["fc_matrix", "fc_loss", "fcd_distribution", "soft_ks", "vector_loss", "ObjectiveLoss",
           "GRADIENT_STREAM_OFFSET", "LOSS_WEIGHTS"]


# ----------------------------------------------------------------------------------------------
# FC
# ----------------------------------------------------------------------------------------------
def fc_matrix(bold):
    """Pearson FC ``(..., N, N)`` of ``bold`` ``(..., T, N)`` on JAX arrays (as :func:`raybrain.features.fc`,
    without the constant-region NaN guard: a constant region gives NaN, i.e. a non-finite loss)."""
    import jax.numpy as jnp

    x = bold - jnp.mean(bold, axis=-2, keepdims=True)
    cov = jnp.swapaxes(x, -1, -2) @ x
    sd = jnp.sqrt(jnp.sum(x * x, axis=-2))
    return cov / (sd[..., :, None] * sd[..., None, :])


def fc_loss(bold, emp_fc, mean_weight: float = 1.0, corr_weight: float = 1.0, mse_weight: float = 0.0):
    """Differentiable FC cost of BOLD ``(R, T, N)`` or ``(T, N)`` against ``emp_fc`` ``(N, N)``,
    over upper triangles (k = 1) and averaged over the repeats r::

        corr_weight · (1 − r(FC_r, FC_emp)) + mean_weight · |mean FC_r − mean FC_emp|
            + mse_weight · mean((FC_r − FC_emp)²)

    The defaults are the FC terms of the ``pfic`` loss. Note: with finite runs ``1 − r`` keeps
    falling as coupling strengthens (a stronger SC imprint raises r even past the truth), so a
    parameter recovery needs the mean or squared-error term to pin ``G`` (see the tests).
    """
    import jax.numpy as jnp

    emp_fc = jnp.asarray(emp_fc)
    iu, ju = np.triu_indices(emp_fc.shape[-1], 1)
    f = fc_matrix(bold)
    u = f[..., iu, ju]
    v = emp_fc[iu, ju].astype(u.dtype)
    cost = jnp.zeros(u.shape[:-1], u.dtype)
    if corr_weight:
        uc = u - jnp.mean(u, axis=-1, keepdims=True)
        vc = v - jnp.mean(v)
        r = jnp.sum(uc * vc, axis=-1) / jnp.sqrt(jnp.sum(uc * uc, axis=-1) * jnp.sum(vc * vc))
        cost = cost + corr_weight * (1.0 - r)
    if mean_weight:
        cost = cost + mean_weight * jnp.abs(jnp.mean(u, axis=-1) - jnp.mean(v))
    if mse_weight:
        cost = cost + mse_weight * jnp.mean((u - v) ** 2, axis=-1)
    return jnp.mean(cost)


# ----------------------------------------------------------------------------------------------
# differentiable FCD and a smoothed KS distance
# ----------------------------------------------------------------------------------------------
def fcd_distribution(bold, window: int, step: int = 1):
    """Upper triangle (k = 1) of the FCD matrix of ``bold`` ``(..., T, N)`` on JAX arrays, *unsorted*:
    ``(..., W(W-1)/2)``. Windows of ``window`` TRs every ``step`` TRs (W = ⌊(T − window)/step⌋ + 1),
    Pearson FC per window, FCD[a, b] = r(upper FC_a, upper FC_b) — as :func:`raybrain.features.fcd`
    (Hansen et al. 2015), without its clipping to [−1, 1] (a no-op up to rounding)."""
    import jax.numpy as jnp

    T, N = bold.shape[-2], bold.shape[-1]
    if window < 2 or step < 1 or window > T:
        raise ValueError(f"FCD window {window} / step {step} do not fit {T} BOLD samples")
    starts = np.arange(0, T - window + 1, step)
    W = len(starts)
    if W < 2:
        raise ValueError(f"an FCD needs >= 2 windows; {T} samples, window {window}, step {step} give {W}")
    idx = starts[:, None] + np.arange(window)[None, :]            # (W, window)
    iu, ju = np.triu_indices(N, 1)
    win = bold[..., idx, :]                                        # (..., W, window, N)
    v = fc_matrix(win)[..., iu, ju]                                # (..., W, M)
    v = v - jnp.mean(v, axis=-1, keepdims=True)
    v = v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))
    fcd = v @ jnp.swapaxes(v, -1, -2)                              # (..., W, W)
    a, b = np.triu_indices(W, 1)
    return fcd[..., a, b]


def soft_ks(a, b, bandwidth: float = 0.05, points: int | None = None, kind: str = "ks"):
    r"""Differentiable stand-in for the two-sample KS statistic of sample sets ``a`` (..., Ma) and
    ``b`` (Mb,) (e.g. simulated and empirical FCD values), on JAX arrays.

    The empirical CDFs are smoothed with a logistic kernel of bandwidth ``h``::

        F_h(t; x) = (1/M) Σ_i σ((t − x_i) / h),   σ(z) = 1 / (1 + e^{−z})

    (the CDF of the sample convolved with a logistic density of scale ``h``; Nadaraya 1964), and

        kind="ks":  D_h = max_k |F_h(t_k; a) − F_h(t_k; b)|        (Kolmogorov–Smirnov)
        kind="cvm": D_h = mean_k (F_h(t_k; a) − F_h(t_k; b))²       (Cramér–von Mises-like)

    over evaluation points ``t_k``:

    * ``points=k`` (what :class:`ObjectiveLoss` uses, k = 256 by default): a fixed grid of ``k``
      points on [−1, 1]. ``D_h`` is then a genuine (almost-everywhere) differentiable function of
      the samples, memory O(k·M); as ``h → 0`` it tends to the KS statistic restricted to the grid,
      within the sample mass of one grid cell of the exact value.
    * ``points=None``: the midpoints between consecutive sorted pooled values. As ``h → 0`` each
      ``F_h(t_k)`` tends to the exact empirical CDF at the pooled value below ``t_k``, so ``D_h``
      tends to the exact KS statistic of :func:`raybrain.features.ks_distance` (the known-answer
      test). The points move with the samples; they are held constant for differentiation
      (``stop_gradient``), so the gradient is that of ``D_h`` at the current points. Memory O(M²).

    Unlike the exact KS statistic (piecewise constant in the samples: zero gradient almost
    everywhere) ``D_h`` has a nonzero gradient wherever samples lie within a few ``h`` of the
    maximising point.
    """
    import jax.numpy as jnp
    from jax import lax
    from jax.nn import sigmoid

    if not (bandwidth > 0):
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    if kind not in ("ks", "cvm"):
        raise ValueError(f"kind must be 'ks' or 'cvm', got {kind!r}")
    b = jnp.asarray(b, a.dtype)
    lead = a.shape[:-1]
    bb = jnp.broadcast_to(b, lead + b.shape[-1:])
    if points is None:
        pooled = jnp.sort(lax.stop_gradient(jnp.concatenate([a, bb], axis=-1)), axis=-1)
        t = 0.5 * (pooled[..., 1:] + pooled[..., :-1])                        # (..., K)
    else:
        t = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, int(points), dtype=a.dtype), lead + (int(points),))

    def cdf(x):
        return jnp.mean(sigmoid((t[..., :, None] - x[..., None, :]) / bandwidth), axis=-1)

    d = cdf(a) - cdf(bb)
    if kind == "ks":
        return jnp.max(jnp.abs(d), axis=-1)
    return jnp.mean(d * d, axis=-1)


# ----------------------------------------------------------------------------------------------
# the objective's loss, differentiable
# ----------------------------------------------------------------------------------------------
def vector_loss(simulator: JaxSimulator, names, emp_fc, fixed: Mapping[str, Any] | None = None, **weights):
    """A loss of one parameter *vector* ``theta`` (P,) — global parameters ``names`` in order, the
    contract of :mod:`raybrain.search` — for the ``gradient`` optimizer's ``loss_fn``:
    ``fc_loss(simulator.bold({names[i]: theta[i]} ∪ fixed), emp_fc, **weights)``."""
    names = list(names)
    fixed = dict(fixed or {})

    def f(theta):
        return simulator.loss({**fixed, **{n: theta[i] for i, n in enumerate(names)}}, emp_fc, **weights)

    return f


#: First noise stream of gradient evaluations (far from the candidates' streams 0, 1, 2, ...).
GRADIENT_STREAM_OFFSET = 1 << 40

#: FC/FCD term weights implied by each registered loss (``corr``: 1 − r, ``mean``: |Δ mean FC|,
#: ``fcd``: smoothed KS). ``pmfm`` correlates Fisher-z FCs; its stand-in correlates the plain FCs.
LOSS_WEIGHTS = {"pfic": dict(corr=1.0, mean=1.0, fcd=1.0), "pmfm": dict(corr=1.0, mean=0.0, fcd=1.0),
                "fc_corr": dict(corr=1.0, mean=0.0, fcd=0.0)}


class ObjectiveLoss:
    r"""A differentiable stand-in for an :class:`raybrain.objective.Objective`'s loss, as a function of
    one parameter vector ``theta`` (P,) in the order of ``objective.parametrisation.names``::

        L(θ, k) = (1/R) Σ_r [ w_c (1 − r(FC_r, FC_emp)) + w_m |mean FC_r − mean FC_emp|
                              + w_s mean((FC_r − FC_emp)²) + w_f D_h(FCD_r, FCD_emp) ]

    with BOLD from :class:`JaxSimulator` on the objective's model, scaled SC and settings (seed
    ``seed``; ``dtype``, ``duration``, ``dt`` may be overridden), the parameters mapped by the
    parametrisation's :meth:`~raybrain.parametrisation.Parametrisation.vector_params` on
    ``jax.numpy`` (global, regional and maps parametrisations), ``R = repeats`` fixed noise
    realisations on streams ``GRADIENT_STREAM_OFFSET + k·R + r`` (``k`` = ``noise_index``: a new
    fixed realisation per optimisation step, so that the steps follow a stochastic gradient of the
    *expected* loss; Griffiths 2022, TVB-Optim 2025), and ``D_h`` the smoothed KS distance of
    :func:`soft_ks` (bandwidth ``h``, on ``fcd_points`` grid points; None: the pooled midpoints)
    between the simulated and empirical FCD values. Weights left
    None follow the objective's loss (:data:`LOSS_WEIGHTS`; pfic: 1, 1, 0, 1). For pfic with
    ``h → 0``, ``fcd_points=None`` and a single repeat this is the pfic cost itself; the recorded, ranked losses stay
    those of the real objective.

    ValueError at construction names a parameter that cannot be differentiated (rWW with FIC on:
    the parameters of the FIC root solve), an FCD window that the run is too short for, or a loss
    without a stand-in (only the BOLD losses of :data:`LOSS_WEIGHTS`).
    """

    takes_noise_index = True

    def __init__(self, objective, *, seed: int = 0, repeats: int = 1, noise: str = "raybrain",
                 truncate: int | None = None, checkpoint: bool = True, grad_burn_in: bool = False,
                 corr_weight: float | None = None, mean_weight: float | None = None, mse_weight: float = 0.0,
                 fcd_weight: float | None = None, fcd_bandwidth: float = 0.05, fcd_points: int | None = 256,
                 dtype: str | None = "float64", duration: float | None = None, dt: float | None = None):
        require_jax()
        import jax

        if noise == "raybrain" or dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.objective = objective
        self.par = objective.parametrisation
        self.names = tuple(self.par.names)
        lname = getattr(objective.loss, "name", None)
        if lname not in LOSS_WEIGHTS or getattr(objective, "spectral_part", None) is not None \
                or getattr(objective, "target", None) is None:
            raise ValueError(f"gradient: no differentiable stand-in for the loss {lname or objective.loss!r} "
                             f"(supported: {', '.join(LOSS_WEIGHTS)})")
        w = dict(LOSS_WEIGHTS[lname])
        self.weights = dict(corr_weight=w["corr"] if corr_weight is None else float(corr_weight),
                            mean_weight=w["mean"] if mean_weight is None else float(mean_weight),
                            mse_weight=float(mse_weight))
        self.fcd_weight = w["fcd"] if fcd_weight is None else float(fcd_weight)
        self.fcd_bandwidth, self.fcd_points = float(fcd_bandwidth), fcd_points
        tgt = objective.target
        if self.fcd_weight and not tgt.has_fcd:
            self.fcd_weight = 0.0  # the objective's loss has no FCD term (e.g. fc_corr)
        s = objective.settings.replace(seed=int(seed))
        if dtype is not None:
            s = s.replace(dtype=dtype)
        if duration is not None:
            s = s.replace(duration=float(duration))
        if dt is not None:
            s = s.replace(dt=float(dt))
        self.sim = JaxSimulator(objective.model, objective.sc, s, repeats=int(repeats),
                                first_stream=GRADIENT_STREAM_OFFSET, noise=noise, checkpoint=checkpoint,
                                truncate=truncate, grad_burn_in=grad_burn_in)
        self.emp_fc = np.asarray(tgt.fc, np.float64)
        self.window, self.step = (tgt.window, tgt.step) if self.fcd_weight else (None, None)
        if self.fcd_weight and self.sim.n_samples < self.window + self.step:
            raise ValueError(f"gradient: the differentiable run gives {self.sim.n_samples} BOLD samples, too few "
                             f"for the FCD window {self.window} (step {self.step}); lengthen grad_duration or set "
                             f"fcd_weight: 0")
        # FCDs of equal length (as Objective does): the empirical FCD pooled over segments as long
        # as the differentiable run, or the run cut into segments as long as the shortest recording
        self.segment = None
        self.emp_fcd = None
        if self.fcd_weight:
            self.segment = min(self.sim.n_samples, objective.subject.min_frames or self.sim.n_samples)
            self.emp_fcd = np.asarray(objective.subject.fcd_distribution(self.window, self.step, self.segment),
                                      np.float64)
        # attach-time check that every parameter can be differentiated (FIC, unknown names)
        mid = self.par.bounds.mean(axis=1)
        try:
            self.sim.model_params(self.par.vector_params(mid, np))
        except ValueError as e:
            raise ValueError(f"gradient: cannot differentiate the parametrisation {list(self.names)} of model "
                             f"{self.sim.model.name!r}: {e}") from None

    def params(self, theta):
        """The parameter pytree of vector ``theta`` (P,) (JAX arrays)."""
        import jax.numpy as jnp

        return self.par.vector_params(jnp.asarray(theta), jnp)

    def components(self, theta, noise_index=0):
        """``{"fc": FC terms, "fcd": smoothed KS, "total": L}`` (JAX scalars)."""
        import jax.numpy as jnp

        bold = self.sim.bold(self.params(theta), noise_index)
        fc_part = fc_loss(bold, self.emp_fc, **self.weights)
        out = {"fc": fc_part, "fcd": jnp.zeros((), fc_part.dtype)}
        if self.fcd_weight:
            if bold.shape[-2] > self.segment:
                from ..features import segment_starts

                idx = segment_starts(bold.shape[-2], self.segment)[:, None] + np.arange(self.segment)[None, :]
                sim = fcd_distribution(bold[..., idx, :], self.window, self.step)  # (..., k, M_s)
                sim = sim.reshape(sim.shape[:-2] + (-1,))
            else:
                sim = fcd_distribution(bold, self.window, self.step)
            out["fcd"] = jnp.mean(soft_ks(sim, self.emp_fcd, self.fcd_bandwidth, self.fcd_points))
        out["total"] = out["fc"] + self.fcd_weight * out["fcd"]
        return out

    def __call__(self, theta, noise_index=0):
        return self.components(theta, noise_index)["total"]
