"""One case of a report: its image read again, drawn with its saliency map, and described.

:func:`render_case` is what a report does per row of ``predictions.csv``, in a worker process:
it loads the input (the file or series the prediction came from), windows it as the run does,
reads the saliency map ``medtl predict --saliency`` wrote (NIfTI, on the image's grid), and
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

__all__ = ["render_case", "safe_render_case", "IDENTIFYING_FIELDS", "SHOWN_META"]

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


def _read_map(path: str | None, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """The saliency map on the image's grid, or ``None`` and why."""
    if not path:
        return None, None
    if not os.path.isfile(path):
        return None, "the saliency map file is missing from the predictions folder: the image is shown alone"
    try:
        import nibabel as nib

        arr = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - any unreadable map: show the image and say why
        return None, f"the saliency map file could not be read ({type(exc).__name__}): the image is shown alone"
    arr = arr.reshape(arr.shape[: len(shape)]) if arr.ndim > len(shape) and arr.size == np.prod(shape) else arr
    if tuple(arr.shape) != tuple(shape):
        return None, (f"the saliency map ({'×'.join(map(str, arr.shape))}) does not fit the image "
                      f"({'×'.join(map(str, shape))}): the image changed since prediction; it is shown alone")  # fmt: skip
    return arr, None


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
    if img.spacing:
        shown.append(("Pixel spacing", " × ".join(f"{float(s):.3g}" for s in img.spacing) + " mm"))
    return shown


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
    ``spec`` (the run's preprocessing), ``dims``, ``nifti`` (the map's path or ``None``),
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
    smap, why = _read_map(job.get("nifti"), tuple(img.spatial_shape))
    if why:
        notes.append(why)
        out["map_note"] = why
    if job["dims"] == 2 and disp.ndim in (2, 3) and len(img.spatial_shape) == 2:
        rows, w_mm, h_mm = display_2d(disp, img.spacing)
        fig = {"kind": "2d", "image": _pic(image_png(rows)), "width_mm": w_mm, "height_mm": h_mm, "heat": None,
               "empty": False}  # fmt: skip
        if smap is not None:
            fig["heat"] = _pic(heat_png(np.swapaxes(smap, 0, 1), top=float(np.nanmax(smap))))
            fig["empty"] = not float(np.nanmax(smap)) > 0
        out["figures"] = fig
        return out
    vol, affine = to_ras(disp, img.affine)
    sal = to_ras(smap, img.affine)[0] if smap is not None else None
    top = float(np.nanmax(sal)) if sal is not None else 0.0
    views = []
    for plane in planes(vol, sal if top > 0 else None, affine):
        view = {"name": plane.name, "image": _pic(image_png(plane.image, 512)), "width_mm": plane.width_mm,
                "height_mm": plane.height_mm, "edges": plane.edges, "position": plane.position, "heat": None}  # fmt: skip
        if plane.saliency is not None:
            view["heat"] = _pic(heat_png(plane.saliency, 512, top=top))
        views.append(view)
    strip = [{"picture": _pic(p), "label": label, "peak": peak} for p, label, peak in
             slice_strip(vol, sal if top > 0 else None, affine)]  # fmt: skip
    out["figures"] = {"kind": "3d", "planes": views, "strip": strip, "through": "the map's peak" if top > 0 else
                      "the centre of the volume", "empty": sal is not None and not top > 0}  # fmt: skip
    return out
