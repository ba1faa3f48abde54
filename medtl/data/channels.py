"""How many input channels a run takes: decided once, from its training images, before caching.

Real collections mix modes: a chest X-ray set holds grey PNGs beside JPEGs whose grey decodes
as RGB, and a dermoscopy set may hold a few grey images. One rule decides the channel count of
a run, and preprocessing then brings every image to it (colour → BT.601 luma for a grey run,
grey → tiled for a colour run; :mod:`medtl.data.transforms`):

* ``channels: auto`` (the default): each training image's colour mode comes from
  :func:`medtl.io.probe_colour` (grey stored as RGB counts as grey); the run takes 3 channels
  when colour images are at least half of them, else 1. Large training sets are judged on
  :data:`MAX_PROBED` images spread evenly over the split.
* ``channels: N``: N, whatever the data (a grey set on an RGB-pretrained backbone stays 1 by
  default: the first convolution is summed, which gives the same response to a grey image).
* preset ``ct``: one channel per HU window.

>>> from medtl.data.manifest import Manifest, Record
>>> m = Manifest([Record("npz://x#train/0", (0.0,), "p")], ("label",), (), "x")
>>> decide_channels(m, [0], 3).channels, decide_channels(m, [0], 3).rule
(3, 'channels: 3 in the config')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError, MedtlError
from .manifest import Manifest
from .npz import NPZ_SCHEME, load_npz_item

__all__ = ["ChannelDecision", "decide_channels", "record_colour", "MAX_PROBED"]

#: At most this many training images are probed for their colour mode.
MAX_PROBED = 256


@dataclass
class ChannelDecision:
    """The run's input channels and why: ``rule`` is a sentence for the model card, ``counts``
    the colour modes seen (``gray``, ``gray-rgb``, ``rgb``, ``unreadable`` ...)."""

    channels: int
    rule: str
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "rule": self.rule, "counts": dict(self.counts)}


def record_colour(path: str, series: str | None = None) -> str:
    """The colour mode of one manifest path (a file, a series folder or an ``npz://`` item)."""
    from ..io.colour import image_colour, probe_colour

    if path.startswith(NPZ_SCHEME):
        return image_colour(load_npz_item(path))
    return probe_colour(path, series=series)


def _spread(indices: Sequence[int], n: int) -> list[int]:
    if len(indices) <= n:
        return list(indices)
    step = len(indices) / n
    return [indices[int(k * step)] for k in range(n)]


def decide_channels(
    manifest: Manifest,
    indices: Sequence[int],
    requested: int | str = "auto",
    *,
    preset: str = "xr",
    windows: Sequence = (),
    progress: bool = False,
) -> ChannelDecision:
    """Apply the channel rule to ``manifest.records[indices]`` (the training split).

    Raises:
        ConfigError: ``requested`` is neither ``auto`` nor a positive number, disagrees with a
            ``ct`` preset's windows, or no training image could be read.
    """
    if preset == "ct":
        if requested not in ("auto", len(windows)):
            raise ConfigError(None, f"preset 'ct' makes one channel per window ({len(windows)}); "
                              f"channels: {requested} disagrees (leave it auto)")  # fmt: skip
        return ChannelDecision(len(windows), f"preset ct: one channel per window ({len(windows)})")
    if requested != "auto":
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ConfigError(None, f"channels must be auto or a positive number, not {requested!r}")
        return ChannelDecision(requested, f"channels: {requested} in the config")
    probed = _spread(list(indices), MAX_PROBED)
    from ..progress import track

    counts: Counter[str] = Counter()
    first_failure = ""
    for i in track(probed, "colour", "image", enabled=progress, leave=False):
        rec = manifest.records[i]
        try:
            counts[record_colour(rec.path, rec.series)] += 1
        except MedtlError as exc:
            counts["unreadable"] += 1  # caching reports it with its reason
            first_failure = first_failure or str(exc)
    colour, grey = counts["rgb"], counts["gray"] + counts["gray-rgb"]
    if colour + grey == 0:
        raise ConfigError(manifest.source, f"none of the {len(probed)} training images probed could be read (e.g. "
                          f"{first_failure})")  # fmt: skip
    channels = 3 if colour >= grey else 1
    sample = f"{len(probed)} of {len(indices)}" if len(probed) < len(indices) else f"all {len(indices)}"
    rule = (
        f"channels: auto → {channels}: {colour} colour and {grey} grey ({counts['gray-rgb']} of them stored as RGB) "
        f"among {sample} training images; colour images {'are' if channels == 3 else 'are not'} at least half"
    )
    return ChannelDecision(channels, rule, dict(sorted(counts.items())))
