"""No direct identifier survives reading: not in meta, not anywhere in the object."""

import pickle

import numpy as np
from dicom_factory import FAKE_PHI, base_dataset, set_pixels, write_series

from medtl.io import load_image
from medtl.io.phi import AGE_CAP, age_from_dates, parse_age, pseudonym


def _assert_no_phi(blob: bytes, extra=()):
    for value in list(FAKE_PHI.values()) + list(extra):
        assert value.encode() not in blob, f"identifier {value!r} leaked"
        assert value.split("^")[0].encode() not in blob


def test_loaded_image_holds_no_identifiers(tmp_path):
    s = write_series(str(tmp_path / "s"), n=3)
    img = load_image(tmp_path / "s")
    blob = pickle.dumps(img) + repr(img).encode() + repr(img.meta).encode()
    _assert_no_phi(blob, extra=[s.series_uid, "1.2.826.0.1.3680043.8.498.1", "20200102", "19500101"])
    assert img.meta["sex"] == "F" and img.meta["age"] == 61
    assert img.meta["series"] == pseudonym(s.series_uid, "series")
    assert len(img.meta["patient"]) == 16 and img.meta["patient"] != FAKE_PHI["PatientID"]


def test_age_is_capped_and_derived_from_dates(tmp_path):
    ds = base_dataset("DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    ds.PatientAge = "097Y"
    set_pixels(ds, np.zeros((4, 4)), signed=False)
    ds.save_as(tmp_path / "old", enforce_file_format=True)
    assert load_image(tmp_path / "old").meta["age"] == AGE_CAP
    del ds.PatientAge  # fall back to birth date and study date, without keeping either
    ds.save_as(tmp_path / "nodate", enforce_file_format=True)
    assert load_image(tmp_path / "nodate").meta["age"] == 70  # 1950-01-01 → 2020-01-02
    assert parse_age("006M") == 0 and parse_age("045Y") == 45 and parse_age("xx") is None
    assert age_from_dates("19500103", "20200102") == 69


def test_pseudonyms_depend_on_the_salt(monkeypatch):
    a = pseudonym("MRN-1", "patient")
    monkeypatch.setenv("MEDTL_SALT", "another-site")
    assert pseudonym("MRN-1", "patient") != a
    assert pseudonym("", "patient") is None


def test_salt_file_created_once(tmp_path, monkeypatch):
    from medtl.io import phi

    monkeypatch.delenv("MEDTL_SALT")
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    first = pseudonym("x", "patient")
    salt = (tmp_path / "home" / "salt").read_text()
    assert len(salt) == 64
    phi._salt_file.cache_clear()
    assert pseudonym("x", "patient") == first


def test_no_identifying_attribute_survives_reading():
    """Each attribute medtl lists as identifying, set to a marker in a real header, is nowhere in
    what reading keeps (the list is what docs cite: this makes it true, not just a list)."""
    from pydicom.dataset import Dataset

    from medtl.io.dicom import dataset_meta
    from medtl.io.phi import IDENTIFYING_ATTRIBUTES, SAFE_ATTRIBUTES

    assert not set(IDENTIFYING_ATTRIBUTES) & set(SAFE_ATTRIBUTES)
    for keyword in IDENTIFYING_ATTRIBUTES:
        ds = Dataset()
        ds.Modality = "DX"
        marker = "20010203" if keyword.endswith("Date") else ("1.2.3.4.5.6" if keyword.endswith("UID") else "MARKERXYZ")
        setattr(ds, keyword, [marker] if keyword.startswith("Other") else marker)
        assert marker not in repr(dataset_meta(ds)), keyword
