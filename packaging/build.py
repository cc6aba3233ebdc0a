"""Build the one-dir PyInstaller bundle and ship it as one tarball (``make bundle``).

Steps: write ``surveil_build_info`` (version, git commit, dependency list) -> run PyInstaller on
packaging/surveil.spec -> drop libraries linked but unused (``unlink_unused``), strip debug
symbols and symlink duplicates (``slim``) -> add install.sh and BUILD_INFO.json -> tar+gzip
reproducibly into ``dist/surveil-<version>-linux-x86_64.tar.gz`` and write its ``.sha256`` next
to it; write ``build/bundle/inventory.txt`` (where the unpacked size goes).

Must run with the bundle venv's interpreter (.venv-bundle, see Makefile), from any directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import time
import tomllib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.path.join(REPO, "build", "bundle")
DIST = os.path.join(REPO, "dist")


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def build_info() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    deps = sorted(
        (d.metadata["Name"], d.version)
        for d in md.distributions()
        if d.metadata["Name"]
        and d.metadata["Name"].lower()
        not in {
            "pip",
            "setuptools",
            "pyinstaller",
            "pyinstaller-hooks-contrib",
            "altgraph",
            "pytest",
            "ruff",
            "pluggy",
            "iniconfig",
            "surveil",
        }
    )
    commit = _git("rev-parse", "HEAD") or "unknown"
    dirty = (
        bool(_git("status", "--porcelain", "--untracked-files=no")) if commit != "unknown" else True
    )
    epoch = int(
        os.environ.get("SOURCE_DATE_EPOCH") or _git("log", "-1", "--format=%ct") or time.time()
    )
    return {
        "name": project["name"],
        "version": project["version"],
        "git_commit": commit,
        "git_dirty": dirty,
        "build_time_epoch": epoch,
        "python": platform.python_version(),
        "platform": "linux-x86_64",
        "frozen": True,
        "dependencies": {name: ver for name, ver in deps},
    }


#: Shared libraries that pyarrow's wheel links every extension module against (DT_NEEDED) although
#: none of them uses a symbol from it; only the excluded ``pyarrow._substrait`` module does.
#: ``unlink_unused`` removes the DT_NEEDED entries and the library (4.5 MB), after checking with
#: ``nm`` that no remaining file resolves a symbol from it.
UNUSED_LIBS = ("libarrow_substrait.so",)


def _elf_needed(data: bytes) -> tuple[int, int, list[tuple[int, int]], dict[int, str]] | None:
    """(offset, size, [(tag, value)...], {entry index: needed soname}) of the dynamic section of
    a little-endian ELF64 file, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dyn = [], None
    for i in range(phnum):
        p_type, _flags, off, vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:
            loads.append((vaddr, off, filesz))
        elif p_type == 2:
            dyn = (off, filesz)
    if dyn is None:
        return None
    entries = [struct.unpack_from("<qQ", data, dyn[0] + 16 * i) for i in range(dyn[1] // 16)]
    strtab = next((v for t, v in entries if t == 5), None)  # DT_STRTAB (a virtual address)
    if strtab is None:
        return None
    base = next((off + strtab - va for va, off, sz in loads if va <= strtab < va + sz), None)
    if base is None:
        return None
    names = {}
    for i, (tag, val) in enumerate(entries):
        if tag == 0:
            break
        if tag == 1:  # DT_NEEDED
            names[i] = data[base + val : data.index(b"\0", base + val)].decode()
    return dyn[0], dyn[1], entries, names


def _dynamic_symbols(path: str, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, path], capture_output=True, text=True, check=True)
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()}


def unlink_unused(internal: str) -> None:
    """Drop the UNUSED_LIBS from the bundle: remove their DT_NEEDED entries (what
    ``patchelf --remove-needed`` does: later entries move up, the section keeps its size) and
    the files. Fails the build if a remaining file uses a symbol of one of them; without
    binutils' ``nm`` to check that, leaves everything as it is."""
    if not shutil.which("nm"):
        return
    libs, elves = [], []
    for dirpath, _dirs, files in os.walk(internal):
        for fn in files:
            path = os.path.join(dirpath, fn)
            if fn.startswith(UNUSED_LIBS):
                libs.append(os.path.realpath(path))
            elif not os.path.islink(path):
                with open(path, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        elves.append(path)
    if not libs:
        return
    provided = set().union(*(_dynamic_symbols(p, True) for p in set(libs)))
    for path in elves:
        with open(path, "rb") as f:
            data = f.read()
        dyn = _elf_needed(data)
        if dyn is None:
            continue
        off, _size, entries, names = dyn
        drop = {i for i, n in names.items() if n.startswith(UNUSED_LIBS)}
        if not drop:
            continue
        used = _dynamic_symbols(path, False) & provided
        if used:
            raise SystemExit(f"{path} uses {sorted(used)[:5]} from {UNUSED_LIBS}: keep it")
        kept = [e for i, e in enumerate(entries) if i not in drop]
        kept += [(0, 0)] * (len(entries) - len(kept))  # DT_NULL padding
        with open(path, "r+b") as f:
            f.seek(off)
            f.write(b"".join(struct.pack("<qQ", *e) for e in kept))
    for dirpath, _dirs, files in os.walk(internal):
        for fn in files:
            if fn.startswith(UNUSED_LIBS):
                os.remove(os.path.join(dirpath, fn))


def slim(internal: str) -> None:
    """Strip debug symbols from ELF files (wheels ship raylet, gcs_server, libarrow and
    libpython unstripped: ~80 MB) and turn duplicate files into relative symlinks.
    ``--strip-unneeded`` keeps the dynamic symbol tables that loading needs. Libraries that
    auditwheel vendored into ``<dist>.libs`` were rewritten by patchelf: strip would misalign
    their load segments ("ELF load command address/offset not page-aligned"), so they stay."""
    if shutil.which("strip"):
        elf = []
        for dirpath, _dirs, files in os.walk(internal):
            if any(part.endswith(".libs") for part in dirpath.split(os.sep)):
                continue
            for fn in files:
                path = os.path.join(dirpath, fn)
                if os.path.islink(path) or os.path.getsize(path) < (64 << 10):
                    continue
                with open(path, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        elf.append(path)
        for i in range(0, len(elf), 200):
            subprocess.run(["strip", "--strip-unneeded", *elf[i : i + 200]], check=True)
    by_key: dict[tuple[int, str], str] = {}
    for dirpath, _dirs, files in os.walk(internal):
        for fn in sorted(files):
            path = os.path.join(dirpath, fn)
            if os.path.islink(path) or os.path.getsize(path) < (64 << 10):
                continue
            with open(path, "rb") as f:
                key = (os.path.getsize(path), hashlib.sha256(f.read()).hexdigest())
            first = by_key.setdefault(key, path)
            if first != path:
                os.remove(path)
                os.symlink(os.path.relpath(first, dirpath), path)


def write_inventory(stage: str, dest: str) -> str:
    """Where the unpacked size goes: every top-level entry of ``_internal`` and every file of
    1 MB or more, biggest first (symlinks count as 0, like ``du``)."""

    def size(path: str) -> int:
        if os.path.islink(path):
            return 0
        if os.path.isfile(path):
            return os.path.getsize(path)
        return sum(
            os.path.getsize(os.path.join(d, f))
            for d, _dirs, files in os.walk(path)
            for f in files
            if not os.path.islink(os.path.join(d, f))
        )

    internal = os.path.join(stage, "_internal")
    tops = [(size(os.path.join(internal, n)), "_internal/" + n) for n in os.listdir(internal)]
    tops.append((size(os.path.join(stage, "surveil")), "surveil (bootloader + PYZ)"))
    files = []
    for dirpath, _dirs, names in os.walk(stage):
        for n in names:
            path = os.path.join(dirpath, n)
            if not os.path.islink(path) and os.path.getsize(path) >= 1_000_000:
                files.append((os.path.getsize(path), os.path.relpath(path, stage)))
    with open(dest, "w") as f:
        for title, rows in (("top-level entries", tops), ("files >= 1 MB", files)):
            f.write(f"# {title}\n")
            for n, name in sorted(rows, reverse=True):
                if n >= 100_000:
                    f.write(f"{n / 1e6:8.1f} MB  {name}\n")
    return dest


def main() -> int:
    t0 = time.time()
    info = build_info()
    gen = os.path.join(BUILD, "gen")
    os.makedirs(gen, exist_ok=True)
    with open(os.path.join(gen, "appliance_build_info.py"), "w") as f:
        f.write('"""Generated by packaging/build.py at bundle time. Do not edit."""\n')
        f.write(f"VERSION = {info['version']!r}\n")
        f.write(f"GIT_COMMIT = {info['git_commit'][:12]!r}\n")
        f.write(f"GIT_COMMIT_FULL = {info['git_commit']!r}\n")
        f.write(f"GIT_DIRTY = {info['git_dirty']!r}\n")
        f.write(f"DEPENDENCIES = {info['dependencies']!r}\n")
        f.write(f"BUILD_INFO = {info!r}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            os.path.join(BUILD, "dist"),
            "--workpath",
            os.path.join(BUILD, "work"),
            os.path.join(REPO, "packaging", "surveil.spec"),
        ],
        cwd=REPO,
        check=True,
        # zlib level 9 for the PYZ too (PyInstaller's default there is 6): -0.2 MB, same load speed.
        env={**os.environ, "PYINSTALLER_ZLIB_COMPRESSION_LEVEL": "9"},
    )
    stem = f"surveil-{info['version']}-linux-x86_64"
    stage = os.path.join(BUILD, "stage", stem)
    shutil.rmtree(os.path.dirname(stage), ignore_errors=True)
    os.makedirs(os.path.dirname(stage))
    shutil.move(os.path.join(BUILD, "dist", "surveil"), stage)
    unlink_unused(os.path.join(stage, "_internal"))
    slim(os.path.join(stage, "_internal"))
    shutil.copy2(os.path.join(REPO, "packaging", "install.sh"), os.path.join(stage, "install.sh"))
    os.chmod(os.path.join(stage, "install.sh"), 0o755)
    with open(os.path.join(stage, "BUILD_INFO.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.makedirs(DIST, exist_ok=True)
    tarball = os.path.join(DIST, stem + ".tar.gz")
    # Reproducible archive: sorted names, fixed owner and mtime.
    subprocess.run(
        [
            "tar",
            "--sort=name",
            f"--mtime=@{info['build_time_epoch']}",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            os.path.dirname(stage),
            "-cf",
            tarball + ".tmp",
            "--use-compress-program=gzip -6 -n",
            stem,
        ],
        check=True,
    )
    os.replace(tarball + ".tmp", tarball)
    h = hashlib.sha256()
    with open(tarball, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with open(tarball + ".sha256", "w") as f:
        f.write(f"{h.hexdigest()}  {os.path.basename(tarball)}\n")
    unpacked = int(
        subprocess.run(
            ["du", "-sb", stage], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    print(f"bundle: {tarball}")
    print(f"  sha256   {h.hexdigest()}")
    print(f"  tarball  {os.path.getsize(tarball) / 1e6:.1f} MB; unpacked {unpacked / 1e6:.1f} MB")
    inventory = write_inventory(stage, os.path.join(BUILD, "inventory.txt"))
    print(f"  built in {time.time() - t0:.0f} s; size inventory: {inventory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
