"""Remote write request bodies (`POST /api/v1/push`): content negotiation, snappy, size limit, decoding.

This module owns turning a push body into a `WriteBatch` and the errors Mimir 2.17 answers with when
that fails (pkg/distributor/push.go, pkg/util/http.go `ParseProtoReader`):

* The body is always a snappy *block* (not framed) whatever `Content-Encoding` says, and
  `X-Prometheus-Remote-Write-Version` is not looked at.
* Only `Content-Type` picks the protocol: remote write 1.0 unless it is `application/x-protobuf` with
  `proto=io.prometheus.write.v2.Request`, which is decoded as remote write 2.0 (symbol table, label
  references, per-series metadata) into the same `WriteBatch` layout.
* Both the compressed size and the size announced in the snappy header are checked against the
  limit before anything is decompressed, so a small body cannot make us allocate a huge buffer.
* Everything else that fails (bad content-type parameters, corrupt snappy, malformed protobuf) is a
  400 carrying the decoder's message.
"""

from __future__ import annotations

import snappy

from mimird._fast.remotewrite import WriteBatch, decode_write_request, decode_write_request_v2

DEFAULT_MAX_MESSAGE_SIZE = 100 << 20
"""`-distributor.max-recv-msg-size`: 100 MiB."""

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
WRITE_V1_MESSAGE = "prometheus.WriteRequest"
WRITE_V2_MESSAGE = "io.prometheus.write.v2.Request"

# The largest length golang/snappy's DecodedLen accepts; a bigger header is "corrupt input".
_SNAPPY_MAX_DECODED_LENGTH = 0xFFFFFFFF


class PushDecodeError(Exception):
    """A push body that cannot be turned into samples; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_remote_write_v2(content_type: str | None) -> bool:
    """Whether `content_type` asks for remote write 2.0, by Mimir's rules (isRemoteWrite2).

    Raises PushDecodeError(400) for a `proto=` naming another message or a parameter without `=`.
    Matching is exact, as in Mimir: no case folding and no whitespace trimming, so `; proto=...`
    (with a space) is not read as the proto parameter.
    """
    if not content_type:
        return False
    parts = content_type.split(";")
    if parts[0] != PROTOBUF_CONTENT_TYPE:
        # Mimir did not always check the content type, so anything else is taken as 1.0.
        return False
    for parameter in parts[1:]:
        pair = parameter.split("=")
        if len(pair) != 2:
            raise PushDecodeError(
                400,
                "as per https://www.rfc-editor.org/rfc/rfc9110#parameter expected parameters to be "
                f"key-values, got {parameter} in {content_type} content-type",
            )
        if pair[0] == "proto":
            if pair[1] == WRITE_V1_MESSAGE:
                return False
            if pair[1] == WRITE_V2_MESSAGE:
                return True
            raise PushDecodeError(
                400, f"got {content_type} content type; expected {WRITE_V1_MESSAGE} or {WRITE_V2_MESSAGE}"
            )
    return False


def message_size_error(size: int | None, limit: int) -> PushDecodeError:
    """Mimir's 400 for a push over `-distributor.max-recv-msg-size` (size None: not known)."""
    size_text = f" of {size} bytes" if size is not None and size >= 0 else ""
    return PushDecodeError(
        400,
        f"the incoming push request has been rejected because its message size{size_text} is larger than "
        f"the allowed limit of {limit} bytes (err-mimir-distributor-max-write-message-size). To adjust the "
        "related limit, configure -distributor.max-recv-msg-size, or contact your service administrator.",
    )


def snappy_decoded_length(body: bytes) -> int | None:
    """The uncompressed length a snappy block announces in its uvarint header, or None if unreadable.

    Follows golang/snappy's DecodedLen: the header must be a complete varint of at most 10 bytes
    (Go's binary.Uvarint) and the length must fit in 32 bits.
    """
    length = 0
    for index in range(min(len(body), 10)):
        byte = body[index]
        if index == 9 and byte > 1:
            return None
        length |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return length if length <= _SNAPPY_MAX_DECODED_LENGTH else None
    return None


def decompress_body(body: bytes, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Uncompress a snappy block push body, refusing (400) anything over `max_message_size` bytes."""
    if len(body) > max_message_size:
        raise message_size_error(len(body), max_message_size)
    decoded_length = snappy_decoded_length(body)
    if decoded_length is None:
        raise PushDecodeError(400, "getting snappy decoded length: snappy: corrupt input")
    if decoded_length > max_message_size:
        # Mimir 2.17 reports the request's Content-Length here, not the decoded size.
        raise message_size_error(len(body), max_message_size)
    try:
        raw = snappy.uncompress(body)
    except snappy.UncompressError:
        raise PushDecodeError(400, "decompress snappy: snappy: corrupt input") from None
    if len(raw) != decoded_length:
        raise PushDecodeError(400, "decompress snappy: snappy: corrupt input")
    return raw


def decode_push_body(
    body: bytes,
    content_encoding: str | None,
    content_type: str | None,
    version_header: str | None,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    decode_exemplars: bool = True,
) -> WriteBatch:
    """Decode a `POST /api/v1/push` body into a WriteBatch, or raise PushDecodeError(status, message).

    `content_encoding` and `version_header` are accepted for the handler's convenience and ignored, as
    Mimir ignores them. `decode_exemplars=False` skips exemplars unread (Mimir does so for tenants
    whose `max_global_exemplars_per_user` is 0).
    """
    del content_encoding, version_header
    decode = decode_write_request_v2 if is_remote_write_v2(content_type) else decode_write_request
    raw = decompress_body(body, max_message_size)
    try:
        return decode(raw, decode_exemplars=decode_exemplars)
    except ValueError as error:
        raise PushDecodeError(400, str(error)) from None
