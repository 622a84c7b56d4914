"""Block metadata: ULIDs, `meta.json` (Prometheus's BlockMeta plus the `thanos` section Mimir writes), and
the empty `tombstones` file.

meta.json is written as Go's encoding/json does with a tab indent, keys in the order of the Go structs
(Prometheus's tsdb.BlockMeta, then Mimir's block.ThanosMeta), so the file reads the same as one a Mimir
ingester or compactor uploads. Times are milliseconds; `maxTime` is exclusive.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mimird._fast.crc32c import crc32c

META_FILENAME = "meta.json"
TOMBSTONES_FILENAME = "tombstones"
INDEX_FILENAME = "index"
CHUNKS_DIRNAME = "chunks"
META_VERSION = 1
TOMBSTONES_MAGIC = 0x0130BA30
TOMBSTONES_FORMAT_V1 = 1
TENANT_LABEL = "__org_id__"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUES = {char: index for index, char in enumerate(_CROCKFORD)}
_RANDOM_BITS = 80


class ULIDGenerator:
    """Makes ULIDs: 48-bit Unix milliseconds then 80 random bits, as 26 Crockford base32 characters.

    Within one millisecond (or if the clock steps back) the random part of the previous ULID is
    incremented instead of redrawn, so ULIDs from one generator sort in the order they were made.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self, ms: int | None = None) -> str:
        """A new ULID string for the time `ms` (Unix milliseconds; now if None)."""
        ms = int(time.time() * 1000) if ms is None else ms
        if not 0 <= ms < 1 << 48:
            raise ValueError(f"ULID time {ms} is outside 48 bits")
        with self._lock:
            if ms <= self._last_ms and self._last_random + 1 < 1 << _RANDOM_BITS:
                ms = self._last_ms
                random_part = self._last_random + 1
            else:
                random_part = secrets.randbits(_RANDOM_BITS)
            self._last_ms, self._last_random = ms, random_part
        return encode_ulid((ms << _RANDOM_BITS) | random_part)


def encode_ulid(value: int) -> str:
    """The 26-character Crockford base32 text of a 128-bit ULID value."""
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode_ulid(text: str) -> int:
    """The 128-bit value of a ULID string; ValueError if it is not one."""
    if len(text) != 26 or text[0] not in "01234567":
        raise ValueError(f"not a ULID: {text!r}")
    value = 0
    for char in text.upper():
        digit = _CROCKFORD_VALUES.get(char)
        if digit is None:
            raise ValueError(f"not a ULID: {text!r}")
        value = (value << 5) | digit
    return value


def ulid_time_ms(text: str) -> int:
    """The millisecond timestamp in a ULID."""
    return decode_ulid(text) >> _RANDOM_BITS


def is_ulid(text: str) -> bool:
    """Whether `text` is a valid ULID string."""
    try:
        decode_ulid(text)
    except ValueError:
        return False
    return True


_generator = ULIDGenerator()


def new_ulid(ms: int | None = None) -> str:
    """A new ULID from the process-wide generator (monotonic within the process)."""
    return _generator.new(ms)


@dataclass
class BlockFile:
    """One file of a block as listed in the thanos section: path relative to the block, size in bytes."""

    rel_path: str
    size_bytes: int = 0


@dataclass
class BlockMeta:
    """The contents of meta.json."""

    ulid: str
    min_time: int
    max_time: int
    num_samples: int = 0
    num_series: int = 0
    num_chunks: int = 0
    level: int = 1
    sources: list[str] = field(default_factory=list)
    parents: list[dict] = field(default_factory=list)
    version: int = META_VERSION
    thanos_labels: dict[str, str] = field(default_factory=dict)
    downsample_resolution: int = 0
    source: str = ""
    segment_files: list[str] = field(default_factory=list)
    files: list[BlockFile] = field(default_factory=list)
    has_thanos: bool = True

    @property
    def tenant(self) -> str | None:
        """The tenant the block belongs to (the `__org_id__` external label), if any."""
        return self.thanos_labels.get(TENANT_LABEL)

    def to_json(self) -> dict:
        """The JSON object, with the key order of the Go structs."""
        compaction: dict = {"level": self.level}
        if self.sources:
            compaction["sources"] = list(self.sources)
        if self.parents:
            compaction["parents"] = [dict(p) for p in self.parents]
        doc: dict = {
            "ulid": self.ulid,
            "minTime": self.min_time,
            "maxTime": self.max_time,
            "stats": {"numSamples": self.num_samples, "numSeries": self.num_series,
                      "numChunks": self.num_chunks},
            "compaction": compaction,
            "version": self.version,
        }
        if self.has_thanos:
            thanos: dict = {
                "labels": dict(self.thanos_labels),
                "downsample": {"resolution": self.downsample_resolution},
                "source": self.source,
            }
            if self.segment_files:
                thanos["segment_files"] = list(self.segment_files)
            if self.files:
                thanos["files"] = [{"rel_path": f.rel_path, "size_bytes": f.size_bytes} if f.size_bytes
                                   else {"rel_path": f.rel_path} for f in self.files]
            doc["thanos"] = thanos
        return doc

    def dumps(self) -> str:
        """meta.json text: tab-indented with a trailing newline, as Go's json encoder writes it."""
        return json.dumps(self.to_json(), indent="\t", ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, doc: dict) -> BlockMeta:
        """Parse a meta.json object; ValueError if required fields are missing or of the wrong type."""
        try:
            if doc.get("version") != META_VERSION:
                raise ValueError(f"unexpected meta file version {doc.get('version')!r}")
            stats = doc.get("stats") or {}
            compaction = doc.get("compaction") or {}
            thanos = doc.get("thanos")
            meta = cls(
                ulid=str(doc["ulid"]),
                min_time=int(doc["minTime"]),
                max_time=int(doc["maxTime"]),
                num_samples=int(stats.get("numSamples", 0)),
                num_series=int(stats.get("numSeries", 0)),
                num_chunks=int(stats.get("numChunks", 0)),
                level=int(compaction.get("level", 0)),
                sources=[str(s) for s in compaction.get("sources") or []],
                parents=list(compaction.get("parents") or []),
                version=int(doc["version"]),
                has_thanos=thanos is not None,
            )
            if thanos is not None:
                meta.thanos_labels = {str(k): str(v) for k, v in (thanos.get("labels") or {}).items()}
                meta.downsample_resolution = int((thanos.get("downsample") or {}).get("resolution", 0))
                meta.source = str(thanos.get("source", ""))
                meta.segment_files = [str(s) for s in thanos.get("segment_files") or []]
                meta.files = [BlockFile(str(f["rel_path"]), int(f.get("size_bytes", 0)))
                              for f in thanos.get("files") or []]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed meta.json: {exc!r}") from None
        if not is_ulid(meta.ulid):
            raise ValueError(f"malformed meta.json: bad ulid {meta.ulid!r}")
        return meta


def read_meta(block_dir: str | os.PathLike) -> BlockMeta:
    """Read and parse `<block_dir>/meta.json`; ValueError if it is not valid."""
    path = Path(block_dir) / META_FILENAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return BlockMeta.from_json(doc)


def write_file_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` and fsync it."""
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so entries created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_meta(block_dir: str | os.PathLike, meta: BlockMeta) -> None:
    """Write meta.json into `block_dir` (through a temporary file and a rename, both synced)."""
    path = Path(block_dir) / META_FILENAME
    tmp = path.with_name(META_FILENAME + ".tmp")
    write_file_synced(tmp, meta.dumps().encode("utf-8"))
    os.replace(tmp, path)
    fsync_dir(block_dir)


def empty_tombstones() -> bytes:
    """The bytes of a tombstones file without tombstones: magic, version, CRC-32C of no records."""
    return struct.pack(">IB", TOMBSTONES_MAGIC, TOMBSTONES_FORMAT_V1) + crc32c(b"").to_bytes(4, "big")


def check_tombstones(data: bytes) -> int:
    """Check a tombstones file's header and checksum; return the byte count of its records.

    Raises ValueError if the file is not a valid tombstones file.
    """
    if len(data) < 9:
        raise ValueError(f"tombstones file of {len(data)} bytes is too short")
    magic, version = struct.unpack_from(">IB", data, 0)
    if magic != TOMBSTONES_MAGIC:
        raise ValueError(f"tombstones: bad magic {magic:#010x}")
    if version != TOMBSTONES_FORMAT_V1:
        raise ValueError(f"tombstones: unknown format version {version}")
    records = data[5:-4]
    if crc32c(records) != int.from_bytes(data[-4:], "big"):
        raise ValueError("tombstones: checksum mismatch")
    return len(records)
