"""Shared fixtures. numba's cache is shared by every test (compiling once per machine, not once
per temporary data dir); everything else is per test."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".pytest_cache" / "numba"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

from appliance import config, store  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
DATA = ROOT / "tests" / "data"


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    """A fresh data dir with the default config and an empty store."""
    path = tmp_path / "surveil.toml"
    path.write_text(config.example_text(), encoding="utf-8")
    loaded = config.load(path)
    store.connect(loaded.store_path, create=True).close()
    return loaded


@pytest.fixture
def con(cfg: config.Config):
    connection = store.connect(cfg.store_path)
    yield connection
    connection.close()
