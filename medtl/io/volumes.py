"""Located slices → volumes: how one DICOM series or multi-frame object splits into 3D volumes.

fMRI runs, diffusion series and multi-echo acquisitions keep several volumes in one series: every
slice position occurs once per volume. This module decides which slices form which volume, in one
place shared by file series and mosaics (:mod:`medtl.io.dicom`), enhanced multi-frame objects (frames
are slices) and ``medtl scan`` (headers only, no pixels).

Rules:

1. Slices are grouped by position along the slice normal. Every position must hold the same number
   of slices, m; m = 1 is an ordinary 3D volume.
2. The volumes are told apart by the first attribute of :data:`LABEL_KEYS` that is present on every
   slice and takes exactly m values, each once per position (TemporalPositionIdentifier,
   AcquisitionNumber, TriggerTime, diffusion b-value and direction, EchoTime ...). Failing that,
   the repeats of each position are ranked by InstanceNumber (files) or frame number (frames).
3. Volumes are ordered by that attribute (diffusion volumes, which have no natural order, keep
   acquisition order). Each volume is stacked on its own by :func:`~medtl.io.geometry.stack_slices`,
   so its geometry is exactly what a 3D load of its slices alone gives.

>>> import numpy as np
>>> slices = [LocatedSlice((i, 0), np.array([0.0, 0.0, 2.0 * (i % 3)]), {"AcquisitionNumber": 1 + i // 3})
...           for i in range(6)]
>>> vs = split_volumes(slices, [1, 0, 0, 0, 1, 0])
>>> vs.n, vs.slices_per_volume, vs.axis, vs.key
(2, 3, 'time', 'AcquisitionNumber')
>>> [v.members for v in vs.volumes]
[[0, 1, 2], [3, 4, 5]]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Callable

import numpy as np

from ..errors import SeriesError
from .geometry import SAME_POSITION_MM, SliceStack, slice_normal, stack_slices

__all__ = [
    "LABEL_KEYS", "RANK_KEYS", "LocatedSlice", "Volume", "VolumeSet", "split_volumes", "slice_keys", "frame_keys",
    "private_element",
]  # fmt: skip

#: Attributes that can label the volumes of a series, tried in this order, with the axis they stand for.
LABEL_KEYS: tuple[tuple[str, str], ...] = (
    ("TemporalPositionIdentifier", "time"),
    ("TemporalPositionIndex", "time"),
    ("AcquisitionNumber", "time"),
    ("FrameAcquisitionNumber", "time"),
    ("TriggerTime", "time"),
    ("NominalCardiacTriggerDelayTime", "time"),
    ("diffusion", "diffusion"),  # (b-value, gradient direction or ())
    ("EchoTime", "echo"),
    ("EffectiveEchoTime", "echo"),
    ("EchoNumbers", "echo"),
    ("DimensionIndexValues", "volume"),  # the non-spatial indices of an enhanced object
)
#: Unique per slice: they only rank the repeats of each position, in acquisition order.
RANK_KEYS: tuple[str, ...] = ("InstanceNumber", "frame")
_ECHO_KEYS = ("EchoTime", "EffectiveEchoTime", "EchoNumbers")
# Volume attributes worth reporting per axis (names of LocatedSlice.attrs).
_AXIS_ATTRS = {"diffusion": ("b_value", "gradient"), "echo": ("echo_time_ms",), "time": ("trigger_time_ms",)}
_MAX_ERROR_ITEMS = 6


@dataclass
class LocatedSlice:
    """One 2D slice: where its pixels come from, where it lies, and what may tell its volume apart.

    Attributes:
        source: opaque to this module: (file index, frame or tile index) for the loaders.
        position: ImagePositionPatient of the slice (LPS mm).
        keys: candidate volume labels by name (:data:`LABEL_KEYS`, :data:`RANK_KEYS`); rounded
            numbers or tuples, ``None`` when absent.
        attrs: per-volume attributes to report: ``b_value``, ``gradient`` (LPS unit vector),
            ``echo_time_ms``, ``trigger_time_ms``, ``repetition_time_ms``.
    """

    source: tuple
    position: np.ndarray
    keys: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@dataclass
class Volume:
    """One 3D volume: ``members`` index the slice list in position order; ``stack`` is their geometry.

    ``origin`` is the position (LPS mm) of its first slice in that order: with ``stack.step`` and
    the pixel spacing it gives the volume's affine.
    """

    members: list[int]
    stack: SliceStack
    origin: np.ndarray
    attrs: dict = field(default_factory=dict)


@dataclass
class VolumeSet:
    """The volumes of a series, in order, and what tells them apart (``axis``, ``key``)."""

    volumes: list[Volume]
    slices: list[LocatedSlice] = field(default_factory=list)
    axis: str | None = None  # "time", "diffusion", "echo" or "volume"; None for a single volume
    key: str | None = None  # the attribute that told the volumes apart
    where: str = "series"

    def sources(self, k: int) -> list[tuple]:
        """The ``source`` of each slice of volume ``k``, in position order."""
        return [self.slices[i].source for i in self.volumes[k].members]

    @property
    def n(self) -> int:
        """Number of volumes."""
        return len(self.volumes)

    @property
    def slices_per_volume(self) -> int:
        """Number of slices in each volume."""
        return len(self.volumes[0].members)

    def describe(self) -> str:
        """E.g. ``"7 volumes of 2 slice(s) along 'diffusion' (told apart by InstanceNumber)"``."""
        return (
            f"{self.n} volumes of {self.slices_per_volume} slice(s) along '{self.axis}' "
            f"(told apart by {self.key})"
        )

    def meta(self) -> dict:
        """What :class:`~medtl.io.image.Image.meta` reports of a 4D series (empty for one volume).

        ``n_volumes``, ``slices_per_volume``, ``volume_axis``, ``volume_key``; for diffusion
        ``b_values`` and ``gradients`` (unit vectors in RAS+ patient coordinates, ``None`` where
        the file gives none) with ``gradient_frame``; for echoes ``echo_times_ms``; for time
        ``repetition_time_s`` (and ``trigger_times_ms`` when the volumes are cardiac phases).
        """
        if self.n == 1:
            return {}
        out = {
            "n_volumes": self.n, "slices_per_volume": self.slices_per_volume,
            "volume_axis": self.axis, "volume_key": self.key,
        }  # fmt: skip
        per = {name: [v.attrs.get(name) for v in self.volumes] for name in _AXIS_ATTRS.get(self.axis, ())}
        if self.axis == "diffusion":
            out["b_values"] = per["b_value"]
            out["gradients"] = [None if g is None else [-g[0], -g[1], g[2]] for g in per["gradient"]]
            out["gradient_frame"] = "RAS+ patient"
        elif self.axis == "echo":
            out["echo_times_ms"] = per["echo_time_ms"]
        elif self.axis == "time":
            if any(t is not None for t in per["trigger_time_ms"]):
                out["trigger_times_ms"] = per["trigger_time_ms"]
        trs = {v.attrs.get("repetition_time_ms") for v in self.volumes}
        if len(trs) == 1 and None not in trs:
            out["repetition_time_s"] = round(trs.pop() / 1000.0, 6)
        return out

    def select(self, volume: int | str | None) -> list[int]:
        """Indices of the volumes that ``volume`` asks for (``None``, an index, or ``"all"``).

        A single volume ignores ``volume`` (as a 3D NIfTI does). Raises :class:`SeriesError` for
        several volumes without ``volume``, an index out of range, or ``"all"`` over volumes that
        do not lie at the same positions.
        """
        if self.n == 1:
            return [0]
        if volume is None:
            raise SeriesError(
                self.where,
                f"4D series: {self.describe()}; pick one with volume=<index> (0 to {self.n - 1}; CLI: --volume N), "
                "or all of them with volume='all' (CLI: --volume all; volume axis first)",
            )
        if isinstance(volume, str) and volume != "all":
            try:
                volume = int(volume)
            except ValueError:
                raise SeriesError(self.where, f"volume must be an index or 'all', not {volume!r}") from None
        if volume == "all":
            self._check_same_grid()
            return list(range(self.n))
        if not 0 <= int(volume) < self.n:
            raise SeriesError(self.where, f"volume {volume} out of range: the series holds {self.n} volumes")
        return [int(volume)]

    def _check_same_grid(self) -> None:
        first = self.volumes[0]
        for k, vol in enumerate(self.volumes[1:], start=1):
            shift = float(max(np.abs(vol.origin - first.origin).max(), np.abs(vol.stack.step - first.stack.step).max()))
            if shift > SAME_POSITION_MM:
                raise SeriesError(
                    self.where,
                    f"volume {k} does not lie on the grid of volume 0 (its slices are {shift:.3g} mm away); "
                    "load the volumes one at a time with volume=<index> (CLI: --volume N)",
                )


def split_volumes(slices: list[LocatedSlice], iop, where: str = "series") -> VolumeSet:
    """Group located slices into volumes (see the module docstring for the rules).

    Args:
        slices: every slice of the series or object, in any order.
        iop: the shared ImageOrientationPatient.
        where: names the series in errors.

    Raises:
        SeriesError: positions repeat an unequal number of times, or the volumes differ in more
        than one way (echoes of repeated volumes), naming what is inconsistent.
    """
    positions = np.array([np.asarray(s.position, dtype=np.float64) for s in slices])
    groups = _position_groups(positions @ slice_normal(iop))
    counts = Counter(len(g) for g in groups)
    if len(counts) > 1:
        raise SeriesError(where, _unequal_message(slices, groups, counts))
    repeats = len(groups[0])
    if repeats == 1:
        stack = _stack(positions, iop, where)
        members = [int(i) for i in stack.order]
        volume = Volume(members, stack, positions[members[0]], _common_attrs(slices, members))
        return VolumeSet([volume], slices, where=where)
    key, labelled = _label_split(slices, groups, repeats)
    if labelled is None:
        key, labelled = _rank_split(slices, groups, repeats, where)
    volumes = []
    for members in labelled:
        stack = _stack(positions[members], iop, where)
        ordered = [members[int(i)] for i in stack.order]
        volumes.append(Volume(ordered, stack, positions[ordered[0]], _common_attrs(slices, ordered)))
    _check_one_dimension(slices, volumes, where)
    return VolumeSet(volumes, slices, axis=_axis_of(key, volumes), key=key, where=where)


def _stack(positions: np.ndarray, iop, where: str) -> SliceStack:
    """:func:`stack_slices`, or for a single slice a unit step along the normal (the caller sets its thickness)."""
    if len(positions) == 1:
        return SliceStack(order=np.array([0]), step=slice_normal(iop), spacing=1.0)
    return stack_slices(positions, iop, where=where)


def _position_groups(along: np.ndarray) -> list[list[int]]:
    """Slice indices grouped by position along the normal (within :data:`SAME_POSITION_MM`)."""
    order = np.argsort(along, kind="stable")
    groups: list[list[int]] = [[int(order[0])]]
    for prev, cur in pairwise(order):
        if along[cur] - along[prev] < SAME_POSITION_MM:
            groups[-1].append(int(cur))
        else:
            groups.append([int(cur)])
    return groups


def _label_split(slices, groups, repeats) -> tuple[str | None, list[list[int]] | None]:
    """The first label key that takes ``repeats`` values, each once per position."""
    for key, _axis in LABEL_KEYS:
        values = [s.keys.get(key) for s in slices]
        if any(v is None for v in values) or len(set(values)) != repeats:
            continue
        if any(len({values[i] for i in g}) != repeats for g in groups):
            continue
        by_value: dict = {}
        for i, v in enumerate(values):
            by_value.setdefault(v, []).append(i)
        if key == "diffusion":  # b-values and directions have no order: keep the acquisition's
            labels = sorted(by_value, key=lambda v: min(_rank_of(slices[i]) for i in by_value[v]))
        else:
            labels = sorted(by_value)
        return key, [by_value[v] for v in labels]
    return None, None


def _rank_of(s: LocatedSlice) -> tuple:
    return tuple((s.keys.get(k) is None, s.keys.get(k) or 0) for k in RANK_KEYS)


def _rank_split(slices, groups, repeats, where) -> tuple[str, list[list[int]]]:
    """The r-th slice of every position (by InstanceNumber or frame number) goes to volume r."""
    for key in RANK_KEYS:
        values = [s.keys.get(key) for s in slices]
        if any(v is None for v in values) or any(len({values[i] for i in g}) != repeats for g in groups):
            continue
        ranked = [sorted(g, key=lambda i: values[i]) for g in groups]
        return key, [[g[r] for g in ranked] for r in range(repeats)]
    raise SeriesError(
        where,
        f"every position holds {repeats} slices, but nothing tells their volumes apart (no temporal position, "
        "acquisition number, trigger time, diffusion, echo or distinct InstanceNumber); duplicated files?",
    )


def _common_attrs(slices, members) -> dict:
    """Attributes shared by every slice of a volume (those that differ are left out)."""
    out = {}
    for name in {n for i in members for n in slices[i].attrs}:
        values = {_hashable(slices[i].attrs.get(name)) for i in members}
        if len(values) == 1:
            value = slices[members[0]].attrs.get(name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _check_one_dimension(slices, volumes, where) -> None:
    """Refuse echoes of repeated volumes (say multi-echo fMRI): medtl's 4D has one varying axis."""
    for key in _ECHO_KEYS:
        per_volume = [{slices[i].keys.get(key) for i in v.members} for v in volumes]
        if any(len(p) != 1 or None in p for p in per_volume):
            continue
        distinct = {next(iter(p)) for p in per_volume}
        if 1 < len(distinct) < len(volumes):
            raise SeriesError(
                where,
                f"{len(volumes)} volumes vary along more than one axis: {key} takes {len(distinct)} values "
                f"({_listing(sorted(distinct))}) besides another varying attribute; medtl loads series whose "
                "volumes differ in one way only (split the echoes into separate series)",
            )


def _axis_of(key: str | None, volumes: list[Volume]) -> str:
    """What the volumes differ in: diffusion weighting, echo time, time, or just 'volume'."""

    def varies(name: str) -> bool:
        values = [_hashable(v.attrs.get(name)) for v in volumes]
        return None not in values and len(set(values)) > 1

    axis_of_key = dict(LABEL_KEYS).get(key, "volume")
    if axis_of_key == "diffusion" or varies("b_value") or varies("gradient"):
        return "diffusion"
    if axis_of_key == "echo" or varies("echo_time_ms"):
        return "echo"
    if axis_of_key == "time" or varies("trigger_time_ms"):
        return "time"
    return "volume"


def _unequal_message(slices, groups, counts: Counter) -> str:
    shared = sum(len(g) for g in groups) - len(groups)
    hist = ", ".join(f"{n} position(s) × {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    text = (
        f"{shared} slice(s) share a position with another, but positions repeat unequally ({hist}): "
        "a 4D series must hold every position once per volume"
    )
    for key, _axis in LABEL_KEYS:
        values = [s.keys.get(key) for s in slices]
        if None in values or len(set(values)) < 2:
            continue
        per = Counter(values)
        text += f"; by {key}: " + _listing([f"{v} → {n} slices" for v, n in sorted(per.items())])
        break
    return text + " (a volume with missing or extra slices, or two series mixed under one SeriesInstanceUID)"


def _listing(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_ERROR_ITEMS])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_ERROR_ITEMS else "")


# ----------------------------------------------------------------------------- what DICOM says of a slice's volume
#: DimensionIndexPointer values that index positions, not volumes: ImagePositionPatient, StackID,
#: InStackPositionNumber.
SPATIAL_DIMENSIONS = frozenset({0x00200032, 0x00209056, 0x00209057})
# GE's private b-value (0043,xx39) carries a bias of 1e9 on multi-b-value and synthetic DWI (GE's BIAS_FOR_BVALUE)
_GE_B_BIAS = 1_000_000_000


def _first(value):
    if value is None or isinstance(value, (str, bytes)):
        return value
    try:
        return value[0] if len(value) else None
    except TypeError:  # a plain number
        return value


def _number(value) -> float | None:
    """First number of a DICOM value (IS, DS, FD; multi-valued or not); None when absent or unreadable."""
    if isinstance(value, bytes):  # an implicit-VR private element pydicom could not type
        value = value.decode("ascii", "replace").strip("\x00 ").split("\\")
    value = _first(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _rounded(value, digits: int) -> float | None:
    number = _number(value)
    return None if number is None else round(number, digits)


def _integer(value) -> int | None:
    number = _number(value)
    return None if number is None else int(round(number))


def _unit(values) -> tuple[float, float, float] | None:
    """A direction as a unit vector (6 decimals); None when absent or zero (b = 0, isotropic trace)."""
    try:
        vec = np.array([float(v) for v in list(values)[:3]], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    norm = float(np.linalg.norm(vec)) if vec.size == 3 else 0.0
    return tuple(round(float(v), 6) for v in vec / norm) if norm > 1e-6 else None


def private_element(ds, group: int, creator: str, offset: int):
    """Element ``offset`` (0x00-0xFF) of ``creator``'s private block in ``group``, or None.

    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.add_new((0x0043, 0x0010), "LO", "GEMS_PARM_01")
    >>> ds.add_new((0x0043, 0x1039), "IS", [1000, 8, 0, 0])
    >>> [int(v) for v in private_element(ds, 0x0043, "GEMS_PARM_01", 0x39).value]
    [1000, 8, 0, 0]
    """
    for block in range(0x10, 0x100):
        tag = (group, block)
        if tag in ds and str(ds[tag].value).strip() == creator:
            return ds.get((group, (block << 8) | offset))
    return None


def _ge_b_value(ds) -> float | None:
    """GE's private b-value (0043,xx39 of GEMS_PARM_01, first value), only for GE files, bias removed."""
    if not str(ds.get("Manufacturer") or "").upper().startswith("GE"):
        return None
    element = private_element(ds, 0x0043, "GEMS_PARM_01", 0x39)
    b = None if element is None else _number(element.value)
    if b is not None and b >= _GE_B_BIAS:
        b -= _GE_B_BIAS
    return b if b is not None and 0 <= b < 1e6 else None


def _diffusion(ds, csa: dict | None) -> tuple[float | None, tuple | None]:
    """(b-value s/mm², gradient unit vector LPS) of a classic image; standard attributes first."""
    seq = ds.get("MRDiffusionSequence")
    item = seq[0] if seq else None
    b = _number(ds.get("DiffusionBValue"))
    if b is None and item is not None:
        b = _number(item.get("DiffusionBValue"))
    if b is None:
        b = _ge_b_value(ds)
    if b is None and csa:
        b = _number(csa.get("B_value"))
    gradient = _unit(ds.get("DiffusionGradientOrientation") or [])
    if gradient is None and item is not None and item.get("DiffusionGradientDirectionSequence"):
        gradient = _unit(item.DiffusionGradientDirectionSequence[0].get("DiffusionGradientOrientation") or [])
    if gradient is None and csa:
        gradient = _unit(csa.get("DiffusionGradientDirection") or [])
    return b, gradient


def _diffusion_key(b: float | None, gradient: tuple | None):
    if b is None:
        return None
    return (round(b, 1), () if gradient is None else tuple(round(v, 4) for v in gradient))


def slice_keys(ds, csa: dict | None = None) -> tuple[dict, dict]:
    """Volume labels and per-volume attributes of one classic (single-frame) image.

    Args:
        ds: the dataset (a header-only read is enough).
        csa: the parsed Siemens CSA image header, when there is one (b-value and gradient fallback).

    Returns:
        ``(keys, attrs)`` for :class:`LocatedSlice`.

    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.AcquisitionNumber = "3"; ds.EchoTime = "30"; ds.RepetitionTime = "2000"
    >>> keys, attrs = slice_keys(ds)
    >>> keys["AcquisitionNumber"], keys["EchoTime"], attrs["repetition_time_ms"]
    (3, 30.0, 2000.0)
    """
    b, gradient = _diffusion(ds, csa)
    keys = {
        "TemporalPositionIdentifier": _integer(ds.get("TemporalPositionIdentifier")),
        "AcquisitionNumber": _integer(ds.get("AcquisitionNumber")),
        "TriggerTime": _rounded(ds.get("TriggerTime"), 3),
        "diffusion": _diffusion_key(b, gradient),
        "EchoTime": _rounded(ds.get("EchoTime"), 3),
        "EchoNumbers": _integer(ds.get("EchoNumbers")),
        "InstanceNumber": _integer(ds.get("InstanceNumber")),
    }
    attrs = {
        "b_value": b, "gradient": gradient, "echo_time_ms": keys["EchoTime"],
        "trigger_time_ms": keys["TriggerTime"], "repetition_time_ms": _rounded(ds.get("RepetitionTime"), 3),
    }  # fmt: skip
    return keys, {k: v for k, v in attrs.items() if v is not None}


def frame_keys(ds, frame: int, group: Callable[[int, str], object]) -> tuple[dict, dict]:
    """Volume labels and per-volume attributes of frame ``frame`` of an enhanced multi-frame object.

    ``group(frame, "MREchoSequence")`` returns the frame's functional group item (per-frame, else
    shared) or None. Reads FrameContentSequence (TemporalPositionIndex, FrameAcquisitionNumber,
    DimensionIndexValues), CardiacSynchronizationSequence, MRDiffusionSequence, MREchoSequence and
    MRTimingAndRelatedParametersSequence; the non-spatial DimensionIndexValues come from
    DimensionIndexSequence.
    """
    content = group(frame, "FrameContentSequence")
    get = content.get if content is not None else (lambda *_: None)
    b = gradient = None
    diffusion = group(frame, "MRDiffusionSequence")
    if diffusion is not None:
        b = _number(diffusion.get("DiffusionBValue"))
        directions = diffusion.get("DiffusionGradientDirectionSequence")
        if directions:
            gradient = _unit(directions[0].get("DiffusionGradientOrientation") or [])
    echo = group(frame, "MREchoSequence")
    cardiac = group(frame, "CardiacSynchronizationSequence")
    timing = group(frame, "MRTimingAndRelatedParametersSequence")
    keys = {
        "TemporalPositionIndex": _integer(get("TemporalPositionIndex")),
        "FrameAcquisitionNumber": _integer(get("FrameAcquisitionNumber")),
        "NominalCardiacTriggerDelayTime": None if cardiac is None else _rounded(
            cardiac.get("NominalCardiacTriggerDelayTime"), 3),
        "diffusion": _diffusion_key(b, gradient),
        "EffectiveEchoTime": None if echo is None else _rounded(echo.get("EffectiveEchoTime"), 3),
        "DimensionIndexValues": _volume_indices(ds, get("DimensionIndexValues")),
        "frame": frame,
    }  # fmt: skip
    attrs = {
        "b_value": b, "gradient": gradient, "echo_time_ms": keys["EffectiveEchoTime"],
        "trigger_time_ms": keys["NominalCardiacTriggerDelayTime"],
        "repetition_time_ms": None if timing is None else _rounded(timing.get("RepetitionTime"), 3),
    }  # fmt: skip
    return keys, {k: v for k, v in attrs.items() if v is not None}


def _volume_indices(ds, values) -> tuple | None:
    """The DimensionIndexValues that do not index a position (None without DimensionIndexSequence)."""
    dims = ds.get("DimensionIndexSequence")
    if values is None or not dims:
        return None
    values = [values] if isinstance(values, int) else list(values)
    if len(values) != len(dims):
        return None
    keep = [int(v) for v, d in zip(values, dims, strict=True) if int(d.get("DimensionIndexPointer") or 0) not in SPATIAL_DIMENSIONS]
    return tuple(keep) if keep else None
