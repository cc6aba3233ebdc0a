"""``surveil``: the command line. Heavy libraries are imported inside commands so that ``--help``
starts fast, and the console (Textual) is imported only by ``surveil console``.

Every command that prints data has ``--json``; errors are one line on stderr naming what failed
and what to do next, with the exit code from ``appliance.exit_codes``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.exit_codes import ExitCode

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- helpers


def _emit(args: argparse.Namespace, data: Any, text: Callable[[], None]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None, default=str))
    else:
        text()


def _config(args: argparse.Namespace):
    from appliance import config

    cfg = config.load(config.discover(args.config))
    _prepare_runtime(cfg.data_dir)
    return cfg


#: Marks every process the app starts, so the frozen entry point refuses an unrecognised child
#: invocation instead of starting the CLI again (packaging/entry.py).
CHILD_MARKER = "SURVEIL_APP_PROCESS"


def _prepare_runtime(data_dir: Path) -> None:
    """Before numba or Ray is imported: every writable path under the data dir, nothing phoned
    home. A frozen numba ignores NUMBA_CACHE_DIR and caches under $XDG_CACHE_HOME keyed by the
    working directory's name, so the frozen app also works from the data dir."""
    frozen = bool(getattr(sys, "frozen", False))
    cache = data_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = os.environ
    env.setdefault("NUMBA_CACHE_DIR", str(cache / "numba"))
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env[CHILD_MARKER] = "1"
    if frozen:
        env["XDG_CACHE_HOME"] = str(cache)
        os.chdir(data_dir)


_PATH_ARGS = ("files", "file", "out", "dir", "config")


def _absolute_paths(args: argparse.Namespace) -> None:
    """Resolve path arguments first: the frozen app changes its working directory."""
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, os.path.abspath(value))
        elif isinstance(value, list):
            setattr(args, name, [os.path.abspath(v) for v in value])


def _reporter(args: argparse.Namespace, cfg=None):
    from appliance.progress import Reporter

    fmt = cfg.get("logging.format") if cfg else "auto"
    return Reporter(fmt, quiet=getattr(args, "json", False) and fmt == "auto")


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    # A pipe gets a wide table (rich would assume 80 columns) so rows are never folded.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _alert_rows(alerts: list[dict[str, Any]]) -> list[list[Any]]:
    return [[a["id"], a["score"], a["detector"], a["trader"], a["account"], a["symbol"],
             a["start_ts"][:10], a["start_ts"][11:23], a["n_events"]] for a in alerts]  # fmt: skip


ALERT_COLUMNS = ["id", "score", "detector", "trader", "account", "symbol", "date", "start UTC",
                 "events"]


# --------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    from appliance import config, store

    target = Path(args.dir)
    target.mkdir(parents=True, exist_ok=True)
    cfg_path = target / config.DEFAULT_NAME
    created = not cfg_path.exists()
    if created:
        cfg_path.write_text(config.example_text(), encoding="utf-8")
    cfg = config.load(cfg_path)
    store.connect(cfg.store_path, create=True).close()
    info = {"config": str(cfg_path.resolve()), "store": str(cfg.store_path),
            "created": created}
    _emit(args, info, lambda: print(
        f"{'initialised' if created else 'already initialised (config kept)'}: {target.resolve()}"
        f"\n  config: {cfg_path.resolve()}\n  store:  {cfg.store_path}"
        f"\nnext: surveil --config {cfg_path} ingest --format csv FILE..."))
    return ExitCode.OK


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _emit(args, {"config": str(cfg.path), "hash": cfg.digest, "values": cfg.values},
          lambda: print(f"{cfg.path}: ok (hash {cfg.digest}, data dir {cfg.data_dir})"))
    return ExitCode.OK


def cmd_config_example(args: argparse.Namespace) -> int:
    from appliance import config

    sys.stdout.write(config.example_text())
    return ExitCode.OK


def cmd_formats(args: argparse.Namespace) -> int:
    from connectors import REGISTRY

    data = [{"name": c.name, "kind": c.kind, "version": c.version, "description": c.description}
            for c in REGISTRY.values()]  # fmt: skip
    _emit(args, data, lambda: _table(["format", "kind", "description"],
                                     [[d["name"], d["kind"], d["description"]] for d in data]))
    return ExitCode.OK


def cmd_ingest(args: argparse.Namespace) -> int:
    import getpass

    from appliance import store
    from appliance.ingest import ingest_files

    if args.follow or args.once:
        return _ingest_tee(args)
    if not args.format or not args.files:
        raise ValueError("ingest needs --format F and at least one FILE "
                         "(or --follow/--once to follow the [tee] sources)")
    cfg = _config(args)
    say = _reporter(args, cfg)
    con = store.connect(cfg.store_path)
    reports = []
    # large files are read in chunks (Ray tasks above ingest.inprocess_max_bytes): docs/cli.md
    for name, report in zip(args.files, ingest_files(
            cfg, con, [Path(n) for n in args.files], args.format, getpass.getuser(),
            mapping=args.mapping), strict=True):
        say("file_ingested" if report.status == "ingested" else "file_skipped",
            {"path": name, "status": report.status, "rows": report.rows,
             "accepted": report.accepted, "quarantined": report.quarantined})
        reports.append(report.to_json())
    totals = {k: sum(r[k] for r in reports) for k in ("rows", "accepted", "quarantined",
                                                       "ignored")}
    reasons: dict[str, int] = {}
    for r in reports:
        for k, v in r["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    data = {**totals, "reasons": reasons, "files": reports}

    def text() -> None:
        for r in reports:
            if r["status"] == "already_ingested":
                print(f"{r['path']}: already ingested as {r['file_id']} (nothing to do)")
            else:
                print(f"{r['path']}: {r['rows']} rows, {r['accepted']} accepted, "
                      f"{r['quarantined']} quarantined, {r['ignored']} ignored"
                      + (f" {r['reasons']}" if r["reasons"] else ""))

    _emit(args, data, text)
    return ExitCode.OK


def _ingest_tee(args: argparse.Namespace) -> int:
    """``ingest --follow`` (until SIGTERM/SIGINT, exit 0) or ``--once``: see docs/tee.md."""
    import getpass
    import signal

    from appliance import store, tee

    if args.files or args.format or args.mapping:
        raise ValueError("--follow/--once ingest the [[tee.sources]] of the config; "
                         "name no FILE or --format")
    cfg = _config(args)
    say = _reporter(args, cfg)
    con = store.connect(cfg.store_path)
    stop = tee.StopFlag()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    totals = tee.follow(cfg, con, getpass.getuser(), say, once=args.once, poll=args.poll,
                        stop=stop)
    _emit(args, totals, lambda: print(
        f"tee: {totals.get('chunks', 0)} chunks, {totals.get('rows', 0)} rows, "
        f"{totals.get('accepted', 0)} accepted, {totals.get('quarantined', 0)} quarantined"
        f" ({totals['status']})"))
    return ExitCode.INPUT if totals.get("refused") and args.once else ExitCode.OK


def cmd_reference_load(args: argparse.Namespace) -> int:
    import getpass

    from appliance import reference, store

    cfg = _config(args)
    con = store.connect(cfg.store_path)
    info = reference.load(con, args.kind, Path(args.file), getpass.getuser())
    _emit(args, info, lambda: print(
        f"{info['kind']}: {info['rows']} rows, version {info['version']} ({info['status']}); "
        "files ingested from now on use it"))
    return ExitCode.OK


def cmd_reference_show(args: argparse.Namespace) -> int:
    from appliance import reference, store

    cfg = _config(args)
    table = reference.current(store.connect(cfg.store_path), args.kind)
    rows = table.to_pylist()
    _emit(args, rows, lambda: _table(table.column_names,
                                     [list(r.values()) for r in rows],
                                     f"{args.kind}: {len(rows)} rows (current version)"))
    return ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    import getpass

    from appliance import pipeline, store

    cfg = _config(args)
    con = store.connect(cfg.store_path)
    summary = pipeline.run(cfg, con, user=getpass.getuser(), mode=args.mode,
                           progress=_reporter(args, cfg))
    data = summary.to_json()

    def text() -> None:
        if summary.run_id is None:
            print("nothing to score: every ingested file is already covered by a run")
            return
        print(f"run {summary.run_id} ({summary.mode}): {summary.events} events from "
              f"{summary.input_files} files, dates {', '.join(summary.trade_dates)}; "
              f"clusters {summary.clusters}; alerts {summary.alerts}; {summary.seconds}s")

    _emit(args, data, text)
    return ExitCode.OK


def _service(args: argparse.Namespace):
    from appliance.service import Service

    return Service(_config(args), user=getattr(args, "user", None))


def cmd_alerts(args: argparse.Namespace) -> int:
    svc = _service(args)
    alerts = svc.alerts(args.min_score, args.detector, args.limit)
    _emit(args, alerts, lambda: _table(ALERT_COLUMNS, _alert_rows(alerts),
                                       f"{len(alerts)} alerts") if alerts else
          print("no alerts (ingest files and `surveil run` first, or lower --min-score)"))
    return ExitCode.OK


def cmd_show(args: argparse.Namespace) -> int:
    svc = _service(args)
    alert = svc.alert(args.id)
    if args.raw:
        alert["evidence"] = svc.evidence(args.id)
    svc.record_view(args.id, via="cli")

    def text() -> None:
        print(f"alert {alert['id']}  score {alert['score']}  {alert['detector']}  "
              f"trader {alert['trader']}  account {alert['account']}  {alert['symbol']}")
        print(f"  {alert['start_ts']} → {alert['end_ts']}  {alert['n_events']} events  "
              f"run {alert['run_id']}  model {alert['model_version']}  etl {alert['etl_version']}")
        print("why:")
        for reason in alert["explanation"]:
            print(f"  - {reason}")
        _table(["feature", "value"], [[k, v] for k, v in alert["features"].items()])
        print("evidence (raw input):")
        for crumb in alert["breadcrumbs"]["files"]:
            print(f"  {crumb['path']}  lines {crumb['lines'][0]}–{crumb['lines'][1]}  "
                  f"bytes {crumb['offsets'][0]}–{crumb['offsets'][1]}  ({crumb['events']} events)")
        print(f"  filter: {json.dumps(alert['breadcrumbs']['filter'])}")
        for row in alert.get("evidence", []):
            print(f"  {row.get('line', '?'):>8}: {row.get('raw', '(source file missing)')}")

    _emit(args, alert, text)
    return ExitCode.OK


def cmd_label(args: argparse.Namespace) -> int:
    svc = _service(args)
    svc.label(args.id, args.label, args.reason, args.note)
    _emit(args, {"id": args.id, "label": args.label, "user": svc.user},
          lambda: print(f"alert {args.id} labelled {args.label} by {svc.user}"))
    return ExitCode.OK


def cmd_events(args: argparse.Namespace) -> int:
    from appliance.export import export_events

    cfg = _config(args)
    info = export_events(cfg, Path(args.out), args.date, args.kind)
    _emit(args, info, lambda: print(f"wrote {info['rows']} {args.kind} events to {args.out}"))
    return ExitCode.OK


def cmd_quarantine(args: argparse.Namespace) -> int:
    found = _service(args).quarantine(args.file, args.reason, args.limit)

    def text() -> None:
        if not found["total"]:
            print("nothing quarantined")
            return
        _table(["file", "line", "offset", "step", "field", "reason", "raw"],
               [[r["source"], r["line"], r["offset"], r["step"], r["field"], r["reason"],
                 r["raw"][:120]] for r in found["records"]],
               f"{found['total']} quarantined records {found['reasons']}")

    _emit(args, found, text)
    return ExitCode.OK


def cmd_detectors(args: argparse.Namespace) -> int:
    from appliance.service import detector_catalog

    data = detector_catalog()

    def text() -> None:
        for d in data:
            print(f"{d['name']} ({d['model_version']}): {d['description']}")
            _table(["feature", "unit", "description"],
                   [[f["name"], f["unit"], f["description"]] for f in d["features"]])

    _emit(args, data, text)
    return ExitCode.OK


def cmd_runs(args: argparse.Namespace) -> int:
    runs = _service(args).runs()
    _emit(args, runs, lambda: _table(
        ["run", "finished", "mode", "code", "etl", "alerts"],
        [[r["run_id"], r["finished_at"], r["mode"], r["code_version"], r["etl_version"],
          r["counts"].get("alerts")] for r in runs]))  # fmt: skip
    return ExitCode.OK


#: Opens the console for a service. The core never imports the console: the program's entry
#: point (``tui.launch``) hands it in, so headless jobs never load Textual.
ConsoleOpener = Callable[[Any], int]
_console_opener: ConsoleOpener | None = None


def cmd_console(args: argparse.Namespace) -> int:
    if _console_opener is None:
        print("surveil: the console is not part of this installation (start it with the "
              "`surveil` program, not `python -m appliance.cli`)", file=sys.stderr)
        return ExitCode.USAGE
    return _console_opener(_service(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance.demo import run_demo

    _prepare_runtime(Path(args.dir).resolve())
    return run_demo(Path(args.dir), seed=args.seed, as_json=args.json, mode=args.mode)


def cmd_version(args: argparse.Namespace) -> int:
    from appliance.version import build_info

    info = build_info()
    _emit(args, info, lambda: print(f"surveil {info['version']} ({info['commit']})"))
    return ExitCode.OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surveil", description="Trade surveillance: audit logs in, explained alerts out.",
        epilog="Exit codes: 0 ok, 1 internal error, 2 usage/config, 3 input refused, "
               "4 not found, 5 store unavailable, 130 interrupted.",
    )  # fmt: skip
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $SURVEIL_CONFIG, then ./surveil.toml)")
    parser.add_argument("--version", action="version", version=f"surveil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help: str, json_flag: bool = True):
        p = sub.add_parser(name, help=help, description=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.set_defaults(handler=handler)
        return p

    p = add("init", cmd_init, "create a data directory with a config file and an empty store")
    p.add_argument("dir", metavar="DIR")

    p = sub.add_parser("config", help="check or print configuration")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate the config file")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cmd_config_check)
    c = csub.add_parser("example", help="print the annotated default config")
    c.set_defaults(handler=cmd_config_example)

    add("formats", cmd_formats, "list the input formats")

    p = add("ingest", cmd_ingest, "read raw files into canonical events (idempotent per file)")
    p.add_argument("--format", help="input format (see `surveil formats`); required with FILE")
    p.add_argument("--mapping", metavar="FILE|NAME",
                   help="vendor format: the TOML mapping (default: FILE.mapping.toml or "
                        "mapping.toml beside the file)")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--follow", action="store_true",
                   help="follow the [[tee.sources]] of the config until SIGTERM/SIGINT "
                        "(new and growing files, rotation, gzip; see docs/tee.md)")
    p.add_argument("--once", action="store_true",
                   help="one pass over the [[tee.sources]] (cron, nightly run), then exit")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="pause between passes with --follow (default: [tee] poll_seconds)")

    p = sub.add_parser("reference", help="load or show reference data (accounts, traders, "
                       "symbology)")
    rsub = p.add_subparsers(dest="reference_command", required=True)
    r = rsub.add_parser("load", help="load a CSV as the new current version of KIND")
    r.add_argument("kind", choices=("accounts", "traders", "symbology"))
    r.add_argument("file", metavar="FILE")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=cmd_reference_load)
    r = rsub.add_parser("show", help="print the current version of KIND")
    r.add_argument("kind", choices=("accounts", "traders", "symbology"))
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=cmd_reference_show)

    p = add("run", cmd_run, "cluster, featurise and score everything not yet scored")
    p.add_argument("--mode", choices=("auto", "ray", "inprocess"),
                   help="override [pipeline] mode for this run")

    p = add("alerts", cmd_alerts, "list current alerts, highest score first")
    p.add_argument("--min-score", type=int, metavar="N")
    p.add_argument("--detector", metavar="D")
    p.add_argument("--limit", type=int, metavar="N")

    p = add("show", cmd_show, "one alert: explanation, features and raw evidence")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--raw", action="store_true", help="include the raw input lines")
    p.add_argument("--user", help="name recorded in the audit log")

    p = add("label", cmd_label, "record a disposition for an alert")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("label", choices=("true_positive", "false_positive", "inconclusive",
                                     "legitimate"))
    p.add_argument("--reason")
    p.add_argument("--note")
    p.add_argument("--user", help="name recorded in the audit log")

    p = add("events", cmd_events, "export cleaned canonical events to Parquet or CSV")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="one trade date (default: all)")
    p.add_argument("--kind", choices=("orders", "market"), default="orders")
    p.add_argument("--out", required=True, metavar="FILE.parquet|FILE.csv")

    p = add("quarantine", cmd_quarantine, "show quarantined records with their reasons and raw "
            "bytes")
    p.add_argument("--file", metavar="FILE_ID", help="one input file (its file id)")
    p.add_argument("--reason", help="one reason code, e.g. bad_timestamp")
    p.add_argument("--limit", type=int, default=200, metavar="N",
                   help="records to print (default 200; counts cover all)")

    add("detectors", cmd_detectors, "list detectors and their features")
    add("runs", cmd_runs, "list scoring runs with their versions")

    p = add("console", cmd_console, "open the officer's console", json_flag=False)
    p.add_argument("--user", help="name recorded in the audit log")

    p = add("demo", cmd_demo, "simulate a day, ingest it, score it and print the top alerts")
    p.add_argument("--dir", default="surveil-demo", help="demo data dir (recreated each time)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mode", choices=("auto", "ray", "inprocess"), default="ray")

    from appliance.sim import cli as sim_cli

    p = sub.add_parser("sim", help="simulate a market day with labelled manipulations",
                       description="simulate a market day with labelled manipulations and "
                                   "hard negatives; write canonical or vendor-dirty files")
    sim_cli.add_arguments(p)
    p.set_defaults(handler=sim_cli.run)

    add("version", cmd_version, "version, commit and dependency versions")
    return parser


def main(argv: Sequence[str] | None = None, console: ConsoleOpener | None = None) -> int:
    """Run one ``surveil`` command. ``console`` opens the officer's console (given by the
    program's entry point, ``tui.launch.main``)."""
    global _console_opener
    _console_opener = console
    args = build_parser().parse_args(argv)
    _absolute_paths(args)
    if not args.config and os.environ.get("SURVEIL_CONFIG"):
        os.environ["SURVEIL_CONFIG"] = os.path.abspath(os.environ["SURVEIL_CONFIG"])
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("surveil: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # one line for people; a traceback on request
        code, message = _classify(exc)
        if os.environ.get("SURVEIL_DEBUG"):
            raise
        print(f"surveil: {message}", file=sys.stderr)
        return code


def _classify(exc: Exception) -> tuple[int, str]:
    from appliance.config import ConfigError
    from appliance.service import NotFound
    from appliance.store import StoreError
    from connectors.base import InputRefused

    if isinstance(exc, ConfigError):
        return ExitCode.USAGE, str(exc)
    if isinstance(exc, InputRefused):
        return ExitCode.INPUT, str(exc)
    if isinstance(exc, NotFound):
        return ExitCode.NOT_FOUND, str(exc)
    if isinstance(exc, StoreError):
        return ExitCode.STORE, str(exc)
    if isinstance(exc, (KeyError, ValueError)) and exc.args:
        return ExitCode.USAGE, str(exc.args[0])
    return ExitCode.INTERNAL, (f"internal error: {type(exc).__name__}: {exc} "
                               "(rerun with SURVEIL_DEBUG=1 for a traceback and report it)")


if __name__ == "__main__":
    sys.exit(main())
