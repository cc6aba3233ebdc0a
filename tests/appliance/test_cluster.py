import numpy as np
import pyarrow as pa

from appliance.cluster import gap_clusters

SECOND = 1_000_000_000


def table(rows):
    trader, inst, ts = zip(*rows, strict=True)
    return pa.table({"trader": list(trader), "instrument": list(inst),
                     "ts": pa.array(list(ts), pa.int64()).cast(pa.timestamp("ns", tz="UTC"))})


def test_key_change_and_gap_split_clusters():
    t = table([("B", "X", 0), ("A", "X", 10 * SECOND), ("A", "X", 0), ("A", "X", 4 * SECOND),
               ("A", "Y", 1 * SECOND), ("B", "X", 5 * SECOND)])
    c = gap_clusters(t, ("trader", "instrument"), 5 * SECOND)
    assert c.events.column("trader").to_pylist() == ["A", "A", "A", "A", "B", "B"]
    # A/X splits at the 6 s pause; B/X's gap of exactly 5 s does not split
    assert c.starts.tolist() == [0, 2, 3, 4, 6]
    assert np.array_equal(c.ids(), [0, 0, 1, 2, 3, 3])


def test_empty_table_has_no_clusters():
    c = gap_clusters(table([("A", "X", 0)]).slice(0, 0), ("trader", "instrument"), SECOND)
    assert c.count == 0
