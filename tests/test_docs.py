"""The docs stay true: the CLI reference is the parser's, and every code block of the README and
of docs/ runs (``>>>`` examples run as doctests besides).

Each page runs top to bottom in a fresh folder holding links to the clone's ``sample_data/`` and
``configs/``, as a reader following it from a clone would: ```python blocks share one namespace,
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
#: README and every page of docs/: what a reader copies from must work
DOCS = ("README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))
_BLOCK = re.compile(r"(?P<skip><!-- not run: (?P<why>[^\n]*?) -->\s*\n)?```(?P<lang>python|bash)\n(?P<code>.*?)```",
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


@pytest.mark.parametrize("page", DOCS)
def test_every_code_block_runs_or_says_why_not(page, tmp_path, monkeypatch):
    blocks = code_blocks(ROOT / page)
    for _, _, why, line in blocks:
        assert why is None or why.strip(), f"{page}:{line}: a block that is not run must say why"
    runnable = [(lang, code, f"{page}:{line}") for lang, code, why, line in blocks
                if why is None and not code.lstrip().startswith(">>>")]  # fmt: skip  (>>> blocks run as doctests)
    if not runnable:
        return
    for name in ("sample_data", "configs"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    namespace: dict = {"__name__": "__doc_page__"}
    for lang, code, where in runnable:
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the page's own code, as a reader runs it
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=env, capture_output=True, text=True)
            assert done.returncode == 0, (
                f"{where} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )


def test_blocks_are_found_with_their_reasons(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n<!-- not run: needs a GPU (and >>> in the reason is fine) -->\n```bash\ntorchrun x\n```\n\n"
        "```python\nprint(1)\n```\n\n```text\nnot code\n```\n"
    )
    assert code_blocks(page) == [
        ("bash", "torchrun x\n", "needs a GPU (and >>> in the reason is fine)", 5),
        ("python", "print(1)\n", None, 9),
    ]
