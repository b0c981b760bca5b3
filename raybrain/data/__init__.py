"""Subject data: bundled real subjects, user-data loaders and validation.

>>> from raybrain.data import list_subjects, load_subject
>>> s = load_subject("hcp/101309")          # SC (80, 80), BOLD (1200, 80), TR 0.72 s
>>> s.fc().shape
(80, 80)
"""
from raybrain.data.bundled import describe, group_average, list_subjects, load_subject
from raybrain.data.io import (
    Connectivity,
    Connectome,
    fcd_cdf_to_sample,
    load_atlas,
    load_connectome,
    load_fcd_target,
    load_map,
    load_matrix,
    load_timeseries,
    load_tvb_connectivity,
    load_user_subject,
)
from raybrain.data.cohort import Cohort, CohortError, CohortSpec
from raybrain.data.cohort import resolve as resolve_cohort
from raybrain.data.subject import Subject

__all__ = [
    "Subject",
    "list_subjects",
    "load_subject",
    "group_average",
    "describe",
    "load_matrix",
    "load_tvb_connectivity",
    "load_user_subject",
    "Connectivity",
    "Connectome",
    "load_connectome",
    "load_timeseries",
    "load_atlas",
    "load_map",
    "load_fcd_target",
    "fcd_cdf_to_sample",
    "Cohort",
    "CohortSpec",
    "CohortError",
    "resolve_cohort",
]
