#!/usr/bin/env python
"""Benchmark the bias audit: time to audit simulated predictions with patient-level bootstrap CIs.

Simulates ``--rows`` predictions from ``--patients`` patients (several rows per patient, rows of a
patient share a random effect on the score), three attributes (sex: 2 groups, age: binned into
4 bands, site: 5 groups) and a planted gap (one site's scores are noisier), then times
``medtl.evaluate.audit(..., patient="patient", n_boot=--boot)``: point metrics for every group,
1,000 patient-level resamples for the CIs of every metric, overall, per group and of every gap.

Prints a markdown table (and the machine, versions and command) to stdout::

    python benchmarks/bench_audit.py                       # 100,000 and 10,000 rows, 1,000 resamples
    python benchmarks/bench_audit.py --rows 20000 --boot 200 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import cpu_model, version  # noqa: E402  (benchmarks/machine.py)


def simulate(n_rows: int, n_patients: int, seed: int = 0):
    """A predictions table: label, probability, patient, sex, age, site."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    patient = rng.integers(0, n_patients, n_rows)
    sex = rng.choice(["F", "M"], n_patients)[patient]
    age = rng.integers(18, 95, n_patients)[patient]
    site = rng.choice(["A", "B", "C", "D", "E"], n_patients, p=[0.3, 0.25, 0.2, 0.15, 0.1])[patient]
    y = (rng.random(n_rows) < 0.25).astype(int)
    noise = np.where(site == "E", 1.8, 1.0)  # the planted gap: site E's scores are noisier
    logit = -1.2 + 2.2 * y + rng.normal(0, 0.5, n_patients)[patient] + rng.normal(0, 1, n_rows) * noise
    prob = 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "label": y,
            "prob": prob.round(6),
            "patient": [f"P{p:06d}" for p in patient],
            "sex": sex,
            "age": age,
            "site": site,
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,10000", help="comma-separated row counts (default 100000,10000)")
    parser.add_argument("--patients-per-row", type=float, default=0.4, help="patients / rows (default 0.4)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per size; the best is reported (default 2)")
    parser.add_argument("--intersections", action="store_true", help="also audit pairs of attributes")
    args = parser.parse_args(argv)

    from medtl.evaluate import audit

    sizes = [int(s) for s in args.rows.split(",") if s.strip()]
    print("# Bias audit benchmark\n")
    print(f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {cpu_model()}")
    print(
        f"- python {platform.python_version()}, "
        + ", ".join(f"{p} {version(p)}" for p in ("numpy", "scipy", "scikit-learn", "pandas", "fairlearn"))
    )
    print(f"- load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| rows | patients | attributes (groups) | resamples | unit | best time (s) | all runs (s) | flags |")
    print("| ---: | ---: | --- | ---: | --- | ---: | --- | --- |")
    status = 0
    for n in sizes:
        frame = simulate(n, max(1, int(n * args.patients_per_row)))
        times = []
        result = None
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            result = audit(
                frame, "label", "prob", ["sex", "age", "site"], patient="patient", n_boot=args.boot, seed=0,
                threshold=0.5, intersections=args.intersections,
            )  # fmt: skip
            times.append(time.perf_counter() - t0)
        groups = ", ".join(f"{a} {len(g)}" for a, g in result.groups.items())
        flags = "; ".join(f"{f['attribute']} {f['metric']}" for f in result.flags) or "none"
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(
            f"| {n:,} | {result.settings['n_clusters']:,} | {groups} | {args.boot:,} | "
            f"{result.settings['resampling_unit']} | {min(times):.1f} | {runs} | {flags} |"
        )
        if not any(f["attribute"] == "site" for f in result.flags):
            status = 1  # the planted site gap must be found
    print(f"\nload average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return status


if __name__ == "__main__":
    sys.exit(main())
