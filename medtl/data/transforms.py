"""Preprocessing from a backbone's input convention plus modality presets, on MONAI transforms.

One :class:`PreprocessSpec` (plain data, saved in a run directory) turns an
:class:`~medtl.io.Image` into the tensor a network expects:

1. **channels** — the run's channel count (decided from its training data, see
   :mod:`medtl.data.channels`): a colour image fed to a one-channel run becomes its BT.601
   luma (:func:`medtl.io.colour.luma`), a grey image fed to an N-channel run is tiled.
2. **intensity preset** — ``ct``: one channel per HU window (``[0, 1]`` each, DICOM VOI
   formula); ``mr``: percentile normalisation; ``xr``: percentile normalisation of the
   display values (one range over all channels, so colour balance is kept); ``colour``:
   each channel over the file's full scale (0–255 for 8-bit) or per-channel percentiles;
   ``none``: as loaded. ``intensity_range`` fixes the range instead.
3. **geometry** — 3D volumes are put in RAS orientation and resampled to ``spacing`` (mm);
   then resized (2D) or padded/cropped (3D) to ``size``.
4. **axes** — spatial axes reversed, from medtl's (column, row[, slice]) to the (rows,
   columns) / (depth, rows, columns) order networks are trained on.
5. **input convention** — ``[0, 1]`` mapped to the source's value range, then its mean/std
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

__all__ = ["PreprocessSpec", "preprocess", "preprocess_with_affine", "intensity", "black_input", "channel_stats", "augmentation", "PRESETS"]

PRESETS = ("ct", "mr", "xr", "colour", "none")


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that maps a loaded image to network input; serialisable with :meth:`to_dict`.

    Attributes:
        preset: ``ct``, ``mr``, ``xr``, ``colour`` or ``none``.
        windows: ``ct`` only: (centre, width) pairs in HU, or names from
            :data:`medtl.io.WINDOWS`; one output channel each.
        percentiles: ``mr``/``xr``/``colour``: the intensity range mapped to [0, 1].
        intensity_range: ``None`` (the preset's own: percentiles for ``mr``/``xr``, the file's
            full scale for ``colour``), ``"percentiles"`` (per channel for ``colour``) or a fixed
            ``(low, high)`` mapped to [0, 1].
        input_channels: channels of the network input; ``None`` (runs from before channels were
            decided) keeps each image's own. ``ct`` has one per window.
        size: output spatial size in network axis order ((rows, columns) or (depth, rows, columns)).
        spacing: 3D only: resample to this voxel size (mm, RAS axis order) before sizing.
        window_after_resampling: ``ct`` in 3D: resample the HU volume, then window it (what a
            viewer does, and 4x faster than resampling one channel per window); runs trained
            since step 8 set it, older runs (``False``) keep windowing first.
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
    intensity_range: tuple[float, float] | str | None = None
    input_channels: int | None = None
    window_after_resampling: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(None, f"unknown preset '{self.preset}'; choose from {', '.join(PRESETS)}")
        if self.preset == "ct" and not self.windows:
            raise ConfigError(None, "preset 'ct' needs at least one HU window")
        for w in self.windows:
            if isinstance(w, str) and w not in WINDOWS:
                raise ConfigError(None, f"unknown window '{w}'; named windows: {', '.join(WINDOWS)}")
        if not valid_intensity_range(self.intensity_range):
            raise ConfigError(None, f"intensity_range must be null, 'percentiles' or [low, high] with high > low, "
                              f"not {self.intensity_range!r}")  # fmt: skip
        if self.input_channels is not None:
            if not (isinstance(self.input_channels, int) and self.input_channels >= 1):
                raise ConfigError(None, f"input channels must be a positive number, not {self.input_channels!r}")
            if self.preset == "ct" and self.input_channels != len(self.windows):
                raise ConfigError(None, f"preset 'ct' makes one channel per window ({len(self.windows)}), "
                                  f"not {self.input_channels}")  # fmt: skip

    @property
    def channels(self) -> int:
        """Channels of the network input."""
        if self.preset == "ct":
            return len(self.windows)
        return self.input_channels or 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_convention(cls, convention, **kwargs) -> PreprocessSpec:
        """A spec that reproduces a :class:`~medtl.models.InputConvention`."""
        size = kwargs.pop("size", convention.size)
        return cls(
            value_range=convention.value_range, mean=convention.mean, std=convention.std, size=tuple(size), **kwargs
        )


def valid_intensity_range(rng) -> bool:
    """``None``, ``"percentiles"``, or two numbers ``[low, high]`` with high > low.

    >>> valid_intensity_range([0, 255]), valid_intensity_range([255, 0]), valid_intensity_range("fixed")
    (True, False, False)
    """
    if rng is None or rng == "percentiles":
        return True
    return (
        isinstance(rng, (list, tuple)) and len(rng) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) and rng[1] > rng[0]
    )  # fmt: skip


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


def _match_channels(arr: np.ndarray, want: int | None) -> np.ndarray:
    """(C, ...) in modality units → ``want`` channels: luma for colour into one channel; grey is
    tiled later (after intensity mapping, where it is cheaper and identical)."""
    have = arr.shape[0]
    if want is None or have == want or have == 1:
        return arr
    if have == 3 and want == 1:
        from ..io.colour import luma

        return luma(arr)[None]
    raise ConfigError(None, f"the image has {have} channels and the run takes {want}: only grey → any and "
                      "colour (3) → grey (1) are converted")  # fmt: skip


def _full_scale(img: Image, arr: np.ndarray) -> float:
    scale = img.meta.get("full_scale")
    if scale and scale > 1:
        return float(scale)
    return 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 255.0  # float data: [0, 1] or 8-bit values


def _percentile_range(arr: np.ndarray, percentiles, per_channel: bool) -> np.ndarray:
    if per_channel:
        lo, hi = np.percentile(arr.reshape(arr.shape[0], -1), percentiles, axis=1)
        shape = (-1,) + (1,) * (arr.ndim - 1)
        return np.clip((arr - lo.reshape(shape)) / np.maximum(hi - lo, 1e-6).reshape(shape), 0.0, 1.0)
    lo, hi = np.percentile(arr, percentiles)
    return np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _windows(spec: PreprocessSpec) -> list[tuple[float, float]]:
    return [WINDOWS[w] if isinstance(w, str) else tuple(w) for w in spec.windows]


def intensity(img: Image, spec: PreprocessSpec) -> np.ndarray:
    """The image on its own grid, (C, *spatial) float32 in [0, 1] (``none``: unchanged), C = the
    run's channels: step 1 and 2 of :func:`preprocess`, and what saliency overlays are drawn on."""
    arr = img.array if img.meta.get("channel_axis") == 0 else img.array[None]
    if spec.preset == "ct":
        if arr.shape[0] != 1:
            raise ConfigError(None, f"preset 'ct' expects a single-channel image in HU, not {arr.shape[0]} channels")
        return np.stack([window(arr[0], c, w) for c, w in _windows(spec)])
    arr = _match_channels(arr, spec.input_channels)
    rng = spec.intensity_range
    if spec.preset == "none":
        out = arr.astype(np.float32)
    elif rng is not None and rng != "percentiles":
        lo, hi = float(rng[0]), float(rng[1])
        out = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    elif spec.preset == "colour" and rng is None:
        out = np.clip(arr / _full_scale(img, arr), 0.0, 1.0)
    else:
        out = _percentile_range(arr, spec.percentiles, per_channel=spec.preset == "colour")
    want = spec.input_channels
    if want is not None and out.shape[0] == 1 and want > 1:
        out = np.repeat(out, want, axis=0)  # grey into a colour run: the same grey in every channel
    return out.astype(np.float32)


def _to_ras_spacing(arr: np.ndarray, img: Image, spacing, size, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """RAS orientation, resampling to ``spacing`` and centre pad/crop to ``size`` (network order,
    reversed here; padding with ``pad``), with MONAI tracking the affine through every step."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing

    t = MetaTensor(arr, affine=img.affine)
    t = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(t)  # medtl affines are RAS+
    if spacing is not None:
        # float32 (MONAI's default is float64): half the memory and time, no visible difference
        t = Spacing(pixdim=spacing, mode="bilinear", dtype=torch.float32)(t)
    t = ResizeWithPadOrCrop(spatial_size=tuple(size)[::-1], value=pad)(t)
    return np.asarray(t.array), np.asarray(t.affine, dtype=np.float64)


def _resize_affine(affine: np.ndarray, shape: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """The affine of a 2D image (axes (column, row)) resized to ``size`` (rows, columns): output
    pixel centres sit where MONAI's ``Resize`` samples (``align_corners=False``)."""
    scale = [shape[0] / size[1], shape[1] / size[0]]
    step = np.eye(4)
    step[0, 0], step[1, 1] = scale
    step[:2, 3] = [0.5 * s - 0.5 for s in scale]
    return affine @ step


def _network_axes(affine: np.ndarray, ndim: int) -> np.ndarray:
    """``affine`` re-indexed for reversed spatial axes: network index (rows, columns) or (depth,
    rows, columns) → RAS+ mm."""
    perm = np.zeros((4, 4))
    for n in range(ndim):
        perm[ndim - 1 - n, n] = 1.0
    for n in range(ndim, 4):
        perm[n, n] = 1.0
    return affine @ perm


def preprocess_with_affine(img: Image, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """:func:`preprocess` plus the 4×4 affine from a network-input voxel index (in network axis
    order) to RAS+ world mm: where a saliency map's peak is in the patient, and how a map is
    resampled back onto the scan.

    >>> from medtl.io import Image
    >>> img = Image(np.zeros((10, 20), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]))
    >>> x, affine = preprocess_with_affine(img, PreprocessSpec(size=(10, 5)))
    >>> x.shape, [float(v) for v in (affine @ [0, 0, 0, 1])[:2]]  # pixel (0, 0) covers columns 0-1, rows 0-1
    ((1, 10, 5), [0.25, 0.25])
    """
    from monai.transforms import Resize

    if len(spec.size) != img.ndim:
        raise ConfigError(None, f"the run takes {len(spec.size)}D images; this one is {img.ndim}D "
                          f"(shape {img.spatial_shape})")  # fmt: skip
    if img.ndim == 3 and spec.preset == "ct" and spec.window_after_resampling and img.channels == 1:
        # resample the HU volume once, then window: one channel at full resolution instead of one
        # per window; windows are clipped ramps, so this differs from windowing first only where
        # neighbouring voxels straddle a window's ends (the physical quantity is what gets
        # interpolated). Padding lies below every window: 0 in every channel, as before.
        wins = _windows(spec)
        below = min(c - w / 2 for c, w in wins) - 1.0
        hu, affine = _to_ras_spacing(img.array[None].astype(np.float32), img, spec.spacing, spec.size, pad=below)
        arr = np.stack([window(hu[0], c, w) for c, w in wins])
    elif img.ndim == 3:
        arr, affine = _to_ras_spacing(intensity(img, spec), img, spec.spacing, spec.size)
    else:
        arr = intensity(img, spec)
        affine = _resize_affine(img.affine, img.spatial_shape, spec.size)
    arr = np.ascontiguousarray(arr.transpose(0, *range(arr.ndim - 1, 0, -1)))  # (C, x, y[, z]) → (C, [z,] y, x)
    if img.ndim == 2:
        arr = np.asarray(Resize(spatial_size=spec.size, mode="bilinear", anti_aliasing=True)(arr))
    lo, hi = spec.value_range
    arr = arr * (hi - lo) + lo
    mean, std = channel_stats(spec.mean, arr.shape[0]), channel_stats(spec.std, arr.shape[0])
    if mean is not None:
        arr = arr - mean.reshape(-1, *([1] * (arr.ndim - 1)))
    if std is not None:
        arr = arr / std.reshape(-1, *([1] * (arr.ndim - 1)))
    return arr.astype(np.float32), _network_axes(affine, img.ndim)


def preprocess(img: Image, spec: PreprocessSpec) -> np.ndarray:
    """Network input for one image: float32 (C, *size), C = ``spec.channels`` (or the image's).

    Raises:
        ConfigError: the image does not suit the spec (a colour image with ``ct``, a 3D spec
        for a 2D image).
    """
    return preprocess_with_affine(img, spec)[0]


def black_input(spec: PreprocessSpec) -> np.ndarray:
    """The network input of an all-black image (intensity 0 after the preset), one value per
    channel, shape (C, 1, ..): the baseline of integrated gradients and of deletion curves.

    >>> black_input(PreprocessSpec(size=(4, 4), mean=(0.5,), std=(0.25,))).ravel().tolist()
    [-2.0]
    """
    c = spec.channels
    arr = np.full((c,) + (1,) * len(spec.size), float(spec.value_range[0]), np.float32)
    mean, std = channel_stats(spec.mean, c), channel_stats(spec.std, c)
    if mean is not None:
        arr = arr - mean.reshape(arr.shape)
    if std is not None:
        arr = arr / std.reshape(arr.shape)
    return arr.astype(np.float32)


def augmentation(
    size: int | tuple[int, ...], *, flips: tuple[int, ...] = (), strength: float = 1.0, seed: int | None = None
):
    """A MONAI ``Compose`` of random augmentations for network-order tensors (C, *spatial).

    ``size`` is the network input size (a tuple, or the number of spatial dimensions for a
    64-pixel reference). Small affine: ±10° × strength, ±10 % scale and a shift of up to 5 % of
    the image along each axis (so a 28-pixel MedMNIST image moves by 1.4 pixels, a 224-pixel one
    by 11); mild contrast and Gaussian noise. Flips only along the axes in ``flips`` (network axis
    numbers, 0 = first spatial axis): left-right flips change anatomy (the heart moves), so none
    are on by default.

    >>> aug = augmentation((28, 28), seed=0)
    >>> [round(r, 2) for r in aug.transforms[0].rand_affine_grid.translate_range]
    [1.4, 1.4]
    """
    import math

    from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandFlip, RandGaussianNoise

    if isinstance(size, int):
        size = (64,) * size
    spatial_dims = len(size)
    rot = math.radians(10) * strength
    steps = [
        RandAffine(
            prob=0.7,
            rotate_range=(rot,) if spatial_dims == 2 else (rot, rot, rot),
            scale_range=(0.1 * strength,) * spatial_dims,
            translate_range=tuple(0.05 * strength * n for n in size),
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
