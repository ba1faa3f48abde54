"""What a clinician should know about the model before reading its output, from plain files.

:func:`model_summary` reads a run directory (``config.yaml``, ``split.json``, ``metrics.json``,
``calibration.json``, ``threshold.json``, ``model_card.md``), and optionally a ``medtl evaluate``
output (its bias audit, ``audit.json``) and a ``medtl explain`` output (the saliency sanity check
and localization scores, ``explain.json``); the run's ``saliency.json`` says which map method its
saliency check chose, and why. It returns one dict of text and numbers that the report templates show; missing
pieces become sentences that say what is missing and how to add it, never silent gaps.

>>> import inspect
>>> list(inspect.signature(model_summary).parameters)
['run_dir', 'evaluation', 'explanation', 'method', 'anatomy']
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..rundir import read_json

__all__ = ["model_summary", "card_sections", "saliency_check"]

# the audit's metrics a clinician reads first, in this order
_AUDIT_METRICS = (("auroc", "AUROC"), ("tpr", "sensitivity"), ("tnr", "specificity"), ("ppv", "PPV"))


def _plain(text: str) -> str:
    """Markdown emphasis and code marks dropped: the report shows the words, escaped."""
    return re.sub(r"\*\*|`", "", " ".join(text.split()))


def card_sections(markdown: str) -> dict[str, list[str]]:
    """The model card's ``## `` sections as lists of paragraphs or bullet points (plain text).
    The first section (before any ``## `` heading) is keyed ``summary``.

    >>> card = "# Card\\n- **Backbone**: x\\n\\n## Known limits\\n- one\\n  continued\\n- two\\n"
    >>> card_sections(card)
    {'summary': ['Backbone: x'], 'Known limits': ['one continued', 'two']}
    """
    sections: dict[str, list[str]] = {}
    name, items = "summary", []
    for line in markdown.splitlines():
        if line.startswith("## "):
            sections[name] = [_plain(i) for i in items if i.strip()]
            name, items = line[3:].strip(), []
        elif line.startswith("# "):
            continue
        elif line.startswith(("- ", "* ")):
            items.append(line[2:])
        elif not line.strip():
            items.append("")
        elif items and items[-1]:
            items[-1] += " " + line.strip()  # a bullet's or paragraph's next line
        else:
            items.append(line.strip())
    sections[name] = [_plain(i) for i in items if i.strip()]
    return sections


def _ci(ci: Any, digits: int = 2) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def _metric(values: dict[str, Any], key: str) -> dict[str, Any]:
    v = values.get(key)
    return {"value": None if v is None else round(float(v), 3), "ci": _ci(values.get(f"{key}_ci"))}


def _same_run(folder: Path, record: dict[str, Any], run: Path, what: str) -> None:
    """Refuse an evaluation or explanation of another run: by the weights' digest (outputs since
    step 9 record it), else by the run's name."""
    from ..rundir import weights_digest

    theirs = record.get("run_weights")
    if theirs is not None and theirs != weights_digest(run):
        raise ConfigError(folder, f"{what} other weights ({record.get('run', '?')}, {theirs}) than {run.name} "
                          f"({weights_digest(run)})")  # fmt: skip
    if theirs is None and record.get("run") not in (None, run.resolve().name):
        raise ConfigError(folder, f"{what} another run ({record.get('run')}), not {run.name}")


def _audit(evaluation: str | os.PathLike | None, run: Path) -> dict[str, Any]:
    if evaluation is None:
        return {"available": False, "note": "No bias audit was given: run `medtl evaluate RUN DATA --groups sex,site` "
                "on held-out data and build the report with `--evaluation` that folder."}  # fmt: skip
    folder = Path(evaluation)
    data = read_json(folder / "audit.json")
    if data is None:
        raise ConfigError(folder, "holds no audit.json: give the folder `medtl evaluate ... --groups ...` wrote")
    metrics = read_json(folder / "metrics.json") or {}
    _same_run(folder, metrics, run, "audits")
    settings = data.get("settings", {})
    groups = []
    for attribute, members in (data.get("groups") or {}).items():
        for group, values in members.items():
            groups.append({"attribute": attribute, "group": group, "n": values.get("n"), "n_pos": values.get("n_pos"),
                           "status": values.get("status", ""), "note": values.get("note", ""),
                           "metrics": [dict(_metric(values, k), name=label) for k, label in _AUDIT_METRICS]})  # fmt: skip
    overall = data.get("overall") or {}
    return {
        "available": True,
        "metrics": metrics,
        "label": settings.get("label"),
        "compared": sum(g["status"] == "ok" and g["group"] != "(missing)" for g in groups),
        "confounders": _confounders(data),
        "n": overall.get("n"),
        "n_pos": overall.get("n_pos"),
        "split": metrics.get("split"),
        "data": metrics.get("data"),
        "threshold": settings.get("threshold"),
        "level": settings.get("level", 0.95),
        "overall": [dict(_metric(overall, k), name=label) for k, label in _AUDIT_METRICS],
        "groups": groups,
        "flags": [str(f.get("reason", f)) if isinstance(f, dict) else str(f) for f in data.get("flags") or []],
    }


def _confounders(data: dict[str, Any]) -> dict[str, Any]:
    """The audit's confounder check for the model page: flag sentences, what could not be
    measured, and one table row per figure (an audit from before the check: ``available`` False)."""
    from ..evaluate.confounders import confounder_rows

    check = data.get("confounders")
    if not isinstance(check, dict):
        return {"available": False, "flags": [], "not_measured": [], "rows": []}
    rows = []
    for r in confounder_rows(check):
        rows.append(dict(r, auroc=None if r["auroc"] is None else round(float(r["auroc"]), 2),
                         ci=_ci([r["ci_low"], r["ci_high"]])))  # fmt: skip
    return {"available": True, "flags": [str(f.get("reason", "")) for f in data.get("confounder_flags") or []],
            "not_measured": [m for e in check.values() for m in e.get("not_measured", [])], "rows": rows,
            "rule": str((data.get("settings") or {}).get("confounder_rule") or "")}  # fmt: skip


def _trust(run: Path, evaluation: str | os.PathLike | None, audit: dict[str, Any], metrics: dict[str, Any],
           calibration: dict[str, Any], stated: bool) -> dict[str, Any]:  # fmt: skip
    """The report's header (:mod:`medtl.report.trust`): the held-out discrimination first."""
    from .build import _float, _read_csv
    from .trust import discrimination, score_range, trust_header

    held = audit.get("metrics") if audit["available"] else (read_json(Path(evaluation) / "metrics.json")
                                                            if evaluation is not None else None)  # fmt: skip
    disc = discrimination(held, metrics.get("test"))
    rng = None
    if evaluation is not None and audit.get("label"):
        rows = _read_csv(Path(evaluation) / "predictions.csv")
        rng = score_range([_float(r.get("score")) for r in rows], [_float(r.get(audit["label"])) for r in rows])
    elif isinstance(metrics.get("test"), dict):
        rng = metrics["test"].get("score_range")
    cal = {"method": calibration.get("method", "temperature"), "n": calibration.get("n"), "range": rng,
           "fitted_on": calibration.get("fitted_on", "val")}  # fmt: skip
    gaps = audit["flags"] if audit["available"] else []
    confounders = audit["confounders"]["flags"] if audit["available"] else []
    return trust_header(disc, cal, confounders=confounders, gaps=gaps, intended_stated=stated)


def _explain_record(explanation: str | os.PathLike, run: Path) -> dict[str, Any]:
    """A ``medtl explain`` output's ``explain.json``, checked to be of this run."""
    folder = Path(explanation)
    data = read_json(folder / "explain.json")
    if data is None:
        raise ConfigError(folder, "holds no explain.json: give the folder `medtl explain ... --sanity` wrote")
    _same_run(folder, data, run, "explains")
    return data


def _sanity(data: dict[str, Any] | None, explanation: str | os.PathLike | None, method: str | None) -> dict[str, Any]:
    if method is None:
        return {"status": "no saliency", "text": "The predictions were made without saliency maps (`medtl predict "
                "--saliency METHOD` adds them)."}  # fmt: skip
    if data is None or explanation is None:
        return {"status": "not checked", "text": f"{method}: no sanity check was given. Run `medtl explain RUN DATA "
                f"--method {method} --sanity` and build the report with `--explanation` that folder; until then "
                "treat the maps as unchecked."}  # fmt: skip
    result = (data.get("sanity") or {}).get(method)
    if not result:
        return {
            "status": "not checked",
            "text": f"{method}: {Path(explanation).name} holds no sanity check of this method "
            f"(it checked {', '.join(sorted(data.get('sanity') or {})) or 'none'}); treat the maps as unchecked.",
        }
    faith = (data.get("faithfulness") or {}).get(method) or {}
    passed = bool(result.get("passed"))
    text = (f"{method} passed the model-randomisation check: its maps change when the network's weights are "
            "re-initialised, so they depend on what the model learned (not that what it learned is right)." if passed else
            f"{method} FAILED the model-randomisation check: its maps barely change when the network's weights are "
            "re-initialised, so they may show image edges rather than what the model learned. Do not read the "
            "overlays as the model's reasons.")  # fmt: skip
    if faith:
        text += (f" Deleting the most salient pixels first lowered the output {'faster' if faith.get('faithful') else 'no faster'}"
                 f" than deleting random pixels (deletion AUC {faith.get('deletion_auc')} vs {faith.get('random_auc')}).")  # fmt: skip
    return {"status": "passed" if passed else "failed", "text": text, "rule": result.get("rule", "")}


#: The localization scores of ``explain.json`` a clinician reads, in this order.
_LOCALIZATION = (("pointing_game", "pointing game"), ("energy_pointing", "energy pointing game"), ("iou", "IoU"))


def _localization(data: dict[str, Any] | None, method: str | None) -> dict[str, Any] | None:
    """How often the method's maps pointed at the labelled lesions (``explain.json``'s
    ``localization`` for the report's method): the scores with their CIs and the images they rest
    on; ``None`` when the explanation scored none."""
    found = ((data or {}).get("localization") or {}).get(method or "") or {}
    scores = []
    for key, name in _LOCALIZATION:
        part = found.get(key)
        if isinstance(part, dict) and part.get("value") is not None:
            scores.append({"name": name, "value": round(float(part["value"]), 3), "ci": _ci(part.get("ci")),
                           "n": part.get("n")})  # fmt: skip
    if not scores:
        return None
    n = max((s["n"] for s in scores if isinstance(s["n"], int)), default=None)
    return {"scores": scores, "n": n, "threshold": found.get("threshold")}


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.0f} %"


def _pct_ci(ci: Any) -> str:
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f" [{100 * float(ci[0]):.0f}–{100 * float(ci[1]):.0f} %]"


def _split_name(split: Any) -> str:
    """A split as a reader names it (``val``: validation)."""
    return {"val": "validation", "train": "training", None: "validation", "": "validation"}.get(split, str(split))


def _candidates(found: dict[str, Any], chosen: str | None) -> list[dict[str, Any]]:
    """The rows of the saliency check's table: one per candidate method."""
    rows = []
    for name, c in (found or {}).items():
        if not isinstance(c, dict):
            continue
        rho, gain, pointing = c.get("randomization_spearman"), c.get("deletion_gain"), c.get("pointing_game")
        rows.append({"method": str(name), "chosen": name == chosen,
                     "rho": None if rho is None else f"{float(rho):.2f}", "passed": c.get("passed_randomization"),
                     "gain": None if gain is None else f"{float(gain):.3f}", "faithful": c.get("faithful"),
                     "pointing": None if pointing is None else f"{float(pointing):.2f}",
                     "eligible": bool(c.get("eligible")), "excluded": c.get("excluded_because") or ""})  # fmt: skip
    return rows


def saliency_check(run: Path) -> dict[str, Any]:
    """The run's choice of saliency method (``saliency.json``, written by training): the method
    and why, the candidates it compared, and its run-level shortcut figure; ``available`` is
    ``False`` for a run that records none."""
    data = read_json(run / "saliency.json")
    if not isinstance(data, dict):
        return {"available": False, "method": None, "why": "", "rule": "", "n_images": None, "split": None,
                "candidates": [], "anatomy_rule": "", "shortcut": None,
                "text": "This run records no saliency check (saliency.json): the map method was not chosen by "
                "comparing methods on its validation images."}  # fmt: skip
    method = data.get("method")
    anatomy = data.get("anatomy") if isinstance(data.get("anatomy"), dict) else None
    shortcut = None
    if anatomy:
        shortcut = (f"Run-level: median share of evidence inside the anatomy {_pct(anatomy.get('median_inside'))}"
                    f"{_pct_ci(anatomy.get('median_ci'))}, cases marked {_pct(anatomy.get('marked_share'))}"
                    f"{_pct_ci(anatomy.get('marked_ci'))} ({anatomy.get('n', '?')} {_split_name(data.get('split'))} "
                    "images).")  # fmt: skip
    return {"available": True, "method": method, "why": str(data.get("why") or ""), "rule": str(data.get("rule") or ""),
            "n_images": data.get("n_images"), "split": _split_name(data.get("split")),
            "candidates": _candidates(data.get("candidates") or {}, method),
            "anatomy_rule": str((anatomy or {}).get("rule") or "").strip().rstrip("."), "shortcut": shortcut,
            "text": ""}  # fmt: skip


def _training(cfg, spec, split: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """Sentences on what the model was trained on: data, split, network, ensemble, validation AUROC."""
    data_name = Path(cfg.npz or cfg.manifest).name
    counts = split.get("counts") or {}
    training = [f"Trained on {data_name}: " + ", ".join(
        f"{part} {c.get('images', '?')} images of {c.get('patients', '?')} patients" for part, c in counts.items()
    ) + "." if counts else f"Trained on {data_name}."]  # fmt: skip
    if split.get("description"):
        training.append(f"Split: {_plain(split['description'])}.")
    pretrained = f"{cfg.pretrained}-pretrained " if cfg.pretrained else ""
    training.append(f"Network: {pretrained}{cfg.backbone}, {cfg.spatial_dims}D, input {list(cfg.size)} "
                    f"({spec.channels} channel{'s' if spec.channels != 1 else ''}, preset {spec.preset}).")  # fmt: skip
    if cfg.ensemble > 1:
        training.append(f"An ensemble of {cfg.ensemble} such networks (seeds {cfg.seed} to {cfg.seed + cfg.ensemble - 1}, "
                        "one split): the probabilities shown are their average.")  # fmt: skip
    if metrics.get("val_auroc") is not None:
        training.append(f"Validation AUROC {metrics['val_auroc']:.3f} on {metrics.get('n_val', '?')} images "
                        "(chosen on it: not a test result).")  # fmt: skip
    return training


def _caveats(card: dict[str, list[str]], calibrated: bool, audit: dict[str, Any], sanity: dict[str, Any],
             method: str | None) -> list[str]:  # fmt: skip
    """The card's known limits, then the warnings of the calibration, the audit and the map check."""
    caveats = list(card.get("Known limits") or [])
    if not calibrated:
        caveats.insert(0, "Probabilities are not calibrated: they rank cases but are not risks.")
    if audit["available"]:
        caveats += [f"Bias audit: {f}" for f in audit["flags"]]
        caveats += [f"Confounder check: {f}" for f in audit["confounders"]["flags"]]
        if audit.get("n") is not None and audit["n"] < 100:
            caveats.append(f"The audit rests on {audit['n']} images: its intervals are wide and small groups "
                           "are shown, not compared.")  # fmt: skip
    if sanity["status"] == "failed":
        caveats.insert(0, f"The saliency maps ({method}) failed their sanity check: do not read them as the "
                       "model's reasons.")  # fmt: skip
    return caveats


def model_summary(run_dir: str | os.PathLike, evaluation: str | os.PathLike | None = None,
                  explanation: str | os.PathLike | None = None, method: str | None = None, *,
                  anatomy: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The model section of a clinician report.

    Args:
        run_dir: a finished run (``medtl train``).
        evaluation: a ``medtl evaluate --groups`` output of this run (its ``audit.json``), or ``None``.
        explanation: a ``medtl explain --sanity`` output of this run (its ``explain.json``), or ``None``.
        method: the saliency method the predictions used (``None``: no maps).
        anatomy: the report-level shortcut figure (from the predictions' anatomy shares), shown
            beside the run's own.

    Returns:
        ``name``, ``backbone``, ``task``, ``labels``, ``intended_use``, ``training`` (sentences),
        ``calibration`` (``calibrated`` and a sentence), ``threshold``, ``ood`` and ``ood_rules``
        (:func:`ood_summary`), ``audit``, ``sanity``,
        ``saliency`` (the run's choice of method, the candidates, the explanation's localization
        scores and the shortcut figures) and ``caveats`` (the card's known limits, then warnings
        from the audit and checks).

    Raises:
        ConfigError: ``run_dir`` is not a finished run; an evaluation or explanation folder lacks its
            file or belongs to another run.
    """
    from ..rundir import read_config, read_spec, read_split

    run = Path(run_dir)
    cfg = read_config(run)
    spec = read_spec(run)
    labels = read_json(run / "labels.json") or []
    metrics = read_json(run / "metrics.json") or {}
    calibration = read_json(run / "calibration.json") or {"method": "temperature"}
    threshold = read_json(run / "threshold.json")
    split = read_split(run) or {}
    card_path = run / "model_card.md"
    card = card_sections(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}

    intended = card.get("Intended use") or ([cfg.intended_use] if cfg.intended_use.strip() else [])
    stated = bool(cfg.intended_use.strip()) and not any(i.startswith("Not stated") for i in intended)
    if not intended:
        intended = ["Not stated: the model's training config sets no intended_use. Research use only."]
    training = _training(cfg, spec, split, metrics)

    calibrated = calibration.get("method", "temperature") != "none"
    if calibrated:
        cal_text = (f"Probabilities are recalibrated ({calibration.get('method')}, fitted on "
                    f"{calibration.get('n', '?')} validation images): this makes the scores honest about how sure the "
                    "model is, not the model any better. A model that separates the classes poorly is squeezed "
                    "towards the prevalence, and then looks well calibrated because it says little.")  # fmt: skip
    else:
        cal_text = ("Probabilities are NOT calibrated: " + _plain(str(calibration.get("fitted_on", "not fitted")))
                    + ". Read them as scores that rank cases, not as risks.")  # fmt: skip
    thr = None
    if metrics.get("task", calibration.get("task")) == "binary" and threshold:
        thr = {"value": float(threshold["threshold"]), "rule": threshold.get("rule", ""), "label": str(labels[-1])}

    audit = _audit(evaluation, run)
    explained = _explain_record(explanation, run) if explanation is not None and method is not None else None
    sanity = _sanity(explained, explanation, method)
    maps = dict(saliency_check(run), localization=_localization(explained, method), report_anatomy=anatomy)
    caveats = _caveats(card, calibrated, audit, sanity, method)
    trust = _trust(run, evaluation, audit, metrics, calibration, stated)
    return {
        "trust": trust,
        "name": run.name,
        "backbone": cfg.backbone,
        "task": metrics.get("task", calibration.get("task", "")),
        "labels": [str(n) for n in labels],
        "intended_use": intended,
        "training": training,
        "calibration": {"calibrated": calibrated, "text": cal_text},
        "threshold": thr,
        **ood_summary(run, split),
        "audit": audit,
        "sanity": sanity,
        "saliency": maps,
        "caveats": caveats,
    }


def ood_summary(run: Path, split: dict[str, Any]) -> dict[str, str | None]:
    """What the report says about unfamiliar images: ``ood``, the distance check with its
    false-alarm rate as measured on held-out in-distribution images (k of n with a 95 % interval,
    never a promised rate; ``None`` for a run without statistics), and ``ood_rules``, what is
    flagged whatever the distance (:mod:`medtl.data.familiar`).

    >>> import tempfile
    >>> ood_summary(Path(tempfile.mkdtemp()), {})["ood_rules"]
    'no rule flags: the run does not record what its training images were (trained before medtl did)'
    """
    from ..data.familiar import familiar_text, read_familiar
    from ..predict.ood import false_alarm_text, read_ood

    stats = read_ood(run)
    rules = familiar_text(read_familiar(run))
    if stats is None:
        return {"ood": None, "ood_rules": rules}
    tested = ((split or {}).get("counts") or {}).get("test") or {}
    why_not = "the run has no test split" if tested.get("images") == 0 else ""
    text = (f"Mahalanobis distance on {stats.n_fit} training images, flagged above {stats.threshold:.4g} (the "
            f"{100 * stats.quantile:.0f} % quantile of {stats.n_threshold} validation images); it "
            f"{false_alarm_text(stats, why_not)}")  # fmt: skip
    return {"ood": _plain(text), "ood_rules": rules}
