"""Shared helpers of the spatialzarr Python tests."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

# The test modules import their helpers (this file, workers, segmentation) by name.
sys.path.insert(0, str(Path(__file__).parent))

LONG = os.environ.get("SPATIALZARR_PY_LONG") == "1"


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: kind, inode, size and content hash (lock files,
    which every call opens, are left out: their content never changes)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if path.is_file() and not path.is_symlink():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", st.st_ino, st.st_size, digest)
            else:
                out[rel] = ("dir", st.st_ino)
    return out


@pytest.fixture
def dataset_path(tmp_path: Path) -> Path:
    return tmp_path / "data.zarr"
