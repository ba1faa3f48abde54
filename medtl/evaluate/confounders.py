"""Is the model reading the acquisition instead of the finding? A confounder check per attribute.

A subgroup audit asks whether a model does worse in some group. A confounded model can pass it:
if portable (AP) films are taken of sicker patients, a model that recognises "AP" scores well
overall and no worse in either view, because it never looks at the lungs. Three numbers per
attribute (view, site, scanner, sex, age band) show it:

(a) **The score predicts the attribute.** The AUROC of the model's score for separating each level
    from the others (one level vs the rest; for two levels the one the score ranks higher). A score
    that tells AP from PA better than it tells disease from health learned the view.
(b) **The model within each level.** The AUROC among the rows of one level only. If the model
    separates the classes overall but not within a level, the overall figure rests on differences
    between levels.
(c) **The attribute alone predicts the label.** Each row scored by its level's prevalence of the
    finding, estimated on the other four of five folds of patients (k-fold target encoding): no
    row's own label enters its score, so forty small sites cannot "predict" by memorising their
    rows, as in-sample prevalences would (mean AUROC 0.67 for a random 40-level attribute of 400
    rows, 0.49 cross-fitted). Its AUROC is what the attribute alone knows, slightly pessimistic.

Every AUROC has a percentile bootstrap CI on the same resamples of patients (rows without a
patient column) as the audit. (a) and (c) need no minimum number of rows per level; (b) needs
``min_class`` positives and negatives in the level, and says so where it cannot be measured.

Flags, each with its numbers (none without CIs, i.e. with ``n_boot=0``):

* ``score_predicts_attribute``: (a)'s CI excludes 0.5 and its AUROC exceeds the model's AUROC
  for the finding;
* ``attribute_predicts_label``: (c)'s CI excludes 0.5 and it is at least the model's AUROC: the
  attribute alone does as well as the model;
* ``within_level_collapse``: the model's overall CI excludes 0.5, but within a measured level the
  AUROC's CI includes 0.5 and its value lies below the overall CI.

Arrays in, numbers out: :func:`medtl.evaluate.audit` calls :func:`confounder_check` with the rows
it audits.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> view = rng.choice(["AP", "PA"], 400)
>>> y = (rng.random(400) < np.where(view == "AP", 0.8, 0.2)).astype(int)  # sicker patients get AP films
>>> score = (view == "AP") + rng.normal(0, 0.3, 400)                       # a model that reads the view
>>> out = confounder_check(y, score, {"view": view}, n_boot=200)
>>> sorted(f["check"] for f in out["view"]["flags"])
['score_predicts_attribute', 'within_level_collapse', 'within_level_collapse']
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .bootstrap import CHUNK_ELEMENTS, cluster_codes, percentile_ci, resample_weights, weighted_auroc

__all__ = ["confounder_check", "confounder_rows", "CHECKS", "CONFOUNDER_RULE"]

#: Folds of patients for the attribute-alone predictor (c).
_FOLDS = 5
#: The flags the check can raise, in the order it reports them.
CHECKS = ("score_predicts_attribute", "attribute_predicts_label", "within_level_collapse")
#: The rule in one sentence, for audit.json and the report.
CONFOUNDER_RULE = (
    "flagged when the score predicts the attribute (one level vs the rest) better than it predicts the finding, "
    "when the attribute alone (its levels' prevalence of the finding) predicts the finding as well as "
    "the model, or when within a level the model's AUROC is indistinguishable from chance and below its overall "
    "CI; each only where the CI excludes 0.5"
)


class _Boot:
    """AUROCs of any (labels, scores) on one fixed set of patient resamples.

    The draws are kept per patient as small integers (patients x resamples: 10 MB for 5,000
    patients and 1,000 resamples) and expanded to rows a block of resamples at a time, so a
    100,000-row audit never holds a float matrix of every row and resample (800 MB)."""

    def __init__(self, n: int, cluster: np.ndarray | None, n_boot: int, seed: int, level: float):
        self.codes, k = cluster_codes(cluster, n)
        self.level = level
        self.counts = None
        if n_boot:
            # identity codes: resample_weights then yields each patient's count (k, chunk)
            small = np.uint8 if k <= 255 else np.uint16
            blocks = [w.astype(small) for _, w in resample_weights(np.arange(k), k, n_boot, seed)]
            self.counts = np.concatenate(blocks, axis=1)

    def subset(self, rows: np.ndarray) -> _Boot:
        """The same resamples, restricted to ``rows``."""
        sub = object.__new__(_Boot)
        sub.codes, sub.counts, sub.level = self.codes[rows], self.counts, self.level
        return sub

    def _replicates(self, y: np.ndarray, s: np.ndarray, rows: np.ndarray) -> np.ndarray:
        codes, n_boot = self.codes[rows], self.counts.shape[1]
        step = max(1, CHUNK_ELEMENTS // max(len(rows), 1))
        return np.concatenate([weighted_auroc(y, s, self.counts[codes, b : b + step].astype(np.float64))
                               for b in range(0, n_boot, step)])  # fmt: skip

    def auroc(
        self, y: np.ndarray, s: np.ndarray, rows: np.ndarray | None = None, *, flip: bool = False
    ) -> dict[str, Any]:
        """Point AUROC, CI and counts of ``s`` for ``y`` over ``rows`` (all by default)."""
        rows = np.arange(len(y)) if rows is None else rows
        yy, ss = y[rows].astype(int), s[rows].astype(float) * (-1.0 if flip else 1.0)
        out: dict[str, Any] = {"n": int(len(rows)), "n_pos": int(yy.sum()), "auroc": None, "ci": None}
        if yy.min(initial=1) == yy.max(initial=0):
            return out
        out["auroc"] = float(weighted_auroc(yy, ss, np.ones(len(yy))))
        if self.counts is not None:
            out["ci"], note = percentile_ci(self._replicates(yy, ss, rows), self.level)
            if note:
                out["note"] = note
        return out


def _above_chance(entry: dict[str, Any] | None) -> bool:
    return bool(entry and entry.get("ci") and entry["ci"][0] > 0.5)


def _fmt(entry: dict[str, Any]) -> str:
    ci = entry.get("ci")
    return f"{entry['auroc']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _score_predicts(boot: _Boot, score: np.ndarray, lab: np.ndarray, levels: list[str]) -> dict[str, Any]:
    """(a): one level vs the rest, oriented so that the AUROC is at least 0.5; the best level."""
    per: dict[str, dict[str, Any]] = {}
    for level in levels[:1] if len(levels) == 2 else levels:
        member = (lab == level).astype(int)
        point = boot.auroc(member, score)
        if point["auroc"] is None:
            continue
        flip = point["auroc"] < 0.5  # the direction is read off the data, then held on every resample
        per[level] = dict(boot.auroc(member, score, flip=flip), direction="lower" if flip else "higher")
    if len(levels) == 2 and per:  # for two levels, name the one the score ranks higher
        ((level, entry),) = per.items()
        per = {level if entry["direction"] == "higher" else levels[1]: dict(entry, direction="higher")}
    best = max(per, key=lambda k: per[k]["auroc"], default=None)
    return {"levels": per, "best": best, **(per[best] if best is not None else {"auroc": None, "ci": None})}


def _cross_fitted_prevalence(y: np.ndarray, lab: np.ndarray, patient: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's level prevalence of the finding, estimated on the other folds of patients
    (k-fold target encoding, shrunk towards those folds' overall rate by one pseudo-row), so that
    no row's own label enters its score."""
    ids, codes = np.unique(patient, return_inverse=True)
    fold_of = np.random.default_rng(seed).permutation(len(ids)) % folds
    fold = fold_of[codes]
    out = np.empty(len(y))
    for f in range(folds):
        held, fit = fold == f, fold != f
        prior = float(y[fit].mean())
        for level in np.unique(lab[held]):
            rows = fit & (lab == level)
            out[held & (lab == level)] = (float(y[rows].sum()) + prior) / (int(rows.sum()) + 1)
    return out


def _attribute_alone(boot: _Boot, y: np.ndarray, lab: np.ndarray, patient: np.ndarray, seed: int) -> dict[str, Any]:
    """(c): the AUROC of the levels' cross-fitted prevalence as the score."""
    folds = min(_FOLDS, len(np.unique(patient)))
    if folds < 2:
        return {"n": int(len(y)), "n_pos": int(y.sum()), "auroc": None, "ci": None, "note": "one patient: no folds"}
    out = boot.auroc(y, _cross_fitted_prevalence(y, lab, patient, folds, seed))
    return dict(out, folds=folds)


def _within(boot: _Boot, y: np.ndarray, score: np.ndarray, lab: np.ndarray, levels: list[str],
            min_class: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """(b): the model's AUROC inside each level with enough of both classes; why not, elsewhere."""
    out = {}
    for level in levels:
        rows = np.flatnonzero(lab == level)
        n_pos = int(y[rows].sum())
        n_neg = len(rows) - n_pos
        if min(n_pos, n_neg) < min_class:
            few = "positives" if n_pos < n_neg else "negatives"
            out[level] = {"n": len(rows), "n_pos": n_pos, "auroc": None, "ci": None, "measured": False,
                          "note": f"{min(n_pos, n_neg)} {few} (fewer than min_class={min_class}): not measured"}  # fmt: skip
        else:
            out[level] = dict(boot.auroc(y, score, rows), measured=True)
    return out


def _flags(attr: str, model: dict[str, Any], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The flags of one attribute, each with the numbers behind it."""
    flags = []
    a, c = entry["score_predicts_attribute"], entry["attribute_predicts_label"]
    if model["auroc"] is None or model["ci"] is None:
        return flags
    if _above_chance(a) and a["auroc"] > model["auroc"]:
        flags.append({"check": "score_predicts_attribute", "attribute": attr, "level": a["best"], "value": a["auroc"],
                      "ci": a["ci"], "reason": f"the model's score tells {attr} '{a['best']}' from the other levels "
                      f"(AUROC {_fmt(a)}) better than it tells the finding (AUROC {_fmt(model)})"})  # fmt: skip
    if _above_chance(c) and c["auroc"] >= model["auroc"]:
        flags.append({"check": "attribute_predicts_label", "attribute": attr, "value": c["auroc"], "ci": c["ci"],
                      "reason": f"{attr} alone predicts the finding (AUROC {_fmt(c)}) as well as the model does "
                      f"(AUROC {_fmt(model)}): its performance may come from {attr}, not from the finding"})  # fmt: skip
    if _above_chance(model):
        for level, b in entry["within_level"].items():
            if b["measured"] and b["ci"] and b["ci"][0] <= 0.5 and b["auroc"] < model["ci"][0]:
                flags.append({"check": "within_level_collapse", "attribute": attr, "level": level, "value": b["auroc"],
                              "ci": b["ci"], "reason": f"within {attr} '{level}' ({b['n']} rows, {b['n_pos']} positive) "
                              f"the model's AUROC is {_fmt(b)}, indistinguishable from chance, while over all rows it "
                              f"is {_fmt(model)}: the overall figure may rest on differences between {attr} levels"})  # fmt: skip
    return flags


def confounder_check(
    y: np.ndarray,
    score: np.ndarray,
    attributes: Mapping[str, np.ndarray],
    *,
    cluster: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_class: int = 5,
    missing: str = "(missing)",
) -> dict[str, dict[str, Any]]:
    """The three confounder figures and their flags for every attribute (see the module docstring).

    Args:
        y: 0/1 labels of the audited rows.
        score: the model's scores (higher: more likely positive).
        attributes: attribute name -> each row's level (text); rows at ``missing`` are left out
            of that attribute's check.
        cluster: patient code per row (resample patients, and leave a patient out in (c)); None:
            every row is its own patient.
        n_boot, seed, level: the bootstrap (0: point values, no CIs and so no flags).
        min_class: positives and negatives a level needs for its within-level AUROC.

    Returns:
        ``{attribute: {"model", "score_predicts_attribute", "within_level", "attribute_predicts_label",
        "not_measured", "flags"}}``.

    >>> y = np.array([0, 1] * 20); view = np.where(y == 1, "AP", "PA")
    >>> out = confounder_check(y, y + 0.1 * np.arange(40) % 1, {"view": view}, n_boot=100)
    >>> out["view"]["attribute_predicts_label"]["auroc"], [f["check"] for f in out["view"]["flags"]]
    (1.0, ['attribute_predicts_label'])
    """
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    patient = np.arange(len(y)) if cluster is None else np.asarray(cluster)
    boot = _Boot(len(y), cluster, n_boot, seed, level)
    model = boot.auroc(y, score)
    out: dict[str, dict[str, Any]] = {}
    for attr, lab in attributes.items():
        lab = np.asarray(lab, dtype=object).astype(str)
        keep = np.flatnonzero(lab != missing)
        levels = sorted(set(lab[keep].tolist()))
        entry: dict[str, Any] = {"model": model, "levels": levels, "not_measured": [], "flags": []}
        if len(levels) < 2:
            entry["not_measured"].append(
                f"{attr} has {len(levels)} level(s) among the rows with a value: nothing to compare"
            )
            entry.update(score_predicts_attribute=None, within_level={}, attribute_predicts_label=None)
            out[attr] = entry
            continue
        sub = boot.subset(keep)
        yk, sk, lk = y[keep], score[keep], lab[keep]
        entry["score_predicts_attribute"] = _score_predicts(sub, sk, lk, levels)
        entry["within_level"] = _within(sub, yk, sk, lk, levels, min_class)
        entry["attribute_predicts_label"] = _attribute_alone(sub, yk, lk, patient[keep], seed)
        entry["not_measured"] += [f"within {attr} '{lv}': {b['note']}" for lv, b in entry["within_level"].items()
                                  if not b["measured"]]  # fmt: skip
        if len(keep) < len(y):
            entry["not_measured"].append(f"{len(y) - len(keep)} row(s) with no {attr} left out of this check")
        if n_boot == 0:
            entry["not_measured"].append("no bootstrap (n_boot=0): no CIs, so nothing is flagged")
        entry["flags"] = _flags(attr, model, entry)
        out[attr] = entry
    return out


def confounder_rows(check: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per attribute and figure (the rows of ``confounders.csv``): ``figure`` is
    ``score predicts attribute`` (per level), ``model within level`` or ``attribute predicts finding``.

    >>> y = np.array([0, 1] * 20)
    >>> rows = confounder_rows(confounder_check(y, y * 0.5, {"view": np.where(y == 1, "AP", "PA")}, n_boot=0))
    >>> [(r["figure"], r["level"], r["auroc"]) for r in rows][:2]
    [('score predicts attribute', 'AP', 1.0), ('model within level', 'AP', None)]
    """
    rows = []
    for attr, entry in check.items():
        flagged = {(f["check"], f.get("level")) for f in entry.get("flags", [])}
        a = entry.get("score_predicts_attribute") or {}
        parts = [
            ("score predicts attribute", "score_predicts_attribute", lv, e) for lv, e in (a.get("levels") or {}).items()
        ]
        parts += [
            ("model within level", "within_level_collapse", lv, e)
            for lv, e in (entry.get("within_level") or {}).items()
        ]
        if entry.get("attribute_predicts_label"):
            parts.append(
                ("attribute predicts finding", "attribute_predicts_label", None, entry["attribute_predicts_label"])
            )
        for figure, check_name, level, e in parts:
            ci = e.get("ci") or [None, None]
            key = (check_name, level if check_name != "attribute_predicts_label" else None)
            rows.append({"attribute": attr, "figure": figure, "level": level, "n": e.get("n"), "n_pos": e.get("n_pos"),
                         "auroc": e.get("auroc"), "ci_low": ci[0], "ci_high": ci[1], "flagged": key in flagged,
                         "note": e.get("note") or ""})  # fmt: skip
    return rows
