import sys

import pytest

from appliance import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_worker_keeps_freed_memory_once_per_process(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True  # idempotent
