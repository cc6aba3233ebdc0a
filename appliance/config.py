"""Configuration: one TOML file, strictly validated, discovered in one documented order.

Discovery: ``--config FILE`` → ``$SURVEIL_CONFIG`` → ``./surveil.toml``. Every key, its type, its
default and its meaning live in ``SPEC`` below; ``config.example.toml`` is generated from it (a
test keeps the checked-in copy identical), so documentation and validation cannot drift.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "SURVEIL_CONFIG"
DEFAULT_NAME = "surveil.toml"


class ConfigError(Exception):
    """Invalid or missing configuration: one line naming file, key and what was expected."""


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    #: For an array of tables (``type`` is ``list``): the keys of each table. A key whose default
    #: is ``None`` is required in every table.
    items: dict[str, Key] | None = None
    #: For a key of an array-of-tables item: the value shown in config.example.toml.
    example: Any = None


#: One followed directory of the tee (``[[tee.sources]]``).
TEE_SOURCE: dict[str, Key] = {
    "dir": Key(str, None, "directory holding the log files; relative to this file",
               example="/var/log/oms"),
    "glob": Key(str, None, "file-name pattern within dir, rotated and gzipped names included",
                example="orders.log*"),
    "format": Key(str, None, "input format of these files (line-oriented formats only)",
                  ("csv", "md-csv", "fix", "cat-json", "vendor"), example="fix"),
    "mapping": Key(str, "", "vendor only: a built-in mapping name or a TOML file (relative to "
                   "this file); empty: FILE.mapping.toml or mapping.toml beside each file",
                   example=""),
}  # fmt: skip


def _detector(label: str, gap_events: int | None = 500, **extra: Key) -> dict[str, Key]:
    """The keys every detector has (on/off, alert floor, and for burst-clustered detectors the
    adaptive gap), plus its own."""
    keys = {
        "enabled": Key(bool, True, f"run the {label} detector"),
        "alert_floor": Key(int, 500, "clusters scoring at or above this become alerts",
                           minimum=200),
    }
    if gap_events is not None:
        keys["gap_events"] = Key(int, gap_events, "adaptive gap: this many mean market "
                                 "inter-event times, clamped to [cluster.gap_seconds, "
                                 "max_gap_seconds] (0 = fixed gap)", minimum=0)
        keys["max_gap_seconds"] = Key((int, float), 60.0, "upper bound of the adaptive gap",
                                      minimum=0.0)
    return {**keys, **extra}


SPEC: dict[str, dict[str, Key]] = {
    "data": {
        "dir": Key(str, ".", "data directory (events, quarantine, store); relative to this file"),
    },
    "ingest": {
        "trade_date_tz": Key(str, "UTC", "IANA time zone whose calendar date is the trade date"),
        "chunk_bytes": Key(int, 32 << 20, "a larger file is read in chunks of complete lines of "
                           "about this size (memory per worker grows with it, not with the "
                           "file)", minimum=256),
        "mode": Key(str, "auto", "auto | ray | inprocess: chunks as Ray tasks (auto: Ray when "
                    "the files of one `surveil ingest` hold more than inprocess_max_bytes)",
                    ("auto", "ray", "inprocess")),
        "inprocess_max_bytes": Key(int, 256 << 20, "largest input ingested in-process in auto "
                                   "mode", minimum=0),
    },
    "pipeline": {
        "mode": Key(str, "auto", "auto | ray | inprocess (auto: in-process below "
                    "inprocess_max_rows events, Ray above)", ("auto", "ray", "inprocess")),
        "inprocess_max_rows": Key(int, 200_000, "largest day scored in-process in auto mode",
                                  minimum=0),
        "partitions": Key(int, 0, "partitions per trade date (0 = 2 per Ray CPU, or more so "
                          "that none exceeds partition_rows)", minimum=0),
        "partition_rows": Key(int, 2_000_000, "with partitions = 0: target largest partition "
                              "(events), so a worker's memory does not grow with the day",
                              minimum=1000),
    },
    "ray": {
        "address": Key(str, "", "'' starts a private Ray on 127.0.0.1; 'host:port' joins a "
                       "running Ray cluster"),
        "num_cpus": Key(int, 0, "CPUs for the private Ray (0 = every core)", minimum=0),
        "object_store_mb": Key(int, 0, "object store size in MiB (0 = Ray's default)", minimum=0),
    },
    "cluster": {
        "gap_seconds": Key((int, float), 5.0, "a pause longer than this starts a new cluster",
                           minimum=0.0),
    },
    "detectors.market": {
        "reference_symbol": Key(str, "", "symbol of the reference instrument or index whose move "
                                "over a cluster's span is the market-wide move ('' = none)"),
        "after_seconds": Key((int, float), 1.0, "horizon of the post-event mid (reversal, impact)",
                             minimum=0.0),
    },
    "detectors.spoofing": _detector("spoofing"),
    "detectors.layering": _detector("layering", gap_events=1200),
    "detectors.wash_trade": _detector(
        "wash trade",
        leg_seconds=Key((int, float), 1.0, "largest time between the two legs of a pair",
                        minimum=0.0),
    ),
    "detectors.quote_stuffing": _detector("quote stuffing"),
    "detectors.front_running": _detector(
        "front running", gap_events=None,
        parent_gap_seconds=Key((int, float), 30.0, "a client order is a client account's "
                               "burst with pauses up to this long", minimum=0.0),
        lead_seconds=Key((int, float), 60.0, "house activity this long before the client "
                         "order is included", minimum=0.0),
        unwind_seconds=Key((int, float), 300.0, "house activity this long after the client "
                           "order is included (unwind)", minimum=0.0),
    ),
    "detectors.marking_the_close": _detector(
        "marking-the-close", gap_events=None,
        window_seconds=Key((int, float), 120.0, "closing window length before the close",
                           minimum=0.0),
        close_utc=Key(str, "", "close time HH:MM[:SS] UTC ('' = each instrument's last "
                      "market event of the day)"),
    ),
    "detectors.momentum_ignition": _detector("momentum ignition"),
    "console": {
        "user": Key(str, "", "name recorded in the audit log ('' = the OS login name)"),
    },
    "tee": {
        "poll_seconds": Key((int, float), 1.0, "pause between passes of `surveil ingest --follow`",
                            minimum=0.01),
        "fingerprint_bytes": Key(int, 1024, "a followed file is identified by the hash of its "
                                 "first this many bytes (all of them while it is shorter)",
                                 minimum=64),
        "chunk_bytes": Key(int, 8 << 20, "largest chunk of complete lines ingested (and "
                           "committed) at once", minimum=256),
        "hold_seconds": Key((int, float), 60.0, "FIX: a tail of unanswered requests is held "
                            "back until answered, at most this long (0 = never held)",
                            minimum=0.0),
        "sources": Key(list, (), "followed directories: one [[tee.sources]] table each",
                       items=TEE_SOURCE),
    },
    "logging": {
        "format": Key(str, "auto", "auto (progress on a terminal, JSON otherwise) | text | json",
                      ("auto", "text", "json")),
    },
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    """A validated configuration. ``values`` maps 'section.key' to its value."""

    path: Path | None
    values: dict[str, Any]

    def get(self, dotted: str) -> Any:
        return self.values[dotted]

    @property
    def data_dir(self) -> Path:
        raw = Path(self.values["data.dir"])
        base = self.path.parent if self.path else Path.cwd()
        return (raw if raw.is_absolute() else base / raw).resolve()

    @property
    def store_path(self) -> Path:
        return self.data_dir / "surveil.db"

    @property
    def digest(self) -> str:
        """Hash of the effective values: recorded with every run."""
        canon = repr(sorted(self.values.items())).encode()
        return hashlib.sha256(canon).hexdigest()[:16]


def defaults() -> dict[str, Any]:
    return {f"{sec}.{k}": key.default for sec, keys in SPEC.items() for k, key in keys.items()}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if isinstance(t, tuple):
        return "a number"
    if t is list:
        return "an array of tables"
    return names[t]


def _check_tables(where: str, dotted: str, key: Key, value: Any) -> tuple[dict[str, Any], ...]:
    """An array of tables: every table has exactly the keys of ``key.items`` (None = required)."""
    assert key.items is not None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: key '{dotted}' must be {_type_name(list)} "
                          f"([[{dotted}]]), got {value!r}")
    out = []
    for i, table in enumerate(value):
        here = f"{dotted}[{i}]"
        for name in table:
            if name not in key.items:
                raise ConfigError(f"{where}: unknown key '{here}.{name}' (expected one of: "
                                  f"{', '.join(f'{dotted}[].{k}' for k in key.items)})")
        item = {}
        for name, sub in key.items.items():
            if name not in table:
                if sub.default is None:
                    raise ConfigError(f"{where}: key '{here}.{name}' is required")
                item[name] = sub.default
            else:
                item[name] = _check_value(where, f"{here}.{name}", sub, table[name])
        out.append(item)
    return tuple(out)


def _check_value(where: str, dotted: str, key: Key, value: Any) -> Any:
    if key.items is not None:
        return _check_tables(where, dotted, key, value)
    ok = isinstance(value, key.type) and not (key.type is not bool and isinstance(value, bool))
    if not ok:
        raise ConfigError(
            f"{where}: key '{dotted}' must be {_type_name(key.type)}, got {value!r}"
        )
    if key.choices and value not in key.choices:
        raise ConfigError(
            f"{where}: key '{dotted}' must be one of {', '.join(key.choices)}, got {value!r}"
        )
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{where}: key '{dotted}' must be ≥ {key.minimum}, got {value!r}")
    return float(value) if key.type == (int, float) else value


def _flatten(doc: dict[str, Any], prefix: str = ""):
    """Yield (dotted key, value) for every leaf; an empty table yields its own name."""
    for name, value in doc.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict):
            if not value:
                yield dotted, _EMPTY_TABLE
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


_EMPTY_TABLE = object()


def _section_of(dotted: str) -> str | None:
    matches = [s for s in SPEC if dotted.startswith(s + ".")]
    return max(matches, key=len) if matches else None


def parse(text: str, where: str, path: Path | None = None) -> Config:
    """Validate TOML ``text``; ``where`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    values = defaults()
    for dotted, value in _flatten(doc):
        if value is _EMPTY_TABLE:
            if dotted not in SPEC:
                raise ConfigError(f"{where}: unknown section [{dotted}] "
                                  f"(expected one of: {', '.join(SPEC)})")
            continue
        section = _section_of(dotted)
        if section is None:
            raise ConfigError(
                f"{where}: unknown key '{dotted}' (sections are: {', '.join(SPEC)})"
            )
        keys, name = SPEC[section], dotted[len(section) + 1 :]
        if name not in keys:
            raise ConfigError(
                f"{where}: unknown key '{dotted}' (expected one of: "
                f"{', '.join(f'{section}.{k}' for k in keys)})"
            )
        values[dotted] = _check_value(where, dotted, keys[name], value)
    return Config(path, values)


def load(path: str | Path) -> Config:
    """Read and validate the config file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (create one with `surveil init DIR`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    return parse(text, str(path), path.resolve())


def discover(explicit: str | None) -> Path:
    """Where the config is: the flag, then $SURVEIL_CONFIG, then ./surveil.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path.cwd() / DEFAULT_NAME
    if local.exists():
        return local
    raise ConfigError(
        f"{DEFAULT_NAME}: no configuration found (pass --config FILE, set {ENV_VAR}, "
        "or create one with `surveil init DIR`)"
    )


def example_text() -> str:
    """The annotated default configuration (the content of config.example.toml)."""
    out = [
        "# surveil configuration. Every key is optional; shown values are the defaults.",
        "# Validation is strict: an unknown key or a wrong type stops every command (exit 2).",
    ]
    for section, keys in SPEC.items():
        out.append("")
        out.append(f"[{section}]")
        for name, key in keys.items():
            if key.items is None:
                out.append(f"# {key.help}")
                out.append(f"{name} = {_toml_value(key.default)}")
        for name, key in keys.items():  # arrays of tables last: they close the section
            if key.items is not None:
                out.append(f"# {name}: {key.help} (none by default), e.g.")
                out.append(f"# [[{section}.{name}]]")
                for sub_name, sub in key.items.items():
                    need = "required" if sub.default is None else "optional"
                    out.append(f"# # {sub.help} ({need}"
                               + (f"; one of {', '.join(sub.choices)}" if sub.choices else "")
                               + ")")
                    out.append(f"# {sub_name} = {_toml_value(sub.example)}")
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
