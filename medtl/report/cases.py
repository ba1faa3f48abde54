"""One case of a report: its image read again, drawn with its saliency map, and described.

:func:`render_case` is what a report does per row of ``predictions.csv``, in a worker process:
it loads the input (the file or series the prediction came from), windows it as the run does,
reads the saliency map ``medtl predict --saliency`` wrote (NIfTI on the network's grid, resampled
through world mm onto the image's; older outputs stored it on the image's grid), and
returns the pictures as base64 PNGs with the non-identifying facts a reader needs (modality,
body part, view, sex, age). Identifying header fields (name, ID, accession number, dates,
descriptions) and paths are read only when the report is asked to show identifiers.

>>> import inspect
>>> list(inspect.signature(render_case).parameters)
['job']
"""

from __future__ import annotations

import base64
import os
from typing import Any

import numpy as np

from ..errors import MedtlError

__all__ = ["render_case", "safe_render_case", "map_on_image", "IDENTIFYING_FIELDS", "SHOWN_META"]

#: Header fields shown only with ``--show-identifiers`` (label, DICOM keyword): what a reader needs
#: to find the study in the PACS.
IDENTIFYING_FIELDS = (
    ("Patient name", "PatientName"), ("Patient ID", "PatientID"), ("Accession number", "AccessionNumber"),
    ("Study date", "StudyDate"), ("Study", "StudyDescription"), ("Series", "SeriesDescription"),
)  # fmt: skip
#: Non-identifying image facts every page shows (label, ``Image.meta`` key).
SHOWN_META = (
    ("Modality", "modality"), ("Body part", "body_part"), ("View", "view"), ("Sex", "sex"), ("Age", "age"),
    ("Scanner", "manufacturer"), ("Model", "model"), ("Kernel", "kernel"),
)  # fmt: skip


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _pic(picture) -> dict[str, Any]:
    return {"src": _uri(picture.png), "width": picture.width, "height": picture.height}


def _squeezed(arr: np.ndarray, ndim: int) -> np.ndarray:
    """``arr`` without trailing length-1 axes beyond ``ndim`` (a 2D map stored as (H, W, 1))."""
    while arr.ndim > ndim and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def _same_grid(shape: tuple[int, ...], affine: np.ndarray, img_shape: tuple[int, ...], img_affine: np.ndarray) -> bool:
    n = len(img_shape)
    return tuple(shape) == tuple(img_shape) and bool(np.allclose(affine[:3, :n], img_affine[:3, :n], atol=1e-3)
                                                       and np.allclose(affine[:3, 3], img_affine[:3, 3], atol=1e-3))  # fmt: skip


def _planar(affine: np.ndarray) -> np.ndarray:
    """A 2D grid's affine made invertible: a third column along the plane's normal when the stored
    one is degenerate (only the first two columns and the origin place a 2D map)."""
    out = np.array(affine, np.float64)
    if abs(np.linalg.det(out)) < 1e-9:
        normal = np.cross(out[:3, 0], out[:3, 1])
        out[:3, 2] = normal / (np.linalg.norm(normal) or 1.0)
    return out


def map_on_image(arr: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
                 img_affine: np.ndarray) -> tuple[np.ndarray | None, str | None]:  # fmt: skip
    """A saliency map (``arr`` on the grid of ``affine``, world mm) on the image's grid
    (``shape``, ``img_affine``), or ``None`` and why. A map on the image's own grid (older
    predictions) is used as it is; one on the network's grid is resampled through world mm,
    linearly, zero outside the network's field of view.

    >>> img_aff = np.diag([0.5, 0.5, 1.0, 1.0])
    >>> net = np.zeros((4, 4), np.float32); net[1, 2] = 1.0           # 2 mm cells
    >>> out, why = map_on_image(net, np.diag([2.0, 2.0, 1.0, 1.0]), (16, 16), img_aff)
    >>> out.shape, why, [int(v) for v in np.unravel_index(int(out.argmax()), out.shape)]
    ((16, 16), None, [4, 8])
    """
    from ..explain.grid import resample

    n = len(shape)
    arr = _squeezed(np.asarray(arr, np.float32), n)
    affine, img_affine = np.asarray(affine, np.float64), np.asarray(img_affine, np.float64)
    if affine.shape == (4, 4) and img_affine.shape == (4, 4) and _same_grid(arr.shape, affine, shape, img_affine):
        return arr, None
    unfit = (f"the saliency map ({'×'.join(map(str, arr.shape))}) does not fit the image "
             f"({'×'.join(map(str, shape))}): the image changed since prediction; it is shown alone")  # fmt: skip
    if arr.ndim != n or affine.shape != (4, 4) or img_affine.shape != (4, 4):
        return None, unfit
    src, dst = (_planar(affine), _planar(img_affine)) if n == 2 else (affine, img_affine)
    try:
        if not (np.isfinite(src).all() and abs(np.linalg.det(src)) > 1e-9):
            raise np.linalg.LinAlgError("singular affine")
        return resample(arr, src, shape, dst, order=1), None
    except (np.linalg.LinAlgError, ValueError, RuntimeError):
        if tuple(arr.shape) == tuple(shape):  # an image-grid map with an unusable affine: as it is
            return arr, None
        return None, unfit


def _read_map(path: str | None, shape: tuple[int, ...], img_affine: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """The saliency map on the image's grid (:func:`map_on_image`), or ``None`` and why."""
    if not path:
        return None, None
    if not os.path.isfile(path):
        return None, "the saliency map file is missing from the predictions folder: the image is shown alone"
    try:
        import nibabel as nib

        nii = nib.load(path)
        arr, affine = np.asarray(nii.get_fdata(dtype=np.float32)), np.asarray(nii.affine, np.float64)
    except Exception as exc:  # noqa: BLE001 - any unreadable map: show the image and say why
        return None, f"the saliency map file could not be read ({type(exc).__name__}): the image is shown alone"
    return map_on_image(arr, affine, shape, img_affine)


def _identifiers(full: str, rel: str, series: str | None) -> list[tuple[str, str]]:
    shown = [("File", rel), ("Location", full)]
    header = _first_header(full, series)
    if header is not None:
        for label, keyword in IDENTIFYING_FIELDS:
            value = header.get(keyword)
            if value not in (None, ""):
                shown.append((label, str(value)))
    return shown


def _first_header(full: str, series: str | None):
    """The header of the input's first DICOM file (its series' file in a folder), or ``None``."""
    import pydicom

    from ..io.phi import pseudonym

    tags = [k for _, k in IDENTIFYING_FIELDS] + ["SeriesInstanceUID"]
    paths = [full] if os.path.isfile(full) else sorted(
        os.path.join(full, n) for n in os.listdir(full) if os.path.isfile(os.path.join(full, n)))[:5000]  # fmt: skip
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except Exception:  # noqa: BLE001 - not DICOM (NIfTI, a README): nothing to show
            continue
        uid = ds.get("SeriesInstanceUID")
        if series and uid and series not in (str(uid), pseudonym(str(uid), "series")):
            continue
        return ds
    return None


def _meta(img) -> list[tuple[str, str]]:
    shown = []
    for label, key in SHOWN_META:
        value = img.meta.get(key)
        if value not in (None, "", []):
            if key == "age":
                value = "90 or older" if int(value) >= 90 else f"{int(value)} years"
            shown.append((label, str(value)))
    if not spacing_known(img):  # a raster's or an npz item's 1 mm is a placeholder, not a fact
        shown.append(("Pixel spacing", "unknown (the file does not record it)"))
    elif img.spacing:
        shown.append(("Pixel spacing", " × ".join(f"{float(s):.3g}" for s in img.spacing) + " mm"))
    return shown


def spacing_known(img) -> bool:
    """Whether the image's spacing (and so any position in mm) came from the file.

    >>> from medtl.io.image import Image
    >>> spacing_known(Image(np.zeros((2, 2)), np.eye(4), {"flags": ["spacing_unknown"]}))
    False
    """
    return "spacing_unknown" not in (img.meta.get("flags") or [])


def _voxels(position: str) -> str:
    """A position in mm written on a grid of unknown spacing, as what it is: a voxel index."""
    return "voxel " + position.split(" ")[1].split(".")[0] + " (spacing unknown)"


def _scale_top(job: dict[str, Any], peak: float) -> float:
    """Full colour of this case's map: the report's shared ``top`` (one scale for every case),
    else the map's own maximum (older predictions, which record no peaks)."""
    top = job.get("top")
    return float(top) if top is not None and top > 0 else peak


def safe_render_case(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """:func:`render_case`, with any failure turned into the case's ``error`` (one case that cannot
    be drawn must not stop a report of thousands); ``None`` for no job."""
    if job is None:
        return None
    if "error" in job:  # known before drawing (the file is unreadable now)
        return {"error": job["error"], "notes": [], "meta": [], "identifiers": None}
    try:
        return render_case(job)
    except Exception as exc:  # noqa: BLE001 - reported on the case's page, the report goes on
        return {"error": f"the case could not be drawn ({type(exc).__name__}: {exc})", "notes": [], "meta": [],
                "identifiers": None}  # fmt: skip


def render_case(job: dict[str, Any]) -> dict[str, Any]:
    """Pictures and facts of one case. ``job``: ``full`` (the input's path), ``rel``, ``series``,
    ``spec`` (the run's preprocessing), ``dims``, ``nifti`` (the map's path or ``None``), ``top``
    (the report's shared colour scale, or ``None``: each map on its own maximum),
    ``identifiers`` (read identifying fields and show paths), ``digest`` (the pixels' digest
    recorded at prediction: an image that no longer matches is not drawn, ``changed`` is set).

    Returns ``figures`` (``2d``: image and heat pictures with the width and height in mm; ``3d``:
    three planes and a slice strip), ``meta``, ``identifiers`` and ``notes``; on failure ``error``
    (a reason naming no absolute path) instead of pictures.
    """
    from ..explain.explainer import display_array, load_item
    from .figures import display_2d, heat_png, image_png, planes, slice_strip, to_ras

    notes: list[str] = []
    out: dict[str, Any] = {"notes": notes, "identifiers": None, "meta": []}
    if job.get("identifiers"):
        try:
            out["identifiers"] = _identifiers(job["full"], job["rel"], job.get("series"))
        except OSError as exc:
            notes.append(f"identifiers could not be read ({exc.strerror or exc})")
    try:
        img = load_item(job["full"], job.get("series") or None)
        disp = display_array(img, job["spec"])
    except MedtlError as exc:
        out["error"] = f"the image could not be read again ({exc.reason})"
        return out
    except Exception as exc:  # noqa: BLE001 - one unreadable case must not stop the report
        out["error"] = f"the image could not be read again ({type(exc).__name__})"
        return out
    expected = job.get("digest")
    if expected and img.digest() != expected:  # never a new image beside an old probability
        out["error"] = ("the image has changed since it was predicted (its pixels or geometry differ from what the "
                        "model saw): it is not shown, and the probability on this page is not about the image as it "
                        "is now; predict it again")  # fmt: skip
        out["changed"] = True
        return out
    out["meta"] = _meta(img)
    smap, why = _read_map(job.get("nifti"), tuple(img.spatial_shape), img.affine)
    if why:
        notes.append(why)
        out["map_note"] = why
    if job["dims"] == 2 and disp.ndim in (2, 3) and len(img.spatial_shape) == 2:
        rows, w_mm, h_mm = display_2d(disp, img.spacing)
        fig = {"kind": "2d", "image": _pic(image_png(rows)), "width_mm": w_mm, "height_mm": h_mm, "heat": None,
               "empty": False}  # fmt: skip
        if smap is not None:
            peak = float(np.nanmax(smap))
            fig["heat"] = _pic(heat_png(np.swapaxes(smap, 0, 1), top=_scale_top(job, peak)))
            fig["empty"] = not peak > 0
        out["figures"] = fig
        return out
    vol, affine = to_ras(disp, img.affine)
    sal = to_ras(smap, img.affine)[0] if smap is not None else None
    peak = float(np.nanmax(sal)) if sal is not None else 0.0
    top = _scale_top(job, peak)
    views = []
    known = spacing_known(img)
    for plane in planes(vol, sal if peak > 0 else None, affine):
        # without a recorded geometry the positions are voxel indices and the edges' directions unknown
        view = {"name": plane.name, "image": _pic(image_png(plane.image, 512)), "width_mm": plane.width_mm,
                "height_mm": plane.height_mm, "edges": plane.edges if known else ("", "", "", ""),
                "position": plane.position if known else _voxels(plane.position), "heat": None}  # fmt: skip
        if plane.saliency is not None:
            view["heat"] = _pic(heat_png(plane.saliency, 512, top=top))
        views.append(view)
    strip = [{"picture": _pic(p), "label": label if known else _voxels(label), "peak": peak} for p, label, peak in
             slice_strip(vol, sal if peak > 0 else None, affine, top=top)]  # fmt: skip
    out["figures"] = {"kind": "3d", "planes": views, "strip": strip, "through": "the map's peak" if peak > 0 else
                      "the centre of the volume", "empty": sal is not None and not peak > 0}  # fmt: skip
    return out
