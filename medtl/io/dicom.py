"""DICOM files, multi-frame objects and series → :class:`~medtl.io.image.Image`.

Decoding goes through pydicom's pixel backend with permissively licensed plugins
(OpenJPEG, CharLS, GDCM, Pillow, pylibjpeg-rle). Geometry follows
:mod:`medtl.io.geometry`: slices are ordered by position along the normal and spaced by
their positions, never by InstanceNumber, file name or SliceThickness. Series and multi-frame
objects holding several volumes (fMRI, diffusion, echoes) are split by :mod:`medtl.io.volumes`;
Siemens mosaics are cut into their slices by :mod:`medtl.io.mosaic`. Non-image objects
(DICOMDIR, reports, presentation states ...) raise :class:`~medtl.errors.NonImageObjectError`,
and the series loaders skip them.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ImageReadError, NonImageObjectError, NotAnImageError, SeriesError, UnsupportedImageError
from .colour import full_scale, resolve_colour
from .geometry import dicom_affine, slice_normal
from .image import Image
from .mosaic import CSA_TAGS, csa_image_header, is_mosaic, mosaic_layout, split_tiles
from .phi import SAFE_ATTRIBUTES, age_from_dates, parse_age, pseudonym
from .volumes import LocatedSlice, VolumeSet, frame_keys, slice_keys, split_volumes

__all__ = [
    "read_dataset",
    "dataset_meta",
    "load_dicom_file",
    "load_dicom_series",
    "load_dicom_folder",
    "group_series",
    "valid_spacing",
    "is_image_sop_class",
    "located_slices",
    "frame_volume_set",
]

#: What a header-only read keeps: enough for :func:`dataset_meta`, the scan and pixel checks.
HEADER_KEYWORDS = (
    *SAFE_ATTRIBUTES,
    "SpecificCharacterSet", "SOPClassUID", "PatientID", "PatientAge", "PatientBirthDate", "StudyDate",
    "AcquisitionDate", "InstitutionName", "StationName", "StudyInstanceUID", "SeriesInstanceUID",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
    "NumberOfFrames", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
    "ImagerPixelSpacing", "NominalScannedPixelSpacing", "SharedFunctionalGroupsSequence",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData",
    # what tells the volumes of a 4D series apart (medtl.io.volumes) and mosaic geometry
    "ImageType", "InstanceNumber", "AcquisitionNumber", "TemporalPositionIdentifier", "TriggerTime", "EchoTime",
    "EchoNumbers", "RepetitionTime", "DiffusionBValue", "DiffusionGradientOrientation", "MRDiffusionSequence",
    "SpacingBetweenSlices", "PerFrameFunctionalGroupsSequence", "DimensionIndexSequence", "GridFrameOffsetVector",
)  # fmt: skip
# Private elements a header-only read keeps: the Siemens CSA image header (mosaics, b-values) and GE's
# b-value (0043,1039) with their private creators.
_PRIVATE_HEADER_TAGS = (*CSA_TAGS, (0x0043, 0x0010), (0x0043, 0x1039))
#: Storage SOP classes with pixel data whose names lack "Image Storage".
PIXEL_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.66.8",  # Height Map Segmentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.81.1",  # Ophthalmic Thickness Map
    "1.2.840.10008.5.1.4.1.1.82.1",  # Corneal Topography Map
    "1.2.840.10008.5.1.4.1.1.77.1.5.8",  # Ophthalmic OCT B-scan Volume Analysis
    "1.2.840.10008.5.1.4.1.1.501.4",  # DICOS 2D AIT
    "1.2.840.10008.5.1.4.1.1.501.5",  # DICOS 3D AIT
})  # fmt: skip
_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")
_IOP_TOL = 1e-4


def _add_flags(meta: dict, flags: list[str]) -> None:
    for flag in flags:
        if flag not in meta.setdefault("flags", []):
            meta["flags"].append(flag)


# ----------------------------------------------------------------------------- reading
def read_dataset(path: str | os.PathLike, *, header_only: bool = False):
    """Parse one DICOM file, mapping every failure to a typed :class:`ImageReadError`.

    With ``header_only`` the pixel data is not loaded (its length is still checked against
    the file size, so truncated files are caught by a header scan).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = os.fspath(path)
    # a header scan keeps only what it reports: converting every value dominates its time
    opts = {"defer_size": "64 KB", "specific_tags": _header_tags()} if header_only else {}
    try:
        ds = pydicom.dcmread(path, **opts)
    except InvalidDicomError:
        try:  # a bare stream without the 128-byte preamble
            ds = pydicom.dcmread(path, force=True, **opts)
        except Exception as exc:  # noqa: BLE001 - any parse failure means "not DICOM"
            raise NotAnImageError(path, f"not a DICOM file ({exc})") from exc
        if "SOPClassUID" not in ds and "PixelData" not in ds:
            raise NotAnImageError(path, "not a DICOM file (no DICOM preamble and no DICOM elements)") from None
        _infer_transfer_syntax(ds)
    except (EOFError, OSError) as exc:
        raise ImageReadError(path, f"DICOM file is truncated or unreadable ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for corrupt headers
        raise ImageReadError(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from exc
    _check_pixel_data(ds, path)
    return ds


@lru_cache(maxsize=1)
def _header_tags() -> list:
    from pydicom.tag import Tag

    return [Tag(k) for k in HEADER_KEYWORDS] + [Tag(*t) for t in _PRIVATE_HEADER_TAGS]


def _infer_transfer_syntax(ds) -> None:
    """A bare dataset has no file meta: record the encoding pydicom found, so it can decode."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    ds.file_meta = meta if meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )


def _sop_name(ds) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "unknown SOP class")


def _sop_class(ds):
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID (all a DICOMDIR has); only a
    well-formed UID counts (a file cut off inside the value holds a stub such as ``1.2.840.``);
    None if neither is one."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    for uid in (ds.get("SOPClassUID"), meta.get("MediaStorageSOPClassUID") if meta is not None else None):
        if uid:
            uid = UID(str(uid).strip("\x00 "))
            if uid.is_valid:
                return uid
    return None


def is_image_sop_class(uid) -> bool:
    """True for a storage SOP class whose objects carry pixel data (CT Image, Enhanced MR Image, RT Dose ...).

    >>> is_image_sop_class("1.2.840.10008.5.1.4.1.1.2"), is_image_sop_class("1.2.840.10008.5.1.4.1.1.88.11")
    (True, False)
    """
    from pydicom.uid import UID

    uid = UID(str(uid))
    return "Image Storage" in uid.name or str(uid) in PIXEL_SOP_CLASSES


#: Deflated Explicit VR Little Endian: the whole dataset is zlib-compressed after the file meta.
DEFLATED = "1.2.840.10008.1.2.1.99"


def _check_pixel_data(ds, path: str) -> None:
    pixel_tags = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    tag = next((t for t in pixel_tags if t in ds), None)
    sop = _sop_class(ds) if tag is None else None
    if sop is not None and not is_image_sop_class(sop):
        # not broken: an object that never holds pixels (index, report, plan, PDF, waveform, private data ...)
        what = sop.name if sop.name != str(sop) else "unknown or private SOP class"
        raise NonImageObjectError(path, f"no pixel data: a non-image DICOM object ({what}, SOP class {sop})", what)
    if tag is None and len(ds) == 0:
        raise ImageReadError(path, "corrupt or truncated DICOM: no data element could be read after the file meta")
    if tag is None:
        name = getattr(sop, "name", None) or _sop_name(ds)
        broken = ": an image object without its pixels (cut short?)" if sop is not None else ""
        raise ImageReadError(path, f"no pixel data ({name}){broken}")
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if kw not in ds:
            raise ImageReadError(path, f"pixel data without the required {kw} attribute")
    raw = ds.get_item(tag)
    length = getattr(raw, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return  # encapsulated (compressed) data: checked when decoded
    tell = getattr(raw, "value_tell", None)
    tsyntax = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID")
    if tsyntax == DEFLATED:
        tell = None  # positions are in the inflated stream: the file is smaller by design
    if tell is not None and tell + length > os.path.getsize(path):
        have = max(os.path.getsize(path) - tell, 0)
        raise ImageReadError(path, f"DICOM file is truncated: pixel data has {have} of {length} bytes")
    if tsyntax is not None and tsyntax.is_encapsulated:
        return
    expected = (
        int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("NumberOfFrames", 1) or 1)
    )
    expected = expected * int(ds.BitsAllocated) // 8 if int(ds.BitsAllocated) >= 8 else (expected + 7) // 8
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        expected = expected * 2 // 3  # chroma subsampled 2:1 horizontally
    if length < expected:
        raise ImageReadError(path, f"DICOM file is truncated: pixel data has {length} of {expected} bytes")


def _decode(ds, path: str) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise RuntimeError/ValueError/...
        tsyntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        name = getattr(tsyntax, "name", None) or str(tsyntax)
        msg = " ".join(line.strip() for line in str(exc).strip().splitlines())[:400]
        if "less than expected" in msg or "truncat" in msg.lower():
            raise ImageReadError(path, f"DICOM file is truncated: {msg}") from exc
        raise UnsupportedImageError(path, f"cannot decode pixel data in transfer syntax '{name}': {msg}") from exc


# ----------------------------------------------------------------------------- metadata
def _plain(value):
    """pydicom value → plain Python (IS/DS subclass int/float/Decimal; MultiValue → list)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (float, Decimal)):
        return float(value)
    return str(value).strip() or None


def dataset_meta(ds) -> dict:
    """Non-identifying metadata of a dataset: the allow-list plus pseudonymised keys.

    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.Modality = "CT"; ds.PatientName = "DOE^JANE"; ds.PatientAge = "093Y"
    >>> meta = dataset_meta(ds)
    >>> meta["modality"], meta["age"], "DOE" in repr(meta)
    ('CT', 90, False)
    """
    meta: dict = {}
    for keyword, key in SAFE_ATTRIBUTES.items():
        value = _plain(ds.get(keyword))
        if value not in (None, "", []):
            meta[key] = value
    if "sex" in meta:
        meta["sex"] = {"M": "M", "F": "F", "O": "O"}.get(str(meta["sex"]).upper()[:1])
        if meta["sex"] is None:
            del meta["sex"]
    age = parse_age(ds.get("PatientAge"))
    if age is None:
        age = age_from_dates(ds.get("PatientBirthDate"), ds.get("StudyDate") or ds.get("AcquisitionDate"))
    if age is not None:
        meta["age"] = age
    site = ds.get("InstitutionName") or ds.get("StationName")
    keys = {
        "patient": pseudonym(ds.get("PatientID"), "patient"),
        "study": pseudonym(ds.get("StudyInstanceUID"), "study"),
        "series": pseudonym(ds.get("SeriesInstanceUID"), "series"),
        "site": pseudonym(site, "site"),
    }
    meta.update({k: v for k, v in keys.items() if v})
    sop = ds.get("SOPClassUID")
    if sop is not None:
        meta["sop_class"] = getattr(sop, "name", None) or str(sop)
    return meta


def _window(ds) -> tuple[float | None, float | None, str | None]:
    """First window (centre, width, VOI LUT function): top level, else the functional groups."""
    src = ds
    if "WindowCenter" not in ds:
        for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            groups = ds.get(seq)
            if groups and "FrameVOILUTSequence" in groups[0]:
                src = groups[0].FrameVOILUTSequence[0]
                break
    values = [src.get("WindowCenter"), src.get("WindowWidth")]
    center, width = (None if v is None else float(v[0] if type(v).__name__ == "MultiValue" else v) for v in values)
    fn = src.get("VOILUTFunction")
    return center, width, (str(fn) if fn else None)


# ----------------------------------------------------------------------------- intensities
def _rescale_of(ds, fg_shared=None, fg_frame=None) -> tuple[float, float]:
    for src in (fg_frame, fg_shared):
        if src is not None and "PixelValueTransformationSequence" in src:
            pvt = src.PixelValueTransformationSequence[0]
            return float(pvt.get("RescaleSlope", 1.0)), float(pvt.get("RescaleIntercept", 0.0))
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    if "DoseGridScaling" in ds:  # RT dose stores Gy / DoseGridScaling
        slope *= float(ds.DoseGridScaling)
    return slope, float(ds.get("RescaleIntercept", 0.0) or 0.0)


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.BitsAllocated))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _to_units(raw: np.ndarray, ds, slope: float, intercept: float, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values → modality units (float32), applying a Modality LUT if there is one."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        units = apply_modality_lut(raw, ds).astype(np.float32, copy=False)
        if out is None:
            return units
        out[...] = units
        return out
    if out is None:
        out = np.empty(raw.shape, np.float32)
    np.multiply(raw, np.float32(slope), out=out, casting="unsafe")
    if intercept:
        out += np.float32(intercept)
    return out


def _display_range(ds, slope: float, intercept: float) -> tuple[float, float]:
    lo, hi = _stored_range(ds)
    ends = _to_units(np.array([lo, hi], dtype=np.int64), ds, slope, intercept)
    return float(ends.min()), float(ends.max())


def _color(ds, raw: np.ndarray, path: str) -> np.ndarray:
    """Colour pixels → channel-first float32 (3, ..., rows, cols)."""
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        raw = apply_color_lut(raw, ds)
    if raw.shape[-1] != 3:
        raise UnsupportedImageError(path, f"colour image with {raw.shape[-1]} samples per pixel")
    return np.moveaxis(raw, -1, 0).astype(np.float32)


def _colour_scale(ds) -> float:
    """White of a colour image: the palette's entry size, else the stored bit depth."""
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" in ds:
        return full_scale(int(ds.RedPaletteColorLookupTableDescriptor[2]))
    return full_scale(int(ds.get("BitsStored", ds.get("BitsAllocated", 8))))


def _resolve_colour(rgb: np.ndarray, ds, meta: dict) -> np.ndarray:
    """medtl's grey-or-colour rule (:mod:`medtl.io.colour`) on (3, ...) pixels: ultrasound and
    secondary captures are often grey stored as RGB. Returns (3, ...) or the single grey channel."""
    meta["full_scale"] = _colour_scale(ds)
    pixels, found = resolve_colour(rgb, meta["full_scale"])
    meta.update(found)
    return pixels


# ----------------------------------------------------------------------------- single files
def valid_spacing(value) -> tuple[float, float] | None:
    """(row, column) spacing from a PixelSpacing-like value; None if absent or not positive."""
    try:
        rows, cols = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None  # some exports write 0\0


def _spacing_2d(ds, meta: dict) -> tuple[float, float]:
    for kw in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = valid_spacing(ds.get(kw))
        if value is not None:
            meta["spacing_source"] = kw
            return value
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions and "PhysicalDeltaX" in regions[0] and int(regions[0].get("PhysicalUnitsXDirection", 0)) == 3:
        meta["spacing_source"] = "SequenceOfUltrasoundRegions"
        return abs(float(regions[0].PhysicalDeltaY)) * 10.0, abs(float(regions[0].PhysicalDeltaX)) * 10.0  # cm → mm
    _add_flags(meta, ["spacing_unknown"])
    return 1.0, 1.0


def _finish(
    units: np.ndarray, ds, meta: dict, slope: float, intercept: float, apply_voi: bool, path: str
) -> np.ndarray:
    """Window/VOI bookkeeping and MONOCHROME1 inversion on frames shaped (..., rows, cols)."""
    center, width, fn = _window(ds)
    monochrome1 = ds.get("PhotometricInterpretation") == "MONOCHROME1"
    if apply_voi:
        if "VOILUTSequence" in ds:
            from pydicom.pixels import apply_voi

            lut = ds.VOILUTSequence[0]
            bits = int(lut.LUTDescriptor[2])
            units = apply_voi(units, ds).astype(np.float32) / float(2**bits - 1)
        elif center is not None and width is not None:
            from .display import window

            units = window(units, center, width, function=fn or "LINEAR")
        else:
            raise ImageReadError(path, "apply_voi=True but the file has no window or VOI LUT")
        if monochrome1:
            units = 1.0 - units
        meta["units"] = "display [0, 1] after VOI LUT"
    else:
        if monochrome1:
            lo, hi = _display_range(ds, slope, intercept)
            units = np.subtract(lo + hi, units, out=units)
            if center is not None:
                center = lo + hi - center
        if center is not None and width is not None:
            meta["window_center"], meta["window_width"] = center, width
            if fn:
                meta["voi_function"] = fn
    if monochrome1:
        meta["inverted"] = True
    return units


def load_dicom_file(
    path: str | os.PathLike, ds=None, *, apply_voi: bool = False, volume: int | str | None = None
) -> Image:
    """Read one DICOM file: a 2D image, a Siemens mosaic, or a multi-frame object (enhanced CT/MR, RT dose, cine).

    Args:
        path: the file.
        ds: an already parsed dataset of ``path`` (saves a second parse).
        apply_voi: map to display values in [0, 1] through the file's VOI LUT or window.
        volume: for an object holding several volumes (an enhanced fMRI or diffusion file): an
            index picks one, ``"all"`` returns them all (volume axis first); see
            :func:`load_dicom_series`. Ignored for a single volume.

    Raises:
        ImageReadError: unreadable, truncated, no pixel data; ``NonImageObjectError`` for an object
        that holds no image (report, presentation state, DICOMDIR ...); ``UnsupportedImageError``
        for a codec no installed decoder handles; ``SeriesError`` for several volumes without
        ``volume``.
    """
    path = os.fspath(path)
    ds = read_dataset(path) if ds is None else ds
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1 and is_mosaic(ds):
        return _stack_files([(path, ds)], path, apply_voi, volume)
    meta = dataset_meta(ds)
    raw = _decode(ds, path)
    if frames > 1:
        return _load_multiframe(ds, raw, meta, path, apply_voi, volume)
    if ds.get("PhotometricInterpretation") in _COLOR:
        pixels = _resolve_colour(_color(ds, raw, path), ds, meta)  # (3, rows, cols) or (rows, cols)
        array = pixels.transpose(0, 2, 1) if pixels.ndim == 3 else pixels.T
    else:
        slope, intercept = _rescale_of(ds)
        array = _finish(_to_units(raw, ds, slope, intercept), ds, meta, slope, intercept, apply_voi, path).T
    if "ImageOrientationPatient" in ds and "ImagePositionPatient" in ds:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        spacing = _spacing_2d(ds, meta)
        thickness = float(ds.get("SliceThickness") or 1.0)
        affine = dicom_affine(iop, spacing, [float(v) for v in ds.ImagePositionPatient], slice_normal(iop) * thickness)
        meta["geometry"] = "patient"
    else:
        spacing = _spacing_2d(ds, meta)
        affine = dicom_affine([1, 0, 0, 0, 1, 0], spacing, (0, 0, 0), (0, 0, 1))
        meta["geometry"] = "detector"  # projection/photo: no patient coordinates exist
    return Image(array, affine, meta)


def _functional_group(ds):
    """``group(frame, "SequenceName")``: the frame's functional group item, per-frame before shared."""
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    per = ds.get("PerFrameFunctionalGroupsSequence")

    def group(f: int, seq: str):
        for src in ((per[f] if per and f < len(per) else None), shared):
            if src is not None and src.get(seq):
                return src[seq][0]
        return None

    return group


def _frame_geometry(ds, path: str) -> tuple[np.ndarray | None, np.ndarray | None, list | None]:
    """(frame positions (F, 3) LPS, orientation, pixel spacing) of a multi-frame object.

    Positions come from the per-frame PlanePositionSequence (enhanced objects) or from
    GridFrameOffsetVector (RT dose); ``None`` when the frames are not slices (cine, tomosynthesis
    projections).
    """
    frames = int(ds.NumberOfFrames)
    group = _functional_group(ds)
    planes = group(0, "PlanePositionSequence") is not None and group(0, "PlaneOrientationSequence") is not None
    if ds.get("PerFrameFunctionalGroupsSequence") and planes:
        positions = np.array(
            [[float(v) for v in group(f, "PlanePositionSequence").ImagePositionPatient] for f in range(frames)]
        )
        iops = np.array(
            [[float(v) for v in group(f, "PlaneOrientationSequence").ImageOrientationPatient] for f in range(frames)]
        )
        if np.abs(iops - iops[0]).max() > _IOP_TOL:
            raise SeriesError(path, "frames of this multi-frame object have different orientations")
        pm = group(0, "PixelMeasuresSequence")
        spacing = [float(v) for v in pm.PixelSpacing] if pm is not None and "PixelSpacing" in pm else None
        return positions, iops[0], spacing
    if "GridFrameOffsetVector" in ds and "ImagePositionPatient" in ds:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        offsets = np.array([float(v) for v in ds.GridFrameOffsetVector])
        positions = np.array([float(v) for v in ds.ImagePositionPatient]) + offsets[:, None] * slice_normal(iop)
        return positions, iop, None
    return None, None, None


def frame_volume_set(ds, path: str | os.PathLike) -> VolumeSet | None:
    """How the frames of a multi-frame object form volumes (None when its frames are not slices).

    Works on a header-only read (:func:`read_dataset` with ``header_only``): ``medtl scan`` uses it.
    """
    path = os.fspath(path)
    positions, iop, _ = _frame_geometry(ds, path)
    if positions is None:
        return None
    group = _functional_group(ds)
    slices = [LocatedSlice((0, f), positions[f], *frame_keys(ds, f, group)) for f in range(len(positions))]
    return split_volumes(slices, iop, where=path)


def _load_multiframe(ds, raw: np.ndarray, meta: dict, path: str, apply_voi: bool, volume) -> Image:
    frames = int(ds.NumberOfFrames)
    if ds.get("PhotometricInterpretation") in _COLOR:
        # cine colour (ultrasound loops): (3, cols, rows, frames), frames are time
        pixels = _resolve_colour(_color(ds, raw, path), ds, meta)  # (3, frames, rows, cols) or without the 3
        array = pixels.transpose(0, 3, 2, 1) if pixels.ndim == 4 else pixels.transpose(2, 1, 0)
        _add_flags(meta, ["frames_not_spatial"])
        spacing = _spacing_2d(ds, meta)
        return Image(array, dicom_affine([1, 0, 0, 0, 1, 0], spacing, (0, 0, 0), (0, 0, 1)), meta)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per = ds.get("PerFrameFunctionalGroupsSequence")
    units = np.empty(raw.shape, np.float32)
    for f in range(frames):
        slope, intercept = _rescale_of(ds, shared, per[f] if per else None)
        _to_units(raw[f], ds, slope, intercept, out=units[f])
    positions, iop, spacing = _frame_geometry(ds, path)
    if spacing is None:
        spacing = _spacing_2d(ds, meta)
    slope, intercept = _rescale_of(ds, shared, per[0] if per else None)
    units = _finish(units, ds, meta, slope, intercept, apply_voi, path)
    if positions is None:
        _add_flags(meta, ["frames_not_spatial"])
        return Image(units.transpose(2, 1, 0), dicom_affine([1, 0, 0, 0, 1, 0], spacing, (0, 0, 0), (0, 0, 1)), meta)
    volumes = frame_volume_set(ds, path)
    chosen = volumes.select(volume)
    stacked = np.stack([units[[frame for _, frame in volumes.sources(k)]] for k in chosen])
    return _volume_image(stacked, volumes, chosen, meta, ds, iop, spacing)


def _volume_image(
    units: np.ndarray, volumes: VolumeSet, chosen: list[int], meta: dict, ds, iop, spacing, colour: bool = False
) -> Image:
    """(volumes, slices, rows, cols) units → a 3D image, or 4D with the volume axis first when several are chosen.

    The affine is the first chosen volume's own: the same as a 3D load of its slices alone gives.
    Colour (one volume, ``(1, slices, 3, rows, cols)``) becomes ``(3, i, j, k)``.
    """
    first = volumes.volumes[chosen[0]]
    _add_flags(meta, first.stack.flags)
    meta.update(first.stack.details)
    meta.update(volumes.meta())
    meta["geometry"] = "patient"
    if volumes.n > 1 and len(chosen) == 1:
        meta["volume"] = chosen[0]
    step = first.stack.step
    if volumes.slices_per_volume == 1:  # one slice per volume: as thick as a single file says
        step = slice_normal(iop) * float(ds.get("SliceThickness") or 1.0)
    affine = dicom_affine(iop, spacing, first.origin, step)
    if colour:
        return Image(_resolve_colour(units[0].transpose(1, 3, 2, 0), ds, meta), affine, meta)
    if len(chosen) > 1:
        meta["channel_axis"] = 0
        return Image(units.transpose(0, 3, 2, 1), affine, meta)
    return Image(units[0].transpose(2, 1, 0), affine, meta)


# ----------------------------------------------------------------------------- series
def group_series(datasets: Iterable[tuple[str, object]]) -> dict[str, list[tuple[str, object]]]:
    """Group ``(path, dataset)`` pairs by SeriesInstanceUID (files without one by path)."""
    groups: dict[str, list] = defaultdict(list)
    for path, ds in datasets:
        groups[str(ds.get("SeriesInstanceUID") or path)].append((path, ds))
    return dict(groups)


def _pick_series(groups: dict, series: str | None, where: str) -> list:
    if series is not None:
        chosen = [g for uid, g in groups.items() if series in (uid, pseudonym(uid, "series"))]
        if not chosen:
            raise SeriesError(where, f"no series matches '{series}'; found {_describe(groups)}")
        return chosen[0]
    if len(groups) > 1:
        raise SeriesError(where, f"holds {len(groups)} series; pick one with series=<key> (CLI: --series KEY) of {_describe(groups)}")
    return next(iter(groups.values()))


def _describe(groups: dict) -> str:
    parts = []
    for uid, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ds = members[0][1]
        parts.append(f"{pseudonym(uid, 'series')} ({ds.get('Modality', '?')}, {len(members)} file(s))")
    return ", ".join(parts)


def load_dicom_series(
    paths: Sequence[str | os.PathLike],
    *,
    series: str | None = None,
    where: str | None = None,
    apply_voi: bool = False,
    volume: int | str | None = None,
) -> Image:
    """Read the files of one DICOM series as a volume (or a single file as a 2D image).

    Non-image objects among the files (DICOMDIR, structured reports, presentation states, key
    object selections, RT plans ...) are skipped; ``meta["skipped_non_image"]`` counts them.

    A series whose positions repeat (fMRI, diffusion, multi-echo: one set of slices per volume)
    is split into volumes by :func:`medtl.io.volumes.split_volumes`; Siemens mosaics are cut into
    their slices first.

    Args:
        paths: DICOM files, in any order; non-DICOM files among them raise.
        series: SeriesInstanceUID or its medtl pseudonym, when the files hold several series.
        where: how to name the set in errors (default: the common folder).
        apply_voi: see :func:`load_dicom_file`.
        volume: for a series of several volumes: an index picks one volume (3D), ``"all"``
            returns every volume as a 4D image ``(volumes, i, j, k)`` with ``meta["channel_axis"] == 0``.
            Ignored for a single volume.

    Raises:
        SeriesError: several series without ``series``, inconsistent orientation or size,
        slices missing positions, positions repeated unequally, several volumes without ``volume``.
        NonImageObjectError: the files hold only non-image objects.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise SeriesError(where, "no DICOM files")
    where = where or os.path.commonpath([os.path.abspath(p) for p in paths])
    images, skipped = _read_images(paths)
    if not images:
        kinds = sorted({str(e.sop_class) for e in skipped})
        raise NonImageObjectError(
            where, f"holds no image, only {len(skipped)} non-image DICOM object(s) ({', '.join(kinds)})"
        )
    members = _pick_series(group_series(images), series, where)
    if len(members) == 1:
        img = load_dicom_file(members[0][0], members[0][1], apply_voi=apply_voi, volume=volume)
    else:
        img = _stack_files(members, where, apply_voi, volume)
    if skipped:
        img.meta["skipped_non_image"] = len(skipped)
    return img


def _read_images(paths: list[str]) -> tuple[list[tuple[str, object]], list[NonImageObjectError]]:
    """Parse every file; non-image objects are set aside, every other failure raises."""
    images, skipped = [], []
    for p in paths:
        try:
            images.append((p, read_dataset(p)))
        except NonImageObjectError as exc:
            skipped.append(exc)
    return images, skipped


def located_slices(ds, path: str | os.PathLike, file_index: int = 0) -> list[LocatedSlice]:
    """The slices a single-frame file contributes to its series: one, or one per mosaic tile.

    ``source`` is ``(file_index, tile)`` (tile 0 for an ordinary file). Works on a header-only read.
    """
    if is_mosaic(ds):
        csa = _csa_or_raise(ds, path)
        layout = mosaic_layout(ds, path, csa=csa)
        keys, attrs = slice_keys(ds, csa)
        return [LocatedSlice((file_index, t), layout.positions[t], keys, attrs) for t in range(layout.n_tiles)]
    keys, attrs = slice_keys(ds, _siemens_diffusion_csa(ds))
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    return [LocatedSlice((file_index, 0), position, keys, attrs)]


def _siemens_diffusion_csa(ds) -> dict | None:
    """The CSA header of a Siemens diffusion image (b-value and direction fallback); None otherwise."""
    image_type = ds.get("ImageType") or []
    image_type = " ".join([image_type] if isinstance(image_type, str) else [str(v) for v in image_type])
    if "SIEMENS" not in str(ds.get("Manufacturer") or "").upper() or "DIFFUSION" not in image_type.upper():
        return None
    try:
        return csa_image_header(ds)
    except ValueError:
        return None  # only a fallback: a damaged CSA header leaves the standard attributes


def _csa_or_raise(ds, path) -> dict | None:
    try:
        return csa_image_header(ds)
    except ValueError as exc:
        raise ImageReadError(path, str(exc)) from exc


def _check_stackable(members: list, where: str) -> np.ndarray:
    """The shared orientation of a set of files, after checking they can form volumes."""
    missing = [p for p, ds in members if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds]
    if missing:
        raise SeriesError(
            where,
            f"{len(missing)} of {len(members)} files lack ImagePositionPatient/ImageOrientationPatient "
            f"(e.g. {missing[0]}); they are separate 2D images: load them one by one",
        )
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in members):
        raise SeriesError(where, "series mixes multi-frame files; load each file on its own")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
    if len(sizes) > 1:
        raise SeriesError(where, f"slices differ in size: {sorted(sizes)}")
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in members])
    if np.abs(iops - iops[0]).max() > _IOP_TOL:
        n = len({tuple(np.round(r, 3)) for r in iops})
        raise SeriesError(where, f"slices have {n} different orientations (a localizer mixed in?)")
    return iops[0]


def _stack_files(members: list, where: str, apply_voi: bool, volume=None) -> Image:
    """Single-frame files (or one mosaic) → one volume, or the chosen volumes of a 4D series."""
    iop = _check_stackable(members, where)
    first = members[0][1]
    slices = [s for f, (path, ds) in enumerate(members) for s in located_slices(ds, path, f)]
    per_file = set(Counter(s.source[0] for s in slices).values())
    if len(per_file) > 1:  # every file is one slice, or a mosaic of the same number of slices
        raise SeriesError(
            where, f"files hold different numbers of slices ({sorted(per_file)}): mosaics mixed with other images"
        )
    volumes = split_volumes(slices, iop, where=where)
    chosen = volumes.select(volume)
    meta = dataset_meta(first)
    meta["n_files"] = len(members)
    if len(slices) > len(members):
        meta["mosaic"], meta["n_mosaic_tiles"] = True, len(slices) // len(members)
    colour = first.get("PhotometricInterpretation") in _COLOR
    if colour and volumes.n > 1:
        raise UnsupportedImageError(where, f"colour series of several volumes ({volumes.describe()})")
    units, slope, intercept = _read_units(members, volumes, chosen, colour)
    if not colour:
        units = _finish(units, first, meta, slope, intercept, apply_voi, where)
    return _volume_image(units, volumes, chosen, meta, first, iop, _spacing_2d(first, meta), colour=colour)


def _read_units(members: list, volumes: VolumeSet, chosen: list[int], colour: bool):
    """Decode the chosen volumes' slices: (volumes, slices[, 3], rows, cols) float32, and the first rescale."""
    rows, cols = int(members[0][1].Rows), int(members[0][1].Columns)
    n_tiles = len(volumes.slices) // len(members)
    if n_tiles > 1:  # a mosaic: ceil(sqrt(n)) tiles a side
        side = math.ceil(math.sqrt(n_tiles))
        rows, cols = rows // side, cols // side
    shape = (len(chosen), volumes.slices_per_volume) + ((3,) if colour else ()) + (rows, cols)
    units = np.empty(shape, np.float32)
    rescales = {}
    cached: tuple[int, np.ndarray | None] = (-1, None)  # a mosaic's tiles are read together
    for v, k in enumerate(chosen):
        for s, (f, tile) in enumerate(volumes.sources(k)):
            path, ds = members[f]
            if cached[0] != f:
                raw = _decode(ds, path)
                cached = (f, split_tiles(raw, n_tiles) if n_tiles > 1 else raw[None])
            if colour:
                units[v, s] = _color(ds, cached[1][tile], path)
                continue
            rescales.setdefault(f, _rescale_of(ds))
            _to_units(cached[1][tile], ds, *rescales[f], out=units[v, s])
    slope, intercept = rescales.get(volumes.sources(chosen[0])[0][0], (1.0, 0.0))
    return units, slope, intercept


def dicom_files_under(folder: str | os.PathLike) -> list[str]:
    """Every DICOM file below ``folder`` (recursively), recognised by content."""
    from .sniff import sniff

    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            try:
                if sniff(p) == "dicom":
                    found.append(p)
            except OSError:
                continue
    return found


def load_dicom_folder(
    folder: str | os.PathLike, *, series: str | None = None, apply_voi: bool = False, volume: int | str | None = None
) -> Image:
    """Read the DICOM series in ``folder`` (recursively); see :func:`load_dicom_series`."""
    files = dicom_files_under(folder)
    if not files:
        raise ImageReadError(folder, "folder holds no DICOM files")
    return load_dicom_series(files, series=series, where=str(Path(folder)), apply_voi=apply_voi, volume=volume)
