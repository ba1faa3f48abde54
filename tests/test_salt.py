"""The salt behind pseudonyms is a secret: created private, refused when others can read it, shared
only on purpose (issue 24: a world-readable salt let a tester reverse 40 of 41 patient IDs)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medtl.errors import SaltError
from medtl.io import phi
from medtl.io.phi import pseudonym

pytestmark = pytest.mark.skipif(os.name == "nt", reason="Unix permissions")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh MEDTL_HOME (not yet created) and no salt in the environment."""
    monkeypatch.delenv("MEDTL_SALT", raising=False)
    monkeypatch.delenv("MEDTL_SALT_FILE", raising=False)
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    phi._salt_file.cache_clear()
    yield tmp_path / "home"
    phi._salt_file.cache_clear()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_salt_is_0600_in_a_private_folder_whatever_the_umask(home, umask):
    old = os.umask(umask)
    try:
        key = pseudonym("MRN-0001", "patient")
    finally:
        os.umask(old)
    assert _mode(home / "salt") == 0o600
    assert _mode(home) & 0o077 == 0  # neither group nor others may list, enter or write the folder
    assert len((home / "salt").read_text()) == 64
    assert [p.name for p in home.iterdir()] == ["salt"]  # no temporary file left behind
    phi._salt_file.cache_clear()
    assert pseudonym("MRN-0001", "patient") == key  # the same salt is read back


def test_world_readable_salt_is_refused_naming_file_mode_and_fix(home):
    home.mkdir(mode=0o700)
    (home / "salt").write_text("0123456789abcdef" * 4)
    os.chmod(home / "salt", 0o644)  # what medtl itself created before
    with pytest.raises(SaltError) as info:
        pseudonym("MRN-0001", "patient")
    text = str(info.value)
    assert str(home / "salt") in text and "0644" in text and f"chmod 600 {home / 'salt'}" in text
    assert "MEDTL_SALT_FILE" in text  # the way to share one on purpose
    os.chmod(home / "salt", 0o600)
    assert pseudonym("MRN-0001", "patient")  # fixed as told: accepted


def test_group_writable_salt_folder_is_refused(home):
    home.mkdir()
    os.chmod(home, 0o775)  # a group member could swap the salt for one they know
    with pytest.raises(SaltError, match=r"writable by group .*chmod go-w"):
        pseudonym("MRN-0001", "patient")
    assert not (home / "salt").exists()


def test_team_salt_file_is_accepted_at_0640_and_refused_at_0644(home, monkeypatch, tmp_path):
    team = tmp_path / "team" / "salt"
    team.parent.mkdir()
    team.write_text("team-secret-" + "7" * 40 + "\n")
    os.chmod(team, 0o640)
    monkeypatch.setenv("MEDTL_SALT_FILE", str(team))
    key = pseudonym("MRN-0001", "patient")
    monkeypatch.delenv("MEDTL_SALT_FILE")
    monkeypatch.setenv("MEDTL_SALT", "team-secret-" + "7" * 40)
    assert pseudonym("MRN-0001", "patient") == key  # the file's salt, whitespace stripped
    assert not home.exists()  # a team salt never creates a private one

    monkeypatch.delenv("MEDTL_SALT")
    monkeypatch.setenv("MEDTL_SALT_FILE", str(team))
    phi._salt_file.cache_clear()
    os.chmod(team, 0o644)
    with pytest.raises(SaltError, match=r"readable by others \(mode 0644\).*chmod 640"):
        pseudonym("MRN-0001", "patient")
    os.chmod(team, 0o660)  # one member could change everyone's keys
    with pytest.raises(SaltError, match="writable by group"):
        pseudonym("MRN-0001", "patient")
    monkeypatch.setenv("MEDTL_SALT", "another")
    with pytest.raises(SaltError, match="both set"):
        pseudonym("MRN-0001", "patient")


def test_missing_or_empty_team_salt_file_is_an_error(home, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTL_SALT_FILE", str(tmp_path / "nope"))
    with pytest.raises(SaltError, match="names no file"):
        pseudonym("MRN-0001", "patient")
    (tmp_path / "empty").write_text("\n")
    os.chmod(tmp_path / "empty", 0o600)
    monkeypatch.setenv("MEDTL_SALT_FILE", str(tmp_path / "empty"))
    with pytest.raises(SaltError, match="empty"):
        pseudonym("MRN-0001", "patient")


_RACER = """
import sys, time
from medtl.io.phi import pseudonym
start = float(sys.argv[1])
while time.time() < start:
    pass
print(pseudonym("MRN-0001", "patient"))
"""


def test_concurrent_first_use_agrees_on_one_private_salt(home):
    env = {k: v for k, v in os.environ.items() if k not in ("MEDTL_SALT", "MEDTL_SALT_FILE")}
    start = f"{time.time() + 1.5:.3f}"  # all start hashing at once, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, start], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(keys) == 1 and len(keys.pop()) == 16
    assert [p.name for p in home.iterdir()] == ["salt"] and _mode(home / "salt") == 0o600
