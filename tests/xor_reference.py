"""A short, slow, pure-Python XOR chunk codec (chunk encoding 1) to check the Cython one against.

It follows Prometheus's tsdb/chunkenc/bstream.go and xor.go step by step, including the bit stream's
byte-at-a-time growth (a whole byte written on a byte boundary leaves an empty byte at the end), so
that its bytes can be compared with the Cython codec's, which computes the same length differently.
Values travel as 64-bit patterns so that NaN payloads survive comparison.
"""

import struct

MASK64 = (1 << 64) - 1


def float_to_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def bits_to_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def to_signed(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class BitWriter:
    """Go's bstream: `free_bits` is how many low bits of the last byte are still unwritten."""

    def __init__(self, stream: bytes = b"\x00\x00", free_bits: int = 0):
        self.stream = bytearray(stream)
        self.free_bits = free_bits

    def write_bit(self, bit: int) -> None:
        if self.free_bits == 0:
            self.stream.append(0)
            self.free_bits = 8
        if bit:
            self.stream[-1] |= 1 << (self.free_bits - 1)
        self.free_bits -= 1

    def write_byte(self, byte: int) -> None:
        if self.free_bits == 0:
            self.stream.append(0)
            self.free_bits = 8
        self.stream[-1] |= byte >> (8 - self.free_bits)
        self.stream.append((byte << self.free_bits) & 0xFF)

    def write_bits(self, value: int, nbits: int) -> None:
        value = (value << (64 - nbits)) & MASK64
        while nbits >= 8:
            self.write_byte(value >> 56)
            value = (value << 8) & MASK64
            nbits -= 8
        while nbits > 0:
            self.write_bit(value >> 63)
            value = (value << 1) & MASK64
            nbits -= 1


class BitReader:
    def __init__(self, stream: bytes):
        self.stream = stream
        self.pos = 0

    def read_bits(self, nbits: int) -> int:
        if self.pos + nbits > 8 * len(self.stream):
            raise ValueError("chunk ends inside a sample")
        value = 0
        for _ in range(nbits):
            byte = self.stream[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def read_uvarint(self) -> int:
        value = 0
        for i in range(10):
            byte = self.read_bits(8)
            if byte < 0x80:
                if i == 9 and byte > 1:
                    break
                return value | (byte << (7 * i))
            value |= (byte & 0x7F) << (7 * i)
        raise ValueError("varint overflows 64 bits")


class XORDecoder:
    """Prometheus's xorIterator: yields (t, value_bits); its state is what an appender resumes from."""

    def __init__(self, chunk: bytes):
        if len(chunk) < 2:
            raise ValueError("chunk shorter than its header")
        self.num_total = int.from_bytes(chunk[:2], "big")
        self.reader = BitReader(chunk[2:])
        self.t = 0
        self.value_bits = 0
        self.t_delta = 0
        self.leading = 0
        self.trailing = 0

    def __iter__(self):
        for index in range(self.num_total):
            if index == 0:
                zigzag = self.reader.read_uvarint()
                self.t = (zigzag >> 1) ^ -(zigzag & 1)
                self.value_bits = self.reader.read_bits(64)
                yield self.t, self.value_bits
                continue
            if index == 1:
                self.t_delta = self.reader.read_uvarint()
            else:
                self.t_delta = (self.t_delta + self.read_dod()) & MASK64
            self.t = to_signed(self.t + self.t_delta)
            self.read_value()
            yield self.t, self.value_bits

    def read_dod(self) -> int:
        prefix = 0
        for _ in range(4):
            bit = self.reader.read_bits(1)
            prefix = (prefix << 1) | bit
            if not bit:
                break
        if prefix == 0b0:
            return 0
        if prefix == 0b1111:
            return to_signed(self.reader.read_bits(64))
        size = {0b10: 14, 0b110: 17, 0b1110: 20}[prefix]
        raw = self.reader.read_bits(size)
        return raw - (1 << size) if raw > 1 << (size - 1) else raw

    def read_value(self) -> None:
        if not self.reader.read_bits(1):
            return
        if self.reader.read_bits(1):
            self.leading = self.reader.read_bits(5)
            significant = self.reader.read_bits(6) or 64
            if self.leading + significant > 64:
                raise ValueError("corrupt value: leading zeros plus significant bits exceed 64")
            self.trailing = 64 - self.leading - significant
        significant = 64 - self.leading - self.trailing
        self.value_bits ^= self.reader.read_bits(significant) << self.trailing


def bit_range(value: int, nbits: int) -> bool:
    return -((1 << (nbits - 1)) - 1) <= value <= 1 << (nbits - 1)


class XORAppender:
    """Prometheus's xorAppender over a BitWriter."""

    def __init__(self):
        self.writer = BitWriter()
        self.num = 0
        self.t = 0
        self.value_bits = 0
        self.t_delta = 0
        self.leading = 0xFF
        self.trailing = 0

    @classmethod
    def from_bytes(cls, chunk: bytes) -> "XORAppender":
        """Resume appending as Prometheus's XORChunk.Appender() does: replay the samples for the state.

        The bit position continues right after the last sample, as with Prometheus's in-memory chunk.
        """
        appender = cls()
        decoder = XORDecoder(chunk)
        for _ in decoder:
            pass
        appender.num = decoder.num_total
        if appender.num == 0:
            return appender
        used_bits = decoder.reader.pos
        appender.writer = BitWriter(chunk, 8 * (len(chunk) - 2) - used_bits)
        appender.t = decoder.t
        appender.value_bits = decoder.value_bits
        appender.t_delta = decoder.t_delta
        appender.leading = decoder.leading
        appender.trailing = decoder.trailing
        return appender

    def bytes(self) -> bytes:
        return bytes(self.writer.stream)

    def append(self, t: int, value: float) -> None:
        value_bits = float_to_bits(value)
        write = self.writer
        t_delta = 0
        if self.num == 0:
            for byte in uvarint(((t << 1) ^ (t >> 63)) & MASK64):
                write.write_byte(byte)
            write.write_bits(value_bits, 64)
        elif self.num == 1:
            t_delta = (t - self.t) & MASK64
            for byte in uvarint(t_delta):
                write.write_byte(byte)
            self.write_value(value_bits)
        else:
            t_delta = (t - self.t) & MASK64
            dod = to_signed(t_delta - self.t_delta)
            if dod == 0:
                write.write_bit(0)
            elif bit_range(dod, 14):
                write.write_bits(0b10, 2)
                write.write_bits(dod & MASK64, 14)
            elif bit_range(dod, 17):
                write.write_bits(0b110, 3)
                write.write_bits(dod & MASK64, 17)
            elif bit_range(dod, 20):
                write.write_bits(0b1110, 4)
                write.write_bits(dod & MASK64, 20)
            else:
                write.write_bits(0b1111, 4)
                write.write_bits(dod & MASK64, 64)
            self.write_value(value_bits)
        self.t = t
        self.value_bits = value_bits
        self.t_delta = t_delta
        self.num += 1
        write.stream[0:2] = self.num.to_bytes(2, "big")

    def write_value(self, value_bits: int) -> None:
        delta = value_bits ^ self.value_bits
        if delta == 0:
            self.writer.write_bit(0)
            return
        self.writer.write_bit(1)
        leading = min(64 - delta.bit_length(), 31)
        trailing = (delta & -delta).bit_length() - 1
        if self.leading != 0xFF and leading >= self.leading and trailing >= self.trailing:
            self.writer.write_bit(0)
            self.writer.write_bits(delta >> self.trailing, 64 - self.leading - self.trailing)
            return
        self.leading, self.trailing = leading, trailing
        significant = 64 - leading - trailing
        self.writer.write_bit(1)
        self.writer.write_bits(leading, 5)
        self.writer.write_bits(significant, 6)
        self.writer.write_bits(delta >> trailing, significant)


def encode(samples) -> bytes:
    """Chunk bytes for an iterable of (t, value) pairs."""
    appender = XORAppender()
    for t, value in samples:
        appender.append(t, value)
    return appender.bytes()


def decode(chunk: bytes) -> list[tuple[int, int]]:
    """All samples of a chunk as (t, value_bits); raises ValueError on corrupt or truncated input."""
    return list(XORDecoder(chunk))
