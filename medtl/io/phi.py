"""Protected health information: what medtl keeps, and how it pseudonymises the rest.

medtl keeps an allow-list of header attributes (:data:`SAFE_ATTRIBUTES`); everything else is
dropped on read. Keys that must link records without identifying anyone (patient, study,
series, site) become salted SHA-256 pseudonyms.

The salt is the secret: anyone who holds it can hash every ID of a known format (all MRNs of a
site) in well under a second and so reverse the pseudonyms. It comes from, in this order:

- ``MEDTL_SALT``: the salt itself, in the environment;
- ``MEDTL_SALT_FILE``: a team's salt file, chosen on purpose. It may be readable by the file's
  group (0640), not writable by it, and nothing for others; its folder must not be writable by others;
- ``$MEDTL_HOME/salt`` (default ``~/.cache/medtl/salt``): created on first use, random, 0600 from
  its first instant (whatever the umask), in a folder medtl creates 0700. Concurrent first runs
  agree on one salt (written to a temporary file and hard-linked into place).

A salt file that others may read, or that sits in a folder others may write, is refused with a
:class:`~medtl.errors.SaltError` naming the file, its mode and the ``chmod`` that fixes it. Setting
both variables is refused too. What a pseudonym protects against, and what not: docs/runs.md.

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
import stat
from datetime import date
from functools import lru_cache
from pathlib import Path

from ..errors import SaltError

__all__ = [
    "SAFE_ATTRIBUTES",
    "IDENTIFYING_ATTRIBUTES",
    "AGE_CAP",
    "medtl_home",
    "salt_source",
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
    """The salt: ``MEDTL_SALT``, else the (checked) salt file.

    >>> _salt()  # the tests set MEDTL_SALT
    b'test-salt'
    """
    env = os.environ.get("MEDTL_SALT")
    team = os.environ.get("MEDTL_SALT_FILE", "")
    if env and team:  # two secrets: which one made a file's pseudonyms would be a guess
        raise SaltError(None, "MEDTL_SALT and MEDTL_SALT_FILE are both set: unset one, so that pseudonyms come "
                              "from one known salt")  # fmt: skip
    if env:
        return env.encode()
    # cached: scans hash millions of keys; keyed by absolute path, so a later chdir cannot mix salts
    return _salt_file(os.environ.get("MEDTL_HOME", ""), team and os.path.abspath(team))


def salt_source() -> str:
    """Where pseudonyms' salt comes from, after checking it: ``MEDTL_SALT``, or the salt file.

    A batch command may call it before its loop, so that an unsafe salt stops the command once
    instead of failing every item. Raises :class:`~medtl.errors.SaltError` as :func:`pseudonym` does.

    >>> salt_source()  # the tests set MEDTL_SALT
    'MEDTL_SALT'
    """
    _salt()
    if os.environ.get("MEDTL_SALT"):
        return "MEDTL_SALT"
    return os.environ.get("MEDTL_SALT_FILE") or str(medtl_home() / "salt")


@lru_cache(maxsize=4)
def _salt_file(home_env: str, team_file: str = "") -> bytes:
    """The salt from ``team_file`` (``MEDTL_SALT_FILE``: made by people, group-readable allowed) or
    from ``$MEDTL_HOME/salt`` (made here on first use, private to its owner)."""
    if team_file:
        path = Path(team_file).expanduser()
        # the team's folder: its group may write there (they share the salt anyway), nobody else
        _check_folder(path.parent, _OTHERS_WRITE, "keep the team's salt in a folder only the team can write")
        return _read_salt(path, _TEAM_FILE_BITS)
    path = medtl_home() / "salt"
    _salt_folder(path.parent)
    if not os.path.lexists(path):
        _create_salt(path)
    return _read_salt(path, _PRIVATE_FILE_BITS)


# Mode bits that make a salt unsafe (execute bits give nothing away). A private salt: any group or
# other access. A team file: group write (one member could change everyone's keys), any other access.
_PRIVATE_FILE_BITS, _TEAM_FILE_BITS = 0o066, 0o026
_OTHERS_WRITE, _GROUP_OTHERS_WRITE = 0o002, 0o022
_TEAM_HELP = ("to share one salt with your team on purpose, make the file readable by the team's group only "
              "(chmod 640) and set MEDTL_SALT_FILE to it (docs/runs.md#pseudonyms-and-the-salt)")  # fmt: skip


def _exposure(mode: int, bits: int) -> str:
    """Who may do what of ``bits`` in ``mode``, in words.

    >>> _exposure(0o644, _PRIVATE_FILE_BITS), _exposure(0o660, _TEAM_FILE_BITS), _exposure(0o777, _OTHERS_WRITE)
    ('readable by group and others', 'writable by group', 'writable by others')
    """
    found = mode & bits
    grants = {}
    for who, shift in (("group", 3), ("others", 0)):
        can = [word for word, bit in (("readable", 4), ("writable", 2)) if found >> shift & bit]
        if can:
            grants.setdefault(" and ".join(can), []).append(who)
    return ", ".join(f"{can} by {' and '.join(who)}" for can, who in grants.items())


def _check_folder(folder: Path, bits: int, way_on: str) -> None:
    """Refuse a salt's folder in which others could replace the salt with one they know."""
    if os.name == "nt":  # Windows guards files with ACLs, not mode bits
        return
    try:
        mode = os.stat(folder).st_mode
    except OSError as exc:
        raise SaltError(folder, f"cannot use this folder for the pseudonym salt ({exc.strerror or exc})") from None
    if mode & bits:
        fix = "go-w" if bits & 0o020 else "o-w"
        raise SaltError(folder, f"the pseudonym salt's folder is {_exposure(mode, bits)} (mode {mode & 0o777:04o}), "
                                f"so they could replace the salt with one they know. Fix: chmod {fix} {folder}; "
                                f"or {way_on}")  # fmt: skip


def _salt_folder(folder: Path) -> None:
    """Create the salt's folder private (0700) if it is missing; check it either way."""
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)  # ~/.cache itself keeps the user's permissions
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o700)  # exactly 0700 whatever the umask (mkdir's mode only loses bits to it)
        except FileExistsError:
            pass  # a concurrent first run made it
        except OSError as exc:
            raise SaltError(folder, f"cannot create the folder of the pseudonym salt ({exc.strerror or exc}); "
                                    "set MEDTL_HOME to a folder you can write") from None  # fmt: skip
    _check_folder(folder, _GROUP_OTHERS_WRITE, "set MEDTL_HOME to a folder of your own, or MEDTL_SALT_FILE to a "
                                               "team salt kept elsewhere")  # fmt: skip


def _create_salt(path: Path) -> None:
    """Write a random salt to ``path``, readable by its owner only from the first instant.

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "salt"
    >>> _create_salt(p)
    >>> oct(p.stat().st_mode & 0o777), len(p.read_text()), sorted(q.name for q in p.parent.iterdir())
    ('0o600', 64, ['salt'])
    """
    import tempfile  # once per installation: not worth its import on every start

    try:
        fd, tmp = tempfile.mkstemp(prefix=".salt-", suffix=".tmp", dir=path.parent)  # created 0600
    except OSError as exc:
        raise SaltError(path, f"cannot create the pseudonym salt ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o600)  # exactly 0600 whatever the umask (0o277 would give 0400)
            fh.write(secrets.token_hex(32).encode())
            fh.flush()
            os.fsync(fh.fileno())  # a salt lost after use would orphan every pseudonym made with it
        try:
            os.link(tmp, path)  # atomic, never replaces: concurrent first runs agree on one salt
        except FileExistsError:
            pass  # another process won the race: its salt is the one
    finally:
        os.unlink(tmp)


def _read_salt(path: Path, bits: int) -> bytes:
    """The salt in ``path``, after checking its permissions on the open file (no check-then-open race).

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "salt"
    >>> _ = p.write_text("s3cret\\n")
    >>> p.chmod(0o644)
    >>> _read_salt(p, _PRIVATE_FILE_BITS)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medtl.errors.SaltError: ...salt: the pseudonym salt is readable by group and others (mode 0644): ...
    >>> p.chmod(0o600)
    >>> _read_salt(p, _PRIVATE_FILE_BITS)
    b's3cret'
    """
    team = bits == _TEAM_FILE_BITS
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if not team:  # a dangling link where the salt should be
            raise SaltError(path, "the pseudonym salt is not a file (a broken link?)") from None
        raise SaltError(path, "MEDTL_SALT_FILE names no file. Create the team's salt once, e.g. "
                              f"(umask 027; python -c 'import secrets; print(secrets.token_hex(32))' > {path}), "
                              "or copy an existing salt to keep its pseudonyms") from None  # fmt: skip
    except OSError as exc:
        raise SaltError(path, f"cannot read the pseudonym salt ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SaltError(path, "the pseudonym salt is not a regular file")
        if os.name != "nt" and mode & bits:
            fix = f"chmod 640 {path} (group read only)" if team else f"chmod 600 {path}; or, {_TEAM_HELP}"
            harm = ("anyone who can read it can undo every pseudonym made with it, by hashing all IDs of a known "
                    "format in seconds" if mode & bits & 0o044 else
                    "they could replace it with a salt they know, or change every pseudonym")  # fmt: skip
            raise SaltError(path, f"the pseudonym salt is {_exposure(mode, bits)} (mode {mode & 0o777:04o}): {harm}. "
                                  f"Fix: {fix}")  # fmt: skip
        salt = fh.read().strip()
    if not salt:
        raise SaltError(path, "the pseudonym salt file is empty" + ("" if team else "; delete it to get a new one"))
    return salt


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
