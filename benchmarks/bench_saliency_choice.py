#!/usr/bin/env python
"""Step 13: does the saliency map chosen by evidence (``RUN/saliency.json``) point at the lesion?

Prints markdown (progress goes to stderr, so ``> result.md`` gives a clean file):

1. **lesion** — ``benchmarks/make_lesion_data.py`` (200 images of 64², bright disc lesions among
   dimmer decoys, lesion masks for the positives), trained as step 7 trained it:
   ``medtl train configs/cxr-2d.yaml --set manifest=... --set size=[128,128] --set epochs=30
   --set patience=10 --set lr=1e-3`` (step 7 chose 1e-3 on validation AUROC) ``--set
   saliency_check=16``, so training ends with :func:`medtl.explain.choice.choose_default` on 16
   validation images. Then :func:`medtl.explain.explain` on the **test** split with every candidate
   (``methods=",".join(CANDIDATES)``, ``sanity=True``, ``sanity_samples=8``). One table row per
   candidate: validation randomization Spearman, deletion gain and pointing game (from
   ``saliency.json``), eligible or why not, and the test pointing game [95 % patient-bootstrap CI],
   energy pointing and IoU (Otsu); the chosen candidate is marked. Also printed: the choice and its
   reason, the seconds the check took, the chosen map's anatomy share, test AUROC
   (``medtl evaluate``), pointing-game chance (mean share of the image a test lesion mask covers),
   and whether the chosen method's test pointing game reaches the target, 0.9.
2. **demo** — ``medtl demo -o WORK/demo`` as a whole process (timed; its step lines are printed),
   then: the run's chosen method and the candidates' validation figures (``run/saliency.json``),
   the pointing game of each explained method on the demo's test radiographs
   (``explanation/explain.json``), and the report's case pages (``report/report.json`` and
   ``report/<page>``): how many show a map (``<img class="heat"``) and how many say it is empty
   ("The saliency map is empty"; every page that contains "empty" at all is counted too). Target:
   a non-empty map on every case page.

Runs, data and outputs go to ``--work`` (default ``/tmp/medtl-bench-choice``); ``--skip-train``
reuses the lesion run there (running the check on it if it has none). ``--quick`` is a smoke run:
60 lesion images at 64 px, 3 epochs, the check on 6 images, sanity on 2 inputs, 200 bootstrap
resamples, and the demo with a copy of its config trained for 2 epochs (check on 4 images).
``--cases`` picks ``lesion``, ``demo`` or both.

    nice -n 10 python benchmarks/bench_saliency_choice.py > choice.md    # ~20-40 min on 2 shared cores
    python benchmarks/bench_saliency_choice.py --quick                  # ~5 min on 2 quiet cores, ~20 when shared
    python benchmarks/bench_saliency_choice.py --skip-train --cases lesion
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_POINTING = 0.9
LESION_LR = "1e-3"  # step 7's choice on validation AUROC (docs/benchmarks.md, bench_explain.py)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def _medtl(args: list[str], threads: int, capture: bool = False) -> tuple[float, str]:
    """Run ``python -m medtl ARGS``; wall seconds and (when ``capture``) its stdout."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "medtl", *args], check=True, env=_env(threads), text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start, (done.stdout or "")


def _f(v, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(summary: dict | None) -> str:
    if not summary or summary.get("value") is None:
        return "—"
    ci = summary.get("ci")
    return f"{summary['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.0f} %"


# ---------------------------------------------------------------------------------------- lesion
def lesion_case(args) -> dict:
    from bench_explain import mask_share

    from medtl.explain import explain
    from medtl.explain.choice import CANDIDATES, CHOICE_FILE, choose_default

    data = args.work / ("lesions-quick" if args.quick else "lesions")
    if not (data / "labels.csv").is_file():
        log(f"making the lesion set in {data}")
        n = ["--n", str(args.lesion_n)]
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_lesion_data.py"), str(data), *n], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    manifest = data / "labels.csv"
    run = args.work / "runs" / ("lesion-quick" if args.quick else "lesion")
    sets = [f"manifest={manifest}", f"size=[{args.lesion_size},{args.lesion_size}]", f"epochs={args.lesion_epochs}",
            "patience=10", f"lr={LESION_LR}", f"saliency_check={args.check_images}"]  # fmt: skip
    train_s, train_out = None, ""
    if args.skip_train and (run / "model.pt").is_file():
        log(f"reusing {run}")
    else:
        log(f"training {run.name}: cxr-2d.yaml {' '.join(sets)} (the saliency check runs at the end)")
        train_s, train_out = _medtl(["train", str(REPO / "configs" / "cxr-2d.yaml"), "-o", str(run), "--restart",
                                     *[a for s in sets for a in ("--set", s)]], args.threads, capture=True)  # fmt: skip
    check_by = "medtl train (saliency_check)"
    if not (run / CHOICE_FILE).is_file():
        log("the run has no saliency.json: running the check here")
        import torch

        torch.set_num_threads(args.threads)
        choose_default(run, images=args.check_images)
        check_by = "choose_default, called by this script"
    choice = json.loads((run / CHOICE_FILE).read_text())
    log(f"  chosen: {choice['method']} ({choice['seconds']} s)")
    metrics = json.loads((run / "metrics.json").read_text())

    log("evaluating on the test split")
    ev = args.work / "runs" / f"{run.name}-evaluate"
    _medtl(["evaluate", str(run), str(manifest), "--split", "test", "-o", str(ev), "--overwrite"], args.threads)
    overall = json.loads((ev / "metrics.json").read_text())["overall"]

    out = args.work / "explain" / run.name
    log(f"explaining {run.name}: test split, {len(CANDIDATES)} methods, sanity on {args.sanity_samples}")
    start = time.perf_counter()
    result = explain(run, [manifest], out, methods=",".join(CANDIDATES), split="test", sanity=True,
                     sanity_samples=args.sanity_samples, n_boot=args.n_boot, overwrite=True)  # fmt: skip
    explain_s = time.perf_counter() - start
    chance, n_masks = mask_share(run, manifest)
    return {"run": run, "sets": sets, "train_s": train_s, "train_out": train_out, "choice": choice,
            "check_by": check_by, "metrics": metrics, "test": overall, "result": result, "explain_s": explain_s,
            "chance": chance, "n_masks": n_masks, "candidates": list(CANDIDATES)}  # fmt: skip


def _candidate_rows(choice: dict, names: list[str]) -> list[str]:
    """Validation columns of the check for each candidate (by name)."""
    rows = []
    for name in names:
        e = choice["candidates"].get(name, {})
        mark = f"**{name}** ✔" if name == choice.get("method") else name
        verdict = "eligible" if e.get("eligible") else (e.get("excluded_because") or "—")
        rows.append((mark, _f(e.get("randomization_spearman")), _f(e.get("deletion_gain"), 3),
                     _f(e.get("pointing_game")), verdict, "×".join(map(str, e.get("grid") or [])) or "—"))  # fmt: skip
    return rows


def _anatomy(choice: dict) -> str:
    """The run-level shortcut figure of the chosen map (:func:`medtl.explain.anatomy.summarize_shares`)."""
    a = choice.get("anatomy")
    if not a:
        return "no anatomy figure (no method chosen)"
    med, ci = a.get("median_inside"), a.get("median_ci")
    text = "—" if med is None else f"median {med:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    marked, mci = a.get("marked_share"), a.get("marked_ci")
    if marked is not None:
        text += f", {marked:.0%} of maps marked as a possible shortcut" + (f" [{mci[0]:.0%}, {mci[1]:.0%}]" if mci
                                                                         else "")  # fmt: skip
    return text + f" (n = {a.get('n')}, {a.get('n_empty')} empty; {a.get('images', '?')})"


def print_lesion(case: dict) -> None:
    choice, r, m, t = case["choice"], case["result"], case["metrics"], case["test"]
    loc, sanity = r.get("localization", {}), r.get("sanity", {})
    print("\n## lesion: 200 synthetic images with lesion masks\n" if "lesions-quick" not in str(case["sets"][0])
          else "\n## lesion (quick: 60 images)\n")  # fmt: skip
    trained = f"trained in {case['train_s'] / 60:.1f} min" if case["train_s"] is not None else "reused run"
    auroc = _f(t.get("auroc"), 3) + (f" [{t['auroc_ci'][0]:.3f}, {t['auroc_ci'][1]:.3f}]" if t.get("auroc_ci") else "")
    print(f"`medtl train configs/cxr-2d.yaml -o {case['run'].name} --restart "
          f"{' '.join('--set ' + s for s in case['sets'])}` ({trained}): validation AUROC {_f(m.get('val_auroc'), 3)} "
          f"(epoch {m.get('best_epoch')}), test AUROC {auroc} (`medtl evaluate --split test`).\n")  # fmt: skip
    print(f"**Saliency check** ({case['check_by']}): {choice['n_images']} validation images, {choice['n_masked']} "
          f"with a lesion mask; **{choice['seconds']:.0f} s**. Chosen: **{choice['method']}** — {choice['why']}. "
          f"Anatomy (share of the chosen map's mass inside the body): {_anatomy(choice)}.\n")  # fmt: skip
    chance = f"{case['chance']:.3f}" if case["chance"] is not None else "n/a"
    print(f"**Test explanation**: `explain(run, [labels.csv], out, methods=\",\".join(CANDIDATES), split=\"test\", "
          f"sanity=True, sanity_samples={case['sanity_samples']})`, {r['n_explained']} test images, {case['n_masks']} "
          f"with a lesion mask (pointing-game chance, the mean mask share of the image: {chance}); "
          f"{case['explain_s'] / 60:.1f} min.\n")  # fmt: skip
    print(
        "| candidate | randomization ρ (val) | deletion gain (val) | pointing game (val) | eligible / why not "
        "| grid | test sanity (ρ) | **test pointing game [95 % CI]** | test energy pointing | test IoU |"
    )
    print("|---|---:|---:|---:|---|---|---|---|---|---|")
    for name, row in zip(case["candidates"], _candidate_rows(choice, case["candidates"]), strict=True):
        canon = _canonical(name)
        s = sanity.get(canon)
        san = "—" if not s else (f"{'passed' if s['passed'] else 'FAILED'} ({s['spearman'][s['checked_at']]:.2f})")
        lo = loc.get(canon, {})
        print(f"| {' | '.join(row)} | {san} | {_ci(lo.get('pointing_game'))} | {_ci(lo.get('energy_pointing'))} "
              f"| {_ci(lo.get('iou'))} |")  # fmt: skip
    method = choice.get("method")
    pg = loc.get(_canonical(method), {}).get("pointing_game", {}) if method else {}
    value = pg.get("value")
    verdict = ("no method chosen" if method is None else "no test pointing game" if value is None else
               f"**{'met' if value >= TARGET_POINTING else 'missed'}**: {method}'s test pointing game is "
               f"{_ci(pg)} (n = {pg.get('n')}) against the target {TARGET_POINTING}")  # fmt: skip
    best = max(((n, loc.get(_canonical(n), {}).get("pointing_game", {}).get("value")) for n in case["candidates"]),
               key=lambda kv: -1 if kv[1] is None else kv[1])  # fmt: skip
    print(f"\nTarget (chosen method's test pointing game ≥ {TARGET_POINTING}): {verdict}. Best test pointing game "
          f"of any candidate: {best[0]} {_f(best[1])}.")  # fmt: skip


def _canonical(name: str | None) -> str | None:
    """The name explain.json files a method under (``ig@black`` is ``ig``)."""
    if name is None:
        return None
    from medtl.explain.methods import check_methods

    return check_methods([name])[0]


# ---------------------------------------------------------------------------------------- demo
QUICK_CONFIG_SETS = {"epochs": "2", "saliency_check": "4"}


def demo_case(args) -> dict:
    out = args.work / "demo"
    cmd = ["demo", "-o", str(out)]
    if args.quick:  # the shipped config with fewer epochs and a smaller check
        src = (REPO / "configs" / "cxr-2d.yaml").read_text()
        for key, value in QUICK_CONFIG_SETS.items():
            src = (
                re.sub(rf"(?m)^{key}:.*$", f"{key}: {value}", src)
                if re.search(rf"(?m)^{key}:", src)
                else src + f"\n{key}: {value}\n"
            )
        config = args.work / "demo-quick.yaml"
        config.write_text(src)
        cmd += ["--config", str(config)]
    log(f"running medtl {' '.join(cmd)}")
    seconds, stdout = _medtl(cmd, args.threads, capture=True)
    log(f"  demo took {seconds / 60:.1f} min")
    choice = json.loads((out / "run" / "saliency.json").read_text())
    explained = json.loads((out / "explanation" / "explain.json").read_text())
    report = json.loads((out / "report" / "report.json").read_text())
    pages = []
    for c in report["cases"]:
        page = out / "report" / c["page"]
        text = page.read_text() if page.is_file() else ""
        pages.append({"page": c["page"], "exists": page.is_file(), "heat": '<img class="heat"' in text,
                      "says_empty": "The saliency map is empty" in text,
                      "any_empty": re.search(r"empty", text, re.I) is not None})  # fmt: skip
    return {"seconds": seconds, "stdout": stdout, "choice": choice, "explained": explained, "report": report,
            "pages": pages, "cmd": cmd}  # fmt: skip


def print_demo(case: dict) -> None:
    choice, r, report, pages = case["choice"], case["explained"], case["report"], case["pages"]
    print("\n## demo: `medtl demo` on the sample radiographs\n")
    print(f"`medtl {' '.join(case['cmd'])}` took **{case['seconds'] / 60:.1f} min** (whole process). Its lines:\n")
    print("```text\n" + case["stdout"].strip() + "\n```\n")
    print(f"**Saliency check** of `run/`: {choice['n_images']} validation images, {choice['n_masked']} with a lesion "
          f"mask, {choice['seconds']:.0f} s. Chosen: **{choice['method']}** — {choice['why']}. Anatomy: "
          f"{_anatomy(choice)}.\n")  # fmt: skip
    names = list(choice["candidates"])
    print(
        "| candidate | randomization ρ (val) | deletion gain (val) | pointing game (val) | eligible / why not | grid |"
    )
    print("|---|---:|---:|---:|---|---|")
    for row in _candidate_rows(choice, names):
        print(f"| {' | '.join(row)} |")
    loc, sanity = r.get("localization", {}), r.get("sanity", {})
    print(f"\n**Explanation** (`explanation/explain.json`, methods {', '.join(r['methods'])}, test split, "
          f"{r['n_explained']} images):\n")  # fmt: skip
    print("| method | sanity (ρ) | pointing game [95 % CI] (n) | energy pointing | IoU |")
    print("|---|---|---|---|---|")
    for method in r["methods"]:
        s, lo = sanity.get(method), loc.get(method, {})
        san = "—" if not s else f"{'passed' if s['passed'] else 'FAILED'} ({s['spearman'][s['checked_at']]:.2f})"
        n = (lo.get("pointing_game") or {}).get("n")
        print(f"| {method}{' (chosen)' if method == _canonical(choice.get('method')) else ''} | {san} "
              f"| {_ci(lo.get('pointing_game'))} ({n if n is not None else '—'}) | {_ci(lo.get('energy_pointing'))} "
              f"| {_ci(lo.get('iou'))} |")  # fmt: skip
    c = report["counts"]
    n, heat = len(pages), sum(p["heat"] for p in pages)
    empty, anyword = sum(p["says_empty"] for p in pages), sum(p["any_empty"] for p in pages)
    print(f"\n**Report** (`report/`, map method {report.get('saliency')}): {c['cases']} case pages "
          f"(report.json counts: {c.get('maps')} with a map, {c.get('missing_maps')} missing, {c.get('shortcut')} "
          f"flagged as a possible shortcut, {c.get('ood')} unlike the training data, {c.get('errors')} failures "
          f"listed). Read from the pages: {heat} of {n} draw a map (`<img class=\"heat\"`), **{empty} say \"The "
          f"saliency map is empty\"** ({anyword} contain the word \"empty\" anywhere).")  # fmt: skip
    missing = n - sum(p["exists"] for p in pages)
    if missing:
        print(f"{missing} page(s) listed in report.json are missing.")
    ok = n > 0 and heat == n and empty == 0
    print(f"\nTarget (a non-empty map on every case page): **{'met' if ok else 'missed'}** "
          f"({heat - empty} of {n} pages with a non-empty map).")  # fmt: skip


# ---------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/medtl-bench-choice"))
    parser.add_argument("--skip-train", action="store_true", help="reuse the lesion run in --work")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer images and epochs")
    parser.add_argument("--cases", default="lesion,demo", help="comma-separated: lesion, demo (default both)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--lesion-n", type=int, default=200)
    parser.add_argument("--lesion-epochs", type=int, default=30)
    parser.add_argument("--lesion-size", type=int, default=128)
    parser.add_argument("--check-images", type=int, default=16, help="validation images of the check (default 16)")
    parser.add_argument("--sanity-samples", type=int, default=8)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    if args.quick:
        args.lesion_n, args.lesion_epochs, args.lesion_size = 60, 3, 64
        args.check_images, args.sanity_samples, args.n_boot = 6, 2, 200
    import torch
    from machine import cpu_model, memory_gib, version

    torch.set_num_threads(args.threads)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in ("lesion", "demo"):
            parser.error(f"unknown case {c!r} (lesion, demo)")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print("# Saliency map chosen by evidence (step 13)\n")
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {os.cpu_count()} logical CPUs ({cpu_model()}), {memory_gib()}; python "
          f"{platform.python_version()}, torch {torch.__version__} with {args.threads} threads, captum "
          f"{version('captum')}, MONAI {version('monai')}, medtl {version('medtl')}; niceness {os.nice(0)}")  # fmt: skip
    print(f"- load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    sys.stdout.flush()
    for name in cases:
        if name == "lesion":
            case = lesion_case(args)
            case["sanity_samples"] = args.sanity_samples
            print_lesion(case)
        else:
            print_demo(demo_case(args))
        sys.stdout.flush()
    print(f"\nLoad average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{(time.perf_counter() - started) / 60:.1f} min in all.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
