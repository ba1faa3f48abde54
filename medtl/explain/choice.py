"""Which saliency map a clinician sees by default: chosen per run, by evidence.

Every candidate (:data:`CANDIDATES`: Grad-CAM at three layers, integrated gradients from three
baselines, occlusion) is scored on a few dozen of the run's validation images with the same
tests ``medtl explain`` reports:

* **randomization** (Adebayo et al. 2018): the map's Spearman correlation with the map of the same
  network once half of its parameter groups, from the head down, are re-initialised
  (:mod:`medtl.explain.sanity`); a map that survives that shows the image, not the model;
* **faithfulness**: the deletion curve of the target's probability, most salient pixels first,
  against a random order (:mod:`medtl.explain.faithfulness`). Deleted pixels take the image
  blurred, not black: a black fill rewards maps that merely follow brightness (the lungs of a
  radiograph are dark);
* **localization**, where the images have lesion masks: the pointing game (CheXlocalize's
  protocol, on the network grid here) and its energy version.

:data:`RULE` turns them into one choice, written to ``RUN/saliency.json`` (:func:`choose_default`,
run by ``medtl train`` when a run finishes) with every candidate's figures, the reason, and the
run-level shortcut figure (:mod:`medtl.explain.anatomy`) of the chosen method. ``medtl predict
--saliency auto`` and the report read it back (:func:`read_choice`).

>>> evidence = {"gradcam": dict(randomization_spearman=0.9, deletion_gain=0.20, grid=[16, 16]),
...             "ig": dict(randomization_spearman=0.1, deletion_gain=0.12, grid=[64, 64]),
...             "occlusion": dict(randomization_spearman=0.2, deletion_gain=0.08, grid=[64, 64])}
>>> choose(evidence)[0]
'ig'
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MedtlError

__all__ = ["CANDIDATES", "RULE", "CHOICE_FILE", "choose", "gather_evidence", "choose_default", "read_choice",
           "resolve", "Sample"]  # fmt: skip

CANDIDATES = ("gradcam", "gradcam@1/16", "gradcam@1/8", "ig", "ig@blur", "ig@mean", "occlusion")
CHOICE_FILE = "saliency.json"
SCHEMA = "medtl.saliency-choice/1"
IMAGES = 16
SANITY_IMAGES = 8
DELETION_STEPS = 16
MIN_CELLS = 8  # a Grad-CAM grid coarser than 8 cells per axis cannot point at a lesion
MIN_MASKED = 5  # localization decides only on at least this many masked images
SANITY_LIMIT = 0.5
RULE = ("a candidate is excluded when its map still correlates (Spearman >= 0.5) with the map of the network "
        "half re-initialised (randomization check), when deleting its most salient pixels first lowers the "
        "finding's probability no faster than a random order (faithfulness), or, for Grad-CAM, when its feature "
        f"map has fewer than {MIN_CELLS} cells per axis; of the rest, the highest pointing game wins where at least "
        f"{MIN_MASKED} images have a lesion mask, else the largest deletion gain (random minus ordered deletion "
        "area)")  # fmt: skip


@dataclass
class Sample:
    """The images a choice is made on: network inputs, the output each map explains, a lesion
    mask on the network grid (or ``None``), an anatomy mask (or ``None``: derived) and patients."""

    xs: list[torch.Tensor] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    anatomy: list[np.ndarray | None] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    #: whether the image's labels say the explained finding is present
    labelled: list[bool] = field(default_factory=list)


def _excluded(name: str, e: dict[str, Any]) -> str | None:
    rho = e.get("randomization_spearman")
    if rho is None or rho >= SANITY_LIMIT:
        return ("failed the randomization check (its maps were empty)" if rho is None else
                f"failed the randomization check (Spearman {rho:.2f} >= {SANITY_LIMIT})")  # fmt: skip
    gain = e.get("deletion_gain")
    if gain is None or gain <= 0:
        return "not faithful: deleting its most salient pixels first is no faster than a random order"
    if name.startswith("gradcam") and min(e.get("grid") or [0]) < MIN_CELLS:
        return f"its feature map is only {'x'.join(map(str, e['grid']))} cells: too coarse to point"
    return None


def choose(evidence: dict[str, dict[str, Any]], *, masked: int = 0) -> tuple[str | None, str]:
    """``(method, why)`` from each candidate's evidence by :data:`RULE`; ``(None, why)`` when every
    candidate is excluded. ``masked`` is the number of sampled images with a lesion mask."""
    eligible = {}
    for name, e in evidence.items():
        e["excluded_because"] = _excluded(name, e)
        e["eligible"] = e["excluded_because"] is None
        if e["eligible"]:
            eligible[name] = e
    if not eligible:
        return None, "no candidate passed both the randomization and the faithfulness check"
    by_pointing = masked >= MIN_MASKED and any(e.get("pointing_game") is not None for e in eligible.values())
    if by_pointing:
        best = max(eligible, key=lambda n: (eligible[n].get("pointing_game") or 0.0, eligible[n]["deletion_gain"]))
        e = eligible[best]
        why = (f"highest pointing game on {masked} validation images with lesion masks ({e['pointing_game']:.2f}) "
               f"among the {len(eligible)} of {len(evidence)} candidates that passed the randomization "
               f"(Spearman {e['randomization_spearman']:.2f}) and faithfulness checks")  # fmt: skip
    else:
        best = max(eligible, key=lambda n: eligible[n]["deletion_gain"])
        e = eligible[best]
        why = (f"most faithful of the {len(eligible)} of {len(evidence)} candidates that passed the randomization "
               f"check: deleting its most salient pixels lowers the finding's probability fastest (gain "
               f"{e['deletion_gain']:.3f} over a random order; Spearman after randomization "
               f"{e['randomization_spearman']:.2f})")  # fmt: skip
    return best, why


def _scrambled(model, seed: int):
    """The model with half of its parameter groups (rounded up), from the head down, re-initialised:
    the step :data:`medtl.explain.sanity.RULE` reads."""
    from .sanity import cascade

    steps = len(model.param_groups())
    for k, (_, scrambled) in enumerate(cascade(model, seed)):
        if k == math.ceil(steps / 2) - 1:
            return scrambled
    raise AssertionError("bug: the cascade ended early")


def _deletion(explainer, x, target, smap, fill: np.ndarray, random_seed: int | None = None) -> np.ndarray:
    """The deletion curve of ``smap`` (or of one random order, seeded), pixels replaced by ``fill``."""
    from .faithfulness import deletion_curve, random_deletion_curve

    def prob(batch: np.ndarray) -> np.ndarray:
        return explainer.probabilities(batch)[:, target]

    kw = dict(steps=DELETION_STEPS, batch_size=explainer.settings.batch_size)
    if random_seed is not None:
        return random_deletion_curve(prob, x[0].numpy(), fill, repeats=1, seed=random_seed, **kw)
    return deletion_curve(prob, x[0].numpy(), smap, fill, **kw)


def gather_evidence(explainer, sample: Sample, candidates=CANDIDATES, *, seed: int = 0, bar=None) -> dict[str, dict]:
    """Each candidate's figures on ``sample``: randomization Spearman (mean), deletion AUCs and gain,
    pointing game and energy pointing (masked images), the anatomy shares of its maps, the grid."""
    from .anatomy import anatomy_share, body_mask
    from .faithfulness import auc
    from .localization import energy_pointing, pointing_hit
    from .methods import make_baseline
    from .sanity import similarity

    scrambled = _scrambled(explainer.model, seed)
    fills = [make_baseline(x, "blur", explainer.baseline)[0].numpy() for x in sample.xs]
    random_auc = [auc(_deletion(explainer, x, t, None, f, seed + k))
                  for k, (x, t, f) in enumerate(zip(sample.xs, sample.targets, fills, strict=True))]  # fmt: skip
    anatomy = [a if a is not None else body_mask(explainer.unnormalised(x)) for x, a in zip(sample.xs, sample.anatomy,
                                                                                         strict=True)]  # fmt: skip
    out = {}
    for name in candidates:
        rho, gains, hits, energy, inside = [], [], [], [], []
        for k, (x, t, fill, ref, mask, body) in enumerate(zip(sample.xs, sample.targets, fills, random_auc,
                                                               sample.masks, anatomy, strict=True)):  # fmt: skip
            smap = explainer.saliency(x, t, name)
            if k < SANITY_IMAGES and float(np.ptp(smap)) > 0:  # as many as `medtl explain --sanity` checks
                rho.append(similarity(smap, explainer.saliency(x, t, name, model=scrambled))[0])
            gains.append(ref - auc(_deletion(explainer, x, t, smap, fill)))
            inside.append(anatomy_share(smap, body)[0])
            if mask is not None and mask.any():
                hits.append(pointing_hit(smap, mask))
                energy.append(energy_pointing(smap, mask))
            if bar is not None:
                bar.update(1)
        out[name] = {
            "randomization_spearman": round(float(np.mean(rho)), 4) if rho else None,
            "passed_randomization": bool(rho) and float(np.mean(rho)) < SANITY_LIMIT,
            "deletion_gain": round(float(np.mean(gains)), 4), "faithful": float(np.mean(gains)) > 0,
            "pointing_game": round(float(np.mean(hits)), 4) if hits else None,
            "energy_pointing": round(float(np.mean([e for e in energy if e is not None])), 4)
            if any(e is not None for e in energy) else None,
            "grid": list(explainer.cam_grid(name)), "_inside": inside,
        }  # fmt: skip
    return out


def _targets(explainer, probs: np.ndarray, labels: tuple[float, ...]) -> int:
    """The output a sampled image's map explains: the finding for a binary run (every case, as
    predict and the report show it), the labelled finding or class where there is one, else the
    most probable."""
    if explainer.task == "binary":
        return 1
    labelled = explainer.labelled_targets(labels)
    return labelled[0] if labelled else int(np.argmax(probs))


def _sample(explainer, run_dir: Path, images: int, progress: bool) -> tuple[Sample, list[str]]:
    """Up to ``images`` readable validation images of the run (positives first where labels say so,
    so localization has masks to score), prepared as the run prepares them."""
    from ..evaluate.run import select_rows
    from ..rundir import read_config
    from .explainer import load_item
    from .run import Item, _anatomy_on_network_grid, _mask_on

    cfg = read_config(run_dir)
    source = cfg.npz or cfg.manifest
    if not source or not os.path.exists(source):
        raise ConfigError(run_dir, f"the run's data ({source or 'none recorded'}) is not there: the saliency check "
                          "reads its validation images")  # fmt: skip
    _, data, indices, notes = select_rows(run_dir, source, "val")
    positive = [i for i in indices if explainer.labelled_targets(tuple(data.records[i].labels))]
    ordered = positive[: images // 2] + [i for i in indices if i not in set(positive[: images // 2])]
    sample, skipped = Sample(), 0
    for i in ordered:
        if len(sample.xs) >= images:
            break
        rec = data.records[i]
        try:
            img = load_item(rec.path, rec.series)
            x, affine = explainer.prepare(img)
            mask = _mask_on(img, rec.mask) if rec.mask else None
        except MedtlError:
            skipped += 1
            continue
        sample.xs.append(x)
        sample.targets.append(_targets(explainer, explainer.probabilities(x)[0], tuple(rec.labels)))
        sample.masks.append(None if mask is None else _on_network_grid(mask, img, affine, x))
        sample.anatomy.append(_anatomy_on_network_grid(Item(str(i), rec.path, anatomy=rec.anatomy), img, x, affine,
                                                       notes))  # fmt: skip
        sample.patients.append(rec.patient or str(i))
        sample.labelled.append(sample.targets[-1] in explainer.labelled_targets(tuple(rec.labels)))
    if skipped:
        notes.append(f"{skipped} validation image(s) could not be read and were left out")
    return sample, notes


def _on_network_grid(mask: np.ndarray, img, affine: np.ndarray, x: torch.Tensor) -> np.ndarray:
    from .grid import resample

    return resample(mask.astype(np.float32), img.affine, tuple(x.shape[2:]), affine, order=0) > 0.5


def choose_default(run_dir: str | os.PathLike, *, images: int = IMAGES, candidates=CANDIDATES, seed: int = 0,
                   progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Score :data:`CANDIDATES` on up to ``images`` validation images of a finished run, choose by
    :data:`RULE`, and write ``RUN/saliency.json``; returns its content.

    Cost: per image and candidate a map and a deletion curve of 17 forward passes, and for the
    first :data:`SANITY_IMAGES` a second map of the half-randomised network (docs/explain.md gives
    the seconds).

    Raises:
        ConfigError: not a finished run; its data is gone; no validation image could be read.

    Example (after ``medtl train configs/cxr-2d.yaml -o runs/cxr``, which already ran it)::

        choose_default("runs/cxr")["method"]
    """
    from ..files import adding_to
    from ..rundir import RunLock, write_json
    from .anatomy import BODY_RULE, summarize_shares
    from .explainer import Explainer

    start = time.perf_counter()
    explainer = Explainer(run_dir)
    sample, notes = _sample(explainer, explainer.run_dir, images, progress)
    if not sample.xs:
        raise ConfigError(run_dir, "none of the run's validation images could be read: the saliency check has "
                          "nothing to score")  # fmt: skip
    explainer.mean_input = torch.stack([x.mean(dim=tuple(range(2, x.dim())), keepdim=True) for x in sample.xs]).mean(0)
    bar = _bar(progress, len(candidates) * len(sample.xs))
    evidence = gather_evidence(explainer, sample, candidates, seed=seed, bar=bar)
    bar.close()
    masked = sum(m is not None and bool(m.any()) for m in sample.masks)
    method, why = choose(evidence, masked=masked)
    inside = {n: e.pop("_inside") for n, e in evidence.items()}
    record = {
        "schema": SCHEMA, "method": method, "why": why, "rule": RULE, "candidates": evidence,
        "n_images": len(sample.xs), "n_masked": masked, "split": "val", "seed": seed,
        "baseline_mean": [round(float(v), 6) for v in explainer.mean_input.reshape(-1)],
        "deletion_fill": "the image blurred (Gaussian, a tenth of the image side)", "notes": notes,
        "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    if method is not None:  # on the images with the finding: a negative's little evidence may lie anywhere
        keep = [k for k, yes in enumerate(sample.labelled) if yes] or list(range(len(sample.xs)))
        shares = summarize_shares([inside[method][k] for k in keep], [sample.patients[k] for k in keep], seed=seed)
        which = "validation images with the finding" if any(sample.labelled) else "all sampled validation images"
        suspected = shares["marked_share"] is not None and shares["marked_share"] > 0.5
        record["anatomy"] = dict(shares, body_rule=BODY_RULE, images=which, shortcut_suspected=suspected)
    with RunLock(explainer.run_dir, "saliency check"), adding_to(explainer.run_dir):
        write_json(explainer.run_dir / CHOICE_FILE, record)
    return record


def _bar(progress: bool, total: int):
    from .run import _bar as bar

    return bar(progress, total, "saliency check", "map")


def read_choice(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``RUN/saliency.json`` (:func:`choose_default`), or ``None`` for a run without one."""
    path = Path(run_dir) / CHOICE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"could not be read ({type(exc).__name__}): delete it and run "
                          "`medtl explain RUN --choose` again") from exc  # fmt: skip
    if record.get("schema") != SCHEMA:
        raise ConfigError(path, f"is not a saliency choice of this medtl (schema {record.get('schema')!r})")
    return record


def resolve(method: str, choice: dict[str, Any] | None, run_dir: str | os.PathLike = "RUN") -> tuple[str, dict]:
    """``(method, how)``: ``"auto"`` becomes the run's chosen method; ``how`` says which and why, for
    outputs to record (``{"method", "why", "source"}``). A named method is taken as given.

    Raises:
        ConfigError: ``auto`` for a run without a saliency check, or whose check found no method.

    >>> resolve("auto", {"method": "ig@blur", "why": "most faithful"})
    ('ig@blur', {'method': 'ig@blur', 'why': 'most faithful', 'source': "the run's saliency check"})
    >>> resolve("occlusion", None)[1]["source"]
    'given on the command line'
    """
    from .methods import check_methods

    if method != "auto":
        name = check_methods([method])[0]
        return name, {"method": name, "why": "named by the user", "source": "given on the command line"}
    if choice is None:
        raise ConfigError(run_dir, "has no saliency check (saliency.json) to choose a method by: run `medtl "
                          f"saliency-check {run_dir}` once, or name a method (--saliency ig)")  # fmt: skip
    if not choice.get("method"):
        raise ConfigError(run_dir, f"its saliency check found no method to trust ({choice.get('why')}; see "
                          "saliency.json): name one to draw it anyway, knowing it failed")  # fmt: skip
    return choice["method"], {"method": choice["method"], "why": choice["why"], "source": "the run's saliency check"}
