"""Standalone probe: proves Ray + numba + pyarrow + scikit-learn work inside the frozen bundle.

Run as ``surveil-probe [DATA_DIR]`` from the bundle (or ``python packaging/probe.py`` in the venv).
It starts a private single-node Ray on 127.0.0.1 whose temp dir lives under DATA_DIR, runs
@ray.remote tasks that call a numba kernel over a pyarrow table and a RandomForest predict, and
prints one JSON line with the results, the worker PIDs (which must differ from the driver's) and
timings. Used by tests/packaging/test_bundle.py as the smallest end-to-end check.
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()


def _listening_addresses() -> list[str]:
    """ip:port of every TCP socket in LISTEN state held by this process or its descendants
    (raylet, gcs_server, agents, workers). psutil is Ray's vendored copy."""
    import psutil

    me = psutil.Process()
    out = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.Error, OSError):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                out.add(f"{c.laddr.ip}:{c.laddr.port}")
    return sorted(out)


def _feature_checks(data_dir: str) -> dict:
    """Everything the product relies on that the bundle's exclusions could break, checked in
    the driver (results are compared by tests/packaging/test_bundle.py): pyarrow's parquet,
    dataset, csv, ipc/feather and compute; scikit-learn's RandomForest fit/predict/pickle;
    numba's threading layer; apsw; textual."""
    import io
    import pickle

    import apsw
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.dataset as ds
    import pyarrow.feather as feather
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq
    import textual.app  # noqa: F401 - the console's framework must import
    from sklearn.ensemble import RandomForestClassifier

    out: dict = {}
    table = pa.table({"k": pa.array(["a", "b", "a", "c"]), "v": pa.array([1.0, 2.0, 3.0, 4.0])})
    pdir = os.path.join(data_dir, "probe-parquet")
    os.makedirs(pdir, exist_ok=True)
    pq.write_table(table, os.path.join(pdir, "part-0.parquet"), compression="zstd")
    dset = ds.dataset(pdir, format="parquet")
    out["dataset_sum_a"] = float(
        pc.sum(dset.to_table(filter=ds.field("k") == "a").column("v")).as_py()
    )
    out["parquet_rows"] = pq.read_table(pdir).num_rows
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    out["ipc_rows"] = ipc.open_stream(sink.getvalue()).read_all().num_rows
    fpath = os.path.join(pdir, "t.feather")
    feather.write_feather(table, fpath)
    out["feather_rows"] = feather.read_table(fpath).num_rows
    out["csv_rows"] = pcsv.read_csv(io.BytesIO(b"a,b\n1,x\n2,y\n")).num_rows
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    rf = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0, n_jobs=1).fit(x, y)
    rf2 = pickle.loads(pickle.dumps(rf))
    probe_x = np.array([[2.0, 0, -2.0, 0, 0], [-2.0, 0, 2.0, 0, 0]])
    out["rf_predict"] = [int(v) for v in rf2.predict(probe_x)]
    out["rf_proba_ok"] = bool(np.allclose(rf2.predict_proba(probe_x).sum(axis=1), 1.0))
    con = apsw.Connection(":memory:")
    out["apsw"] = con.execute("SELECT sqlite_version()").fetchall()[0][0] != ""
    import numba
    from numba.np.ufunc import parallel as nparallel

    nparallel._launch_threads()  # what the first parallel=True kernel call does
    out["numba_threading_layer"] = numba.threading_layer()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    data_dir = os.path.abspath(argv[0] if argv else os.path.join(os.getcwd(), "probe-data"))
    os.makedirs(data_dir, exist_ok=True)
    # Same environment contract as the real CLI (see packaging/runtime_env.py).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from runtime_env import configure

    configure(data_dir)

    import numpy as np
    import pyarrow as pa
    import ray
    from numba import njit
    from sklearn.ensemble import RandomForestClassifier

    t_import = time.perf_counter() - T0
    features = _feature_checks(data_dir)

    @njit(cache=True)
    def spread_kernel(px, qty):
        acc = 0.0
        for i in range(px.shape[0]):
            acc += px[i] * qty[i]
        return acc

    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1).fit(x, y)

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=os.path.join(data_dir, "ray"),
        log_to_driver=True,
        configure_logging=False,
    )
    t_init = time.perf_counter() - T0

    @ray.remote
    def task(i, table, model):
        px = table.column("px").to_numpy()
        qty = table.column("qty").to_numpy()
        s = spread_kernel(px, qty)
        pred = model.predict(np.full((1, 4), float(i) - 1.5))
        return {"i": i, "sum": round(float(s), 6), "pred": int(pred[0]), "pid": os.getpid()}

    table = pa.table({"px": np.arange(100, dtype="f8"), "qty": np.ones(100)})
    ref_table = ray.put(table)
    ref_model = ray.put(model)
    first = ray.get(task.remote(0, ref_table, ref_model))
    t_first = time.perf_counter() - T0
    results = [first] + ray.get([task.remote(i, ref_table, ref_model) for i in range(1, 4)])
    listen = _listening_addresses()
    ray.shutdown()
    out = {
        "ok": True,
        "frozen": bool(getattr(sys, "frozen", False)),
        "driver_pid": os.getpid(),
        "worker_pids": sorted({r["pid"] for r in results}),
        "results": [{k: v for k, v in r.items() if k != "pid"} for r in results],
        "listen": listen,
        "features": features,
        "t_import_s": round(t_import, 2),
        "t_ray_init_s": round(t_init, 2),
        "t_first_task_s": round(t_first, 2),
        "t_total_s": round(time.perf_counter() - T0, 2),
    }
    print(json.dumps(out))
    loopback = all(a.startswith(("127.", "::ffff:127.", "::1:")) for a in listen)
    return 0 if os.getpid() not in out["worker_pids"] and loopback else 1


if __name__ == "__main__":
    sys.exit(main())
