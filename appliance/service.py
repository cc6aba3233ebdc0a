"""The one way the CLI and the console read and act on the store.

Nothing here recomputes the pipeline: it reads what runs appended, and appends labels and audit
rows. Every action taken through a console is attributed to a user and written to the audit log.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

from appliance import store
from appliance.config import Config
from appliance.timefmt import iso_ns, now_iso

LABELS = ("true_positive", "false_positive", "inconclusive", "legitimate")

_ALERT_COLUMNS = """alert_id, detector, score, confidence, trader, account, symbol, instrument,
    trade_date, start_ns, end_ns, n_events, run_id, model_version, etl_version"""


def detector_catalog() -> list[dict[str, Any]]:
    """Registered detectors with their feature names and units (no store needed)."""
    from appliance.detectors import REGISTRY

    return [
        {"name": d.name, "model_version": d.model_version, "description": d.description,
         "cluster_keys": list(d.cluster_keys),
         "features": [{"name": f.name, "unit": f.unit, "description": f.description}
                      for f in d.features]}
        for d in REGISTRY.values()
    ]  # fmt: skip


class NotFound(Exception):
    """The requested alert (or other object) does not exist."""


def _alert_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["alert_id"],
        "detector": row["detector"],
        "score": row["score"],
        "confidence": round(row["confidence"], 4),
        "trader": row["trader"],
        "account": row["account"],
        "symbol": row["symbol"],
        "instrument": row["instrument"],
        "trade_date": row["trade_date"],
        "start_ts": iso_ns(row["start_ns"]),
        "end_ts": iso_ns(row["end_ns"]),
        "n_events": row["n_events"],
        "run_id": row["run_id"],
        "model_version": row["model_version"],
        "etl_version": row["etl_version"],
    }


class Service:
    """Read and act on one data directory's store on behalf of ``user``."""

    def __init__(self, cfg: Config, user: str | None = None) -> None:
        self.cfg = cfg
        self.user = user or cfg.get("console.user") or getpass.getuser()
        self.con = store.connect(cfg.store_path)

    def close(self) -> None:
        self.con.close()

    # ------------------------------------------------------------------ reading
    def alerts(self, min_score: int | None = None, detector: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
        """Current alerts, highest score first (ties: earliest first)."""
        sql = f"SELECT {_ALERT_COLUMNS} FROM current_alerts WHERE 1=1"
        params: list[Any] = []
        if min_score is not None:
            sql += " AND score >= ?"
            params.append(min_score)
        if detector:
            sql += " AND detector = ?"
            params.append(detector)
        sql += " ORDER BY score DESC, start_ns ASC, alert_id ASC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [_alert_summary(r) for r in store.rows(self.con, sql, params)]

    def alert(self, alert_id: int) -> dict[str, Any]:
        """One alert (current or historical) with features, explanation, breadcrumbs, labels."""
        found = list(store.rows(self.con, "SELECT * FROM alerts WHERE alert_id = ?", (alert_id,)))
        if not found:
            raise NotFound(f"alert {alert_id} does not exist (list them with `surveil alerts`)")
        row = found[0]
        out = _alert_summary(row)
        out["features"] = json.loads(row["features"])
        out["explanation"] = json.loads(row["explanation"])
        out["breadcrumbs"] = json.loads(row["breadcrumbs"])
        out["labels"] = list(store.rows(
            self.con, "SELECT label, reason, note, user, created_at FROM labels "
            "WHERE alert_id = ? ORDER BY label_id", (alert_id,)))  # fmt: skip
        return out

    def evidence(self, alert_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The raw input lines behind an alert, read back from the source files by byte range."""
        crumbs = self.alert(alert_id)["breadcrumbs"]
        flt = crumbs["filter"]
        # a cross-account cluster (wash trades) names several traders, joined by ';'
        traders = [t for t in str(flt.get("trader") or "").split(";") if t]
        out: list[dict[str, Any]] = []
        for crumb in crumbs["files"]:
            path = crumb.get("path")
            if not path or not Path(path).exists():
                out.append({"source": crumb["source"], "path": path, "missing": True})
                continue
            lo, hi = crumb["lines"]
            with open(path, "rb") as fh:
                fh.seek(crumb["offsets"][0])
                for number in range(lo, hi + 1):
                    raw = fh.readline()
                    if not raw:
                        break
                    text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                    if any(t in text for t in traders) and len(out) < limit:
                        out.append({"source": crumb["source"], "line": number, "raw": text})
        return out

    def quarantine(self, file_id: str | None = None, reason: str | None = None,
                   limit: int | None = None) -> dict[str, Any]:
        """Quarantined records (raw bytes shown with escapes) with per-reason counts; filter by
        file id and reason."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        sql = "SELECT file_id, path, quarantined FROM files WHERE quarantined > 0"
        params: list[Any] = []
        if file_id:
            sql += " AND file_id = ?"
            params.append(file_id)
        records: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for f in store.rows(self.con, sql + " ORDER BY ingested_at, file_id", params):
            path = self.cfg.data_dir / "quarantine" / f"{f['file_id']}.parquet"
            if not path.exists():
                continue
            table = pq.read_table(path)
            if reason:
                table = table.filter(pc.equal(table.column("reason"), reason))
            for value in table.column("reason").to_pylist():
                counts[value] = counts.get(value, 0) + 1
            room = None if limit is None else max(limit - len(records), 0)
            for rec in table.slice(0, room).to_pylist():
                rec["raw"] = rec["raw"].decode("utf-8", "backslashreplace")
                records.append(rec)
        return {"total": sum(counts.values()), "reasons": dict(sorted(counts.items())),
                "records": records}

    def detectors(self) -> list[dict[str, Any]]:
        return detector_catalog()

    def runs(self) -> list[dict[str, Any]]:
        rows = store.rows(self.con, "SELECT * FROM runs ORDER BY finished_at DESC")
        return [{**r, "models": json.loads(r["models"]), "counts": json.loads(r["counts"])}
                for r in rows]

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(store.rows(self.con, "SELECT * FROM audit_log ORDER BY audit_id DESC LIMIT ?",
                               (limit,)))

    # ------------------------------------------------------------------ acting
    def record_view(self, alert_id: int, via: str) -> None:
        """Audit that ``self.user`` looked at an alert."""
        with self.con:
            store.audit(self.con, now_iso(), self.user, "view_alert", str(alert_id), {"via": via})

    def label(self, alert_id: int, label: str, reason: str | None = None,
              note: str | None = None) -> None:
        """Append an officer's disposition of an alert (labels are never edited, only added)."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        self.alert(alert_id)
        now = now_iso()
        with self.con:
            self.con.execute(
                "INSERT INTO labels(alert_id, label, reason, note, user, created_at) "
                "VALUES (?,?,?,?,?,?)", (alert_id, label, reason, note, self.user, now))
            store.audit(self.con, now, self.user, "label", str(alert_id),
                        {"label": label, "reason": reason})
