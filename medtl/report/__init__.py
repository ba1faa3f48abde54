"""The clinician review: static report pages and the local review server (step 9, in progress).

* :mod:`medtl.report.verdicts`: the SQLite store of reviewers' verdicts (append-only, safe for
  concurrent reviewers and killed servers), with CSV export and import.
"""

from .verdicts import EXPORT_COLUMNS, VERDICTS, VerdictStore

__all__ = ["VerdictStore", "VERDICTS", "EXPORT_COLUMNS"]
