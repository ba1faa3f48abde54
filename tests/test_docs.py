"""The docs stay true: the CLI reference is the parser's, and every code block of the guides runs.

Each guide runs top to bottom in a fresh folder holding links to the clone's ``sample_data/`` and
``configs/``, as a reader following it from the clone would: ```python blocks share one namespace,
```bash blocks run in bash with ``set -euo pipefail`` and this environment's ``medtl`` first on
PATH. A block that cannot run here (a server that waits for a browser, a file from a hospital)
is preceded by ``<!-- not run: why -->``; the test checks that every skipped block says why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ("README.md", "docs/quickstart.md", "docs/guide-research.md", "docs/guide-batch.md")
_BLOCK = re.compile(r"(?P<skip><!-- not run: (?P<why>[^>]*?) -->\s*\n)?```(?P<lang>python|bash)\n(?P<code>.*?)```",
                    re.S)  # fmt: skip


def code_blocks(path: Path) -> list[tuple[str, str, str | None, int]]:
    """(language, code, reason it is not run or None, line number) of each block, in order."""
    text = path.read_text(encoding="utf-8")
    return [(m["lang"], m["code"], m["why"], text.count("\n", 0, m.start("code")) + 1) for m in _BLOCK.finditer(text)]


def test_cli_reference_is_generated_from_the_parser():
    from medtl.clidoc import cli_markdown

    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == cli_markdown(), (
        "docs/cli.md is out of step with the parser: run `python -m medtl.clidoc > docs/cli.md`"
    )


@pytest.mark.parametrize("guide", GUIDES)
def test_every_block_of_the_guide_runs(guide, tmp_path, monkeypatch):
    blocks = code_blocks(ROOT / guide)
    assert blocks, f"{guide} has no code"
    for name in ("sample_data", "configs"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    namespace: dict = {"__name__": "__guide__"}
    for lang, code, why, line in blocks:
        where = f"{guide}:{line}"
        if why is not None:
            assert why.strip(), f"{where}: a block that is not run must say why"
            continue
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the guide's own code, as a reader runs it
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=env, capture_output=True, text=True)
            assert done.returncode == 0, (
                f"{where} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
