"""The CLI reference (docs/cli.md), generated from the argument parser so it cannot drift from it.

Regenerate after changing a command: ``python -m medtl.clidoc > docs/cli.md``; a test compares
the file with this output.
"""

from __future__ import annotations

import argparse
import sys

from .cli import build_parser

__all__ = ["cli_markdown"]

_WIDTH = 100  # usage lines wrap here whatever the terminal (the file must not depend on it)

_HEADER = """# Command-line reference

Every `medtl` command, its arguments and defaults. Generated from the parser by
`python -m medtl.clidoc > docs/cli.md`; `tests/test_docs.py` fails when this page and the
parser disagree. `medtl COMMAND --help` prints the same. Every command takes the global
`-v/--verbose` (debugging detail and tracebacks) before the command name.
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each sub-command, in the order they were declared."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name) or sub.description or "", sub) for name, sub in action.choices.items()]
    return []


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else None)
            name = ", ".join(f"`{o}`" + (f" `{metavar}`" if metavar and o.startswith("--") else "")
                             for o in action.option_strings)  # fmt: skip
        else:
            name = f"`{action.metavar or action.dest}`" + (" …" if action.nargs in ("+", "*") else "")
        default = action.default
        shown = "" if default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
        # argparse's own expansion (%(default)s, %(choices)s, %%), as `--help` prints it
        help_text = argparse.HelpFormatter(parser.prog)._expand_help(action) if action.help else ""
        rows.append(f"| {name} | {shown} | {_cell(help_text)} |")
    if not rows:
        return []
    return ["| argument | default | meaning |", "|---|---|---|", *rows]


def _section(name: str, summary: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if summary:
        text = _cell(summary[0].upper() + summary[1:])
        lines += [text if text.endswith(".") else text + ".", ""]
    lines += ["```text", _usage(parser), "```", ""]
    table = _arguments(parser)
    if table:
        lines += [*table, ""]
    for sub_name, sub_help, sub in _subcommands(parser):
        lines += _section(sub_name, sub_help, sub, level + 1)
    return lines


def cli_markdown() -> str:
    """docs/cli.md: every command of :func:`medtl.cli.build_parser` with its usage and arguments.

    Example:
        >>> from medtl.clidoc import cli_markdown
        >>> text = cli_markdown()
        >>> "## `medtl predict`" in text and "`--resume`" in text
        True
    """
    parser = build_parser()
    commands = _subcommands(parser)
    lines = [_HEADER, "| command | what it does |", "|---|---|"]
    lines += [
        f"| [`{sub.prog}`](#{sub.prog.replace(' ', '-')}) | {_cell(text).rstrip('.')} |" for _, text, sub in commands
    ]
    lines.append("")
    for name, text, sub in commands:
        lines += _section(name, text, sub, 2)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(cli_markdown())
