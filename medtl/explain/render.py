"""Pictures of saliency: 2D overlays, three planes of a volume, sanity and deletion curves.

Every function takes plain arrays and numbers and returns PNG bytes (matplotlib, Agg): the
workflow decides where they go. Overlays draw the map over the windowed image with a colour bar
scaled to the map's maximum; a method that failed its sanity check says so in the title.

>>> import numpy as np
>>> png = overlay_png(np.random.rand(32, 40), np.random.rand(32, 40), "gradcam · label=1 · P = 0.81")
>>> png[:4] == b"\\x89PNG"
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["overlay_png", "planes_png", "sanity_png", "deletion_png", "display_order"]

_CMAP = "inferno"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # not pyplot: no global figure registry to leak into

    return Figure(figsize=(width, height))


def _png(fig) -> bytes:
    from ..evaluate.plots import figure_png

    return figure_png(fig, dpi=110)


def _scaled(saliency: np.ndarray) -> tuple[np.ndarray, float]:
    top = float(np.max(saliency)) if saliency.size else 0.0
    return (saliency / top if top > 0 else np.zeros_like(saliency)), top


def display_order(image: np.ndarray) -> np.ndarray:
    """A medtl 2D array (column, row[, RGB]) as rows × columns for ``imshow``."""
    return np.swapaxes(image, 0, 1)


def overlay_png(image: np.ndarray, saliency: np.ndarray, title: str, *, aspect: float = 1.0,
                alpha: float = 0.45) -> bytes:  # fmt: skip
    """The image (rows × columns, grey in [0, 1] or RGB) beside itself with the map overlaid.

    ``aspect`` is row spacing / column spacing, so anisotropic pixels are drawn to scale.
    """
    shown, top = _scaled(np.asarray(saliency, np.float64))
    fig = _figure(8.4, 4.6)
    ax0, ax1 = fig.subplots(1, 2)
    grey = dict(cmap="gray", vmin=0.0, vmax=1.0) if image.ndim == 2 else {}
    for ax in (ax0, ax1):
        ax.imshow(np.clip(image, 0, 1), aspect=aspect, interpolation="nearest", **grey)
        ax.set_axis_off()
    im = ax1.imshow(shown, cmap=_CMAP, alpha=alpha, vmin=0.0, vmax=1.0, aspect=aspect, interpolation="bilinear")
    bar = fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04)
    bar.set_label(f"saliency (1 = map maximum {top:.3g})" if top > 0 else "saliency (the map is empty)")
    ax0.set_title("image", fontsize=9)
    ax1.set_title("saliency", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def planes_png(volume: np.ndarray, saliency: np.ndarray, peak: Sequence[int] | None, spacing: Sequence[float],
               title: str, *, alpha: float = 0.45) -> bytes:  # fmt: skip
    """Axial, coronal and sagittal planes through ``peak`` of a volume in RAS network order
    (superior, anterior, right axes: (S, A, R) indices), radiological convention (the patient's
    right on the viewer's left), the map overlaid. ``spacing`` is (S, A, R) in mm."""
    shown, top = _scaled(np.asarray(saliency, np.float64))
    z, y, x = peak if peak is not None else tuple(n // 2 for n in volume.shape)
    sz, sy, sx = (float(s) for s in spacing)
    views = [
        ("axial", volume[z][:, ::-1], shown[z][:, ::-1], sy / sx, ("A", "P", "R", "L")),
        ("coronal", volume[:, y, :][:, ::-1], shown[:, y, :][:, ::-1], sz / sx, ("S", "I", "R", "L")),
        ("sagittal", volume[:, :, x][:, ::-1], shown[:, :, x][:, ::-1], sz / sy, ("S", "I", "A", "P")),
    ]  # fmt: skip
    fig = _figure(12.0, 4.6)
    axes = fig.subplots(1, 3)
    im = None
    for ax, (name, img, smap, aspect, (top_l, bottom_l, left_l, right_l)) in zip(axes, views, strict=True):
        ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1, origin="lower", aspect=aspect)
        im = ax.imshow(smap, cmap=_CMAP, alpha=alpha, vmin=0, vmax=1, origin="lower", aspect=aspect)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for text, xy, align in ((top_l, (0.5, 0.98), ("center", "top")), (bottom_l, (0.5, 0.02), ("center", "bottom")),
                                (left_l, (0.02, 0.5), ("left", "center")), (right_l, (0.98, 0.5), ("right", "center"))):  # fmt: skip
            ax.text(*xy, text, transform=ax.transAxes, color="white", fontsize=9, ha=align[0], va=align[1])
    bar = fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02)
    bar.set_label(f"saliency (1 = map maximum {top:.3g})" if top > 0 else "saliency (the map is empty)")
    fig.suptitle(title + ("" if peak is not None else " · no peak: centre planes"), fontsize=10)
    return _png(fig)


def sanity_png(sanity: dict[str, dict[str, Any]]) -> bytes | None:
    """Spearman and SSIM against the trained model's map as groups are randomised, per method
    (``None`` when no method had a map to test)."""
    sanity = {m: r for m, r in sanity.items() if r["layers"]}
    if not sanity:
        return None
    fig = _figure(10.0, 4.2)
    ax0, ax1 = fig.subplots(1, 2, sharex=True)
    for method, res in sanity.items():
        steps = np.arange(len(res["layers"]))
        label = f"{method} ({'passed' if res['passed'] else 'FAILED'})"
        ax0.plot(steps, res["spearman"], marker="o", label=label)
        ax1.plot(steps, [np.nan if v is None else v for v in res["ssim"]], marker="o", label=label)
    first = next(iter(sanity.values()))
    for ax, name in ((ax0, "Spearman rank correlation"), (ax1, "SSIM")):
        ax.set_xticks(np.arange(len(first["layers"])), first["layers"], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(name)
        ax.set_xlabel("randomised down to (cumulative, from the head)")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
    ax0.axhline(0.5, color="grey", ls="--", lw=1)
    ax0.axvline(first["checked_at"], color="grey", ls=":", lw=1)
    ax0.legend(fontsize=8)
    fig.suptitle("Sanity check: cascading randomization (Adebayo et al. 2018)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def deletion_png(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Mean deletion curve per method (solid) against its random-order reference (dashed)."""
    fig = _figure(5.6, 4.2)
    ax = fig.subplots()
    for i, (method, (curve, ref)) in enumerate(curves.items()):
        frac = np.linspace(0, 1, len(curve))
        colour = f"C{i}"
        ax.plot(frac, curve, color=colour, label=method)
        ax.plot(frac, ref, color=colour, ls="--", lw=1)
    ax.set_xlabel("fraction of voxels deleted (most salient first; dashed: random order)")
    ax.set_ylabel("calibrated probability of the target")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Deletion curves (lower area = more faithful)", fontsize=10)
    fig.tight_layout()
    return _png(fig)
