"""PyInstaller hook for Ray (none ships with PyInstaller or pyinstaller-hooks-contrib).

Collects Ray core only: the Python modules a local single-node Ray needs (driver, workers, the
raylet-launched helpers: runtime-env agent, minimal dashboard agent, log monitor, reaper), the
`raylet` and `gcs_server` executables as *binaries* (so they keep their exec bit and get their
shared-library dependencies analysed) and the vendored `thirdparty_files` trees that Ray puts on
sys.path at run time. Libraries and assets the product does not use are left out (see
EXCLUDED_PREFIXES): Java jars, the dashboard web client, RLlib/Tune/Serve/Train/Data/LLM/workflow.
"""

import os

from PyInstaller.utils.hooks import collect_submodules, get_package_paths

EXCLUDED_PREFIXES = (
    "ray.rllib",
    "ray.tune",
    "ray.serve",
    "ray.train",
    "ray.data",
    "ray.llm",
    "ray.workflow",
    "ray.air",
    "ray.jars",
    "ray.cpp",
    "ray.dashboard.client",
    "ray.dashboard.modules.serve",
    "ray.dashboard.modules.train",
    "ray.dashboard.modules.data",
    "ray.util.dask",
    "ray.util.spark",
    "ray.autoscaler._private.aws",
    "ray.autoscaler._private.gcp",
    "ray.autoscaler._private.azure",
    "ray.autoscaler._private.kuberay",
    "ray.autoscaler._private.vsphere",
    "ray.autoscaler._private.aliyun",
    "ray.autoscaler._private.fake_multi_node",
    "ray.autoscaler._private.spark",
    "ray.tests",
)


def _keep(name: str) -> bool:
    if ".tests" in name or name.endswith(".conftest"):
        return False
    return not any(name == p or name.startswith(p + ".") for p in EXCLUDED_PREFIXES)


# Helpers the raylet/driver start by *file path* are imported by nothing, so list them all.
hiddenimports = collect_submodules("ray", filter=_keep, on_error="ignore")
# Imported from Cython (_raylet.so), invisible to the bytecode scanner: Ray's runtime requirements.
hiddenimports += collect_submodules("msgpack") + collect_submodules("google.protobuf")
hiddenimports += ["click", "filelock", "jsonschema", "packaging", "yaml", "requests"]
excludedimports = list(EXCLUDED_PREFIXES)

_, _ray_dir = get_package_paths("ray")

binaries = [
    (os.path.join(_ray_dir, "core", "src", "ray", "raylet", "raylet"), "ray/core/src/ray/raylet"),
    (os.path.join(_ray_dir, "core", "src", "ray", "gcs", "gcs_server"), "ray/core/src/ray/gcs"),
]

datas = []
# Vendored packages Ray adds to sys.path by directory at run time: ray/__init__.py inserts
# ray/thirdparty_files (psutil, colorama); the runtime-env agent inserts its own (aiohttp & co).
for rel in (
    "thirdparty_files",
    os.path.join("_private", "runtime_env", "agent", "thirdparty_files"),
):
    root = os.path.join(_ray_dir, rel)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for fn in filenames:
            src = os.path.join(dirpath, fn)
            datas.append((src, os.path.join("ray", os.path.relpath(dirpath, _ray_dir))))
# Small non-Python resources Ray reads from its package directory.
for rel in ("widgets/templates", "autoscaler/local", "autoscaler/ray-schema.json", "py.typed"):
    src = os.path.join(_ray_dir, rel)
    if os.path.isdir(src):
        for fn in os.listdir(src):
            if not fn.endswith((".py", ".pyc")) and os.path.isfile(os.path.join(src, fn)):
                datas.append((os.path.join(src, fn), os.path.join("ray", rel)))
    elif os.path.exists(src):
        datas.append((src, os.path.join("ray", os.path.dirname(rel))))
