"""The sort-based helpers give what NumPy's unique gives."""

import numpy as np
import pytest

from appliance.arrays import count_runs, distinct, stable_order


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint64, np.int16, np.float64])
@pytest.mark.parametrize("size", [0, 1, 2, 17, 5000])
def test_distinct_is_numpy_unique(dtype, size):
    values = np.random.default_rng(size).integers(0, max(size // 3, 1), size).astype(dtype)
    got = distinct(values)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, np.unique(values))


def test_distinct_leaves_its_input_alone():
    values = np.array([3, 1, 3, 2])
    distinct(values)
    np.testing.assert_array_equal(values, [3, 1, 3, 2])


@pytest.mark.parametrize("size", [0, 1, 9, 1000])
def test_count_runs_counts_distinct_sorted_values(size):
    values = np.sort(np.random.default_rng(size).integers(0, 50, size))
    assert count_runs(values) == np.unique(values).size


@pytest.mark.parametrize(("high", "dtype"), [(3, np.int32), (3, np.int64), (3, np.uint32),
                                           (40_000, np.int32), (40_000, np.uint32),
                                           (2**40, np.int64)])
def test_stable_order_is_numpy_stable_argsort(high, dtype):
    codes = np.random.default_rng(high).integers(0, high, 3000).astype(dtype)
    np.testing.assert_array_equal(stable_order(codes), np.argsort(codes, kind="stable"))
