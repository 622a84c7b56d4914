"""Object storage for blocks, laid out as Mimir's bucket: `<tenant>/<block ULID>/...`."""

from mimird.bucket.filesystem import FilesystemBucket

__all__ = ["FilesystemBucket"]
