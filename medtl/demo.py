"""The whole toolkit on the sample data, one step after another: ``medtl demo`` and ``make demo``.

Scan the folder, fine-tune the default recipe, evaluate with a bias audit, explain with the sanity
check, predict a folder that also holds a broken and a foreign file, and build the review report.
Each step prints one line with its key number; the last line says where the report is.

The demo reads ``sample_data/`` and ``configs/cxr-2d.yaml`` of a medtl clone (they are not part of
an installed wheel); ``data`` and ``config`` point elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["run_demo", "STEPS"]

#: The steps, in order: each prints one line.
STEPS = ("scan", "train", "evaluate", "explain", "predict", "report")

_CLONE = Path(__file__).resolve().parents[1]
#: A photograph among the radiographs: it loads, it predicts, and it must be flagged as foreign.
FOREIGN_FILE = "foreign/photograph.png"
#: What the demo's model is for, stated on its card and report (the shipped config, meant for real
#: data, states none of its own).
DEMO_INTENDED_USE = ("A demonstration on synthetic radiographs: flags images with the sample data's \"label=1\" pattern "
                     "for a reader to check. Not trained or validated on patients; research use only, not a medical "
                     "device.")  # fmt: skip
#: A DICOM file cut short in the middle of its pixel data, as a failed copy leaves it.
BROKEN_FILE = "broken/IM_truncated.dcm"


def run_demo(
    out: str | os.PathLike = "out",
    *,
    data: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    progress: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run scan → train → evaluate → explain → predict → report on the sample data into ``out``.

    Everything under ``out`` that the demo writes is replaced on a second run. Training output
    (one line per epoch) is kept out of the way; each step reports one line through ``echo``.

    Args:
        out: the demo's folder; it gets ``manifest.csv``, ``run/``, ``evaluation/``,
            ``explanation/``, ``incoming/`` (the folder predicted), ``predictions/`` and ``report/``.
        data: the sample data folder (default: the clone's ``sample_data/``); it needs ``cxr.csv``
            with ``sex`` and ``site`` columns, as sample_data has.
        config: the training config (default: the clone's ``configs/cxr-2d.yaml``).
        progress: show progress bars (on stderr).
        overwrite: replace another command's output in ``out`` (only the files it recorded). An
            earlier demo's output is replaced without it; a folder holding files medtl did not
            write is refused either way.
        echo: where each step's line goes.

    Returns:
        The key numbers of every step, by step name, and ``index``: the report's index page.

    Raises:
        ConfigError: the sample data or the config is not there (an installed wheel has neither).
        OutputError: ``out`` holds files medtl did not write, or another command's output (without
            ``overwrite``), or sits inside an input or other medtl output.

    Example:
        >>> from medtl.demo import run_demo
        >>> result = run_demo("out")                     # doctest: +SKIP
        >>> result["evaluate"]["auroc"], result["index"]   # doctest: +SKIP
        (0.84, 'out/report/index.html')
    """
    data = Path(data) if data is not None else _CLONE / "sample_data"
    config = Path(config) if config is not None else _CLONE / "configs" / "cxr-2d.yaml"
    manifest = data / "cxr.csv"
    for need, what in ((manifest, "the sample data's manifest"), (config, "the demo's training config")):
        if not need.is_file():
            raise ConfigError(need, f"{what} is missing: run the demo in a clone of medtl, or pass "
                                    f"{'data' if need == manifest else 'config'}= (`--data` / `--config`)")  # fmt: skip
    from .outputs import mark_complete, output_folder

    result: dict[str, Any] = {}
    started = time.perf_counter()
    steps = (_scan, _train, _evaluate, _explain, _predict, _report)
    # the steps' outputs nest in the demo's own folder: a second demo replaces them, and nothing else
    with output_folder(out, "demo", inputs=[data, config], overwrite=overwrite) as out:
        for number, (step, name) in enumerate(zip(steps, STEPS, strict=True), start=1):
            t0 = time.perf_counter()
            line, numbers = step(out, data=data, manifest=manifest, config=config, progress=progress, result=result)
            result[name] = numbers
            echo(f"{number}/{len(steps)} {name:<8} {line} ({time.perf_counter() - t0:.0f} s)")
        mark_complete(out, "demo")
    result["index"] = os.fspath(out / "report" / "index.html")
    result["seconds"] = time.perf_counter() - started
    echo(f"Open {result['index']} in a browser; `medtl review {out / 'report'}` records verdicts "
         f"({result['seconds'] / 60:.1f} min in all).")  # fmt: skip
    return result


@contextlib.contextmanager
def _quiet():
    """Keep the per-epoch lines and library chatter of one step off the demo's own lines."""
    import logging
    import warnings

    lightning = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in lightning]
    for lg in lightning:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(lightning, levels, strict=True):
            lg.setLevel(level)


def _ci(ci) -> str:
    return f" [95% CI {ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _scan(out: Path, *, data: Path, progress: bool, **_) -> tuple[str, dict]:
    from .io import scan

    found = scan(data, progress=progress)
    found.to_csv(out / "manifest.csv", out / "scan_errors.csv")
    kinds = {}
    for row in found.rows:
        kinds[row.get("kind")] = kinds.get(row.get("kind"), 0) + 1
    shapes = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: str(kv[0])))
    line = (f"{len(found.rows)} images and series ({shapes}) in {found.n_files} files, {len(found.errors)} "
            f"unreadable → {out / 'manifest.csv'}")  # fmt: skip
    return line, {"images": len(found.rows), "errors": len(found.errors), "files": found.n_files}


def _train(out: Path, *, manifest: Path, config: Path, progress: bool, **_) -> tuple[str, dict]:
    from .train.config import load_config
    from .train.finetune import finetune

    cfg = load_config(config, [f"manifest={manifest.resolve()}"])
    if not cfg.intended_use.strip():  # the shipped config is for real data and states no use of its own
        cfg = dataclasses.replace(cfg, intended_use=DEMO_INTENDED_USE)
    with _quiet():
        run = finetune(cfg, out / "run", resume=False, overwrite=True, progress=progress)
    from .explain.choice import choose_default
    from .rundir import read_json

    with _quiet():  # as `medtl train` does when a run finishes: the map clinicians see, chosen by evidence
        choice = choose_default(out / "run", images=cfg.saliency_check, progress=progress)
    n_train = read_json(out / "run" / "split.json")["counts"]["train"]["images"]
    start = f"{cfg.pretrained} weights" if cfg.pretrained else "from scratch"
    line = (f"{cfg.backbone} ({start}, {cfg.strategy} fine-tuning) on {n_train} radiographs: validation AUROC "
            f"{run.val_auroc:.2f} at epoch {run.best_epoch}; saliency map by default {choice['method']} → "
            f"{out / 'run'}")  # fmt: skip
    return line, {"val_auroc": run.val_auroc, "best_epoch": run.best_epoch, "n_train": n_train,
                  "saliency": choice["method"]}  # fmt: skip


def _evaluate(out: Path, *, manifest: Path, progress: bool, **_) -> tuple[str, dict]:
    from .evaluate.run import evaluate_run

    with _quiet():
        r = evaluate_run(out / "run", manifest, out / "evaluation", groups=("sex", "site"), split="test", min_group=5,
                         progress=progress, overwrite=True)  # fmt: skip
    o = r["overall"]
    flags = [f"{f['attribute']} {f['metric']}" for f in r["flags"]]
    small = sorted({a for a, st in r.get("groups", {}).items() for s in st.values() if s != "ok"})
    audit = f"flagged gaps: {', '.join(flags)}" if flags else "no gap flagged between groups of sex or site"
    if small:
        audit += f" (some groups of {', '.join(small)} too small to judge)"
    confounded = [f"{f['attribute']} ({f['check'].replace('_', ' ')})" for f in r.get("confounder_flags", [])]
    if confounded:
        audit += f"; confounder check flags {', '.join(confounded)}"
    line = f"test AUROC {o['auroc']:.2f}{_ci(o.get('auroc_ci'))} on {o['n']} images; {audit} → {out / 'evaluation'}"
    return line, {"auroc": o["auroc"], "auroc_ci": o.get("auroc_ci"), "n": o["n"], "flags": flags}


def _explain(out: Path, *, manifest: Path, progress: bool, **_) -> tuple[str, dict]:
    from .explain import explain

    with _quiet():
        r = explain(out / "run", [os.fspath(manifest)], out / "explanation", methods="auto,gradcam", split="test", sanity=True,
                    sanity_samples=4, overwrite=True, progress=progress)  # fmt: skip
    parts, numbers = [], {}
    for method in r["methods"]:
        s = r.get("sanity", {}).get(method)
        status = "passed" if s and s["passed"] else "FAILED"
        text = f"{method} sanity {status}"
        loc = r.get("localization", {}).get(method)
        if loc:
            pg = loc["pointing_game"]
            text += f", pointing game {pg['value']:.2f}{_ci(pg['ci'])}"
        parts.append(text)
        numbers[method] = {"sanity_passed": bool(s and s["passed"]),
                           "pointing_game": loc["pointing_game"]["value"] if loc else None}  # fmt: skip
    return f"{len(r['maps'])} maps; " + "; ".join(parts) + f" → {out / 'explanation'}", numbers


def _incoming(out: Path, data: Path) -> Path:
    """The folder a weekly batch would bring: the radiographs, one broken file, one photograph."""
    import numpy as np
    from PIL import Image as PILImage
    from skimage import data as skdata

    from .files import claim, write_bytes

    def copy(source: str, target: str) -> None:  # each copied file recorded as the demo's own
        claim(target)
        shutil.copy2(source, target)

    folder = out / "incoming"
    shutil.copytree(data / "cxr", folder / "cxr", copy_function=copy)
    dicoms = sorted(p for p in (data / "cxr").rglob("*") if p.is_file())
    if not dicoms:
        raise ConfigError(data / "cxr", "holds no radiographs to predict: the demo needs sample_data's layout")
    raw = dicoms[0].read_bytes()
    write_bytes(folder / BROKEN_FILE, raw[: len(raw) // 2])  # the header survives; the pixel data stops halfway
    photo = io.BytesIO()
    PILImage.fromarray(np.asarray(skdata.camera())).save(photo, format="PNG")
    write_bytes(folder / FOREIGN_FILE, photo.getvalue())
    return folder


def _predict(out: Path, *, data: Path, progress: bool, **_) -> tuple[str, dict]:
    from .predict import predict_folder

    folder = _incoming(out, data)
    with _quiet():
        s = predict_folder(out / "run", folder, out / "predictions", overwrite=True, saliency="auto",
                           progress=progress)  # fmt: skip
    c = s["counts"]
    line = (f"{c['predicted'] + c['failed']} files of {folder}: {c['predicted']} predicted, {c['failed']} failed "
            f"(listed with the reason in errors.csv), {c['flagged']} flagged as unlike the training data → "
            f"{out / 'predictions'}")  # fmt: skip
    return line, dict(c)


def _report(out: Path, *, progress: bool, **_) -> tuple[str, dict]:
    from .report import build_report

    with _quiet():
        r = build_report(out / "run", out / "predictions", out / "report", evaluation=out / "evaluation",
                         explanation=out / "explanation", overwrite=True, progress=progress)  # fmt: skip
    c = r["counts"]
    line = (f"{c['cases']} case pages ({c['ood']} unlike the training data, {c['maps']} with saliency maps) and "
            f"{c['errors']} {'failure' if c['errors'] == 1 else 'failures'} listed on the index → "
            f"{out / 'report' / 'index.html'}")  # fmt: skip
    return line, dict(c)


def main() -> int:  # pragma: no cover - `python -m medtl.demo`
    run_demo("out", progress=sys.stderr.isatty())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
