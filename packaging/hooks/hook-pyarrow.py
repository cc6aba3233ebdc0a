"""PyInstaller hook for pyarrow, overriding pyinstaller-hooks-contrib's (which takes everything).

Leaves out what the product does not use: Arrow Flight, the S3/GCS/Azure/HDFS filesystems, CUDA,
the JVM bridge, the C++ test module, tests, headers and Cython sources.
"""

import os

from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs, collect_submodules

EXCLUDED_MODULES = (
    "pyarrow.flight",
    "pyarrow._flight",
    "pyarrow._s3fs",
    "pyarrow._gcsfs",
    "pyarrow._azurefs",
    "pyarrow._hdfs",
    "pyarrow.cuda",
    "pyarrow._cuda",
    "pyarrow.jvm",
    "pyarrow._pyarrow_cpp_tests",
    "pyarrow.tests",
    "pyarrow.conftest",
    "pyarrow.benchmark",
)
EXCLUDED_LIBS = ("libarrow_flight", "libarrow_python_flight", "libarrow_s3")


def _keep_module(name: str) -> bool:
    return not any(name == m or name.startswith(m + ".") for m in EXCLUDED_MODULES)


hiddenimports = collect_submodules("pyarrow", filter=_keep_module)
excludedimports = list(EXCLUDED_MODULES)
binaries = [
    (src, dst)
    for src, dst in collect_dynamic_libs("pyarrow")
    if not os.path.basename(src).startswith(EXCLUDED_LIBS)
    and not os.path.basename(src).startswith(
        tuple(m.split(".")[-1] + "." for m in EXCLUDED_MODULES)
    )
]
datas = collect_data_files(
    "pyarrow",
    excludes=["include", "includes", "tests", "src", "**/*.pxd", "**/*.pyx", "**/*.pxi", "**/*.h"],
)
