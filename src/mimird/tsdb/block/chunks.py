"""A block's chunk segment files (`chunks/000001`, `000002`, ...), as Prometheus's tsdb/chunks writes them.

Layout (docs/format/block.md): an 8-byte segment header (magic 0x85BD40DD, format version 1, three zero
bytes of padding), then chunks one after another, each `uvarint(len(data)) | encoding byte | data |
CRC-32C(encoding byte + data)`. A chunk's reference is `(segment index << 32) | offset of its length
varint`, the segment index counting from 0 for file 000001. A new segment starts once the next chunk
would take the current one past the segment size (512 MiB unless told otherwise).

`ChunkWriter` appends chunks and hands back their references; `ChunkReader` maps the segments and
returns chunk bytes by reference after checking each chunk's checksum.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from mimird._fast.blockindex import frame_chunks, read_chunks
from mimird._fast.crc32c import crc32c
from mimird._fast.varint import decode_uvarint, encode_uvarint

SEGMENT_MAGIC = 0x85BD40DD
SEGMENT_FORMAT_V1 = 1
SEGMENT_HEADER = struct.pack(">IB3x", SEGMENT_MAGIC, SEGMENT_FORMAT_V1)
SEGMENT_HEADER_SIZE = len(SEGMENT_HEADER)
DEFAULT_SEGMENT_SIZE = 512 * 1024 * 1024
ENCODING_XOR = 1
# The writer budgets a chunk at its worst-case framing, as Prometheus does when deciding to cut:
# a 5-byte length (binary.MaxVarintLen32), the encoding byte and the CRC.
_MAX_FRAMING = 5 + 1 + 4
_WRITE_BUFFER = 1 << 20


class CorruptChunkError(ValueError):
    """A chunk segment file or a chunk in it does not parse or fails its checksum."""


def segment_name(index: int) -> str:
    """The file name of segment `index` (0-based): 000001 for the first."""
    return f"{index + 1:06d}"


def chunk_ref(segment: int, offset: int) -> int:
    """The reference of the chunk at `offset` in segment `segment` (0-based)."""
    return (segment << 32) | offset


def split_chunk_ref(ref: int) -> tuple[int, int]:
    """(segment index, offset) of a chunk reference."""
    return ref >> 32, ref & 0xFFFFFFFF


class ChunkWriter:
    """Appends chunks to the segment files of one block's `chunks/` directory.

    Files are written through a buffer and fsynced when the segment is finished; `close()` must be
    called (or the writer used as a context manager) for the last segment to reach the disk.
    """

    def __init__(self, chunks_dir: str | os.PathLike, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        if segment_size <= SEGMENT_HEADER_SIZE + _MAX_FRAMING:
            raise ValueError(f"segment size {segment_size} cannot hold a chunk")
        if segment_size > 1 << 32:
            raise ValueError("segment size must fit the 32-bit offset of a chunk reference")
        self.dir = Path(chunks_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_size = segment_size
        self.segment_sizes: list[int] = []
        self._file = None
        self._position = 0
        self.num_chunks = 0

    def _cut(self) -> None:
        self._finish_segment()
        self._file = open(self.dir / segment_name(len(self.segment_sizes)), "wb", buffering=_WRITE_BUFFER)
        self._file.write(SEGMENT_HEADER)
        self._position = SEGMENT_HEADER_SIZE
        self.segment_sizes.append(SEGMENT_HEADER_SIZE)

    def _finish_segment(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.segment_sizes[-1] = self._position

    def write_chunk(self, data: bytes, encoding: int = ENCODING_XOR) -> int:
        """Append one chunk's bytes and return its reference."""
        if self._file is None or self._position + len(data) + _MAX_FRAMING > self.segment_size:
            if len(data) + _MAX_FRAMING + SEGMENT_HEADER_SIZE > self.segment_size:
                raise ValueError(f"chunk of {len(data)} bytes does not fit a segment of {self.segment_size}")
            if self._file is None or self._position > SEGMENT_HEADER_SIZE:
                self._cut()
        ref = chunk_ref(len(self.segment_sizes) - 1, self._position)
        encoding_byte = bytes((encoding,))
        framed = b"".join((encode_uvarint(len(data)), encoding_byte, data,
                           crc32c(data, crc32c(encoding_byte)).to_bytes(4, "big")))
        self._file.write(framed)
        self._position += len(framed)
        self.num_chunks += 1
        return ref

    def write_chunks(self, chunks: list[bytes], encoding: int = ENCODING_XOR) -> list[int]:
        """Append several chunks (a series' worth) and return their references, in order.

        The same bytes as `write_chunk` one by one, framed in one pass.
        """
        worst_case = sum(map(len, chunks)) + _MAX_FRAMING * len(chunks)
        if self._file is None or self._position + worst_case > self.segment_size:
            # The batch may cross a segment boundary (or starts the first): place chunk by chunk.
            return [self.write_chunk(data, encoding) for data in chunks]
        framed, offsets = frame_chunks(chunks, encoding)
        base = chunk_ref(len(self.segment_sizes) - 1, self._position)
        self._file.write(framed)
        self._position += len(framed)
        self.num_chunks += len(chunks)
        return (offsets + base).tolist()

    def close(self) -> list[int]:
        """Finish the last segment; return the byte size of every segment, in order."""
        self._finish_segment()
        if not self.segment_sizes:
            # A block without chunks still has its chunks directory, empty, as Prometheus leaves it.
            self.dir.mkdir(parents=True, exist_ok=True)
        return list(self.segment_sizes)

    def abort(self) -> None:
        """Close the current file without syncing (the caller discards the directory)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ChunkReader:
    """Memory-maps the segment files of a `chunks/` directory and reads chunks by reference."""

    def __init__(self, chunks_dir: str | os.PathLike) -> None:
        self.dir = Path(chunks_dir)
        if not self.dir.is_dir():
            raise CorruptChunkError(f"{self.dir}: chunks directory is missing")
        names = sorted(p.name for p in self.dir.iterdir() if p.name.isdigit())
        self._maps: list[mmap.mmap | bytes] = []
        for index, name in enumerate(names):
            if name != segment_name(index):
                raise CorruptChunkError(f"{self.dir}: segment {name} out of sequence (expected "
                                        f"{segment_name(index)})")
            self._maps.append(self._map_segment(self.dir / name))
        self._views = [memoryview(m) for m in self._maps]

    @staticmethod
    def _map_segment(path: Path) -> mmap.mmap | bytes:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < SEGMENT_HEADER_SIZE:
                raise CorruptChunkError(f"{path}: {size} bytes is shorter than the segment header")
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        magic, version = struct.unpack_from(">IB", mapped, 0)
        if magic != SEGMENT_MAGIC:
            mapped.close()
            raise CorruptChunkError(f"{path}: bad magic {magic:#010x}")
        if version != SEGMENT_FORMAT_V1:
            mapped.close()
            raise CorruptChunkError(f"{path}: unknown chunk format version {version}")
        return mapped

    @property
    def num_segments(self) -> int:
        """How many segment files the directory holds."""
        return len(self._maps)

    @property
    def segments(self) -> list[memoryview]:
        """The mapped segment files, in order (index = the segment number of a chunk ref)."""
        return self._views

    def chunk_with_encoding(self, ref: int) -> tuple[int, memoryview]:
        """(encoding, data) of the chunk `ref`; data is a view into the mapped file.

        Raises CorruptChunkError if the reference points outside the files or the checksum fails.
        """
        segment, offset = split_chunk_ref(ref)
        if segment >= len(self._views):
            raise CorruptChunkError(f"chunk ref {ref:#x}: segment {segment_name(segment)} does not exist")
        view = self._views[segment]
        if offset < SEGMENT_HEADER_SIZE or offset >= len(view):
            raise CorruptChunkError(f"chunk ref {ref:#x}: offset {offset} is outside segment "
                                    f"{segment_name(segment)} ({len(view)} bytes)")
        try:
            length, start = decode_uvarint(view, offset)
        except ValueError:
            raise CorruptChunkError(f"chunk ref {ref:#x}: bad length varint") from None
        end = start + 1 + length
        if end + 4 > len(view):
            raise CorruptChunkError(f"chunk ref {ref:#x}: {length} bytes run past the end of segment "
                                    f"{segment_name(segment)}")
        if crc32c(view[start:end]) != int.from_bytes(view[end:end + 4], "big"):
            raise CorruptChunkError(f"chunk ref {ref:#x}: checksum mismatch")
        return view[start], view[start + 1:end]

    def chunks(self, refs: np.ndarray) -> list[tuple[int, bytes]]:
        """(encoding, data bytes) of each chunk of `refs` (uint64), checksums verified in one pass."""
        try:
            return read_chunks(self._views, np.ascontiguousarray(refs, dtype=np.uint64), SEGMENT_HEADER_SIZE)
        except ValueError as exc:
            raise CorruptChunkError(str(exc)) from None

    def chunk(self, ref: int) -> bytes:
        """The data bytes of chunk `ref` (checksum verified)."""
        return bytes(self.chunk_with_encoding(ref)[1])

    def close(self) -> None:
        """Unmap the segments (views handed out before must not be used after this)."""
        for view in self._views:
            view.release()
        self._views = []
        for mapped in self._maps:
            try:
                mapped.close()
            except BufferError:
                # A caller still holds a chunk view; the map goes when the last view does.
                pass
        self._maps = []
