"""``medtl review``: a small server over a report, where clinicians record verdicts.

It serves the report's own pages; each case page gains a form (agree / disagree / uncertain and
a comment) and the case's history, and the index shows every case's review status. Verdicts go
to ``verdicts.sqlite`` in the report folder (:class:`~medtl.report.verdicts.VerdictStore`:
append-only, durable once the page says "Recorded"), with the model's probability at the time.

**Who speaks.** A verdict is attributed by the server, never by the form:

* a report without readers is a *single-user* review: every verdict is the reviewer's the
  server was started for (``--reviewer``, or the login name), and only this machine is served;
* once the lead adds readers (:func:`medtl.report.study.add_reader`), each opens their personal
  link ``/r/<secret>/``; a verdict posted through it is that reader's, and a reader sees only
  their own verdicts (readers stay blind to each other). Pages without a link are not served.

**What keeps it safe** (:mod:`medtl.report.access` holds the address rules): loopback unless the
lead passes ``--remote`` (and the report has readers); an exact ``Host`` check (no DNS
rebinding); a form token per reader on every post, and ``Origin`` / ``Sec-Fetch-Site`` checked
when the browser sends them (no cross-site posts); cases named by the keys in ``report.json``,
never by a path; identifiers only to this machine unless named. **Under load**: a listen backlog
of 128, a read timeout (a half-sent request is dropped, with one log line), at most 32 requests
at work at once (more wait, then get 503 with ``Retry-After``), and a report rebuilt with
``--overwrite`` is picked up on the next request.

>>> import inspect
>>> list(inspect.signature(ReviewServer).parameters)  # doctest: +NORMALIZE_WHITESPACE
['report_dir', 'reviewer', 'host', 'port', 'remote', 'allow_hosts', 'remote_identifiers', 'read_timeout']
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import hmac
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError
from .access import allowed_hosts, check_listen, is_loopback
from .build import CASES, VERDICTS_FILE, environment, verdict_statuses
from .study import read_report
from .verdicts import VERDICTS, VerdictStore, check_name

__all__ = ["ReviewServer", "Viewer"]

_REVIEW = re.compile(r"<!--medtl:review-->.*?<!--/medtl:review-->", re.S)
_VERDICTS = re.compile(r"<!--medtl:verdicts-->.*?<!--/medtl:verdicts-->", re.S)
_PERSONAL = re.compile(r"^/r/([A-Za-z0-9_-]{16,64})(/.*)$")
_CASE = re.compile(r"^/cases/([A-Za-z0-9_-]{1,64})\.html$")
_POST = re.compile(r"^/cases/([A-Za-z0-9_-]{1,64})/verdict$")
_MAX_BODY = 64 * 1024
_SLOTS, _SLOT_WAIT = 32, 10.0  # requests at work at once; how long one waits for a turn (s)
_BACKLOG = 128  # connections the kernel holds before accept: a ward's burst, not 5
_GONE = (errno.ENOTCONN, errno.EBADF, errno.EPIPE, errno.ECONNRESET)  # a socket the client (or the reaper) ended
_PER_ADDRESS = 64  # open connections one client address may hold (a trickling client cannot take every thread)


@dataclass(frozen=True)
class Viewer:
    """Who a request speaks for: ``name`` (as verdicts record it), ``prefix`` (``""``, or
    ``/r/<secret>`` for a reader's personal link) and ``personal`` (a reader of several)."""

    name: str
    prefix: str = ""
    personal: bool = False


class Refusal(Exception):
    """A request answered with an error page: ``status``, a message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = int(status), message, headers or {}


@dataclass(frozen=True)
class _Snapshot:
    """The report as its ``report.json`` stood when last read."""

    stamp: tuple
    report: dict[str, Any]
    cases: dict[str, dict[str, Any]]
    next: dict[str, str]


class ReviewServer:
    """The review server of one report folder (``serve_forever`` in a thread, ``shutdown`` to stop).

    Args:
        report_dir: a ``medtl report`` output.
        reviewer: the reviewer of a single-user review (default: the login name).
        host: the address to listen on (default 127.0.0.1: this machine only).
        port: the port (0: any free one; see :attr:`url`).
        remote: allow an address other machines reach (the report must have readers).
        allow_hosts: more names (``Host`` headers) the server answers to, such as the machine's
            DNS name; required with a wildcard ``host``.
        remote_identifiers: serve a report built with ``--show-identifiers`` to other machines.
        read_timeout: seconds a client may take to send its request.

    Raises:
        ConfigError: ``report_dir`` is not a report; a bad reviewer name; an address not meant
            (:func:`medtl.report.access.check_listen`); the port is taken or not allowed.
    """

    def __init__(self, report_dir: str | Path, reviewer: str | None = None, host: str = "127.0.0.1",
                 port: int = 8765, *, remote: bool = False, allow_hosts: Iterable[str] = (),
                 remote_identifiers: bool = False, read_timeout: float = 30.0):  # fmt: skip
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(None, f"--port must be 0 to 65535 (0: any free port), not {port!r}")
        self.folder = Path(report_dir)
        self._lock = threading.Lock()
        self._snapshot = self._read()
        self.reviewer = check_name(reviewer) if reviewer is not None else _login()
        self.key = secrets.token_bytes(32)
        self.env = environment()
        with self.store() as store:  # created (and checked) before the first post
            readers = sum(r["removed_at"] is None for r in store.readers())
        allow_hosts = [h.strip() for h in allow_hosts if h.strip()]
        self.remote_identifiers = remote_identifiers
        self.slots = threading.BoundedSemaphore(_SLOTS)
        self.read_timeout = float(read_timeout)
        handler = type("Handler", (_Handler,), {"app": self, "timeout": read_timeout})
        self.httpd = _bind(host, port, handler)
        try:  # judged by the address the socket holds: "0", "0x0" or "::ffff:0.0.0.0" are every address too
            check_listen(self.httpd.server_address[0], remote=remote, allow_hosts=allow_hosts, readers=readers)
            self.httpd.server_activate()
        except BaseException:
            self.httpd.server_close()
            raise
        self.host, self.port = host, self.httpd.server_address[1]
        bound = self.httpd.server_address[0]
        self.allowed_hosts = allowed_hosts(host, self.port, allow_hosts) | allowed_hosts(bound, self.port)
        threading.Thread(target=self.httpd.reap_slow_requests, daemon=True).start()

    @property
    def url(self) -> str:
        """The index page's address (for a single-user review)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ the report, as it is now
    def _stamp(self) -> tuple:
        from ..outputs import MARKER

        try:
            st = (self.folder / MARKER).stat()
        except OSError:
            return ()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> _Snapshot:
        stamp = self._stamp()
        report = read_report(self.folder)
        cases = {c["key"]: c for c in report["cases"]}
        keys = list(cases)
        # "record and open the next case" follows the index order
        return _Snapshot(stamp, report, cases, dict(zip(keys[:-1], keys[1:], strict=True)))

    def current(self) -> _Snapshot:
        """The report as it is now: read again when ``medtl report --overwrite`` rebuilt it.

        Raises:
            Refusal: 503 while the report is being rebuilt (or was left unfinished).
        """
        with self._lock:
            if self._stamp() != self._snapshot.stamp:
                try:
                    self._snapshot = self._read()
                except ConfigError:
                    raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the report is being rebuilt: reload this page in "
                                  "a moment", {"Retry-After": "5"}) from None  # fmt: skip
            return self._snapshot

    @property
    def cases(self) -> dict[str, dict[str, Any]]:
        """The report's cases by key (as the report is now)."""
        return self.current().cases

    def store(self) -> VerdictStore:
        return VerdictStore(self.folder / VERDICTS_FILE)  # one connection per request: threads never share one

    # ------------------------------------------------------------------ who is asking
    def viewer(self, secret: str | None, client: str) -> Viewer:
        """Who a request speaks for: the reader of a personal link, or the single-user reviewer.

        Raises:
            Refusal: an unknown or ended link; a review with readers asked without a link; a
                single-user review asked from another machine; identifiers to another machine.
        """
        local = is_loopback(client)
        if self.current().report.get("show_identifiers") and not local and not self.remote_identifiers:
            raise Refusal(HTTPStatus.FORBIDDEN, "this report shows patient identifiers: it is served to this machine "
                          "only (the lead can allow other machines with --remote-identifiers)")  # fmt: skip
        with self.store() as store:
            if secret is not None:
                name = store.reader(secret)
                if name is None:
                    raise Refusal(HTTPStatus.FORBIDDEN, "this personal link is not (or no longer) valid: ask the "
                                  "study lead for a new one")  # fmt: skip
                return Viewer(name, f"/r/{secret}", personal=True)
            if store.readers():  # once a review has readers it stays one: removing them all opens nothing
                raise Refusal(HTTPStatus.UNAUTHORIZED, "this review has readers: open your personal link (the study "
                              "lead makes one with `medtl review add-reader`)")  # fmt: skip
        if not local:
            raise Refusal(HTTPStatus.FORBIDDEN, "a review without readers is served to this machine only")
        return Viewer(self.reviewer)

    def token(self, viewer: Viewer) -> str:
        """The form token of a viewer's pages: a post carries it, so another site cannot post."""
        return hmac.new(self.key, f"{viewer.prefix}\0{viewer.name}".encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ pages
    def _page(self, relative: str) -> str:
        """A page of the report, or 503 while a rebuild has removed it, 404 when it is gone."""
        try:
            return (self.folder / relative).read_text(encoding="utf-8")
        except FileNotFoundError:
            self.current()  # raises 503 while the report is being rebuilt
            raise Refusal(HTTPStatus.NOT_FOUND, "this page is missing from the report: rebuild it") from None

    def index_page(self, viewer: Viewer) -> bytes:
        html = self._page("index.html")
        with self.store() as store:
            statuses = verdict_statuses(store.latest(viewer.name if viewer.personal else None))
        if viewer.personal:  # whatever the file holds, a reader's index starts from no verdicts at all
            html = _blank_review_columns(html, len(statuses))
        return _VERDICTS.sub(lambda _: _json_script(statuses), html, count=1).encode("utf-8")

    def case_page(self, viewer: Viewer, key: str, saved: str | None = None) -> bytes:
        """The case's page with the verdict form and its history; ``saved``: the id of the verdict
        just recorded (the page confirms it from the database, not from the address)."""
        snap = self.current()
        case = _case(snap, key)
        html = self._page(f"{CASES}/{key}.html")  # made from the checked key, never from a file a user could edit
        with self.store() as store:
            history = store.history(key, viewer.name if viewer.personal else None)
            done = store.get(saved) if saved else None
        mine = [h for h in history if h["reviewer"] == viewer.name and h["source"] == "live"]
        message = None
        if done is not None and done["reviewer"] == viewer.name:  # confirmed from the database
            elsewhere = "" if done["study"] == key else f" on case {snap.cases.get(done['study'], {}).get('index', '?')}"
            message = f"{done['verdict']} by {done['reviewer']}{elsewhere}"
        form = self.env.get_template("review_form.html").render(
            key=key, token=self.token(viewer), choices=VERDICTS, reviewer=viewer.name, personal=viewer.personal,
            probability=case.get("probability"), history=history, saved=message,
            current=mine[-1]["verdict"] if mine else None, has_next=key in snap.next,
        )  # fmt: skip
        return _REVIEW.sub(lambda _: form, html, count=1).encode("utf-8")

    def export(self, viewer: Viewer) -> bytes:
        with self.store() as store:
            return store.csv_text(viewer.name if viewer.personal else None).encode("utf-8")

    def record(self, viewer: Viewer, key: str, form: dict[str, list[str]]) -> str:
        """Store the posted verdict as the viewer's (durable when this returns); the address of
        the page that confirms it. ConfigError for bad values."""
        verdict = (form.get("verdict") or [""])[0]
        comment = (form.get("comment") or [""])[0]
        snap = self.current()
        probability = _case(snap, key).get("probability")
        with self.store() as store:
            saved = store.record(key, viewer.name, verdict, comment=comment, probability=probability,
                                 via="link" if viewer.personal else "single-user")  # fmt: skip
        # post/redirect/get: reloading the page never posts the verdict twice
        then = snap.next.get(key) if (form.get("then") or [""])[0] == "next" else None
        page = f"{then}.html?saved={saved}" if then else f"{key}.html?saved={saved}#review"
        return f"{viewer.prefix}/cases/{page}"


def _case(snap: _Snapshot, key: str) -> dict[str, Any]:
    if key not in snap.cases:
        raise Refusal(HTTPStatus.NOT_FOUND, "no such case in this report (was it rebuilt? open the index)")
    return snap.cases[key]


_ROW_REVIEW = re.compile(r'data-review="[^"]+"')
_REVIEW_CELL = re.compile(r'<td data-sort="[^"]*" class="review-cell">[^<]*</td>')
_REVIEWED = re.compile(r'<strong id="reviewed-count">\d*</strong>')


def _blank_review_columns(html: str, reviewed: int) -> str:
    """The index with every review cell "not reviewed" and the reviewed count set, before the
    viewer's own statuses go in (a report built before it had readers holds everyone's)."""
    html = _ROW_REVIEW.sub('data-review="not reviewed"', html)
    html = _REVIEW_CELL.sub('<td data-sort="not reviewed" class="review-cell">not reviewed</td>', html)
    return _REVIEWED.sub(f'<strong id="reviewed-count">{int(reviewed)}</strong>', html, count=1)


def _json_script(value: Any) -> str:
    # as Jinja's tojson: nothing in the data can close the script element
    text = json.dumps(value, sort_keys=True)
    for a, b in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027")):
        text = text.replace(a, b)
    return f'<script type="application/json" id="medtl-verdicts">{text}</script>'


def _login() -> str:
    try:
        return check_name(getpass.getuser())
    except Exception:  # noqa: BLE001 - no login name (a container), or one that is not a fit name
        return "reviewer"


def _bind(host: str, port: int, handler) -> _HTTPServer:
    """A server bound to ``host``:``port`` but not yet listening (the address is checked first)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type("_ReviewHTTPServer", (_HTTPServer,), {"address_family": family})
    httpd = cls((host, port), handler, bind_and_activate=False)
    try:
        httpd.server_bind()
    except (OSError, OverflowError) as exc:
        httpd.server_close()
        raise ConfigError(None, f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}): pick "
                          "another --host or --port") from None  # fmt: skip
    return httpd


class _HTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` fit for a ward: a backlog, one deadline for reading a whole request
    (a client that trickles bytes is cut off), and a cap on one address's open connections."""

    daemon_threads = True
    request_queue_size = _BACKLOG

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reading: dict[socket.socket, float] = {}  # connection → when its request must be in
        self._open: dict[str, int] = {}
        self.told: set = set()  # connections whose end was already logged (one line each)
        self._cut: set = set()  # connections the reaper cut off
        self._guard = threading.Lock()

    def verify_request(self, request, client_address) -> bool:
        with self._guard:
            if self._open.get(client_address[0], 0) >= _PER_ADDRESS:
                return False  # closed at once: that address already holds its share of threads
            self._open[client_address[0]] = self._open.get(client_address[0], 0) + 1
        return True

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._guard:
                self._reading.pop(request, None)
                self.told.discard(request)
                self._cut.discard(request)
                left = self._open.get(client_address[0], 1) - 1
                if left:
                    self._open[client_address[0]] = left
                else:
                    self._open.pop(client_address[0], None)

    def was_cut(self, request) -> bool:
        """Whether the reaper cut ``request`` off (its deadline passed before it was read)."""
        with self._guard:
            return request in self._cut

    def reading(self, request, seconds: float | None) -> None:
        """Start (``seconds``) or end (``None``) the deadline for reading ``request``."""
        with self._guard:
            if seconds is None:
                self._reading.pop(request, None)
            else:
                self._reading[request] = time.monotonic() + seconds

    def reap_slow_requests(self) -> None:
        """Cut the connections whose request is not in by its deadline (a thread of its own)."""
        while self.socket.fileno() != -1:
            time.sleep(0.25)
            now = time.monotonic()
            with self._guard:
                late = [r for r, t in self._reading.items() if t < now]
                for r in late:
                    self._reading.pop(r, None)
                    self._cut.add(r)
            for r in late:
                with contextlib.suppress(OSError):
                    r.shutdown(socket.SHUT_RD)  # the handler's next read ends: one log line, no traceback

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        gone = isinstance(exc, (ConnectionError, TimeoutError)) or getattr(exc, "errno", None) in _GONE
        if gone:  # the client went away or was cut off: not medtl's fault, and no traceback
            if request not in self.told:
                print(f"medtl review: {client_address[0]}: connection closed ({type(exc).__name__})", file=sys.stderr)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    app: ReviewServer
    server_version = "medtl-review"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: a slow client holds one thread, briefly

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # requests name cases by key only, but a log a reviewer did not ask for is noise

    def setup(self) -> None:
        super().setup()
        self.server.reading(self.request, self.app.read_timeout)  # the whole request, not each read

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        if self.server.was_cut(self.request):
            self.log_error("request not sent within %g s: connection cut", self.app.read_timeout)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        # a half-sent request (read timeout) or a malformed one: one line, never a traceback
        if self.request in self.server.told:
            return
        self.server.told.add(self.request)
        if self.server.was_cut(self.request):  # what it read is a fragment: say why, not what
            format, args = "request not sent within %g s: connection cut", (self.app.read_timeout,)
        print(f"medtl review: {self.client_address[0]}: {format % args}", file=sys.stderr)

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "same-origin")  # browsers then send Origin on posts, never the link
        self.send_header("Content-Security-Policy", "frame-ancestors 'none'; form-action 'self'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, refusal: Refusal) -> None:
        from markupsafe import escape

        body = (f"<!doctype html><meta charset='utf-8'><title>{refusal.status}</title>"
                f"<p>{escape(refusal.message)}</p>")  # fmt: skip
        self._send(refusal.status, body.encode("utf-8"), headers=refusal.headers)

    def _answer(self, work) -> None:
        """Run ``work`` (which returns ``(status, body, content type, headers)``) in one of the
        server's slots; a refusal or a bad value becomes an error page."""
        if not self.app.slots.acquire(timeout=_SLOT_WAIT):
            return self._refuse(Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the review server is busy: try again in a "
                                        "moment", {"Retry-After": "2"}))  # fmt: skip
        try:
            if (self.headers.get("Host") or "").lower() not in self.app.allowed_hosts:
                raise Refusal(HTTPStatus.MISDIRECTED_REQUEST, "unknown host: open the address medtl review printed")
            self._send(*work())
        except Refusal as refusal:
            self._refuse(refusal)
        except ConfigError as exc:  # the verdicts database cannot be opened (a full disk, a read-only folder)
            self._refuse(Refusal(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)))
        finally:
            self.app.slots.release()

    def _route(self) -> tuple[Viewer, str]:
        path = urlsplit(self.path).path
        m = _PERSONAL.match(path)
        viewer = self.app.viewer(m.group(1) if m else None, self.client_address[0])
        return viewer, (m.group(2) if m else path)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.reading(self.request, None)
        self._answer(self._get)

    do_HEAD = do_GET

    def _get(self) -> tuple:
        viewer, path = self._route()
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, self.app.index_page(viewer)
        if path == "/export.csv":
            return (HTTPStatus.OK, self.app.export(viewer), "text/csv; charset=utf-8",
                    {"Content-Disposition": 'attachment; filename="verdicts.csv"'})  # fmt: skip
        m = _CASE.match(path)
        if m:  # a key this report does not hold is a 404 there, from the same snapshot as the page
            saved = (parse_qs(urlsplit(self.path).query).get("saved") or [None])[0]
            return HTTPStatus.OK, self.app.case_page(viewer, m.group(1), saved=saved)
        raise Refusal(HTTPStatus.NOT_FOUND, "no such page in this report (was it rebuilt? open the index)")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            return self._refuse(Refusal(HTTPStatus.BAD_REQUEST, "a verdict form of 1 byte to 64 KiB was expected"))
        # the whole body is read before any answer: a connection closed on unread data is reset,
        # and the client would see that instead of the answer
        body = self.rfile.read(length)
        self.server.reading(self.request, None)
        if len(body) < length:  # cut off, or the client gave up: nothing to answer
            self.close_connection = True
            return
        self._answer(lambda: self._post(body))

    def _post(self, body: bytes) -> tuple:
        allowed = self.app.allowed_hosts
        origin = self.headers.get("Origin")
        sent_from = urlsplit(origin) if origin is not None else None
        if (sent_from is not None and (sent_from.scheme != "http" or sent_from.netloc.lower() not in allowed)) or self.headers.get(
            "Sec-Fetch-Site", "same-origin"
        ) not in ("same-origin", "none"):
            raise Refusal(HTTPStatus.FORBIDDEN, "a verdict can only be posted from this review server's pages")
        viewer, path = self._route()
        m = _POST.match(path)
        if not m:
            raise Refusal(HTTPStatus.NOT_FOUND, "no such case in this report (was it rebuilt? open the index)")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        token = (form.get("token") or [""])[0]
        if not hmac.compare_digest(token.encode(), self.app.token(viewer).encode()):
            raise Refusal(HTTPStatus.FORBIDDEN, "the form is out of date or was not made for you by this server: "
                          "reload the page and record the verdict again")  # fmt: skip
        try:
            where = self.app.record(viewer, m.group(1), form)
        except ConfigError as exc:
            raise Refusal(HTTPStatus.BAD_REQUEST, f"{exc.reason}: go back and correct it") from None
        return HTTPStatus.SEE_OTHER, b"", "text/html; charset=utf-8", {"Location": where}
