"""The bulk XOR decoder (xor_decode_range / xor_decode_until and their unchecked inner loop) against the
pure-Python reference codec and the per-sample decoder (XORIterator), on seeded random chunks.

The bulk decoder switches between an unchecked loop and the careful per-sample reader depending on how
close a sample starts to the end of the stream and on the room in the outputs, so the chunks here cover
every delta-of-delta bucket, every leading/trailing-zero shape of the value XOR, lengths from 1 to a few
thousand samples, cuts at every byte, flipped bytes and outputs of every size.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

import xor_reference as reference
from mimird._fast import xorchunk
from test_xorchunk import SPECIAL_VALUE_BITS, assert_decoders_agree

MASK64 = (1 << 64) - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Inclusive delta-of-delta ranges of the 14-, 17- and 20-bit buckets; anything else takes 64 bits.
DOD_BUCKETS = [(-(2**13 - 1), 2**13), (-(2**16 - 1), 2**16), (-(2**19 - 1), 2**19)]


def random_dod(rng: random.Random) -> int:
    kind = rng.randrange(7)
    if kind == 0:
        return 0
    if kind <= 3:
        lo, hi = DOD_BUCKETS[kind - 1]
        # The edges of each bucket, where the sign handling of the n-bit field matters, half the time.
        return rng.choice([lo, hi, lo - 1, hi + 1]) if rng.random() < 0.5 else rng.randint(lo, hi)
    if kind == 4:
        return rng.choice([INT64_MIN, INT64_MAX, -(2**19), 2**19 + 1, 2**40])
    if kind == 5:
        return rng.randint(INT64_MIN, INT64_MAX)
    return rng.randint(-8, 8)


def random_xor(rng: random.Random) -> int:
    """A non-zero XOR delta with a random number of leading and trailing zero bits."""
    leading = rng.randrange(64)
    trailing = rng.randrange(64 - leading)
    width = 64 - leading - trailing
    middle = rng.getrandbits(width) | 1 | (1 << (width - 1))
    return middle << trailing


def random_value_bits(rng: random.Random, previous: int) -> int:
    kind = rng.randrange(6)
    if kind == 0:
        return previous
    if kind == 1:
        return rng.choice(SPECIAL_VALUE_BITS)
    if kind == 2:
        return rng.getrandbits(64)
    if kind == 3:
        return reference.float_to_bits(float(rng.randrange(10**6)))
    return previous ^ random_xor(rng)


def random_samples(rng: random.Random, n: int, style: str) -> list[tuple[int, int]]:
    """n samples (t, value_bits). `style` leans the draws toward real shapes or toward the edge cases."""
    t = rng.choice([1_700_000_000_000, rng.randint(INT64_MIN, INT64_MAX), INT64_MAX - 10**6, INT64_MIN])
    t_delta = rng.choice([15_000, rng.randint(0, 2**40)])
    value_bits = reference.float_to_bits(rng.uniform(-1e6, 1e6))
    samples = []
    for i in range(n):
        if i >= 2:
            if style == "scrape":
                dod = 0 if rng.random() < 0.3 else rng.randint(-20, 20)
            else:
                dod = random_dod(rng)
            t_delta = (t_delta + dod) & MASK64
        elif i == 1:
            t_delta = rng.choice([15_000, rng.getrandbits(64)])
        if i:
            t = reference.to_signed(t + t_delta)
        if style == "scrape":
            value_bits = reference.float_to_bits(reference.bits_to_float(value_bits) + rng.choice([0, 1, 40, 0.5]))
        else:
            value_bits = random_value_bits(rng, value_bits)
        samples.append((t, value_bits))
    return samples


def encode(samples: list[tuple[int, int]]) -> bytes:
    timestamps = np.array([t for t, _ in samples], dtype=np.int64)
    values = np.array([b for _, b in samples], dtype=np.uint64).view(np.float64)
    return xorchunk.encode(timestamps, values)


def pairs(timestamps: np.ndarray, values: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(timestamps.tolist(), values.view(np.uint64).tolist(), strict=True))


def iterator_pairs(chunk: bytes) -> list[tuple[int, int]]:
    return [(t, reference.float_to_bits(v)) for t, v in xorchunk.XORIterator(chunk)]


def sample_end_bits(chunk: bytes) -> list[int]:
    """The reference decoder's bit position (in the stream after the header) after each sample."""
    decoder = reference.XORDecoder(chunk)
    ends = []
    for _ in decoder:
        ends.append(decoder.reader.pos)
    return ends


def chunk_cases(seed: int, count: int, sizes: list[int]) -> list[tuple[list[tuple[int, int]], bytes]]:
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        samples = random_samples(rng, rng.choice(sizes), "scrape" if i % 3 == 0 else "edges")
        cases.append((samples, encode(samples)))
    return cases


SMALL_CASES = chunk_cases(1, 150, list(range(1, 121)))
LONG_CASES = chunk_cases(2, 8, [500, 2000, 5000])


@pytest.mark.parametrize("case", range(len(SMALL_CASES) + len(LONG_CASES)))
def test_decode_equals_reference_and_iterator(case):
    samples, chunk = (SMALL_CASES + LONG_CASES)[case]
    assert reference.decode(chunk) == samples
    assert pairs(*xorchunk.decode(chunk)) == samples
    assert iterator_pairs(chunk) == samples
    timestamps, values = xorchunk.decode_chunks([chunk, chunk])
    assert pairs(timestamps, values) == samples + samples


@pytest.mark.parametrize("case", range(0, len(SMALL_CASES), 3))
def test_time_range_and_output_room(case):
    samples, chunk = SMALL_CASES[case]
    rng = random.Random(case)
    times = [t for t, _ in samples]
    for _ in range(12):
        bound = lambda: rng.choice(times + [INT64_MIN, INT64_MAX, rng.randint(INT64_MIN, INT64_MAX)])  # noqa: E731
        mint, maxt = bound(), bound()
        expected = [(t, v) for t, v in samples if mint <= t <= maxt]
        assert pairs(*xorchunk.decode(chunk, mint, maxt)) == expected
        # Room for exactly the kept samples (the careful path when that is less than the chunk holds),
        # for every sample, and for one too few.
        for room in {len(expected), len(samples), len(samples) + 3}:
            out_t, out_v = np.full(room, -1, dtype=np.int64), np.zeros(room)
            assert xorchunk.decode_into(chunk, out_t, out_v, mint=mint, maxt=maxt) == len(expected)
            assert pairs(out_t[: len(expected)], out_v[: len(expected)]) == expected
        if expected:
            room = len(expected) - 1
            with pytest.raises(ValueError, match="too short"):
                xorchunk.decode_into(chunk, np.empty(room, dtype=np.int64), np.empty(room), mint=mint, maxt=maxt)


@pytest.mark.parametrize("case", range(0, len(SMALL_CASES), 2))
def test_reloaded_appender_resumes_from_bulk_decoder_state(case):
    samples, chunk = SMALL_CASES[case]
    rng = random.Random(case)
    more = random_samples(rng, 20, "edges")
    cython_chunk = xorchunk.XORChunk.from_bytes(chunk)
    reference_chunk = reference.XORAppender.from_bytes(chunk)
    assert cython_chunk.bytes() == chunk
    assert cython_chunk.last_timestamp == samples[-1][0]
    for t, value_bits in more:
        cython_chunk.append(t, reference.bits_to_float(value_bits))
        reference_chunk.append(t, reference.bits_to_float(value_bits))
    assert cython_chunk.bytes() == reference_chunk.bytes()


def assert_truncation_outcome(chunk: bytes, samples: list[tuple[int, int]], ends: list[int], cut: int) -> None:
    """Decoding chunk[:cut] keeps the samples that end within the cut bytes, then reports corruption."""
    blob = chunk[:cut]
    num_total = len(ends)
    if cut < 2:
        with pytest.raises(ValueError):
            xorchunk.decode(blob)
        return
    readable = [end for end in ends if end <= 8 * (cut - 2)]
    expected = samples[: len(readable)]
    if len(readable) == num_total:
        assert pairs(*xorchunk.decode(blob)) == expected
        assert iterator_pairs(blob) == expected
        return
    with pytest.raises(ValueError, match="corrupt"):
        xorchunk.decode(blob)
    with pytest.raises(ValueError, match="corrupt"):
        xorchunk.decode_into(blob, np.empty(num_total, dtype=np.int64), np.empty(num_total))
    with pytest.raises(ValueError, match="chunk 1"):
        xorchunk.decode_chunks([chunk, blob])
    with pytest.raises(ValueError):
        xorchunk.XORChunk.from_bytes(blob)
    got = []
    with pytest.raises(ValueError, match=f"at sample {len(readable)}$"):
        for t, v in xorchunk.XORIterator(blob):
            got.append((t, reference.float_to_bits(v)))
    assert got == expected


@pytest.mark.parametrize("case", range(0, len(SMALL_CASES), 10))
def test_cut_at_every_byte(case):
    samples, chunk = SMALL_CASES[case]
    ends = sample_end_bits(chunk)
    for cut in range(len(chunk)):
        assert_truncation_outcome(chunk, samples, ends, cut)


@pytest.mark.parametrize("case", range(len(LONG_CASES)))
def test_long_chunk_cuts(case):
    samples, chunk = LONG_CASES[case]
    ends = sample_end_bits(chunk)
    rng = random.Random(case)
    # Every byte near the end (where the bulk decoder hands over to the careful reader), some elsewhere.
    cuts = set(range(max(0, len(chunk) - 64), len(chunk))) | {rng.randrange(len(chunk)) for _ in range(20)}
    for cut in sorted(cuts):
        assert_truncation_outcome(chunk, samples, ends, cut)


@pytest.mark.parametrize("case", range(0, len(SMALL_CASES), 5))
def test_flipped_bytes(case):
    _, chunk = SMALL_CASES[case]
    rng = random.Random(case)
    for _ in range(15):
        blob = bytearray(chunk)
        for _ in range(rng.randint(1, 3)):
            blob[rng.randrange(len(blob))] ^= rng.randint(1, 255)
        assert_decoders_agree(bytes(blob))


def test_corrupt_value_header_in_the_middle_of_a_long_chunk():
    # A '11' value header whose leading zeros plus significant bits exceed 64, far from the stream's end:
    # found by the unchecked loop, with the samples before it still yielded by the iterator.
    samples = [(1_000 + 15_000 * i, reference.float_to_bits(float(i * i))) for i in range(300)]
    chunk = bytearray(encode(samples))
    ends = sample_end_bits(bytes(chunk))
    # Sample 100's dod is '0' (one bit), then its value control starts: force '11', leading 31, size 63.
    position = ends[99] + 1
    header_bits = (0b11 << 11) | (31 << 6) | 63
    for i in range(13):
        bit = (header_bits >> (12 - i)) & 1
        index, shift = 2 + (position + i) // 8, 7 - (position + i) % 8
        chunk[index] = (chunk[index] & ~(1 << shift)) | (bit << shift)
    blob = bytes(chunk)
    got = []
    with pytest.raises(ValueError, match="at sample 100$"):
        for t, v in xorchunk.XORIterator(blob):
            got.append((t, reference.float_to_bits(v)))
    assert got == samples[:100]
    with pytest.raises(ValueError, match="corrupt"):
        xorchunk.decode(blob)
    with pytest.raises(ValueError):
        xorchunk.XORChunk.from_bytes(blob)
    assert_decoders_agree(blob)
