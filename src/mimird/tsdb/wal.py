"""The write-ahead log of a tenant's TSDB head: segment files, replay with repair, checkpoints.

Every accepted write batch is logged here before it is acknowledged; at start the head is rebuilt by
`replay`; after the head is cut into a block, `checkpoint` keeps what is still alive and `truncate`
deletes the segments it covers. The layout is Prometheus's (tsdb/wlog, tsdb/record), drawn in
docs/format/wal.md: a directory (`<tenant dir>/wal`) of segment files `00000000`, `00000001`, ... of
at most `segment_size` bytes, written in 32 KiB pages of CRC-32C-checked fragments, and checkpoint
directories `checkpoint.NNNNNNNN` holding a WAL of their own. The byte work (record codecs, framing,
fragment reading) is in mimird._fast.walrecords.

What the log guarantees, and what the head must do about it:

- A batch (one `log_*` call) is written with one write() into one segment (records never cross
  segments) and, under the "batch" and "always" policies, made durable with one fdatasync before the
  call returns. An acknowledged batch is replayed unless the disk itself loses or corrupts synced
  bytes.
- A batch that was not acknowledged (the process died during the write, or the write or sync
  raised) may be replayed in full, in part (whole records only, a torn record is dropped) or not
  at all. A client retries such a batch, so a sample can reach the WAL twice: on replay the head
  must treat a sample with the same (ref, timestamp) and value as one it already has as a no-op.
- Replay reads the newest checkpoint, then the segments after it, in order. Records come out in the
  order they were logged; a series record precedes the samples that use its ref.
- Checkpoint and truncation steps are ordered so that a crash between any two of them replays the
  same data: a half-written checkpoint is a `.tmp` directory that replay ignores and the next
  checkpoint or open removes, and segments covered by the newest checkpoint are skipped even if
  their deletion did not happen.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import snappy

from mimird._fast import walrecords
from mimird._fast.walrecords import PAGE_SIZE
from mimird.tsdb.labels import Labels

log = logging.getLogger("mimird.tsdb.wal")

DEFAULT_SEGMENT_SIZE = 128 * 1024 * 1024
CHECKPOINT_PREFIX = "checkpoint."
TMP_SUFFIX = ".tmp"

_SEGMENT_NAME = re.compile(r"^\d{8,}$")
_CHECKPOINT_NAME = re.compile(r"^checkpoint\.(\d{8,})$")

FsyncPolicy = str | float

METRIC_TYPE_CODES = {"unknown": 0, "counter": 1, "gauge": 2, "histogram": 3, "gaugehistogram": 4,
                     "summary": 5, "info": 6, "stateset": 7}
"""The metric type numbers of metadata records (Prometheus's record.MetricType), by exposition name."""
METRIC_TYPE_NAMES = {code: name for name, code in METRIC_TYPE_CODES.items()}


class WALError(Exception):
    """A write, sync or checkpoint could not be done; the batch in question is not durable."""


# ---------------------------------------------------------------------------------------------------
# Records as replay yields them.


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """New series: (ref, labels) pairs."""

    series: list[tuple[int, Labels]]


@dataclass(frozen=True, slots=True)
class SamplesRecord:
    """Float samples as three parallel arrays (uint64 refs, int64 ms timestamps, float64 values)."""

    refs: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.refs)


@dataclass(frozen=True, slots=True)
class ExemplarsRecord:
    """Exemplars: (ref, timestamp ms, value, exemplar labels) tuples."""

    exemplars: list[tuple[int, int, float, Labels]]


@dataclass(frozen=True, slots=True)
class MetadataRecord:
    """Series metadata: (ref, metric type as Prometheus numbers it (METRIC_TYPE_CODES), unit, help) tuples."""

    metadata: list[tuple[int, int, str, str]]


Record = SeriesRecord | SamplesRecord | ExemplarsRecord | MetadataRecord


@dataclass
class ReplayStats:
    """What a replay read and repaired; pass one to `replay` to look at it afterwards."""

    records: int = 0
    series: int = 0
    samples: int = 0
    exemplars: int = 0
    metadata: int = 0
    skipped_records: int = 0  # unknown types and records that pass the checksum but do not decode
    torn_tails: list[tuple[str, int, str]] = field(default_factory=list)  # (file, offset, why)
    corruptions: list[tuple[str, int, str]] = field(default_factory=list)
    deleted_segments: list[str] = field(default_factory=list)


def decode_record(data: bytes) -> Record | None:
    """The typed record of a record's bytes; None for types this head does not use (tombstones,
    histograms). Raises ValueError on bytes that do not decode."""
    if not data:
        raise ValueError("empty record")
    kind = data[0]
    if kind == walrecords.RECORD_SAMPLES:
        return SamplesRecord(*walrecords.decode_samples(data))
    if kind == walrecords.RECORD_SERIES:
        return SeriesRecord(walrecords.decode_series(data))
    if kind == walrecords.RECORD_EXEMPLARS:
        return ExemplarsRecord(walrecords.decode_exemplars(data))
    if kind == walrecords.RECORD_METADATA:
        return MetadataRecord(walrecords.decode_metadata(data))
    return None


# ---------------------------------------------------------------------------------------------------
# Directory layout.


def segment_path(wal_dir: str | os.PathLike, index: int) -> Path:
    """The path of segment `index` in `wal_dir`."""
    return Path(wal_dir) / f"{index:08d}"


def list_segments(wal_dir: str | os.PathLike) -> list[int]:
    """The indexes of the segment files in `wal_dir`, ascending."""
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return []
    return sorted(int(name) for name in names
                  if _SEGMENT_NAME.match(name) and os.path.isfile(os.path.join(wal_dir, name)))


def list_checkpoints(wal_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(index, path) of the finished checkpoints in `wal_dir`, ascending."""
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _CHECKPOINT_NAME.match(name)
        if match and os.path.isdir(os.path.join(wal_dir, name)):
            found.append((int(match.group(1)), Path(wal_dir) / name))
    return sorted(found)


def last_checkpoint(wal_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """(index, path) of the newest checkpoint, or None."""
    checkpoints = list_checkpoints(wal_dir)
    return checkpoints[-1] if checkpoints else None


def remove_temporary_checkpoints(wal_dir: str | os.PathLike) -> None:
    """Delete checkpoint directories left half-written by a crash."""
    try:
        names = os.listdir(wal_dir)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(CHECKPOINT_PREFIX) and name.endswith(TMP_SUFFIX):
            log.info("removing unfinished checkpoint %s", os.path.join(wal_dir, name))
            shutil.rmtree(os.path.join(wal_dir, name), ignore_errors=True)


def _fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_datasync = getattr(os, "fdatasync", os.fsync)


# ---------------------------------------------------------------------------------------------------
# Writing.


@dataclass
class WALMetrics:
    """Counters of one WAL writer, for the tenant's metrics (Prometheus's prometheus_tsdb_wal_*)."""

    records_written: int = 0
    bytes_written: int = 0
    writes_failed: int = 0
    fsyncs: int = 0
    fsync_seconds: float = 0.0
    segments_created: int = 0


def _parse_fsync(policy: FsyncPolicy) -> tuple[str, float]:
    if isinstance(policy, str):
        if policy in ("batch", "always", "never"):
            return policy, 0.0
        raise ValueError(f"fsync policy must be 'batch', 'always', 'never' or seconds, not {policy!r}")
    if isinstance(policy, bool) or not isinstance(policy, int | float) or not policy > 0:
        raise ValueError(f"an fsync interval must be a positive number of seconds, not {policy!r}")
    return "interval", float(policy)


class WAL:
    """The writer of one tenant's write-ahead log in `wal_dir`.

    Opening always starts a new segment after the existing ones, so a torn tail left by a crash is
    never appended to; replay (and its repair) must run before the WAL is opened for writing, as with
    Prometheus. `segment_size` (a multiple of 32 KiB) bounds a segment; a batch that does not fit in
    the rest of the current segment starts the next one, and a batch larger than a whole segment gets
    a segment of its own.

    `fsync` says when written bytes are forced to stable storage:

    - "batch" (default): at the end of every call that writes (each call is one batch: one write(),
      one fdatasync). A call with sync=False only writes, for group commit: log several requests,
      then one `sync()` (an fdatasync covers everything written to the segment before it), then
      acknowledge them all.
    - "always": at the end of every call that writes, even one that passes sync=False.
    - "never": not on the write path; bytes reach the page cache (they survive a process crash, not a
      power loss).
    - a number of seconds: not on the write path; a background thread syncs at most that long after a
      write, so a power loss loses at most that much acknowledged data.

    Under every policy a segment is synced when it is completed and when the WAL closes, so a power
    loss can only tear the newest segment.

    Not thread-safe: calls must come from one thread at a time (the head calls it under its append
    lock, from the event loop or a worker). A write or sync error raises WALError; after a failed
    fsync, or a failed write whose partial bytes could not be cut off again, the WAL refuses further
    writes (the state on disk is unknown) and the tenant must be reopened, which replays.
    """

    def __init__(self, wal_dir: str | os.PathLike, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 fsync: FsyncPolicy = "batch", compress: bool = False):
        if segment_size < PAGE_SIZE or segment_size % PAGE_SIZE:
            raise ValueError(f"segment size must be a positive multiple of {PAGE_SIZE}, not {segment_size}")
        self.dir = Path(wal_dir)
        self.segment_size = segment_size
        self._policy, self._interval = _parse_fsync(fsync)
        # As Prometheus's --storage.tsdb.wal-compression: a record is stored snappy-compressed when
        # that makes it smaller.
        self.compress = compress
        self._fd = -1
        self._segment_index = -1
        self._segment_bytes = 0
        self._page_used = 0
        self._failure: BaseException | None = None
        self._closed = False
        # Only the interval syncer shares the descriptor with the writing thread.
        self._fd_lock = threading.Lock()
        self._written_total = 0
        self._synced_total = 0
        self._stop_syncer = threading.Event()
        self._syncer: threading.Thread | None = None
        self.metrics = WALMetrics()

        self.dir.mkdir(parents=True, exist_ok=True)
        remove_temporary_checkpoints(self.dir)
        existing = list_segments(self.dir)
        newest = last_checkpoint(self.dir)
        # Replay reads only segments after the newest checkpoint, so numbering continues after it even
        # when truncation left no segment behind.
        self._open_segment(max(existing[-1] + 1 if existing else 0, newest[0] + 1 if newest else 0))
        if self._policy == "interval":
            self._syncer = threading.Thread(target=self._sync_periodically, name=f"wal-sync {self.dir}",
                                            daemon=True)
            self._syncer.start()

    # -- public API -----------------------------------------------------------------------------------

    @property
    def segment_index(self) -> int:
        """The index of the segment being written."""
        return self._segment_index

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self._interval if self._policy == "interval" else self._policy

    def log_series(self, series: Sequence[tuple[int, Labels]], *, sync: bool = True) -> int:
        """Log new series as one record; return the bytes written."""
        if not series:
            return 0
        return self._log([walrecords.encode_series(series)], sync)

    def log_samples(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray, *,
                    sync: bool = True) -> int:
        """Log samples (uint64 refs, int64 ms timestamps, float64 values) as one record; return the
        bytes written."""
        if len(refs) == 0:
            return 0
        return self._log([_encode_samples(refs, timestamps, values)], sync)

    def log_exemplars(self, exemplars: Sequence[tuple[int, int, float, Labels]], *, sync: bool = True) -> int:
        """Log (ref, timestamp, value, labels) exemplars as one record; return the bytes written."""
        if not exemplars:
            return 0
        return self._log([walrecords.encode_exemplars(exemplars)], sync)

    def log_metadata(self, metadata: Sequence[tuple[int, int, str, str]], *, sync: bool = True) -> int:
        """Log (ref, type, unit, help) metadata as one record; return the bytes written."""
        if not metadata:
            return 0
        return self._log([walrecords.encode_metadata(metadata)], sync)

    def log_batch(self, series: Sequence[tuple[int, Labels]] = (),
                  samples: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  exemplars: Sequence[tuple[int, int, float, Labels]] = (),
                  metadata: Sequence[tuple[int, int, str, str]] = (), *, sync: bool = True) -> int:
        """Log one write request: a record for each non-empty part, in the order series, samples,
        exemplars, metadata, with one write() into one segment, then sync it as the policy says.
        `samples` is (refs, timestamps, values). Returns the bytes written. sync=False: see the class.
        """
        records = []
        if series:
            records.append(walrecords.encode_series(series))
        if samples is not None and len(samples[0]):
            records.append(_encode_samples(*samples))
        if exemplars:
            records.append(walrecords.encode_exemplars(exemplars))
        if metadata:
            records.append(walrecords.encode_metadata(metadata))
        if not records:
            return 0
        return self._log(records, sync)

    def sync(self) -> None:
        """Force everything written so far to stable storage."""
        self._check_writable()
        self._sync()

    def next_segment(self) -> int:
        """Finish the current segment (synced) and start the next; return the new segment's index.

        Before a checkpoint, this puts everything logged so far into segments that are complete.
        """
        self._check_writable()
        self._rotate()
        return self._segment_index

    def truncate(self, upto_segment: int) -> None:
        """Delete segments up to `upto_segment` and older checkpoints (see the module's `truncate`);
        the segment being written is never deleted."""
        if upto_segment >= self._segment_index:
            raise WALError(f"cannot truncate segment {upto_segment}: segment {self._segment_index} "
                           "is being written")
        truncate(self.dir, upto_segment)

    def close(self) -> None:
        """Sync and close the current segment; further writes raise. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._syncer is not None:
            self._stop_syncer.set()
            self._syncer.join()
        with self._fd_lock:
            fd, self._fd = self._fd, -1
        if fd < 0:  # a failed rotation already closed it
            return
        try:
            if self._failure is None:
                self._datasync(fd)
        except OSError as error:
            raise WALError(f"fsync of WAL segment {segment_path(self.dir, self._segment_index)} on close: "
                           f"{error}") from error
        finally:
            os.close(fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise WALError(f"WAL {self.dir} is closed")
        if self._failure is not None:
            raise WALError(f"WAL {self.dir} failed earlier and must be reopened: {self._failure}")

    def _log(self, records: list[bytes], sync: bool) -> int:
        self._check_writable()
        flags = None
        if self.compress:
            flags = []
            for index, record in enumerate(records):
                compressed = snappy.compress(record)
                flags.append(len(compressed) < len(record))
                if flags[-1]:
                    records[index] = compressed
        out = bytearray()
        page_after = walrecords.frame_records(out, records, self._page_used, flags)
        if self._segment_bytes and self._segment_bytes + len(out) > self.segment_size:
            self._rotate()
            out = bytearray()
            page_after = walrecords.frame_records(out, records, 0, flags)
        self._write(out)
        self._page_used = page_after
        self._segment_bytes += len(out)
        self._written_total += len(out)
        self.metrics.records_written += len(records)
        self.metrics.bytes_written += len(out)
        if self._policy == "always" or (sync and self._policy == "batch"):
            self._sync()
        return len(out)

    def _write(self, data: bytearray) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as error:
            self.metrics.writes_failed += 1
            # Cut the partial batch off again, so that the segment stays a sequence of whole records
            # and the next batch does not follow a torn one.
            try:
                os.ftruncate(self._fd, self._segment_bytes)
            except OSError as truncate_error:
                self._failure = truncate_error
                log.error("WAL segment %s: cannot cut off a failed write: %s",
                          segment_path(self.dir, self._segment_index), truncate_error)
            raise WALError(f"write to WAL segment {segment_path(self.dir, self._segment_index)}: "
                           f"{error}") from error
        finally:
            view.release()

    def _sync(self) -> None:
        target = self._written_total
        if self._synced_total == target:
            return
        try:
            self._datasync(self._fd)
        except OSError as error:
            # After a failed fsync the kernel may have dropped the dirty pages: nothing written since
            # the last good sync can be trusted, so stop here.
            self._failure = error
            raise WALError(f"fsync of WAL segment {segment_path(self.dir, self._segment_index)}: "
                           f"{error}") from error
        self._synced_total = max(self._synced_total, target)

    def _datasync(self, fd: int) -> None:
        started = time.perf_counter()
        try:
            _datasync(fd)
        finally:
            self.metrics.fsyncs += 1
            self.metrics.fsync_seconds += time.perf_counter() - started

    def _open_segment(self, index: int) -> None:
        path = segment_path(self.dir, index)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        size = os.fstat(fd).st_size
        if size:
            os.close(fd)
            raise WALError(f"new WAL segment {path} already holds {size} bytes")
        # The new name must survive a crash before anything written into it counts as durable.
        _fsync_dir(self.dir)
        with self._fd_lock:
            self._fd = fd
        self._segment_index = index
        self._segment_bytes = 0
        self._page_used = 0
        self.metrics.segments_created += 1

    def _rotate(self) -> None:
        with self._fd_lock:
            previous, self._fd = self._fd, -1
        try:
            try:
                self._datasync(previous)
            except OSError as error:
                self._failure = error
                raise WALError(f"fsync of WAL segment {segment_path(self.dir, self._segment_index)}: "
                               f"{error}") from error
            self._synced_total = self._written_total
        finally:
            os.close(previous)
        try:
            self._open_segment(self._segment_index + 1)
        except OSError as error:
            self._failure = error
            raise WALError(f"create WAL segment {self._segment_index + 1}: {error}") from error

    def _sync_periodically(self) -> None:
        while not self._stop_syncer.wait(self._interval):
            target = self._written_total
            if self._synced_total >= target or self._failure is not None:
                continue
            with self._fd_lock:
                if self._fd < 0:
                    continue
                # A duplicate keeps the file open even if the writer rotates meanwhile, and lets the
                # sync run without holding anything the writer waits for.
                fd = os.dup(self._fd)
            try:
                self._datasync(fd)
                self._synced_total = max(self._synced_total, target)
            except OSError as error:
                self._failure = error
                log.error("periodic fsync of WAL %s failed: %s", self.dir, error)
            finally:
                os.close(fd)


def _encode_samples(refs, timestamps, values) -> bytes:
    return walrecords.encode_samples(np.ascontiguousarray(refs, dtype=np.uint64),
                                     np.ascontiguousarray(timestamps, dtype=np.int64),
                                     np.ascontiguousarray(values, dtype=np.float64))


# ---------------------------------------------------------------------------------------------------
# Reading and repair.


@dataclass
class _Problem:
    status: int
    offset: int
    message: str


def _read_segment(path: Path) -> Iterator[bytes]:
    """The records of one segment file, in order. The generator's return value is None at a clean
    end, else a _Problem saying where the readable part ends and why."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            return None
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                pos = 0
                while True:
                    status, start, pos, record, message = walrecords.read_record(view, pos)
                    if status == walrecords.READ_OK:
                        yield _uncompress(record, path) if message == "snappy" else record
                    elif status == walrecords.READ_END:
                        return None
                    else:
                        return _Problem(status, start, message)
            finally:
                view.release()


def _uncompress(data: bytes, path: Path) -> bytes:
    # Prometheus compresses WAL records with snappy by default; so does the ingester's WAL.
    try:
        return snappy.uncompress(data)
    except Exception as error:  # python-snappy raises its own and zlib-like error types
        log.error("WAL %s: a snappy-compressed record does not decompress: %s", path, error)
        return b""


def _decode_counted(data: bytes, where: str, stats: ReplayStats) -> Record | None:
    try:
        record = decode_record(data)
    except ValueError as error:
        # The checksum matched, so these are the bytes that were written; skipping the one record
        # loses less than cutting the log here.
        stats.skipped_records += 1
        log.error("WAL %s: skipping a record that does not decode: %s", where, error)
        return None
    if record is None:
        stats.skipped_records += 1
        return None
    stats.records += 1
    if isinstance(record, SamplesRecord):
        stats.samples += len(record)
    elif isinstance(record, SeriesRecord):
        stats.series += len(record.series)
    elif isinstance(record, ExemplarsRecord):
        stats.exemplars += len(record.exemplars)
    else:
        stats.metadata += len(record.metadata)
    return record


def replay(wal_dir: str | os.PathLike, *, repair: bool = True,
           stats: ReplayStats | None = None) -> Iterator[Record]:
    """Yield the records of the WAL in `wal_dir`: the newest checkpoint's, then those of the segments
    after it, in order. Never raises on damaged data:

    - A torn tail (a segment that ends inside a record: a write cut short by a crash) is cut off at
      the start of that record, with a warning, and reading goes on with the next segment.
    - Corruption (a checksum mismatch, an impossible header, garbage in page padding) ends the log:
      the records before it are yielded, the segment is cut at the corrupt record and every later
      segment is deleted, as Prometheus's repair does (later records may depend on the lost ones).
      In the last segment this is logged as a warning (a torn write looks like this too), before
      that as an error.
    - Damage inside a checkpoint is logged as an error and the checkpoint is read up to it; it is
      never modified.

    With repair=False nothing is modified (damage is still logged and reading stops as above).
    Must not run while a WAL writer is open on the directory.
    """
    stats = stats if stats is not None else ReplayStats()
    wal_dir = Path(wal_dir)
    first_segment = 0
    newest = last_checkpoint(wal_dir)
    if newest is not None:
        checkpoint_index, checkpoint_dir = newest
        first_segment = checkpoint_index + 1
        for index in list_segments(checkpoint_dir):
            path = segment_path(checkpoint_dir, index)
            problem = yield from _yield_records(path, stats)
            if problem is not None:
                stats.corruptions.append((str(path), problem.offset, problem.message))
                log.error("WAL checkpoint segment %s is damaged at byte %d (%s): series and samples "
                          "after it are lost", path, problem.offset, problem.message)
                break
    segments = [index for index in list_segments(wal_dir) if index >= first_segment]
    if segments and newest is not None and segments[0] != first_segment:
        log.error("WAL %s: segments %d to %d are missing after checkpoint %d", wal_dir, first_segment,
                  segments[0] - 1, first_segment - 1)
    for position, index in enumerate(segments):
        if position and index != segments[position - 1] + 1:
            log.error("WAL %s: segments %d to %d are missing", wal_dir, segments[position - 1] + 1, index - 1)
        path = segment_path(wal_dir, index)
        is_last = position == len(segments) - 1
        problem = yield from _yield_records(path, stats)
        if problem is None:
            continue
        if problem.status == walrecords.READ_TORN:
            stats.torn_tails.append((str(path), problem.offset, problem.message))
            log.warning("WAL segment %s has a torn tail at byte %d (%s)%s", path, problem.offset,
                        problem.message, "; cutting it off" if repair else "")
            if repair:
                _repair(wal_dir, path, problem.offset, [], stats)
            continue
        stats.corruptions.append((str(path), problem.offset, problem.message))
        later = [segment_path(wal_dir, later_index) for later_index in segments[position + 1:]]
        level = logging.WARNING if is_last else logging.ERROR
        log.log(level, "WAL segment %s is corrupt at byte %d (%s): %s", path, problem.offset,
                problem.message,
                ("cutting it there" + (f" and deleting {len(later)} later segments" if later else ""))
                if repair else "not reading further")
        if repair:
            _repair(wal_dir, path, problem.offset, later, stats)
        return


def _repair(wal_dir: Path, path: Path, offset: int, later: list[Path], stats: ReplayStats) -> None:
    """Cut `path` at `offset` and delete the `later` segments. A failure is logged, not raised: the
    records before the damage are good either way, and a writer never appends to an old segment."""
    try:
        with open(path, "r+b") as file:
            file.truncate(offset)
            os.fsync(file.fileno())
        for later_path in later:
            os.remove(later_path)
            stats.deleted_segments.append(str(later_path))
        if later:
            _fsync_dir(wal_dir)
    except OSError as error:
        log.error("WAL %s: repair failed: %s", wal_dir, error)


def _yield_records(path: Path, stats: ReplayStats):
    reader = _read_segment(path)
    while True:
        try:
            data = next(reader)
        except StopIteration as end:
            return end.value
        record = _decode_counted(data, str(path), stats)
        if record is not None:
            yield record


# ---------------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint(wal_dir: str | os.PathLike, keep_series: Callable[[int], bool], min_time_ms: int,
               last_segment: int | None = None) -> Path | None:
    """Write `checkpoint.NNNNNNNN` covering the newest checkpoint and segments up to `last_segment`
    (default: all but the newest segment, which a writer may be appending to); return its path.

    It keeps the series for which `keep_series(ref)` is true, their samples and exemplars at or after
    `min_time_ms`, and the latest metadata of each kept series. It is written as `<name>.tmp`, synced
    and renamed, so a crash leaves either the old state or the new checkpoint. Segments and older
    checkpoints stay until `truncate`. Returns None when there is no complete segment to cover, and
    the existing checkpoint when it already covers `last_segment`. Raises WALError on damaged input:
    mid-run corruption is not repaired here (the head would not know which series were lost); the
    next start's replay repairs it.

    Safe to run in another thread than the writer's: it reads only complete segments.
    """
    wal_dir = Path(wal_dir)
    segments = list_segments(wal_dir)
    if last_segment is None:
        if len(segments) < 2:
            return None
        last_segment = segments[-2]
    newest = last_checkpoint(wal_dir)
    if newest is not None and newest[0] >= last_segment:
        return newest[1]
    first_segment = newest[0] + 1 if newest is not None else 0
    sources = []
    if newest is not None:
        sources += [segment_path(newest[1], index) for index in list_segments(newest[1])]
    sources += [segment_path(wal_dir, index) for index in segments if first_segment <= index <= last_segment]

    final_dir = wal_dir / f"{CHECKPOINT_PREFIX}{last_segment:08d}"
    tmp_dir = wal_dir / f"{CHECKPOINT_PREFIX}{last_segment:08d}{TMP_SUFFIX}"
    remove_temporary_checkpoints(wal_dir)
    started = time.monotonic()
    writer = WAL(tmp_dir, fsync="never")
    kept = _Kept(keep_series)
    latest_metadata: dict[int, tuple[int, int, str, str]] = {}
    kept_samples = 0
    try:
        stats = ReplayStats()
        for path in sources:
            reader = _read_segment(path)
            while True:
                try:
                    data = next(reader)
                except StopIteration as end:
                    problem = end.value
                    break
                record = _decode_counted(data, str(path), stats)
                if isinstance(record, SamplesRecord):
                    mask = (record.timestamps >= min_time_ms) & kept.mask(record.refs)
                    kept_samples += int(mask.sum())
                    writer.log_samples(record.refs[mask], record.timestamps[mask], record.values[mask])
                elif isinstance(record, SeriesRecord):
                    writer.log_series([item for item in record.series if kept(item[0])])
                elif isinstance(record, ExemplarsRecord):
                    writer.log_exemplars([item for item in record.exemplars
                                          if item[1] >= min_time_ms and kept(item[0])])
                elif isinstance(record, MetadataRecord):
                    for item in record.metadata:
                        if kept(item[0]):
                            latest_metadata[item[0]] = item
            if problem is not None:
                raise WALError(f"checkpoint: {path} is damaged at byte {problem.offset}: {problem.message}")
        writer.log_metadata(sorted(latest_metadata.values()))
        writer.close()
        _fsync_dir(tmp_dir)
        os.rename(tmp_dir, final_dir)
        _fsync_dir(wal_dir)
    except BaseException:
        writer.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("WAL checkpoint %s written in %.3fs from %d files: %d series, %d samples kept",
             final_dir, time.monotonic() - started, len(sources), kept.kept_count, kept_samples)
    return final_dir


class _Kept:
    """keep_series with its answers remembered, for scalar refs and ref arrays."""

    def __init__(self, keep_series: Callable[[int], bool]):
        self._keep_series = keep_series
        self._answers: dict[int, bool] = {}

    @property
    def kept_count(self) -> int:
        return sum(self._answers.values())

    def __call__(self, ref: int) -> bool:
        answer = self._answers.get(ref)
        if answer is None:
            answer = self._answers[ref] = bool(self._keep_series(ref))
        return answer

    def mask(self, refs: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(refs, return_inverse=True)
        answers = np.fromiter((self(int(ref)) for ref in unique), dtype=bool, count=len(unique))
        return answers[inverse]


def truncate(wal_dir: str | os.PathLike, upto_segment: int) -> None:
    """Delete the segments numbered up to `upto_segment`, then the checkpoints older than the newest.

    Refuses (WALError) unless a checkpoint covers `upto_segment`: without one, deleting the segments
    would lose series that are still alive. Segments go oldest first, so a crash in between leaves
    a prefix deleted, which replay skips anyway.
    """
    wal_dir = Path(wal_dir)
    newest = last_checkpoint(wal_dir)
    if newest is None or newest[0] < upto_segment:
        raise WALError(f"no checkpoint in {wal_dir} covers segment {upto_segment}; not deleting it")
    for index in list_segments(wal_dir):
        if index > upto_segment:
            break
        os.remove(segment_path(wal_dir, index))
    for index, path in list_checkpoints(wal_dir):
        if index < newest[0]:
            shutil.rmtree(path)
    _fsync_dir(wal_dir)


def segments_size(wal_dir: str | os.PathLike) -> int:
    """Bytes in the WAL directory's segments and checkpoints (for the storage-size metric)."""
    total = 0
    for root, _, files in os.walk(wal_dir):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError as error:
                if error.errno != errno.ENOENT:
                    raise
    return total
