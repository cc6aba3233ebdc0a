"""A symbol's market tape, hand-computed: time order, forward-filled quotes, volumes and the
aggressor of each trade."""

import numpy as np
import pyarrow as pa

from appliance.context import symbol_tape, tick_size

NAN = float("nan")


def test_tape_of_rows_out_of_time_order():
    rows = [  # ts, bid, ask, bid_size, ask_size, last, last_size (arrival order)
        (3, NAN, NAN, NAN, NAN, 101.0, 2.0),  # trade inside the 100/102 quote, below its mid
        (1, 100.0, 101.0, 5.0, 6.0, NAN, NAN),
        (2, NAN, 102.0, NAN, 7.0, NAN, NAN),
        (4, NAN, NAN, NAN, NAN, 100.0, 3.0),  # trade at the bid: sold into
        (5, 99.0, NAN, 4.0, NAN, 101.5, 1.0),  # above the 100/102 mid: bought
    ]
    names = ("ts", "bid", "ask", "bid_size", "ask_size", "last", "last_size")
    table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})
    table = table.set_column(0, "ts", table.column("ts").cast(pa.int64()))
    tape = symbol_tape(table)
    np.testing.assert_array_equal(tape.ts, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(tape.bid, [100, 100, 100, 100, 99])
    np.testing.assert_array_equal(tape.ask, [101, 102, 102, 102, 102])
    np.testing.assert_array_equal(tape.bid_size, [5, 5, 5, 5, 4])
    np.testing.assert_array_equal(tape.ask_size, [6, 7, 7, 7, 7])
    np.testing.assert_array_equal(tape.last, [NAN, NAN, 101, 100, 101.5])
    np.testing.assert_array_equal(tape.cum_vol, [0, 0, 2, 5, 6])
    np.testing.assert_array_equal(tape.cum_buy, [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(tape.mid, [100.5, 101, 101, 101, 100.5])
    assert tape.tick == 1.0  # from the quotes (99, 100, 101, 102), not the trades (101.5)


def test_first_trade_without_a_quote_is_not_a_buy_and_sizes_are_cleaned():
    table = pa.table({"ts": pa.array([1, 2, 3], pa.int64()), "bid": [NAN, 10.0, NAN],
                      "ask": [NAN, 11.0, NAN], "bid_size": [NAN, 1.0, NAN],
                      "ask_size": [NAN, 1.0, NAN], "last": [10.5, NAN, 11.0],
                      "last_size": [4.0, 9.0, NAN]})
    tape = symbol_tape(table)
    np.testing.assert_array_equal(tape.cum_vol, [4, 4, 4])  # no size: 0; a quote row: 0
    np.testing.assert_array_equal(tape.cum_buy, [0, 0, 0])  # at the ask, but size 0
    assert tick_size(np.array([10.0, 11.0, NAN, 10.0])) == 1.0
