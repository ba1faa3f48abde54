"""The shortcut check (medtl.explain.anatomy) and the energy-based pointing game, on synthetic
images whose anatomy is known from how they were drawn."""

import numpy as np
import pytest
from skimage.draw import ellipse

from medtl.explain.anatomy import (
    BODY_RULE,
    SHORTCUT_RULE,
    SHORTCUT_THRESHOLD,
    anatomy_share,
    body_mask,
    outside_anatomy,
    summarize_shares,
)
from medtl.explain.localization import energy_pointing

SHAPE = (128, 128)
MARKER = (slice(4, 12), slice(108, 116))  # a burned-in "L" marker, in the corner, outside the body


def _body_reference():
    ref = np.zeros(SHAPE, bool)
    ref[ellipse(64, 64, 48, 36, shape=SHAPE)] = True
    return ref


def _lungs():
    lungs = np.zeros(SHAPE, bool)
    lungs[ellipse(60, 50, 24, 9, shape=SHAPE)] = True
    lungs[ellipse(60, 78, 24, 9, shape=SHAPE)] = True
    return lungs


def _radiograph():
    rng = np.random.default_rng(0)
    image = np.full(SHAPE, 0.05)
    image[_body_reference()] = 0.75
    image[_lungs()] = 0.12  # darker than the body, as dark as air nearly: a hole in the threshold
    image[MARKER] = 1.0
    image += rng.normal(0, 0.02, SHAPE)
    return np.clip(image, 0, 1)


def test_body_mask_is_the_drawn_ellipse_with_its_lungs_and_without_the_marker():
    image = _radiograph()
    mask = body_mask(image)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert np.array_equal(mask, _body_reference())
    assert mask[_lungs()].all() and not mask[MARKER].any()


def test_map_on_the_marker_is_marked_and_map_on_the_lungs_is_not():
    image = _radiograph()
    mask = body_mask(image)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    blob = np.exp(-((rows - 8) ** 2 + (cols - 112) ** 2) / (2 * 6.0**2))  # centred on the marker
    inside, area = anatomy_share(blob, mask)
    assert inside == pytest.approx(blob[_body_reference()].sum() / blob.sum())
    assert inside < SHORTCUT_THRESHOLD and outside_anatomy(inside)
    assert area == pytest.approx(mask.mean()) and area == pytest.approx(_body_reference().mean())

    on_lungs = np.where(_lungs(), 1.0, 0.0) - 0.3 * (~_lungs())  # negative outside: carries no mass
    inside, _ = anatomy_share(on_lungs, mask)
    assert inside == pytest.approx(1.0) and not outside_anatomy(inside)


def test_an_even_map_scores_the_area_share():
    mask = body_mask(_radiograph())
    inside, area = anatomy_share(np.ones(SHAPE), mask)
    assert inside == pytest.approx(area) == pytest.approx(mask.mean())


def test_body_mask_3d_sphere_with_a_cavity():
    grid = np.indices((40, 40, 40)) - 20
    r = np.sqrt((grid**2).sum(0))
    sphere = r <= 18  # a fifth of the volume or more: a body, not a lesion
    volume = np.full(sphere.shape, 0.05)
    volume[sphere] = 0.8
    volume[r <= 6] = 0.1  # an enclosed cavity, dark as air
    volume[2:5, 2:5, 2:5] = 1.0  # a bright object apart from the body
    mask = body_mask(volume)
    assert mask.shape == volume.shape and np.array_equal(mask, sphere)
    smap = np.zeros(volume.shape)
    smap[20, 20, 20], smap[3, 3, 3] = 1.0, 3.0
    assert anatomy_share(smap, mask) == (0.25, pytest.approx(sphere.mean()))


def test_constant_image_is_all_anatomy():
    mask = body_mask(np.full((16, 16), 0.3))
    assert mask.all()
    assert anatomy_share(np.random.default_rng(1).random((16, 16)), mask) == (pytest.approx(1.0), 1.0)


def test_empty_map_and_bad_input():
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert anatomy_share(np.zeros((4, 4)), mask) == (None, 0.5)
    assert anatomy_share(-np.ones((4, 4)), mask) == (None, 0.5)
    assert not outside_anatomy(None)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 4\)"):
        anatomy_share(np.zeros((4, 5)), mask)
    with pytest.raises(ValueError):
        body_mask(np.zeros(5))


def test_rules_are_plain_sentences():
    assert "Otsu" in BODY_RULE and "largest connected region" in BODY_RULE and "holes filled" in BODY_RULE
    assert SHORTCUT_RULE == "marked when less than half of the map's mass lies inside the anatomy"
    assert SHORTCUT_THRESHOLD == 0.5


def _shares(n=60, seed=3):
    rng = np.random.default_rng(seed)
    return rng.beta(3, 2, n)


def test_summarize_shares_against_numpy():
    values = _shares()
    inside = list(values) + [None, None]
    patients = [f"p{i}" for i in range(len(inside))]
    out = summarize_shares(inside, patients, n_boot=300)
    assert out["median_inside"] == pytest.approx(float(np.median(values)))
    assert out["marked_share"] == pytest.approx(float((values < 0.5).mean()))
    assert (out["n"], out["n_empty"], out["n_patients"]) == (60, 2, 60)
    assert out["rule"] == SHORTCUT_RULE
    lo, hi = out["median_ci"]
    assert lo < out["median_inside"] < hi
    lo, hi = out["marked_ci"]
    assert lo < out["marked_share"] < hi
    assert summarize_shares(inside, patients, n_boot=300) == out  # seeded: the same every time


def test_weighted_median_of_each_resample_is_the_median_of_the_repeated_sample():
    from medtl.evaluate.bootstrap import cluster_codes, resample_weights
    from medtl.explain.anatomy import _weighted_medians

    values = _shares(17)
    codes, k = cluster_codes([i // 3 for i in range(17)], 17)  # patients of three images, the last of two
    _, w = next(resample_weights(codes, k, n_boot=50, seed=4))
    expected = [np.median(np.repeat(values, w[:, j].astype(int))) for j in range(w.shape[1])]
    assert np.allclose(_weighted_medians(values, w), expected)


def test_patients_clustering_is_what_the_ci_resamples():
    values = np.repeat(_shares(20, seed=5), 5)  # 20 patients, five images each, alike within a patient
    per_image = summarize_shares(values, list(range(100)), n_boot=400)
    per_patient = summarize_shares(values, [i // 5 for i in range(100)], n_boot=400)
    assert (per_image["n"], per_image["n_patients"]) == (100, 100)
    assert (per_patient["n"], per_patient["n_patients"]) == (100, 20)
    assert per_patient["median_inside"] == per_image["median_inside"]
    width = {name: out["median_ci"][1] - out["median_ci"][0] for name, out in
             [("image", per_image), ("patient", per_patient)]}  # fmt: skip
    assert width["patient"] > width["image"]  # correlated images are not independent evidence


def test_summarize_shares_without_usable_values():
    out = summarize_shares([None, float("nan")], ["a", "b"], n_boot=50)
    assert out["median_inside"] is None and out["median_ci"] is None
    assert out["marked_share"] is None and out["marked_ci"] is None
    assert (out["n"], out["n_empty"], out["n_patients"]) == (0, 2, 0)
    with pytest.raises(ValueError):
        summarize_shares([0.5, 0.6], ["a"])


def test_energy_pointing_by_hand():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    smap = np.zeros((5, 5))
    smap[2, 2], smap[1, 3], smap[0, 0], smap[4, 4], smap[4, 0] = 4.0, 2.0, 1.0, 3.0, -6.0
    assert energy_pointing(smap, mask) == pytest.approx((4 + 2) / (4 + 2 + 1 + 3))
    assert energy_pointing(np.zeros((5, 5)), mask) is None
    assert energy_pointing(smap, mask) == anatomy_share(smap, mask)[0]


def test_an_image_without_a_body_counts_whole():
    """Noise has no background to leave out, and a small bright disc alone is a lesion, not a body:
    in both cases all of the image is anatomy, so a map on the disc is never called a shortcut."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0.5, 0.1, (64, 64)).clip(0, 1)
    assert body_mask(noise).all()
    lesion = noise.copy()
    lesion[28:36, 28:36] = 1.0
    assert body_mask(lesion).all()
    smap = np.zeros((64, 64))
    smap[30, 30] = 1.0
    assert not outside_anatomy(anatomy_share(smap, body_mask(lesion))[0])
