"""Losses on FC / FCD: simulated BOLD against an empirical :class:`raybrain.losses.base.Target`.

Costs (r is Pearson's correlation over upper triangles, k = 1):

- ``"pfic"`` (:class:`PFICLoss`; Zhang et al. 2024 pFIC; also DELSSOME):
  ``(1 - r(FC_sim, FC_emp)) + |mean(FC_sim) - mean(FC_emp)| + KS(FCD_sim, FCD_emp)``
- ``"pmfm"`` (:class:`PMFMLoss`; Kong et al. 2021 pMFM):
  ``(1 - r(arctanh FC_sim, arctanh FC_emp)) + KS(FCD_sim, FCD_emp)``
- ``"fc_corr"`` (:class:`FCCorrLoss`): ``1 - r(FC_sim, FC_emp)`` alone (no FCD).

Batch handling, invalid candidates and the memory-bounded slicing over candidates (the FCD is the
dominant cost) are the base class's (:class:`raybrain.losses.base.Loss`).
"""
from __future__ import annotations

from raybrain._backend import array_module
from raybrain import features as F

from .base import Loss

__all__ = ["PFICLoss", "PMFMLoss", "FCCorrLoss"]


class PFICLoss(Loss):
    """pFIC cost (Zhang et al. 2024; DELSSOME)::

        cost = (1 - r(FC_sim, FC_emp)) + |mean(FC_sim) - mean(FC_emp)| + KS(FCD_sim, FCD_emp)

    r and the means over FC upper triangles (k = 1); KS exact two-sample statistic between the
    FCD distributions. Components: ``fc_corr`` (r), ``fc_corr_cost`` (1 - r), ``fc_mean_diff``,
    ``fcd_ks``. Invalid candidates get ``worst`` = 10 (the CBIG code uses 10 or 5).
    """

    name = "pfic"
    components = ("fc_corr", "fc_corr_cost", "fc_mean_diff", "fcd_ks")
    component_worst = {"fc_corr": -1.0, "fc_corr_cost": 2.0, "fc_mean_diff": 2.0, "fcd_ks": 1.0}
    worst = 10.0
    needs_fcd = True

    def _components(self, sim_fc, sim_fcd, emp_fc, emp_fcd):
        xp = array_module(sim_fc)
        r = F.corr_upper(sim_fc, emp_fc)
        return {
            "fc_corr": r,
            "fc_corr_cost": 1.0 - r,
            "fc_mean_diff": xp.abs(F.mean_fc(sim_fc) - F.mean_fc(emp_fc)),
            "fcd_ks": F.ks_distance(sim_fcd, emp_fcd),
        }

    def _total(self, c):
        return c["fc_corr_cost"] + c["fc_mean_diff"] + c["fcd_ks"]


def _fisher_z(fc_mat):
    """arctanh of FC with |FC| clipped below 1 (1 - 1e-7 in float64, 1 - 1e-6 in float32)."""
    xp = array_module(fc_mat)
    lim = 1.0 - (1e-7 if fc_mat.dtype == xp.float64 else 1e-6)
    return xp.arctanh(xp.clip(fc_mat, -lim, lim))


class PMFMLoss(Loss):
    """pMFM cost (Kong et al. 2021)::

        cost = (1 - r(arctanh FC_sim, arctanh FC_emp)) + KS(FCD_sim, FCD_emp)

    FC entries are clipped to |FC| <= 1 - 1e-7 before the Fisher transform. Components:
    ``fc_corr`` (r of the Fisher-z FCs), ``fc_corr_cost`` (1 - r), ``fcd_ks``. Worst = 10.
    """

    name = "pmfm"
    components = ("fc_corr", "fc_corr_cost", "fcd_ks")
    component_worst = {"fc_corr": -1.0, "fc_corr_cost": 2.0, "fcd_ks": 1.0}
    worst = 10.0
    needs_fcd = True

    def _components(self, sim_fc, sim_fcd, emp_fc, emp_fcd):
        r = F.corr_upper(_fisher_z(sim_fc), _fisher_z(emp_fc))
        return {"fc_corr": r, "fc_corr_cost": 1.0 - r, "fcd_ks": F.ks_distance(sim_fcd, emp_fcd)}

    def _total(self, c):
        return c["fc_corr_cost"] + c["fcd_ks"]


class FCCorrLoss(Loss):
    """Static-FC cost: ``1 - r(FC_sim, FC_emp)`` over upper triangles (k = 1); no FCD needed.

    Components: ``fc_corr`` (r), ``fc_corr_cost`` (1 - r). Worst = 2 (the largest possible 1 - r).
    """

    name = "fc_corr"
    components = ("fc_corr", "fc_corr_cost")
    component_worst = {"fc_corr": -1.0, "fc_corr_cost": 2.0}
    worst = 2.0
    needs_fcd = False

    def _components(self, sim_fc, sim_fcd, emp_fc, emp_fcd):
        r = F.corr_upper(sim_fc, emp_fc)
        return {"fc_corr": r, "fc_corr_cost": 1.0 - r}

    def _total(self, c):
        return c["fc_corr_cost"]
