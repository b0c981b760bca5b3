"""The experiment config's schema: one pydantic section per YAML section, and
:class:`ExperimentConfig`, their whole, read by :func:`load_config`.

Each section checks its own keys at load (types strict, unknown keys refused with a suggestion,
files resolved against the config file's folder and required to exist, values in range); errors
carry their key path (:mod:`raybrain.experiment.errors`). What one section asks of another is
checked in :mod:`raybrain.experiment.checks`; what a validated config builds (runs, subjects,
objectives) is in :mod:`raybrain.experiment.builder`, and :class:`ExperimentConfig`'s methods
delegate there.
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError
from typing_extensions import Annotated

from .._text import did_you_mean as _did_you_mean
from . import builder, checks
from .builder import RunSpec
from .errors import ConfigError, _At, _format
from .names import DATASET_KEYS, GROUP, _bare_id, _bundled, _expand_ids, _registry, _resolve_bundled, known_optimizers

__all__ = [
    "ExperimentConfig", "SubjectPath", "SyntheticSubject", "CohortConfig", "SplitConfig", "SubjectsConfig",
    "ModelConfig", "ParametrisationConfig", "Fidelity", "SimulationConfig", "MEEGConfig", "OptimizerConfig",
    "HalvingConfig", "ValidationConfig", "ProfileConfig", "BudgetConfig", "ResourcesConfig", "load_config",
    "config_from_json", "PositiveFloat", "PositiveInt", "Bounds",
]


# ----------------------------------------------------------------------------------- base section, value types
class _Section(BaseModel):
    """Base of the config sections: strict types, unknown keys rejected with a suggestion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data):
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for k in data:
                if k not in known:
                    raise PydanticCustomError("unknown_key", "unknown key{hint}",
                                              {"key": k, "hint": _did_you_mean(k, sorted(known))})
        return data


def _positive(v: float) -> float:
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"must be a positive number, got {v!r}")
    return v


def _positive_int(v: int) -> int:
    if v < 1:
        raise ValueError(f"must be a positive integer, got {v!r}")
    return v


def _check_bounds(v: list[float]) -> list[float]:
    if len(v) != 2:
        raise ValueError(f"bounds must be a pair [low, high], got {v!r}")
    lo, hi = v
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"bounds must be finite, got {v!r}")
    if not lo < hi:
        raise ValueError(f"bounds reversed or empty: [{lo:g}, {hi:g}] (low must be below high)")
    return v


PositiveFloat = Annotated[float, AfterValidator(_positive)]
PositiveInt = Annotated[int, AfterValidator(_positive_int)]
Bounds = Annotated[list[float], AfterValidator(_check_bounds)]


# ----------------------------------------------------------------------------------- subjects
class SubjectPath(_Section):
    """A subject from user files (paths relative to the config file's folder; formats as
    :func:`raybrain.data.load_user_subject` reads them: matrices, XCP-D/fMRIPrep time-series TSVs
    with a header of region labels, MRtrix connectome CSVs, ``.mat`` with ``sc_key``/``bold_key``,
    TVB zips). ``bold`` may list several runs (combined by ``runs``); ``atlas`` is a dseg-style
    table of region labels and centres; ``fc``/``fcd`` are precomputed targets for a subject
    without BOLD (an FC matrix; an FCD sample or a CBIG pFIC FCD CDF)."""

    name: str
    sc: str
    bold: Optional[Union[str, list[str]]] = None
    tr: Optional[PositiveFloat] = None
    lengths: Optional[str] = None
    atlas: Optional[str] = None
    fc: Optional[str] = None
    fcd: Optional[str] = None
    sc_key: Optional[str] = None
    bold_key: Optional[str] = None
    lengths_key: Optional[str] = None
    na: Literal["error", "drop-frames", "drop-regions"] = "error"
    runs: Literal["pool", "concatenate", "first"] = "pool"

    @field_validator("sc", "bold", "lengths", "atlas", "fc", "fcd")
    @classmethod
    def _exists(cls, v, info: ValidationInfo):
        if v is None:
            return v
        many = isinstance(v, list)
        out = []
        for one in (v if many else [v]):
            p = _resolve_path(one, info)
            if not p.is_file():
                raise ValueError(f"file not found: {str(p)!r}")
            out.append(str(p))
        if many and not out:
            raise ValueError("give at least one BOLD file")
        return out if many else out[0]

    @model_validator(mode="after")
    def _functional(self):
        if self.bold is None and self.fc is None:
            raise _At("bold", "give the subject's BOLD (or a precomputed fc target)")
        if self.tr is None:
            raise _At("tr", "the repetition time (seconds) of the BOLD (or of the recording the fc/fcd targets "
                      "come from) is required")
        return self

    def load(self):
        """The :class:`raybrain.data.Subject` from these files."""
        from ..data import load_user_subject

        labels = centres = None
        if self.atlas is not None:
            from ..data.io import load_atlas

            labels, centres = load_atlas(self.atlas)
        return load_user_subject(self.sc, bold=self.bold, lengths=self.lengths, tr=self.tr, name=self.name,
                                 sc_key=self.sc_key, bold_key=self.bold_key, lengths_key=self.lengths_key,
                                 labels=labels, centres=centres, na=self.na, fc=self.fc, fcd=self.fcd,
                                 runs=self.runs)


def _resolve_path(v: str, info: ValidationInfo) -> Path:
    """``v`` as an absolute path (relative ones against the config file's folder), so that a
    trial running in another working directory finds it."""
    p = Path(os.path.expanduser(v))
    if not p.is_absolute():
        p = Path((info.context or {}).get("base_dir", ".")) / p
    return Path(os.path.abspath(p))


class CohortConfig(_Section):
    """A whole cohort from its files (:mod:`raybrain.data.cohort`): a participants table plus path
    patterns per subject, relative to ``root`` (default: the participants table's folder).

    Patterns are Python format strings over the participants row: ``{participant_id}``
    (``sub-001``), ``{sub}`` (``001``) and any other column (``{atlas}``, ``{site}``); glob
    wildcards are allowed, and several files matching ``bold`` are the subject's runs, combined by
    ``runs`` (``pool``: FC averaged, FCD distributions pooled; ``concatenate``: z-scored runs joined;
    ``first``). ``tr``: seconds, ``{column: name}``, or ``sidecar`` (``RepetitionTime`` of the BOLD's
    JSON sidecars, found by BIDS inheritance; the default with BOLD). ``subset`` is a pandas query on the table (``"age >= 18"``), ``include`` /
    ``exclude`` lists of ids. ``covariates`` (default: every other column) travel into
    ``covariates.tsv`` beside the results and into every loaded record and run row. Subjects whose
    files are missing or broken are listed together at validation; ``on_missing: skip`` drops
    them (listed in a warning) instead of refusing the experiment. ``na`` is the n/a policy of the
    time series (``error``, ``drop-frames``, ``drop-regions``). ``atlas`` (a pattern too, e.g.
    ``atlas-{atlas}_dseg.tsv``) is a dseg-style table of region names and centres (mm)."""

    participants: str
    root: Optional[str] = None
    id_column: str = "participant_id"
    sc: str
    bold: Optional[str] = None
    lengths: Optional[str] = None
    atlas: Optional[str] = None
    tr: Optional[Union[PositiveFloat, Literal["sidecar"], dict[str, str]]] = None
    sidecar: Optional[str] = None
    runs: Literal["pool", "concatenate", "first"] = "pool"
    subset: Optional[str] = None
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    covariates: Optional[list[str]] = None
    on_missing: Literal["error", "skip"] = "error"
    na: Literal["error", "drop-frames", "drop-regions"] = "error"
    sc_key: Optional[str] = None
    bold_key: Optional[str] = None

    @field_validator("participants")
    @classmethod
    def _table(cls, v, info: ValidationInfo):
        p = _resolve_path(v, info)
        if not p.is_file():
            raise ValueError(f"participants table not found: {str(p)!r}")
        return str(p)

    @field_validator("root")
    @classmethod
    def _dirs(cls, v, info: ValidationInfo):
        return None if v is None else str(_resolve_path(v, info))

    @field_validator("tr")
    @classmethod
    def _tr(cls, v):
        if isinstance(v, dict) and set(v) != {"column"}:
            raise ValueError(f"tr: give seconds, 'sidecar' or {{column: <name>}}, got {v!r}")
        return v

    def spec(self):
        """The :class:`raybrain.data.cohort.CohortSpec` this section declares."""
        from ..data.cohort import CohortSpec

        root = self.root or str(Path(self.participants).parent)
        return CohortSpec(participants=self.participants, base_dir=root, id_column=self.id_column, sc=self.sc,
                          bold=self.bold, lengths=self.lengths, tr=dict(self.tr) if isinstance(self.tr, dict)
                          else self.tr, sidecar=self.sidecar, runs=self.runs, subset=self.subset,
                          include=tuple(self.include) or None, exclude=tuple(self.exclude) or None,
                          covariates=None if self.covariates is None else tuple(self.covariates),
                          on_missing=self.on_missing, na=self.na, sc_key=self.sc_key, bold_key=self.bold_key,
                          atlas=self.atlas)


class SyntheticSubject(_Section):
    """A subject simulated from a connectome with known parameters (``params``: values of the
    parametrisation's parameters; missing ones take the middle of their bounds): a bundled
    subject's (``from_subject``) or any connectome file (``from_file``: a matrix, an MRtrix CSV, a
    TVB zip; :func:`raybrain.data.io.load_connectome`), simulated at ``tr`` (default: the bundled
    subject's, else 0.72 s).

    ``duration``/``dt`` default to the last fidelity's; ``burn_in``, ``dtype`` and the SC
    normalisation follow ``simulation``. Noise: ``seed``, stream 0 (keep it apart from the search
    seeds unless the exact noise realisation is meant to be reproducible).
    """

    name: str
    from_subject: Optional[str] = None
    from_file: Optional[str] = None
    tr: Optional[PositiveFloat] = None
    params: dict[str, float] = Field(default_factory=dict)
    duration: Optional[PositiveFloat] = None
    dt: Optional[PositiveFloat] = None
    seed: int = 1_000_003

    @field_validator("from_subject")
    @classmethod
    def _bundled_source(cls, v):
        return None if v is None else _resolve_bundled(v)

    @field_validator("from_file")
    @classmethod
    def _file_source(cls, v, info: ValidationInfo):
        if v is None:
            return v
        p = _resolve_path(v, info)
        if not p.is_file():
            raise ValueError(f"file not found: {str(p)!r}")
        return str(p)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.from_subject is None) == (self.from_file is None):
            raise _At("from_subject", "give exactly one of from_subject (a bundled subject) and from_file "
                      "(a connectome file)")
        return self

    @property
    def source_tr(self) -> float:
        """The TR its BOLD is sampled at."""
        if self.tr is not None:
            return float(self.tr)
        if self.from_subject is not None:
            return float(_bundled()[self.from_subject]["tr"])
        from ..data.io import DEFAULT_TR_WITHOUT_BOLD

        return DEFAULT_TR_WITHOUT_BOLD

    def connectome(self):
        """The source :class:`raybrain.data.Subject` (SC, lengths, labels, centres; no BOLD)."""
        from ..data import load_subject, load_user_subject

        if self.from_subject is not None:
            return load_subject(self.from_subject)
        return load_user_subject(self.from_file, tr=self.source_tr)


class SplitConfig(_Section):
    """Subjects for training (fitted), validation (best candidates re-simulated) and test."""

    train: list[str]
    validation: list[str] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)

    @field_validator("train")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("the training set must hold at least one subject")
        return v


class SubjectsConfig(_Section):
    ids: list[str] = Field(default_factory=list)
    paths: list[SubjectPath] = Field(default_factory=list)
    synthetic: list[SyntheticSubject] = Field(default_factory=list)
    cohort: Optional[CohortConfig] = None
    group: bool = False
    split: Optional[SplitConfig] = None

    _cohort: Any = PrivateAttr(default=None)  # the resolved raybrain.data.cohort.Cohort

    @field_validator("ids")
    @classmethod
    def _ids(cls, v):
        for i, name in enumerate(v):
            if name not in DATASET_KEYS:
                try:
                    _resolve_bundled(name)
                except ValueError as e:
                    raise _At(f"[{i}]", str(e)) from None
        return v

    @model_validator(mode="after")
    def _names(self):
        if not (self.ids or self.paths or self.synthetic or self.cohort):
            raise _At("", "no subjects: give at least one of ids, paths, synthetic, cohort")
        seen: dict[str, str] = {}
        for n in _expand_ids(self.ids):
            seen[n] = "ids"
        if self.cohort is not None:
            from ..data.cohort import resolve

            try:
                self._cohort = resolve(self.cohort.spec())
            except ValueError as e:
                raise _At("cohort", str(e)) from None
            for n in self._cohort.names:
                if n in seen:
                    raise _At("cohort", f"subject name {n!r} is already used by {seen[n]}")
                seen[n] = "cohort"
        for kind in ("paths", "synthetic"):
            for i, s in enumerate(getattr(self, kind)):
                if s.name in seen or s.name == GROUP or s.name.startswith(GROUP + "/"):
                    raise _At(f"{kind}[{i}].name", f"subject name {s.name!r} is already used"
                              + (f" by {seen[s.name]}" if s.name in seen else " (reserved for group targets)"))
                seen[s.name] = kind
        if self.split is not None:
            names = list(seen)
            used: dict[str, str] = {}
            for part in ("train", "validation", "test"):
                for i, n in enumerate(getattr(self.split, part)):
                    full = n if n in seen else _bare_id(n, names)
                    if full is None:
                        raise _At(f"split.{part}[{i}]",
                                  f"{n!r} is not one of the experiment's subjects{_did_you_mean(n, names)}")
                    if full in used:
                        raise _At(f"split.{part}[{i}]", f"subject {full!r} is already in split.{used[full]}")
                    used[full] = part
        return self

    def names(self) -> list[str]:
        """Every subject's name, in config order (bundled, paths, synthetic)."""
        return (_expand_ids(self.ids) + [s.name for s in self.paths] + [s.name for s in self.synthetic]
                + self.cohort_names())

    def cohort_names(self) -> list[str]:
        """The cohort's subjects (participant ids, broken ones skipped under ``on_missing: skip``)."""
        return [] if self._cohort is None else list(self._cohort.names)

    @property
    def resolved_cohort(self):
        """The resolved :class:`raybrain.data.cohort.Cohort`, or None without ``cohort``."""
        return self._cohort

    def part(self, part: str | None) -> list[str]:
        """Subject names of a split part (``"train"``, ``"validation"``, ``"test"``); all
        subjects for ``None`` (or ``"train"`` without a split)."""
        if part is None or (self.split is None and part == "train"):
            return self.names()
        if part not in ("train", "validation", "test"):
            raise ValueError(f"part must be 'train', 'validation' or 'test', got {part!r}")
        if self.split is None:
            return []
        names = self.names()
        return [n if n in names else _bare_id(n, names) for n in getattr(self.split, part)]


# ----------------------------------------------------------------------------------- model etc.
class ModelConfig(_Section):
    name: str = "rww"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _build(self):
        from ..models import MODELS

        if self.name not in MODELS:
            raise _At("name", f"unknown model {self.name!r}{_did_you_mean(self.name, MODELS)}")
        cls = MODELS[self.name]
        sig = inspect.signature(cls.__init__)
        allowed = [p for p in sig.parameters if p != "self"]
        for k in self.options:
            if k not in allowed:
                raise _At(f"options.{k}", f"unknown option for model {self.name!r}"
                          + (_did_you_mean(k, allowed) if allowed else " (it takes none)"))
        try:
            cls(**self.options)
        except (TypeError, ValueError) as e:
            raise _At("options", str(e)) from None
        return self

    def build(self):
        from ..models import get_model

        return get_model(self.name, **self.options)


class ParametrisationConfig(_Section):
    """``global``: ``names`` (default G, sigma); ``maps``: ``regional`` (default w_EE, w_EI, sigma)
    as c0 + c1·m1 + c2·m2 plus ``globals`` (default G), the pFIC 10-parameter form; ``regional``:
    one value per region of ``parameter`` (default w_EE) plus ``globals``. ``bounds`` override the
    defaults per parameter name (for ``regional``, the bare parameter name sets every region);
    ``bounds: {G: auto}`` searches G from its default low bound to 95 % of the lowest upper edge,
    over the experiment's subjects, of the range where FIC's fixed point is linearly stable
    (:func:`raybrain.landscape.stable_g_range`; resolved once, before the runs, and saved resolved).
    ``maps``: the two maps of kind ``maps`` from files (one per map, or one holding both;
    CSV/TSV/NPY with or without region labels, :func:`raybrain.data.io.load_map`) instead of
    pFIC's SC strength and FC gradient."""

    kind: Literal["global", "maps", "regional"] = "global"
    names: Optional[list[str]] = None
    regional: Optional[list[str]] = None
    parameter: Optional[str] = None
    globals: Optional[list[str]] = None
    bounds: dict[str, Union[Bounds, Literal["auto"]]] = Field(default_factory=dict)
    maps: Optional[list[str]] = None

    @field_validator("bounds")
    @classmethod
    def _auto(cls, v):
        for k, b in v.items():
            if b == "auto" and k != "G":
                raise _At(k, "'auto' bounds are defined for G only (the range where the FIC fixed point "
                          "is stable, raybrain.landscape)")
        return v

    @field_validator("maps")
    @classmethod
    def _map_files(cls, v, info: ValidationInfo):
        if v is None:
            return v
        if len(v) not in (1, 2):
            raise ValueError(f"give the two maps as two files, or one file holding both (2, N), got {len(v)} files")
        out = []
        for one in v:
            p = _resolve_path(one, info)
            if not p.is_file():
                raise ValueError(f"file not found: {str(p)!r}")
            out.append(str(p))
        return out

    @property
    def auto(self) -> tuple[str, ...]:
        """The parameters whose bounds are ``auto`` (resolved by :meth:`ExperimentConfig.resolved`)."""
        return tuple(k for k, b in self.bounds.items() if b == "auto")

    def load_maps(self, subject) -> np.ndarray:
        """The (2, N) maps of ``maps`` for ``subject`` (reordered to its region labels when the
        files carry labels; :func:`raybrain.data.io.load_map`)."""
        from ..data.io import load_map

        got = [np.atleast_2d(load_map(f, subject.n_regions, labels=subject.labels)) for f in self.maps]
        m = np.concatenate(got, axis=0)
        if m.shape[0] != 2:
            raise ValueError(f"{', '.join(self.maps)}: the maps parametrisation needs exactly two maps, "
                             f"the files hold {m.shape[0]}")
        return m

    @model_validator(mode="after")
    def _fields_for_kind(self):
        only = {"names": "global", "regional": "maps", "parameter": "regional"}
        only = dict(only, maps="maps")
        for key, kind in only.items():
            if getattr(self, key) is not None and self.kind != kind:
                raise _At(key, f"only applies to kind {kind!r} (this is kind {self.kind!r})")
        if self.globals is not None and self.kind == "global":
            raise _At("globals", "does not apply to kind 'global' (list every parameter in names)")
        for key in ("names", "regional", "globals"):
            v = getattr(self, key)
            if v is not None:
                if key != "globals" and not v:
                    raise _At(key, "must name at least one parameter")
                dup = [x for x in v if v.count(x) > 1]
                if dup:
                    raise _At(key, f"parameter {dup[0]!r} is listed twice")
        return self

    def build(self, model, subject=None, maps_subject=None, n_regions: int | None = None):
        """The :class:`raybrain.parametrisation.Parametrisation` (maps from ``maps_subject``;
        :func:`raybrain.experiment.builder.parametrisation`)."""
        return builder.parametrisation(self, model, subject=subject, maps_subject=maps_subject, n_regions=n_regions)


class Fidelity(_Section):
    duration: PositiveFloat
    dt: PositiveFloat


class MEEGConfig(_Section):
    """The M/EEG-like signal of a spectral fit (``loss: spectral`` or a composite with it): the
    model output sampled every ``1/fs`` s with no hemodynamics, its Welch spectrum on segments of
    ``segment`` s (resolution ``1/segment`` Hz), the log-PSD distance taken over ``band`` Hz.
    ``duration`` (composite losses only): simulated M/EEG seconds, so the BOLD (the fidelities'
    durations) can be long and the M/EEG short. See :class:`raybrain.spectral.MEEGSettings`."""

    fs: PositiveFloat = 250.0
    segment: PositiveFloat = 1.0
    band: list[float] = Field(default_factory=lambda: [2.0, 100.0])
    duration: Optional[PositiveFloat] = None

    @model_validator(mode="after")
    def _valid(self):
        if len(self.band) != 2 or not (math.isfinite(self.band[0]) and math.isfinite(self.band[1])
                                       and 0 <= self.band[0] < self.band[1]):
            raise _At("band", f"must be [low, high] Hz with 0 <= low < high, got {self.band!r}")
        try:
            self.build()
        except ValueError as e:
            msg = str(e).removeprefix("meeg ")
            key = next((k for k in ("fs", "segment", "band", "duration") if msg.startswith(k)), "")
            raise _At(key, msg) from None
        return self

    def build(self):
        """The :class:`raybrain.spectral.MEEGSettings`."""
        from ..spectral import MEEGSettings

        return MEEGSettings(fs=float(self.fs), segment=float(self.segment), band=tuple(self.band),
                            duration=None if self.duration is None else float(self.duration))


class SimulationConfig(_Section):
    """Fidelities ascend in cost (duration not shorter, dt not larger, not both equal);
    ``validation`` is the fidelity of validation/test re-simulation (default: the last one).
    ``meeg``: the M/EEG sampling of spectral fits (:class:`MEEGConfig`). ``fused``: whether the
    fused kernels run (``auto``: for every model that declares a scalar drift; ``never``: the array
    reference path)."""

    fidelities: list[Fidelity]
    validation: Optional[Fidelity] = None
    burn_in: float = 60.0
    repeats: PositiveInt = 1
    noise: Literal["common", "independent"] = "independent"
    dtype: Literal["float32", "float64"] = "float32"
    backend: Literal["numpy", "cupy", "auto"] = "numpy"
    fused: Literal["auto", "always", "never"] = "auto"  # the fused kernels (auto: for every declared model)
    window: int = 83
    step: PositiveInt = 1
    sc_norm: Optional[Literal["max", "spectral", "strength", "none"]] = None
    sc_scale: Optional[PositiveFloat] = None
    sc_max: Optional[PositiveFloat] = None
    meeg: Optional[MEEGConfig] = None

    @model_validator(mode="after")
    def _checks(self):
        if not self.fidelities:
            raise _At("fidelities", "give at least one fidelity {duration, dt}")
        for i in range(1, len(self.fidelities)):
            a, b = self.fidelities[i - 1], self.fidelities[i]
            if b.duration < a.duration or b.dt > a.dt or (b.duration == a.duration and b.dt == a.dt):
                raise _At(f"fidelities[{i}]", f"fidelities must ascend: [{i}] (duration {b.duration:g} s, "
                          f"dt {b.dt:g} s) must be longer and/or finer than [{i - 1}] "
                          f"(duration {a.duration:g} s, dt {a.dt:g} s)")
        if not (math.isfinite(self.burn_in) and self.burn_in >= 0):
            raise _At("burn_in", f"must be >= 0 seconds, got {self.burn_in!r}")
        if self.window < 2:
            raise _At("window", f"FCD window must be >= 2 frames, got {self.window}")
        if self.sc_max is not None:
            if self.sc_norm not in (None, "max"):
                raise _At("sc_max", f"sets the largest weight (sc_norm: max), but sc_norm is {self.sc_norm!r}; "
                          "use sc_scale for the value of another norm")
            if self.sc_scale is not None:
                raise _At("sc_max", "give sc_max (the largest weight) or sc_norm + sc_scale, not both")
        if self.sc_norm == "none" and self.sc_scale is not None:
            raise _At("sc_scale", "sc_norm 'none' keeps the SC as given and takes no sc_scale")
        return self

    @property
    def sc_scaling(self) -> tuple[str, float | None]:
        """``(norm, value)`` the connectome is rescaled with (:func:`raybrain.connectome.normalise`):
        ``sc_norm`` (default ``spectral``; ``max`` when ``sc_max`` is given) and ``sc_scale``
        (default: the norm's, :data:`raybrain.connectome.DEFAULT_VALUES`); ``sc_max: x`` is the
        largest weight ``x``."""
        from ..connectome import DEFAULT_VALUES

        if self.sc_max is not None:
            return "max", float(self.sc_max)
        norm = self.sc_norm or "spectral"
        value = self.sc_scale if self.sc_scale is not None else DEFAULT_VALUES[norm]
        return norm, (None if value is None else float(value))

    def normalise(self, sc):
        """The connectome as the simulations see it (:func:`raybrain.connectome.normalise`)."""
        from ..connectome import normalise

        return normalise(sc, *self.sc_scaling)

    def fidelity(self, index: int | str) -> Fidelity:
        if index == "validation":
            return self.validation or self.fidelities[-1]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not (
                -len(self.fidelities) <= index < len(self.fidelities)):
            raise ValueError(f"fidelity index must be an integer in [0, {len(self.fidelities)}) or "
                             f"'validation', got {index!r}")
        return self.fidelities[int(index)]

    def settings(self, fidelity: Fidelity, tr: float, seed: int = 0, backend: str | None = None):
        """:class:`raybrain.integrate.SimulationSettings` for one fidelity at a subject's TR."""
        from ..integrate import SimulationSettings

        return SimulationSettings(duration=float(fidelity.duration), dt=float(fidelity.dt),
                                  burn_in=float(self.burn_in), tr=float(tr), noise=self.noise, seed=int(seed),
                                  dtype=self.dtype, backend=backend or self.resolved_backend(), fused=self.fused)

    def resolved_backend(self) -> str:
        """``backend``, with ``auto`` → ``cupy`` when CuPy and a GPU are usable in this process, else
        numpy: for a process that simulates alone. On a cluster the driver resolves ``auto`` once,
        from the cluster's GPUs (:func:`raybrain.evaluator.plan`), and trials receive it resolved."""
        if self.backend != "auto":
            return self.backend
        from .. import _backend

        try:
            cp = _backend._cupy()
            return "cupy" if cp is not None and cp.cuda.runtime.getDeviceCount() > 0 else "numpy"
        except Exception:  # noqa: BLE001 - no usable CUDA runtime
            return "numpy"


class HalvingConfig(_Section):
    """Successive halving inside a population run: the best ``ceil(P / eta**k)`` reach rung k."""

    eta: float = 2.0

    @field_validator("eta")
    @classmethod
    def _eta(cls, v):
        if not (math.isfinite(v) and v > 1):
            raise ValueError(f"eta must be > 1 (the factor the candidates shrink by per rung), got {v!r}")
        return v


class OptimizerConfig(_Section):
    """One optimizer entry: ``name`` is a key of ``raybrain.search.OPTIMIZERS`` or a family of
    one's own, ``package.module:Class`` (:mod:`raybrain.search.custom`; resolved by import here);
    ``population`` is the generation size (population mode) or the number of concurrent trials
    (trial mode). ``settings`` are checked by name for the mode (the family's
    :meth:`~raybrain.search.Optimizer.check_settings`)."""

    name: str
    label: Optional[str] = None
    mode: Literal["population", "trial"] = "population"
    population: PositiveInt = 16
    settings: dict[str, Any] = Field(default_factory=dict)
    scheduler: Literal["fifo", "asha", "hyperband", "median"] = "fifo"
    successive_halving: Optional[HalvingConfig] = None  # true → {eta: 2}; false → None

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        if ":" in v and _registry() is not None:  # a family of one's own: resolve it now, on the driver
            from ..search import family

            family(v)
            return v
        names = known_optimizers()
        if v not in names:
            raise ValueError(f"unknown optimizer {v!r}{_did_you_mean(v, names)}")
        return v

    @field_validator("successive_halving", mode="before")
    @classmethod
    def _halving(cls, v):
        if v is True:
            return {}
        if v is False or v is None:
            return None
        if not isinstance(v, dict):
            raise ValueError(f"must be true, false or a mapping like {{eta: 3}}, got {v!r}")
        return v

    @field_validator("settings")
    @classmethod
    def _train_path(cls, v):
        # a results path (surrogate-cmaes ``train``) is relative to the working directory, as
        # ``storage`` is; resolved here, at the edge, because Tune runs trials in other directories
        t = v.get("train")
        if isinstance(t, (str, os.PathLike)):
            v = {**v, "train": str(Path(t).expanduser().resolve())}
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", v):
            raise ValueError(f"label {v!r} may hold only letters, digits and . _ -")
        return v

    @model_validator(mode="after")
    def _mode(self):
        if self.mode == "population" and self.scheduler != "fifo":
            raise _At("scheduler", f"scheduler {self.scheduler!r} applies to mode 'trial'; in population "
                      "mode use successive_halving: true")
        if self.mode == "trial" and self.successive_halving is not None:
            raise _At("successive_halving", "applies to mode 'population'; in trial mode use "
                      "scheduler: asha (or hyperband, median)")
        try:  # the family checks setting names for the mode (values are checked when it is built)
            from ..search import SettingError, validate_settings
        except ImportError:
            return self
        try:
            validate_settings(self.name, self.settings, self.mode)
        except SettingError as e:
            raise _At(e.key, e.message) from None
        return self

    @property
    def key(self) -> str:
        """The label (default: the name)."""
        return self.label or self.name

    @property
    def halving_eta(self) -> float | None:
        """η of successive halving, or None when it is off."""
        return self.successive_halving.eta if self.successive_halving is not None else None


class ProfileConfig(_Section):
    """A profile of the validated loss around each run's validated winner, per fitted parameter:
    the parameter moved ``points`` steps each side, in steps of ``span / points`` of its search
    range (so out to ± ``span`` of the range; clipped to the bounds), the others held at the fit,
    each re-simulated with ``validation.repeats`` fresh noise repeats on the validation targets
    (:func:`raybrain.report.noise.identifiability` reads it). Cost per run and validation target:
    ``(2·points·P + 1)·repeats`` simulations (P fitted parameters; the 1 is the winner again, on
    the profile's own noise). ``points: 0`` turns it off; a parametrisation with more than
    ``max_params`` parameters (default 12) is not profiled.

    Default ``points: 2, span: 0.1``: two points each side is the fewest that tells a rise from one
    noisy point, and 10 % of the range is wide enough for an identified parameter's loss to climb
    out of the noise band on FC/FCD fits (whose basins span a sizeable part of the usual ranges),
    while narrow enough to stay in the fit's basin. For the global G, σ fit with 3 repeats that is
    27 simulations per run, about twice the validation stage's own 15 (``top`` 5 × 3)."""

    points: int = 2
    span: PositiveFloat = 0.1
    #: a parametrisation with more fitted parameters than this is not profiled (a regional fit's
    #: hundreds of parameters would cost hundreds of times the validation stage)
    max_params: PositiveInt = 12

    @field_validator("points")
    @classmethod
    def _points(cls, v):
        if v < 0:
            raise ValueError(f"must be >= 0 (0 turns the profile off), got {v}")
        return v

    @field_validator("span")
    @classmethod
    def _span(cls, v):
        if not (math.isfinite(v) and 0 < v <= 1):
            raise ValueError(f"must be a fraction of the search range in (0, 1], got {v!r}")
        return v


class ValidationConfig(_Section):
    """The held-out phases: ``top`` best distinct training candidates of each run re-simulated on
    the validation targets (0: none), ``repeats`` fresh-noise realisations each (default 3,
    independent of ``simulation.repeats``: the search may use one repeat to be cheap, but a
    validated loss needs at least 2 to carry a standard error, ``loss_se``, and 3 to make that
    error worth reading); ``profile``: the identifiability profile around the winner
    (:class:`ProfileConfig`)."""

    top: int = 5
    repeats: PositiveInt = 3
    profile: ProfileConfig = Field(default_factory=ProfileConfig)

    @field_validator("top")
    @classmethod
    def _top(cls, v):
        if v < 0:
            raise ValueError(f"must be >= 0 (0 skips validation and test), got {v}")
        return v


class BudgetConfig(_Section):
    evaluations: PositiveInt
    wall_s: Optional[PositiveFloat] = None


class ResourcesConfig(_Section):
    """Per trial: ``cpu``, ``gpu`` (a fraction shares a GPU). ``evaluator``: ``on`` sends the
    simulations of population runs and of the held-out stage to one coalescing evaluator per node
    (per GPU) that batches the candidates of every concurrent trial into one launch
    (:mod:`raybrain.evaluator`); the trials then hold no GPU. ``auto`` (default): on when the
    experiment simulates on the cluster's GPUs, as the driver decides once for every trial
    (:func:`raybrain.evaluator.plan`)."""

    cpu: PositiveFloat = 1.0
    gpu: float = 0.0
    evaluator: Literal["auto", "on", "off"] = "auto"

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"must be >= 0 (a fraction of a GPU or a whole number), got {v!r}")
        return v


# ----------------------------------------------------------------------------------- experiment
class ExperimentConfig(_Section):
    """A whole experiment (see :mod:`raybrain.experiment` and ``experiments/*.yaml``): its fields
    and their checks here, the checks between sections in :mod:`~raybrain.experiment.checks`, what
    it builds in :mod:`~raybrain.experiment.builder` (its methods delegate there)."""

    name: str
    storage: str = "results"
    subjects: SubjectsConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    parametrisation: ParametrisationConfig = Field(default_factory=ParametrisationConfig)
    loss: Union[str, dict[str, float]] = "pfic"
    simulation: SimulationConfig
    optimizers: list[OptimizerConfig]
    budget: BudgetConfig
    seeds: Union[list[int], int] = Field(default_factory=lambda: [0])
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    _cache: dict = PrivateAttr(default_factory=dict)  # built subjects and truths, never pickled

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["__pydantic_private__"] = {"_cache": {}}
        return state

    # -- field checks ------------------------------------------------------------------------
    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", v):
            raise ValueError(f"experiment name {v!r} may hold only letters, digits and . _ - "
                             "(it names the results folder)")
        return v

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, v):
        from ..losses import LOSSES

        if isinstance(v, str):
            if v not in LOSSES:
                raise ValueError(f"unknown loss {v!r}{_did_you_mean(v, LOSSES)}")
            return v
        if not isinstance(v, dict):
            raise ValueError(f"must be a loss name ({', '.join(LOSSES)}) or a mapping of loss names to weights "
                             f"like {{spectral: 1.0, fc_corr: 0.5}}, got {v!r}")
        if not v:
            raise ValueError("a composite loss needs at least one entry {name: weight}, e.g. {spectral: 1.0, fc_corr: 0.5}")
        for k, w in v.items():
            if not isinstance(k, str) or k not in LOSSES:
                raise _At(str(k), f"unknown loss {k!r}{_did_you_mean(str(k), LOSSES)}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
                raise _At(k, f"weight must be a finite number >= 0, got {w!r}")
        if not any(w > 0 for w in v.values()):
            raise ValueError(f"at least one weight must be > 0, got {v!r}")
        return {k: float(w) for k, w in v.items()}

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"a number of seeds must be >= 1, got {v}")
            return list(range(v))
        if not v:
            raise ValueError("give at least one seed")
        for s in v:
            if s < 0:
                raise ValueError(f"seeds must be >= 0, got {s}")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, v):
        if not v:
            raise ValueError("give at least one optimizer")
        seen: dict[str, int] = {}
        for i, o in enumerate(v):
            if o.key in seen:
                raise _At(f"[{i}].label", f"label {o.key!r} is used by optimizers[{seen[o.key]}] too; "
                          "give each entry a distinct label")
            seen[o.key] = i
        return v

    # -- loss ----------------------------------------------------------------------------------
    @property
    def loss_weights(self) -> dict[str, float]:
        """``{loss name: weight}`` (a single loss has weight 1)."""
        return dict(self.loss) if isinstance(self.loss, dict) else {self.loss: 1.0}

    @property
    def spectral(self) -> bool:
        """Whether the loss fits an M/EEG spectrum (``spectral``, alone or in a composite)."""
        return "spectral" in self.loss_weights

    @property
    def fits_fc(self) -> bool:
        """Whether the loss has a BOLD (FC/FCD) part."""
        return any(k != "spectral" for k in self.loss_weights)

    @property
    def needs_fcd(self) -> bool:
        """Whether a part of the loss needs the FCD (FCD windows must fit the BOLD)."""
        from ..losses import LOSSES

        return any(LOSSES[k].needs_fcd for k in self.loss_weights if k != "spectral")

    # -- checks between sections (raybrain.experiment.checks) ---------------------------------
    @model_validator(mode="after")
    def _cross(self):
        checks.cross_sections(self)
        return self

    def _check_spectral(self, model, trs) -> None:
        checks.spectral_fit(self, model, trs)

    def check_subjects(self) -> list[tuple[str, str]]:
        """Every problem of every subject that is not bundled, found before any simulation:
        ``[(subject, problem)]`` (:func:`raybrain.experiment.checks.check_subjects`)."""
        return checks.check_subjects(self)

    def _check_synthetic(self, s: SyntheticSubject) -> None:
        checks.check_synthetic(self, s)

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def model_validate(cls, obj, *, context: dict | None = None, **kw) -> "ExperimentConfig":
        """Validate a dict; a :class:`ConfigError` (a ValueError) lists every problem by key path.
        ``context={"base_dir": ...}`` resolves relative subject file paths."""
        if not isinstance(obj, dict):
            raise ConfigError([("", f"an experiment config must be a mapping of keys, got {type(obj).__name__}")])
        try:
            return super().model_validate(obj, context=context, **kw)
        except ValidationError as e:
            raise ConfigError(_format(e)) from None

    # -- expansion ---------------------------------------------------------------------------
    @property
    def experiment_dir(self) -> Path:
        """``storage/name``: where this experiment's results go."""
        return Path(self.storage) / self.name

    @property
    def use_evaluator(self) -> bool:
        """Whether simulations go through the coalescing evaluator: ``resources.evaluator`` ``on``
        or ``off``, as the driver's :func:`raybrain.evaluator.plan` stamps it into the config every
        trial receives. ``auto`` is the driver's to resolve, with the whole cluster in view: asked
        of an unresolved ``auto``, this raises rather than guess from what this process imports."""
        mode = self.resources.evaluator
        if mode == "auto":
            raise ValueError("resources.evaluator 'auto' is resolved by the driver (raybrain.evaluator.plan, "
                             "stamped into what each trial receives); this config was not planned")
        return mode == "on"

    # -- building (raybrain.experiment.builder) ------------------------------------------------
    def targets(self) -> list[str]:
        """The fitted targets: the training subjects, or the one group target."""
        return builder.targets(self)

    def holdout_targets(self, part: str, subject: str) -> list[str]:
        """The targets a run fitted on ``subject`` is re-simulated on in phase ``part``
        (``"validation"`` or ``"test"``; :func:`raybrain.experiment.builder.holdout_targets`)."""
        return builder.holdout_targets(self, part, subject)

    def optimizer_settings(self, opt: OptimizerConfig, dim: int) -> dict[str, Any]:
        """``opt.settings`` completed from the experiment by the family
        (:func:`raybrain.experiment.builder.optimizer_settings`)."""
        return builder.optimizer_settings(self, opt, dim)

    def truths(self) -> dict[str, dict[str, float]]:
        """Known parameters of the synthetic training targets: ``{subject: {name: value}}``."""
        return builder.truths(self)

    def runs(self) -> list[RunSpec]:
        """Targets × optimizers × seeds, in that nesting order."""
        return builder.runs(self)

    def build_model(self):
        return self.model.build()

    def build_subject(self, name: str):
        """The :class:`raybrain.data.Subject` named ``name`` (bundled, user file, synthetic, or a
        group target), cached on the config (:func:`raybrain.experiment.builder.build_subject`)."""
        return builder.build_subject(self, name)

    def _make_subject(self, name: str):
        return builder._make_subject(self, name)

    def _simulate_synthetic(self, i: int, s: SyntheticSubject):
        return builder.simulate_synthetic(self, i, s)

    def true_params(self, name: str) -> dict[str, float] | None:
        """The known parameters of a synthetic subject (every parametrisation name), else None."""
        return builder.true_params(self, name)

    def _source_subject(self, name: str):
        return builder.source_subject(self, name)

    def build_parametrisation(self, subject):
        """The parametrisation for ``subject`` (a Subject or a name)."""
        return builder.build_parametrisation(self, subject)

    def build_objective(self, subject_name: str, fidelity_index: int | str = -1):
        """The :class:`raybrain.objective.Objective` of one target at one fidelity (an index into
        ``simulation.fidelities`` or ``"validation"``; :func:`raybrain.experiment.builder.build_objective`).
        Pass ``repeats=simulation.repeats`` and the run seed to its ``evaluate``."""
        return builder.build_objective(self, subject_name, fidelity_index)

    def _subject_trs(self) -> dict[str, float]:
        return builder.subject_trs(self)

    def _n_regions(self) -> int | None:
        return builder.n_regions(self)

    def _synthetic_fidelity(self, s: SyntheticSubject) -> Fidelity:
        return builder.synthetic_fidelity(self, s)

    def covariates(self):
        """The cohort's covariates, a DataFrame with a ``subject`` column then one column per
        covariate (None without a cohort)."""
        return builder.covariates(self)

    def stable_g_ranges(self):
        """Per subject, the G range where FIC's fixed point is linearly stable: a DataFrame with
        ``subject``, ``n_regions``, ``G_low``, ``G_high``
        (:func:`raybrain.experiment.builder.stable_g_ranges`)."""
        return builder.stable_g_ranges(self)

    def _stable_g(self, name: str) -> tuple[int, float, float]:
        return builder.stable_g(self, name)

    def auto_bounds(self, margin: float = 0.95) -> dict[str, tuple[float, float]]:
        """The resolved ``auto`` bounds (:func:`raybrain.experiment.builder.auto_bounds`)."""
        return builder.auto_bounds(self, margin)

    def excluding(self, names) -> ExperimentConfig:
        """This config with the cohort subjects ``names`` excluded (``on_missing: skip``)."""
        return builder.excluding(self, names)

    def resolved(self) -> ExperimentConfig:
        """This config with its ``auto`` bounds replaced by numbers (itself when there are none):
        what the runs receive and what ``experiment.json`` records."""
        return builder.resolved(self)


@functools.lru_cache(maxsize=8)
def config_from_json(text: str) -> ExperimentConfig:
    """The config a trial (or an evaluator) receives as JSON text (``experiment.json``'s form),
    validated once per process and text."""
    return ExperimentConfig.model_validate_json(text)


def load_config(path) -> ExperimentConfig:
    """Read and validate an experiment YAML file; a :class:`ConfigError` names the file, each
    offending key path and the problem."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ConfigError([("", "file not found")], source=str(p))
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ConfigError([("", "not a text (UTF-8) YAML file")], source=str(p)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e)
        raise ConfigError([("", f"not valid YAML{where}: {what}")], source=str(p)) from None
    if not isinstance(data, dict):
        raise ConfigError([("", f"an experiment config must be a mapping of keys, got {type(data).__name__}")],
                          source=str(p))
    try:
        return ExperimentConfig.model_validate(data, context={"base_dir": str(p.parent)})
    except ConfigError as e:
        raise ConfigError(e.errors, source=str(p)) from None
