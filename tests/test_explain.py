"""medtl explain: attribution axioms, geometry of maps, sanity checks, localization, faithfulness,
and the workflow on runs written by `medtl train` (2D and 3D)."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from lesion_factory import AFFINE, write_lesion_set

from medtl.cli import main
from medtl.data.transforms import PreprocessSpec, black_input, preprocess_with_affine
from medtl.errors import ConfigError
from medtl.explain import METHODS, Explainer, Settings, explain, saliency
from medtl.explain.faithfulness import auc, deletion_curve, random_deletion_curve
from medtl.explain.grid import peak_index, resample
from medtl.explain.localization import iou, pointing_hit, summarize
from medtl.explain.methods import LogOdds, integrated_gradients, log_odds
from medtl.explain.sanity import cascade, sanity_check
from medtl.io import Image
from medtl.models import create
from medtl.tasks import probabilities


def _small(dims: int = 2, classes: int = 2):
    torch.manual_seed(0)
    return create("resnet10", None, in_channels=1, num_classes=classes, spatial_dims=dims).eval()


# ----------------------------------------------------------------------------- methods
def test_integrated_gradients_are_complete():
    """Attributions sum to f(x) − f(baseline) of the explained log-odds (Sundararajan et al.)."""
    model = _small()
    f = LogOdds(model, "binary")
    torch.manual_seed(1)
    x = torch.randn(1, 1, 24, 24)
    base = torch.full_like(x, -1.0)
    attr, delta = integrated_gradients(f, x, 1, base, steps=64)
    with torch.no_grad():
        gap = float(f(x)[0, 1] - f(base)[0, 1])
    assert abs(float(attr.sum()) - gap) <= 0.02 * abs(gap) + 1e-4
    assert delta < 0.02 * abs(gap) + 1e-4


def test_log_odds_turn_back_into_the_task_probabilities():
    z = torch.randn(5, 4)
    lo = log_odds(z, "multiclass")
    assert torch.allclose(torch.sigmoid(lo), probabilities(z, "multiclass"), atol=1e-6)
    assert torch.allclose(torch.sigmoid(log_odds(z, "multilabel")), probabilities(z, "multilabel"))


@pytest.mark.parametrize("dims,size", [(2, (20, 24)), (3, (12, 16, 14))])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_finite_non_negative_map_of_the_input_shape(method, dims, size):
    model = _small(dims)
    torch.manual_seed(2)
    x = torch.randn(1, 1, *size)
    quick = Settings(ig_steps=8, smoothgrad_samples=4, occlusion_window=0.25)
    smap = saliency(model, x, 1, method, task="binary", flips=(dims - 1,), baseline=torch.full((1, 1) + (1,) * dims, -1.0),
                    settings=quick)  # fmt: skip
    assert tuple(smap.shape) == size
    assert torch.isfinite(smap).all() and float(smap.min()) >= 0.0
    flat = saliency(model, torch.zeros(1, 1, *size), 0, method, task="binary", settings=quick)  # constant: no crash
    assert torch.isfinite(flat).all()
    assert model.training is False


def test_unknown_method_and_bad_input_shape_are_errors():
    model = _small()
    with pytest.raises(ConfigError, match="unknown saliency method 'gradcm'.*methods: gradcam, gradcam\\+\\+, ig"):
        saliency(model, torch.zeros(1, 1, 8, 8), 0, "gradcm", task="binary")
    with pytest.raises(ValueError, match="one input"):
        saliency(model, torch.zeros(2, 1, 8, 8), 0, "gradcam", task="binary")


def test_the_gradcam_layer_is_the_last_feature_map_of_every_backbone():
    from medtl.models.registry import BACKBONES

    def cam_input(model) -> tuple[int, ...]:
        seen = {}
        hook = model.cam_layer().register_forward_hook(lambda m, inp, out: seen.update(shape=tuple(inp[0].shape)))
        model.eval()(torch.zeros(1, 1, 64, 64))
        hook.remove()
        return seen["shape"]

    for name in BACKBONES:
        model = create(name, None, in_channels=1, num_classes=2)
        assert cam_input(model) == (1, model.num_features, 2, 2), name  # the last map, 1/32 of the input


# ----------------------------------------------------------------------------- geometry
def _bright_voxel_image(shape, index, affine) -> Image:
    arr = np.zeros(shape, np.float32)
    arr[tuple(index)] = 1000.0
    return Image(arr, affine)


def test_network_input_affine_locates_voxels_in_world_mm_3d():
    img = _bright_voxel_image((20, 16, 12), (5, 9, 4), AFFINE)
    spec = PreprocessSpec(preset="none", spacing=(1.5, 1.0, 2.0), size=(10, 14, 18))
    x, affine = preprocess_with_affine(img, spec)
    peak = np.unravel_index(int(np.argmax(x[0])), x[0].shape)
    assert np.allclose((affine @ [*peak, 1])[:3], img.world((5, 9, 4)), atol=1e-6)
    # the map resampled back onto the scan peaks on the same voxel
    back = resample(x[0], affine, img.spatial_shape, img.affine, order=1)
    assert peak_index(back) == (5, 9, 4)


def test_network_input_affine_locates_pixels_in_world_mm_2d():
    affine = np.diag([0.7, 0.5, 1.0, 1.0])
    affine[:3, 3] = [-30.0, 12.0, 5.0]
    img = _bright_voxel_image((40, 30), (16, 21), affine)  # 40 columns, 30 rows
    x, net_affine = preprocess_with_affine(img, PreprocessSpec(preset="none", size=(60, 80)))
    assert x.shape == (1, 60, 80)  # rows, columns: each pixel became a 2 × 2 block
    rows, cols = np.nonzero(x[0] > 0.5 * x[0].max())
    centre = net_affine @ [rows.mean(), cols.mean(), 0, 1]
    assert np.allclose(centre[:3], img.world((16, 21)), atol=0.3)


def test_black_input_is_the_network_input_of_a_black_image():
    spec = PreprocessSpec(preset="none", size=(4, 4), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), input_channels=3)
    x, _ = preprocess_with_affine(Image(np.zeros((3, 6, 6), np.float32), np.eye(4), {"channel_axis": 0}), spec)
    assert np.allclose(x, black_input(spec))


# ----------------------------------------------------------------------------- checks
def test_localization_scores_and_patient_intervals():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    smap = np.zeros((10, 10))
    smap[3, 3] = 1.0
    assert pointing_hit(smap, mask) and not pointing_hit(np.roll(smap, 5, axis=0), mask)
    assert not pointing_hit(np.zeros((10, 10)), mask)  # no maximum, no hit
    smap[2:4, 2:4] = 0.9
    smap[3, 3] = 1.0
    assert iou(smap, mask)[0] == 1.0
    assert iou(smap, mask, 0.95)[0] == 0.25
    out = summarize([1, 1, 0, 0, 1, 1], ["a", "a", "b", "b", "c", "c"], n_boot=300)
    assert out["n_patients"] == 3 and out["value"] == pytest.approx(2 / 3)
    assert out["ci"][0] <= out["value"] <= out["ci"][1]
    assert set(np.round(np.linspace(0, 1, 4), 6)) >= {round(v, 6) for v in out["ci"]}  # whole patients move


def test_deletion_ranks_a_faithful_map_below_random_order():
    weights = np.linspace(0, 1, 64).reshape(1, 8, 8)

    def prob(batch):
        return 1 / (1 + np.exp(-((batch * weights).reshape(len(batch), -1).sum(1) - 10)))

    x = np.ones((1, 8, 8))
    faithful = auc(deletion_curve(prob, x, weights[0], np.zeros_like(x), steps=8))
    backwards = auc(deletion_curve(prob, x, -weights[0], np.zeros_like(x), steps=8))
    reference = auc(random_deletion_curve(prob, x, np.zeros_like(x), steps=8, repeats=4))
    assert faithful < reference < backwards


def test_cascade_randomizes_every_parameter_from_the_head_down():
    model = _small()
    with torch.no_grad():  # as after training: no parameter at its initial value
        for p in model.parameters():
            p.add_(0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = []
    for name, scrambled in cascade(model):
        names.append(name)
        last = scrambled
    assert names[0] == "head" and names[-1] == "stem" and len(names) == len(model.param_groups())
    changed = [k for k, v in last.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    weights = [k for k, _ in last.named_parameters()]
    assert set(weights) <= set(changed)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the run's model is untouched


def test_target_rules_binary_multiclass_multilabel():
    ex = object.__new__(Explainer)
    ex.labels, ex.threshold = ["label=0", "label=1"], 0.7
    ex.task = "binary"
    # a binary run's map is of the finding on every case: a negative shows how little evidence there is
    assert ex.predicted_targets(np.array([0.35, 0.65]))[0] == [1]  # decided negative (threshold 0.7)
    assert ex.predicted_targets(np.array([0.9, 0.1]))[0] == [1]
    assert ex.parse_target("label=1") == 1 and ex.parse_target("1") == 1
    with pytest.raises(ConfigError, match="unknown target 'label=3'; the run's outputs are label=0, label=1"):
        ex.parse_target("label=3")
    ex.labels, ex.task = ["effusion", "edema", "mass"], "multilabel"
    assert ex.predicted_targets(np.array([0.6, 0.1, 0.9]))[0] == [0, 2]
    targets, rule = ex.predicted_targets(np.array([0.1, 0.3, 0.2]))
    assert targets == [1] and "most probable" in rule
    assert ex.labelled_targets((1.0, 0.0, 1.0)) == [0, 2]


# ----------------------------------------------------------------------------- runs from medtl train
def _train(tmp_path_factory, name: str, dims: int, size: int, n: int, epochs: int, radius: int, backbone: str):
    folder = tmp_path_factory.mktemp(name)
    manifest = write_lesion_set(folder / "data", n=n, size=size, dims=dims, radius=radius, seed=dims)
    run = folder / "run"
    pretrained = "imagenet" if backbone == "efficientnet-lite0" else "null"
    args = ["train", "-o", str(run), "--set", f"manifest={manifest}", "--set", f"backbone={backbone}",
            "--set", f"pretrained={pretrained}", "--set", "preset=mr", "--set", f"size={[size] * dims}",
            "--set", f"spatial_dims={dims}", "--set", f"epochs={epochs}", "--set", "batch_size=16",
            "--set", "val_fraction=0.25", "--set", "test_fraction=0.25", "--set", "augment=false",
            "--set", "patience=50", "--set", "dedup=false"]  # fmt: skip
    if dims == 3:  # the saliency check is scored on the 2D run (a 3D one costs minutes)
        args += ["--set", "spacing=null", "--set", "saliency_check=0"]
    assert main(args) == 0
    return run, manifest


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    return _train(tmp_path_factory, "lesion2d", dims=2, size=64, n=48, epochs=5, radius=6,
                  backbone="efficientnet-lite0")  # the default backbone, ImageNet weights


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    return _train(tmp_path_factory, "lesion3d", dims=3, size=20, n=48, epochs=8, radius=3, backbone="resnet10")


def _disc_images(n: int, rng, size: int = 128, radius: int = 14):
    """Noise, two dim decoy discs, and for odd items a bright lesion disc; masks of the lesions."""
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for i in range(n):
        img = rng.normal(0, 0.3, (size, size)).astype(np.float32)
        for _ in range(2):
            c = rng.integers(radius, size - radius, 2)
            img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= (radius + 4) ** 2] += 0.8
        mask = np.zeros((size, size), bool)
        if i % 2:
            c = rng.integers(radius + 1, size - radius - 1, 2)
            mask = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= radius**2
            img[mask] += 3.0
        images.append(img)
        masks.append(mask)
    return torch.from_numpy(np.stack(images))[:, None], np.stack(masks), torch.arange(n) % 2


def test_gradcam_of_a_briefly_trained_model_points_at_the_lesion_and_a_random_one_does_not():
    rng = np.random.default_rng(0)
    x, _, y = _disc_images(160, rng)
    torch.manual_seed(0)
    model = create("resnet10", None, in_channels=1, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(x), (16,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, masks, yt = _disc_images(40, rng)
    with torch.no_grad():
        assert float((model(xt).argmax(1) == yt).float().mean()) >= 0.9
    positives = [i for i in range(len(yt)) if yt[i] == 1]

    def hits(net) -> float:
        return float(np.mean([pointing_hit(saliency(net, xt[i : i + 1], 1, "gradcam", task="binary").numpy(), masks[i])
                              for i in positives]))  # fmt: skip

    chance = float(masks[positives].mean())  # the lesion's share of the image: about 4 %
    trained = hits(model)
    *_, (_, scrambled) = list(cascade(model))
    assert trained > 5 * chance
    assert hits(scrambled) < trained - 0.15

    def gradcam(net, xx, t):
        return saliency(net, xx, t, "gradcam", task="binary").numpy()

    assert sanity_check(gradcam, model, [xt[i : i + 1] for i in positives[:6]], [1] * 6)["passed"]

    def edges(net, xx, t):  # the image's own edges: what a map that ignores the model shows
        return np.abs(np.gradient(xx[0, 0].numpy())[0])

    assert not sanity_check(edges, model, [xt[i : i + 1] for i in positives[:3]], [1] * 3)["passed"]


def test_the_run_chose_its_default_map_by_evidence(run2d, tmp_path):
    """`medtl train` scored the candidates on validation: the lesion masks decide among the methods
    that passed randomization and faithfulness, and `auto` is the one chosen."""
    run, manifest = run2d
    choice = json.loads((run / "saliency.json").read_text())
    chosen = choice["candidates"][choice["method"]]
    assert chosen["eligible"] and chosen["passed_randomization"] and chosen["deletion_gain"] > 0
    assert all(not c["eligible"] for c in choice["candidates"].values() if not c["passed_randomization"])
    assert choice["n_masked"] >= 5 and "pointing game" in choice["why"]
    assert chosen["pointing_game"] == max(c["pointing_game"] for c in choice["candidates"].values() if c["eligible"])
    result = explain(run, [manifest], tmp_path / "e", methods="auto", split="test", n_boot=50, deletion_samples=0)
    assert result["methods"] == [choice["method"]]
    loc = result["localization"][choice["method"]]
    assert loc["pointing_game"]["value"] >= 0.7 and 0 < loc["energy_pointing"]["value"] <= 1
    assert result["anatomy"][choice["method"]]["n"] == 12  # every test image's map of the finding
    nifti = nib.load(tmp_path / "e" / result["maps"][0]["nifti"])
    assert nifti.shape[:2] == (64, 64)  # stored on the network's grid, with its affine


def test_explain_on_a_2d_run_from_medtl_train(run2d, tmp_path):
    run, manifest = run2d
    out = tmp_path / "explain"
    result = explain(run, [manifest], out, methods="gradcam,ig", sanity=True, sanity_samples=4, n_boot=200,
                     deletion_samples=4, settings=Settings(ig_steps=8))  # fmt: skip
    loc = result["localization"]["ig"]
    assert loc["pointing_game"]["n"] == 24 and loc["pointing_game"]["ci"] is not None
    assert loc["pointing_game"]["value"] > 0.5  # the lesion covers about 3 % of the image
    assert set(result["sanity"]) == {"gradcam", "ig"} and result["faithfulness"]["ig"]["n"] >= 4
    assert any("gradcam reads a feature map of only 2x2 cells" in n for n in result["notes"])
    for rec in result["maps"]:  # every output of a method says whether it passed
        assert rec["sanity"] == ("passed" if result["sanity"][rec["method"]]["passed"] else "failed")
        assert (out / rec["map"]).read_bytes()[:4] == b"\x89PNG"
    assert len(result["inputs"]) == 48 and {"probabilities", "targets"} <= set(result["inputs"][0])
    text = (out / "explain.json").read_text()
    assert str(tmp_path) not in text and str(manifest.parent) not in text  # no absolute paths
    assert (out / "sanity.png").is_file() and (out / "deletion.png").is_file()


def test_a_3d_map_read_back_with_nibabel_peaks_on_the_lesion_in_world_mm(run3d, tmp_path):
    import csv

    run, manifest = run3d
    out = tmp_path / "explain3d"
    result = explain(run, [manifest], out, methods="ig,occlusion", target=1, n_boot=100, deletion_samples=4)
    with open(manifest) as fh:
        rows = {row["path"]: row for row in csv.DictReader(fh)}
    inside, agree = [], []
    for rec in result["maps"]:
        row = rows[rec["input"]]
        assert (out / rec["map"]).read_bytes()[:4] == b"\x89PNG"
        if rec["method"] != "ig" or row["label"] != "1":
            continue
        nii = nib.load(out / rec["nifti"])  # the network's grid, with its affine: a viewer overlays it in mm
        data = np.asarray(nii.dataobj)
        peak = np.unravel_index(int(np.argmax(data)), data.shape)
        world = (nii.affine @ [*peak, 1])[:3]
        mask = np.asarray(nib.load(manifest.parent / row["mask"]).dataobj)
        voxel = np.round(np.linalg.inv(AFFINE) @ [*world, 1])[:3].astype(int)  # the scan's voxel at that point
        inside.append(bool(mask[tuple(np.clip(voxel, 0, np.array(mask.shape) - 1))]))
        centre = np.array([float(row[k]) for k in ("x_mm", "y_mm", "z_mm")])
        agree.append(np.linalg.norm(np.array(rec["peak_mm"]) - world) <= 2.0 and np.linalg.norm(world - centre) <= 6.5)
    assert len(inside) == 24
    assert np.mean(inside) >= 0.8 and np.mean(agree) >= 0.8
    assert result["localization"]["ig"]["pointing_game"]["value"] >= 0.8


def test_bad_inputs_are_listed_and_the_rest_is_explained(run2d, run3d, tmp_path, capsys):
    run, manifest = run2d
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    volume = manifest.parent / "images" / "case000.nii.gz"
    vol3d = run3d[1].parent / "images" / "case000.nii.gz"
    out = tmp_path / "out"
    code = main(["explain", str(run), str(volume), str(vol3d), str(text), str(tmp_path / "missing.dcm"), "-o", str(out),
                 "--method", "gradcam", "--method", "ig"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 map(s) of 1 of 3 input(s)" in printed and "3 input(s) could not be explained" in printed
    errors = (out / "errors.csv").read_text()
    assert "the run takes 2D images; this one is 3D" in errors and "missing.dcm,no such file" in errors
    assert "notes.txt" in errors and str(tmp_path) not in errors
    assert main(["explain", str(run), str(volume), "-o", str(out), "--method", "gradcampp"]) == 1
    assert "unknown saliency method 'gradcampp'" in capsys.readouterr().err
    # the folder holds explain output now: a second run needs --overwrite, then replaces it
    assert main(["explain", str(run), str(volume), "-o", str(out)]) == 1
    assert main(["explain", str(run), str(volume), "-o", str(out), "--overwrite"]) == 0
    assert json.loads((out / "explain.json").read_text())["errors"] == 0


def test_nifti_maps_are_byte_identical_between_runs():
    from medtl.explain.run import nifti_bytes

    a = nifti_bytes(np.arange(24, dtype=np.float32).reshape(2, 3, 4), AFFINE)
    assert a == nifti_bytes(np.arange(24, dtype=np.float32).reshape(2, 3, 4), AFFINE)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(a))
    assert np.allclose(img.affine, AFFINE) and int(img.header["sform_code"]) == 1


def test_every_method_runs_on_2d_and_3d_runs_from_medtl_train(run2d, run3d, tmp_path):
    quick = Settings(ig_steps=4, smoothgrad_samples=2, batch_size=8)
    for (run, manifest), dims in ((run2d, 2), (run3d, 3)):
        images = sorted((manifest.parent / "images").glob("*.nii.gz"))[:2]
        result = explain(run, images, tmp_path / f"all{dims}", methods="all", settings=quick, deletion_samples=1,
                         deletion_steps=4)  # fmt: skip
        assert [m["method"] for m in result["maps"]] == list(METHODS) * 2
        assert all(m["map"].endswith(".png") and m["nifti"].endswith(".nii.gz") for m in result["maps"])
        assert set(result["faithfulness"]) == set(METHODS)


def test_a_missing_mask_is_a_note_and_a_csv_without_labels_is_explained(run2d, tmp_path):
    run, manifest = run2d
    csv_path = manifest.parent / "edited.csv"
    csv_path.write_text("path,patient_id,label,mask\nimages/case001.nii.gz,P1,1,masks/gone.nii.gz\n")
    result = explain(run, [csv_path], tmp_path / "a", deletion_samples=0)
    assert result["n_explained"] == 1 and "localization" not in result
    assert result["notes"][-1] == "images/case001.nii.gz: mask not used (gone.nii.gz: no such file or folder)"
    unlabelled = manifest.parent / "paths.csv"
    unlabelled.write_text("path\nimages/case000.nii.gz\nimages/case001.nii.gz\n")
    assert explain(run, [unlabelled], tmp_path / "b", deletion_samples=0)["n_explained"] == 2


def test_a_method_whose_trained_maps_are_empty_does_not_pass_the_sanity_check():
    model = _small()
    x = torch.randn(1, 1, 16, 16)
    check = sanity_check(lambda net, xx, t: np.zeros((16, 16)), model, [x, x], [1, 1])
    assert check["passed"] is False and "empty on all 2 sampled inputs" in check["note"]
