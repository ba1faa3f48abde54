"""The weight cache end to end: download with checksum (from a local server), CLI messages."""

import dataclasses
import hashlib
import http.server
import threading
from functools import partial

import pytest
import torch

from medtl.cli import main
from medtl.errors import WeightsError
from medtl.models import SOURCES
from medtl.models import weights as W


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www (stands in for the upstream host)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _lite0_source_at(url: str, sha256: str | None):
    base = SOURCES["efficientnet-lite0.imagenet"]
    return dataclasses.replace(base, url=url, package=None, sha256=sha256, sha256_prefix=None)


def test_download_checks_the_checksum(served, tmp_path, monkeypatch):
    root, base_url = served
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    original = W.fetch("efficientnet-lite0.imagenet")  # the PyPI package's file
    payload = original.read_bytes()
    (root / "lite0.pth").write_bytes(payload)
    (root / "tampered.pth").write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    digest = hashlib.sha256(payload).hexdigest()

    bad = _lite0_source_at(base_url + "tampered.pth", digest)
    monkeypatch.setitem(SOURCES, bad.name, bad)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        W.fetch(bad.name, download=True)
    assert not W.cached_path(bad).exists()  # nothing half-trusted left behind
    assert not list((tmp_path / "home" / "weights").glob(".download-*"))

    good = _lite0_source_at(base_url + "lite0.pth", digest)
    monkeypatch.setitem(SOURCES, good.name, good)
    path = W.fetch(good.name, download=True)
    assert path == W.cached_path(good) and W.sha256_file(path) == digest
    state = torch.load(path, weights_only=True)
    assert "_conv_stem.weight" in state


def test_unreachable_host_says_how_to_import(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    src = _lite0_source_at("http://127.0.0.1:9/nowhere.pth", None)  # port 9: nothing listens
    monkeypatch.setitem(SOURCES, src.name, src)
    with pytest.raises(WeightsError, match="download of .* failed.*medtl weights import efficientnet-lite0.imagenet"):
        W.fetch(src.name, download=True)


def test_cli_weights_and_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite0.imagenet" in out and "densenet121.xrv-all" in out
    assert main(["weights", "path", "efficientnet-lite0.imagenet"]) == 0
    assert capsys.readouterr().out.strip().endswith("efficientnet-lite0-57934424.pth")
    assert main(["weights", "path", "resnet50.medicalnet"]) == 1
    err = capsys.readouterr().err
    assert "resnet_50_23dataset.pth" in err and "medtl weights import resnet50.medicalnet" in err
    assert main(["weights", "verify"]) == 0
    assert "no cached weights" in capsys.readouterr().out
    assert main(["weights", "import", "resnet18.imagenet", str(tmp_path / "missing.pth")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["models", "efficientnet-lite*"]) == 0
    assert "efficientnet-lite0" in capsys.readouterr().out
