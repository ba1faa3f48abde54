"""Preprocessing from a backbone's input convention plus modality presets, on MONAI transforms.

One :class:`PreprocessSpec` (plain data, saved in a run directory) turns an
:class:`~medtl.io.Image` into the tensor a network expects:

1. **intensity preset** — ``ct``: one channel per HU window (``[0, 1]`` each, DICOM VOI
   formula); ``mr``: percentile normalisation; ``xr``: percentile normalisation of the
   display values; ``none``: as loaded.
2. **geometry** — 3D volumes are put in RAS orientation and resampled to ``spacing`` (mm);
   then resized (2D) or padded/cropped (3D) to ``size``.
3. **axes** — spatial axes reversed, from medtl's (column, row[, slice]) to the (rows,
   columns) / (depth, rows, columns) order networks are trained on.
4. **input convention** — ``[0, 1]`` mapped to the source's value range, then its mean/std
   (averaged over RGB for one channel, tiled for N, matching how the first convolution was
   adapted).

>>> import numpy as np
>>> from medtl.io import Image
>>> spec = PreprocessSpec(preset="ct", windows=((40, 400),), size=(8, 8))
>>> preprocess(Image(np.full((16, 16), 40.0, np.float32), np.eye(4)), spec).shape
(1, 8, 8)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError
from ..io.display import WINDOWS, window
from ..io.image import Image

__all__ = ["PreprocessSpec", "preprocess", "channel_stats", "augmentation", "PRESETS"]

PRESETS = ("ct", "mr", "xr", "none")


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that maps a loaded image to network input; serialisable with :meth:`to_dict`.

    Attributes:
        preset: ``ct``, ``mr``, ``xr`` or ``none``.
        windows: ``ct`` only: (centre, width) pairs in HU, or names from
            :data:`medtl.io.WINDOWS`; one output channel each.
        percentiles: ``mr``/``xr``: the intensity range mapped to [0, 1].
        size: output spatial size in network axis order ((rows, columns) or (depth, rows, columns)).
        spacing: 3D only: resample to this voxel size (mm, RAS axis order) before sizing.
        value_range, mean, std: the backbone's input convention (``None``: leave [0, 1]).
    """

    preset: str = "xr"
    windows: tuple = ()
    percentiles: tuple[float, float] = (0.5, 99.5)
    size: tuple[int, ...] = (224, 224)
    spacing: tuple[float, ...] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(None, f"unknown preset '{self.preset}'; choose from {', '.join(PRESETS)}")
        if self.preset == "ct" and not self.windows:
            raise ConfigError(None, "preset 'ct' needs at least one HU window")
        for w in self.windows:
            if isinstance(w, str) and w not in WINDOWS:
                raise ConfigError(None, f"unknown window '{w}'; named windows: {', '.join(WINDOWS)}")

    @property
    def channels(self) -> int:
        return len(self.windows) if self.preset == "ct" else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_convention(cls, convention, **kwargs) -> PreprocessSpec:
        """A spec that reproduces a :class:`~medtl.models.InputConvention`."""
        size = kwargs.pop("size", convention.size)
        return cls(
            value_range=convention.value_range, mean=convention.mean, std=convention.std, size=tuple(size), **kwargs
        )


def channel_stats(values: tuple[float, ...] | None, channels: int) -> np.ndarray | None:
    """Per-channel mean or std for ``channels`` inputs, mirroring first-conv adaptation.

    >>> [round(float(v), 4) for v in channel_stats((0.485, 0.456, 0.406), 1)]
    [0.449]
    """
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float32)
    if channels == len(v):
        return v
    if channels == 1:
        return v.mean(keepdims=True)
    return np.resize(v, channels)  # tiled cyclically, as the kernels are


def _intensity(img: Image, spec: PreprocessSpec) -> np.ndarray:
    """(C, *spatial) float32 in [0, 1] (``none``: unchanged)."""
    arr = img.array if img.meta.get("channel_axis") == 0 else img.array[None]
    if spec.preset == "ct":
        if arr.shape[0] != 1:
            raise ConfigError(None, "preset 'ct' expects a single-channel image in HU")
        wins = [WINDOWS[w] if isinstance(w, str) else w for w in spec.windows]
        return np.stack([window(arr[0], c, w) for c, w in wins])
    if spec.preset in ("mr", "xr"):
        lo, hi = np.percentile(arr, spec.percentiles)
        return np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return arr.astype(np.float32)


def _to_ras_spacing(arr: np.ndarray, img: Image, spacing) -> np.ndarray:
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    t = MetaTensor(arr, affine=img.affine)
    t = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(t)  # medtl affines are RAS+
    if spacing is not None:
        t = Spacing(pixdim=spacing, mode="bilinear")(t)
    return np.asarray(t.array if hasattr(t, "array") else t)


def preprocess(img: Image, spec: PreprocessSpec) -> np.ndarray:
    """Network input for one image: float32 (C, *size), C = ``spec.channels`` (or the image's).

    Raises:
        ConfigError: the image does not suit the spec (a colour image with ``ct``, a 3D spec
        for a 2D image).
    """
    from monai.transforms import Resize, ResizeWithPadOrCrop

    if len(spec.size) != img.ndim:
        raise ConfigError(None, f"spec size {spec.size} is {len(spec.size)}D but the image is {img.ndim}D")
    arr = _intensity(img, spec)
    if img.ndim == 3:
        arr = _to_ras_spacing(arr, img, spec.spacing)
    arr = np.ascontiguousarray(arr.transpose(0, *range(arr.ndim - 1, 0, -1)))  # (C, x, y[, z]) → (C, [z,] y, x)
    if img.ndim == 2:
        arr = np.asarray(Resize(spatial_size=spec.size, mode="bilinear", anti_aliasing=True)(arr))
    else:
        arr = np.asarray(ResizeWithPadOrCrop(spatial_size=spec.size)(arr))
    lo, hi = spec.value_range
    arr = arr * (hi - lo) + lo
    mean, std = channel_stats(spec.mean, arr.shape[0]), channel_stats(spec.std, arr.shape[0])
    if mean is not None:
        arr = arr - mean.reshape(-1, *([1] * (arr.ndim - 1)))
    if std is not None:
        arr = arr / std.reshape(-1, *([1] * (arr.ndim - 1)))
    return arr.astype(np.float32)


def augmentation(spatial_dims: int, *, flips: tuple[int, ...] = (), strength: float = 1.0, seed: int | None = None):
    """A MONAI ``Compose`` of random augmentations for network-order tensors (C, *spatial).

    Small affine (±10° × strength, ±10 % scale), mild contrast and Gaussian noise. Flips only
    along the axes in ``flips`` (network axis numbers, 0 = first spatial axis): left-right
    flips change anatomy (the heart moves), so none are on by default.
    """
    import math

    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip, RandGaussianNoise

    rot = math.radians(10) * strength
    steps = [
        RandAffine(
            prob=0.7,
            rotate_range=(rot,) if spatial_dims == 2 else (rot, rot, rot),
            scale_range=(0.1 * strength,) * spatial_dims,
            translate_range=(0.05 * strength * 64,) * spatial_dims,
            padding_mode="border",
        ),
        RandAdjustContrast(prob=0.3, gamma=(1 - 0.3 * strength, 1 + 0.3 * strength)),
        RandGaussianNoise(prob=0.3, std=0.05 * strength),
        *[RandFlip(prob=0.5, spatial_axis=a) for a in flips],
    ]
    aug = Compose(steps)
    if seed is not None:
        aug.set_random_state(seed=seed)
    return aug
