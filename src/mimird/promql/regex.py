"""Translate Go RE2 regular expressions (as PromQL label matchers use them) to Python's ``re``.

The two dialects agree on almost everything queries use. The differences handled here:

* an inline flag group ``(?i)`` in the middle of a pattern applies, in RE2, up to the end of the
  enclosing group; Python only accepts global flags at the very start, so it becomes a scoped
  ``(?i:...)`` closed where the enclosing group closes;
* POSIX classes inside brackets (``[[:alpha:]]``) become explicit ranges;
* ``\\z`` (end of text) becomes Python's ``\\Z``; ``\\Q...\\E`` literal text is escaped.

Prometheus anchors every matcher regex and lets ``.`` match newlines: ``^(?s:<pattern>)$``.
"""

from __future__ import annotations

import functools
import re

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

_FLAG_GROUP = re.compile(r"\(\?([a-zA-Z-]+)\)")


def _copy_class(pattern: str, i: int, out: list[str]) -> int:
    """Copy a bracketed character class starting at ``pattern[i] == '['``; return the index after it."""
    out.append("[")
    i += 1
    if i < len(pattern) and pattern[i] == "^":
        out.append("^")
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        out.append("\\]")
        i += 1
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if ch == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2 : end] if end != -1 else ""
            if name in _POSIX_CLASSES:
                out.append(_POSIX_CLASSES[name])
                i = end + 2
                continue
        if ch == "[":
            out.append("\\[")  # RE2 treats a nested '[' literally; Python warns about set syntax.
            i += 1
            continue
        out.append(ch)
        i += 1
        if ch == "]":
            return i
    return i


def translate(pattern: str) -> str:
    """Rewrite an RE2 pattern into an equivalent Python ``re`` pattern."""
    out: list[str] = []
    # For each open group, the inline flag sets opened inside it; each becomes a scoped group that
    # closes before the next top-level '|' of that group (and reopens after it) and where it closes.
    scoped: list[list[str]] = [[]]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            following = pattern[i + 1]
            if following == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end == -1 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end == -1 else end + 2
                continue
            out.append("\\Z" if following == "z" else pattern[i : i + 2])
            i += 2
            continue
        if ch == "[":
            i = _copy_class(pattern, i, out)
            continue
        if ch == "(":
            flags = _FLAG_GROUP.match(pattern, i)
            if flags:
                out.append(f"(?{flags.group(1)}:")
                scoped[-1].append(flags.group(1))
                i = flags.end()
                continue
            scoped.append([])
            out.append("(")
            i += 1
            continue
        if ch == "|":
            open_flags = scoped[-1]
            out.append(")" * len(open_flags) + "|" + "".join(f"(?{f}:" for f in open_flags))
            i += 1
            continue
        if ch == ")":
            if len(scoped) > 1:
                out.append(")" * len(scoped.pop()))
            out.append(")")
            i += 1
            continue
        out.append(ch)
        i += 1
    out.append(")" * len(scoped[0]))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def compile_anchored(pattern: str) -> re.Pattern[str]:
    """Compile a label-matcher regex the way Prometheus 3 does: fully anchored, ``.`` matching newlines.

    Use ``fullmatch`` on the result. Raises ``re.error`` for invalid patterns.
    """
    return re.compile(f"(?s:{translate(pattern)})")


def describe_error(pattern: str, error: re.error) -> str:
    """Word a compile error like Go's regexp package does where the two clearly correspond
    (``error parsing regexp: missing closing ): `^(?s:()$```), else fall back to Python's text."""
    anchored = f"^(?s:{pattern})$"
    message = error.msg
    if message.startswith("missing ), unterminated subpattern"):
        return f"error parsing regexp: missing closing ): `{anchored}`"
    if message.startswith("unbalanced parenthesis"):
        return f"error parsing regexp: unexpected ): `{anchored}`"
    if message.startswith("unterminated character set"):
        return f"error parsing regexp: missing closing ]: `{anchored[anchored.find('['):]}`"
    if message.startswith("nothing to repeat") and error.pos is not None:
        return f"error parsing regexp: missing argument to repetition operator: `{error.pattern[error.pos]}`"
    if message.startswith("multiple repeat") and error.pos:
        return f"error parsing regexp: invalid nested repetition operator: `{error.pattern[error.pos - 1:error.pos + 1]}`"
    return f"error parsing regexp: {message}"
