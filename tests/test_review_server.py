"""`medtl review` with several readers, as a hostile local user and a busy ward would use it:
who a verdict is attributed to, exact Host and address rules, identifiers kept on this machine,
ordinary load (100 posts at once, half-sent requests), a report rebuilt under a running server.
Exports opened by a spreadsheet are in test_csv_cells.py; readers in a browser in
test_report_browser.py."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import threading
import time
from urllib.parse import urlencode

import pytest
from report_setup import SAMPLE, http_request

from medtl.cli import main
from medtl.errors import ConfigError
from medtl.report import ReviewServer, VerdictStore, add_reader, build_report, remove_reader

_request = http_request


def _token(page: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', page).group(1)


class _Running:
    """A ReviewServer serving in a thread for the length of a ``with``."""

    def __init__(self, *args, **kwargs):
        self.server = ReviewServer(*args, **kwargs)

    def __enter__(self) -> ReviewServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


@pytest.fixture
def folder(report_folder, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(report_folder, out)
    return out


def _path(link: str) -> str:
    """``/r/<secret>/`` of a printed link."""
    return re.search(r"(/r/[A-Za-z0-9_-]+/)$", link).group(1)


# ----------------------------------------------------------------------------- identities
def test_each_reader_speaks_only_through_their_own_link(folder, capsys):
    assert main(["review", "add-reader", str(folder), "dr_a"]) == 0
    link_a = _path(capsys.readouterr().out.strip())
    link_b = _path(add_reader(folder, "dr_b"))
    key, second = list(json.loads((folder / "report.json").read_text())["cases"][i]["key"] for i in (0, 1))
    with _Running(folder, reviewer="lead", port=0) as server:
        base = server.url.rstrip("/")
        # with readers, nothing is served without a link: not the index, not a case, not the export
        for page in ("/", f"/cases/{key}.html", "/export.csv"):
            status, body, _ = _request(base + page)
            assert status == 401 and "personal link" in body
        status, page_a, _ = _request(f"{base}{link_a}cases/{key}.html")
        assert status == 200 and "Recording as <strong>dr_a</strong>" in page_a
        token_a = _token(page_a)
        # dr_a's link, whatever name the form claims: stored as dr_a
        form = {"token": token_a, "verdict": "agree", "comment": "fine", "reviewer": "dr_b"}
        status, _, headers = _request(f"{base}{link_a}cases/{key}/verdict", form)
        assert status == 303 and headers["Location"].startswith(f"{link_a.rstrip('/')}/cases/{key}.html?saved=")
        # dr_a's form token does not post through dr_b's link, nor with no link at all
        assert _request(f"{base}{link_b}cases/{key}/verdict", form)[0] == 403
        assert _request(f"{base}/cases/{key}/verdict", form)[0] == 401
        token_b = _token(_request(f"{base}{link_b}cases/{key}.html")[1])
        status, _, headers = _request(f"{base}{link_b}cases/{key}/verdict",
                                      {"token": token_b, "verdict": "disagree", "then": "next"})  # fmt: skip
        assert status == 303 and headers["Location"].startswith(f"{link_b.rstrip('/')}/cases/{second}.html?saved=")
        saved_b = headers["Location"].split("saved=")[1]
        # readers are blind to each other: dr_b's pages, index and export show dr_b's verdicts only
        page_b = _request(f"{base}{link_b}cases/{key}.html")[1]
        assert "disagree" in page_b and "fine" not in page_b and ">dr_a<" not in page_b
        index_b = _request(f"{base}{link_b}")[1]
        statuses = json.loads(re.search(r'id="medtl-verdicts">(.*?)</script>', index_b).group(1))
        assert statuses == {key: {"status": "disagree", "text": "disagree (dr_b)"}}
        assert "dr_a" not in _request(f"{base}{link_b}export.csv")[1]
        # dr_a cannot have dr_b's verdict confirmed on a page by guessing its id
        assert "Recorded:" not in _request(f"{base}{link_a}cases/{second}.html?saved={saved_b}")[1]
        # an unknown link, and a removed reader's link, open nothing
        assert _request(f"{base}/r/{'x' * 32}/")[0] == 403
        remove_reader(folder, "dr_a")
        assert _request(f"{base}{link_a}")[0] == 403
        assert _request(f"{base}{link_a}cases/{key}/verdict", dict(form, reviewer="dr_a"))[0] == 403
    with VerdictStore(folder / "verdicts.sqlite") as store:
        assert [(r["reviewer"], r["verdict"], r["source"]) for r in store.history()] == [
            ("dr_a", "agree", "live"), ("dr_b", "disagree", "live")]  # fmt: skip


def test_a_single_user_review_speaks_for_its_reviewer_only(folder):
    with pytest.raises(ConfigError, match="must be printable text"):
        ReviewServer(folder, reviewer="dr_a\r\nSet-Cookie: x", port=0)
    with pytest.raises(ConfigError, match="must be printable text"):
        ReviewServer(folder, reviewer="dr\0", port=0)
    for name in ("dr\nb", "", "x" * 101):
        assert main(["review", "add-reader", str(folder), name]) == 1
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    with _Running(folder, reviewer="dr_a", port=0) as server:
        page = _request(f"{server.url}cases/{key}.html")[1]
        assert 'name="reviewer"' not in page  # nothing to forge: the form has no name field
        _request(f"{server.url}cases/{key}/verdict", {"token": _token(page), "verdict": "agree", "reviewer": "dr_b"})
    with VerdictStore(folder / "verdicts.sqlite") as store:
        assert [r["reviewer"] for r in store.history()] == ["dr_a"]


def test_imported_verdicts_show_where_they_came_from(folder, tmp_path):
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    forged = tmp_path / "forged.csv"
    forged.write_text("study,reviewer,verdict,comment,probability,recorded_at,source\n"
                      f"{key},dr_a,disagree,,0.5,2020-01-01T00:00:00+00:00,review\n")  # fmt: skip
    link = _path(add_reader(folder, "dr_a"))
    assert main(["review", "import", str(forged), str(folder)]) == 0
    with _Running(folder, port=0) as server:
        base = server.url.rstrip("/")
        page = _request(f"{base}{link}cases/{key}.html")[1]
        assert "imported from forged.csv (SHA-256 " in page
        assert _request(f"{base}{link}cases/{key}/verdict", {"token": _token(page), "verdict": "agree"})[0] == 303
        statuses = json.loads(re.search(r'id="medtl-verdicts">(.*?)</script>', _request(f"{base}{link}")[1]).group(1))
    assert statuses[key]["status"] == "agree"  # the live verdict, not the file's "later" claim


def test_no_reader_sees_another_readers_verdicts_even_after_a_rebuild(report_inputs, folder):
    """The pages on disk hold no verdicts once a review has readers; a reader's index starts from
    none, whatever the file holds (a report built before its readers were added)."""
    run, _, predictions, _, _ = report_inputs
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    with VerdictStore(folder / "verdicts.sqlite") as store:
        store.record(key, "dr_a", "disagree", comment="secret opinion")
    build_report(run, predictions, folder, overwrite=True, workers=0)  # before readers: the files show it
    assert "disagree (dr_a)" in (folder / "index.html").read_text()
    link_b = _path(add_reader(folder, "dr_b"))
    with _Running(folder, port=0) as server:
        index = _request(server.url.rstrip("/") + link_b)[1]
    assert "dr_a" not in index and "secret opinion" not in index
    assert '<strong id="reviewed-count">0</strong>' in index
    build_report(run, predictions, folder, overwrite=True, workers=0)  # with readers: the files show none
    on_disk = (folder / "index.html").read_text() + "".join(p.read_text() for p in (folder / "cases").glob("*.html"))
    assert "dr_a" not in on_disk and "secret opinion" not in on_disk
    assert "blind to each other" in json.dumps(json.loads((folder / "report.json").read_text())["notes"])


def test_reader_names_are_told_apart(folder):
    add_reader(folder, "José")
    for name, message in (("Jose\u0301", "already a reader"), ("JOSÉ", "only in case"), ("\u3164", "prints as blank"),
                          ("\u2800 \u2800", "prints as blank")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            add_reader(folder, name)
    remove_reader(folder, "José")
    with pytest.raises(ConfigError, match="was removed from this report: pass --new-link"):
        add_reader(folder, "José")


def test_a_verdict_records_how_it_reached_the_server(folder):
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    with _Running(folder, reviewer="dr_a", port=0) as server:  # single-user first
        page = _request(f"{server.url}cases/{key}.html")[1]
        _request(f"{server.url}cases/{key}/verdict", {"token": _token(page), "verdict": "agree"})
    link = _path(add_reader(folder, "dr_a"))
    with _Running(folder, port=0) as server:
        base = server.url.rstrip("/")
        page = _request(f"{base}{link}cases/{key}.html")[1]
        _request(f"{base}{link}cases/{key}/verdict", {"token": _token(page), "verdict": "disagree"})
    with VerdictStore(folder / "verdicts.sqlite") as store:
        assert [(r["reviewer"], r["via"]) for r in store.history()] == [("dr_a", "single-user"), ("dr_a", "link")]


# ----------------------------------------------------------------------------- addresses
def _outward_address() -> str | None:
    """This machine's address on a non-loopback interface, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the kernel only picks the interface
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_listening_beyond_loopback_takes_a_flag_readers_and_a_name(folder):
    with pytest.raises(ConfigError, match="--host 0.0.0.0 lets other machines connect: pass --remote"):
        ReviewServer(folder, host="0.0.0.0", port=0)
    with pytest.raises(ConfigError, match="--remote needs readers"):
        ReviewServer(folder, host="0.0.0.0", port=0, remote=True)
    add_reader(folder, "dr_a")
    for spelling in ("0.0.0.0", "0", "0x0", "000.0.0.0"):  # what the socket binds, not how it is written
        with pytest.raises(ConfigError, match="give it with --allow-host"):
            ReviewServer(folder, host=spelling, port=0, remote=True)
    assert main(["review", str(folder), "--host", "0.0.0.0", "--port", "0"]) == 1


def test_the_host_check_is_exact(folder):
    link = _path(add_reader(folder, "dr_a"))
    with _Running(folder, host="0.0.0.0", port=0, remote=True, allow_hosts=["review.test"]) as server:
        port = server.port
        url = f"http://127.0.0.1:{port}{link}"
        for host, code in ((f"0.0.0.0:{port}", 421), (f"127.0.0.1:{port}", 421), ("review.test", 421),
                           (f"review.test:{port + 1}", 421), (f"review.test:{port}", 200)):  # fmt: skip
            assert _request(url, headers={"Host": host})[0] == code, host
    # browsers leave the port out on 80 and 443: the bare name is this server there, nowhere else
    from medtl.report.access import allowed_hosts

    assert {"127.0.0.1", "localhost", "127.0.0.1:80"} <= allowed_hosts("127.0.0.1", 80)
    assert "review.test" in allowed_hosts("0.0.0.0", 443, ["review.test"])
    assert "127.0.0.1" not in allowed_hosts("127.0.0.1", 8765)
    assert not any(h.startswith("0.0.0.0") for h in allowed_hosts("0.0.0.0", 80, ["review.test"]))


def test_identifiers_are_served_to_this_machine_only_unless_named(folder):
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no address but loopback: another machine's request cannot be made")
    record = json.loads((folder / "report.json").read_text())
    (folder / "report.json").write_text(json.dumps(dict(record, show_identifiers=True)))
    link = _path(add_reader(folder, "dr_a"))
    for named, code in ((False, 403), (True, 200)):
        with _Running(folder, host=outward, port=0, remote=True, remote_identifiers=named) as server:
            status, body, _ = _request(f"http://{outward}:{server.port}{link}")  # from a non-loopback address
            assert status == code, named
            if code == 403:
                assert "patient identifiers" in body
    with _Running(folder, host=outward, port=0, remote=True, remote_identifiers=True) as server:
        remove_reader(folder, "dr_a")  # no readers left: the review stays one with readers, and opens to nobody
        for page in ("/", "/export.csv", link):
            assert _request(f"http://{outward}:{server.port}{page}")[0] in (401, 403), page
    with _Running(folder, port=0) as server:  # on this machine too: removing every reader opens nothing
        assert _request(f"{server.url}export.csv")[0] == 401


# ----------------------------------------------------------------------------- load
def _post(port: int, key: str, token: str, i: int, out: list) -> None:
    body = urlencode({"token": token, "verdict": "agree", "comment": f"post {i}"})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", f"/cases/{key}/verdict", body,
                     {"Content-Type": "application/x-www-form-urlencoded", "Host": f"127.0.0.1:{port}"})  # fmt: skip
        resp = conn.getresponse()
        out.append((i, resp.status, resp.getheader("Retry-After")))
        conn.close()
    except OSError as exc:  # a reset connection: what the issue saw with a backlog of 5
        out.append((i, type(exc).__name__, None))


def test_a_burst_of_connections_waits_in_the_backlog(folder):
    """While the server is not accepting (busy), 100 connections are held by the kernel, not
    dropped: the listen backlog is a ward's burst (it was 5)."""
    server = ReviewServer(folder, reviewer="dr_a", port=0)  # listening, not yet accepting
    socks, failed = [], 0
    try:
        for _ in range(100):
            try:
                socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=1.0))
            except OSError:
                failed += 1
    finally:
        for s in socks:
            s.close()
        server.httpd.server_close()
    assert failed == 0


def test_a_hundred_posts_at_once_are_all_stored_or_told_to_retry(folder):
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    with _Running(folder, reviewer="dr_a", port=0) as server:
        token = _token(_request(f"{server.url}cases/{key}.html")[1])
        out: list = []
        threads = [threading.Thread(target=_post, args=(server.port, key, token, i, out)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert len(out) == 100
    assert all(status == 303 or (status == 503 and retry) for _, status, retry in out), out
    with VerdictStore(folder / "verdicts.sqlite") as store:
        stored = {r["comment"] for r in store.history()}
    assert stored == {f"post {i}" for i, status, _ in out if status == 303}


def test_half_sent_requests_time_out_with_one_line_each(folder, capsys):
    key = json.loads((folder / "report.json").read_text())["cases"][0]["key"]
    with _Running(folder, reviewer="dr_a", port=0, read_timeout=0.5) as server:
        socks = []
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", server.port))
            head = (f"POST /cases/{key}/verdict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nverdict=ag")
            s.sendall(head.encode() if i % 2 else head.split("\r\n")[0].encode())  # half a body, half a request line
            socks.append(s)
        time.sleep(1.5)
        for s in socks:
            s.close()
        # a client that leaves before its answer
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(f"GET / HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        time.sleep(0.5)
        assert _request(server.url)[0] == 200  # still serving
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 40 <= len(lines) <= 50 and all(line.startswith("medtl review: 127.0.0.1: ") for line in lines), lines[:3]


def test_a_client_that_trickles_its_request_is_cut_off(folder, capsys):
    """The read timeout is for the whole request: a byte every 0.2 s does not keep it open."""
    import select

    with _Running(folder, reviewer="dr_a", port=0, read_timeout=1.0) as server:
        s = socket.create_connection(("127.0.0.1", server.port))
        request = f"GET / HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: {'a' * 60}\r\n\r\n".encode()
        start, answered = time.monotonic(), False
        for byte in request:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            if select.select([s], [], [], 0.2)[0]:  # the server answered or closed: it gave up on us
                answered = True
                break
        elapsed = time.monotonic() - start
        s.close()
        assert answered and elapsed < 3.0, elapsed  # a full trickle would take 14 s
        assert _request(server.url)[0] == 200
    err = capsys.readouterr().err
    assert err.count("connection cut") == 1 and "Traceback" not in err


def test_a_rebuilt_report_is_served_without_a_restart(report_inputs, folder, tmp_path):
    from medtl.outputs import MARKER
    from medtl.predict import predict_folder

    run = report_inputs[0]
    before = [c["key"] for c in json.loads((folder / "report.json").read_text())["cases"]]
    with _Running(folder, reviewer="dr_a", port=0) as server:
        assert _request(f"{server.url}cases/{before[0]}.html")[0] == 200
        marker = json.loads((folder / MARKER).read_text())
        (folder / MARKER).write_text(json.dumps(dict(marker, complete=False)))  # as a rebuild begins
        status, body, headers = _request(f"{server.url}cases/{before[0]}.html")
        assert status == 503 and headers.get("Retry-After") and "being rebuilt" in body
        (folder / MARKER).write_text(json.dumps(marker))
        predictions = tmp_path / "fewer"
        predict_folder(run, SAMPLE / "cxr" / "p001", predictions, workers=0)
        build_report(run, predictions, folder, overwrite=True, workers=0)
        after = [c["key"] for c in json.loads((folder / "report.json").read_text())["cases"]]
        gone = [k for k in before if k not in after]
        assert gone and after
        status, body, _ = _request(f"{server.url}cases/{gone[0]}.html")
        assert status == 404 and "rebuilt" in body
        page = _request(f"{server.url}cases/{after[0]}.html")[1]
        assert _request(f"{server.url}cases/{after[0]}/verdict", {"token": _token(page), "verdict": "agree"})[0] == 303
        assert after[0] in _request(server.url)[1]
