"""Manifests and patient-level splits."""

import math
from pathlib import Path

import pytest

from medtl.data import kfold_patients, read_manifest, split_patients
from medtl.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "labels.csv"


def test_sample_manifest_reads_with_paths_groups_and_pseudonymous_patients():
    m = read_manifest(SAMPLE)
    assert len(m) == 62 and m.task == "binary" and m.label_columns == ("label",)
    assert m.group_columns == ("sex", "age", "site")
    assert all(Path(r.path).exists() for r in m.records)  # relative to the CSV's folder
    assert not any(r.patient.startswith("MRN") for r in m.records)
    assert {r.groups["site"] for r in m.records} == {"A", "B"}


def _write(tmp_path, text, name="m.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_bad_manifests_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no column 'label'; did you mean 'labels'"):
        read_manifest(_write(tmp_path, "path,labels\na.dcm,1\n"))
    with pytest.raises(ConfigError, match="line 3: label column 'label' holds 'yes'"):
        read_manifest(_write(tmp_path, "path,label\na.dcm,1\nb.dcm,yes\n"))
    with pytest.raises(ConfigError, match="no rows"):
        read_manifest(_write(tmp_path, "path,label\n"))
    with pytest.raises(ConfigError, match="no such manifest"):
        read_manifest(tmp_path / "missing.csv")


def test_multilabel_with_unknowns(tmp_path):
    m = read_manifest(_write(tmp_path, "path,a,b\nx,1,0\ny,,1\n"), label_columns=["a", "b"])
    assert m.task == "multilabel"
    assert math.isnan(m.records[1].labels[0]) and m.records[1].labels[1] == 1.0
    assert m.records[0].patient != m.records[1].patient  # no patient column: one patient per row


def test_one_column_of_findings_joined_by_bars_is_multilabel(tmp_path):
    csv_path = _write(tmp_path, "path,label\na,Effusion|Edema\nb,No Finding\nc,edema\nd,\ne,Edema\n")
    with pytest.raises(ConfigError, match="names finding 'edema', which the model was not trained on"):
        read_manifest(csv_path, findings=["Edema", "Effusion"])  # names are case-sensitive, as in the CSV
    m = read_manifest(_write(tmp_path, "path,label\na,Effusion|Edema\nb,No Finding\nd,\ne,Edema\n"))
    assert m.label_columns == ("Edema", "Effusion") and m.task == "multilabel"  # one output per finding, sorted
    assert [r.labels for r in m.records[:2]] == [(1.0, 1.0), (0.0, 0.0)]
    assert all(math.isnan(v) for v in m.records[2].labels)  # an empty cell: nothing known
    # another CSV read for a trained model lines its findings up with the model's outputs
    other = read_manifest(_write(tmp_path, "path,label\nz,Mass\n"), findings=["Edema", "Effusion", "Mass"])
    assert other.label_columns == ("Edema", "Effusion", "Mass") and other.records[0].labels == (0.0, 0.0, 1.0)
    with pytest.raises(ConfigError, match="holds 'Edema', not a number .* joined with '[|]'"):
        read_manifest(_write(tmp_path, "path,label\na,1\nb,Edema\n"))


def _patients(m, idx):
    return {m.records[i].patient for i in idx}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_patient_crosses_splits(seed):
    m = read_manifest(SAMPLE)
    s = split_patients(m, val=0.2, test=0.2, seed=seed)
    assert sorted(s.train + s.val + s.test) == list(range(len(m)))
    assert not _patients(m, s.train) & _patients(m, s.val)
    assert not _patients(m, s.train) & _patients(m, s.test)
    assert not _patients(m, s.val) & _patients(m, s.test)
    for part in (s.val, s.test):  # stratified: both classes in every part
        assert {m.records[i].labels[0] for i in part} == {0.0, 1.0}
    assert split_patients(m, val=0.2, test=0.2, seed=seed) == s  # reproducible


def test_kfold_validates_each_item_once():
    m = read_manifest(SAMPLE)
    folds = kfold_patients(m, k=4, seed=0)
    seen = sorted(i for f in folds for i in f.val)
    assert seen == list(range(len(m)))
    for f in folds:
        assert not _patients(m, f.train) & _patients(m, f.val)


def test_class_too_small_is_a_clear_error(tmp_path):
    rows = "".join(f"img{i},0,p{i}\n" for i in range(20)) + "rare,1,px\n"
    m = read_manifest(_write(tmp_path, "path,label,patient_id\n" + rows))
    with pytest.raises(ConfigError, match="too few patients per class.*label 1: 1 patient"):
        split_patients(m)
