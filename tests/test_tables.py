"""Bad input gives one UserError naming the file, column and patient or row."""

import pandas as pd
import pytest

from patientcnn.data.cohort import load_cohort
from patientcnn.data.spec import TableSpec
from patientcnn.errors import UserError


def write(tmp_path, name, df):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def tables(tmp_path):
    m = pd.DataFrame(
        {
            "patient_id": ["p1", "p1", "p2", "p2", "p3", "p3"],
            "time": [0, 1] * 3,
            "hr": [80, 82, 90, 95, 70, 71.0],
            "map": [70, 71, 60, 58, 80, 82.0],
        }
    )
    y = pd.DataFrame({"patient_id": ["p1", "p2", "p3"], "label": [0, 1, 0]})
    return tmp_path, m, y


def load(tmp_path, m, y, **kw):
    return load_cohort(write(tmp_path, "m.csv", m), write(tmp_path, "y.csv", y), TableSpec(**kw))


def test_good_tables_load(tables):
    cohort = load(*tables)
    assert cohort.arrays.x.shape == (3, 2, 2) and cohort.y.tolist() == [0, 1, 0]


def test_missing_column_is_named_with_the_available_ones(tables):
    tmp, m, y = tables
    with pytest.raises(UserError, match=r"m\.csv: no time column 'time'.*hr, map"):
        load(tmp, m.drop(columns="time"), y)


def test_non_numeric_feature_names_row_and_patient(tables):
    tmp, m, y = tables
    m["hr"] = m["hr"].astype(object)
    m.loc[3, "hr"] = "high"
    with pytest.raises(UserError, match=r"column 'hr' is not a number in row 4 \(patient p2\)"):
        load(tmp, m, y, features=["hr", "map"])


def test_label_that_is_not_binary(tables):
    tmp, m, y = tables
    y.loc[1, "label"] = 2
    with pytest.raises(UserError, match=r"y\.csv: column 'label' must be 0/1"):
        load(tmp, m, y)


def test_patient_without_label_is_named(tables):
    tmp, m, y = tables
    with pytest.raises(UserError, match=r"1 patients in .*m\.csv have no label .*p3"):
        load(tmp, m, y[y.patient_id != "p3"])


def test_string_labels_with_positive_label(tables):
    tmp, m, y = tables
    y["label"] = y["label"].map({0: "alive", 1: "died"})
    assert load(tmp, m, y, positive_label="died").y.tolist() == [0, 1, 0]


def test_label_column_in_measurements_must_be_constant(tables):
    tmp, m, _ = tables
    m["label"] = [0, 0, 1, 1, 0, 1]
    path = write(tmp, "m.csv", m)
    with pytest.raises(UserError, match="changes within patient p3"):
        load_cohort(path, None)
    m["label"] = [0, 0, 1, 1, 0, 0]
    cohort = load_cohort(write(tmp, "m.csv", m), None)
    assert cohort.y.tolist() == [0, 1, 0] and cohort.arrays.features == ["hr", "map"]


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "cannot be read|empty"),
        ("patient_id,time,hr\n", "empty"),
        ("patient_id;time;hr\np1;0;80\n", "another delimiter"),
    ],
)
def test_unreadable_files(tmp_path, content, match):
    path = tmp_path / "m.csv"
    path.write_text(content)
    y = write(tmp_path, "y.csv", pd.DataFrame({"patient_id": ["p1"], "label": [1]}))
    with pytest.raises(UserError, match=match):
        load_cohort(path, y)


def test_infinite_value_is_an_error(tables):
    tmp, m, y = tables
    m.loc[2, "map"] = float("inf")
    with pytest.raises(UserError, match="'map' is infinite in row 3"):
        load(tmp, m, y)


def test_a_split_column_in_the_label_table_is_read_with_the_labels(tables, monkeypatch):
    """Labels and split come from one read of the label table (it used to be read twice)."""
    from patientcnn.data import tables as reader

    tmp, m, y = tables
    reads = []

    def counted(path, id_col=None):  # every table read goes through read_rows
        reads.append(path.name if hasattr(path, "name") else str(path))
        return read_rows(path, id_col)

    read_rows = reader.read_rows
    monkeypatch.setattr(reader, "read_rows", counted)
    y = y.assign(split=["train", "val", "test"])
    cohort = load(tmp, m, y, split_col="split")
    assert sorted(reads) == ["m.csv", "y.csv"]
    assert cohort.split.tolist() == ["train", "val", "test"] and cohort.y.tolist() == [0, 1, 0]


def test_a_missing_split_column_names_the_label_table(tables):
    tmp, m, y = tables
    with pytest.raises(UserError, match=r"y\.csv: no split column 'split'"):
        load(tmp, m, y, split_col="split")
