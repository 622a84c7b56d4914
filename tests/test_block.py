"""Blocks: chunk segment files, index v2, meta.json, ULIDs and tombstones, written and read back.

The round trips use seeded random series (many symbols, several chunks per series, unsorted input,
chunk-file rotation) and compare every sample bit for bit; selection is checked against brute force
over the label sets for every matcher type; corruption is checked by flipping bytes and requiring
either a CorruptBlockError or unchanged results, never a crash or wrong data.
"""

from __future__ import annotations

import json
import os
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimird._fast.blockindex import decode_series, encode_series_batch
from mimird._fast.crc32c import crc32c
from mimird._fast.varint import encode_uvarint, encode_varint
from mimird._fast.xorchunk import STALE_NAN, decode, encode
from mimird.tsdb.block import BlockReader, CorruptBlockError, cut_chunks, read_meta, write_block
from mimird.tsdb.block.chunks import (
    SEGMENT_HEADER,
    ChunkReader,
    ChunkWriter,
    CorruptChunkError,
    split_chunk_ref,
)
from mimird.tsdb.block.index import CorruptIndexError, IndexReader, IndexWriter
from mimird.tsdb.block.meta import (
    ULIDGenerator,
    check_tombstones,
    decode_ulid,
    empty_tombstones,
    encode_ulid,
    is_ulid,
    ulid_time_ms,
)
from mimird.tsdb.labels import Matcher, make_labels

T0 = 1_700_000_000_000
STEP = 15_000


# --------------------------------------------------------------------------------------------------
# Helpers


def random_series(rng: random.Random, count: int, max_samples: int = 400) -> list[tuple]:
    """(labels, ts, vals) triples with distinct label sets, in random order."""
    names = ["__name__", "job", "instance", "pod", "le", "zone", "ünïcode", "a"]
    seen = set()
    result = []
    while len(result) < count:
        pairs = {"__name__": f"metric_{rng.randrange(12)}"}
        for name in rng.sample(names[1:], rng.randrange(0, 5)):
            # Many distinct values make a big symbol table; "" values must vanish from the block.
            pairs[name] = rng.choice(["", f"v{rng.randrange(3000)}", "x", "quote\"back\\slash\nnl", "日本"])
        labels = make_labels(pairs)
        if labels in seen:
            continue
        seen.add(labels)
        n = rng.randrange(1, max_samples)
        start = T0 + rng.randrange(0, 100) * 1000
        ts = start + np.cumsum(np.array([rng.choice((STEP, STEP, STEP - 7, STEP + 1000)) for _ in range(n)]))
        kind = rng.randrange(3)
        if kind == 0:
            vals = np.cumsum(np.array([float(rng.randrange(0, 50)) for _ in range(n)]))
        elif kind == 1:
            vals = np.array([rng.uniform(-1e6, 1e6) for _ in range(n)])
        else:
            vals = np.array([rng.choice((0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), STALE_NAN))
                             for _ in range(n)])
        result.append((labels, ts.astype(np.int64), vals))
    return result


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality, so NaN payloads (the stale marker) count."""
    return a.shape == b.shape and bool(np.all(a.view(np.uint64) == b.view(np.uint64)))


def read_all(block_dir) -> dict:
    with BlockReader(block_dir) as reader:
        return {labels: (ts, vals) for labels, ts, vals in reader.read_series_samples([Matcher("=~", "__name__", ".+")])}


def brute_select(series_labels: list, matchers: list[Matcher]) -> set:
    return {labels for labels in series_labels
            if all(m.matches(dict(labels).get(m.name, "")) for m in matchers)}


# --------------------------------------------------------------------------------------------------
# ULIDs, tombstones, meta


def test_ulid_format_roundtrip_and_order():
    generator = ULIDGenerator()
    ulids = [generator.new(1_600_000_000_123) for _ in range(50)] + [generator.new()]
    assert all(len(u) == 26 and is_ulid(u) for u in ulids)
    assert ulids == sorted(ulids), "ULIDs of one generator must sort in creation order"
    assert len(set(ulids)) == len(ulids)
    assert ulid_time_ms(ulids[0]) == 1_600_000_000_123
    assert encode_ulid(decode_ulid(ulids[3])) == ulids[3]
    # Crockford alphabet: 0 is "0", 31 is "Z"; the 48-bit time leads.
    assert encode_ulid(0) == "0" * 26 and encode_ulid(31) == "0" * 25 + "Z"
    assert encode_ulid(1 << 80)[:10] == "0000000001"
    for bad in ("", "8" + "0" * 25, "0" * 25 + "U", "0" * 27):
        assert not is_ulid(bad)


def test_empty_tombstones_bytes():
    data = empty_tombstones()
    assert data == bytes.fromhex("0130ba30" "01" "00000000")
    assert check_tombstones(data) == 0
    with pytest.raises(ValueError):
        check_tombstones(b"\x01\x30\xba\x31\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError):
        check_tombstones(data[:-1] + b"\x01")


# --------------------------------------------------------------------------------------------------
# Chunk segment files


def test_chunk_segment_layout(tmp_path):
    chunk = encode([T0, T0 + STEP], [1.0, 2.0])
    with ChunkWriter(tmp_path / "chunks") as writer:
        ref = writer.write_chunk(chunk)
    raw = (tmp_path / "chunks" / "000001").read_bytes()
    assert raw[:8] == SEGMENT_HEADER == bytes.fromhex("85bd40dd" "01" "000000")
    assert ref == 8
    expected = bytes([len(chunk), 1]) + chunk + crc32c(b"\x01" + chunk).to_bytes(4, "big")
    assert raw[8:] == expected
    reader = ChunkReader(tmp_path / "chunks")
    assert reader.chunk(ref) == chunk
    reader.close()


def test_chunk_segments_rotate(tmp_path):
    rng = random.Random(3)
    chunks = [encode(np.arange(n) * 1000, np.arange(n, dtype=float) * rng.random()) for n in
              (rng.randrange(1, 120) for _ in range(60))]
    with ChunkWriter(tmp_path / "chunks", segment_size=1024) as writer:
        refs = [writer.write_chunk(c) for c in chunks]
        sizes = writer.close()
    assert len(sizes) > 3
    assert all(size <= 1024 for size in sizes)
    assert [os.path.getsize(tmp_path / "chunks" / f"{i + 1:06d}") for i in range(len(sizes))] == sizes
    assert refs == sorted(refs) and split_chunk_ref(refs[-1])[0] == len(sizes) - 1
    reader = ChunkReader(tmp_path / "chunks")
    assert [reader.chunk(r) for r in refs] == chunks
    reader.close()


def test_chunk_batches_write_the_same_bytes(tmp_path):
    rng = random.Random(8)
    chunks = [encode(np.arange(n) * 1000, np.cumsum(np.ones(n))) for n in
              (rng.randrange(1, 120) for _ in range(80))]
    with ChunkWriter(tmp_path / "one", segment_size=2048) as writer:
        single = [writer.write_chunk(c) for c in chunks]
    with ChunkWriter(tmp_path / "batch", segment_size=2048) as writer:
        batched = []
        position = 0
        while position < len(chunks):
            size = rng.randrange(1, 6)
            batched.extend(writer.write_chunks(chunks[position:position + size]))
            position += size
    assert batched == single
    names = sorted(os.listdir(tmp_path / "one"))
    assert len(names) > 2 and names == sorted(os.listdir(tmp_path / "batch"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "batch" / name).read_bytes()


def test_chunk_corruption_is_detected(tmp_path):
    chunk = encode(np.arange(100) * 1000, np.sin(np.arange(100)))
    with ChunkWriter(tmp_path / "chunks") as writer:
        ref = writer.write_chunk(chunk)
    path = tmp_path / "chunks" / "000001"
    good = path.read_bytes()
    # Bytes 5-7 are the header's padding, which no reader checks.
    for position in [p for p in range(0, len(good), 3) if not 5 <= p < 8]:
        corrupt = bytearray(good)
        corrupt[position] ^= 0x41
        path.write_bytes(bytes(corrupt))
        try:
            reader = ChunkReader(tmp_path / "chunks")
        except CorruptChunkError:
            continue
        try:
            with pytest.raises(CorruptChunkError):
                reader.chunk(ref)
        finally:
            reader.close()
    path.write_bytes(good)
    reader = ChunkReader(tmp_path / "chunks")
    for bad_ref in (0, 3, len(good), (1 << 32) | 8):
        with pytest.raises(CorruptChunkError):
            reader.chunk(bad_ref)
    reader.close()


# --------------------------------------------------------------------------------------------------
# Index


def test_index_series_alignment_and_symbols(tmp_path):
    path = tmp_path / "index"
    writer = IndexWriter(path)
    symbols = ["", "__name__", "a", "b", "up"]
    writer.add_symbols(symbols)
    # Series 0: {__name__="up", a="b"} with two chunks; series 1: {a="a"} with none.
    refs = writer.add_series(np.array([1, 0]), np.array([0, 4, 6]), np.array([1, 4, 2, 3, 2, 2], np.uint32),
                             np.array([0, 2, 2]), np.array([-5, 100]), np.array([50, 200]),
                             np.array([8, 300], np.uint64))
    writer.close()
    reader = IndexReader(path)
    try:
        assert list(reader.symbols()) == symbols
        assert all(int(r) * 16 >= reader.toc_series for r in refs)
        labels, mint, maxt, chunk_refs = reader.series(int(refs[1]))
        assert labels == (("__name__", "up"), ("a", "b"))
        assert mint.tolist() == [-5, 100] and maxt.tolist() == [50, 200] and chunk_refs.tolist() == [8, 300]
        assert reader.series(int(refs[0]))[0] == (("a", "a"),)
        assert reader.label_names() == ["__name__", "a"]
        assert reader.label_values("a") == ["a", "b"]
        assert reader.label_index("a") == ["a", "b"]
        assert reader.postings("a", "b").tolist() == [int(refs[1])]
        assert reader.all_postings().tolist() == sorted(refs.tolist())
        assert reader.postings("a", "zzz").tolist() == [] and reader.postings("nope", "b").tolist() == []
    finally:
        reader.close()
    with pytest.raises(ValueError):
        IndexWriter(tmp_path / "other").add_symbols(["b", "a"])


def reference_series_entry(label_ids: list[int], chunks: list[tuple[int, int, int]]) -> bytes:
    """A series entry built straight from the format description (docs/format/index.md)."""
    body = encode_uvarint(len(label_ids) // 2) + b"".join(encode_uvarint(i) for i in label_ids)
    body += encode_uvarint(len(chunks))
    for index, (mint, maxt, ref) in enumerate(chunks):
        if index == 0:
            body += encode_varint(mint) + encode_uvarint(maxt - mint) + encode_uvarint(ref)
        else:
            previous_maxt, previous_ref = chunks[index - 1][1], chunks[index - 1][2]
            body += encode_uvarint(mint - previous_maxt) + encode_uvarint(maxt - mint)
            body += encode_varint(ref - previous_ref)
    return encode_uvarint(len(body)) + body + crc32c(body).to_bytes(4, "big")


@st.composite
def series_entries(draw):
    label_ids = draw(st.lists(st.integers(0, 2**32 - 1), max_size=12))
    label_ids = label_ids[:len(label_ids) // 2 * 2]
    count = draw(st.integers(0, 6))
    chunks = []
    t = draw(st.integers(-(2**50), 2**50))
    for _ in range(count):
        mint = t + (draw(st.integers(1, 10**9)) if chunks else 0)
        maxt = mint + draw(st.integers(0, 10**9))
        ref = draw(st.integers(0, 2**40))
        chunks.append((mint, maxt, ref))
        t = maxt
    return label_ids, chunks


@settings(max_examples=150, deadline=None)
@given(st.lists(series_entries(), min_size=1, max_size=5), st.integers(0, 1000))
def test_series_entries_match_the_format(entries, position):
    label_starts = np.cumsum([0] + [len(ids) for ids, _ in entries])
    chunk_starts = np.cumsum([0] + [len(chunks) for _, chunks in entries])
    all_chunks = [c for _, chunks in entries for c in chunks]
    data, refs = encode_series_batch(
        position, np.arange(len(entries), dtype=np.int64), label_starts.astype(np.int64),
        np.array([i for ids, _ in entries for i in ids], dtype=np.uint32), chunk_starts.astype(np.int64),
        np.array([c[0] for c in all_chunks], dtype=np.int64), np.array([c[1] for c in all_chunks], dtype=np.int64),
        np.array([c[2] for c in all_chunks], dtype=np.uint64))
    expected = b""
    for ids, chunks in entries:
        expected += bytes(-(position + len(expected)) % 16) + reference_series_entry(ids, chunks)
    assert data == expected
    padded = bytes(position) + data
    for ref, (ids, chunks) in zip(refs.tolist(), entries, strict=True):
        label_ids, mint, maxt, chunk_refs = decode_series(padded, ref * 16)
        assert label_ids.tolist() == ids
        assert list(zip(mint.tolist(), maxt.tolist(), chunk_refs.tolist(), strict=True)) == chunks


# --------------------------------------------------------------------------------------------------
# Blocks


@pytest.mark.parametrize("seed", [0, 1])
def test_block_roundtrip_random(tmp_path, seed):
    rng = random.Random(seed)
    series = random_series(rng, 300)
    ulid = write_block(tmp_path, iter(series), tenant="team-a", source="ingester")
    block_dir = tmp_path / ulid
    assert sorted(os.listdir(block_dir)) == ["chunks", "index", "meta.json", "tombstones"]
    got = read_all(block_dir)
    assert set(got) == {labels for labels, _, _ in series}
    for labels, ts, vals in series:
        got_ts, got_vals = got[labels]
        assert np.array_equal(got_ts, ts) and same_floats(got_vals, vals), labels
    meta = read_meta(block_dir)
    assert meta.ulid == ulid and meta.tenant == "team-a" and meta.source == "ingester"
    assert meta.min_time == min(int(ts[0]) for _, ts, _ in series)
    assert meta.max_time == max(int(ts[-1]) for _, ts, _ in series) + 1
    assert meta.num_series == 300 and meta.num_samples == sum(len(ts) for _, ts, _ in series)
    assert meta.num_chunks == sum((len(ts) + 119) // 120 for _, ts, _ in series)
    assert meta.sources == [ulid] and meta.level == 1
    with BlockReader(block_dir) as reader:
        # Every value of every label of the input, and nothing else; empty values are absent.
        expected_values: dict[str, set] = {}
        for labels, _, _ in series:
            for name, value in labels:
                expected_values.setdefault(name, set()).add(value)
        assert reader.label_names() == sorted(expected_values)
        for name, values in expected_values.items():
            assert reader.label_values(name) == sorted(values)
            assert reader.index.label_index(name) == sorted(values)
        assert "" not in {v for values in expected_values.values() for v in values}
        # Series are stored in label order, and their chunks in that order in the files.
        stored = [(labels, chunks) for _, labels, chunks in reader.iter_series()]
        assert [labels for labels, _ in stored] == sorted(labels for labels, _, _ in series)
        chunk_refs = [c[2] for _, chunks in stored for c in chunks]
        assert chunk_refs == sorted(chunk_refs)


def test_block_meta_json(tmp_path):
    series = [((("__name__", "up"),), np.array([T0, T0 + STEP]), np.array([1.0, 0.0]))]
    ulid = write_block(tmp_path, series, T0, T0 + 7_200_000, tenant="t1", source="compactor", level=2,
                       sources=["01ARZ3NDEKTSV4RRFFQ69G5FAV"])
    block_dir = tmp_path / ulid
    text = (block_dir / "meta.json").read_text()
    assert text.startswith('{\n\t"ulid": ') and text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc) == ["ulid", "minTime", "maxTime", "stats", "compaction", "version", "thanos"]
    assert doc["minTime"] == T0 and doc["maxTime"] == T0 + 7_200_000 and doc["version"] == 1
    assert doc["stats"] == {"numSamples": 2, "numSeries": 1, "numChunks": 1}
    assert doc["compaction"] == {"level": 2, "sources": ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]}
    thanos = doc["thanos"]
    assert thanos["labels"] == {"__org_id__": "t1"}
    assert thanos["downsample"] == {"resolution": 0} and thanos["source"] == "compactor"
    assert thanos["segment_files"] == ["000001"]
    assert thanos["files"] == [
        {"rel_path": "chunks/000001", "size_bytes": os.path.getsize(block_dir / "chunks" / "000001")},
        {"rel_path": "index", "size_bytes": os.path.getsize(block_dir / "index")},
        {"rel_path": "meta.json"},
    ]
    assert (block_dir / "tombstones").read_bytes() == empty_tombstones()


def test_block_spanning_segment_rotation(tmp_path):
    series = random_series(random.Random(7), 80, max_samples=600)
    ulid = write_block(tmp_path, series, tenant="t", source="ingester", segment_size=8192)
    block_dir = tmp_path / ulid
    segments = sorted(os.listdir(block_dir / "chunks"))
    assert len(segments) > 3 and segments[0] == "000001"
    assert read_meta(block_dir).segment_files == segments
    got = read_all(block_dir)
    for labels, ts, vals in series:
        assert np.array_equal(got[labels][0], ts) and same_floats(got[labels][1], vals)


def test_block_from_chunks_and_time_range(tmp_path):
    ts = T0 + np.arange(500, dtype=np.int64) * STEP
    vals = np.arange(500, dtype=float)
    chunks = cut_chunks(ts, vals)
    assert [len(decode(c)[0]) for _, _, c in chunks] == [120, 120, 120, 120, 20]
    assert chunks[1][:2] == (int(ts[120]), int(ts[239]))
    labels = (("__name__", "m"), ("k", "v"))
    ulid = write_block(tmp_path, [(labels, chunks)], tenant=None, source="test")
    block_dir = tmp_path / ulid
    assert read_meta(block_dir).thanos_labels == {}
    with BlockReader(block_dir) as reader:
        (ref,) = reader.select([Matcher("=", "k", "v")]).tolist()
        got_labels, metas = reader.series(ref)
        assert got_labels == labels and [m[:2] for m in metas] == [c[:2] for c in chunks]
        assert [reader.chunk(m[2]) for m in metas] == [c for _, _, c in chunks]
        # Bounds are inclusive and cut inside chunks.
        lo, hi = int(ts[100]), int(ts[300])
        ((_, got_ts, got_vals),) = reader.read_series_samples([Matcher("=", "__name__", "m")], lo, hi)
        assert got_ts.tolist() == ts[100:301].tolist() and got_vals.tolist() == vals[100:301].tolist()
        assert list(reader.read_series_samples([Matcher("=", "__name__", "m")], 0, T0 - 1)) == []
        _, got_ts, _ = reader.series_samples(ref, int(ts[-1]), None)
        assert got_ts.tolist() == [int(ts[-1])]
        _, got_ts, got_vals = reader.series_samples(ref)
        assert got_ts.tolist() == ts.tolist() and got_vals.tolist() == vals.tolist()


def test_block_selection_matches_brute_force(tmp_path):
    rng = random.Random(11)
    series = random_series(rng, 400, max_samples=3)
    ulid = write_block(tmp_path, series, tenant="t", source="ingester")
    all_labels = [labels for labels, _, _ in series]
    values = sorted({v for labels in all_labels for _, v in labels}) + ["", "nope"]
    names = ["__name__", "job", "instance", "pod", "le", "zone", "ünïcode", "a", "missing"]
    patterns = ["", ".*", ".+", "v1.*", "metric_(1|2)", "x|", "v[0-4]+", "日本|x", "(?i)METRIC_3"]
    with BlockReader(tmp_path / ulid) as reader:
        for _ in range(400):
            matchers = []
            for _ in range(rng.randrange(1, 4)):
                op = rng.choice(["=", "!=", "=~", "!~"])
                value = rng.choice(patterns) if "~" in op else rng.choice(values)
                matchers.append(Matcher(op, rng.choice(names), value))
            refs = reader.select(matchers).tolist()
            got = {reader.series(ref)[0] for ref in refs}
            assert len(got) == len(refs)
            assert got == brute_select(all_labels, matchers), [str(m) for m in matchers]
        assert reader.select([]).tolist() == []


def test_block_sorted_input_keeps_write_order(tmp_path):
    series = sorted(random_series(random.Random(5), 50), key=lambda s: s[0])
    ulid = write_block(tmp_path, series, tenant="t", source="ingester")
    got = read_all(tmp_path / ulid)
    assert list(got) == [labels for labels, _, _ in series]


def test_block_rejects_bad_input_and_leaves_nothing(tmp_path):
    labels = (("__name__", "m"),)
    ts = np.array([T0, T0 + 1])
    cases = [
        [(labels, ts, np.zeros(2)), (labels, ts, np.zeros(2))],                        # same series twice
        [(labels, np.array([T0, T0]), np.zeros(2))],                                   # repeated timestamp
        [(labels, [(0, 10, encode([0, 10], [1, 2])), (10, 20, encode([10, 20], [1, 2]))])],  # overlap
        [((("", "x"),), ts, np.zeros(2))],                                             # empty name
        [((("a", ""),), ts, np.zeros(2))],                                             # no labels left
    ]
    for case in cases:
        with pytest.raises(ValueError):
            write_block(tmp_path, case, tenant="t", source="test")
    with pytest.raises(ValueError):
        write_block(tmp_path, [(labels, ts, np.zeros(2))], T0, T0 + 1, tenant="t", source="test")
    unsorted_dupes = [((("a", "2"),), ts, np.zeros(2)), ((("a", "1"),), ts, np.zeros(2)),
                      ((("a", "2"),), ts, np.zeros(2))]
    with pytest.raises(ValueError, match="twice"):
        write_block(tmp_path, unsorted_dupes, tenant="t", source="test")

    def failing():
        yield labels, ts, np.zeros(2)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_block(tmp_path, failing(), tenant="t", source="test")
    assert os.listdir(tmp_path) == []


def test_empty_block(tmp_path):
    ulid = write_block(tmp_path, [], 0, 1000, tenant="t", source="ingester")
    with BlockReader(tmp_path / ulid) as reader:
        assert reader.label_names() == [] and reader.index.all_postings().tolist() == []
        assert reader.select([Matcher("=~", "a", ".*")]).tolist() == []
        assert reader.meta.num_series == 0 and reader.meta.max_time == 1000


def _reads_or_raises(block_dir, expected: dict) -> str:
    """'raised' if reading the block raises CorruptBlockError, 'same' if it reads exactly `expected`."""
    try:
        got = read_all(block_dir)
        with BlockReader(block_dir) as reader:
            names = reader.label_names()
            values = {name: reader.label_values(name) for name in names}
            label_indices = {name: reader.index.label_index(name) for name in names}
            postings = {(name, value): {reader.series(ref)[0] for ref in reader.postings(name, value).tolist()}
                        for name in names for value in values[name]}
            every_series = {reader.series(ref)[0] for ref in reader.index.all_postings().tolist()}
    except (CorruptBlockError, CorruptIndexError):
        return "raised"
    assert set(got) == set(expected), "corruption changed the series set without an error"
    for labels, (ts, vals) in expected.items():
        assert np.array_equal(got[labels][0], ts) and same_floats(got[labels][1], vals)
    assert names == sorted({n for labels in expected for n, _ in labels})
    assert all(values[n] == sorted({v for labels in expected for k, v in labels if k == n}) for n in names)
    assert label_indices == values
    assert every_series == set(expected)
    assert all(postings[(n, v)] == {labels for labels in expected if (n, v) in labels} for n, v in postings)
    return "same"


def test_corrupt_index_bytes_are_detected(tmp_path):
    series = random_series(random.Random(2), 12, max_samples=150)
    ulid = write_block(tmp_path, series, tenant="t", source="ingester")
    block_dir = tmp_path / ulid
    expected = read_all(block_dir)
    path = block_dir / "index"
    good = path.read_bytes()
    rng = random.Random(9)
    unnoticed = []
    for position in list(range(0, len(good), 3)) + [0, 4, len(good) - 1, len(good) - 5]:
        corrupt = bytearray(good)
        corrupt[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(corrupt))
        if _reads_or_raises(block_dir, expected) == "same":
            unnoticed.append(position)
    # Only alignment padding (zeros, covered by no checksum) may change without an error.
    assert unnoticed and all(good[position] == 0 for position in unnoticed)
    for cut in (0, 10, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(CorruptBlockError):
            BlockReader(block_dir)
    path.write_bytes(good)
    assert _reads_or_raises(block_dir, expected) == "same"


def test_corrupt_chunk_bytes_are_detected(tmp_path):
    series = random_series(random.Random(4), 6, max_samples=200)
    ulid = write_block(tmp_path, series, tenant="t", source="ingester")
    block_dir = tmp_path / ulid
    expected = read_all(block_dir)
    path = block_dir / "chunks" / "000001"
    good = path.read_bytes()
    for position in [p for p in range(0, len(good), 7) if not 5 <= p < 8] + [len(good) - 1]:
        corrupt = bytearray(good)
        corrupt[position] ^= 0x10
        path.write_bytes(bytes(corrupt))
        assert _reads_or_raises(block_dir, expected) == "raised"
    path.write_bytes(good)


def test_missing_or_bad_files(tmp_path):
    series = random_series(random.Random(6), 3)
    ulid = write_block(tmp_path, series, tenant="t", source="ingester")
    block_dir = tmp_path / ulid
    meta = (block_dir / "meta.json").read_text()
    (block_dir / "meta.json").write_text("{not json")
    with pytest.raises(CorruptBlockError, match="meta.json"):
        BlockReader(block_dir)
    (block_dir / "meta.json").write_text(meta.replace('"version": 1', '"version": 7'))
    with pytest.raises(CorruptBlockError, match="version"):
        BlockReader(block_dir)
    (block_dir / "meta.json").write_text(meta)
    index = (block_dir / "index").read_bytes()
    (block_dir / "index").write_bytes(index[:4] + b"\x01" + index[5:])
    with pytest.raises(CorruptBlockError, match="version 1"):
        BlockReader(block_dir)
    (block_dir / "index").unlink()
    with pytest.raises(CorruptBlockError, match="missing"):
        BlockReader(block_dir)
    (block_dir / "index").write_bytes(index)
    os.rename(block_dir / "chunks" / "000001", block_dir / "chunks" / "000002")
    with pytest.raises(CorruptBlockError, match="out of sequence"):
        BlockReader(block_dir)


def test_index_header_constants(tmp_path):
    ulid = write_block(tmp_path, [((("a", "b"),), np.array([1]), np.array([2.0]))], tenant="t", source="x")
    data = (tmp_path / ulid / "index").read_bytes()
    assert data[:5] == bytes.fromhex("baaad700" "02")
    toc = struct.unpack(">6Q", data[-52:-4])
    assert toc[0] == 5 and crc32c(data[-52:-4]) == int.from_bytes(data[-4:], "big")
    # Symbol table: "" (always present, as in Prometheus), "a", "b".
    assert data[5:5 + 4 + 4 + 5] == struct.pack(">II", 4 + 5, 3) + b"\x00\x01a\x01b"


def test_writer_streams_chunks_to_disk(tmp_path):
    """Peak Python memory does not grow with the chunk bytes written: chunks are not held until the end."""
    import tracemalloc

    def generate(count):
        rng = np.random.default_rng(1)
        for i in range(count):
            ts = T0 + np.arange(480, dtype=np.int64) * STEP
            yield (("__name__", "m"), ("i", f"{i:06d}")), ts, 100 + np.cumsum(rng.normal(0, 1, 480))

    peaks, chunk_bytes = [], []
    for count in (200, 800):
        parent = tmp_path / str(count)
        tracemalloc.start()
        try:
            ulid = write_block(parent, generate(count), tenant="t", source="test")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        chunk_bytes.append(os.path.getsize(parent / ulid / "chunks" / "000001"))
    assert chunk_bytes[1] - chunk_bytes[0] > 1_500_000
    assert peaks[1] - peaks[0] < 0.2 * (chunk_bytes[1] - chunk_bytes[0])
