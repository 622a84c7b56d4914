"""Go-compatible string quoting and unquoting for PromQL.

PromQL strings follow Go's rules: ``"..."`` and ``'...'`` with backslash escapes, and raw
`` `...` `` strings. Escapes ``\\xNN`` and octal ``\\NNN`` produce single *bytes*, so a string
can hold bytes that are not valid UTF-8. Such bytes are kept in Python strings with the
``surrogateescape`` convention (byte 0xNN becomes U+DCNN), which round-trips through
``str.encode("utf-8", "surrogateescape")``.
"""

from __future__ import annotations

_SIMPLE_ESCAPES = {"a": 0x07, "b": 0x08, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B, "\\": 0x5C}
_ESCAPE_OF_CHAR = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_HEX = "0123456789abcdefABCDEF"


class UnquoteError(ValueError):
    """The string literal is not well formed (Go's ``invalid syntax``)."""


def _is_escaped_byte(ch: str) -> bool:
    return 0xDC80 <= ord(ch) <= 0xDCFF


def is_valid_utf8(text: str) -> bool:
    """Whether the string holds only valid UTF-8 (no surrogate-escaped raw bytes)."""
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _escape_char(ch: str, quote: str) -> str:
    if _is_escaped_byte(ch):
        return f"\\x{ord(ch) - 0xDC00:02x}"
    if ch == quote or ch == "\\":
        return "\\" + ch
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return "\\ufffd"
    if ch.isprintable():
        return ch
    if ch in _ESCAPE_OF_CHAR:
        return _ESCAPE_OF_CHAR[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(text: str) -> str:
    """Quote like Go's ``strconv.Quote`` (``%q``): double quotes, non-printables escaped."""
    return '"' + "".join(_escape_char(ch, '"') for ch in text) + '"'


def go_quote_rune(ch: str) -> str:
    """Quote one character like Go's ``strconv.QuoteRune`` (``%q`` of a rune)."""
    if ch == "":
        return "'\\x00'"
    return "'" + _escape_char(ch, "'") + "'"


def go_unicode_format(ch: str) -> str:
    """Format a character like Go's ``%#U``: ``U+0063 'c'``."""
    code = ord(ch)
    text = f"U+{code:04X}"
    if ch.isprintable() and not 0xD800 <= code <= 0xDFFF:
        text += f" '{ch}'"
    return text


def unquote(literal: str) -> str:
    """Unquote a PromQL string literal including its quotes, as Prometheus's ``strutil.Unquote``.

    Raises UnquoteError on malformed input.
    """
    if len(literal) < 2 or literal[0] != literal[-1]:
        raise UnquoteError("invalid syntax")
    quote = literal[0]
    body = literal[1:-1]
    if quote == "`":
        if "`" in body:
            raise UnquoteError("invalid syntax")
        return body
    if quote not in "\"'":
        raise UnquoteError("invalid syntax")
    if "\n" in body:
        raise UnquoteError("invalid syntax")
    if "\\" not in body and quote not in body:
        return body
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == quote:
            raise UnquoteError("invalid syntax")
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= n:
            raise UnquoteError("invalid syntax")
        esc = body[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i : i + width]
            if len(digits) < width or any(d not in _HEX for d in digits):
                raise UnquoteError("invalid syntax")
            value = int(digits, 16)
            i += width
            if esc == "x":
                out.append(value)
                continue
            if value > 0x10FFFF:
                raise UnquoteError("invalid syntax")
            if 0xD800 <= value <= 0xDFFF:
                value = 0xFFFD  # Go encodes an invalid rune as the replacement character.
            out += chr(value).encode("utf-8")
        elif esc in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) < 3 or any(d not in "01234567" for d in digits):
                raise UnquoteError("invalid syntax")
            value = int(digits, 8)
            if value > 255:
                raise UnquoteError("invalid syntax")
            out.append(value)
            i += 2
        elif esc in "'\"":
            if esc != quote:
                raise UnquoteError("invalid syntax")
            out.append(ord(esc))
        else:
            raise UnquoteError("invalid syntax")
    return out.decode("utf-8", "surrogateescape")
