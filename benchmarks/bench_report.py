#!/usr/bin/env python
"""``medtl report`` speed and size: how long a clinician report of a weekly folder takes to build.

Data: ``benchmarks/make_predict_data.py`` (512² 12-bit DX radiographs in ``dx/``, CT series of 64
slices of 512² in ``ct/``). For each data set the script trains a tiny run only so there is
something to predict with (``medtl train configs/cxr-2d.yaml --set epochs=1``, or
``configs/ct-3d.yaml``; quality is irrelevant to speed), predicts the folder once with
``--saliency gradcam`` (the maps a report draws), then times ``medtl report`` as a whole child
process for each ``--workers`` value: wall seconds, cases per second, the report's size on disk
and per case page. Every report is checked to hold one page per prediction.

    python benchmarks/make_predict_data.py /tmp/pd --n2d 1000 --n3d 20
    python benchmarks/bench_report.py --data /tmp/pd
    python benchmarks/bench_report.py --data /tmp/pd --quick        # 64 DX, 3 CT series, workers 0,2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import add_folder_data_options, cpu_model, memory_gib, version

ROOT = Path(__file__).resolve().parents[1]


def _medtl(*args: str, log: Path | None = None) -> float:
    start = time.perf_counter()
    with open(log or os.devnull, "w") as fh:
        subprocess.run([sys.executable, "-m", "medtl", *args], check=True, cwd=ROOT, stdout=fh, stderr=fh)
    return time.perf_counter() - start


def _subset(src: Path, dst: Path, n: int | None, depth: int) -> Path:
    """The first ``n`` images (DX: files) or series (CT: folders) two levels under ``src``, as links."""
    if n is None:
        return src
    items = sorted(src.glob("/".join(["*"] * depth)))[:n]
    if dst.exists():
        shutil.rmtree(dst)
    for item in items:
        target = dst / item.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.is_dir():  # the scan does not follow linked folders (no cycles): link a series' files
            target.mkdir()
            for f in item.iterdir():
                os.symlink(f, target / f.name)
        else:
            os.symlink(item, target)
    return dst


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_folder_data_options(p, "/tmp/medtl-bench-report", "64 DX, 3 CT series, workers 0,2")
    p.add_argument("--workers", default="0,2,4", help="`medtl report --workers` values (0,2,4)")
    args = p.parse_args(argv)
    if args.quick:
        args.n2d, args.n3d, args.workers = args.n2d or 64, args.n3d or 3, "0,2"
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"# medtl report benchmark, {time.strftime('%Y-%m-%d')}, {cpu_model()}, {os.cpu_count()} CPUs, "
          f"{memory_gib()}, torch {version('torch')}, medtl {version('medtl')}")  # fmt: skip
    print("| data | cases | saliency | workers | wall s | cases/s | report MB | KB per page |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.sets.split(","):
        config, depth, n = {"dx": ("configs/cxr-2d.yaml", 2, args.n2d), "ct": ("configs/ct-3d.yaml", 2, args.n3d)}[name]
        data = _subset(args.data / name, work / f"{name}-subset", n, depth)
        run = work / f"run-{name}"
        if not (run / "model.pt").is_file():
            _medtl("train", config, "-o", str(run), "--restart", "--set", "epochs=1", "--set", "patience=0",
                   log=work / f"train-{name}.log")  # fmt: skip
        pred = work / f"predict-{name}"
        _medtl("predict", str(run), str(data), "-o", str(pred), "--saliency", "gradcam", "--overwrite",
               log=work / f"predict-{name}.log")  # fmt: skip
        n_cases = json.loads((pred / "summary.json").read_text())["counts"]["predicted"]
        for workers in (int(w) for w in args.workers.split(",")):
            out = work / f"report-{name}-{workers}"
            wall = _medtl("report", str(run), str(pred), "-o", str(out), "--overwrite", "--workers", str(workers),
                          log=work / f"report-{name}-{workers}.log")  # fmt: skip
            pages = list((out / "cases").glob("*.html"))
            assert len(pages) == n_cases, f"{out}: {len(pages)} pages for {n_cases} predictions"
            size = _size(out)
            print(f"| {name} | {n_cases} | gradcam | {workers} | {wall:.1f} | {n_cases / wall:.1f} | "
                  f"{size / 2**20:.1f} | {sum(p.stat().st_size for p in pages) / len(pages) / 1024:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
