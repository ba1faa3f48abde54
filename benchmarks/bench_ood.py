#!/usr/bin/env python
"""How well a run's out-of-distribution flag (``medtl.predict.ood``) tells foreign images from its own.

A run is trained as a user trains one, on the (non-official, class-balanced) PneumoniaMNIST subset,
the in-distribution data:

    medtl train configs/medmnist-npz.yaml -o WORKDIR/run --restart \\
        --set npz=DATA/medmnist/pneumoniamnist_balanced_subset_NONOFFICIAL.npz \\
        --set size=[64,64] --set epochs=EPOCHS

(``--run`` reuses a finished run instead). Every image below then goes through the run's own
:class:`medtl.predict.Predictor` (``prepare`` → ``outputs``: preprocessing, flip-averaged logits and
pooled embeddings), as ``medtl predict`` would see it:

* **in distribution**: the npz's train (fit), val (threshold, variant choice) and test images
  (false-alarm rate, with a 95% Wilson interval), built as ``medtl.data.npz.load_npz_item`` builds them;
* **foreign sets**, each reported on its own: BreastMNIST test (ultrasound); the middle axial slice
  of AdrenalMNIST3D test volumes (CT-derived masks); real clinical DICOM files (CT, MR, US, CR, NM ...
  from pydicom's bundled test files and ``DATA/dicom/pydicom_data/data_store/data``; synthetic
  patterns, segmentations, RT dose and non-image objects are left out, near-identical re-encodings
  of one image are kept once, a multi-frame file gives its middle frame); natural photographs from
  ``skimage.data`` (each whole and as 3 fixed crops, saved as PNG and read with
  ``medtl.io.load_image``); "scanner look" shifts of the in-distribution test images (inverted
  polarity, Gaussian noise with sd 0.2 of the range, Gaussian blur sigma 2 px at 28 px, gamma 3);
  uniform random noise images.

Variants compared: the run's stored ``ood.npz``; ``fit_ood`` refitted on the run's own train
features (threshold on val) with ``normalise=False`` and ``normalise=True``; and the maximum-softmax
baseline (score 1 - max calibrated probability, threshold at the 99% quantile of val). Each foreign
set is split in two halves with a fixed seed (grouped by source image where one image gives several
inputs): the *selection* half (scored against the in-distribution val images) chooses the variant,
by the highest mean AUROC over the foreign sets; the *report* half (against the test images) gives
the numbers in the main table. Sets larger than ``--max-per-set`` (300) are subsampled with the seed.

    .venv/bin/python benchmarks/bench_ood.py [--data-dir /work/shared/data] [--run RUN_DIR] \\
        [--workdir /tmp/bench-ood] [--epochs 4] > ood.md

The markdown report goes to stdout, progress to stderr. If the in-distribution file is absent the
script says so and exits 0; an absent foreign source is skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

PNEUMONIA = "medmnist/pneumoniamnist_balanced_subset_NONOFFICIAL.npz"
BREAST = "medmnist/breastmnist.npz"
ADRENAL = "medmnist/adrenalmnist3d.npz"
DICOM_STORE = "dicom/pydicom_data/data_store/data"
#: DICOM modalities counted as clinical images; the rest (OT, SEG, RTDOSE, none) are left out.
CLINICAL = {"CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "IO", "PX"}
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "retina", "rocket", "moon", "coins", "clock",
          "hubble_deep_field", "brick", "grass", "gravel", "page", "text")  # fmt: skip
VARIANTS = ("stored", "refit, normalise=False", "refit, normalise=True", "max softmax")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- images


def npz_image(arr: np.ndarray):
    """An :class:`~medtl.io.Image` of one stored 2D npz array (H, W), exactly as
    ``load_npz_item`` builds a grey one (the meta records the stored dtype's full scale)."""
    from medtl.io import Image
    from medtl.io.colour import full_scale

    meta = {"source_format": "npz", "geometry": "none", "flags": ["spacing_unknown"],
            "full_scale": full_scale(arr.dtype), "colour": "gray"}  # fmt: skip
    return Image(arr.astype(np.float32).T, np.eye(4), meta)


def shifted(images: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 28, 28) in-distribution images with a 'scanner look' change, still uint8."""
    from scipy.ndimage import gaussian_filter

    x = images.astype(np.float64) / 255.0
    if kind == "inverted":
        y = 1.0 - x
    elif kind == "noise":
        y = x + rng.normal(0.0, 0.2, x.shape)
    elif kind == "blur":
        y = np.stack([gaussian_filter(im, sigma=2.0) for im in x])
    elif kind == "gamma":
        y = x**3.0
    else:
        raise ValueError(kind)
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def middle_frame(img):
    """A 2D image of a 3D one: its middle slice (last spatial axis), geometry kept."""
    from medtl.io import Image

    if img.ndim == 2:
        return img
    return Image(img.array[..., img.array.shape[-1] // 2], img.affine, dict(img.meta))


def dicom_images(data_dir: Path) -> tuple[list, list[str], list[str]]:
    """``(images, names, notes)`` of the clinical DICOM files that load."""
    import pydicom.data

    from medtl.io import load_image

    # only files already on disk: get_testdata_file would try to download the others
    bundled = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    files = sorted(bundled.glob("*.dcm"))
    store = data_dir / DICOM_STORE
    if store.is_dir():
        files += sorted(store.glob("*.dcm"))
    else:
        log(f"{store} is absent: only pydicom's bundled files")
    images, names, failed, excluded = [], [], [], []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = load_image(f)
        except Exception as exc:  # noqa: BLE001 - report any reader failure and go on
            failed.append(f"{f.name} ({type(exc).__name__})")
            continue
        modality = str(img.meta.get("modality") or "none")
        if modality not in CLINICAL or min(img.spatial_shape[:2]) < 16:
            excluded.append(f"{f.name} ({modality})")
            continue
        images.append(middle_frame(img))
        names.append(f"{f.name} ({modality})")
    notes = [f"DICOM failed to load ({len(failed)}): " + ", ".join(failed),
             f"DICOM left out as not clinical images or under 16 px ({len(excluded)}): " + ", ".join(excluded)]  # fmt: skip
    return images, names, notes


def photo_images(workdir: Path, seed: int) -> tuple[list, list[str], list[int]]:
    """``(images, names, groups)``: skimage photographs whole and as 3 crops, via PNG files."""
    from PIL import Image as PILImage
    from skimage import data as skdata

    from medtl.io import load_image

    rng = np.random.default_rng(seed)
    folder = workdir / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    images, names, groups = [], [], []
    for g, name in enumerate(PHOTOS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = np.asarray(getattr(skdata, name)())
        except Exception as exc:  # noqa: BLE001 - a photo that needs a download is skipped
            log(f"skimage.data.{name} unavailable ({type(exc).__name__})")
            continue
        h, w = arr.shape[:2]
        views = [arr]
        for _ in range(3):
            ch, cw = int(h * rng.uniform(0.4, 0.7)), int(w * rng.uniform(0.4, 0.7))
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            views.append(arr[top : top + ch, left : left + cw])
        for k, view in enumerate(views):
            path = folder / f"{name}_{k}.png"
            PILImage.fromarray(np.ascontiguousarray(view)).save(path)
            images.append(load_image(path))
            names.append(path.name)
            groups.append(g)
    return images, names, groups


# ---------------------------------------------------------------------------------- numbers


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def auroc(inside: np.ndarray, foreign: np.ndarray) -> float:
    """AUROC of the score for foreign (positive) against in-distribution (negative) images;
    infinite scores are ranked above every finite one."""
    from sklearn.metrics import roc_auc_score

    s = np.concatenate([inside, foreign]).astype(np.float64)
    finite = s[np.isfinite(s)]
    top = (finite.max() if finite.size else 0.0) + 1.0
    s = np.where(np.isposinf(s), top, s)
    y = np.r_[np.zeros(len(inside)), np.ones(len(foreign))]
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def halves(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (selection, report) splitting the groups in two with a fixed seed."""
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(unique)
    chosen = set(order[: (len(order) + 1) // 2].tolist())
    sel = np.array([g in chosen for g in groups])
    return sel, ~sel


def paired_bootstrap(scored: dict, foreign: dict, seed: int, pair: tuple[str, str], reps: int = 200) -> np.ndarray:
    """Mean-over-sets selection AUROC of ``pair[0]`` minus ``pair[1]``, over ``reps`` resamples
    (with replacement, the same indices for both variants) of the val images and of each foreign
    set's selection half."""
    rng = np.random.default_rng(seed + 1)
    n_val = len(scored[("in-val", pair[0])])
    sel = {f: np.flatnonzero(halves(d["groups"], seed)[0]) for f, d in foreign.items()}
    out = []
    for _ in range(reps):
        iv = rng.integers(0, n_val, n_val)
        diff = []
        for f, idx in sel.items():
            jf = idx[rng.integers(0, len(idx), len(idx))]
            a, b = (auroc(scored[("in-val", v)][iv], scored[(f, v)][jf]) for v in pair)
            diff.append(a - b)
        out.append(np.nanmean(diff))
    return np.asarray(out)


def dedupe(x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Groups of near-identical network inputs (correlation > 0.99): re-encodings of one image."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    group = -np.ones(len(x), int)
    for i in range(len(x)):
        if group[i] < 0:
            same = (flat @ flat[i] > 0.99) & (group < 0)
            group[same] = i
    keep = sorted(set(group.tolist()))
    return group, keep


# ---------------------------------------------------------------------------------- main


def train_run(npz: Path, workdir: Path, epochs: int) -> tuple[Path, list[str], float]:
    run = workdir / "run"
    cmd = [sys.executable, "-m", "medtl", "train", str(REPO / "configs" / "medmnist-npz.yaml"), "-o", str(run),
           "--restart", "--set", f"npz={npz}", "--set", "size=[64,64]", "--set", f"epochs={epochs}"]  # fmt: skip
    log("training: " + " ".join(cmd[2:]))
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return run, cmd[2:], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--run", type=Path, help="a finished run trained on the pneumonia npz (else one is trained)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-ood")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-per-set", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    npz = args.data_dir / PNEUMONIA
    if not npz.is_file():
        print(f"bench_ood: the in-distribution data {npz} is absent; nothing measured (see "
              "/work/shared/data/README.md for the MedMNIST files).")  # fmt: skip
        return 0
    if args.workdir.resolve().is_relative_to(REPO):
        parser.error("--workdir must be outside the repository (the photos are written there)")
    args.workdir.mkdir(parents=True, exist_ok=True)

    import torch
    from machine import cpu_model, memory_gib, version

    from medtl.data.npz import load_npz_item
    from medtl.predict import Predictor
    from medtl.predict.ood import NORMALISE, fit_ood

    t0 = time.perf_counter()
    train_s, train_cmd = None, None
    run = args.run
    if run is None:
        run, train_cmd, train_s = train_run(npz.resolve(), args.workdir, args.epochs)
    pred = Predictor(run, device="cpu")
    if pred.ood is None:
        print(f"bench_ood: {run} holds no ood.npz (train it again or run `medtl calibrate-ood`)")
        return 1
    rng = np.random.default_rng(args.seed)
    cap = args.max_per_set

    def inputs(images) -> np.ndarray:
        return np.concatenate([pred.prepare(im)[0].numpy() for im in images]) if images else np.zeros((0,))

    def run_net(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return pred.outputs(x, batch_size=64)

    def subsample(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, cap, replace=False)) if n > cap else np.arange(n)

    # ---- in distribution
    arrays = dict(np.load(npz))
    resolved = str(npz.resolve())
    ind = {}
    for split in ("train", "val", "test"):
        n = len(arrays[f"{split}_images"])
        imgs = [load_npz_item(f"npz://{resolved}#{split}/{i}") for i in range(n)]
        logits, feats = run_net(inputs(imgs))
        ind[split] = {"logits": logits, "feats": feats, "y": arrays[f"{split}_labels"][:, 0].astype(int)}
        log(f"in-distribution {split}: {n} images")

    # ---- foreign sets: name -> (inputs, groups, note)
    foreign: dict[str, dict] = {}
    notes: list[str] = []

    def add(name: str, x: np.ndarray, groups=None, note: str = "", names=None) -> None:
        logits, feats = run_net(x)
        groups = np.arange(len(x)) if groups is None else np.asarray(groups)
        foreign[name] = {"logits": logits, "feats": feats, "groups": groups, "note": note, "names": names}
        log(f"{name}: {len(x)} images")

    if (args.data_dir / BREAST).is_file():
        b = np.load(args.data_dir / BREAST)["test_images"]
        add("BreastMNIST test (ultrasound)", inputs([npz_image(a) for a in b[subsample(len(b))]]))
    else:
        notes.append(f"skipped BreastMNIST: {args.data_dir / BREAST} is absent")
    if (args.data_dir / ADRENAL).is_file():
        v = np.load(args.data_dir / ADRENAL)["test_images"]
        v = v[subsample(len(v))]
        # stored (N, D, H, W): medtl's slice axis is D, so the middle axial slice is v[:, D // 2]
        add("AdrenalMNIST3D test, middle axial slice (CT masks)", inputs([npz_image(a) for a in v[:, v.shape[1] // 2]]))
    else:
        notes.append(f"skipped AdrenalMNIST3D: {args.data_dir / ADRENAL} is absent")

    dcm, dcm_names, dcm_notes = dicom_images(args.data_dir)
    notes += dcm_notes
    if dcm:
        x = inputs(dcm)
        _, keep = dedupe(x)
        kept_names = [dcm_names[i] for i in keep]
        notes.append(f"DICOM used ({len(keep)} distinct images of {len(dcm)} files; re-encodings kept once): "
                     + ", ".join(kept_names))  # fmt: skip
        add("real clinical DICOM (CT/MR/US/CR/NM)", x[keep], names=kept_names)
    photos, photo_names, photo_groups = photo_images(args.workdir, args.seed)
    if photos:
        add("natural photographs (skimage, PNG)", inputs(photos), photo_groups,
            note=f"{len(set(photo_groups))} photos × (whole + 3 crops)", names=photo_names)  # fmt: skip

    test_idx = subsample(len(arrays["test_images"]))
    base = arrays["test_images"][test_idx]
    labels = {"inverted": "shift: inverted polarity (MONOCHROME1 mistake)", "noise": "shift: Gaussian noise sd 0.2",
              "blur": "shift: Gaussian blur sigma 2 px", "gamma": "shift: gamma 3"}  # fmt: skip
    for kind, name in labels.items():
        add(name, inputs([npz_image(a) for a in shifted(base, kind, rng)]))
    noise = rng.integers(0, 256, size=(min(cap, 300), 28, 28), dtype=np.uint8)
    add("pure uniform noise", inputs([npz_image(a) for a in noise]))

    # ---- sanity
    every = [ind[s]["feats"] for s in ind] + [f["feats"] for f in foreign.values()]
    n_bad = sum(int((~np.isfinite(f).all(axis=1)).sum()) for f in every)
    spot = [pred.predict(load_npz_item(f"npz://{resolved}#test/{i}")).ood_score for i in range(4)]
    spot_err = float(np.max(np.abs(np.array(spot) - pred.ood.scores(ind["test"]["feats"][:4]))))

    # ---- variants: name -> (score function, threshold)
    tr, va = ind["train"], ind["val"]
    refit = {norm: fit_ood(tr["feats"], tr["y"], va["feats"], normalise=norm) for norm in (False, True)}

    def msp(logits: np.ndarray) -> np.ndarray:
        return 1.0 - pred.calibrated(logits).max(axis=1)

    msp_thr = float(np.quantile(msp(va["logits"]), 0.99))
    variants = {
        "stored": (lambda d: pred.ood.scores(d["feats"]), pred.ood.threshold),
        "refit, normalise=False": (lambda d: refit[False].scores(d["feats"]), refit[False].threshold),
        "refit, normalise=True": (lambda d: refit[True].scores(d["feats"]), refit[True].threshold),
        "max softmax": (lambda d: msp(d["logits"]), msp_thr),
    }
    agree = float(np.max(np.abs(variants["stored"][0](ind["test"]) - variants["refit, normalise=False"][0](ind["test"]))
                         / np.maximum(variants["stored"][0](ind["test"]), 1e-9)))  # fmt: skip

    results = {}  # (set, part, variant) -> (n, detection, auroc)
    scored = {}  # (set, variant) -> scores of the whole set; "in-val" for the val images
    for vname, (score, thr) in variants.items():
        scored[("in-val", vname)] = score(va)
        for fname, d in foreign.items():
            scored[(fname, vname)] = score(d)
        inside = {"val": score(va), "test": score(ind["test"])}
        results[("in", "test", vname)] = (len(inside["test"]), int((inside["test"] > thr).sum()))
        results[("in", "val", vname)] = (len(inside["val"]), int((inside["val"] > thr).sum()))
        for fname, d in foreign.items():
            s = score(d)
            sel, rep = halves(d["groups"], args.seed)
            for part, mask, ref in (("select", sel, inside["val"]), ("report", rep, inside["test"])):
                results[(fname, part, vname)] = (int(mask.sum()), float(np.mean(s[mask] > thr)), auroc(ref, s[mask]))

    boot = paired_bootstrap(scored, foreign, args.seed, ("refit, normalise=True", "refit, normalise=False"))
    mean_sel = {v: float(np.nanmean([results[(f, "select", v)][2] for f in foreign])) for v in VARIANTS}
    mean_det_sel = {v: float(np.mean([results[(f, "select", v)][1] for f in foreign])) for v in VARIANTS}
    chosen = max(VARIANTS, key=lambda v: mean_sel[v])
    norm_choice = (
        "normalise=True"
        if mean_sel["refit, normalise=True"] > mean_sel["refit, normalise=False"]
        else "normalise=False"
    )
    total_s = time.perf_counter() - t0

    # ---- report
    print("# Out-of-distribution detection benchmark (`benchmarks/bench_ood.py`)\n")
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}; CPU: {cpu_model()} × {torch.get_num_threads()} torch threads, "
          f"{memory_gib()}; torch {version('torch')}, monai {version('monai')}, scikit-learn {version('scikit-learn')}\n")  # fmt: skip
    cfg = pred.cfg
    print(f"Run: `{run}` ({cfg.backbone}, pretrained {cfg.pretrained}, size {list(cfg.size)}, epochs {cfg.epochs}, "
          f"flips {list(cfg.flips)}, tta {cfg.tta}); "
          + (f"trained here in {train_s / 60:.1f} min with `{' '.join(train_cmd)}`" if train_s else "reused")
          + f". Whole benchmark {total_s / 60:.1f} min.\n")  # fmt: skip
    st = pred.ood
    print(f"Stored statistics: normalise={st.normalise} (medtl default NORMALISE={NORMALISE}), {st.means.shape[0]} class "
          f"means × {st.means.shape[1]} features, Ledoit-Wolf shrinkage {st.shrinkage:.3f}, threshold {st.threshold:.4g} "
          f"at the {st.quantile:.0%} quantile of {st.n_threshold} val images (fit on {st.n_fit} train images). "
          f"Refit normalise=True: shrinkage {refit[True].shrinkage:.3f}, threshold {refit[True].threshold:.4g}.\n")  # fmt: skip
    print(f"Checks: non-finite feature rows {n_bad} of {sum(len(f) for f in every)}; stored vs refit normalise=False "
          f"test scores max relative difference {agree:.1e}, thresholds {st.threshold:.6g} vs "
          f"{refit[False].threshold:.6g}; `Predictor.predict(...).ood_score` vs the batched scores "
          f"on 4 test images max abs difference {spot_err:.1e}.\n")  # fmt: skip

    head = "| set | n | " + " | ".join(f"{v}: flagged / AUROC" for v in VARIANTS) + " |"
    rule = "|---|---|" + "---|" * len(VARIANTS)

    def fa_row(part: str, label: str) -> str:
        n = results[("in", part, VARIANTS[0])][0]
        cells = []
        for v in VARIANTS:
            _, k = results[("in", part, v)]
            lo, hi = wilson(k, n)
            cells.append(f"{k / n:.1%} [{lo:.1%}, {hi:.1%}] / —")
        return f"| {label} | {n} | " + " | ".join(cells) + " |"

    def set_rows(part: str) -> list[str]:
        rows = []
        for f in foreign:
            n = results[(f, part, VARIANTS[0])][0]
            cells = [f"{results[(f, part, v)][1]:.1%} / {results[(f, part, v)][2]:.3f}" for v in VARIANTS]
            rows.append(f"| {f} | {n} | " + " | ".join(cells) + " |")
        return rows

    print("## Report halves (foreign) against the in-distribution TEST images\n")
    print("Cells: share flagged at the variant's threshold / AUROC of the score, foreign vs in-distribution test.\n")
    print(head)
    print(rule)
    print(fa_row("test", "**false alarm**: pneumonia test (95% Wilson CI)"))
    print("\n".join(set_rows("report")))
    means_rep = {v: float(np.nanmean([results[(f, "report", v)][2] for f in foreign])) for v in VARIANTS}
    dets_rep = {v: float(np.mean([results[(f, "report", v)][1] for f in foreign])) for v in VARIANTS}
    print(
        "| *mean over foreign sets* | | "
        + " | ".join(f"{dets_rep[v]:.1%} / {means_rep[v]:.3f}" for v in VARIANTS)
        + " |"
    )
    print("\n## Selection halves (foreign) against the in-distribution VAL images: the choice is made here\n")
    print(head)
    print(rule)
    print(fa_row("val", "pneumonia val (threshold set here: ~1% by construction)"))
    print("\n".join(set_rows("select")))
    print(
        "| *mean over foreign sets* | | "
        + " | ".join(f"{mean_det_sel[v]:.1%} / {mean_sel[v]:.3f}" for v in VARIANTS)
        + " |"
    )
    print(f"\nChoice rule: highest mean AUROC over the foreign sets' selection halves (each set weighing the same), "
          f"against the val images. Chosen: **{chosen}**; between the two Mahalanobis refits: **{norm_choice}** "
          f"({mean_sel['refit, normalise=True']:.3f} vs {mean_sel['refit, normalise=False']:.3f}; paired bootstrap "
          f"over images, {len(boot)} resamples of val and of every selection half: difference "
          f"{np.mean(boot):+.3f}, 95% interval [{np.quantile(boot, 0.025):+.3f}, {np.quantile(boot, 0.975):+.3f}], "
          f"normalise=True ahead in {np.mean(boot > 0):.0%}).\n")  # fmt: skip
    print("Notes:\n")
    print(
        f"- sets over {cap} images subsampled with seed {args.seed}; the shifts use the same {len(test_idx)} "
        f"test images; halves split with seed {args.seed}" + " (photos grouped by source photo)."
    )
    for f, d in foreign.items():
        if d["note"]:
            print(f"- {f}: {d['note']}")
        if d["names"]:
            for v in VARIANTS[1:3]:
                missed = [n for n, s in zip(d["names"], scored[(f, v)], strict=True) if not s > variants[v][1]]
                print(
                    f"- {f}, both halves, not flagged by {v} ({len(missed)} of {len(d['names'])}): " + ", ".join(missed)
                )
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
