"""The WAL: record bytes against a reference encoder and hand-derived bytes, page framing, round trips
across pages and segments, torn tails at every offset of the last page, bit flips, repair of older
segments, checkpoints (with crashes between their steps in a real subprocess), fsync policies,
write failures, and Prometheus's own tools reading what we write."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st

from mimird._fast import walrecords
from mimird._fast.crc32c import crc32c
from mimird._fast.varint import encode_uvarint, encode_varint
from mimird.tsdb import wal
from mimird.tsdb.wal import (
    WAL,
    ExemplarsRecord,
    MetadataRecord,
    ReplayStats,
    SamplesRecord,
    SeriesRecord,
    WALError,
)

PAGE = walrecords.PAGE_SIZE
SMALL_SEGMENT = 2 * PAGE
REPO = Path(__file__).resolve().parents[1]


def lbls(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def as_int64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def float_bits(value: float) -> int:
    return struct.unpack(">Q", struct.pack(">d", value))[0]


def reference_samples_record(refs, timestamps, values) -> bytes:
    """Prometheus's record.Encoder.Samples (V1), written from its description."""
    out = bytearray([2])
    out += struct.pack(">QQ", refs[0], timestamps[0] % 2**64)
    for ref, timestamp, value in zip(refs, timestamps, values, strict=True):
        out += encode_varint(as_int64(ref - refs[0]))
        out += encode_varint(as_int64(timestamp - timestamps[0]))
        out += struct.pack(">d", value)
    return bytes(out)


def reference_labels(labels) -> bytes:
    out = bytearray(encode_uvarint(len(labels)))
    for name, value in labels:
        for text in (name, value):
            data = text.encode()
            out += encode_uvarint(len(data)) + data
    return bytes(out)


def reference_frame(records, page_used: int, flags: int = 0) -> tuple[bytes, int]:
    """Prometheus's wlog.log, one record after another, with lazily written page padding."""
    out = bytearray()
    for record in records:
        first = True
        while first or record:
            if PAGE - page_used < 7:
                out += bytes(PAGE - page_used)
                page_used = 0
            n = min(len(record), PAGE - page_used - 7)
            part, record = record[:n], record[n:]
            if first and not record:
                kind = 1
            elif not record:
                kind = 4
            elif first:
                kind = 2
            else:
                kind = 3
            out += bytes([kind | flags]) + struct.pack(">HI", n, crc32c(part)) + part
            page_used += 7 + n
            first = False
    return bytes(out), page_used


def samples(refs, timestamps, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(refs, np.uint64), np.asarray(timestamps, np.int64), np.asarray(values, np.float64))


def normalise(record):
    """A comparable form of a record (arrays as lists of bit patterns)."""
    if isinstance(record, SamplesRecord):
        return ("samples", record.refs.tolist(), record.timestamps.tolist(),
                record.values.view(np.uint64).tolist())
    if isinstance(record, SeriesRecord):
        return ("series", record.series)
    if isinstance(record, ExemplarsRecord):
        return ("exemplars", [(r, t, float_bits(v), lset) for r, t, v, lset in record.exemplars])
    return ("metadata", record.metadata)


def replayed(wal_dir, **kwargs) -> list:
    return [normalise(record) for record in wal.replay(wal_dir, **kwargs)]


def write_batches(wal_dir, batches, **kwargs) -> list:
    """Log each batch with log_batch; return the records replay must yield, normalised."""
    expected = []
    with WAL(wal_dir, **kwargs) as writer:
        for batch in batches:
            writer.log_batch(**batch)
            if batch.get("series"):
                expected.append(("series", list(batch["series"])))
            if batch.get("samples") is not None:
                refs, ts, vs = batch["samples"]
                expected.append(("samples", list(map(int, refs)), list(map(int, ts)),
                                 np.asarray(vs, np.float64).view(np.uint64).tolist()))
            if batch.get("exemplars"):
                expected.append(("exemplars", [(r, t, float_bits(v), lset) for r, t, v, lset in batch["exemplars"]]))
            if batch.get("metadata"):
                expected.append(("metadata", list(batch["metadata"])))
    return expected


def scrape_batches(count: int, series_per_batch: int = 40, seed: int = 1) -> list[dict]:
    """Batches as remote write brings them: some new series, then samples for all series so far."""
    rng = np.random.default_rng(seed)
    batches = []
    known = 0
    for index in range(count):
        new = [(known + i + 1, lbls(__name__=f"metric_{(known + i) % 7}", instance=f"host-{known + i}"))
               for i in range(series_per_batch // 4)]
        known += len(new)
        refs = rng.integers(1, known + 1, series_per_batch).astype(np.uint64)
        ts = 1_700_000_000_000 + index * 15_000 + rng.integers(0, 10, series_per_batch)
        batches.append({"series": new, "samples": samples(refs, ts, rng.normal(0, 100, series_per_batch))})
    return batches


# ---------------------------------------------------------------------------------------------------
# Record bytes.


def test_samples_record_hand_derived_bytes():
    record = walrecords.encode_samples(*samples([5, 3], [1000, 999], [1.5, -0.0]))
    assert record.hex() == ("02" "0000000000000005" "00000000000003e8"
                            "00" "00" "3ff8000000000000"
                            "03" "01" "8000000000000000")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1),
                          st.integers(0, 2**64 - 1)), min_size=1, max_size=60))
def test_samples_record_against_reference(rows):
    refs = [r for r, _, _ in rows]
    timestamps = [t for _, t, _ in rows]
    bits = np.array([b for _, _, b in rows], np.uint64)
    values = bits.view(np.float64)
    record = walrecords.encode_samples(*samples(refs, timestamps, values))
    assert record == reference_samples_record(refs, timestamps, values.tolist())
    got_refs, got_ts, got_values = walrecords.decode_samples(record)
    assert got_refs.tolist() == refs
    assert got_ts.tolist() == timestamps
    assert got_values.view(np.uint64).tolist() == bits.tolist()  # NaN payloads survive


label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
label_sets = st.lists(st.tuples(label_text, label_text), max_size=5).map(lambda pairs: tuple(sorted(pairs)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), label_sets), max_size=10))
def test_series_record_against_reference(series):
    record = walrecords.encode_series(series)
    expected = b"\x01" + b"".join(struct.pack(">Q", ref) + reference_labels(lset) for ref, lset in series)
    assert record == expected
    assert walrecords.decode_series(record) == series


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63), st.integers(-(2**62), 2**62),
                          st.floats(allow_nan=False), label_sets), max_size=10))
def test_exemplars_record_round_trip(exemplars):
    record = walrecords.encode_exemplars(exemplars)
    if exemplars:
        base_ref, base_t = exemplars[0][0], exemplars[0][1]
        expected = b"\x04" + struct.pack(">QQ", base_ref, base_t % 2**64) + b"".join(
            encode_varint(as_int64(ref - base_ref)) + encode_varint(as_int64(t - base_t)) + struct.pack(">d", v)
            + reference_labels(lset)
            for ref, t, v, lset in exemplars)
        assert record == expected
    assert walrecords.decode_exemplars(record) == exemplars


def test_metadata_record_bytes_and_unknown_fields():
    record = walrecords.encode_metadata([(300, 1, "seconds", "Time spent.")])
    assert record == (b"\x06" + encode_uvarint(300) + b"\x01" + b"\x02" + b"\x04UNIT\x07seconds"
                      + b"\x04HELP\x0bTime spent.")
    assert walrecords.decode_metadata(record) == [(300, 1, "seconds", "Time spent.")]
    # A newer writer's extra field is skipped, as Prometheus's decoder does.
    future = b"\x06" + encode_uvarint(7) + b"\x02\x03\x04UNIT\x00\x04NEXT\x01x\x04HELP\x01h"
    assert walrecords.decode_metadata(future) == [(7, 2, "", "h")]


@pytest.mark.parametrize("decode, record", [
    (walrecords.decode_samples, b"\x02" + bytes(16) + b"\x00\x00\x01\x02"),
    (walrecords.decode_samples, b"\x02" + bytes(10)),
    (walrecords.decode_samples, b"\x01"),
    (walrecords.decode_series, b"\x01" + bytes(8) + b"\x05\x01a"),
    (walrecords.decode_series, b"\x01" + bytes(5)),
    (walrecords.decode_exemplars, b"\x04" + bytes(16) + b"\x00\x00" + bytes(8) + b"\xff"),
    (walrecords.decode_metadata, b"\x06\x01\x01\x01\x04UNIT"),
])
def test_malformed_records_raise_value_error(decode, record):
    with pytest.raises(ValueError):
        decode(record)


# ---------------------------------------------------------------------------------------------------
# Page framing and the fragment reader.


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3 * PAGE), min_size=1, max_size=4), st.integers(0, PAGE))
def test_framing_matches_reference_and_reads_back(lengths, page_used):
    pattern = bytes(range(251)) * (3 * PAGE // 251 + 2)
    records = [pattern[i:i + n] for i, n in enumerate(lengths)]
    out = bytearray()
    page_after = walrecords.frame_records(out, records, page_used)
    expected, expected_page = reference_frame(records, page_used)
    assert bytes(out) == expected
    assert page_after == expected_page
    assert walrecords.framed_size(lengths[0], page_used)[0] == len(reference_frame(records[:1], page_used)[0])
    # Read back behind a valid prefix that fills the page up to `page_used` (1 to 7 bytes are no
    # writer's prefix: a fragment takes at least a header and a record at least one byte).
    if 0 < page_used < 8:
        return
    prefix = bytearray()
    if page_used:
        walrecords.frame_records(prefix, [b"\x09" * (page_used - 7)], 0)
    assert len(prefix) == page_used
    data = bytes(prefix) + bytes(out)
    pos, got = 0, []
    while True:
        status, _, pos, record, message = walrecords.read_record(data, pos)
        if status != walrecords.READ_OK:
            break
        got.append(record)
    assert status == walrecords.READ_END, message
    assert got[-len(records):] == records


def test_record_filling_a_page_exactly_and_header_sized_remainders():
    for length in (PAGE - 7, PAGE - 8, PAGE - 13, PAGE - 14, 1):
        records = [b"a" * length, b"b" * 20, b"c" * (2 * PAGE)]
        out = bytearray()
        walrecords.frame_records(out, records, 0)
        pos, got = 0, []
        while True:
            status, _, pos, record, _ = walrecords.read_record(bytes(out), pos)
            if status != walrecords.READ_OK:
                break
            got.append(record)
        assert status == walrecords.READ_END and got == records


def test_reader_accepts_snappy_records_as_prometheus_writes_them(tmp_path):
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    series = walrecords.encode_series([(1, lbls(__name__="up", job="prometheus"))])
    sample_record = walrecords.encode_samples(*samples([1] * 5000, range(5000), range(5000)))
    framed, page_used = reference_frame([snappy.compress(series)], 0, flags=8)
    framed2, _ = reference_frame([snappy.compress(sample_record)], page_used, flags=8)
    (wal_dir / "00000000").write_bytes(framed + framed2)
    records = list(wal.replay(wal_dir))
    assert records[0].series == [(1, lbls(__name__="up", job="prometheus"))]
    assert records[1].timestamps.tolist() == list(range(5000))


# ---------------------------------------------------------------------------------------------------
# Writing and replaying.


def test_round_trip_of_all_record_types(tmp_path):
    wal_dir = tmp_path / "wal"
    batches = [
        {"series": [(1, lbls(__name__="up", job="a")), (2, lbls(__name__="up", job="b", zone="é"))],
         "samples": samples([1, 2, 1], [1000, 1000, 16000], [1.0, float("nan"), float("inf")]),
         "exemplars": [(1, 1000, 0.5, lbls(trace_id="abc")), (2, 900, -1.0, ())],
         "metadata": [(1, 2, "", "Up."), (2, 1, "bytes", "")]},
        {"samples": samples([2**64 - 1, 0], [-5, 2**62], [-0.0, 1e300])},
        {"metadata": [(1, 2, "", "Up, reworded.")]},
    ]
    expected = write_batches(wal_dir, batches)
    assert replayed(wal_dir) == expected
    # The single-record calls write the same records.
    other = tmp_path / "other"
    with WAL(other) as writer:
        writer.log_series(batches[0]["series"])
        writer.log_samples(*batches[0]["samples"])
        writer.log_exemplars(batches[0]["exemplars"])
        writer.log_metadata(batches[0]["metadata"])
        assert writer.log_series([]) == writer.log_samples(*samples([], [], [])) == 0
        assert writer.log_batch() == 0
    assert replayed(other) == expected[:4]


def test_large_records_span_pages_and_get_their_own_segment(tmp_path):
    wal_dir = tmp_path / "wal"
    n = 30_000  # ~330 KB: ten pages, more than a 64 KiB segment
    rng = np.random.default_rng(3)
    big = samples(rng.integers(0, 10**6, n), np.arange(n) * 1000, rng.normal(size=n))
    batches = [*scrape_batches(30, 200), {"samples": big}, *scrape_batches(30, 200, seed=2)]
    expected = write_batches(wal_dir, batches, segment_size=SMALL_SEGMENT)
    segments = wal.list_segments(wal_dir)
    assert len(segments) > 3
    sizes = [wal.segment_path(wal_dir, i).stat().st_size for i in segments]
    assert max(sizes) > SMALL_SEGMENT  # the big record's own segment
    assert sum(size <= SMALL_SEGMENT for size in sizes) == len(sizes) - 1
    assert replayed(wal_dir) == expected
    # Records never cross segments: every segment reads on its own, cleanly.
    total = []
    for index in segments:
        lone = tmp_path / f"lone{index}"
        lone.mkdir()
        shutil.copy(wal.segment_path(wal_dir, index), lone / "00000000")
        stats = ReplayStats()
        total += replayed(lone, stats=stats)
        assert not stats.torn_tails and not stats.corruptions
    assert total == expected


def test_reopening_starts_a_new_segment(tmp_path):
    wal_dir = tmp_path / "wal"
    first = write_batches(wal_dir, scrape_batches(3))
    assert wal.list_segments(wal_dir) == [0]
    second = write_batches(wal_dir, scrape_batches(2, seed=5))
    assert wal.list_segments(wal_dir) == [0, 1]
    with WAL(wal_dir) as writer:
        assert writer.segment_index == 2
    assert replayed(wal_dir) == first + second


def test_rotation_keeps_a_batch_in_one_segment(tmp_path, monkeypatch):
    wal_dir = tmp_path / "wal"
    writes = []
    real_write = os.write

    def counting_write(fd, data):
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    batches = scrape_batches(60, series_per_batch=200)
    expected = write_batches(wal_dir, batches, segment_size=SMALL_SEGMENT)
    monkeypatch.undo()
    assert len(writes) == len(batches)  # one write() per batch, even across rotations
    assert len(wal.list_segments(wal_dir)) >= 4
    assert replayed(wal_dir) == expected


# ---------------------------------------------------------------------------------------------------
# Damage.


def is_prefix(got, expected) -> bool:
    return got == expected[:len(got)]


def read_in_memory(data: bytes | memoryview, pos: int = 0) -> tuple[list[bytes], int, int]:
    """(records, status, cut offset) of reading a segment's bytes from `pos` with the fragment reader."""
    records = []
    while True:
        status, start, pos, record, _ = walrecords.read_record(data, pos)
        if status != walrecords.READ_OK:
            return records, status, start
        records.append(record)


def torn_tail_source(tmp_path) -> tuple[list, bytes]:
    source = tmp_path / "source"
    # The last page holds the end of a three-page record and several small ones after it.
    batches = scrape_batches(12, series_per_batch=8)
    batches.append({"samples": samples(np.arange(6000), np.arange(6000), np.ones(6000))})
    batches += scrape_batches(3, series_per_batch=8, seed=9)
    expected = write_batches(source, batches)
    data = (source / "00000000").read_bytes()
    assert len(data) > 2 * PAGE
    return expected, data


def test_torn_tail_at_every_offset_of_the_last_page_reads_a_prefix(tmp_path):
    _, data = torn_tail_source(tmp_path)
    whole, status, _ = read_in_memory(data)
    assert status == walrecords.READ_END
    last_page = len(data) - len(data) % PAGE
    # Start each read at the last record boundary before the last page: what precedes it never changes.
    base, skipped, pos = 0, 0, 0
    while True:
        status, _, pos, _, _ = walrecords.read_record(data, pos)
        if status != walrecords.READ_OK or pos > last_page:
            break
        base, skipped = pos, skipped + 1
    view = memoryview(data)
    boundaries = set()
    for offset in range(last_page, len(data) + 1):
        records, status, cut = read_in_memory(view[:offset], base)
        assert records == whole[skipped:skipped + len(records)], offset
        if status == walrecords.READ_END:
            assert offset == cut
            boundaries.add(offset)
        else:
            assert status == walrecords.READ_TORN, offset
            # The cut is where the torn record starts: what is before it reads cleanly, to the end.
            assert read_in_memory(view[:cut], base) == (records, walrecords.READ_END, cut)
    assert len(boundaries) > 5


def test_torn_tail_replay_repairs_and_never_raises(tmp_path):
    expected, data = torn_tail_source(tmp_path)
    target = tmp_path / "wal"
    target.mkdir()
    segment = target / "00000000"
    # Around every record boundary and a spread of offsets in between.
    boundaries = [0]
    offsets = set(range(0, len(data) + 1, 509)) | {len(data)}
    pos = 0
    while True:
        status, _, pos, _, _ = walrecords.read_record(data, pos)
        if status != walrecords.READ_OK:
            break
        boundaries.append(pos)
    for boundary in boundaries:
        offsets |= {o for o in (boundary - 7, boundary - 1, boundary, boundary + 1, boundary + 7)
                    if 0 <= o <= len(data)}
    seen_lengths = set()
    for offset in sorted(offsets):
        segment.write_bytes(data[:offset])
        stats = ReplayStats()
        got = replayed(target, stats=stats)
        assert is_prefix(got, expected), offset
        seen_lengths.add(len(got))
        # The repair cut the file at a record boundary: a second replay is clean and equal.
        again_stats = ReplayStats()
        assert replayed(target, stats=again_stats) == got
        assert not again_stats.torn_tails and not again_stats.corruptions
        if offset == len(data):
            assert got == expected and not stats.torn_tails
    assert seen_lengths == set(range(len(expected) + 1))


def test_writing_after_a_repaired_torn_tail(tmp_path):
    wal_dir = tmp_path / "wal"
    expected = write_batches(wal_dir, scrape_batches(5))
    path = wal_dir / "00000000"
    path.write_bytes(path.read_bytes()[:-5])
    stats = ReplayStats()
    got = replayed(wal_dir, stats=stats)
    assert got == expected[:-1] and len(stats.torn_tails) == 1
    more = write_batches(wal_dir, scrape_batches(2, seed=4))
    assert replayed(wal_dir) == got + more


def test_torn_tail_in_an_older_segment_keeps_the_later_ones(tmp_path):
    # A crash, then a start that skipped replay: the torn segment is followed by a newer one.
    wal_dir = tmp_path / "wal"
    first = write_batches(wal_dir, scrape_batches(5))
    path = wal_dir / "00000000"
    path.write_bytes(path.read_bytes()[:-3])
    second = write_batches(wal_dir, scrape_batches(2, seed=7))
    stats = ReplayStats()
    assert replayed(wal_dir, stats=stats) == first[:-1] + second
    assert len(stats.torn_tails) == 1 and not stats.deleted_segments


def test_zero_filled_tail_is_clean_or_torn(tmp_path):
    wal_dir = tmp_path / "wal"
    expected = write_batches(wal_dir, scrape_batches(4))
    path = wal_dir / "00000000"
    data = path.read_bytes()
    # A crash after the file grew but before its data blocks were written reads as zeros.
    path.write_bytes(data + bytes(3 * PAGE))
    stats = ReplayStats()
    assert replayed(wal_dir, stats=stats) == expected and not stats.torn_tails and not stats.corruptions
    path.write_bytes(data[:-40] + bytes(2 * PAGE))
    stats = ReplayStats()
    assert is_prefix(replayed(wal_dir, stats=stats), expected)
    assert stats.torn_tails or stats.corruptions


def test_bit_flips_are_detected(tmp_path):
    source = tmp_path / "source"
    expected = write_batches(source, scrape_batches(10, series_per_batch=12))
    data = (source / "00000000").read_bytes()
    target = tmp_path / "wal"
    target.mkdir()
    rng = np.random.default_rng(11)
    positions = sorted(set(rng.integers(0, len(data), 80).tolist()) | {0, 1, 3, 7, len(data) - 1})
    for position in positions:
        for bit in (0, 5):
            flipped = bytearray(data)
            flipped[position] ^= 1 << bit
            (target / "00000000").write_bytes(flipped)
            stats = ReplayStats()
            got = replayed(target, stats=stats)
            assert is_prefix(got, expected) and len(got) < len(expected), (position, bit)
            assert stats.corruptions or stats.torn_tails


def test_corruption_in_an_older_segment_deletes_the_later_ones(tmp_path, caplog):
    wal_dir = tmp_path / "wal"
    expected = write_batches(wal_dir, scrape_batches(80, series_per_batch=100), segment_size=PAGE)
    segments = wal.list_segments(wal_dir)
    assert len(segments) >= 4
    # Which records live in segment 0, and flip a byte in the middle of it.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(wal_dir / "00000000", lone / "00000000")
    in_first = len(replayed(lone))
    path = wal_dir / "00000001"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(data)
    stats = ReplayStats()
    with caplog.at_level(logging.ERROR, logger="mimird.tsdb.wal"):
        got = replayed(wal_dir, stats=stats)
    assert is_prefix(got, expected) and in_first <= len(got) < len(expected)
    assert len(stats.corruptions) == 1
    assert [Path(p).name for p in stats.deleted_segments] == [f"{i:08d}" for i in segments[2:]]
    assert wal.list_segments(wal_dir) == [0, 1]
    assert any(r.levelno == logging.ERROR and "corrupt" in r.getMessage() for r in caplog.records)
    assert replayed(wal_dir) == got
    # Writing goes on after the repaired log.
    more = write_batches(wal_dir, scrape_batches(1, seed=3))
    assert replayed(wal_dir) == got + more


def test_replay_without_repair_modifies_nothing(tmp_path):
    wal_dir = tmp_path / "wal"
    expected = write_batches(wal_dir, scrape_batches(4))
    path = wal_dir / "00000000"
    path.write_bytes(path.read_bytes()[:-9])
    before = path.read_bytes()
    assert replayed(wal_dir, repair=False) == expected[:-1]
    assert path.read_bytes() == before


def test_unknown_and_undecodable_records_are_skipped(tmp_path):
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    good = walrecords.encode_series([(1, lbls(a="b"))])
    tombstones = b"\x03" + struct.pack(">Q", 1) + encode_varint(0) + encode_varint(10)
    broken = b"\x02" + bytes(16) + b"\x00"  # passes the checksum, does not decode
    framed, _ = reference_frame([good, tombstones, broken, good], 0)
    (wal_dir / "00000000").write_bytes(framed)
    stats = ReplayStats()
    assert replayed(wal_dir, stats=stats) == [("series", [(1, lbls(a="b"))])] * 2
    assert stats.skipped_records == 2 and not stats.corruptions


def test_empty_and_missing_wal(tmp_path):
    assert replayed(tmp_path / "nothing") == []
    (tmp_path / "wal").mkdir()
    (tmp_path / "wal" / "00000000").write_bytes(b"")
    assert replayed(tmp_path / "wal") == []


# ---------------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint_fixture(wal_dir: Path) -> list[dict]:
    """Series 1..12 and their samples at t = 0..59 s, metadata changing on the way, in ten segments."""
    batches = []
    series = [(ref, lbls(__name__="m", id=str(ref))) for ref in range(1, 13)]
    for step in range(60):
        batch = {"samples": samples(range(1, 13), [step * 1000] * 12, [step + ref / 100 for ref in range(1, 13)])}
        if step == 0:
            batch["series"] = series
        if step % 20 == 0:
            batch["metadata"] = [(ref, 1, "", f"help {step}") for ref in range(1, 13)]
        batch["exemplars"] = [(step % 12 + 1, step * 1000, 1.0, lbls(trace_id=str(step)))]
        batches.append(batch)
    with WAL(wal_dir) as writer:
        for step, batch in enumerate(batches):
            if step and step % 6 == 0:
                writer.next_segment()
            writer.log_batch(**batch)
    return batches


def sample_set(records) -> list[tuple[int, int, float]]:
    found = []
    for record in records:
        if isinstance(record, SamplesRecord):
            found += zip(record.refs.tolist(), record.timestamps.tolist(), record.values.tolist(), strict=True)
    return found


def copy_segments(wal_dir: Path, target: Path, indexes) -> Path:
    target.mkdir()
    for index in indexes:
        shutil.copy(wal.segment_path(wal_dir, index), wal.segment_path(target, index))
    return target


def test_checkpoint_truncate_replay(tmp_path):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    segments = wal.list_segments(wal_dir)
    assert len(segments) >= 6
    before = sample_set(wal.replay(wal_dir))
    upto = segments[len(segments) // 2]
    later = sample_set(wal.replay(copy_segments(wal_dir, tmp_path / "later", [i for i in segments if i > upto])))
    keep = {ref for ref in range(1, 13) if ref % 2}
    mint = 20_000

    path = wal.checkpoint(wal_dir, lambda ref: ref in keep, mint, last_segment=upto)
    assert path == wal_dir / f"checkpoint.{upto:08d}"
    assert wal.list_segments(wal_dir) == segments  # nothing deleted before truncate
    wal.truncate(wal_dir, upto)
    assert wal.list_segments(wal_dir) == [i for i in segments if i > upto]

    in_checkpoint = sample_set(wal.replay(path))
    assert in_checkpoint == [s for s in before if s not in set(later) and s[0] in keep and s[1] >= mint]
    after = list(wal.replay(wal_dir))
    assert sample_set(after) == in_checkpoint + later
    series = [item for record in after if isinstance(record, SeriesRecord) for item in record.series]
    assert series == [(ref, lbls(__name__="m", id=str(ref))) for ref in sorted(keep)]
    checkpoint_metadata = [item for record in wal.replay(path) if isinstance(record, MetadataRecord)
                           for item in record.metadata]
    assert checkpoint_metadata == [(ref, 1, "", "help 20") for ref in sorted(keep)]  # the latest only
    exemplars = [item for record in wal.replay(path) if isinstance(record, ExemplarsRecord)
                 for item in record.exemplars]
    assert exemplars and all(ref in keep and t >= mint for ref, t, _, _ in exemplars)


def test_checkpoint_on_top_of_a_checkpoint(tmp_path):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    segments = wal.list_segments(wal_dir)
    before = sample_set(wal.replay(wal_dir))
    newest = sample_set(wal.replay(copy_segments(wal_dir, tmp_path / "newest", segments[-1:])))
    first = wal.checkpoint(wal_dir, lambda ref: True, 10_000, last_segment=segments[2])
    wal.truncate(wal_dir, segments[2])
    second = wal.checkpoint(wal_dir, lambda ref: ref != 5, 30_000)  # default: all but the newest segment
    assert second == wal_dir / f"checkpoint.{segments[-2]:08d}"
    wal.truncate(wal_dir, segments[-2])
    assert not first.exists()
    assert wal.list_segments(wal_dir) == segments[-1:]
    expected = [s for s in before if s not in set(newest) and s[0] != 5 and s[1] >= 30_000] + newest
    assert sample_set(wal.replay(wal_dir)) == expected
    # Nothing left to cover: no new checkpoint.
    assert wal.checkpoint(wal_dir, lambda ref: True, 0) is None
    assert wal.checkpoint(wal_dir, lambda ref: True, 0, last_segment=segments[-2]) == second


def test_damaged_checkpoint_is_read_up_to_the_damage_and_left_alone(tmp_path, caplog):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    segments = wal.list_segments(wal_dir)
    path = wal.checkpoint(wal_dir, lambda ref: True, 0, last_segment=segments[4])
    wal.truncate(wal_dir, segments[4])
    later = replayed(copy_segments(wal_dir, tmp_path / "later", segments[5:]))
    in_checkpoint = replayed(path)
    segment = path / "00000000"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x08
    segment.write_bytes(data)
    stats = ReplayStats()
    with caplog.at_level(logging.ERROR, logger="mimird.tsdb.wal"):
        got = replayed(wal_dir, stats=stats)
    assert len(stats.corruptions) == 1 and "checkpoint" in caplog.text
    assert segment.read_bytes() == data
    assert got[len(got) - len(later):] == later
    assert is_prefix(got[:len(got) - len(later)], in_checkpoint)


def test_numbering_continues_after_a_checkpoint_that_covers_every_segment(tmp_path):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    last = wal.list_segments(wal_dir)[-1]
    wal.checkpoint(wal_dir, lambda ref: ref == 1, 59_000, last_segment=last)
    wal.truncate(wal_dir, last)
    assert wal.list_segments(wal_dir) == []
    with WAL(wal_dir) as writer:
        assert writer.segment_index == last + 1
        writer.log_samples(*samples([1], [60_000], [7.0]))
    assert sample_set(wal.replay(wal_dir)) == [(1, 59_000, 59.01), (1, 60_000, 7.0)]


def test_truncate_refuses_without_a_covering_checkpoint(tmp_path):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    with pytest.raises(WALError):
        wal.truncate(wal_dir, 1)
    assert wal.list_segments(wal_dir)[0] == 0
    with WAL(wal_dir) as writer:
        with pytest.raises(WALError):
            writer.truncate(writer.segment_index)


def test_checkpoint_refuses_damaged_input_and_leaves_no_tmp(tmp_path):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    path = wal_dir / "00000001"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(data)
    with pytest.raises(WALError):
        wal.checkpoint(wal_dir, lambda ref: True, 0)
    assert sorted(p.name for p in wal_dir.iterdir() if p.is_dir()) == []


CRASH_SCRIPT = """
import os, sys, shutil
from mimird.tsdb import wal
step = sys.argv[2]
real_rename, real_remove = os.rename, os.remove
removed = []
def crash(*args):
    os._exit(17)
if step == "before-rename":
    os.rename = crash
def remove_then_crash(path):
    real_remove(path)
    removed.append(path)
    if len(removed) == 2:
        os._exit(17)
if step == "mid-truncate":
    os.remove = remove_then_crash
def rmtree_crash(*args, **kwargs):
    os._exit(17)
if step == "before-old-checkpoint-removal":
    shutil.rmtree = rmtree_crash
upto = int(sys.argv[3])
wal.checkpoint(sys.argv[1], lambda ref: ref % 3 != 0, 25_000, last_segment=upto)
if step == "before-truncate":
    os._exit(17)
wal.truncate(sys.argv[1], upto)
"""


@pytest.mark.parametrize("step", ["before-rename", "before-truncate", "mid-truncate",
                                  "before-old-checkpoint-removal"])
def test_crash_between_checkpoint_steps_replays_correctly(tmp_path, step):
    wal_dir = tmp_path / "wal"
    checkpoint_fixture(wal_dir)
    segments = wal.list_segments(wal_dir)
    # An earlier checkpoint exists, so that the last step (removing it) can be interrupted too.
    wal.checkpoint(wal_dir, lambda ref: True, 0, last_segment=segments[1])
    wal.truncate(wal_dir, segments[1])
    before = sample_set(list(wal.replay(wal_dir)))
    upto = segments[len(segments) // 2]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(wal_dir), step, str(upto)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 17, result.stderr
    names = sorted(p.name for p in wal_dir.iterdir() if p.is_dir())
    if step == "before-rename":
        assert any(name.endswith(".tmp") for name in names)
    after = sample_set(list(wal.replay(wal_dir)))
    # Nothing doubled; nothing the checkpoint must keep is lost; nothing invented.
    assert len(after) == len(set((r, t) for r, t, _ in after))
    must_survive = {s for s in before if s[0] % 3 != 0 and s[1] >= 25_000}
    assert must_survive <= set(after) <= set(before)
    # And the next round of checkpointing cleans up and converges.
    with WAL(wal_dir) as writer:
        assert not any(p.name.endswith(".tmp") for p in wal_dir.iterdir())
        writer.log_batch(samples=samples([1], [99_000], [1.0]))
        current = writer.segment_index
    wal.checkpoint(wal_dir, lambda ref: ref % 3 != 0, 25_000, last_segment=current - 1)
    wal.truncate(wal_dir, current - 1)
    final = sample_set(list(wal.replay(wal_dir)))
    assert len(final) == len(set((r, t) for r, t, _ in final))
    assert must_survive | {(1, 99_000, 1.0)} <= set(final)
    assert len(wal.list_checkpoints(wal_dir)) == 1


# ---------------------------------------------------------------------------------------------------
# fsync policies and failures.


@pytest.fixture
def sync_calls(monkeypatch):
    calls = []
    real = wal._datasync

    def counting(fd):
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(wal, "_datasync", counting)
    return calls


def one_of_each(writer: WAL) -> None:
    writer.log_series([(1, lbls(a="b"))], sync=False)
    writer.log_samples(*samples([1], [1], [1.0]), sync=False)
    writer.log_batch(series=[(2, lbls(a="c"))], samples=samples([1, 2], [2, 2], [1.0, 2.0]))
    writer.log_batch(samples=samples([1, 2], [3, 3], [1.0, 2.0]))


@pytest.mark.parametrize("policy, syncs_before_close", [("always", 4), ("batch", 2), ("never", 0)])
def test_fsync_policies(tmp_path, sync_calls, policy, syncs_before_close):
    writer = WAL(tmp_path / "wal", fsync=policy)
    one_of_each(writer)
    assert len(sync_calls) == syncs_before_close
    writer.close()
    assert len(sync_calls) == syncs_before_close + 1  # close syncs under every policy
    writer.close()
    with pytest.raises(WALError):
        writer.log_series([(3, lbls(a="d"))])


def test_group_commit_and_metrics(tmp_path, sync_calls):
    writer = WAL(tmp_path / "wal", fsync="batch")
    written = 0
    for batch in scrape_batches(5):
        written += writer.log_batch(**batch, sync=False)
    assert sync_calls == []
    writer.sync()
    writer.sync()  # nothing new: no second fsync
    assert len(sync_calls) == 1
    assert writer.metrics.records_written == 10
    assert writer.metrics.bytes_written == written == (tmp_path / "wal" / "00000000").stat().st_size
    assert writer.metrics.fsyncs == 1 and writer.metrics.fsync_seconds >= 0
    assert writer.metrics.segments_created == 1 and writer.metrics.writes_failed == 0
    writer.close()


def test_rotation_syncs_the_finished_segment_under_every_policy(tmp_path, sync_calls):
    with WAL(tmp_path / "wal", segment_size=PAGE, fsync="never") as writer:
        for batch in scrape_batches(20, series_per_batch=200):
            writer.log_batch(**batch)
        rotations = writer.segment_index
    assert rotations >= 2
    assert len(sync_calls) == rotations + 1


def test_interval_fsync_happens_in_the_background(tmp_path, sync_calls):
    writer = WAL(tmp_path / "wal", fsync=0.02)
    assert writer.fsync_policy == 0.02
    one_of_each(writer)
    deadline = time.monotonic() + 5
    while not sync_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sync_calls
    synced = len(sync_calls)
    time.sleep(0.1)
    assert len(sync_calls) == synced  # nothing new written, nothing synced
    writer.close()
    assert replayed(tmp_path / "wal")[0] == ("series", [(1, lbls(a="b"))])


@pytest.mark.parametrize("policy", ["sometimes", 0, -1.0, True, None])
def test_invalid_fsync_policies(tmp_path, policy):
    with pytest.raises(ValueError):
        WAL(tmp_path / "wal", fsync=policy)


def test_invalid_segment_size(tmp_path):
    with pytest.raises(ValueError):
        WAL(tmp_path / "wal", segment_size=PAGE + 1)


def test_failed_write_is_cut_off_and_later_batches_replay(tmp_path, monkeypatch):
    wal_dir = tmp_path / "wal"
    writer = WAL(wal_dir)
    batches = scrape_batches(4, series_per_batch=400)
    writer.log_batch(**batches[0])
    real_write = os.write

    def half_then_enospc(fd, data):
        if len(data) > 100:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(WALError):
        writer.log_batch(**batches[1])
    monkeypatch.undo()
    writer.log_batch(**batches[2])
    writer.close()
    stats = ReplayStats()
    got = replayed(wal_dir, stats=stats)
    expected = write_batches(tmp_path / "reference", [batches[0], batches[2]])
    assert got == expected
    assert not stats.torn_tails and not stats.corruptions


def test_failed_fsync_stops_the_wal(tmp_path, monkeypatch):
    writer = WAL(tmp_path / "wal", fsync="always")

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal, "_datasync", failing)
    with pytest.raises(WALError):
        writer.log_series([(1, lbls(a="b"))])
    monkeypatch.undo()
    with pytest.raises(WALError, match="must be reopened"):
        writer.log_series([(2, lbls(a="c"))])
    writer.close()


# ---------------------------------------------------------------------------------------------------
# Prometheus reads what we write.


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_reads_our_wal(tmp_path):
    now = int(time.time() * 1000)
    with WAL(tmp_path / "wal", segment_size=PAGE) as writer:
        writer.log_batch(series=[(1, lbls(__name__="up", job="a")), (2, lbls(__name__="x_total", job="b"))],
                         samples=samples([1, 2, 1], [now, now, now + 15_000], [1.0, 2.5, 3.0]),
                         metadata=[(1, 2, "", "Up.")], exemplars=[(2, now, 2.5, lbls(trace_id="abc"))])
        n = 20_000  # a record over several pages
        writer.log_samples(*samples([2] * n, now + 30_000 + np.arange(n), np.arange(n, dtype=np.float64)))
    result = subprocess.run(["promtool", "tsdb", "dump", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f'{{__name__="up", job="a"}} 1 {now}' in lines
    assert f'{{__name__="up", job="a"}} 3 {now + 15000}' in lines
    assert f'{{__name__="x_total", job="b"}} 2.5 {now}' in lines
    assert f'{{__name__="x_total", job="b"}} 19999 {now + 30_000 + n - 1}' in lines
    assert len(lines) == 3 + n


def test_snappy_compressed_records_round_trip(tmp_path):
    """compress=True stores records snappy-compressed (Prometheus's flag bit) when that is smaller."""
    writer = WAL(tmp_path / "wal", compress=True)
    series = [(1, (("__name__", "compressible"), ("job", "x" * 200)))]
    refs = np.full(3000, 1, dtype=np.uint64)
    ts = np.arange(3000, dtype=np.int64) * 15000
    vals = np.zeros(3000)
    writer.log_batch(series=series, samples=(refs, ts, vals))
    writer.close()
    plain = WAL(tmp_path / "plain")
    plain.log_batch(series=series, samples=(refs, ts, vals))
    plain.close()
    assert wal.segments_size(tmp_path / "wal") < wal.segments_size(tmp_path / "plain")
    records = list(wal.replay(tmp_path / "wal"))
    assert records[0].series == series
    assert records[1].timestamps.tolist() == ts.tolist()
