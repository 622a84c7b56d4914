"""A bucket on the local filesystem, with object-store semantics.

Keys are `/`-separated paths under the root. Objects are written to a temporary file and renamed
into place, so a reader never sees half an object, as with a real object store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path


class FilesystemBucket:
    """Mimir's `filesystem` backend: one directory is the bucket."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        """Store `data` at `key` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def upload_file(self, key: str, source: str | os.PathLike) -> None:
        """Copy a local file to `key` atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path:
        """Where an object lives on disk (readers mmap blocks from here)."""
        return self._path(key)

    def iter(self, prefix: str = "") -> Iterator[str]:
        """Direct children of `prefix` (a directory-like key): names, directories ending with `/`."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            yield entry.name + "/" if entry.is_dir() else entry.name

    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix`."""
        shutil.rmtree(self._path(prefix), ignore_errors=True)
        self._prune_empty_parents(self._path(prefix).parent)

    def _prune_empty_parents(self, path: Path) -> None:
        while path != self.root and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
            path = path.parent
