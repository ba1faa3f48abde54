"""The ``medtl`` command line: a thin layer over functions a script can call.

Each subcommand maps to one library function with the same arguments:
``medtl scan`` → :func:`medtl.io.scan`, ``medtl info`` / ``medtl convert`` →
:func:`medtl.io.load_image` (+ :func:`medtl.io.save_nifti`), ``medtl models`` →
:func:`medtl.models.list_models`, ``medtl weights`` → :mod:`medtl.models.weights`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .errors import ConfigError, MedtlError

log = logging.getLogger("medtl")


def _progress(args: argparse.Namespace) -> bool:
    """Whether a command reports its progress on stderr: always, unless ``--quiet``; a bar on a
    terminal, lines in a log file (:mod:`medtl.progress` decides)."""
    return not getattr(args, "quiet", False)


def _quiet_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line every 30 s or 5%%)")  # fmt: skip


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    # bars on a terminal only: in a log the demo's one line per step is its progress
    run_demo(args.output, data=args.data, config=args.config, overwrite=args.overwrite, progress=sys.stderr.isatty())
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from .io import scan
    from .io.scan import ERROR_COLUMNS, MANIFEST_COLUMNS, check_not_reading_file, check_output_file, check_two_targets

    check_two_targets(args.output, args.errors)
    for target, columns in ((args.output, MANIFEST_COLUMNS), (args.errors, ERROR_COLUMNS)):
        if target:  # before a long scan, not after it
            check_output_file(target, args.dir, overwrite=args.overwrite, columns=columns)
    result = scan(args.dir, workers=args.workers, progress=_progress(args))
    for target in (args.output, args.errors):
        if target:  # a link in the scanned tree that leads to the output's folder
            check_not_reading_file(target, result.files)
    if not result.rows:
        from .errors import NoInputError

        if result.errors and args.errors:
            result.to_csv(None, args.errors, overwrite=args.overwrite)
        raise NoInputError(args.dir, result.why_empty() + (f" (listed in {args.errors})" if result.errors and
                                                           args.errors else ""))  # fmt: skip
    result.to_csv(args.output, args.errors, overwrite=args.overwrite)
    print(result.summary())
    for label, target in (("manifest", args.output), ("errors", args.errors)):
        if target:
            print(f"Wrote {label}: {target}")
    if result.errors and not args.errors:
        print("(pass --errors errors.csv to save the list of broken files)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import load_image
    from .io.colour import image_colour

    img = load_image(args.path, series=args.series, volume=args.volume)
    colour = image_colour(img)  # gray, gray-rgb (grey stored as RGB, read as one channel) or rgb
    if args.json:
        out = {
            "shape": list(img.array.shape),
            "spacing": list(img.spacing),
            "colour": colour,
            "affine": np.round(img.affine, 6).tolist(),
            "meta": img.meta,
        }
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(repr(img))
    print(f"colour: {colour}")
    print("affine (index → RAS+ mm):")
    for row in img.affine:
        print("  " + "  ".join(f"{v:10.4f}" for v in row))
    for key, value in sorted(img.meta.items()):
        print(f"  {key}: {value}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .io import load_image, save_nifti
    from .io.nifti import check_nifti_name
    from .outputs import check_output_file

    check_nifti_name(args.output)  # before a series is read, not after
    check_output_file(args.output, inputs=[args.path], overwrite=args.overwrite, same_kind=_nifti_or_why,
                      example="image.nii.gz")  # fmt: skip
    img = load_image(args.path, series=args.series, volume=args.volume)
    save_nifti(img, args.output)
    print(f"Wrote {args.output}: {repr(img)}")
    return 0


def _nifti_or_why(path) -> str | None:
    """``None`` for a NIfTI file (what ``convert`` writes), else what the file is."""
    from .io.sniff import sniff

    return None if sniff(str(path)) == "nifti" else "not a NIfTI image"


def _volume_arg(text: str) -> int | str:
    """``--volume``: a volume index (0, 1, ...) or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a volume index (0, 1, ...) or 'all', not {text!r}") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"a volume index is 0 or more, not {index}")
    return index


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    rows = list_models(args.pattern)
    _print_table(rows, ["name", "dims", "min_size", "params_m", "sources"])
    if args.verbose_conventions:
        for row in rows:
            if row["conventions"]:
                print(f"{row['name']}: {row['conventions']}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from .models import weights

    if args.action == "list":
        _print_table(weights.weights_table(), ["name", "dims", "format", "available", "licence"])
    elif args.action == "path":
        print(weights.fetch(args.name, download=False))
    elif args.action == "import":
        path = weights.import_weights(args.name, args.file)
        print(f"Imported {args.name} → {path}")
    elif args.action == "download":
        print(weights.fetch(args.name, download=True, progress=_progress(args)))
    elif args.action == "verify":
        rows = weights.verify_cached()
        if not rows:
            print(f"no cached weights in {weights.weights_dir()}")
        else:
            _print_table(rows, ["name", "status", "path"])
        return 1 if any(r["status"] == "CHANGED" for r in rows) else 0
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train.config import load_config
    from .train.finetune import finetune

    cfg = load_config(args.config, args.set + ([f"ensemble={args.ensemble}"] if args.ensemble else []))
    if args.folds:
        from .evaluate.crossval import cross_validate

        s = cross_validate(cfg, args.output, args.folds, progress=_progress(args), resume=not args.restart,
                           overwrite=args.overwrite)  # fmt: skip
        for f in s["folds"]:
            auroc = "n/a" if f["test_auroc"] is None else f"{f['test_auroc']:.3f}"
            print(f"fold {f['fold']}: held-out AUROC {auroc} (n={f['n_test']}), validation {f['val_auroc']:.3f}")
        if "ci95" in s:
            print(f"mean over folds {s['mean']:.3f} (SD {s['sd']:.3f}, 95% CI {s['ci95'][0]:.3f}–{s['ci95'][1]:.3f})")
        p = s["pooled"]
        if p["auroc"] is not None and p["auroc_ci"]:
            print(f"pooled out-of-fold AUROC {p['auroc']:.3f} (95% CI {p['auroc_ci'][0]:.3f}–{p['auroc_ci'][1]:.3f}, "
                  f"{p['n']} images, {p['resampling_unit']} bootstrap)")  # fmt: skip
        print(f"Wrote {args.output}/folds.json and predictions.csv")
        return 0
    if args.seeds > 1:
        from .train.finetune import finetune_seeds

        summary = finetune_seeds(cfg, args.output, args.seeds, resume=not args.restart, overwrite=args.overwrite,
                                 progress=_progress(args))  # fmt: skip
        ci = summary.get("ci95")
        ci_text = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
        print(
            f"{args.seeds} seeds in {args.output}: validation AUROC mean {summary.get('mean', float('nan')):.3f}{ci_text}"
        )
        return 0
    result = finetune(cfg, args.output, resume=not args.restart, overwrite=args.overwrite,
                      progress=_progress(args))  # fmt: skip
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        return 0  # DDP: the other processes trained too; one reports
    if result.already_complete:
        print(f"note: {result.run_dir} already holds this run, finished: nothing to do (--restart trains it anew; "
              "more epochs continue it)")  # fmt: skip
    print(f"Input: {result.channels_rule}")
    what = f"ensemble of {cfg.ensemble}" if cfg.ensemble > 1 else "best"
    epochs = ", ".join(map(str, result.best_epoch)) if isinstance(result.best_epoch, list) else result.best_epoch
    print(f"Run written to {result.run_dir}: {what} validation AUROC {result.val_auroc:.3f} at epoch {epochs}")
    if result.skipped:
        print(f"{len(result.skipped)} record(s) skipped (unreadable or unsuitable), e.g.:")
        for item in result.skipped[:5]:
            print(f"  {item['path']}: {item['reason']}")
    _saliency_check_after_training(result.run_dir, cfg.saliency_check, _progress(args))
    return 0


def _saliency_check_after_training(run_dir, images: int, progress: bool = True) -> None:
    """Choose the run's default saliency map (``RUN/saliency.json``) unless it has one or the config
    says 0. The weights are written and sound: a check that cannot run is a note, not a failure."""
    from .errors import is_fatal
    from .explain.choice import CHOICE_FILE, choose_default

    if images <= 0 or (Path(run_dir) / CHOICE_FILE).is_file():
        return
    try:
        record = choose_default(run_dir, images=images, progress=progress)
    except MedtlError as exc:
        if is_fatal(exc):  # a full disk: the user must know now
            raise
        print(f"note: no saliency check ({exc}); run `medtl saliency-check {run_dir}` when the data is back")
        return
    _print_choice(record)


def _print_choice(record: dict) -> None:
    method = record["method"] or "none"
    print(f"Saliency map by default: {method} ({record['why']}; {record['n_images']} validation images, "
          f"{record['seconds']:.0f} s)")  # fmt: skip


def _cmd_saliency_check(args: argparse.Namespace) -> int:
    from .explain.choice import CHOICE_FILE, choose_default

    target = Path(args.run) / CHOICE_FILE
    if target.is_file() and not args.overwrite:
        raise ConfigError(target, "the run already has a saliency check; pass --overwrite to score the methods again")
    _print_choice(choose_default(args.run, images=args.images, seed=args.seed, progress=_progress(args)))
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from .train.domain import adapt_run

    adapt_run(args.run, args.target, args.output, progress=_progress(args), overwrite=args.overwrite)
    print(f"Adapted run written to {args.output} (AdaBN on {args.target})")
    return 0


def _split_names(text: str | None) -> list[str]:
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def _age_bins(text: str | None) -> tuple[float, ...] | None:
    try:
        return tuple(float(b) for b in _split_names(text)) if text else None
    except ValueError:
        raise MedtlError(None, f"--age-bins takes comma-separated numbers, not '{text}'") from None


def _ci(ci) -> str:
    return f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""


def _print_audit_summary(overall: dict, flags: list, out: str, groups: dict | None = None, excluded=None) -> None:
    auroc = overall.get("auroc")
    line = f"n={overall.get('n')}, AUROC " + (f"{auroc:.3f}{_ci(overall.get('auroc_ci'))}" if auroc is not None else "n/a")
    for name, key in (("sensitivity", "tpr"), ("specificity", "tnr"), ("calibration slope", "calibration_slope")):
        if overall.get(key) is not None:
            line += f"; {name} {overall[key]:.3f}{_ci(overall.get(key + '_ci'))}"
    print(line)
    if excluded and excluded.get("rows"):
        print(f"{excluded['rows']} row(s) left out: {excluded['missing_label']} without a label, "
              f"{excluded['missing_score']} without a score")  # fmt: skip
    for flag in flags:
        if "check" in flag:  # the confounder check's flags carry their own sentence
            print(f"CONFOUNDER {flag['attribute']}: {flag['reason']}")
            continue
        print(f"FLAG {flag['attribute']} {flag['metric']}: gap {flag['gap']:.3f} "
              f"(95% CI {flag['ci'][0]:.3f}–{flag['ci'][1]:.3f}), groups {' vs '.join(map(str, flag['groups']))}")  # fmt: skip
    for attr, statuses in (groups or {}).items():
        small = [f"{g} ({st})" for g, st in statuses.items() if st != "ok"]
        if small:
            print(f"not compared by {attr}: {', '.join(small)}")
    print(f"Wrote {out}/ (audit.json, groups.csv, gaps.csv, confounders.csv, PNG plots, audit_section.html)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.run import evaluate_run

    result = evaluate_run(args.run, args.manifest, args.output, groups=_split_names(args.groups), split=args.split,
                          n_boot=args.n_boot, seed=args.seed, min_group=args.min_group, min_gap=args.min_gap,
                          intersections=args.intersections, age_bins=_age_bins(args.age_bins),
                          progress=_progress(args), overwrite=args.overwrite,
                          redact_paths=args.redact_paths)  # fmt: skip
    for note in result.get("notes", []):
        print(f"note: {note}")
    if result["skipped"]:
        print(f"{len(result['skipped'])} image(s) skipped (unreadable); listed in metrics.json, e.g.:")
        for item in result["skipped"][:5]:
            print(f"  {item['path']}: {item['reason']}")
    fitted, method = result["temperature_fitted_on"], result.get("calibration", "temperature")
    if fitted != "val":
        how = f"uncalibrated ({fitted})"
    elif method == "none":
        how = "the raw outputs (no calibration beat them on validation)"
    elif method == "temperature":
        how = f"temperature {result['temperature']:.3f} fitted on validation"
    else:
        how = f"{method} calibration fitted on validation"
    print(f"threshold {result['threshold']:.3f} (chosen on validation); probabilities: {how}; "
          f"resampled by {result['resampling_unit']}")  # fmt: skip
    seen = result.get("held_out") or {}
    if seen.get("train") or seen.get("val"):
        print(f"NOT HELD OUT: {seen['train']} of these {seen['n']} images trained the run and {seen['val']} chose its "
              "epoch, threshold and calibration; these figures are not evidence of how it does on new patients")  # fmt: skip
    if result["task"] == "binary":
        _print_audit_summary(result["overall"], result["flags"] + result.get("confounder_flags", []), args.output,
                             result.get("groups"), result.get("excluded"))  # fmt: skip
    else:
        for name, part in result["per_label"].items():
            print(f"{name}:", end=" ")
            _print_audit_summary(part["overall"], part["flags"] + part.get("confounder_flags", []),
                                 f"{args.output}/{part['folder']}", part.get("groups"), part.get("excluded"))  # fmt: skip
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain

    iou = args.iou_threshold if args.iou_threshold == "otsu" else _fraction(args.iou_threshold)
    result = explain(args.run, args.inputs, args.output, methods=",".join(args.method or ["auto"]),
                     target=args.target, split=args.split, sanity=args.sanity, sanity_samples=args.sanity_samples,
                     batch_size=args.batch_size, iou_threshold=iou, n_boot=args.n_boot, seed=args.seed,
                     redact_paths=args.redact_paths, overwrite=args.overwrite,
                     progress=_progress(args))  # fmt: skip
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"{len(result['maps'])} map(s) of {result['n_explained']} of {result['n_inputs']} input(s) in {args.output}"
          + (f"; {result['errors']} input(s) could not be explained: see errors.csv" if result["errors"] else ""))
    for method in result["methods"]:
        parts = []
        if method in result.get("sanity", {}):
            s = result["sanity"][method]
            verdict = "passed" if s["passed"] else "FAILED: its maps barely change when the model is randomised; do not trust them"
            if s["checked_at"] is None:
                parts.append(f"sanity FAILED: {s['note']}")
            else:
                parts.append(f"sanity {verdict} (Spearman {s['spearman'][s['checked_at']]:.2f} with "
                             f"{s['checked_at'] + 1} of {len(s['layers'])} groups random)")  # fmt: skip
        if method in result.get("localization", {}):
            loc = result["localization"][method]
            parts.append(f"pointing game {loc['pointing_game']['value']:.2f}{_ci(loc['pointing_game']['ci'])}, "
                         f"IoU {loc['iou']['value']:.2f}{_ci(loc['iou']['ci'])} (n={loc['iou']['n']})")  # fmt: skip
        if method in result["faithfulness"]:
            f = result["faithfulness"][method]
            parts.append(f"deletion AUC {f['deletion_auc']:.3f} vs random {f['random_auc']:.3f}")
        print(f"  {method}: " + ("; ".join(parts) if parts else "no map"))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_folder
    from .predict.folder import print_summary

    summary = predict_folder(args.run, args.input, args.output, resume=args.resume, overwrite=args.overwrite,
                             batch_size=args.batch_size, workers=args.workers, shard=args.shard,
                             saliency=args.saliency, redact_paths=args.redact_paths, device=args.device,
                             progress=_progress(args), assess_unfamiliar=args.assess_unfamiliar)  # fmt: skip
    for note in summary.get("notes", []) + ([summary["note"]] if "note" in summary else []):
        print(f"note: {note}")
    print_summary(summary, args.output, stream=sys.stdout)
    return 0


def _cmd_predict_merge(args: argparse.Namespace) -> int:
    from .predict import merge_outputs

    summary = merge_outputs(args.shards, args.output, overwrite=args.overwrite)
    c = summary["counts"]
    print(f"merged {len(args.shards)} shard(s): predicted {c['predicted']}, failed {c['failed']}, flagged "
          f"{c['flagged']} → {args.output}")  # fmt: skip
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    record = build_report(args.run, args.predictions, args.output, input_dir=args.input, evaluation=args.evaluation,
                          explanation=args.explanation, show_identifiers=args.show_identifiers,
                          overwrite=args.overwrite, workers=args.workers, progress=_progress(args))  # fmt: skip
    for note in record["notes"]:
        print(f"note: {note}")
    c = record["counts"]
    print(f"report of {c['cases']} cases ({c['ood']} unlike the training data, {c['maps']} with saliency maps) and "
          f"{c['errors']} input(s) that could not be predicted → {args.output}/index.html; review it with "
          f"`medtl review {args.output}`")  # fmt: skip
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from .report import ReviewServer, list_readers

    server = ReviewServer(args.report, reviewer=args.reviewer, host=args.host, port=args.port, remote=args.remote,
                          allow_hosts=args.allow_host, remote_identifiers=args.remote_identifiers)  # fmt: skip
    readers = [r["name"] for r in list_readers(args.report) if r["removed_at"] is None]
    if args.remote:
        print(f"warning: listening on {server.host}:{server.port} for other machines: only readers' personal links "
              "open pages; the traffic is not encrypted (put an HTTPS proxy in front on an untrusted network)",
              file=sys.stderr)  # fmt: skip
    if readers:
        print(f"reviewing {args.report} with {len(readers)} reader(s) ({', '.join(readers)}) on port {server.port}: "
              "each opens their personal link (Ctrl-C to stop; verdicts are saved as they are recorded)", flush=True)
    else:
        print(f"reviewing {args.report} as {server.reviewer} at {server.url} (Ctrl-C to stop; verdicts are saved as "
              "they are recorded)", flush=True)  # fmt: skip
    if args.open and not readers:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every recorded verdict is in verdicts.sqlite", file=sys.stderr)
    finally:
        server.shutdown()
    return 0


def _cmd_review_add_reader(args: argparse.Namespace) -> int:
    from .report import add_reader
    from .report.study import DEFAULT_BASE_URL

    link = add_reader(args.report, args.name, new_link=args.new_link, base_url=args.base_url or DEFAULT_BASE_URL)
    print(f"{'new link for' if args.new_link else 'added reader'} {args.name.strip()}: {link}")
    print("give this link to the reader only: it records verdicts in their name, and it is shown this once "
          "(`--new-link` makes another and ends this one)", file=sys.stderr)  # fmt: skip
    return 0


def _cmd_review_remove_reader(args: argparse.Namespace) -> int:
    from .report import remove_reader

    remove_reader(args.report, args.name)
    print(f"removed reader {args.name.strip()}: their link no longer opens the review; their verdicts stay")
    return 0


def _cmd_review_readers(args: argparse.Namespace) -> int:
    from .report import list_readers

    rows = list_readers(args.report)
    if not rows:
        print("no readers: `medtl review` is a single-user review on this machine (add readers with `medtl review "
              "add-reader REPORT NAME`)")  # fmt: skip
    for r in rows:
        state = f"removed {r['removed_at'][:16]}" if r["removed_at"] else "current"
        print(f"{r['name']}\tadded {r['added_at'][:16]}\t{state}\t{r['verdicts']} live verdict(s)")
    return 0


def _cmd_review_import(args: argparse.Namespace) -> int:
    from .report import import_verdicts

    done = import_verdicts(args.verdicts, args.report)
    print(f"imported {done['imported']} verdict(s) into {args.report} ({done['skipped']} already there)")
    return 0


def _cmd_review_export(args: argparse.Namespace) -> int:
    from .report import export_verdicts

    n = export_verdicts(args.report, args.output, overwrite=args.overwrite)
    print(f"exported {n} verdict(s) → {args.output}")
    return 0


def _cmd_calibrate_ood(args: argparse.Namespace) -> int:
    from .predict import calibrate_ood

    info = calibrate_ood(args.run, args.data, quantile=args.quantile, overwrite=args.overwrite,
                         progress=_progress(args))  # fmt: skip
    for note in info.get("notes", []):
        print(f"note: {note}")
    print(f"out-of-distribution statistics in {args.run}/ood.npz: Mahalanobis distance on {info['features']} "
          f"features from {info['n_fit']} training images; flag above {info['threshold']:.4g}, the "
          f"{info['quantile']:.0%} quantile of {info['n_threshold']} validation images")  # fmt: skip
    print(f"the flag {info['false_alarm_text']}")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(None, f"--iou-threshold must be 'otsu' or a fraction of the map maximum, not '{text}'") from None
    return value


def _cmd_audit(args: argparse.Namespace) -> int:
    from .evaluate.audit import audit

    bins = _age_bins(args.age_bins)
    threshold, rule = args.threshold, None
    if args.threshold_from:
        if threshold is not None:
            raise MedtlError(None, "give --threshold or --threshold-from, not both")
        from .evaluate.audit import threshold_from_csv

        threshold, rule = threshold_from_csv(args.threshold_from, args.label, args.score, rule=args.threshold_rule,
                                             target=args.target_sensitivity, positive=args.positive)  # fmt: skip
    from .outputs import check_destination, mark_complete, output_folder

    inputs = [args.predictions, args.threshold_from]
    check_destination(args.output, inputs=inputs)  # before the bootstrap, not after it
    res = audit(args.predictions, args.label, args.score, _split_names(args.groups), threshold=threshold,
                threshold_rule=rule, patient=None if args.no_patient else (args.patient or "auto"),
                intersections=args.intersections, n_boot=args.n_boot, seed=args.seed,
                min_group=args.min_group, min_gap=args.min_gap, positive=args.positive,
                **({"age_bins": bins} if bins else {}))  # fmt: skip
    with output_folder(args.output, "audit", inputs=inputs, overwrite=args.overwrite) as out:
        res.save(out)
        mark_complete(out, "audit")
    if str(res.settings.get("threshold_rule", "")).startswith("youden on the audited rows"):
        print("note: no --threshold given; Youden's J on these rows was used, which flatters sensitivity/specificity")
    st = res.settings
    if st["resampling_unit"] == "patient":
        print(f"resampled by patient (column {st['patient_column']}, {st['n_clusters']} patients)")
    else:
        print("resampled by row: no patient column (pass --patient COLUMN if rows share patients)")
    groups = {a: {g: v["status"] for g, v in gs.items()} for a, gs in res.groups.items()}
    _print_audit_summary(res.overall, res.flags + res.confounder_flags, args.output, groups, st.get("excluded"))
    return 0


def _audit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groups", default="", help="comma-separated group columns, e.g. sex,age,site")
    p.add_argument("--intersections", action="store_true", help="also audit every pair of group columns")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    p.add_argument("--min-group", type=int, default=30, help="smaller groups are reported but not compared (30)")
    p.add_argument("--min-gap", type=float, default=0.05, help="a gap must exceed this to be flagged (0.05)")
    p.add_argument("--age-bins", default=None, help="age band edges in years (default 0,40,60,75,200)")
    p.add_argument("-o", "--output", required=True, help="output folder (never a run directory)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier output in that folder")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="medtl",
        description="Transfer learning for medical imaging: read studies, fine-tune pretrained backbones, "
        "evaluate and audit them for bias.",
    )
    parser.add_argument("--version", action="version", version=f"medtl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole path on the sample data: scan, train, evaluate, explain, predict, "
                       "report (a few minutes on a laptop)")  # fmt: skip
    p.add_argument("-o", "--output", default="out", help="folder for everything the demo writes (default: out)")
    p.add_argument("--data", help="sample data folder (default: the clone's sample_data/)")
    p.add_argument("--config", help="training config (default: the clone's configs/cxr-2d.yaml)")
    p.add_argument("--overwrite", action="store_true",
                   help="run in a folder that holds other things than an earlier demo (its run/, report/ ... "
                   "sub-folders are replaced)")  # fmt: skip
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("scan", help="list every image and series under a folder (headers only)")
    p.add_argument("dir", help="folder to walk recursively")
    p.add_argument("-o", "--output", help="write the manifest CSV here")
    p.add_argument("--errors", help="write one row per unreadable file here (CSV)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    _quiet_option(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier scan's manifest or errors file (never a file of another kind)")
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("train", help="fine-tune a pretrained backbone from a YAML config")
    p.add_argument("config", nargs="?", help="YAML file (see configs/ and docs/config.md)")
    p.add_argument("-o", "--output", required=True, help="run directory (an interrupted run in it resumes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--restart", action="store_true",
                   help="replace the run in the output folder and train anew (without it, a run there resumes, "
                   "if its settings are the same)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace another command's output in the folder")
    p.add_argument("--seeds", type=int, default=1, help="train N seeds (RUN/seed_k) and report mean and 95%% CI")
    p.add_argument("--ensemble", type=int, default=0, metavar="K",
                   help="train K seeds on one split as one run whose probabilities are their average (the "
                   "`ensemble` config key)")  # fmt: skip
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation over patients (RUN/fold_i)")
    _quiet_option(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("adapt", help="adapt a trained run to a new site or scanner (AdaBN, unlabelled images)")
    p.add_argument("run", help="a run directory from `medtl train`")
    p.add_argument("target", help="CSV with a `path` column of target-site images")
    p.add_argument("-o", "--output", required=True, help="the adapted run directory (a new folder)")
    p.add_argument("--overwrite", action="store_true", help="replace a run or output already in that folder")
    _quiet_option(p)
    p.set_defaults(func=_cmd_adapt)

    p = sub.add_parser("evaluate", help="apply a run to a labelled manifest: metrics with CIs, calibration, audit")
    p.add_argument("run", help="a run directory from `medtl train`")
    p.add_argument("manifest", help="labelled manifest CSV (same label columns as training), or a .npz")
    p.add_argument(
        "--split",
        default=None,
        choices=["all", "train", "val", "test"],
        help="all rows (CSV default); or a part of a .npz (default test) or of the run's own split",
    )
    p.add_argument("--redact-paths", action="store_true",
                   help="name images by a salted key, not their path; the keys' paths go to path_keys.csv")
    _audit_options(p)
    _quiet_option(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("explain", help="saliency maps of a run's predictions, with sanity, localization and "
                       "faithfulness checks")  # fmt: skip
    p.add_argument("run", help="a run directory from `medtl train`")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (every image and series in them), or a manifest .csv / .npz")
    p.add_argument("-o", "--output", required=True, help="output folder: maps/, explain.json, errors.csv")
    p.add_argument("--method", action="append", metavar="M",
                   help="auto (default: the method the run's saliency check chose; ig@blur for a run without one), gradcam, gradcam@1/16, "
                        "gradcam@1/8, gradcam++, ig, ig@blur, ig@mean, smoothgrad, occlusion, or all; repeat or "
                        "comma-separate")
    p.add_argument("--target", default=None,
                   help="the output to explain, by index or name (default: a binary run's finding on every input; "
                   "multi-class: the predicted class; multi-label: each finding at 0.5 or above)")
    p.add_argument("--split", default=None, choices=["all", "train", "val", "test"],
                   help="rows of a manifest (default all); a CSV's parts are the run's own split")
    p.add_argument("--sanity", action="store_true",
                   help="check each method by cascading model randomization first (Adebayo et al. 2018)")
    p.add_argument("--sanity-samples", type=int, default=8, help="inputs the sanity check uses (8)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="inputs evaluated at once inside ig, smoothgrad, occlusion and deletion (bounds memory)")
    p.add_argument("--iou-threshold", default="otsu",
                   help="localization: 'otsu' (default) or a fraction of each map's maximum")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the localization CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad noise, random deletion and bootstrap")
    p.add_argument("--redact-paths", action="store_true", help="name inputs by a salted key, not their path")
    p.add_argument("--overwrite", action="store_true", help="replace earlier output in the folder")
    _quiet_option(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("predict", help="predict every image and series under a folder (resumable, shardable); "
                       "`medtl predict merge` joins shards")  # fmt: skip
    p.add_argument("run", help="a run directory from `medtl train`")
    p.add_argument("input", help="a folder tree of images (DICOM, NIfTI, PNG ...) or one file")
    p.add_argument("-o", "--output", required=True, help="output folder: predictions.csv, errors.csv, summary.json")
    p.add_argument("--resume", action="store_true", help="finish an interrupted job in the output folder")
    p.add_argument("--overwrite", action="store_true", help="replace earlier predict output in the folder")
    p.add_argument("--batch-size", type=int, default=16, help="images per network batch (16)")
    p.add_argument("--workers", type=int, default=None, help="processes reading images (default: half the cores on CPU, the network takes the rest; min(8, cores) with a GPU)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="predict only share I of N (0-based) for job arrays; join with `medtl predict merge`")
    p.add_argument("--saliency", nargs="?", const="auto", default=None, metavar="METHOD",
                   help="also write a saliency map per image; alone (or 'auto'): the method the run's saliency check "
                        "chose; or name one: ig, ig@blur, occlusion, gradcam@1/8 ... (docs/explain.md)")
    p.add_argument("--redact-paths", action="store_true", help="no paths in the outputs: inputs by salted key only")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when there is one)")
    p.add_argument("--assess-unfamiliar", action="store_true",
                   help="give inputs unlike the training data a decision anyway (default: 'not assessed'; they "
                   "stay flagged in ood and ood_reason)")  # fmt: skip
    _quiet_option(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("predict-merge", prog="medtl predict merge",
                       description="Join the outputs of `medtl predict --shard I/N` (or of torchrun ranks) into "
                       "one folder.")  # fmt: skip
    p.add_argument("shards", nargs="+", metavar="SHARD", help="finished `medtl predict --shard` output folders")
    p.add_argument("-o", "--output", required=True, help="folder for the merged output")
    p.add_argument("--overwrite", action="store_true", help="replace earlier output in the folder")
    p.set_defaults(func=_cmd_predict_merge)

    p = sub.add_parser("report", help="self-contained HTML pages for clinicians from a `medtl predict` output")
    p.add_argument("run", help="the run directory that made the predictions")
    p.add_argument("predictions", help="a finished `medtl predict` output folder")
    p.add_argument("-o", "--output", required=True, help="report folder: index.html, cases/, report.json")
    p.add_argument("--input", default=None, help="where the images are now (default: the folder predict read; "
                   "needed after --redact-paths or a move)")  # fmt: skip
    p.add_argument("--evaluation", default=None, metavar="DIR",
                   help="a `medtl evaluate --groups` output of the run: its bias audit goes on every page")
    p.add_argument("--explanation", default=None, metavar="DIR",
                   help="a `medtl explain --sanity` output of the run: the saliency method's sanity check")
    p.add_argument("--show-identifiers", action="store_true",
                   help="show paths and identifying DICOM fields (name, ID, accession, dates); off by default")
    p.add_argument("--workers", type=int, default=None, help="processes drawing the cases (default: up to 4)")
    p.add_argument("--overwrite", action="store_true", help="rebuild the report in place (recorded verdicts are kept)")
    _quiet_option(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("review", help="serve a report so clinicians can record verdicts; `medtl review add-reader` / "
                       "`readers` / `remove-reader` manage readers, `import` / `export` move verdicts")  # fmt: skip
    p.add_argument("report", help="a `medtl report` folder")
    p.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only; any "
                   "other needs --remote)")  # fmt: skip
    p.add_argument("--remote", action="store_true", help="let other machines connect (the report needs readers: "
                   "only their personal links open pages)")  # fmt: skip
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a name readers open the server by (the machine's DNS name); repeatable")  # fmt: skip
    p.add_argument("--remote-identifiers", action="store_true", help="serve a report built with --show-identifiers "
                   "to other machines too")  # fmt: skip
    p.add_argument("--reviewer", default=None, help="the reviewer of a single-user review (default: your login name)")
    p.add_argument("--open", action="store_true", help="open the index in this machine's browser")
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser("review-add-reader", prog="medtl review add-reader",
                       description="Add a reader to a report's review and print their personal link.")  # fmt: skip
    p.add_argument("report", help="a `medtl report` folder")
    p.add_argument("name", help="the reader's name as verdicts record it (printable, up to 100 characters)")
    p.add_argument("--new-link", action="store_true", help="give an existing reader a new link (the old one ends)")
    p.add_argument("--base-url", default=None, help="where readers open the server (default: medtl review's own "
                   "address, http://127.0.0.1:8765)")  # fmt: skip
    p.set_defaults(func=_cmd_review_add_reader)

    p = sub.add_parser("review-remove-reader", prog="medtl review remove-reader",
                       description="End a reader's personal link (their verdicts stay).")  # fmt: skip
    p.add_argument("report", help="a `medtl report` folder")
    p.add_argument("name", help="the reader's name")
    p.set_defaults(func=_cmd_review_remove_reader)

    p = sub.add_parser("review-readers", prog="medtl review readers", description="List a report's readers.")
    p.add_argument("report", help="a `medtl report` folder")
    p.set_defaults(func=_cmd_review_readers)

    p = sub.add_parser("review-import", prog="medtl review import",
                       description="Add another reviewer's exported verdicts to a report (all or nothing).")
    p.add_argument("verdicts", help="a verdicts CSV from `medtl review export` or the review page's export link")
    p.add_argument("report", help="the `medtl report` folder the verdicts belong to")
    p.set_defaults(func=_cmd_review_import)

    p = sub.add_parser("review-export", prog="medtl review export",
                       description="Write every verdict of a report as CSV.")
    p.add_argument("report", help="a `medtl report` folder")
    p.add_argument("-o", "--output", required=True, help="the CSV to write (never inside the report)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export of verdicts at that path")
    p.set_defaults(func=_cmd_review_export)

    p = sub.add_parser("saliency-check", help="choose the run's default saliency map by evidence on its validation "
                       "images (medtl train does this; for runs trained before, or with saliency_check: 0)")  # fmt: skip
    p.add_argument("run", help="a run directory from `medtl train` (its data must be where it was)")
    p.add_argument("--images", type=int, default=16, help="validation images to score the methods on (16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomization and the random deletion orders")
    p.add_argument("--overwrite", action="store_true", help="score the methods again")
    _quiet_option(p)
    p.set_defaults(func=_cmd_saliency_check)

    p = sub.add_parser("calibrate-ood", help="add out-of-distribution statistics to a run trained before they "
                       "existed")  # fmt: skip
    p.add_argument("run", help="a run directory from `medtl train`")
    p.add_argument("data", help="the manifest CSV or .npz the run was trained on (its train and val images)")
    p.add_argument("--quantile", type=float, default=0.99,
                   help="flag threshold: this quantile of the validation images' scores (0.99)")
    p.add_argument("--overwrite", action="store_true", help="replace statistics the run already has")
    _quiet_option(p)
    p.set_defaults(func=_cmd_calibrate_ood)

    p = sub.add_parser("audit", help="bias audit of any predictions CSV (labels, scores, group columns)")
    p.add_argument("predictions", help="CSV with a label column, a score column and group columns")
    p.add_argument("--label", required=True, help="label column (0/1, or any classes with --positive)")
    p.add_argument("--score", required=True, help="score column: higher means more likely positive")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold, chosen on validation data")
    p.add_argument(
        "--threshold-from",
        default=None,
        metavar="VAL.csv",
        help="choose the threshold on these validation predictions (same label and score columns)",
    )
    p.add_argument(
        "--threshold-rule",
        default="youden",
        choices=["youden", "sensitivity"],
        help="with --threshold-from: Youden's J, or the most specific threshold reaching --target-sensitivity",
    )
    p.add_argument("--target-sensitivity", type=float, default=0.9, help="with --threshold-rule sensitivity (0.9)")
    p.add_argument("--patient", default=None,
                   help="patient id column: resample patients, not rows (default: a column named patient, if any)")
    p.add_argument("--no-patient", action="store_true", help="resample rows even when a patient column exists")
    p.add_argument("--positive", default=None, help="the positive class when labels are not 0/1")
    _audit_options(p)
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("models", help="list backbones, their pretrained sources and sizes")
    p.add_argument("pattern", nargs="?", default="*", help="filter, e.g. 'resnet*'")
    p.add_argument("--conventions", dest="verbose_conventions", action="store_true", help="show input conventions")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("weights", help="manage pretrained weights (offline cache)")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    wsub.add_parser("list", help="every declared source and whether it is available here")
    wsub.add_parser("verify", help="check cached files against the digests recorded at import")
    for action, helptext in (("path", "print the file medtl would load (never downloads)"),
                             ("download", "download into the cache, checking the checksum")):  # fmt: skip
        wsub.add_parser(action, help=helptext).add_argument("name", help="source, e.g. resnet18.imagenet")
    imp = wsub.add_parser("import", help="bring a file you obtained by hand into the cache")
    imp.add_argument("name", help="source, e.g. densenet121.xrv-all")
    imp.add_argument("file", help="the upstream file")
    p.set_defaults(func=_cmd_weights)

    for name, helptext, func in (
        ("info", "load one image or series and print its geometry and metadata", _cmd_info),
        ("convert", "load one image or series and write it as NIfTI", _cmd_convert),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("path", help="file, or folder holding one DICOM series")
        if name == "convert":
            p.add_argument("output", help="output .nii or .nii.gz")
            p.add_argument("--overwrite", action="store_true", help="replace an existing NIfTI file at that path")
        else:
            p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--series", help="series key (from `medtl scan`) or SeriesInstanceUID")
        p.add_argument(
            "--volume", type=_volume_arg,
            help="4D NIfTI or DICOM (fMRI, diffusion, echoes): volume index (0, 1, ...), or 'all' (volume axis first)",
        )  # fmt: skip
        p.set_defaults(func=func)
    return parser


_ALIASES = {"predict-merge": "predict merge", "review-import": "review import", "review-export": "review export",
            "review-add-reader": "review add-reader", "review-remove-reader": "review remove-reader",
            "review-readers": "review readers"}  # fmt: skip


def _how_to_go_on(command: str, exc: BaseException) -> str:
    """After a failed write: that nothing was marked finished, and how to continue."""
    from .errors import WriteError

    if not (isinstance(exc, WriteError) or isinstance(exc, OSError)):  # an unsafe salt is fatal, but no write
        return ""
    again = {"train": "run the same command again to resume", "predict": "add --resume to the same command"}
    return (f"; the output is not marked finished: free space (or fix the device), then "
            f"{again.get(command, 'run the same command again')}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medtl`` console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1):  # `medtl predict merge`, `medtl review import` ... are their own commands
        if f"{argv[i]}-{argv[i + 1]}" in _ALIASES:
            argv[i : i + 2] = [f"{argv[i]}-{argv[i + 1]}"]
            break
        if not argv[i].startswith("-"):
            break
    args = parser.parse_args(argv)
    if args.command in _ALIASES:  # errors name the command as it was typed
        args.command = _ALIASES[args.command]
    if not log.handlers:  # medtl's own logger only: other libraries keep their configuration
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if not args.verbose:
        # Lightning's banners (accelerator summary, product tips) and a deprecation inside Lightning
        # itself drown medtl's own report; -v shows them
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not sys.stdout.isatty() and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # a log file gets each result line beside the progress lines
    try:
        return args.func(args)
    except MedtlError as exc:
        if args.verbose:
            log.exception("traceback")
        print(f"medtl {args.command}: error: {exc}{_how_to_go_on(args.command, exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = {"train": "; run the same command again to resume",
                 "predict": "; add --resume to the same command to finish"}.get(args.command, "")  # fmt: skip
        print(f"\nmedtl {args.command}: interrupted{again}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: nothing more is wanted
        sys.stderr.close()
        return 141
    except OSError as exc:
        from .errors import is_fatal

        if args.verbose or not is_fatal(exc):
            raise
        print(f"medtl {args.command}: error: {exc.filename or ''}: {exc.strerror}{_how_to_go_on(args.command, exc)}",
              file=sys.stderr)  # fmt: skip
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for users; the traceback with -v
        if args.verbose:
            raise
        print(f"medtl {args.command}: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback, "
              "and report it)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
