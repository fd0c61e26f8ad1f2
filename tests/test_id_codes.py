"""Patient ids factorized once when read (issue 15, load speed): the codes must give the
very ids, patients and duplicate checks that per-row Python strings gave."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from patientcnn.data.cohort import load_measurements
from patientcnn.data.reshape import GridSpec, to_arrays
from patientcnn.data.spec import TableSpec
from patientcnn.data.tables import (
    dense_factorize,
    id_codes,
    ids_as_text,
    read_rows,
    read_table,
    repeated_rows,
)
from patientcnn.errors import UserError


def expanded(codes: np.ndarray, text: np.ndarray) -> list:
    return [None if c < 0 else text[c] for c in codes]


def test_codes_of_integers_text_and_mixed_objects():
    codes, text = id_codes(pd.Series([30, -2, 30, 7]))
    assert expanded(codes, text) == ["30", "-2", "30", "7"]
    codes, text = id_codes(pd.Series([1, 2**40, 1]))  # a sparse range: hashed, not counted
    assert expanded(codes, text) == ["1", str(2**40), "1"]
    codes, text = id_codes(pd.Series(["007", "7", " ", "007", None], dtype=object))
    assert expanded(codes, text) == ["007", "7", None, "007", None]
    codes, text = id_codes(pd.Series(["b", None, "b", ""], dtype="str"))  # pandas' Arrow text
    assert expanded(codes, text) == ["b", None, "b", None]
    codes, text = id_codes(pd.Series([1, "1", "a"], dtype=object))  # one text: one patient
    assert codes[0] == codes[1] != codes[2] and len(text) == 2


def test_arrow_text_over_several_chunks_gives_one_code_per_id():
    column = pa.chunked_array([pa.array(["b", None, "a"]), pa.array(["a", "c", "b"]), []])
    codes, text = id_codes(column)
    assert expanded(codes, text) == ["b", None, "a", "a", "c", "b"]


def test_dense_factorize_counts_a_narrow_range_and_declines_a_wide_one():
    codes, values = dense_factorize(np.array([5, 3, 5, 4]))
    assert values[codes].tolist() == [5, 3, 5, 4]
    assert dense_factorize(np.array([0, 10**6])) == (None, None)


def test_a_large_csv_read_in_many_blocks_keeps_every_id_as_written(tmp_path):
    """Past Arrow's 1 MB read blocks the id column comes in chunks: ids with leading
    zeros must still be the file's text, and one id one patient."""
    rng = np.random.default_rng(0)
    ids = [f"{n:05d}" if n % 3 else str(n) for n in rng.integers(0, 5000, 120_000)]
    path = tmp_path / "m.csv"
    pd.DataFrame({"patient_id": ids, "time": np.arange(len(ids)), "hr": 1.0}).to_csv(
        path, index=False
    )
    with open(path, newline="") as handle:
        written = [row["patient_id"] for row in csv.DictReader(handle)]
    rows = read_rows(path, "patient_id")
    assert rows.df["patient_id"].astype(str).tolist() == written
    assert read_table(path, "patient_id")["patient_id"].tolist() == written
    assert len(rows.patients.categories) == len(set(written))


def test_ids_as_text_gives_python_strings_not_a_categorical():
    out = ids_as_text(pd.Series([3, 3, 1]))
    assert out.dtype == object and out.tolist() == ["3", "3", "1"]


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_repeated_rows_agrees_with_pandas_duplicated(order):
    rng = np.random.default_rng(1)
    codes = np.repeat(np.arange(200), 30)
    hours = np.tile(np.arange(30.0), 200)
    if order == "shuffled":
        perm = rng.permutation(len(codes))
        codes, hours = codes[perm], hours[perm]
    assert repeated_rows(codes, hours) is None
    hours = hours.copy()
    for i in (10, 500, 4000):  # another row of the same patient takes row i's time
        j = np.flatnonzero(codes == codes[i])[-1 if i != 4000 else 0]
        hours[j] = hours[i]
    reference = pd.DataFrame({"c": codes, "t": hours}).duplicated().to_numpy()
    found = repeated_rows(codes, hours)
    assert found is not None and reference.sum() == 3 and np.array_equal(found, reference)


def test_repeated_rows_compares_times_exactly_over_a_wide_range():
    codes = np.array([0, 0, 1, 1, 0])
    hours = np.array([1.0, 1.0 + 1e-9, 5e9, 5e9, 3.5])  # hashed: not whole, wide
    assert repeated_rows(codes, hours).tolist() == [False, False, False, True, False]
    assert repeated_rows(codes[:3], hours[:3]) is None


def test_a_repeated_time_in_a_shuffled_table_names_its_row(tmp_path):
    df = pd.DataFrame(
        {"patient_id": [9, 4, 9, 4, 9], "time": [2, 0, 0, 1, 2], "hr": [1.0, 2, 3, 4, 5]}
    )
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    with pytest.raises(UserError, match=r"row 5 \(patient 9\)"):
        load_measurements(path, TableSpec())


def test_categorical_ids_with_rows_dropped_give_no_empty_patients():
    ids = pd.Series(pd.Categorical.from_codes([2, 0, 2], ["b", "z", "a"]))
    arrays = to_arrays(ids, np.array([0.0, 0, 1]), np.ones((3, 1)), ["hr"], GridSpec())
    assert arrays.ids.tolist() == ["a", "b"] and arrays.lengths.tolist() == [2, 1]
