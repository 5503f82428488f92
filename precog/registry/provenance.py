"""Where a model came from: the sha256 of its artifact and training data, and the code version."""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from precog import resources

if TYPE_CHECKING:
    from precog.settings import Settings


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``.

    >>> sha256_hex(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (read in blocks by the standard library)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def training_data_sha256(features: list[str], X: np.ndarray, y: np.ndarray) -> str:
    """Fingerprint of what a model was fitted on: its feature names, matrix and labels.

    sha256 over the UTF-8 feature names joined by newlines, a NUL byte, the matrix as
    C-ordered little-endian float64, then the labels as int8. Equal training data gives
    equal hashes on any machine.

    >>> X = np.array([[1.0, 2.0], [3.0, 4.0]]); y = np.array([0, 1])
    >>> training_data_sha256(["a", "b"], X, y) == training_data_sha256(["a", "b"], X, y)
    True
    >>> training_data_sha256(["a", "b"], X, y) == training_data_sha256(["a", "b"], X, 1 - y)
    False
    """
    h = hashlib.sha256()
    h.update("\n".join(features).encode("utf-8"))
    h.update(b"\0")
    h.update(np.ascontiguousarray(X, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i1").tobytes())
    return h.hexdigest()


def code_version(settings: Settings | None = None) -> str:
    """``settings.code_version``, else the git short hash (``-dirty`` with local changes),
    else the installed package version."""
    if settings is not None and settings.code_version:
        return settings.code_version
    root = resources.checkout_root()
    return _detected_code_version(str(root) if root else None)


@lru_cache(maxsize=4)
def _detected_code_version(repo: str | None) -> str:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()

    if repo is not None:  # None: installed from a wheel, no checkout to ask
        try:
            head = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--untracked-files=no")
            return f"{head}-dirty" if dirty else head
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return importlib_metadata.version("precog")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
