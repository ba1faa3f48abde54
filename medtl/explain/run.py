"""``explain``: saliency maps of a trained run over images, folders or a manifest, with checks.

For every readable input and every method it writes a picture (2D: the windowed image and the
overlay; 3D: three planes through the peak), the map itself as NIfTI on the image's own grid, and
one record in ``explain.json``. With ``sanity=True`` the methods are first put through cascading
randomization (:mod:`medtl.explain.sanity`) and a failed method is marked in every output that
uses it. Where the manifest has a ``mask`` column, localization (pointing game, IoU) is scored
with patient-bootstrap CIs; every map gets a deletion score (faithfulness). Inputs the run cannot
take are listed in ``errors.csv`` with the reason, and the rest go on.

>>> import inspect
>>> list(inspect.signature(explain).parameters)[:3]
['run_dir', 'inputs', 'out_dir']
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MedtlError, NoInputError
from .methods import LAYER_METHODS, Settings, check_methods, split_method

__all__ = ["explain", "Item", "collect_inputs", "render_map", "file_stem"]

SANITY_SAMPLES = 8
DELETION_STEPS = 16
DELETION_SAMPLES = 32


@dataclass
class Item:
    """One input: ``key`` is what outputs show (a relative path or a salted key), ``path`` the file."""

    key: str
    path: str
    series: str | None = None
    patient: str | None = None
    labels: tuple[float, ...] = ()
    mask: str | None = None
    anatomy: str | None = None


def _is_manifest(path: str) -> bool:
    return path.lower().endswith((".csv", ".npz")) and os.path.isfile(path)


def _manifest_items(run_dir, path: str, split: str | None, redact: bool) -> tuple[list[Item], list[str]]:
    from ..data import read_manifest
    from ..evaluate.run import select_rows, shown_path

    split = split or "all"
    try:
        _, data, indices, notes = select_rows(run_dir, path, split)
    except ConfigError as exc:
        if split != "all" or path.lower().endswith(".npz") or "no column" not in str(exc):
            raise
        # a CSV of images without the run's labels: explain them all, labels unknown
        data, notes = read_manifest(path, label_columns=[]), []
        indices = list(range(len(data)))
    items = []
    for i in indices:
        rec = data.records[i]
        items.append(Item(shown_path(data, i, redact=redact), rec.path, rec.series, rec.patient, tuple(rec.labels),
                          rec.mask, rec.anatomy))  # fmt: skip
    return items, notes


def _key(path: str, base: str, redact: bool, series: str | None = None) -> str:
    """An input as outputs name it: its path relative to the folder given (a file given alone: its
    name), or with ``redact`` the key every command gives that image
    (:func:`medtl.data.splits.image_key`), so a map joins the prediction and the verdict."""
    rel = os.path.relpath(path, base).replace(os.sep, "/")
    if redact:
        from ..data.splits import image_key

        return image_key(rel, series)
    return rel


def collect_inputs(
    run_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, split: str | None = None,
    redact_paths: bool = False, progress: bool = False,
) -> tuple[list[Item], list[dict[str, str]], list[str]]:  # fmt: skip
    """``(items, errors, notes)`` from image files, folders (every image and series in them, as
    ``medtl scan`` finds them) and manifests (``.csv`` / ``.npz``, rows of ``split``)."""
    from ..io.scan import scan

    items: list[Item] = []
    errors: list[dict[str, str]] = []
    notes: list[str] = []
    if split is not None:
        plain = [os.fspath(g) for g in inputs if not _is_manifest(os.fspath(g))]
        if plain:
            raise ConfigError(plain[0], f"--split {split} chooses rows of a manifest (.csv / .npz), and this is not "
                              "one: give the manifest, or leave out --split")  # fmt: skip
    for given in inputs:
        path = os.fspath(given)
        if _is_manifest(path):
            found, more = _manifest_items(run_dir, path, split, redact_paths)
            items.extend(found)
            notes.extend(more)
        elif os.path.isdir(path):
            base = os.path.abspath(path)  # keys relative to the folder given, as `medtl predict` makes them
            result = scan(path, progress=progress)
            if not result.rows:
                notes.append(f"{os.path.basename(base)} {result.why_empty()}")
            for row in result.rows:
                full = os.path.abspath(row["path"])
                series = row.get("series") or None
                items.append(Item(_key(full, base, redact_paths, series), full, series))
            errors.extend({"input": _key(os.path.abspath(e["path"]), base, redact_paths), "reason": e["reason"]}
                          for e in result.errors)  # fmt: skip
        elif os.path.exists(path):
            full = os.path.abspath(path)
            items.append(Item(_key(full, os.path.dirname(full), redact_paths), full))
        else:
            errors.append({"input": os.path.basename(path) or path, "reason": "no such file or folder"})
    seen: dict[str, int] = {}
    for item in items:  # two inputs of one name (a/x.dcm and b/x.dcm given as files) stay apart
        seen[item.key] = seen.get(item.key, 0) + 1
        if seen[item.key] > 1:
            item.key = f"{item.key}#{seen[item.key]}"
    return items, errors, notes


def file_stem(index: int, key: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key.replace("/", "__"))
    return f"{index:04d}-{safe[-80:]}"


class _Inputs:
    """Loads items lazily and keeps the first few prepared ones (the sanity sample) in memory."""

    def __init__(self, explainer, items: list[Item]):
        self.explainer, self.items = explainer, items
        self.cache: dict[int, Any] = {}
        self.failed: dict[int, str] = {}

    def get(self, i: int):
        if i in self.cache:
            return self.cache[i]
        if i in self.failed:
            return None
        from .explainer import load_item

        item = self.items[i]
        try:
            img = load_item(item.path, item.series)
            x, affine = self.explainer.prepare(img)
        except MedtlError as exc:
            self.failed[i] = _reason(exc, item)
            return None
        return img, x, affine

    def keep(self, i: int, value) -> None:
        self.cache[i] = value


def _reason(exc: MedtlError, item: Item) -> str:
    """The error without a full path (outputs name inputs by key only)."""
    return exc.reason_for(item.path, item.key)


def _mask_on(img, mask_path: str) -> np.ndarray:
    """A lesion mask on the image's grid (resampled through world mm when its grid differs)."""
    from ..io import load_image
    from .grid import resample

    mask = load_image(mask_path)
    arr = mask.array if mask.ndim == img.ndim else np.squeeze(mask.array)
    if arr.ndim != img.ndim:
        raise ConfigError(mask_path, f"the mask is {mask.ndim}D, the image {img.ndim}D")
    if arr.shape == img.spatial_shape and np.allclose(mask.affine, img.affine, atol=1e-3):
        return arr > 0.5
    return resample((arr > 0.5).astype(np.float32), mask.affine, img.spatial_shape, img.affine, order=0) > 0.5


def explain(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    methods: str | Sequence[str] = ("gradcam",),
    target: str | int | None = None,
    split: str | None = None,
    sanity: bool = False,
    sanity_samples: int = SANITY_SAMPLES,
    batch_size: int = 16,
    iou_threshold: str | float = "otsu",
    deletion_steps: int = DELETION_STEPS,
    deletion_samples: int = DELETION_SAMPLES,
    n_boot: int = 1000,
    seed: int = 0,
    redact_paths: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Explain a run's predictions on ``inputs`` and write the maps and ``explain.json`` to ``out_dir``.

    Args:
        run_dir: a finished ``medtl train`` run; its preprocessing, flips and calibration apply.
        inputs: image files, folders, or a manifest (``.csv``; ``.npz`` in MedMNIST's layout).
        methods: any of :data:`~medtl.explain.methods.METHODS`, or ``"all"``.
        target: the output to explain (index or name); default the predicted class, and for a
            multi-label run each finding at 0.5 or above.
        split: ``all`` (default), ``train``, ``val`` or ``test`` rows of a manifest (a CSV's parts
            are the run's stored split).
        sanity: run the cascading-randomization check first on ``sanity_samples`` inputs.
        batch_size: inputs evaluated at once inside IG, SmoothGrad, occlusion and deletion.
        iou_threshold: ``"otsu"`` or a fraction of each map's maximum.
        deletion_steps, deletion_samples: the deletion curve's steps, and the number of inputs
            (the first readable ones) whose maps get one (each costs ``2 × (steps + 1)`` forward
            passes); ``0`` skips faithfulness.
        redact_paths: name inputs by a salted key instead of their relative path.

    Returns:
        The content of ``explain.json``: ``maps`` (one record per input, method and target),
        ``inputs`` (calibrated probabilities), ``sanity``, ``localization``, ``faithfulness``,
        ``errors`` and the settings.

    Raises:
        ConfigError: not a run, an unknown method or target; ``split`` with an input that is not
            a manifest.
        NoInputError: the inputs hold no image, or none could be explained (the output is left
            unfinished, with the reasons in ``errors.csv``).
        OutputError: ``out_dir`` breaks the output rule (:func:`medtl.outputs.output_folder`):
            it is, holds or sits inside an input or the run, sits inside other medtl output,
            holds files medtl did not write, or other output (without ``overwrite``).
        WriteError: a write failed (a full disk); the output is left unfinished.

    Example (after ``medtl train configs/cxr-2d.yaml -o runs/cxr``)::

        result = explain("runs/cxr", ["sample_data/cxr.csv"], "out/explain", split="test",
                         methods="gradcam,ig", sanity=True)
        result["sanity"]["ig"]["passed"], result["localization"]["ig"]["pointing_game"]["value"]
    """
    from ..data.manifest import image_folders
    from ..outputs import check_destination, check_not_reading
    from ..rundir import mark_complete, output_folder, weights_digest, write_csv, write_json
    from .explainer import Explainer

    auto_notes: list[str] = []
    names = check_methods(_auto(methods, run_dir, auto_notes))
    for key, value, least in (("batch_size", batch_size, 1), ("sanity_samples", sanity_samples, 1),
                              ("deletion_steps", deletion_steps, 2), ("deletion_samples", deletion_samples, 0),
                              ("n_boot", n_boot, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(None, f"{key} must be a whole number of at least {least}, not {value!r}")
    settings = settings or Settings(batch_size=batch_size, seed=seed)
    explainer = Explainer(run_dir, settings)
    wanted = explainer.parse_target(target) if target is not None else None
    if iou_threshold != "otsu" and not (isinstance(iou_threshold, (int, float)) and 0 < float(iou_threshold) < 1):
        raise ConfigError(None, f"iou_threshold must be 'otsu' or a fraction of the map maximum in (0, 1), "
                          f"not {iou_threshold!r}")  # fmt: skip
    read = [run_dir, *inputs, *(f for given in inputs for f in image_folders(given))]
    check_destination(out_dir, inputs=read)  # before the inputs are read, not after
    items, errors, notes = collect_inputs(run_dir, inputs, split=split, redact_paths=redact_paths, progress=progress)
    notes = auto_notes + notes
    if not items:  # what each folder held and skipped, else why each file failed
        why = "; ".join(notes[:3] or [f"{e['input']}: {e['reason']}" for e in errors[:3]]) or "no image found"
        raise NoInputError(None, f"the inputs hold no image to explain: {why}")
    check_not_reading(out_dir, [it.path for it in items])  # a link in an input folder that leads into the output
    with output_folder(out_dir, "explain", inputs=read, overwrite=overwrite) as out:
        for m in (m for m in names if split_method(m)[0] in LAYER_METHODS):
            grid = explainer.cam_grid(m)
            if min(grid) < 8:
                notes.append(f"{m} reads a feature map of only {'x'.join(map(str, grid))} cells at the run's input "
                             f"size {'x'.join(map(str, explainer.spec.size))}: its maps cannot point finer than one "
                             "cell (gradcam@1/8 reads an earlier stage; ig and occlusion work at the input's "
                             "resolution)")  # fmt: skip
        pool = _Inputs(explainer, items)
        sanity_result = {}
        if sanity:
            sanity_result = _sanity(explainer, pool, names, wanted, sanity_samples, seed, progress)
            from .render import sanity_png

            png = sanity_png(sanity_result) if sanity_result else None
            if png is not None:
                from ..rundir import write_bytes

                write_bytes(out / "sanity.png", png)
        bar = _bar(progress, len(items) * len(names))
        records, inputs_out, loc_rows, deletion = [], [], [], {m: [] for m in names}
        (out / "maps").mkdir(exist_ok=True)
        for i, item in enumerate(items):
            loaded = pool.get(i)
            if loaded is None:
                errors.append({"input": item.key, "reason": pool.failed[i]})
                bar.update(len(names))
                continue
            pool.cache.pop(i, None)
            img, x, affine = loaded
            probs = explainer.probabilities(x)[0]
            targets, rule = ([wanted], "requested") if wanted is not None else explainer.predicted_targets(probs)
            mask = None
            if item.mask:
                try:
                    mask = _mask_on(img, item.mask)
                except MedtlError as exc:
                    notes.append(f"{item.key}: mask not used ({_reason(exc, item)})")
            anatomy = _anatomy_on_network_grid(item, img, x, affine, notes)
            lesion_targets = explainer.labelled_targets(item.labels) if mask is not None and mask.any() else []
            if wanted is not None:
                lesion_targets = [t for t in lesion_targets if t == wanted]
            all_targets = list(dict.fromkeys(targets + lesion_targets))
            inputs_out.append({"input": item.key, "probabilities": {explainer.target_name(j): round(float(p), 6)
                               for j, p in enumerate(probs)}, "targets": [explainer.target_name(t) for t in targets],
                               "target_rule": rule})  # fmt: skip
            display = explainer.display(img) if explainer.spatial_dims == 2 else None  # 3D: drawn from x
            for method in names:
                for t in all_targets:
                    steps = deletion_steps if len(inputs_out) <= deletion_samples else 0
                    rec = render_map(explainer, out, i, item, img, x, affine, display, method, t, probs,
                                     sanity_result.get(method), steps, seed, anatomy)  # fmt: skip
                    rec["explained_because"] = "predicted" if t in targets else "labelled lesion (localization)"
                    if "_curve" in rec:
                        deletion[method].append((rec.pop("_curve"), rec.pop("_random")))
                    if t in lesion_targets:
                        smap = rec.pop("_input_grid")
                        from .localization import energy_pointing, iou, pointing_hit

                        rec["pointing_hit"] = pointing_hit(smap, mask)
                        rec["iou"] = round(iou(smap, mask, iou_threshold)[0], 4)
                        rec["energy_pointing"] = energy_pointing(smap, mask)
                        loc_rows.append((method, item.patient or item.key, rec["pointing_hit"], rec["iou"],
                                         rec["energy_pointing"]))  # fmt: skip
                    rec.pop("_input_grid", None)
                    records.append(rec)
                bar.update(1)
        bar.close()
        result = {
            "run": Path(run_dir).resolve().name, "run_weights": weights_digest(run_dir), "task": explainer.task,
            "labels": [str(n) for n in explainer.labels],
            "methods": names, "settings": _settings_record(explainer, settings, iou_threshold, deletion_steps,
                                                                  deletion_samples),
            "n_inputs": len(items), "n_explained": len(inputs_out), "notes": notes,
            "default_method": _default_method(explainer),
            "inputs": inputs_out, "maps": records, "errors": len(errors),
        }  # fmt: skip
        if sanity:
            result["sanity"] = sanity_result
        result["faithfulness"] = _faithfulness(deletion, records)
        if any(d for d in deletion.values()):
            from ..rundir import write_bytes
            from .render import deletion_png

            curves = {m: (np.mean([c for c, _ in d], 0), np.mean([r for _, r in d], 0)) for m, d in deletion.items() if d}
            write_bytes(out / "deletion.png", deletion_png(curves))
        if loc_rows:
            result["localization"] = _localization(loc_rows, names, iou_threshold, n_boot, seed)
        result["anatomy"] = _anatomy(records, items, names, n_boot, seed)
        write_csv(out / "errors.csv", errors, columns=["input", "reason"])
        if not inputs_out:
            raise NoInputError(None, f"none of the {len(items)} input(s) could be explained: the reason for each is "
                               f"in {out / 'errors.csv'}; the output is left unfinished")  # fmt: skip
        write_json(out / "explain.json", result)
        mark_complete(out, "explain")
    return result


def _default_method(explainer) -> dict[str, Any] | None:
    """The run's saliency check in brief (``RUN/saliency.json``): what ``auto`` means, and why."""
    c = explainer.choice
    return None if c is None else {"method": c.get("method"), "why": c.get("why"), "n_images": c.get("n_images")}


#: What ``auto`` explains with for a run without a saliency check (trained before step 13, or with
#: ``saliency_check: 0``): the method the lesion benchmark's check chose (docs/benchmarks.md).
FALLBACK = "ig@blur"


def _auto(methods: str | Sequence[str], run_dir, notes: list[str]) -> list[str]:
    """``auto`` among the methods becomes the run's chosen one (:func:`medtl.explain.choice.resolve`);
    a run without a check gets :data:`FALLBACK`, and ``notes`` say so."""
    from .choice import read_choice, resolve

    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    if "auto" not in names:
        return names
    choice = read_choice(run_dir)
    if choice is None:
        notes.append(f"the run has no saliency check (saliency.json): 'auto' is {FALLBACK}, the method medtl's "
                     f"lesion benchmark chose; `medtl saliency-check {run_dir}` chooses by this run's own evidence")
        return [FALLBACK if m == "auto" else m for m in names]
    return [resolve(m, choice, run_dir)[0] if m == "auto" else m for m in names]


def _bar(progress: bool, total: int, desc: str = "explain", unit: str = "map"):
    """A bar on a terminal, lines in a log, nothing without ``progress`` (:mod:`medtl.progress`)."""
    from ..progress import progress_bar

    return progress_bar(total, desc, unit, enabled=progress)


def _sanity(explainer, pool: _Inputs, names, wanted, samples: int, seed: int, progress: bool):
    """Cascading randomization on the first ``samples`` readable inputs, per method."""
    from .sanity import sanity_check

    chosen, targets = [], []
    for i in range(len(pool.items)):
        if len(chosen) >= samples:
            break
        loaded = pool.get(i)
        if loaded is None:
            continue
        pool.keep(i, loaded)
        x = loaded[1]
        chosen.append(x)
        targets.append(wanted if wanted is not None else explainer.predicted_targets(explainer.probabilities(x)[0])[0][0])
    if not chosen:
        return {}
    steps = len(explainer.model.param_groups())
    sbar = _bar(progress, steps * len(names), "sanity check", "step")
    out = {}
    for method in names:
        def map_fn(model, x, t, method=method):
            return explainer.saliency(x, t, method, model=model)

        out[method] = sanity_check(map_fn, explainer.model, chosen, targets, seed=seed, progress=lambda: sbar.update(1))
    sbar.close()
    return out


def render_map(explainer, out: Path, index: int, item: Item, img, x, affine, display, method: str, target: int,
               probs, sanity: dict | None, deletion_steps: int = 0, seed: int = 0,
               anatomy: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """One map of ``item`` written under ``out/maps/`` (a PNG overlay, and the map as NIfTI on the
    network's grid, with its affine) and its record: file names, peak in mm and its value, the
    share of the map inside the anatomy (``anatomy``, on the network grid; default the body
    :func:`medtl.explain.anatomy.body_mask` finds), seconds, and the deletion curve when
    ``deletion_steps``. ``x``/``affine`` come from :meth:`Explainer.prepare`, ``display`` from
    :meth:`Explainer.display`, ``probs`` are the input's calibrated probabilities."""
    from ..rundir import write_bytes
    from .anatomy import body_mask
    from .grid import peak_index, resample, world
    from .render import display_order, overlay_png, planes_png

    start = time.perf_counter()
    smap = explainer.saliency(x, target, method)
    seconds = time.perf_counter() - start
    status = "not checked" if sanity is None else ("passed" if sanity["passed"] else "failed")
    name = explainer.target_name(target)
    p = float(probs[target])
    title = f"{method} · {name} · P = {p:.2f} (calibrated)"
    if status == "failed":
        title += " · FAILED sanity check: do not trust"
    stem = file_stem(index, item.key) + f".{method.replace('+', 'p')}.{_safe(name)}"
    peak = peak_index(smap)
    on_input = resample(smap, affine, img.spatial_shape, img.affine, order=1)
    rec: dict[str, Any] = {"input": item.key, "method": method, "target": name, "target_index": int(target),
                           "probability": round(p, 6), "sanity": status}  # fmt: skip
    if explainer.spatial_dims == 2:
        aspect = img.spacing[1] / img.spacing[0] if img.spacing[0] > 0 else 1.0
        png = overlay_png(display_order(display), display_order(on_input), title, aspect=aspect)
    else:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        png = planes_png(explainer.unnormalised(x), smap, peak, spacing, title)
    write_bytes(out / "maps" / f"{stem}.png", png)
    # the map itself on the network's grid with that grid's affine: a viewer overlays it on the scan
    # through world mm, a report resamples it; the image's own grid would be hundreds of times larger
    write_bytes(out / "maps" / f"{stem}.nii.gz", nifti_bytes(smap, affine))
    rec["map"] = f"maps/{stem}.png"
    rec["nifti"] = f"maps/{stem}.nii.gz"
    rec["peak_mm"] = world(affine, peak) if peak is not None else None
    rec["peak_value"] = round(float(smap.max()), 6)
    rec.update(anatomy_record(smap, anatomy if anatomy is not None else body_mask(explainer.unnormalised(x))))
    rec["seconds"] = round(seconds, 3)
    rec["_input_grid"] = on_input
    if deletion_steps:
        d = explainer.deletion(x, target, smap, deletion_steps, seed)
        rec["deletion_auc"], rec["random_deletion_auc"] = round(d["auc"], 4), round(d["random_auc"], 4)
        rec["_curve"], rec["_random"] = d["curve"], d["random"]
    return rec


def anatomy_record(smap: np.ndarray, anatomy: np.ndarray) -> dict[str, Any]:
    """The shortcut check of one map: the share of its mass inside ``anatomy`` (same grid), the
    share of the image the anatomy covers, and whether the map is marked
    (:func:`medtl.explain.anatomy.outside_anatomy`).

    >>> m = np.zeros((4, 4)); m[0, 0] = 1.0
    >>> anatomy_record(m, np.ones((4, 4), bool))
    {'anatomy_inside': 1.0, 'anatomy_area': 1.0, 'shortcut': False}
    """
    from .anatomy import anatomy_share, outside_anatomy

    inside, area = anatomy_share(smap, anatomy)
    return {"anatomy_inside": None if inside is None else round(inside, 4), "anatomy_area": round(area, 4),
            "shortcut": outside_anatomy(inside)}  # fmt: skip


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file of ``array`` with ``affine`` as qform and sform (scanner, mm): it
    opens over the scan it came from in 3D Slicer or ITK-SNAP. Byte-identical for equal input.

    >>> import gzip, nibabel as nib
    >>> data = nifti_bytes(np.ones((2, 3, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    >>> img.shape, [float(v) for v in img.header.get_zooms()]
    ((2, 3, 4), [2.0, 2.0, 3.0])
    """
    import gzip

    import nibabel as nib

    nii = nib.Nifti1Image(np.asarray(array, np.float32), affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nii.header.set_xyzt_units("mm")
    return gzip.compress(nii.to_bytes(), mtime=0)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:40]


def _settings_record(explainer, s: Settings, iou_threshold, deletion_steps: int, deletion_samples: int) -> dict[str, Any]:
    from .sanity import RULE

    base = explainer.baseline.reshape(-1).tolist()
    return {
        "explained_output": "log-odds of the target's probability (softmax: z_t - logsumexp of the others; "
                            "multi-label: the finding's logit)",
        "baseline": f"the network input of an all-black image (per channel {[round(v, 4) for v in base]}); used by "
                    "ig, occlusion and deletion",
        "flips": list(explainer.flips), "calibration": explainer.calibration.get("method", "temperature"),
        "gradcam_layer": explainer.model.spec.cam_layer, "ig_steps": s.ig_steps,
        "smoothgrad": {"samples": s.smoothgrad_samples, "noise": s.smoothgrad_noise},
        "occlusion_window": s.occlusion_window, "batch_size": s.batch_size,
        "sanity_rule": RULE, "iou_threshold": iou_threshold if iou_threshold == "otsu" else float(iou_threshold),
        "localization_grid": "the image's own grid (maps upsampled to it), as CheXlocalize",
        "deletion_steps": deletion_steps, "deletion_samples": deletion_samples, "deletion_reference": "one random voxel order per map (seeded), averaged over maps",
    }  # fmt: skip


def _faithfulness(deletion: dict[str, list], records: list[dict]) -> dict[str, Any]:
    out = {}
    for method, pairs in deletion.items():
        if not pairs:
            continue
        ours = np.array([r["deletion_auc"] for r in records if r["method"] == method and "deletion_auc" in r])
        ref = np.array([r["random_deletion_auc"] for r in records if r["method"] == method and "deletion_auc" in r])
        out[method] = {
            "deletion_auc": round(float(ours.mean()), 4), "random_auc": round(float(ref.mean()), 4),
            "difference": round(float((ref - ours).mean()), 4),
            "below_random": round(float((ours < ref).mean()), 4), "n": int(ours.size),
            "faithful": bool(ours.mean() < ref.mean()),
            "rule": "faithful when the mean deletion AUC is below that of random deletion orders",
        }  # fmt: skip
    return out


def _localization(rows, names, iou_threshold, n_boot: int, seed: int) -> dict[str, Any]:
    from .localization import summarize

    out = {}
    for method in names:
        mine = [r for r in rows if r[0] == method]
        if not mine:
            continue
        patients = [r[1] for r in mine]
        out[method] = {
            "pointing_game": summarize([float(r[2]) for r in mine], patients, n_boot=n_boot, seed=seed),
            "iou": summarize([r[3] for r in mine], patients, n_boot=n_boot, seed=seed),
            "energy_pointing": summarize([r[4] for r in mine if r[4] is not None],
                                         [r[1] for r in mine if r[4] is not None], n_boot=n_boot, seed=seed),
            "threshold": iou_threshold,
        }
    return out


def _anatomy(records: list[dict], items: list[Item], names, n_boot: int, seed: int) -> dict[str, Any]:
    """Per method, the run-level shortcut figures of the maps explained for prediction (not those
    drawn only to score a lesion): median share inside the anatomy and share of maps marked."""
    from .anatomy import BODY_RULE, summarize_shares

    patient = {it.key: it.patient or it.key for it in items}
    out: dict[str, Any] = {"body_rule": BODY_RULE}
    for method in names:
        mine = [r for r in records if r["method"] == method and r.get("explained_because") == "predicted"]
        if mine:
            out[method] = summarize_shares([r.get("anatomy_inside") for r in mine],
                                           [patient.get(r["input"], r["input"]) for r in mine], n_boot=n_boot,
                                           seed=seed)  # fmt: skip
    return out


def _anatomy_on_network_grid(item: Item, img, x, affine, notes: list[str]) -> np.ndarray | None:
    """The row's anatomy mask on the network grid, or ``None`` (the body is found in the image)."""
    if not item.anatomy:
        return None
    from .grid import resample

    try:
        mask = _mask_on(img, item.anatomy)
    except MedtlError as exc:
        notes.append(f"{item.key}: anatomy mask not used ({_reason(exc, item)})")
        return None
    return resample(mask.astype(np.float32), img.affine, tuple(x.shape[2:]), affine, order=0) > 0.5
