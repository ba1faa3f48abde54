"""The clinician review: static report pages and the local review server.

* :func:`build_report` (``medtl report``): self-contained HTML pages from a ``medtl predict``
  output: an index of every case and one page per case with the image, the saliency overlay,
  the probability against the threshold, the out-of-distribution flag and what the model is
  known to get wrong.
* :class:`ReviewServer` (``medtl review``): the same pages served on 127.0.0.1 with a verdict
  form per case, each verdict attributed by the server (a reader's personal link, or the one
  reviewer of a single-user review).
* :mod:`medtl.report.study`: a review's readers (:func:`add_reader`) and verdicts moved as CSV
  (:func:`import_verdicts`, :func:`export_verdicts`).
* :mod:`medtl.report.verdicts`: the SQLite store of reviewers' verdicts (append-only, safe for
  concurrent reviewers and killed servers).
"""

from .build import build_report
from .server import ReviewServer
from .study import add_reader, export_verdicts, import_verdicts, list_readers, remove_reader
from .verdicts import EXPORT_COLUMNS, VERDICTS, VerdictStore

__all__ = [
    "build_report",
    "ReviewServer",
    "add_reader",
    "remove_reader",
    "list_readers",
    "import_verdicts",
    "export_verdicts",
    "VerdictStore",
    "VERDICTS",
    "EXPORT_COLUMNS",
]
