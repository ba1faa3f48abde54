"""What every benchmark report names: the CPU, memory and library versions it ran with.

Imported by the scripts in this folder (``python benchmarks/bench_*.py`` puts the folder on
``sys.path``); not part of the medtl package.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

__all__ = ["cpu_model", "memory_gib", "version"]


def _proc_field(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except (OSError, ValueError):
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"


def memory_gib() -> str:
    """Total memory, e.g. ``23.5 GiB`` (Linux), else ``unknown``."""
    total = _proc_field("/proc/meminfo", "MemTotal:")
    return f"{int(total.split()[0]) / 2**20:.1f} GiB" if total else "unknown"


def version(dist: str) -> str:
    """Installed version of a distribution, or ``not installed``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def add_folder_data_options(parser, work: str, quick: str) -> None:
    """The options of the benchmarks that read make_predict_data.py's folders (predict, report):
    where the data and the work go, and how much of the data to use."""
    from pathlib import Path

    parser.add_argument("--data", type=Path, required=True, help="output of make_predict_data.py (dx/ and ct/)")
    parser.add_argument("--work", type=Path, default=Path(work), help="runs, outputs and subsets go here")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--n2d", type=int, default=None, help="use only the first N radiographs (default all)")
    parser.add_argument("--n3d", type=int, default=None, help="use only the first M CT series (default all)")
    parser.add_argument("--sets", default="dx,ct", help="data sets to run (dx,ct)")
