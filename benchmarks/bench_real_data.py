#!/usr/bin/env python
"""Step 5's data, run as a user runs it: the shipped configs with only the data keys changed.

Each case is ``medtl train CONFIG -o RUNS/<case> --set ...`` then ``medtl evaluate`` on its test
split, as whole CLI processes; a case whose run directory already holds ``model.pt`` is evaluated
again without retraining (``--retrain`` forces it). The table gives the test AUROC with its
patient-bootstrap CI, the calibration the run chose on validation and the test ECE of its
calibrated probabilities next to the raw outputs' and a temperature-only fit's, and the wall time.

Cases (``--only`` picks some):

* ``ihc`` — real colour histology in MedMNIST's layout (``benchmarks/make_colour_data.py``),
  ``configs/medmnist-npz.yaml --set npz=...``; ``ihc-grey`` the same forced to one channel
  (``--set channels=1``), the pipeline that drops colour;
* ``adrenal28`` — AdrenalMNIST3D at 28³ with the default backbone (Lite0 inflated to 3D);
* ``findings`` — the same histology as a multi-label manifest (findings joined by ``|``), trained
  with ``configs/cxr-2d.yaml --set manifest=...``;
* ``breast`` — BreastMNIST (prevalence 0.73, class-weighted loss): calibration with an intercept.

    python benchmarks/bench_real_data.py --runs /tmp/runs --colour /tmp/medtl-colour \\
        --medmnist ../shared/data/medmnist > result.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def cases(colour: Path, medmnist: Path) -> dict[str, dict]:
    npz = str(REPO / "configs" / "medmnist-npz.yaml")
    cxr = str(REPO / "configs" / "cxr-2d.yaml")
    ihc, findings = colour / "ihc.npz", colour / "findings.csv"
    adrenal, breast = medmnist / "adrenalmnist3d.npz", medmnist / "breastmnist.npz"
    return {
        "ihc": {"config": npz, "set": [f"npz={ihc}"], "data": ihc, "split": "test"},
        "ihc-grey": {"config": npz, "set": [f"npz={ihc}", "channels=1"], "data": ihc, "split": "test"},
        "adrenal28": {"config": npz, "set": [f"npz={adrenal}", "spatial_dims=3", "size=[28,28,28]"],
                      "data": adrenal, "split": "test"},  # fmt: skip
        "findings": {"config": cxr, "set": [f"manifest={findings}"], "data": findings, "split": "test"},
        "breast": {"config": npz, "set": [f"npz={breast}"], "data": breast, "split": "test"},
    }


def _medtl(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medtl", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _ece_of_maps(run: Path, data: Path, split: str) -> dict[str, float]:
    """Test ECE (P(positive), or pooled over findings) of the raw outputs, of a temperature fitted
    on the run's validation split, and of the calibration the run chose."""
    import dataclasses

    import torch

    from medtl.data.dataset import prepare
    from medtl.evaluate.calibration import apply_calibration, fit_temperature, read_calibration
    from medtl.evaluate.metrics import expected_calibration_error
    from medtl.tasks import probabilities, task_for
    from medtl.train.finetune import load_run, run_config, run_data
    from medtl.train.inference import predict_logits

    cfg = run_config(run)
    model, spec, _ = load_run(run)
    manifest, splits = run_data(dataclasses.replace(cfg, train_fraction=1.0))
    out = {}
    logits = {}
    for part in ("val", split):
        prepared = prepare(manifest, getattr(splits, part), spec, cache_dir=run / "cache")
        loader = torch.utils.data.DataLoader(prepared.dataset, batch_size=64)
        logits[part] = predict_logits(model, loader, flips=cfg.flips if cfg.tta else ())
    task = task_for(manifest.label_columns, logits["val"][0].shape[1])
    (zv, yv), (zt, yt) = logits["val"], logits[split]
    target = yv if task == "multilabel" else yv[:, 0].astype(int)
    temperature = {"method": "temperature", "temperature": fit_temperature(zv, target, kind=
                   "multilabel" if task == "multilabel" else "softmax")}  # fmt: skip
    maps = {"raw": {"method": "none"}, "temperature": temperature, "chosen": read_calibration(run)}
    for name, record in maps.items():
        p = apply_calibration(zt, record, task) if name != "raw" else probabilities(zt, task)
        if task == "multilabel":
            known = ~np.isnan(yt)
            out[name] = expected_calibration_error(yt[known], p[known])
        else:
            out[name] = expected_calibration_error(yt[:, 0], p[:, 1]) if task == "binary" else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/medtl-bench-runs"))
    parser.add_argument("--colour", type=Path, default=Path("/tmp/medtl-colour"),
                        help="output folder of benchmarks/make_colour_data.py")  # fmt: skip
    parser.add_argument("--medmnist", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    parser.add_argument("--only", nargs="*", help="case names (default: all whose data is present)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run exists")
    args = parser.parse_args()
    from machine import cpu_model, memory_gib, version

    if not (args.colour / "ihc.npz").is_file():
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_colour_data.py"), "--out", str(args.colour)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    rows = []
    for name, case in cases(args.colour, args.medmnist).items():
        if args.only and name not in args.only:
            continue
        if not Path(case["data"]).is_file():
            print(f"skip {name}: {case['data']} is absent", file=sys.stderr)
            continue
        run, out = args.runs / name, args.runs / f"{name}-eval"
        train_s = None
        if args.retrain or not (run / "model.pt").is_file():
            sets = [a for s in case["set"] for a in ("--set", s)]
            train_s = _medtl("train", case["config"], "-o", str(run), "--restart", *sets)
        _medtl("evaluate", str(run), str(case["data"]), "--split", case["split"], "-o", str(out), "--overwrite")
        metrics = json.loads((out / "metrics.json").read_text())
        cal = json.loads((run / "calibration.json").read_text())
        spec = json.loads((run / "preprocess.json").read_text())
        overall = metrics["overall"]
        auroc = overall.get("auroc", overall.get("macro_auroc"))
        ci = overall.get("auroc_ci")
        ece = _ece_of_maps(run, Path(case["data"]), case["split"])
        rows.append((name, spec.get("input_channels"), metrics["n"], auroc, ci, cal["method"], ece, train_s))
        print(f"done {name}", file=sys.stderr)

    print(f"CPU: {cpu_model()}, {memory_gib()}; torch {version('torch')}, monai {version('monai')}; "
          f"medtl at {REPO}\n")  # fmt: skip
    print("| case | channels | test n | test AUROC [95% CI] | calibration chosen | test ECE raw / temperature / chosen | train wall |")
    print("|---|---|---|---|---|---|---|")
    for name, channels, n, auroc, ci, method, ece, train_s in rows:
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " (macro)"
        wall = f"{train_s / 60:.1f} min" if train_s is not None else "reused"
        eces = " / ".join(f"{ece[k]:.3f}" for k in ("raw", "temperature", "chosen"))
        print(f"| {name} | {channels} | {n} | {auroc:.3f}{ci_text} | {method} | {eces} | {wall} |")


if __name__ == "__main__":
    main()
