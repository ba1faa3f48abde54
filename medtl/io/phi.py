"""Protected health information: what medtl keeps, and how it pseudonymises the rest.

medtl keeps an allow-list of header attributes (:data:`SAFE_ATTRIBUTES`); everything else is
dropped on read. Keys that must link records without identifying anyone (patient, study,
series, site) become salted SHA-256 pseudonyms. The salt is read from ``MEDTL_SALT`` or, if
unset, from ``$MEDTL_HOME/salt`` (default ``~/.cache/medtl/salt``), created at random on first
use, so pseudonyms are stable on one installation but cannot be reversed by a dictionary
attack on another.

>>> pseudonym("MRN-0007", kind="patient") == pseudonym("MRN-0007", kind="patient")
True
>>> pseudonym("MRN-0007", kind="patient") != pseudonym("MRN-0007", kind="site")
True
>>> parse_age("045Y"), parse_age("093Y"), parse_age("018M"), parse_age(None)
(45, 90, 1, None)
"""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import date
from functools import lru_cache
from pathlib import Path

__all__ = [
    "SAFE_ATTRIBUTES",
    "IDENTIFYING_ATTRIBUTES",
    "AGE_CAP",
    "medtl_home",
    "pseudonym",
    "parse_age",
    "age_from_dates",
]

#: DICOM keywords copied into ``Image.meta`` (renamed to snake_case) — nothing else is kept.
SAFE_ATTRIBUTES: dict[str, str] = {
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "BodyPartExamined": "body_part",
    "ViewPosition": "view",
    "PhotometricInterpretation": "photometric",
    "KVP": "kvp",
    "ConvolutionKernel": "kernel",
    "MagneticFieldStrength": "field_strength",
    "SliceThickness": "slice_thickness",
    "RescaleType": "rescale_type",
    "BitsStored": "bits_stored",
    "PatientSex": "sex",
}

#: Attributes that identify a person or an encounter; never kept, listed for tests and docs.
IDENTIFYING_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "OtherPatientIDs",
    "OtherPatientNames",
    "AccessionNumber",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstitutionName",
    "StationName",
    "DeviceSerialNumber",
)

#: Ages at or above this are reported as this value ("90 or older", HIPAA safe harbour).
AGE_CAP = 90


def medtl_home() -> Path:
    """medtl's cache folder: ``$MEDTL_HOME`` or ``~/.cache/medtl``."""
    return Path(os.environ.get("MEDTL_HOME") or Path.home() / ".cache" / "medtl")


def _salt() -> bytes:
    env = os.environ.get("MEDTL_SALT")
    if env:
        return env.encode()
    return _salt_file(os.environ.get("MEDTL_HOME", ""))  # cached: scans hash millions of keys


@lru_cache(maxsize=4)
def _salt_file(home_env: str) -> bytes:
    path = medtl_home() / "salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic: concurrent first runs agree on one salt
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


def pseudonym(value: object, kind: str = "id", length: int = 16) -> str | None:
    """Salted, non-reversible key for an identifier; ``None`` for an empty value.

    ``kind`` separates namespaces, so the same string hashed as a patient and as a site
    gives unrelated keys.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    digest = hashlib.sha256(_salt() + b"\x00" + kind.encode() + b"\x00" + text.encode())
    return digest.hexdigest()[:length]


def parse_age(value: object) -> int | None:
    """Age in whole years from a DICOM Age String (``nnnD|W|M|Y``), capped at :data:`AGE_CAP`."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if len(text) < 2 or not text[:-1].isdigit():
        return int(text) if text.isdigit() else None
    n, unit = int(text[:-1]), text[-1]
    days_per = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}.get(unit)
    if days_per is None:
        return None
    return min(int(n * days_per / 365.25), AGE_CAP)


def age_from_dates(birth: object, at: object) -> int | None:
    """Whole years between two DICOM dates (``YYYYMMDD``), capped; ``None`` if either is bad."""
    try:
        b = date(int(str(birth)[:4]), int(str(birth)[4:6]), int(str(birth)[6:8]))
        a = date(int(str(at)[:4]), int(str(at)[4:6]), int(str(at)[6:8]))
    except (ValueError, TypeError):
        return None
    years = a.year - b.year - ((a.month, a.day) < (b.month, b.day))
    return min(years, AGE_CAP) if years >= 0 else None
