"""Process environment contract for Ray and numba, shared by the probe and documented for the CLI.

``configure(data_dir)`` must run before numba or ray is imported. It keeps every writable path
under the data directory (never inside the read-only bundle, never in another user's /tmp), turns
off Ray's usage-stats reporting, and fixes the working directory so numba's on-disk cache index
(keyed by the cwd name for frozen modules) is stable across runs.

The CLI (appliance/) should do the same; see docs/install.md "Runtime environment".
"""

from __future__ import annotations

import os

#: Set in every process the app starts; entry.py refuses unrecognised invocations when present.
CHILD_MARKER = "SURVEIL_APP_PROCESS"


def ray_init_kwargs(data_dir: str, num_cpus: int | None = None) -> dict:
    """Keyword arguments for ``ray.init`` that keep Ray local, quiet and under ``data_dir``."""
    return {
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "_node_ip_address": "127.0.0.1",
        "_temp_dir": os.path.join(os.path.abspath(data_dir), "ray"),
    }


def configure(data_dir: str) -> None:
    data_dir = os.path.abspath(data_dir)
    cache = os.path.join(data_dir, "cache")
    ray_tmp = os.path.join(data_dir, "ray")
    for d in (cache, ray_tmp):
        os.makedirs(d, exist_ok=True)
    env = os.environ
    env["XDG_CACHE_HOME"] = cache
    env["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
    env["RAY_TMPDIR"] = ray_tmp
    env["TMPDIR"] = env.get("SURVEIL_TMPDIR", ray_tmp)
    # Nothing phones home.
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_USAGE_STATS_PROMPT_ENABLED"] = "0"
    # Loopback only: without this Ray resolves _node_ip_address="127.0.0.1" to the host's
    # routable IP and its gRPC servers (gcs_server, raylet, workers, runtime-env agent) listen
    # on all interfaces. With it, get_node_ip_address() returns 127.0.0.1 and every server binds
    # to loopback (measured with packaging/probe.py: all LISTEN sockets on 127.0.0.1).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    env[CHILD_MARKER] = "1"
    os.chdir(data_dir)
