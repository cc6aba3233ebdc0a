"""PyInstaller hook for pyarrow, overriding pyinstaller-hooks-contrib's (which takes everything).

Leaves out what the product does not use: Arrow Flight, the S3/GCS/Azure/HDFS filesystems, CUDA,
the JVM bridge, ORC, the Substrait Python bindings, Parquet modular encryption, the C++ test module,
tests, headers and Cython sources. pyarrow imports the optional ones inside ``try/except
ImportError`` (pyarrow.dataset: _dataset_orc, _dataset_parquet_encryption; _dataset.pyx:
pyarrow.substrait), so leaving them out only disables those features. libarrow_substrait itself
stays: _dataset.so links it.
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
    "pyarrow.orc",
    "pyarrow._orc",
    "pyarrow._dataset_orc",
    "pyarrow.substrait",
    "pyarrow._substrait",
    "pyarrow.parquet.encryption",
    "pyarrow._parquet_encryption",
    "pyarrow._dataset_parquet_encryption",
)
EXCLUDED_LIBS = (
    "libarrow_flight",
    "libarrow_python_flight",
    "libarrow_s3",
    "libarrow_python_parquet_encryption",
)


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
