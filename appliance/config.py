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


SPEC: dict[str, dict[str, Key]] = {
    "data": {
        "dir": Key(str, ".", "data directory (events, quarantine, store); relative to this file"),
    },
    "ingest": {
        "trade_date_tz": Key(str, "UTC", "IANA time zone whose calendar date is the trade date"),
    },
    "pipeline": {
        "mode": Key(str, "auto", "auto | ray | inprocess (auto: in-process below "
                    "inprocess_max_rows events, Ray above)", ("auto", "ray", "inprocess")),
        "inprocess_max_rows": Key(int, 200_000, "largest day scored in-process in auto mode",
                                  minimum=0),
        "partitions": Key(int, 0, "partitions per trade date (0 = 2 per Ray CPU)", minimum=0),
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
    "detectors.spoofing": {
        "enabled": Key(bool, True, "run the spoofing detector"),
        "alert_floor": Key(int, 500, "clusters scoring at or above this become alerts",
                           minimum=200),
    },
    "console": {
        "user": Key(str, "", "name recorded in the audit log ('' = the OS login name)"),
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
    return names[t]


def _check_value(where: str, dotted: str, key: Key, value: Any) -> Any:
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
            out.append(f"# {key.help}")
            out.append(f"{name} = {_toml_value(key.default)}")
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
