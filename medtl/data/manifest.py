"""Manifests: a CSV with one row per image or series, its label(s), patient and groups.

Columns: ``path`` (a file or a series folder; relative paths are taken from ``root``, by
default the CSV's own folder), one or more label columns, an optional ``patient_id`` and any
group columns (sex, age, site ...). Labels are numbers (0/1, or 0..K-1 for classes; empty or
``nan`` = unknown), one column per finding for multi-label data (CheXpert's layout) — or one
column of finding names joined by ``|`` (``Effusion|Cardiomegaly``, ``No Finding``: the
ChestX-ray14 layout), which becomes one label per finding. The output of ``medtl scan`` plus a label column is a
manifest, and so is ``sample_data/labels.csv``. Patient identifiers are replaced on read by
salted pseudonyms (:func:`medtl.io.phi.pseudonym`): nothing downstream holds the raw ID.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, MedtlError, suggest
from ..io.phi import pseudonym
from .csvfile import read_csv_rows

__all__ = ["Record", "Manifest", "read_manifest", "image_folders"]

# Columns that describe the file rather than the patient: never used as groups by default.
_NON_GROUP = {"path", "series", "mask", "anatomy_mask", "format", "kind", "shape", "spacing", "n_files", "volumes", "flags", "study",
              "patient", "patient_id", "photometric", "colour"}  # fmt: skip


@dataclass
class Record:
    """One labelled item. ``labels`` holds one float per label column (NaN = unknown)."""

    path: str
    labels: tuple[float, ...]
    patient: str
    groups: dict[str, str] = field(default_factory=dict)
    series: str | None = None
    row: int = 0
    #: The path as the manifest writes it (relative or absolute): what a stored split keys on, so
    #: an edited copy of the manifest, or the manifest and its images moved together, still match.
    ref: str = ""
    #: A lesion mask (``mask`` column: a file on the image's grid, 1 = lesion), resolved like
    #: ``path``; ``None`` where the row has none. Saliency localization is scored against it.
    mask: str | None = None
    #: The anatomy (``anatomy_mask`` column: a lung or organ mask on the image's grid, 1 = inside),
    #: resolved like ``path``: the saliency shortcut check measures a map's mass inside it, where
    #: rows without one use the body medtl finds in the image (:mod:`medtl.explain.anatomy`).
    anatomy: str | None = None


@dataclass
class Manifest:
    """Records plus what they mean: ``label_columns`` and ``group_columns`` in file order."""

    records: list[Record]
    label_columns: tuple[str, ...]
    group_columns: tuple[str, ...]
    source: str
    #: The column whose values are the patients (``None``: every row is its own patient).
    patient_column: str | None = None
    #: The folder relative paths start from (the CSV's own, unless given).
    root: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @property
    def task(self) -> str:
        """``binary``, ``multiclass`` (one column, more than two values) or ``multilabel``."""
        if len(self.label_columns) > 1:
            return "multilabel"
        values = {r.labels[0] for r in self.records if not math.isnan(r.labels[0])}
        return "binary" if values <= {0.0, 1.0} else "multiclass"

    def class_counts(self) -> dict[float, int]:
        """Items per value of the first label column."""
        counts: dict[float, int] = {}
        for r in self.records:
            counts[r.labels[0]] = counts.get(r.labels[0], 0) + 1
        return dict(sorted(counts.items()))


def _number(value: str, csv_path: str, line: int, column: str) -> float:
    text = (value or "").strip()
    if text == "" or text.lower() in ("nan", "na", "unknown"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            csv_path,
            f"line {line}: label column '{column}' holds '{text}', not a number (classes are numbered 0..K-1; "
            f"several findings of one image are named and joined with '{FINDING_SEPARATOR}')",
        ) from None


#: Separates finding names in one label cell; this cell value means "none of them".
FINDING_SEPARATOR, NO_FINDING = "|", "no finding"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _finding_names(values: list[str], csv_path: str, column: str, findings) -> list[str]:
    seen = sorted(
        {t.strip() for v in values for t in v.split(FINDING_SEPARATOR) if t.strip() and t.strip().lower() != NO_FINDING}
    )
    if findings is None:
        if not seen:
            raise ConfigError(csv_path, f"label column '{column}' names no finding (only '{NO_FINDING}' or empty)")
        return seen
    unknown = [f for f in seen if f not in findings]
    if unknown:
        raise ConfigError(csv_path, f"label column '{column}' names finding '{unknown[0]}', which the model was not "
                          f"trained on; it knows {', '.join(findings)}")  # fmt: skip
    return list(findings)


def _finding_labels(text: str, names: list[str]) -> tuple[float, ...]:
    text = (text or "").strip()
    if text == "" or text.lower() in ("nan", "na", "unknown"):
        return (math.nan,) * len(names)
    present = {t.strip() for t in text.split(FINDING_SEPARATOR)}
    return tuple(1.0 if n in present else 0.0 for n in names)


def read_manifest(
    path: str | os.PathLike,
    *,
    label_columns: str | list[str] = "label",
    patient_column: str = "auto",
    group_columns: list[str] | None = None,
    root: str | os.PathLike | None = None,
    findings: list[str] | None = None,
) -> Manifest:
    """Read a manifest CSV.

    Args:
        path: the CSV.
        label_columns: one column (binary or multi-class) or several (multi-label).
        patient_column: patient identifier column. ``auto`` (the default) takes ``patient_id``, else
            ``patient`` (the pseudonym column ``medtl scan`` writes), else treats every row as its own
            patient (``Manifest.patient_column`` is then ``None``); a column named explicitly must
            exist.
        group_columns: attributes for the bias audit; default every column that is not a path,
            a label or a file property.
        root: folder that relative paths start from (default: the CSV's folder).
        findings: for a label column of ``|``-joined finding names: the findings, in output
            order, of the model the rows are for (default: every finding named, sorted); a
            finding outside them is an error.

    Raises:
        ConfigError: missing columns (with the nearest existing name), non-numeric labels,
            an empty file, a broken CSV (an unclosed quote, a row with the wrong number of
            fields: :func:`medtl.data.csvfile.read_csv_rows`), each naming its line.

    Example:
        >>> from pathlib import Path
        >>> m = read_manifest(Path(__file__).resolve().parents[2] / "sample_data" / "labels.csv")
        >>> len(m), m.task, m.group_columns
        (62, 'binary', ('sex', 'age', 'site'))
    """
    csv_path = os.fspath(path)
    if not os.path.isfile(csv_path):
        raise ConfigError(csv_path, "no such manifest file")
    base = Path(root) if root is not None else Path(csv_path).resolve().parent
    labels = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    # strict: an unclosed quote or a ragged row is an error naming its line, not a giant bad path
    columns, rows = read_csv_rows(csv_path)
    if not rows:
        raise ConfigError(csv_path, "manifest has no rows")
    for needed in ["path", *labels] + ([g for g in group_columns] if group_columns else []):
        if needed not in columns:
            raise ConfigError(csv_path, f"no column '{needed}'" + suggest(needed, columns, listing="columns are"))
    if patient_column == "auto":
        patient_column = next((c for c in ("patient_id", "patient") if c in columns), None)
    elif patient_column and patient_column not in columns:
        raise ConfigError(csv_path, f"no patient column '{patient_column}'" + suggest(patient_column, columns,
                          listing="columns are") + "; without one, images of one patient could sit in two splits")
    if group_columns is None:
        group_columns = [c for c in columns if c not in _NON_GROUP and c not in labels and c != patient_column]
    has_patient = patient_column is not None
    names = None  # one column of finding names → one label per finding
    if len(labels) == 1:
        cells = [(r.get(labels[0]) or "").strip() for r in rows]
        words = [c for c in cells if c and c.lower() not in ("nan", "na", "unknown") and not _is_number(c)]
        if words and (findings is not None or any(FINDING_SEPARATOR in c or c.lower() == NO_FINDING for c in words)):
            names = _finding_names(words, csv_path, labels[0], findings)
    records = []
    for row in rows:
        line = row.line  # as an editor counts: header is line 1, blank lines count
        rel = (row["path"] or "").strip()
        if not rel:
            raise ConfigError(csv_path, f"line {line}: empty path")
        full = rel if os.path.isabs(rel) else str(base / rel)
        mask = (row.get("mask") or "").strip()
        anatomy = (row.get("anatomy_mask") or "").strip()
        patient_raw = (row.get(patient_column) or "").strip() if has_patient else ""
        records.append(
            Record(
                path=full,
                labels=_finding_labels(row[labels[0]], names)
                if names is not None
                else tuple(_number(row[c], csv_path, line, c) for c in labels),
                # a row without a patient is its own patient: it can never leak across splits
                patient=pseudonym(patient_raw or f"{csv_path}#row{line}", "patient"),
                groups={g: _group_value(g, row.get(g)) for g in group_columns},
                series=(row.get("series") or "").strip() or None,
                row=line,
                ref=rel,
                mask=(mask if os.path.isabs(mask) else str(base / mask)) if mask else None,
                anatomy=(anatomy if os.path.isabs(anatomy) else str(base / anatomy)) if anatomy else None,
            )
        )
    return Manifest(records, tuple(names or labels), tuple(group_columns), csv_path, patient_column, str(base))


def image_folders(path: str | os.PathLike | None) -> list[str]:
    """The folders that hold the images a manifest lists: each image's own folder, and their
    common folder when that lies below the manifest's own (a data folder beside the manifest).
    What an output may not sit inside: a later scan of those folders would read it too. The
    manifest's own folder and those above it are left out: a project folder that holds the
    manifest, a few images and the runs is a layout of its own. Empty when the manifest cannot be
    read (the command reading it says why).

    >>> from pathlib import Path
    >>> folders = image_folders(Path(__file__).resolve().parents[2] / "sample_data" / "cxr.csv")
    >>> sorted({Path(f).name for f in folders})[:3], len(folders) > 10
    (['cxr', 'p001', 'p002'], True)
    """
    if path is None or not os.path.isfile(path) or not os.fspath(path).lower().endswith(".csv"):
        return []
    try:
        columns, rows = read_csv_rows(path)
    except MedtlError:
        return []
    if "path" not in columns:
        return []
    base = Path(path).resolve().parent
    found = {os.path.dirname(os.path.abspath(rel if os.path.isabs(rel) else base / rel))
             for rel in ((r.get("path") or "").strip() for r in rows) if rel}  # fmt: skip
    if not found:
        return []
    common = Path(os.path.commonpath(sorted(found)))
    if base in common.parents:  # a data folder of its own beside the manifest: the whole of it
        found.add(str(common))
    project = {str(base), *map(str, base.parents)}
    return sorted(found - project)


def _group_value(column: str, value: str | None) -> str:
    """A group cell as text; ages of 90 and over become ``90`` ("90 or older", HIPAA safe harbour)."""
    text = (value or "").strip()
    if column.lower() == "age" and text:
        from ..io.phi import AGE_CAP, parse_age

        try:
            years = float(text)
        except ValueError:
            years = parse_age(text)  # DICOM's 093Y
        if years is not None and years >= AGE_CAP:
            return str(AGE_CAP)
    return text
