"""Folders → manifest: one row per 2D image, 3D or 4D series, one error row per broken file.

Only headers are read (pixel data lengths are checked against file sizes, so truncated files
are still caught), in parallel across processes. Nothing written holds a direct identifier:
study, series, patient and site appear as salted pseudonyms (:mod:`medtl.io.phi`).

>>> import tempfile
>>> result = scan(tempfile.mkdtemp())
>>> result.rows, result.errors
([], [])
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..errors import ImageReadError, MedtlError, NonImageObjectError, NotAnImageError, is_fatal
from .sniff import sniff

__all__ = ["scan", "ScanResult", "MANIFEST_COLUMNS", "ERROR_COLUMNS", "check_output_file"]

#: Columns of the manifest CSV, in order.
MANIFEST_COLUMNS = (
    "path", "series", "format", "modality", "kind", "shape", "spacing", "n_files", "volumes",
    "sex", "age", "site", "patient", "study", "manufacturer", "body_part", "view", "photometric", "colour", "flags",
)  # fmt: skip
#: Columns of the errors CSV.
ERROR_COLUMNS = ("path", "error", "reason")

# Files whose content is unrecognised are errors only if their name suggests an image.
_IMAGE_SUFFIXES = {
    ".dcm",
    ".dicom",
    ".ima",
    ".img",
    ".nii",
    ".gz",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".npy",
    ".npz",
}
# Modalities whose files are separate 2D images even when they carry patient positions.
_PROJECTION = {"CR", "DX", "MG", "IO", "PX", "XA", "RF", "US", "SC", "OT", "XC", "ES", "SM"}
_SMALL_SCAN = 64  # below this many files a process pool costs more than it saves


@dataclass
class ScanResult:
    """What :func:`scan` found: manifest ``rows``, ``errors`` and the count of ``skipped`` non-images.

    ``skipped`` counts obvious non-image files (``README.txt``) and non-image DICOM objects
    (DICOMDIR, reports, presentation states, key object selections, RT plans ...).
    """

    root: str
    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0
    n_files: int = 0
    skipped_paths: list[str] = field(default_factory=list, repr=False)
    files: list[str] = field(default_factory=list, repr=False)

    def content_digest(self) -> str:
        """A fingerprint of every file the scan looked at: its path under ``root``, size and
        modification time. A file added, removed, renamed, replaced or edited since changes it;
        a job that says it is complete compares it (16 hex digits)."""
        import hashlib

        h = hashlib.sha256()
        base = self.root if os.path.isdir(self.root) else os.path.dirname(self.root)
        for path in sorted(self.files):
            try:
                st = os.stat(path)
                facts = f"{st.st_size} {st.st_mtime_ns}"
            except OSError:
                facts = "gone"
            h.update(f"{os.path.relpath(path, base)}\x00{facts}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]

    def why_empty(self) -> str:
        """Why the scan found no usable image: what it looked at, what it skipped and why, with
        examples named relative to ``root``.

        >>> ScanResult(root="in", n_files=2, skipped=2, skipped_paths=["in/a.txt", "in/b.csv"]).why_empty()
        'holds no image medtl can read: 2 file(s) looked at; 2 skipped as not images (a.txt, b.csv)'
        """
        base = os.path.dirname(self.root) if os.path.isfile(self.root) else self.root

        def name(path: str) -> str:
            return os.path.relpath(path, base) if base else path

        if not self.n_files:
            return "holds no files (hidden files are not read)" if os.path.isdir(self.root) else "holds no image"
        parts = [f"{self.n_files} file(s) looked at"]
        if self.skipped:
            examples = ", ".join(name(p) for p in self.skipped_paths[:3]) + (" ..." if self.skipped > 3 else "")
            parts.append(f"{self.skipped} skipped as not images ({examples})")
        if self.errors:
            e = self.errors[0]
            parts.append(f"{len(self.errors)} unreadable (e.g. {name(e['path'])}: {e['reason']})")
        return "holds no image medtl can read: " + "; ".join(parts)

    def to_csv(
        self,
        manifest: str | os.PathLike | None = None,
        errors: str | os.PathLike | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Write the manifest and/or the errors as CSV (UTF-8, header row), each to a temporary
        name renamed into place, so a kill never leaves half a manifest.

        Args:
            overwrite: replace an earlier manifest (errors list) of a scan at that path; a file of
                any other kind (a manifest you added labels to, another command's output) is
                never replaced.

        Raises:
            OutputError: a target is a folder, inside the scanned folder or another medtl output,
                an existing file (without ``overwrite``, or not a scan's), or cannot be written.
        """
        from ..files import write_csv

        targets = ((manifest, self.rows, MANIFEST_COLUMNS), (errors, self.errors, ERROR_COLUMNS))
        check_two_targets(manifest, errors)
        for target, _, cols in targets:
            if target is not None:
                check_output_file(target, self.root, overwrite=overwrite, columns=cols)
        for target, rows, cols in targets:
            if target is not None:
                write_csv(target, rows, list(cols))

    def summary(self) -> str:
        """A short human-readable account of the scan."""
        kinds: dict[tuple, int] = defaultdict(int)
        for row in self.rows:
            kinds[(row.get("format"), row.get("modality") or "-", row.get("kind"))] += 1
        lines = [
            f"Scanned {self.n_files} files under {self.root}: {len(self.rows)} images/series, "
            f"{len(self.errors)} errors, {self.skipped} non-image files skipped."
        ]
        if kinds:
            lines.append(f"  {'format':<7} {'modality':<9} {'kind':<5} {'count':>5}")
            for (fmt, mod, kind), n in sorted(kinds.items()):
                lines.append(f"  {fmt:<7} {mod:<9} {kind:<5} {n:>5}")
        flagged = [r for r in self.rows if r.get("flags")]
        if flagged:
            lines.append(f"  {len(flagged)} flagged: " + "; ".join(f"{r['path']} [{r['flags']}]" for r in flagged[:5]))
        for err in self.errors[:10]:
            lines.append(f"  error: {err['path']}: {err['reason']}")
        if len(self.errors) > 10:
            lines.append(f"  ... and {len(self.errors) - 10} more errors (see the errors CSV)")
        return "\n".join(lines)


def check_not_reading_file(target: str | os.PathLike, files: Iterable[str]) -> None:
    """Refuse an output file in a folder the scan read files from (through a link in the scanned
    tree): the next scan would list it, and it would sit among the inputs."""
    from ..errors import OutputError

    folder = os.path.realpath(os.path.dirname(os.path.abspath(target)))
    for path in files:
        if os.path.realpath(os.path.dirname(path)) == folder:
            raise OutputError(target, f"is in a folder the scan reads ({path} is there): give a path outside "
                              "the scanned tree")  # fmt: skip


def check_two_targets(manifest: str | os.PathLike | None, errors: str | os.PathLike | None) -> None:
    """Refuse one file for both the manifest and the errors list (the second would replace the first).

    >>> check_two_targets("m.csv", "./m.csv")
    Traceback (most recent call last):
    ...
    medtl.errors.OutputError: ./m.csv: is also the manifest's file (-o): give the errors list another name
    """
    from ..errors import OutputError

    if manifest and errors and os.path.realpath(manifest) == os.path.realpath(errors):
        raise OutputError(errors, "is also the manifest's file (-o): give the errors list another name")


def check_output_file(
    target: str | os.PathLike,
    scanned: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    columns: Iterable[str] = (),
) -> None:
    """Raise :class:`~medtl.errors.OutputError` unless ``target`` may be written as the CSV of a
    scan of ``scanned`` (:func:`medtl.outputs.check_output_file`: not a folder, not inside the
    scanned folder or another medtl output, an existing file only with ``overwrite`` and only a
    scan's own, with these ``columns``); its folder is created. Checked before a long scan.

    >>> check_output_file("/")
    Traceback (most recent call last):
    ...
    medtl.errors.OutputError: /: is a folder: give a file name such as manifest.csv
    """
    from ..outputs import check_output_file as check
    from ..outputs import csv_with_header

    check(target, inputs=[scanned], overwrite=overwrite, same_kind=csv_with_header(columns or MANIFEST_COLUMNS),
          example="manifest.csv")  # fmt: skip


# ----------------------------------------------------------------------------- per-file headers
def _fmt_tuple(values: Iterable[float]) -> str:
    return "x".join(f"{float(v):.6g}" for v in values)


def _dicom_header(path: str, series_meta: dict) -> dict:
    try:
        return _dicom_header_fields(path, series_meta)
    except MedtlError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed values (IS '1A', missing items ...)
        raise ImageReadError(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from exc


def _dicom_header_fields(path: str, series_meta: dict) -> dict:
    """Header facts of one file; ``series_meta`` memoises metadata per series (same patient, study)."""
    from .dicom import dataset_meta, frame_volume_set, located_slices, read_dataset, valid_spacing

    ds = read_dataset(path, header_only=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    uid = ds.get("SeriesInstanceUID")
    meta = series_meta.get(uid) if uid else None
    if meta is None:
        meta = dataset_meta(ds)
        if uid:
            series_meta[uid] = meta
    info = {
        "format": "dicom",
        "meta": meta,
        "series_uid": str(uid or path),
        "size": (cols, rows),
        "frames": frames,
        "samples": int(ds.get("SamplesPerPixel", 1)),
        "colour": _dicom_colour(ds, path, frames),
    }
    if "ImageOrientationPatient" in ds and "ImagePositionPatient" in ds and frames == 1:
        info["iop"] = [float(v) for v in ds.ImageOrientationPatient]
        info["ipp"] = [float(v) for v in ds.ImagePositionPatient]
        info["slices"] = located_slices(ds, path)  # one, or one per mosaic tile
    elif frames > 1:
        volumes = frame_volume_set(ds, path)
        if volumes is not None:
            stack = volumes.volumes[0].stack
            info["volumes"] = {"n": volumes.n, "slices": volumes.slices_per_volume, "spacing": stack.spacing,
                               "flags": list(stack.flags)}  # fmt: skip
    candidates = [ds.get(kw) for kw in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")]
    if "SharedFunctionalGroupsSequence" in ds:
        pm = ds.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence")
        candidates.append(pm[0].get("PixelSpacing") if pm else None)
    spacing = next((s for s in map(valid_spacing, candidates) if s is not None), None)
    info["spacing"] = spacing[::-1] if spacing else None  # (column, row) = array axis order
    return info


def _nifti_header(path: str) -> dict:
    from .nifti import check_nifti_size, open_nifti

    try:
        img = open_nifti(path)
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(path, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    check_nifti_size(path, img.header)
    shape = tuple(int(s) for s in img.shape)
    zooms = tuple(float(z) for z in img.header.get_zooms()[: min(3, len(shape))])
    return {"format": "nifti", "meta": {}, "shape": shape, "spacing": zooms, "colour": "gray"}


# Pillow modes that hold one grey channel: no pixels needed to know their colour mode
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _dicom_colour(ds, path: str, frames: int) -> str:
    """The colour mode :func:`~medtl.io.load_image` will report: grey from the header; a colour
    single-frame image decoded, since only pixels tell grey stored as RGB from colour (ultrasound
    and secondary captures often are); colour multi-frame objects (cine loops) from the header."""
    if int(ds.get("SamplesPerPixel", 1)) == 1 and ds.get("PhotometricInterpretation") != "PALETTE COLOR":
        return "gray"
    if frames > 1:
        return "rgb"
    from .colour import probe_colour

    return probe_colour(path)


def _raster_header(path: str, fmt: str) -> dict:
    try:
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(int(s) for s in tif.pages[0].shape)
                shape = (shape[1], shape[0]) + shape[2:]
            if len(shape) == 3:  # (3 or 4 samples): colour, or grey stored as colour
                from .colour import probe_colour

                return {"format": fmt, "meta": {}, "shape": shape, "colour": probe_colour(path)}
        elif fmt in ("npy", "npz"):
            arrays = np.load(path, mmap_mode="r", allow_pickle=False)
            if fmt == "npz":
                with arrays:
                    shapes = {k: arrays[k].shape for k in arrays.files}
                return {"format": fmt, "meta": {}, "shape": (), "arrays": shapes}
            shape = tuple(int(s) for s in arrays.shape)
        else:
            from PIL import Image as PILImage

            with PILImage.open(path) as im:
                shape = tuple(im.size)
                mode = im.mode
                im.verify() if fmt == "png" else im.load()  # decode: catches truncation
            if mode in _GRAY_MODES:
                colour = "gray"
            else:
                from .colour import probe_colour

                colour = probe_colour(path)
            return {"format": fmt, "meta": {"photometric": mode}, "shape": shape, "colour": colour}
    except MedtlError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise ImageReadError(path, f"unreadable {fmt.upper()} ({type(exc).__name__}: {exc})") from exc
    return {"format": fmt, "meta": {}, "shape": shape, "colour": "gray"}


def _read_header(path: str, series_meta: dict | None = None) -> tuple[str, dict | None, dict | None]:
    """(path, header info or None, error row or None); ``(path, None, None)`` = skipped."""
    import warnings

    with warnings.catch_warnings():
        # pydicom warns on every non-conformant value; the scan reports what breaks reading
        warnings.simplefilter("ignore", UserWarning)
        return _read_header_quiet(path, {} if series_meta is None else series_meta)


def _read_header_quiet(path: str, series_meta: dict) -> tuple[str, dict | None, dict | None]:
    try:
        try:
            fmt = sniff(path)
        except OSError as exc:
            raise ImageReadError(path, f"cannot open ({exc.strerror or exc})") from exc
        if fmt is None:
            name = os.path.basename(path).lower()
            suffix = os.path.splitext(name)[1]
            if (suffix and suffix not in _IMAGE_SUFFIXES) or (not suffix and _is_text(path)):
                return path, None, None  # README.txt, labels.csv ...: not an image, not an error
            if os.path.getsize(path) == 0:
                raise NotAnImageError(path, "empty file")
            raise NotAnImageError(path, "not a recognised image format (not DICOM, NIfTI, PNG, JPEG, TIFF, NPY/NPZ)")
        if fmt == "dicom":
            try:
                return path, _dicom_header(path, series_meta), None
            except NonImageObjectError:
                return path, None, None  # DICOMDIR, report, presentation state ...: skipped, not an error
        if fmt == "nifti":
            return path, _nifti_header(path), None
        return path, _raster_header(path, fmt), None
    except Exception as exc:  # noqa: BLE001 - a scan never stops on one file, but stops for all of them
        if is_fatal(exc):
            raise
        reason = exc.reason if isinstance(exc, MedtlError) else str(exc)
        return path, None, {"path": path, "error": type(exc).__name__, "reason": reason}


def _is_text(path: str) -> bool:
    """True for a non-empty UTF-8 text file (a README without an extension)."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isprintable() or c in "\r\n\t" for c in text)


def _read_chunk(paths: list[str]) -> list[tuple]:
    series_meta: dict = {}  # files of a series lie together, so a chunk mostly shares one
    return [_read_header(p, series_meta) for p in paths]


# ----------------------------------------------------------------------------- rows
def _row(path: str, info: dict, **extra) -> dict:
    meta = info.get("meta", {})
    row = {
        "path": path,
        "format": info["format"],
        "modality": meta.get("modality", ""),
        "sex": meta.get("sex", ""),
        "age": meta.get("age", ""),
        "site": meta.get("site", ""),
        "patient": meta.get("patient", ""),
        "study": meta.get("study", ""),
        "series": meta.get("series", ""),
        "manufacturer": meta.get("manufacturer", ""),
        "body_part": meta.get("body_part", ""),
        "view": meta.get("view", ""),
        "photometric": meta.get("photometric", ""),
        "colour": info.get("colour", ""),
        "n_files": 1,
        "volumes": "",
        "flags": "",
    }
    row.update(extra)
    return row


def _single_row(path: str, info: dict) -> dict:
    if info["format"] == "dicom":
        cols, rows = info["size"]
        flags = []
        volumes = info.get("volumes")
        extra = {}
        if volumes and volumes["n"] > 1:  # an enhanced fMRI or diffusion object: 4D
            shape, kind = (cols, rows, volumes["slices"], volumes["n"]), "4d"
            extra["volumes"] = volumes["n"]
        elif info["frames"] > 1:
            shape, kind = (cols, rows, info["frames"]), "3d"
        else:
            shape, kind = (cols, rows), "2d"
        if info["samples"] > 1 and info["colour"] == "rgb":  # grey stored as RGB loads as one channel
            shape = (info["samples"],) + shape
        if info["spacing"] is None:
            flags.append("spacing_unknown")
        spacing = _fmt_tuple(info["spacing"]) if info["spacing"] else ""
        if volumes and volumes["slices"] > 1:
            flags.extend(volumes["flags"])
            spacing = _fmt_spacing(info["spacing"], volumes["spacing"])
        return _row(path, info, kind=kind, shape=_fmt_tuple(shape), spacing=spacing, flags=";".join(flags), **extra)
    if info["format"] == "npz":
        arrays = info["arrays"]
        desc = ";".join(f"{k}:{_fmt_tuple(s)}" for k, s in arrays.items())
        return _row(path, info, kind="arrays", shape=desc, spacing="")
    shape = info["shape"]
    spatial = len(shape) - (1 if info["format"] != "nifti" and len(shape) == 3 else 0)
    kind = "4d" if len(shape) == 4 else ("3d" if spatial == 3 else "2d")
    flags = "" if info["format"] == "nifti" else "spacing_unknown"
    spacing = _fmt_tuple(info["spacing"]) if info.get("spacing") else ""
    volumes = shape[3] if kind == "4d" else ""
    return _row(path, info, kind=kind, shape=_fmt_tuple(shape), spacing=spacing, flags=flags, volumes=volumes)


def _fmt_spacing(in_plane, between: float) -> str:
    values = (*in_plane, between) if in_plane else ("", "", between)
    return "x".join(f"{v:.6g}" if v != "" else "?" for v in values)


def _series_rows(members: list[tuple[str, dict]]) -> tuple[list[dict], list[dict]]:
    """Rows for one SeriesInstanceUID: one 3D or 4D volume, or separate 2D images, or an error."""
    from .volumes import LocatedSlice, split_volumes

    paths = [p for p, _ in members]
    folder = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    info0 = members[0][1]
    mosaic = any(len(i.get("slices", ())) > 1 for _, i in members)
    volumetric = (
        (len(members) > 1 or mosaic)
        and all("slices" in i for _, i in members)
        and info0["meta"].get("modality") not in _PROJECTION
    )
    if not volumetric:
        return [_single_row(p, i) for p, i in members], []
    try:
        sizes = {i["size"] for _, i in members}
        if len(sizes) > 1:
            raise ImageReadError(folder, f"slices differ in size: {sorted(sizes)}")
        iops = np.array([i["iop"] for _, i in members])
        if np.abs(iops - iops[0]).max() > 1e-4:
            raise ImageReadError(folder, "slices have different orientations (a localizer mixed in?)")
        slices = [
            LocatedSlice((f, s.source[1]), s.position, s.keys, s.attrs)
            for f, (_, info) in enumerate(members)
            for s in info["slices"]
        ]
        volumes = split_volumes(slices, iops[0], where=folder)
    except MedtlError as exc:
        return [], [{"path": folder, "error": type(exc).__name__, "reason": exc.reason}]
    cols, rows = info0["size"]
    tiles = len(slices) // len(members)
    if tiles > 1:  # a mosaic: its tile grid has ceil(sqrt(n)) tiles a side
        side = int(np.ceil(np.sqrt(tiles)))
        cols, rows = cols // side, rows // side
    stack = volumes.volumes[0].stack
    shape = (cols, rows, volumes.slices_per_volume) + ((volumes.n,) if volumes.n > 1 else ())
    # volumes of one slice (a single-slice cine) are as thick as the slice, as load_image says
    between = stack.spacing if volumes.slices_per_volume > 1 else float(info0["meta"].get("slice_thickness") or 1.0)
    return [
        _row(
            folder, info0, kind="4d" if volumes.n > 1 else "3d", shape=_fmt_tuple(shape),
            spacing=_fmt_spacing(info0["spacing"], between), n_files=len(members),
            volumes=volumes.n if volumes.n > 1 else "", flags=";".join(stack.flags),
        )
    ], []  # fmt: skip


# ----------------------------------------------------------------------------- the walk
def _walk(root: str) -> list[str]:
    """Every non-hidden file under ``root``, in sorted order. Linked folders are followed (archives
    arranged by date or by patient often link to the same studies), each real folder once: a link
    back up the tree, or a second link to a folder already walked, adds nothing."""
    found, seen = [], set()
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(files) if not f.startswith("."))
    return found


def scan(
    root: str | os.PathLike,
    *,
    workers: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> ScanResult:
    """Walk ``root`` recursively and describe every image in it from headers only.

    Args:
        root: a folder (or a single file).
        workers: processes for header reading (default: the number of CPUs); 1 runs in-process.
        progress: ``True`` reports on stderr (:func:`medtl.progress.progress_bar`: a bar on a
            terminal, lines in a log); a callable receives the number of files
            done after each chunk (for GUIs and custom logging).

    Returns:
        :class:`ScanResult`: ``rows`` (one per 2D image, multi-frame object, or 3D or 4D series,
        sorted by path), ``errors`` (one per broken file or inconsistent series, with the
        reason), ``skipped`` (obvious non-images such as ``README.txt``, and non-image DICOM
        objects such as a DICOMDIR or a structured report).

    Example:
        >>> import os
        >>> from pydicom.data import get_testdata_file
        >>> folder = os.path.dirname(get_testdata_file("CT_small.dcm"))
        >>> res = scan(os.path.join(folder, "dicomdirtests"), workers=1)
        >>> sorted({r["kind"] for r in res.rows})
        ['2d', '3d']
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise ImageReadError(root, "no such file or folder")
    from .phi import salt_source

    salt_source()  # an unsafe salt stops the scan once, not once per file
    files = [root] if os.path.isfile(root) else _walk(root)
    result = ScanResult(root=root, n_files=len(files), files=files)
    workers = workers or os.cpu_count() or 1
    bar = None
    if progress is True:
        from ..progress import progress_bar

        bar = progress_bar(len(files), "scan", "file", leave=False)

    def advance(n: int) -> None:
        if bar is not None:
            bar.update(n)
        elif callable(progress):
            progress(n)

    headers: list[tuple] = []
    series_meta: dict = {}
    if workers <= 1 or len(files) < _SMALL_SCAN:
        for p in files:
            headers.append(_read_header(p, series_meta))
            advance(1)
    else:
        size = max(1, min(256, len(files) // (workers * 8)))
        chunks = [files[i : i + size] for i in range(0, len(files), size)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk_result in pool.map(_read_chunk, chunks):
                headers.extend(chunk_result)
                advance(len(chunk_result))
    if bar is not None:
        bar.close()

    by_series: dict[str, list] = defaultdict(list)
    for path, info, error in headers:
        if error is not None:
            result.errors.append(error)
        elif info is None:
            result.skipped += 1
            result.skipped_paths.append(path)
        elif info["format"] == "dicom" and info["frames"] == 1:
            by_series[info["series_uid"]].append((path, info))
        else:
            result.rows.append(_single_row(path, info))
    for members in by_series.values():
        rows, errors = _series_rows(members)
        result.rows.extend(rows)
        result.errors.extend(errors)
    result.rows.sort(key=lambda r: r["path"])
    result.errors.sort(key=lambda r: r["path"])
    return result
