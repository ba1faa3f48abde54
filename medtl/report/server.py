"""``medtl review``: a small local server over a report, where clinicians record verdicts.

It serves the report's own pages; each case page gains a form (agree / disagree / uncertain and
a comment) and the case's history, and the index shows every case's review status. Verdicts go
to ``verdicts.sqlite`` in the report folder (:class:`~medtl.report.verdicts.VerdictStore`:
append-only, durable once the page says "Recorded"), with the model's probability at the time.

What keeps it local and safe: it listens on 127.0.0.1 unless told otherwise; it answers only
requests whose ``Host`` is the address it listens on (a web page cannot reach it through DNS
rebinding); every post must carry the form token this server put in its own pages and, when
the browser says where a post comes from (``Origin``, ``Sec-Fetch-Site``), come from this server
(another site cannot post a verdict in the reviewer's name); it serves only the report's pages
and names cases by the keys in ``report.json``, never by a path. Nothing is fetched from or sent
to anywhere else.

>>> import inspect
>>> list(inspect.signature(ReviewServer).parameters)
['report_dir', 'reviewer', 'host', 'port']
"""

from __future__ import annotations

import csv
import getpass
import hmac
import json
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError
from .build import CASES, REPORT_FILE, VERDICTS_FILE, environment, verdict_statuses
from .verdicts import VERDICTS, VerdictStore

__all__ = ["ReviewServer", "import_verdicts", "export_verdicts", "read_report"]

_REVIEW = re.compile(r"<!--medtl:review-->.*?<!--/medtl:review-->", re.S)
_VERDICTS = re.compile(r"<!--medtl:verdicts-->.*?<!--/medtl:verdicts-->", re.S)
_CASE = re.compile(r"^/cases/([A-Za-z0-9_-]{1,64})\.html$")
_POST = re.compile(r"^/cases/([A-Za-z0-9_-]{1,64})/verdict$")
_MAX_BODY = 64 * 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def read_report(report_dir: str | Path) -> dict[str, Any]:
    """A report folder's ``report.json``.

    Raises:
        ConfigError: the folder holds no finished ``medtl report``.
    """
    from ..rundir import describe, is_run

    folder = Path(report_dir)
    found = describe(folder) if folder.is_dir() else None
    if is_run(folder):
        raise ConfigError(folder, "is a run directory, which stays as training left it: verdicts live in a report "
                          "folder (`medtl report RUN PREDICTIONS -o REPORT`); give that folder")  # fmt: skip
    if not found or found.get("command") != "report" or not (folder / REPORT_FILE).is_file():
        raise ConfigError(folder, "is not a `medtl report` folder: build one with `medtl report RUN PREDICTIONS -o "
                          "FOLDER`")  # fmt: skip
    if not found.get("complete"):
        raise ConfigError(folder, "holds an unfinished report: build it again with `medtl report ... --overwrite`")
    return json.loads((folder / REPORT_FILE).read_text())


def _json_script(value: Any) -> str:
    # as Jinja's tojson: nothing in the data can close the script element
    text = json.dumps(value, sort_keys=True)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027")):
        text = text.replace(a, b)
    return f'<script type="application/json" id="medtl-verdicts">{text}</script>'


class ReviewServer:
    """The review server of one report folder (``serve_forever`` in a thread, ``shutdown`` to stop).

    Args:
        report_dir: a ``medtl report`` output.
        reviewer: the name the form starts with (default: the login name).
        host: the address to listen on (default 127.0.0.1: this machine only).
        port: the port (0: any free one; see :attr:`url`).

    Raises:
        ConfigError: ``report_dir`` is not a report; the port is taken or not allowed.
    """

    def __init__(self, report_dir: str | Path, reviewer: str | None = None, host: str = "127.0.0.1",
                 port: int = 8765):  # fmt: skip
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(None, f"--port must be 0 to 65535 (0: any free port), not {port!r}")
        self.folder = Path(report_dir)
        self.report = read_report(self.folder)
        self.cases = {c["key"]: c for c in self.report["cases"]}
        keys = list(self.cases)
        # "record and open the next case" follows the index order
        self.next = dict(zip(keys[:-1], keys[1:], strict=True))
        self.reviewer = (reviewer or _login()).strip()[:100] or "reviewer"
        self.token = secrets.token_urlsafe(32)
        self.env = environment()
        VerdictStore(self.folder / VERDICTS_FILE).close()  # created (and checked) before the first post
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                None, f"cannot listen on {host}:{port} ({exc.strerror or exc}): pick another --port"
            ) from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        names = {host} | (_LOOPBACK if host in _LOOPBACK else set())
        self.allowed_hosts = {f"[{h}]:{self.port}" if ":" in h else f"{h}:{self.port}" for h in names}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The index page's address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ pages
    def store(self) -> VerdictStore:
        return VerdictStore(self.folder / VERDICTS_FILE)  # one connection per request: threads never share one

    def index_page(self) -> bytes:
        html = (self.folder / "index.html").read_text(encoding="utf-8")
        with self.store() as store:
            statuses = verdict_statuses(store.latest())
        return _VERDICTS.sub(lambda _: _json_script(statuses), html, count=1).encode("utf-8")

    def case_page(self, key: str, saved: str | None = None) -> bytes:
        """The case's page with the verdict form and its history; ``saved``: the id of the verdict
        just recorded (the page confirms it from the database, not from the address)."""
        case = self.cases[key]
        # the page's path is made from the checked key, never read from a file a user could edit
        html = (self.folder / CASES / f"{key}.html").read_text(encoding="utf-8")
        with self.store() as store:
            history = store.history(key)
            done = store.get(saved) if saved else None
        mine = [h for h in history if h["reviewer"] == self.reviewer]
        if done is not None:  # confirmed from the database (possibly the previous case's, after "next")
            elsewhere = (
                "" if done["study"] == key else f" on case {self.cases.get(done['study'], {}).get('index', '?')}"
            )
            saved = f"{done['verdict']} by {done['reviewer']}{elsewhere}"
        else:
            saved = None
        form = self.env.get_template("review_form.html").render(
            key=key, token=self.token, choices=VERDICTS, reviewer=self.reviewer, probability=case.get("probability"),
            history=history, saved=saved, current=mine[-1]["verdict"] if mine else None, has_next=key in self.next,
        )  # fmt: skip
        return _REVIEW.sub(lambda _: form, html, count=1).encode("utf-8")

    def export(self) -> bytes:
        with self.store() as store:
            return store.csv_text().encode("utf-8")

    def record(self, key: str, form: dict[str, list[str]]) -> int:
        """Store the posted verdict (durable when this returns); its id. ConfigError for bad values."""
        verdict = (form.get("verdict") or [""])[0]
        reviewer = (form.get("reviewer") or [self.reviewer])[0]
        comment = (form.get("comment") or [""])[0]
        with self.store() as store:
            return store.record(key, reviewer, verdict, comment=comment, probability=self.cases[key].get("probability"))


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): a neutral default
        return "reviewer"


class _Handler(BaseHTTPRequestHandler):
    app: ReviewServer
    server_version = "medtl-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # requests name cases by key only, but a log a reviewer did not ask for is noise

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "same-origin")  # browsers then send Origin on posts
        self.send_header("Content-Security-Policy", "frame-ancestors 'none'; form-action 'self'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, status: int, message: str) -> None:
        from markupsafe import escape

        body = f"<!doctype html><meta charset='utf-8'><title>{int(status)}</title><p>{escape(message)}</p>"
        self._send(status, body.encode("utf-8"))

    def _host_ok(self) -> bool:
        return (self.headers.get("Host") or "").lower() in self.app.allowed_hosts

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._host_ok():
            return self._refuse(HTTPStatus.MISDIRECTED_REQUEST, "unknown host: open the address medtl review printed")
        parts = urlsplit(self.path)
        try:
            if parts.path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, self.app.index_page())
            if parts.path == "/export.csv":
                return self._send(HTTPStatus.OK, self.app.export(), "text/csv; charset=utf-8",
                                  {"Content-Disposition": 'attachment; filename="verdicts.csv"'})  # fmt: skip
            m = _CASE.match(parts.path)
            if m and m.group(1) in self.app.cases:
                saved = (parse_qs(parts.query).get("saved") or [None])[0]
                return self._send(HTTPStatus.OK, self.app.case_page(m.group(1), saved=saved))
        except ConfigError as exc:
            return self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        return self._refuse(HTTPStatus.NOT_FOUND, "no such page in this report")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if not self._host_ok():
            return self._refuse(HTTPStatus.MISDIRECTED_REQUEST, "unknown host")
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() not in self.app.allowed_hosts:
            return self._refuse(HTTPStatus.FORBIDDEN, "a verdict can only be posted from this review server's pages")
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return self._refuse(HTTPStatus.FORBIDDEN, "a verdict can only be posted from this review server's pages")
        m = _POST.match(urlsplit(self.path).path)
        if not m or m.group(1) not in self.app.cases:
            return self._refuse(HTTPStatus.NOT_FOUND, "no such case in this report")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            return self._refuse(HTTPStatus.BAD_REQUEST, "a verdict form of 1 byte to 64 KiB was expected")
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        token = (form.get("token") or [""])[0]
        if not hmac.compare_digest(token.encode(), self.app.token.encode()):
            return self._refuse(HTTPStatus.FORBIDDEN, "the form is out of date or was not made by this server: "
                                "reload the page and record the verdict again")  # fmt: skip
        key = m.group(1)
        try:
            saved = self.app.record(key, form)
        except ConfigError as exc:
            return self._refuse(HTTPStatus.BAD_REQUEST, f"{exc.reason}: go back and correct it")
        # post/redirect/get: reloading the page never posts the verdict twice
        then = self.app.next.get(key) if (form.get("then") or [""])[0] == "next" else None
        where = f"/cases/{then}.html?saved={saved}" if then else f"/cases/{key}.html?saved={saved}#review"
        self._send(HTTPStatus.SEE_OTHER, b"", headers={"Location": where})


def _studies_in(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [str(row.get("study") or "").strip() for row in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(path, f"cannot read the verdicts ({exc})") from None


def import_verdicts(csv_path: str | Path, report_dir: str | Path) -> dict[str, int]:
    """Bring another reviewer's exported verdicts into a report's database: all or nothing, and
    only verdicts on cases of this report (a file from another report is refused, not merged).
    Returns ``{"imported", "skipped"}`` (skipped: already here).

    Raises:
        ConfigError: not a report folder; the file is unreadable, holds a bad value (named by
            line) or a case this report does not hold.
    """
    report = read_report(report_dir)
    keys = {c["key"] for c in report["cases"]}
    path = Path(csv_path)
    for line, study in enumerate(_studies_in(path), start=2):
        if study and study not in keys:
            raise ConfigError(path, f"line {line}: case {study} is not in this report (a verdicts file of another "
                              "report?); nothing was imported")  # fmt: skip
    with VerdictStore(Path(report_dir) / VERDICTS_FILE) as store:
        return store.import_csv(path)


def export_verdicts(report_dir: str | Path, csv_path: str | Path, *, overwrite: bool = False) -> int:
    """Write every verdict of a report, oldest first, as CSV; returns the number of rows.

    Args:
        overwrite: replace an earlier export at ``csv_path``; nothing else (the verdicts
            database, a manifest, a file inside the report) is ever replaced.

    Raises:
        ConfigError: not a report folder.
        OutputError: ``csv_path`` is a folder, inside the report or other medtl output, or an
            existing file (without ``overwrite``, or one that is not an export of verdicts).
    """
    from ..outputs import check_output_file, csv_with_header
    from .verdicts import EXPORT_COLUMNS

    read_report(report_dir)
    check_output_file(csv_path, inputs=[report_dir], overwrite=overwrite, same_kind=csv_with_header(EXPORT_COLUMNS),
                      example="verdicts.csv")  # fmt: skip
    if not (Path(report_dir) / VERDICTS_FILE).is_file():  # nothing recorded yet: the report stays as it is
        from ..files import write_csv

        write_csv(csv_path, [], list(EXPORT_COLUMNS))
        return 0
    with VerdictStore(Path(report_dir) / VERDICTS_FILE) as store:
        return store.export_csv(csv_path)
