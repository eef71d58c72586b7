"""Where the data sets live, and checking that a file is the published one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENVIRONMENT = "DIFFSC_DATA"


def data_dir(path=None) -> Path:
    """The data directory: ``path`` if given, else ``$DIFFSC_DATA``.

    Raises FileNotFoundError, saying how to set it, when neither names an
    existing directory.
    """
    if path is None:
        path = os.environ.get(ENVIRONMENT)
        if not path:
            raise FileNotFoundError(
                f"no data directory: pass data_dir=... or set the environment variable {ENVIRONMENT} "
                "to the folder holding the data sets (e.g. mnist/, gtzan-10x10/, review-polarity/)"
            )
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} does not exist")
    return path


def sha256(path: Path, opener=open) -> str:
    """SHA-256 of a file's bytes (``opener=gzip.open`` hashes the uncompressed content)."""
    digest = hashlib.sha256()
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require(path: Path, expected: str | None, source: str, opener=open) -> Path:
    """``path`` if it exists and (when ``expected`` is given) has that SHA-256.

    ``source`` says where to get the file; it goes into the error for a
    missing file and for one whose checksum differs.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; get it from {source}")
    if expected is not None:
        found = sha256(path, opener)
        if found != expected:
            raise ValueError(
                f"{path}: checksum mismatch (sha256 {found}, expected {expected}); the file is damaged "
                f"or not the published one: download it again from {source}"
            )
    return path
