"""Progress of long phases: a bar on a terminal, plain lines in a log file.

Every long loop in medtl (scanning, caching, saliency checks, maps, batches, report pages) reports
through :func:`progress_bar` (or :func:`track`). On a terminal it is tqdm's bar. Without one (a
batch job's log, ``nohup``, SLURM) tqdm would write ``\\r``-separated redraws that a log file shows
as one endless line, so plain lines go to stderr instead::

    explain: 120/2000 maps (6%), 0:01:12 elapsed, ETA 0:18:40
    ...
    explain: 2000/2000 maps (100%) done in 0:19:52

The rules for lines:

* none in a phase's first :data:`FIRST` seconds (a short phase prints only its last line);
* then one whenever another :data:`STEP` percent is done or :data:`INTERVAL` seconds have passed
  since the last one, whichever comes first, but never more than one a second;
* a last line with the count and the total time when the phase ends; a phase opened with
  ``leave=False`` (a side step, whose terminal bar vanishes) prints it only if it took
  :data:`FIRST` seconds or more; a phase broken off by an error prints none (its error is the
  last word).

A line is printed when the loop reports progress: a single item that takes longer than 30 s
delays it. This module is part of medtl's ground floor: it imports nothing of medtl's.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["FIRST", "INTERVAL", "STEP", "LineProgress", "duration", "is_terminal", "progress_bar", "stop", "track"]

FIRST = 5.0  # seconds: no line before a phase has run this long
INTERVAL = 30.0  # seconds: then a line at least this often while work goes on
STEP = 5.0  # percent: and a line whenever another STEP percent is done
MIN_GAP = 1.0  # seconds: never more than one line a second

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``H:MM:SS`` of a number of seconds.

    >>> duration(72.4), duration(4 * 3600 + 5)
    ('0:01:12', '4:00:05')
    """
    whole = max(0, int(round(seconds)))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _plural(unit: str) -> str:
    if not unit or unit == "B" or unit.endswith("s"):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x")) else "s")


def _number(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:.1f}"


def _bytes(n: float) -> str:
    for size, name in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")):
        if n >= size:
            return f"{n / size:.1f} {name}"
    return f"{int(n)} B"


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress on ``stream`` (default ``sys.stderr``) is drawn as a bar: a terminal, or a
    Jupyter kernel (whose widget tqdm draws); else it is printed as lines.

    >>> import io
    >>> is_terminal(io.StringIO())
    False
    """
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # closed, or not a file
        return False
    return stream is sys.stderr and "ipykernel" in sys.modules


class LineProgress:
    """The line printer behind :func:`progress_bar` when there is no terminal (the rules are in the
    module docstring). ``clock`` (monotonic seconds) and ``stream`` are injectable for tests.

    Args:
        total: the units of the whole phase; ``None`` or 0 when unknown (no percent, no ETA).
        desc: the phase, the start of every line.
        unit: what is counted, singular (``"image"``; ``"B"`` prints sizes).
        initial: units done before this session (a resumed job): counted, not timed.
        leave: always print the last line (else only after :data:`FIRST` seconds).
        interval, step, first: seconds between lines at most; percent between lines (``None``:
            time only); seconds before the first line.

    Example:
        >>> import io
        >>> now = [0.0]
        >>> out = io.StringIO()
        >>> with LineProgress(200, "cache", "image", stream=out, clock=lambda: now[0]) as bar:
        ...     for _ in range(200):
        ...         now[0] += 0.5
        ...         bar.update()
        >>> print(out.getvalue().splitlines()[0])
        cache: 10/200 images (5%), 0:00:05 elapsed, ETA 0:01:35
        >>> print(out.getvalue().splitlines()[-1])
        cache: 200/200 images (100%) done in 0:01:40
    """

    def __init__(self, total: float | None, desc: str, unit: str = "item", *, initial: float = 0, leave: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float = INTERVAL, step: float | None = STEP, first: float = FIRST) -> None:  # fmt: skip
        self.total, self.desc, self.unit, self.n, self.leave = total or None, desc, unit, initial, leave
        self.stream, self.clock, self.interval, self.step, self.first = stream, clock, interval, step, first
        self.postfix = ""
        self.lines = 0  # printed so far
        self._initial = initial
        self._start = self._last = clock()
        self._last_step = self._step_of(initial)
        self._closed = False

    def _step_of(self, n: float) -> int:
        if not self.total or not self.step:
            return 0
        return int(100.0 * min(n, self.total) / self.total // self.step)

    def update(self, n: float = 1) -> None:
        """``n`` more units done; print a line if one is due."""
        self.n += n
        now = self.clock()
        step = self._step_of(self.n)
        due = now - self._last >= self.interval or step > self._last_step
        quiet = now - self._start < self.first or now - self._last < MIN_GAP
        if due and not quiet and not (self.total and self.n >= self.total):  # the end has a line of its own
            self._print(self._line(now))
            self._last, self._last_step = now, step

    def set_description(self, desc: str) -> None:
        """Rename the phase (as tqdm's ``set_description``)."""
        self.desc = desc

    def set_postfix_str(self, text: str) -> None:
        """Extra text at the end of every line (as tqdm's ``set_postfix_str``)."""
        self.postfix = text

    def _count(self) -> str:
        if self.unit == "B":
            return _bytes(self.n) + (f"/{_bytes(self.total)}" if self.total else "")
        done = _number(self.n) + (f"/{_number(self.total)}" if self.total else "")
        percent = f" ({int(100 * min(self.n, self.total) // self.total)}%)" if self.total else ""  # 100% when done
        return f"{done} {_plural(self.unit)}{percent}"

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        text = f"{self.desc}: {self._count()}, {duration(elapsed)} elapsed"
        timed = self.n - self._initial
        if self.total and timed > 0:
            text += f", ETA {duration(elapsed / timed * max(0.0, self.total - self.n))}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _print(self, line: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(line, file=stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        """End the phase: its last line (once), with the count and the total time."""
        if self._closed:
            return
        self._closed = True
        if self.leave or self.lines or self.clock() - self._start >= self.first:
            how = "done in" if not self.total or self.n >= self.total else "stopped after"
            extra = f", {self.postfix}" if self.postfix else ""
            self._print(f"{self.desc}: {self._count()} {how} {duration(self.clock() - self._start)}{extra}")

    def stop(self) -> None:
        """End the phase without a last line (an error broke it off)."""
        self._closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.stop()


class _Silent:
    """What :func:`progress_bar` gives when progress is off: every call does nothing."""

    n = 0

    def update(self, n: float = 1) -> None: ...

    def set_description(self, desc: str) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None: ...


def progress_bar(total: float | None, desc: str, unit: str = "item", *, enabled: bool = True, initial: float = 0,
                 leave: bool = True, stream: TextIO | None = None, **lines: Any) -> Any:  # fmt: skip
    """The progress of one phase: tqdm's bar on a terminal (or in Jupyter), :class:`LineProgress`
    lines on ``stream`` (default ``sys.stderr``) without one, nothing when not ``enabled``.

    Whichever it is, it has ``update(n)``, ``set_description``, ``set_postfix_str``, ``close()``
    and works as a context manager; :func:`stop` ends it after an error. ``leave=False``: a
    terminal bar vanishes when done, and lines end with a last one only after :data:`FIRST`
    seconds. ``lines`` go to :class:`LineProgress` (``clock``, ``interval``, ``step``, ``first``).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with progress_bar(3, "scan", "file", stream=out) as bar:
        ...     bar.update(3)
        >>> out.getvalue().startswith("scan: 3/3 files (100%) done in 0:00:0")
        True
        >>> progress_bar(3, "scan", enabled=False).update(3)  # silent
    """
    if not enabled:
        return _Silent()
    if is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total or None, desc=desc, unit=unit, initial=initial, leave=leave, dynamic_ncols=True,
                    file=stream, unit_scale=unit == "B")  # fmt: skip
    return LineProgress(total, desc, unit, initial=initial, leave=leave, stream=stream, **lines)


def stop(bar: Any) -> None:
    """End ``bar`` (from :func:`progress_bar`) after an error: a terminal bar closes, lines end
    without a last line.

    >>> import io
    >>> out = io.StringIO()
    >>> stop(progress_bar(10, "predict", "image", stream=out)); out.getvalue()
    ''
    """
    (bar.stop if isinstance(bar, (LineProgress, _Silent)) else bar.close)()


def track(iterable: Iterable[T], desc: str, unit: str = "item", *, total: float | None = None, enabled: bool = True,
          **options: Any) -> Iterator[T]:  # fmt: skip
    """Iterate over ``iterable`` with :func:`progress_bar` (``total``: default ``len(iterable)``):
    the last line when the loop ends, none when it breaks off (an error in its body).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> [x * 2 for x in track([1, 2, 3], "double", stream=out)]
        [2, 4, 6]
        >>> out.getvalue().split(" done")[0]
        'double: 3/3 items (100%)'
    """
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    bar = progress_bar(total, desc, unit, enabled=enabled, **options)
    finished = False
    try:
        for item in iterable:
            yield item
            bar.update(1)
        finished = True
    finally:
        if finished:
            bar.close()
        else:
            stop(bar)
