"""PyInstaller hook for numba, overriding pyinstaller-hooks-contrib's: numba's C extensions
(_devicearray, mviewbuf, ...) and many typing/lowering modules are imported from C or registered
lazily, so collect every submodule except tests, the CUDA target (unused; needs a GPU) and the
OpenMP threading layer (omppool + libgomp; numba falls back to its own ``workqueue`` layer, and the
product uses no ``parallel=True`` kernels; TBB's ``tbbpool`` is dropped in surveil.spec)."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules


def _keep(name: str) -> bool:
    return (
        ".tests" not in name
        and not name.startswith("numba.cuda")
        and name not in ("numba.np.ufunc.omppool", "numba.np.ufunc.tbbpool")
    )


hiddenimports = collect_submodules("numba", filter=_keep, on_error="ignore") + ["llvmlite"]
excludedimports = [
    "IPython",
    "numba.cuda",
    "numba.tests",
    "numba.np.ufunc.omppool",
    "numba.np.ufunc.tbbpool",
]
datas = collect_data_files(
    "numba", excludes=["**/tests/**", "cuda/**", "**/*.c", "**/*.h", "**/*.cpp"]
)
