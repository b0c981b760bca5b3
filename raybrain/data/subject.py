"""``Subject``: one subject's (or a group's) structural and functional data.

A subject bundles the structural connectivity SC (N, N), optional fibre lengths (N, N), the
scan's repetition time TR (s), optional regional BOLD (T, N) and region labels. Its empirical
features are computed on demand and cached:

* ``fc()``: Pearson correlation of the regional BOLD series (``raybrain.features.fc``);
* ``fcd_distribution(window, step, segment)``: upper triangle (k = 1) of the FCD matrix of sliding-window
  FCs (Hansen et al. 2015; ``raybrain.features.fcd_distribution``).

A *group* subject (see ``raybrain.data.group_average``) has no BOLD of its own; it keeps its
``members`` and defines its empirical features from theirs: FC is the mean of the members' FCs
and the FCD distribution is the pooled (concatenated, sorted) members' distributions.

A subject may instead carry *precomputed targets* (``fc_target``, ``fcd_target``) when its BOLD
is not at hand (e.g. a published group FC, a CBIG FCD CDF): ``fc()`` and ``fcd_distribution()``
then return them.

All arrays are float64 copies marked read-only, so a Subject (and its cached features) can be
shared freely.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raybrain.data import validate

__all__ = ["Subject"]

_ARGS = "arguments"


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Subject:
    """One subject's data (or a group's, when ``members`` is non-empty).

    Parameters
    ----------
    name : str
        Identifier, e.g. ``"hcp/101309"``.
    sc : array (N, N)
        Structural connectivity (non-negative; directed SC is allowed).
    tr : float
        Repetition time of the (empirical or simulated) BOLD in seconds.
    bold : array (T, N) or None
        Regional BOLD, time first. None for SC-only subjects and groups.
    lengths : array (N, N) or None
        Fibre-tract lengths (mm).
    labels : tuple of str or None
        One label per region.
    source : str
        Where the data came from (file paths, dataset name); used in error messages.
    members : tuple of Subject
        For a group: the subjects it averages. Empty for a single subject.
    meeg : array (T, N) or None
        An M/EEG-like regional recording (e.g. a synthetic subject's simulated pyramidal membrane
        potentials), the target of spectral fits (:mod:`raybrain.spectral`). None by default.
    meeg_fs : float or None
        Its sampling rate in Hz (required with ``meeg``).
    centres : array (N, 3) or None
        Region centres (mm), e.g. from a TVB zip or an atlas table.
    notes : tuple of str
        One-line notes of what the loaders did to the data (triangle mirrored, frames dropped, ...).
    fc_target : array (N, N) or None
        A precomputed empirical FC (Pearson r; symmetric; the diagonal is set to 1) for a subject
        without BOLD. Not allowed together with ``bold`` or ``members``.
    fcd_target : array (M,) or None
        A precomputed empirical FCD sample (values in [-1, 1], stored sorted); needs ``fc_target``.
    """

    name: str
    sc: np.ndarray
    tr: float
    bold: np.ndarray | None = None
    lengths: np.ndarray | None = None
    labels: tuple[str, ...] | None = None
    source: str = _ARGS
    members: tuple["Subject", ...] = ()
    meeg: np.ndarray | None = None
    meeg_fs: float | None = None
    centres: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    fc_target: np.ndarray | None = None
    fcd_target: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def src(arg: str) -> str:
            return arg if self.source == _ARGS else self.source

        set_ = object.__setattr__
        set_(self, "name", str(self.name))
        sc = validate.check_sc(self.sc, source=src("sc"))
        n = sc.shape[0]
        set_(self, "sc", _readonly(sc))
        set_(self, "tr", validate.check_tr(self.tr, source=src("tr")))
        if self.lengths is not None:
            set_(self, "lengths", _readonly(validate.check_lengths(self.lengths, n, source=src("lengths"))))
        if self.bold is not None:
            set_(self, "bold", _readonly(validate.check_bold(self.bold, n, source=src("bold"))))
        set_(self, "labels", validate.check_labels(self.labels, n, source=src("labels")))
        if (self.meeg is None) != (self.meeg_fs is None):
            raise ValueError(f"{src('meeg')}: give meeg and meeg_fs together (the M/EEG signal and its sampling rate)")
        if self.meeg is not None:
            fs = self.meeg_fs
            if isinstance(fs, bool) or not (isinstance(fs, (int, float, np.number)) and np.isfinite(fs) and fs > 0):
                raise ValueError(f"{src('meeg_fs')}: the M/EEG sampling rate must be a positive number of Hz, got {fs!r}")
            set_(self, "meeg_fs", float(fs))
            set_(self, "meeg", _readonly(validate.check_bold(self.meeg, n, source=src("meeg"))))
        if self.centres is not None:
            set_(self, "centres", _readonly(validate.check_centres(self.centres, n, source=src("centres"))))
        notes = (self.notes,) if isinstance(self.notes, str) else tuple(self.notes)
        set_(self, "notes", tuple(" ".join(str(x).split()) for x in notes if str(x).strip()))
        if self.fc_target is not None or self.fcd_target is not None:
            given = "fc_target" if self.fc_target is not None else "fcd_target"
            if self.bold is not None or self.members:
                raise ValueError(f"{src(given)}: subject {self.name!r}: a precomputed {given} is for a subject "
                                 f"without BOLD; give BOLD or precomputed targets, not both")
            if self.fc_target is None:
                raise ValueError(f"{src('fcd_target')}: subject {self.name!r}: an FCD target needs an FC target "
                                 f"(fc_target) too; every FC loss scores the FC")
            set_(self, "fc_target", _readonly(validate.check_fc_target(self.fc_target, n, source=src("fc_target"))))
            if self.fcd_target is not None:
                set_(self, "fcd_target", _readonly(validate.check_fcd_target(self.fcd_target,
                                                                             source=src("fcd_target"))))
        members = tuple(self.members)
        set_(self, "members", members)
        if members:
            if self.bold is not None:
                raise ValueError(f"{src('bold')}: a group subject has no BOLD of its own (got bold and members)")
            for m in members:
                if not isinstance(m, Subject):
                    raise ValueError(f"{src('members')}: members must be Subject objects, got {type(m).__name__}")
                if m.n_regions != n:
                    raise ValueError(
                        f"{src('members')}: member {m.name!r} has {m.n_regions} regions, the group has {n}"
                    )
                if not np.isclose(m.tr, self.tr, rtol=1e-9, atol=0.0):
                    raise ValueError(
                        f"{src('members')}: member {m.name!r} has TR {m.tr:g} s, the group has TR {self.tr:g} s; "
                        f"average only subjects scanned with the same TR"
                    )

    # ------------------------------------------------------------------ shape
    @property
    def n_regions(self) -> int:
        """Number of regions N."""
        return int(self.sc.shape[0])

    @property
    def n_frames(self) -> int | None:
        """Number of BOLD frames T, or None without BOLD (SC-only subjects and groups)."""
        return None if self.bold is None else int(self.bold.shape[0])

    @property
    def is_group(self) -> bool:
        """True for a group average (its features come from ``members``)."""
        return bool(self.members)

    @property
    def has_functional(self) -> bool:
        """True when an empirical FC is available (own BOLD, a precomputed ``fc_target``, or a
        group whose members all have one). The FCD may still be missing: see ``fcd_distribution``."""
        if self.members:
            return all(m.has_functional for m in self.members)
        return self.bold is not None or self.fc_target is not None

    # --------------------------------------------------------------- features
    def _need_functional(self, what: str) -> None:
        if not self.has_functional:
            raise ValueError(
                f"{self.source if self.source != _ARGS else 'bold'}: subject {self.name!r} has no BOLD, "
                f"so its empirical {what} is undefined; load it with a BOLD file (or precomputed fc=/fcd= targets)"
            )

    def fc(self) -> np.ndarray:
        """Empirical FC (N, N), cached.

        Single subject: FC_ij = Pearson r(BOLD[:, i], BOLD[:, j]) (``raybrain.features.fc``).
        Group: the element-wise mean of the members' FC matrices. A subject with a precomputed
        ``fc_target`` and no BOLD: that target.
        """
        if self.fc_target is not None:
            return self.fc_target
        if "fc" not in self._cache:
            self._need_functional("FC")
            if self.members:
                out = np.mean(np.stack([m.fc() for m in self.members]), axis=0)
            else:
                from raybrain import features

                out = np.asarray(features.fc(self.bold), dtype=np.float64)
            self._cache["fc"] = _readonly(out)
        return self._cache["fc"]

    def fcd_distribution(self, window: int, step: int, segment: int | None = None) -> np.ndarray:
        """Empirical FCD distribution (1-D, sorted), cached per (window, step, segment).

        Single subject: the upper triangle (k = 1) of the FCD matrix of sliding windows of
        ``window`` frames every ``step`` frames (Hansen et al. 2015;
        ``raybrain.features.fcd_distribution``). ``segment`` (frames): the recording is cut into
        floor(T / segment) non-overlapping segments of that length and their distributions pooled
        (``raybrain.features.segmented_fcd_distribution``), so that a simulation of ``segment``
        frames is compared with an FCD of the same length; None (or a segment not shorter than
        the recording) uses the whole recording. Group: the members' distributions pooled
        (concatenated) and sorted, so a KS distance against it compares with the whole group.

        A subject with precomputed targets and no BOLD returns its ``fcd_target`` whatever the
        arguments: a precomputed FCD cannot be re-segmented or recomputed with another window, so
        it is compared as given (it should come from the same window and step, in TRs, as the
        fit). Without an ``fcd_target`` it is an error naming the subject.
        """
        if self.bold is None and not self.members and self.fc_target is not None:
            if self.fcd_target is None:
                raise ValueError(
                    f"{self.source if self.source != _ARGS else 'fcd'}: subject {self.name!r} has a precomputed FC "
                    f"target but no BOLD and no FCD target, so its empirical FCD is undefined; give fcd= (an FCD "
                    f"sample or a CBIG FCD CDF) or fit a loss that needs no FCD (e.g. 'fc_corr')"
                )
            return self.fcd_target
        seg = None if segment is None or (self.n_frames is not None and int(segment) >= self.n_frames) \
            else int(segment)
        key = ("fcd", window, step, seg)
        if key not in self._cache:
            self._need_functional("FCD")
            if self.members:
                parts = [m.fcd_distribution(window, step, seg) for m in self.members]
                out = np.sort(np.concatenate(parts))
            else:
                source = self.source if self.source != _ARGS else "bold"
                validate.check_fcd_window(self.n_frames, window, step, source=source)
                if seg is not None:
                    validate.check_fcd_window(seg, window, step, source=f"{source} (segments of {seg} frames)")
                from raybrain import features

                out = np.asarray(features.segmented_fcd_distribution(self.bold, int(window), int(step), seg),
                                 dtype=np.float64)
            self._cache[key] = _readonly(out)
        return self._cache[key]

    @property
    def min_frames(self) -> int | None:
        """The shortest recording's number of frames (a group: over its members); None without BOLD
        (SC-only subjects and subjects with precomputed targets, or a group with such a member)."""
        if self.members:
            n = [m.min_frames for m in self.members]
            return None if any(v is None for v in n) else min(n)
        return self.n_frames

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"n_regions={self.n_regions}"]
        if self.bold is not None:
            parts.append(f"n_frames={self.n_frames}")
        parts.append(f"tr={self.tr:g}")
        if self.members:
            parts.append(f"members={len(self.members)}")
        elif self.fc_target is not None:
            parts.append("fc_target" + (", fcd_target" if self.fcd_target is not None else ""))
        if self.meeg is not None:
            parts.append(f"meeg={self.meeg.shape[0]} samples at {self.meeg_fs:g} Hz")
        parts.append(f"source={self.source!r}")
        return f"Subject({', '.join(parts)})"
