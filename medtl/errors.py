"""Typed exceptions for medtl.

Every error raised for bad input is a :class:`MedtlError` subclass whose message names the
file (when there is one) and the reason, so a batch command can log it per item and go on.

>>> from medtl.errors import ImageReadError
>>> err = ImageReadError("/data/a.dcm", "no pixel data")
>>> str(err)
'/data/a.dcm: no pixel data'
>>> err.path, err.reason
('/data/a.dcm', 'no pixel data')
"""

from __future__ import annotations

import os

__all__ = [
    "MedtlError",
    "ImageReadError",
    "NotAnImageError",
    "NonImageObjectError",
    "UnsupportedImageError",
    "SeriesError",
    "WeightsError",
    "ConfigError",
    "SaltError",
    "EvaluationError",
    "OutputError",
    "LockedError",
    "WriteError",
    "NoInputError",
    "is_fatal",
    "suggest",
]


class MedtlError(Exception):
    """Base class of every error medtl raises on purpose.

    ``path`` is the file or folder concerned (``None`` when there is none) and ``reason`` the
    human-readable cause; ``str(err)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(reason if self.path is None else f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across process pools
        return (type(self), (self.path, self.reason))

    def reason_for(self, path: str | os.PathLike, shown: str) -> str:
        """The reason as an output that names input ``path`` only as ``shown`` may print it: every
        mention of the path becomes ``shown``, and another file (a slice of a series, a mask) is
        named by its base name only, never by a full path.

        >>> ImageReadError("/pt/DOE^J/IM1", "/pt/DOE^J/IM1 is truncated").reason_for("/pt/DOE^J/IM1", "a1b2")
        'a1b2 is truncated'
        >>> ImageReadError("/pt/DOE^J/IM7", "bad slice").reason_for("/pt/DOE^J", "a1b2")
        'IM7: bad slice'
        """
        path = os.fspath(path)
        text = self.reason
        for p in sorted({path, os.path.realpath(path)}, key=len, reverse=True):
            text = text.replace(p, shown)
        if self.path and os.path.realpath(self.path) != os.path.realpath(path):
            text = f"{os.path.basename(self.path)}: {text}"
        return text


class ImageReadError(MedtlError):
    """A file or series could not be read as an image (truncated, corrupt, no pixel data...)."""


class NotAnImageError(ImageReadError):
    """The file is not in any image format medtl recognises by its content."""


class NonImageObjectError(NotAnImageError):
    """A valid DICOM object that holds no image by its nature (DICOMDIR, structured report, presentation state,
    key object selection, RT plan, encapsulated PDF, waveform ...): folder loaders and ``medtl scan`` skip it.

    ``sop_class`` names its SOP class (e.g. ``"Basic Text SR Storage"``) when known.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, sop_class: str | None = None):
        super().__init__(path, reason)
        self.sop_class = sop_class

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.sop_class))


class UnsupportedImageError(ImageReadError):
    """The file is a valid image, but of a kind medtl does not handle (say, a codec)."""


class SeriesError(ImageReadError):
    """Files of one DICOM series do not form a consistent volume."""


class WeightsError(MedtlError):
    """Pretrained weights are missing, corrupt, or do not match the model."""


class ConfigError(MedtlError):
    """A configuration file or option is invalid."""


class SaltError(ConfigError):
    """The secret behind pseudonyms is unsafe or unusable: a salt file others can read or replace, a
    missing or empty team salt file. Not an item's fault: no other input would avoid it."""


class EvaluationError(MedtlError):
    """Predictions, labels or group columns given to an evaluation or audit are unusable."""


class OutputError(MedtlError):
    """An output medtl must not or cannot write: a file where a folder is needed, a read-only
    place, a folder holding a run or another command's output."""


class LockedError(OutputError):
    """Another process is writing the same output folder."""


class WriteError(OutputError):
    """A write failed part-way (a full disk, a quota, a read-only or failing device). Never an
    item's fault: a batch command stops, leaves its output unfinished, and says how to go on."""


class NoInputError(ConfigError):
    """The input holds no image the command can use (an empty folder, only non-image or
    unreadable files); the message says what was skipped and why."""


def is_fatal(exc: BaseException) -> bool:
    """True for a failure that no other input would avoid, so a batch command must stop instead
    of recording it against the input at hand: a failed write, the disk full or read-only, an
    unsafe salt.

    >>> import errno
    >>> is_fatal(OSError(errno.ENOSPC, "No space left on device")), is_fatal(ImageReadError("a.dcm", "truncated"))
    (True, False)
    """
    import errno

    if isinstance(exc, (WriteError, SaltError)):  # a salt others can read fails every input alike
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG)


def suggest(name: str, options, listing: str | None = "choose from") -> str:
    """The tail of an error message for a mistyped ``name``: the nearest valid option, or the list.

    >>> suggest("resnet-18", ["resnet18", "resnet34"])
    "; did you mean 'resnet18'?"
    >>> suggest("xyz", ["a", "b"], listing="columns are")
    '; columns are a, b'
    """
    import difflib

    options = [str(o) for o in options]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; {listing} {', '.join(options)}" if listing else ""
