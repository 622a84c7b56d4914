"""The block index file, Prometheus's index format v2: writer and memory-mapped reader.

Sections, in file order (docs/format/index.md draws each): header (magic 0xBAAAD700, version 2),
symbol table, series, label indices, postings lists, label offset table, postings offset table, TOC.
Every section but the header and the series entries is framed as `BE32 length | body | CRC-32C(body)`;
each series entry as `uvarint length | body | CRC-32C(body)`, aligned to 16 bytes so that a series ref
(what postings lists hold) is its offset / 16. Symbols are referenced by their position in the sorted
symbol table (the v2 rule). Postings lists are BE32 refs; their keys in the postings offset table are
sorted by label name then value, after the all-series list under the empty name and value.

`IndexWriter` takes the sorted symbols, then the series in label order in batches, and writes the
postings and tables on `close()`. `IndexReader` maps the file and reads sections on demand, checking
the checksum of every section and entry it reads; anything that does not parse raises CorruptIndexError.
"""

from __future__ import annotations

import bisect
import itertools
import mmap
import os
import struct
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from mimird._fast.blockindex import (
    decode_series,
    encode_series_batch,
    read_postings_offset_table,
    symbol_offsets,
)
from mimird._fast.crc32c import crc32c
from mimird._fast.postings import intersect_many, subtract, union_many
from mimird._fast.varint import decode_uvarint, encode_uvarint
from mimird.tsdb.labels import Labels, Matcher

INDEX_MAGIC = 0xBAAAD700
INDEX_FORMAT_V2 = 2
HEADER_SIZE = 5
TOC_SIZE = 6 * 8 + 4
SERIES_ALIGNMENT = 16
POSTINGS_ALIGNMENT = 4
ALL_POSTINGS_KEY = ("", "")
_WRITE_BUFFER = 1 << 22
_EMPTY_REFS = np.empty(0, dtype=np.uint64)
_EMPTY_REFS.flags.writeable = False


class CorruptIndexError(ValueError):
    """The index file does not parse, or a section fails its checksum."""


def _uvarint_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return encode_uvarint(len(data)) + data


def _framed(body: bytes) -> bytes:
    """`BE32 len(body) | body | CRC-32C(body)`, the frame of every index section."""
    return struct.pack(">I", len(body)) + body + crc32c(body).to_bytes(4, "big")


class IndexWriter:
    """Writes an index file in Prometheus's format v2.

    Call `add_symbols` once with every label name and value sorted, then `add_series` (any number of
    times) with the series in label order, then `close()`. Memory held across calls is the symbol
    lookup and, per series, its ref and label symbol ids: the postings are built from those at the end.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "wb", buffering=_WRITE_BUFFER)
        self._position = 0
        self._toc = {"symbols": 0, "series": 0, "label_indices": 0, "label_offset_table": 0,
                     "postings": 0, "postings_offset_table": 0}
        self._num_symbols = -1
        self._pair_names: list[np.ndarray] = []
        self._pair_values: list[np.ndarray] = []
        self._pair_refs: list[np.ndarray] = []
        self._series_refs: list[np.ndarray] = []
        self._symbols: list[str] = []
        self._closed = False
        self._write(struct.pack(">IB", INDEX_MAGIC, INDEX_FORMAT_V2))

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._position += len(data)

    def _pad(self, alignment: int) -> None:
        remainder = self._position % alignment
        if remainder:
            self._write(bytes(alignment - remainder))

    def add_symbols(self, symbols: Sequence[str]) -> None:
        """Write the symbol table: every label name and value of the block, sorted, without duplicates."""
        if self._num_symbols >= 0:
            raise RuntimeError("symbols were already written")
        for previous, current in itertools.pairwise(symbols):
            if not previous < current:
                raise ValueError(f"symbols out of order: {previous!r} before {current!r}")
        body = struct.pack(">I", len(symbols)) + b"".join(_uvarint_str(s) for s in symbols)
        self._toc["symbols"] = self._position
        self._write(_framed(body))
        self._num_symbols = len(symbols)
        # Kept only to write the label offset table's names and postings keys; these are the strings
        # the caller already holds.
        self._symbols = list(symbols)
        self._toc["series"] = self._position

    def add_series(self, order: np.ndarray, label_starts: np.ndarray, label_ids: np.ndarray,
                   chunk_starts: np.ndarray, chunk_mint: np.ndarray, chunk_maxt: np.ndarray,
                   chunk_refs: np.ndarray) -> np.ndarray:
        """Write the series `order[0], order[1], ...` (indices into the label and chunk arrays).

        Series `s` has symbol ids `label_ids[label_starts[s]:label_starts[s + 1]]` (name, value, ...
        with names increasing) and chunks `chunk_starts[s]:chunk_starts[s + 1]`. The caller
        guarantees label order across all calls. Returns the series refs, one per entry of `order`.
        """
        if self._num_symbols < 0:
            raise RuntimeError("add_symbols must come before add_series")
        order = np.ascontiguousarray(order, dtype=np.int64)
        label_starts = np.ascontiguousarray(label_starts, dtype=np.int64)
        label_ids = np.ascontiguousarray(label_ids, dtype=np.uint32)
        if len(label_ids) and int(label_ids.max()) >= self._num_symbols:
            raise ValueError("label symbol id out of range")
        data, refs = encode_series_batch(
            self._position, order, label_starts, label_ids,
            np.ascontiguousarray(chunk_starts, dtype=np.int64), np.ascontiguousarray(chunk_mint, dtype=np.int64),
            np.ascontiguousarray(chunk_maxt, dtype=np.int64), np.ascontiguousarray(chunk_refs, dtype=np.uint64))
        if len(refs) and int(refs[-1]) > 0xFFFFFFFF:
            raise ValueError("index too large: series refs exceed 32 bits")
        self._write(data)
        # The (name, value, ref) triples of the batch, from which close() builds the postings.
        counts = (label_starts[order + 1] - label_starts[order]) // 2
        starts = label_starts[order]
        rank_in_series = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts,
                                                                                  counts)
        pair_positions = np.repeat(starts, counts) + 2 * rank_in_series
        self._pair_names.append(label_ids[pair_positions])
        self._pair_values.append(label_ids[pair_positions + 1])
        self._pair_refs.append(np.repeat(refs.astype(np.uint32), counts))
        self._series_refs.append(refs)
        return refs

    def close(self) -> int:
        """Write label indices, postings, offset tables and TOC; sync and close. Returns the file size."""
        if self._closed:
            return self._position
        if self._num_symbols < 0:
            self.add_symbols([])
        names = np.concatenate(self._pair_names) if self._pair_names else np.empty(0, np.uint32)
        values = np.concatenate(self._pair_values) if self._pair_values else np.empty(0, np.uint32)
        refs = np.concatenate(self._pair_refs) if self._pair_refs else np.empty(0, np.uint32)
        all_refs = np.concatenate(self._series_refs) if self._series_refs else np.empty(0, np.uint64)
        self._pair_names = self._pair_values = self._pair_refs = self._series_refs = []
        # A stable sort keeps each list's refs in write order, which is ascending.
        by_pair = np.lexsort((values, names))
        names, values, refs = names[by_pair], values[by_pair], refs[by_pair]
        pair_changes = np.flatnonzero((names[1:] != names[:-1]) | (values[1:] != values[:-1])) + 1
        list_starts = np.concatenate(([0], pair_changes)) if len(names) else np.empty(0, np.int64)
        list_ends = np.concatenate((pair_changes, [len(names)])) if len(names) else np.empty(0, np.int64)
        list_names = names[list_starts]
        list_values = values[list_starts]
        symbols = self._symbols

        # Label indices: per name, the symbol ids of its values.
        self._toc["label_indices"] = self._position
        label_index_offsets: list[tuple[str, int]] = []
        name_changes = np.flatnonzero(list_names[1:] != list_names[:-1]) + 1
        name_starts = np.concatenate(([0], name_changes)) if len(list_names) else np.empty(0, np.int64)
        name_ends = np.concatenate((name_changes, [len(list_names)])) if len(list_names) else name_starts
        for start, end in zip(name_starts.tolist(), name_ends.tolist(), strict=True):
            self._pad(POSTINGS_ALIGNMENT)
            label_index_offsets.append((symbols[int(list_names[start])], self._position))
            body = struct.pack(">II", 1, end - start) + list_values[start:end].astype(">u4").tobytes()
            self._write(_framed(body))

        # Postings lists: the all-series list first, then one per label pair in sorted order.
        self._pad(POSTINGS_ALIGNMENT)
        self._toc["postings"] = self._position
        postings_offsets: list[tuple[str, str, int]] = []
        self._pad(POSTINGS_ALIGNMENT)
        postings_offsets.append(("", "", self._position))
        self._write(_framed(struct.pack(">I", len(all_refs)) + all_refs.astype(">u4").tobytes()))
        refs_be = refs.astype(">u4")
        for index, (start, end) in enumerate(zip(list_starts.tolist(), list_ends.tolist(), strict=True)):
            self._pad(POSTINGS_ALIGNMENT)
            postings_offsets.append((symbols[int(list_names[index])], symbols[int(list_values[index])],
                                     self._position))
            self._write(_framed(struct.pack(">I", end - start) + refs_be[start:end].tobytes()))

        self._toc["label_offset_table"] = self._position
        entries = [struct.pack(">I", len(label_index_offsets))]
        entries.extend(b"\x01" + _uvarint_str(name) + encode_uvarint(offset)
                       for name, offset in label_index_offsets)
        self._write(_framed(b"".join(entries)))

        self._toc["postings_offset_table"] = self._position
        entries = [struct.pack(">I", len(postings_offsets))]
        entries.extend(b"\x02" + _uvarint_str(name) + _uvarint_str(value) + encode_uvarint(offset)
                       for name, value, offset in postings_offsets)
        self._write(_framed(b"".join(entries)))

        toc = struct.pack(">6Q", self._toc["symbols"], self._toc["series"], self._toc["label_indices"],
                          self._toc["label_offset_table"], self._toc["postings"],
                          self._toc["postings_offset_table"])
        self._write(toc + crc32c(toc).to_bytes(4, "big"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._closed = True
        return self._position

    def abort(self) -> None:
        """Close the file without finishing it (the caller removes it)."""
        if not self._closed:
            self._file.close()
            self._closed = True


class IndexReader:
    """Reads an index file in format v2 through a memory map.

    On open it checks the header and TOC, locates every symbol (an offset per symbol, strings are
    decoded on use and cached) and loads the postings offset table (label names, their sorted values and
    where each postings list lies). Series entries and postings lists are read and checked on demand.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < HEADER_SIZE + TOC_SIZE:
                raise CorruptIndexError(f"{self.path}: {size} bytes is too short for an index")
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._data = memoryview(self._map)
        try:
            self._open()
        except CorruptIndexError:
            self.close()
            raise
        except ValueError as exc:
            self.close()
            raise CorruptIndexError(f"{self.path}: {exc}") from None

    def _open(self) -> None:
        data = self._data
        magic, version = struct.unpack_from(">IB", data, 0)
        if magic != INDEX_MAGIC:
            raise CorruptIndexError(f"{self.path}: bad magic {magic:#010x}")
        if version != INDEX_FORMAT_V2:
            raise CorruptIndexError(f"{self.path}: unsupported index format version {version}")
        self.version = version
        toc_start = len(data) - TOC_SIZE
        toc = data[toc_start:toc_start + 48]
        if crc32c(toc) != int.from_bytes(data[toc_start + 48:], "big"):
            raise CorruptIndexError(f"{self.path}: TOC checksum mismatch")
        (self.toc_symbols, self.toc_series, self.toc_label_indices, self.toc_label_offset_table,
         self.toc_postings, self.toc_postings_offset_table) = struct.unpack(">6Q", toc)
        for name, offset in (("symbols", self.toc_symbols), ("postings offset table",
                                                             self.toc_postings_offset_table)):
            if not HEADER_SIZE <= offset <= toc_start:
                raise CorruptIndexError(f"{self.path}: TOC points the {name} outside the file")

        start, end = self._section(self.toc_symbols, "symbol table")
        (count,) = struct.unpack_from(">I", data, start)
        self._symbol_offsets = symbol_offsets(data, start + 4, end, count)
        self._symbol_cache: dict[int, str] = {}
        self._symbol_list: list[str | None] | None = None
        self._pair_list: list[tuple[str, str] | None] | None = None

        start, end = self._section(self.toc_postings_offset_table, "postings offset table")
        (count,) = struct.unpack_from(">I", data, start)
        table = read_postings_offset_table(data, start + 4, end, count)
        self._postings_table: dict[str, tuple[list[str], list[int]]] = table
        all_entry = table.pop("", None)
        if all_entry is None or all_entry[0] != [""]:
            raise CorruptIndexError(f"{self.path}: postings offset table has no all-series list")
        self._all_postings_offset = all_entry[1][0]
        for name, (values, _) in table.items():
            if any(a >= b for a, b in itertools.pairwise(values)):
                raise CorruptIndexError(f"{self.path}: values of label {name!r} are not sorted")

    def _section(self, offset: int, what: str) -> tuple[int, int]:
        """(start, end) of the body of the length-and-CRC framed section at `offset`, checksum verified."""
        data = self._data
        if offset + 4 > len(data):
            raise CorruptIndexError(f"{self.path}: {what} at {offset} is outside the file")
        (length,) = struct.unpack_from(">I", data, offset)
        start, end = offset + 4, offset + 4 + length
        if end + 4 > len(data):
            raise CorruptIndexError(f"{self.path}: {what} at {offset} runs past the end of the file")
        if crc32c(data[start:end]) != int.from_bytes(data[end:end + 4], "big"):
            raise CorruptIndexError(f"{self.path}: {what} at {offset}: checksum mismatch")
        return start, end

    @property
    def num_symbols(self) -> int:
        """How many symbols the symbol table holds."""
        return len(self._symbol_offsets)

    def symbol(self, symbol_id: int) -> str:
        """The string of symbol `symbol_id` (its position in the sorted symbol table)."""
        text = self._symbol_cache.get(symbol_id)
        if text is not None:
            return text
        if not 0 <= symbol_id < len(self._symbol_offsets):
            raise CorruptIndexError(f"{self.path}: unknown symbol {symbol_id}")
        length, start = decode_uvarint(self._data, int(self._symbol_offsets[symbol_id]))
        try:
            text = sys.intern(str(self._data[start:start + length], "utf-8"))
        except UnicodeDecodeError:
            raise CorruptIndexError(f"{self.path}: symbol {symbol_id} is not UTF-8") from None
        self._symbol_cache[symbol_id] = text
        return text

    @property
    def data(self) -> memoryview:
        """The mapped index bytes."""
        return self._data

    @property
    def symbol_offsets(self) -> np.ndarray:
        """Where each symbol's length varint starts in the index (uint64, in symbol order)."""
        return self._symbol_offsets

    def symbol_list(self) -> list[str | None]:
        """A list with a slot per symbol: the decoded string, or None until a batched read decodes it
        (the cache of mimird._fast.blockselect, kept with the reader)."""
        if self._symbol_list is None:
            self._symbol_list = [None] * len(self._symbol_offsets)
        return self._symbol_list

    def pair_list(self) -> list[tuple[str, str] | None]:
        """A list with a slot per symbol for the label pair with that value, None until a batched read
        builds one (mimird._fast.blockselect's, kept with the reader)."""
        if self._pair_list is None:
            self._pair_list = [None] * len(self._symbol_offsets)
        return self._pair_list

    def symbols(self) -> Iterable[str]:
        """Every symbol, in order."""
        return (self.symbol(i) for i in range(len(self._symbol_offsets)))

    def label_names(self) -> list[str]:
        """Sorted label names of the block."""
        return sorted(self._postings_table)

    def label_values(self, name: str) -> list[str]:
        """Sorted values of label `name` (empty if no series has it)."""
        entry = self._postings_table.get(name)
        return list(entry[0]) if entry else []

    def _read_postings(self, offset: int) -> np.ndarray:
        start, end = self._section(offset, "postings list")
        (count,) = struct.unpack_from(">I", self._data, start)
        if end - start != 4 + 4 * count:
            raise CorruptIndexError(f"{self.path}: postings list at {offset}: {count} entries do not fill "
                                    f"{end - start} bytes")
        refs = np.frombuffer(self._data[start + 4:end], dtype=">u4").astype(np.uint64)
        if count > 1 and not bool(np.all(refs[1:] > refs[:-1])):
            raise CorruptIndexError(f"{self.path}: postings list at {offset} is not sorted")
        return refs

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted refs of the series with label `name`=`value` (uint64; empty if none)."""
        if (name, value) == ALL_POSTINGS_KEY:
            return self.all_postings()
        entry = self._postings_table.get(name)
        if entry is None:
            return _EMPTY_REFS
        values, offsets = entry
        index = bisect.bisect_left(values, value)
        if index == len(values) or values[index] != value:
            return _EMPTY_REFS
        return self._read_postings(offsets[index])

    def all_postings(self) -> np.ndarray:
        """Sorted refs of every series of the index."""
        return self._read_postings(self._all_postings_offset)

    def _postings_for_matcher(self, matcher: Matcher, accepted: bool) -> np.ndarray:
        exact = matcher.set_matches() if accepted else None
        if exact is not None:
            return union_many([self.postings(matcher.name, value) for value in exact if value != ""])
        entry = self._postings_table.get(matcher.name)
        if entry is None:
            return _EMPTY_REFS
        values, offsets = entry
        hits = matcher.matches_each(values)
        return union_many([self._read_postings(offsets[i]) for i, hit in enumerate(hits) if hit == accepted])

    def select(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted refs of the series that every matcher accepts (a missing label has the value "").

        Prometheus's PostingsForMatchers: intersect the postings of the matchers that need the label,
        subtract those of the values rejected by matchers that also accept "". No matchers select
        nothing.
        """
        if not matchers:
            return _EMPTY_REFS
        label_must_be_set = {m.name for m in matchers if not m.matches("")}
        intersecting: list[np.ndarray] = []
        subtracting: list[np.ndarray] = []
        for matcher in matchers:
            if matcher.name not in label_must_be_set:
                subtracting.append(self._postings_for_matcher(matcher, accepted=False))
            elif matcher.is_negative and matcher.matches(""):
                subtracting.append(self._postings_for_matcher(matcher.inverse(), accepted=True))
            else:
                postings = self._postings_for_matcher(matcher, accepted=True)
                if len(postings) == 0:
                    return _EMPTY_REFS
                intersecting.append(postings)
        result = intersect_many(intersecting) if intersecting else self.all_postings()
        if subtracting:
            result = subtract(result, union_many(subtracting))
        return result

    def series(self, ref: int) -> tuple[Labels, np.ndarray, np.ndarray, np.ndarray]:
        """(labels, chunk mint, chunk maxt, chunk refs) of series `ref` (arrays int64, int64, uint64)."""
        offset = int(ref) * SERIES_ALIGNMENT
        if not self.toc_series <= offset < self.toc_label_indices:
            raise CorruptIndexError(f"{self.path}: series ref {ref} is outside the series section")
        try:
            label_ids, mint, maxt, refs = decode_series(self._data, offset)
        except ValueError as exc:
            raise CorruptIndexError(f"{self.path}: {exc}") from None
        symbol = self.symbol
        ids = label_ids.tolist()
        labels = tuple((symbol(ids[i]), symbol(ids[i + 1])) for i in range(0, len(ids), 2))
        return labels, mint, maxt, refs

    def label_index(self, name: str) -> list[str]:
        """The values of `name` as its label index section lists them (read through the label offset table)."""
        try:
            return self._label_index(name)
        except CorruptIndexError:
            raise
        except (ValueError, struct.error) as exc:
            raise CorruptIndexError(f"{self.path}: label offset table: {exc}") from None

    def _label_index(self, name: str) -> list[str]:
        start, end = self._section(self.toc_label_offset_table, "label offset table")
        data = self._data
        (count,) = struct.unpack_from(">I", data, start)
        pos = start + 4
        for _ in range(count):
            keys, pos = decode_uvarint(data, pos)
            if keys != 1:
                raise CorruptIndexError(f"{self.path}: label offset table entry with {keys} keys")
            length, pos = decode_uvarint(data, pos)
            entry_name = str(data[pos:pos + length], "utf-8")
            offset, pos = decode_uvarint(data, pos + length)
            if pos > end:
                raise CorruptIndexError(f"{self.path}: label offset table runs past its end")
            if entry_name == name:
                index_start, index_end = self._section(offset, "label index")
                names, entries = struct.unpack_from(">II", data, index_start)
                if names != 1 or index_end - index_start != 8 + 4 * entries:
                    raise CorruptIndexError(f"{self.path}: label index at {offset} is malformed")
                ids = np.frombuffer(data[index_start + 8:index_end], dtype=">u4").tolist()
                return [self.symbol(i) for i in ids]
        return []

    def close(self) -> None:
        """Unmap the file."""
        if self._data is not None:
            try:
                self._data.release()
            except BufferError:
                pass
            self._data = None
        try:
            self._map.close()
        except BufferError:
            # Arrays handed out still view the map; it goes when the last of them does.
            pass
