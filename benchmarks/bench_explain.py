#!/usr/bin/env python
"""Step 7's saliency maps: what one map costs, and whether the maps can be trusted.

Prints markdown (progress goes to stderr, so ``> result.md`` gives a clean file):

1. **Seconds per map** of every method of :data:`medtl.explain.METHODS` through
   :func:`medtl.explain.saliency` with the default :class:`~medtl.explain.Settings`, on the default
   backbone (EfficientNet-Lite0, ImageNet weights, 1 channel, 2 classes) for a random 2D input at
   224² and a 3D input at 64³ (Lite0 inflated to 3D): one untimed warm-up call, then the median
   of ``--repeats`` (2D) and ``--repeats-3d`` measurements (a measurement of a method that takes
   under a second averages enough maps to last about one). Other processes spoil CPU timings, so
   a measurement during which they used more than ``--contended`` cores (``/proc/stat``) is
   repeated after a pause, and the least disturbed attempt is kept and flagged if still disturbed.
2. **Quality** on runs trained with the CLI (``medtl train CONFIG -o RUN --set ...``) and explained
   with :func:`medtl.explain.explain` on their test split, every method, with the sanity check:
   pointing game and IoU (Otsu) against the lesion masks with patient-bootstrap 95 % CIs, the
   cascading-randomization result (passed, and the mean Spearman correlation at the step the rule
   reads), and the deletion AUC against random deletion orders. Chance for the pointing game is
   the mean share of the image a lesion mask covers (a peak placed at random hits with that
   probability); it is printed with each case. Cases (``--cases``):

   * ``cxr`` — ``sample_data/cxr.csv`` with ``configs/cxr-2d.yaml`` as shipped (48 synthetic
     radiographs, about 10 in the test split: a pipeline check, not evidence);
   * ``lesion`` — ``benchmarks/make_lesion_data.py`` (200 images of 64², bright disc lesions among
     dimmer decoys), ``configs/cxr-2d.yaml --set manifest=... --set size=[S,S]`` with ``S`` =
     ``--lesion-size`` (128: at 64 the last feature map, Grad-CAM's grid, is only 2 × 2); the
     learning rate is chosen among ``--lesion-lrs`` on **validation** AUROC only (``metrics.json``),
     and only the chosen run is evaluated and explained on its test split;
   * ``ct`` — ``sample_data/ct.csv`` with ``configs/ct-3d.yaml`` (3 or 4 test volumes); 3D sanity on
     every method is slow, so it uses ``--ct-sanity-samples`` (2) inputs instead of 8.

   Each run's test AUROC comes from ``medtl evaluate RUN MANIFEST --split test``.

Runs, data and outputs go to ``--work`` (default ``/tmp/medtl-bench-explain``); ``--skip-train``
reuses runs that are there, ``--reuse-explain`` the explanations of an interrupted benchmark.
``--quick`` is a smoke run (smaller inputs, one repeat, a smaller lesion set, fewer epochs and
resamples, sanity on 2 inputs, one learning rate, no CT).

    python benchmarks/bench_explain.py > explain.md     # ~15 min on 2 quiet cores; far longer when shared
    python benchmarks/bench_explain.py --cases cxr,lesion,ct
    python benchmarks/bench_explain.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- timing
def time_methods(shape: tuple[int, ...], repeats: int, args) -> dict[str, tuple[list[float], float | None]]:
    """Seconds per map of every method on a random input of ``shape`` (spatial), and the most cores
    other processes used during a kept map. A map during which others used more than
    ``--contended`` cores is measured again after ``--retry-wait`` s (up to ``--retries`` more
    times per map); the least disturbed attempts are kept."""
    import torch
    from bench_models import cpu_sample, others_cores

    from medtl.explain import METHODS, Settings, saliency
    from medtl.models import create

    dims = len(shape)
    model = create("efficientnet-lite0", "imagenet", in_channels=1, num_classes=2, spatial_dims=dims)
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for method in METHODS:
        start = time.perf_counter()
        saliency(model, x, 1, method, task="binary", settings=Settings())  # warm-up (allocations, captum import)
        # a measurement lasts at least ~1 s (several maps when one is quick): /proc/stat counts in 10 ms ticks
        calls = max(1, min(50, round(1.0 / max(time.perf_counter() - start, 1e-3))))
        kept: list[tuple[float, float]] = []  # (others' cores, seconds per map)
        for _ in range(repeats):
            best = None
            for attempt in range(1 + args.retries):
                if attempt:
                    log(f"  {method}: others used {best[0]:.2f} cores; again in {args.retry_wait:.0f} s")
                    time.sleep(args.retry_wait)
                start = cpu_sample()
                for _ in range(calls):
                    saliency(model, x, 1, method, task="binary", settings=Settings())
                end = cpu_sample()
                got = (others_cores(start, end) or 0.0, (end.wall - start.wall) / calls)
                best = got if best is None or got[0] < best[0] else best
                if best[0] <= args.contended:
                    break
            kept.append(best)
        times = [t for _, t in kept]
        out[method] = (times, max(o for o, _ in kept))
        log(f"  {method} {'x'.join(map(str, shape))}: median {np.median(times):.2f} s (others up to "
            f"{out[method][1]:.2f} cores)")  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------- runs
def _medtl(*args: str, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medtl", *args], check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def train(config: Path, run: Path, sets: list[str], args) -> float | None:
    """Train unless ``--skip-train`` finds the run; the wall seconds, or ``None`` when reused."""
    if args.skip_train and (run / "model.pt").is_file():
        log(f"reusing {run}")
        return None
    log(f"training {run.name}: {config.name} {' '.join(sets)}")
    return _medtl("train", str(config), "-o", str(run), "--restart", *[a for s in sets for a in ("--set", s)],
                  threads=args.threads)  # fmt: skip


def test_auroc(run: Path, manifest: Path, work: Path, threads: int) -> dict:
    out = work / f"{run.name}-evaluate"
    _medtl("evaluate", str(run), str(manifest), "--split", "test", "-o", str(out), "--overwrite", threads=threads)
    overall = json.loads((out / "metrics.json").read_text())["overall"]
    return {"auroc": overall.get("auroc"), "ci": overall.get("auroc_ci")}


def mask_share(run: Path, manifest: Path) -> tuple[float | None, int]:
    """Mean share of the image a test-split lesion mask covers (chance of the pointing game), and n."""
    from medtl.explain import collect_inputs
    from medtl.io import load_image

    items, _, _ = collect_inputs(run, [manifest], split="test")
    shares = []
    for item in items:
        if item.mask:
            m = load_image(item.mask).array > 0.5
            if m.any():
                shares.append(float(m.mean()))
    return (float(np.mean(shares)) if shares else None), len(shares)


def cam_grid(run: Path) -> str:
    """The shape of the feature map Grad-CAM reads (the input of the global pooling) and the network input."""
    import torch

    from medtl.explain import Explainer

    e = Explainer(run)
    shapes: list[tuple[int, ...]] = []
    hook = e.model.cam_layer().register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape[2:])))
    try:
        with torch.no_grad():
            e.model.eval()(torch.zeros(1, e.spec.channels, *e.spec.size))
    finally:
        hook.remove()
    return f"{'×'.join(map(str, shapes[0]))} (network input {'×'.join(map(str, e.spec.size))})"


def run_case(name: str, config: Path, manifest: Path, sets: list[str], args, *, sanity_samples: int,
             candidates: list[list[str]] | None = None) -> dict:  # fmt: skip
    """Train (choosing among ``candidates`` on validation AUROC), evaluate and explain one case."""
    from medtl.explain import explain

    runs = args.work / "runs"
    tried = []
    for k, extra in enumerate(candidates or [[]]):
        run = runs / (name if not candidates else f"{name}-{k}")
        wall = train(config, run, sets + extra, args)
        val = json.loads((run / "metrics.json").read_text())
        tried.append({"run": run, "set": extra, "val_auroc": val.get("val_auroc"), "best_epoch": val.get("best_epoch"),
                      "train_s": wall})  # fmt: skip
        log(f"  {run.name}: val AUROC {val.get('val_auroc')}")
    chosen = max(tried, key=lambda t: (t["val_auroc"] if t["val_auroc"] is not None else -1.0))
    run = chosen["run"]
    test = test_auroc(run, manifest, runs, args.threads)
    chance, n_masks = mask_share(run, manifest)
    out, note = args.work / "explain" / name, args.work / "explain" / f"{name}.bench.json"
    wanted = {"run": str(run), "sanity_samples": sanity_samples, "n_boot": args.n_boot}
    earlier = json.loads(note.read_text()) if note.is_file() else {}
    if args.reuse_explain and (out / "explain.json").is_file() and earlier.get("wanted") == wanted:
        log(f"reusing {out / 'explain.json'}")
        result, seconds = json.loads((out / "explain.json").read_text()), earlier["seconds"]
    else:
        log(f"explaining {run.name} (test split, every method, sanity on {sanity_samples})")
        start = time.perf_counter()
        result = explain(run, [manifest], out, methods="all", split="test", sanity=True,
                         sanity_samples=sanity_samples, n_boot=args.n_boot, overwrite=True)  # fmt: skip
        seconds = time.perf_counter() - start
        note.write_text(json.dumps({"wanted": wanted, "seconds": seconds}))
    return {"name": name, "tried": tried, "chosen": chosen, "test": test, "chance": chance, "n_masks": n_masks,
            "result": result, "explain_s": seconds, "sanity_samples": sanity_samples,
            "grid": cam_grid(run)}  # fmt: skip


# ---------------------------------------------------------------------------------------- report
def _ci(summary: dict | None) -> str:
    if not summary or summary.get("value") is None:
        return "—"
    ci = summary.get("ci")
    text = f"{summary['value']:.2f}"
    return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def print_case(case: dict) -> None:
    r = case["result"]
    chosen, test = case["chosen"], case["test"]
    settings = " ".join(f"`{s}`" for s in chosen["set"]) or "as shipped"
    auroc = f"{test['auroc']:.3f}" if test["auroc"] is not None else "n/a"
    if test.get("ci"):
        auroc += f" [{test['ci'][0]:.3f}, {test['ci'][1]:.3f}]"
    print(f"\n### {case['name']}\n")
    if len(case["tried"]) > 1:
        print("Settings tried (validation AUROC, best epoch): "
              + "; ".join(f"{' '.join(t['set'])}: {t['val_auroc']:.3f} (epoch {t['best_epoch']})"
                          for t in case["tried"])
              + f". Chosen: {settings} (a tie goes to the first listed).")  # fmt: skip
    walls = [t["train_s"] for t in case["tried"] if t["train_s"] is not None]
    trained = f"training {sum(walls):.0f} s" if walls else "reused run"
    text = (f"Run `{chosen['run'].name}`: validation AUROC {chosen['val_auroc']:.3f} (epoch {chosen['best_epoch']}), "
            f"**test AUROC {auroc}**; {trained}. Test split: {r['n_explained']} inputs explained")
    if case["chance"] is not None:
        text += (f", {case['n_masks']} with a lesion mask; **pointing-game chance (mean mask share of the image) "
                 f"{case['chance']:.3f}**")
    print(text + f". Grad-CAM grid {case['grid']}. `explain` took {case['explain_s'] / 60:.1f} min (sanity on "
          f"{case['sanity_samples']} inputs).\n")
    sanity = r.get("sanity", {})
    first = next(iter(sanity.values()), None)
    step = ""
    if first:
        at = first["checked_at"]
        step = f" after step {at + 1} of {len(first['layers'])} ({', '.join(first['layers'][: at + 1])} random)"
    print(f"| method | pointing game [95 % CI] | IoU [95 % CI] | sanity | Spearman{step} | SSIM there "
          "| Spearman, all random | deletion AUC / random | maps below random | s/map |")
    print("|---|---|---|---|---:|---:|---:|---|---:|---:|")
    for method in r["methods"]:
        loc = r.get("localization", {}).get(method, {})
        s = sanity.get(method)
        if s:
            at = s["checked_at"]
            ssim = s["ssim"][at]
            san = ("**passed**" if s["passed"] else "FAILED", f"{s['spearman'][at]:.2f}",
                   f"{ssim:.2f}" if ssim is not None else "—", f"{s['spearman'][-1]:.2f}")  # fmt: skip
        else:
            san = ("not run", "—", "—", "—")
        f = r["faithfulness"].get(method)
        faith = "—"
        if f:
            faith = f"{f['deletion_auc']:.3f} / {f['random_auc']:.3f}" + ("" if f["faithful"] else " (not faithful)")
        below = f"{f['below_random']:.0%} of {f['n']}" if f else "—"
        secs = [m["seconds"] for m in r["maps"] if m["method"] == method]
        print(f"| {method} | {_ci(loc.get('pointing_game'))} | {_ci(loc.get('iou'))} | {san[0]} | {san[1]} | {san[2]} "
              f"| {san[3]} | {faith} | {below} | {np.median(secs):.2f} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/medtl-bench-explain"))
    parser.add_argument("--skip-train", action="store_true", help="reuse runs already in --work")
    parser.add_argument("--reuse-explain", action="store_true",
                        help="reuse explain outputs in --work made by this script with the same run and settings")
    parser.add_argument("--quick", action="store_true", help="smoke run: small inputs, one repeat, no CT")
    parser.add_argument("--cases", default="cxr,lesion", help="comma-separated: cxr, lesion, ct (default cxr,lesion)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed maps per method in 2D (default 3)")
    parser.add_argument("--repeats-3d", type=int, default=1, help="timed maps per method in 3D (default 1)")
    parser.add_argument("--no-timing", action="store_true", help="skip the seconds-per-map table")
    parser.add_argument("--contended", type=float, default=0.3,
                        help="others' mean cores above which a timed map is measured again (default 0.3)")
    parser.add_argument("--retries", type=int, default=4, help="re-measurements of a disturbed map (default 4)")
    parser.add_argument("--retry-wait", type=float, default=20.0, help="seconds before a re-measurement (default 20)")
    parser.add_argument("--lesion-lrs", default="1e-3,3e-3", help="learning rates tried on the lesion set")
    parser.add_argument("--lesion-epochs", type=int, default=30)
    parser.add_argument("--lesion-size", type=int, default=128, help="network input of the lesion run (default 128)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--sanity-samples", type=int, default=8, help="2D inputs in the sanity check (default 8)")
    parser.add_argument("--ct-sanity-samples", type=int, default=2, help="3D inputs in the sanity check (default 2)")
    args = parser.parse_args()
    import torch
    from machine import cpu_model, memory_gib, version

    torch.set_num_threads(args.threads)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.quick:
        cases = [c for c in cases if c != "ct"]
        args.repeats, args.repeats_3d, args.n_boot, args.lesion_epochs, args.lesion_size = 1, 1, 200, 8, 64
        args.lesion_lrs, args.sanity_samples = args.lesion_lrs.split(",")[0], 2
    args.work.mkdir(parents=True, exist_ok=True)

    print("# Saliency benchmark (medtl explain)\n")
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {os.cpu_count()} logical CPUs ({cpu_model()}), {memory_gib()}; python "
          f"{platform.python_version()}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"captum {version('captum')}, MONAI {version('monai')}, medtl {version('medtl')}")  # fmt: skip
    print(f"- load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")

    configs = REPO / "configs"
    done = []
    for name in cases:
        if name == "cxr":
            done.append(run_case("cxr", configs / "cxr-2d.yaml", REPO / "sample_data" / "cxr.csv", [], args,
                                 sanity_samples=args.sanity_samples))  # fmt: skip
        elif name == "lesion":
            data = args.work / ("lesions-quick" if args.quick else "lesions")
            if not (data / "labels.csv").is_file():
                n = ["--n", "60"] if args.quick else []
                subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_lesion_data.py"), str(data), *n],
                               check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            size = f"size=[{args.lesion_size},{args.lesion_size}]"
            sets = [f"manifest={data / 'labels.csv'}", size, f"epochs={args.lesion_epochs}", "patience=10"]
            lrs = [s.strip() for s in args.lesion_lrs.split(",") if s.strip()]
            done.append(run_case("lesion", configs / "cxr-2d.yaml", data / "labels.csv", sets, args,
                                 sanity_samples=args.sanity_samples,
                                 candidates=[[f"lr={lr}"] for lr in lrs]))  # fmt: skip
        elif name == "ct":
            done.append(run_case("ct", configs / "ct-3d.yaml", REPO / "sample_data" / "ct.csv", [], args,
                                 sanity_samples=args.ct_sanity_samples))  # fmt: skip
        else:
            parser.error(f"unknown case {name!r} (cxr, lesion, ct)")
    timing = None
    if not args.no_timing:  # after the runs: other processes are likelier to have stopped
        shape2, shape3 = ((64, 64), (32, 32, 32)) if args.quick else ((224, 224), (64, 64, 64))
        log("timing 2D")
        t2 = time_methods(shape2, args.repeats, args)
        log("timing 3D")
        t3 = time_methods(shape3, args.repeats_3d, args)
        timing = (shape2, shape3, t2, t3)
    if timing:
        from medtl.explain import METHODS

        shape2, shape3, t2, t3 = timing
        n2, n3 = "×".join(map(str, shape2)), "×".join(map(str, shape3))
        print(f"\n## Seconds per map\n\n`medtl.explain.saliency(model, x, 1, method, task='binary')`, default "
              f"`Settings()`, EfficientNet-Lite0 (ImageNet; 3D inflated), 1 channel, 2 classes, random input; "
              f"median of {args.repeats} (2D) and {args.repeats_3d} (3D) after a warm-up; {torch.get_num_threads()} "
              "torch threads.\n")  # fmt: skip
        print(f"| method | 2D {n2} (s) | 3D {n3} (s) |")
        print("|---|---:|---:|")
        disturbed = []
        for method in METHODS:
            cells = []
            for label, table in ((n2, t2), (n3, t3)):
                times, others = table[method]
                star = "*" if others > args.contended else ""
                if star:
                    disturbed.append(f"{method} {label}: {others:.2f}")
                cells.append(f"{np.median(times):.2f}{star}")
            print(f"| {method} | {cells[0]} | {cells[1]} |")
        if disturbed:
            print(f"\n\\* other processes used more than {args.contended} cores during a kept map even after "
                  f"{args.retries} retries (most cores used by others: {'; '.join(disturbed)}); read as upper bounds.")

    if done:
        print("\n## Quality on test splits\n\n"
              "`explain(RUN, [MANIFEST], OUT, methods='all', split='test', sanity=True)`. "
              "Pointing game and IoU: lesion-labelled test images only, mean with a 95 % patient-bootstrap CI. "
              "Sanity: cascading randomization from the head down; passed when the mean Spearman correlation with the "
              "trained model's map is below 0.5 at the step shown. Deletion: mean AUC of the calibrated probability "
              "as the most salient pixels are replaced by the black input, against one random order per "
              "map.")  # fmt: skip
        for case in done:
            print_case(case)
    print(f"\nLoad average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
