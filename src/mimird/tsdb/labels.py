"""Label sets and label matchers, with Prometheus's semantics.

A label set is a tuple of (name, value) string pairs sorted by name, with interned strings; its 64-bit
hash is Prometheus's (XXH64 of `name 0xff value 0xff ...`). A matcher is `name op "value"` with the four
PromQL operators. Regex matchers follow Go's RE2 syntax: patterns are translated to Python's `re` (and RE2's
constructs that `re` lacks are rewritten, those RE2 rejects are rejected), matched fully anchored with `.`
matching newlines as in Prometheus 3, and compiled once per pattern. Plain alternations of literals and
`.*`-delimited literals skip the regex engine, as Prometheus's FastRegexMatcher does.
"""

from __future__ import annotations

import enum
import functools
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping

import re2
from re2 import _re2  # the binding's own RE2 class: see GoRegex.test

from mimird._fast.postings import labels_hash as _labels_hash

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"


def make_labels(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Build a label set from a mapping or (name, value) pairs: sorted by name, strings interned.

    Pairs with an empty value are dropped: Prometheus treats an empty value as an absent label.
    Raises ValueError on an empty or duplicate label name.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    result = sorted((sys.intern(name), sys.intern(value)) for name, value in items if value != "")
    for index, (name, _) in enumerate(result):
        if name == "":
            raise ValueError("label name must not be empty")
        if index and result[index - 1][0] == name:
            raise ValueError(f"duplicate label name {name!r}")
    return tuple(result)


def label_value(labels: Labels, name: str) -> str:
    """The value of label `name`, or "" when the set has no such label."""
    for label_name, value in labels:
        if label_name == name:
            return value
    return ""


def labels_hash(labels: Labels) -> int:
    """Prometheus's stable 64-bit hash of a label set (equal sets hash equally; collisions are possible)."""
    return _labels_hash(labels)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Quote `text` as Go's strconv.Quote does (which is how Prometheus prints label values)."""
    out = ['"']
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def format_labels(labels: Labels) -> str:
    """`{a="1", b="2"}`, as Prometheus's Labels.String prints a label set."""
    return "{" + ", ".join(f"{name}={go_quote(value)}" for name, value in labels) + "}"


class MatchType(enum.Enum):
    """The PromQL matcher operators."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"

    def __str__(self) -> str:
        return self.value


_INVERSE_TYPE = {
    MatchType.EQUAL: MatchType.NOT_EQUAL,
    MatchType.NOT_EQUAL: MatchType.EQUAL,
    MatchType.REGEX: MatchType.NOT_REGEX,
    MatchType.NOT_REGEX: MatchType.REGEX,
}


class InvalidRegexError(ValueError):
    """A matcher's regex is not valid RE2 syntax (or uses RE2 syntax we cannot translate).

    `reason` is Go's regexp error code with its context, e.g. "missing closing )".
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class Matcher:
    """One label matcher, `name op "value"`, as in a PromQL selector.

    `matches(value)` is Prometheus's Matcher.Matches; a label a series lacks has the value "".
    """

    __slots__ = ("type", "name", "value", "_regex", "key")

    def __init__(self, match_type: MatchType | str, name: str, value: str) -> None:
        self.type = MatchType(match_type)
        self.name = name
        self.value = value
        # what the matcher is, hashable without calling into Python (an Enum's __hash__ is Python code)
        self.key = (self.type.value, name, value)
        self._regex = compile_regex(value) if self.type in (MatchType.REGEX, MatchType.NOT_REGEX) else None

    def matches(self, value: str) -> bool:
        """Whether a label value ("" for an absent label) satisfies this matcher."""
        match_type = self.type
        if match_type is MatchType.EQUAL:
            return value == self.value
        if match_type is MatchType.NOT_EQUAL:
            return value != self.value
        if match_type is MatchType.REGEX:
            return self._regex.matches(value)
        return not self._regex.matches(value)

    def matches_each(self, values: Iterable[str]) -> list[bool]:
        """`matches` of every value (a label's values, as an index scans them), in one call."""
        # The regex's own test, mapped: calling `matches` per value would dispatch on the type each time.
        match_type = self.type
        if match_type is MatchType.REGEX:
            return list(map(self._regex.matches, values))
        if match_type is MatchType.NOT_REGEX:
            return [not hit for hit in map(self._regex.matches, values)]
        return list(map(self.matches, values))

    def inverse(self) -> Matcher:
        """The matcher that matches exactly the values this one does not."""
        return Matcher(_INVERSE_TYPE[self.type], self.name, self.value)

    @property
    def is_negative(self) -> bool:
        """True for `!=` and `!~`."""
        return self.type in (MatchType.NOT_EQUAL, MatchType.NOT_REGEX)

    def set_matches(self) -> tuple[str, ...] | None:
        """The exact values this matcher accepts when they are a known finite set (`=`, `=~"a|b"`), else None."""
        if self.type is MatchType.EQUAL:
            return (self.value,)
        if self.type is MatchType.REGEX:
            return self._regex.set_matches
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Matcher):
            return NotImplemented
        return (self.type, self.name, self.value) == (other.type, other.name, other.value)

    def __hash__(self) -> int:
        return hash((self.type, self.name, self.value))

    def __str__(self) -> str:
        return f"{self.name}{self.type.value}{go_quote(self.value)}"

    def __repr__(self) -> str:
        return f"Matcher({self.type.value!r}, {self.name!r}, {self.value!r})"


# --- Regex matching ---------------------------------------------------------------------------------------

# Characters with a meaning in RE2 outside a character class; everything else stands for itself.
_RE2_META = frozenset("\\.+*?()|[]{}^$")


def _re2_options(*, never_capture: bool = False) -> re2.Options:
    options = re2.Options()
    options.dot_nl = True  # Go's (?s:...)
    options.log_errors = False  # a pattern RE2 refuses falls back below; the library would log to stderr
    options.never_capture = never_capture
    return options


_RE2_OPTIONS = _re2_options()
_RE2_TEST_OPTIONS = _re2_options(never_capture=True)
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH


class GoRegex:
    """Go's `^(?s:pattern)$` with `fullmatch`, matched by RE2 itself, in time linear in the text.

    Python's `re` backtracks, and it holds the GIL while it does: a pattern such as `(a+)+b` over a label
    value of 30 characters would stall the whole daemon for minutes, where Prometheus answers at once.
    The `re` translation still checks the pattern (raising InvalidRegexError with Go's messages), and it
    matches what RE2 cannot take: text holding bytes that are not UTF-8 (surrogate-escaped) and any
    pattern RE2 refuses. Match objects offer `group`, `groups` and `re.groups`/`re.groupindex` either way.
    """

    __slots__ = ("translated", "linear", "_test")

    def __init__(self, pattern: str) -> None:
        self.translated = re.compile(translate_re2(pattern))
        try:
            self.linear = re2.compile(pattern, _RE2_OPTIONS)
            # Yes/no tests run a capture-free program through the binding itself: the wrapper builds a
            # match object per call, which costs twice as much, and an index tests every value of a label.
            self._test = _re2.RE2(pattern.encode(), _RE2_TEST_OPTIONS).Match
        except (re2.error, UnicodeEncodeError):
            self.linear = self._test = None

    def fullmatch(self, text: str):
        """The match of the whole of `text`, or None."""
        if self.linear is not None:
            try:
                return self.linear.fullmatch(text)
            except UnicodeEncodeError:
                pass
        return self.translated.fullmatch(text)

    def test(self, text: str) -> bool:
        """Whether the pattern matches the whole of `text` (`fullmatch` without building a match)."""
        if self._test is not None:
            try:
                encoded = text.encode()
            except UnicodeEncodeError:
                pass
            else:
                return self._test(_ANCHOR_BOTH, encoded, 0, len(encoded))[0][0] >= 0
        return self.translated.fullmatch(text) is not None


class RegexMatcher:
    """A compiled label-matcher regex: Go's `^(?s:pattern)$`, with Prometheus's shortcuts.

    `set_matches` holds the accepted values when the pattern is a case-sensitive alternation of literals
    (`a|b|c`), so the index can look their postings up instead of scanning every label value.
    """

    __slots__ = ("pattern", "compiled", "set_matches", "matches")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.compiled = GoRegex(pattern)
        self.set_matches: tuple[str, ...] | None = None
        self.matches: Callable[[str], bool] = self.compiled.test
        self._choose_fast_path()

    def _choose_fast_path(self) -> None:
        pattern = self.pattern
        case_insensitive = pattern.startswith("(?i)")
        body = pattern[4:] if case_insensitive else pattern
        if body in (".*", "(?:.*)", "(.*)"):
            self.matches = _match_anything
            return
        if body in (".+", "(?:.+)", "(.+)"):
            self.matches = _match_non_empty
            return
        alternatives = _literal_alternatives(body)
        if alternatives is not None:
            if not case_insensitive:
                self.set_matches = tuple(dict.fromkeys(alternatives))
                self.matches = frozenset(alternatives).__contains__
            elif all(a.isascii() for a in alternatives):
                # Non-ASCII values can fold onto ASCII letters (U+212A KELVIN SIGN onto k), so they take the
                # regex; for ASCII values, lower-casing is exactly RE2's case folding.
                lowered = frozenset(a.lower() for a in alternatives)
                compiled = self.compiled

                def match_folded(value: str) -> bool:
                    if value.isascii():
                        return value.lower() in lowered
                    return compiled.test(value)

                self.matches = match_folded
            return
        if not case_insensitive:
            self._choose_wildcard_path(body)

    def _choose_wildcard_path(self, body: str) -> None:
        """`.*foo`, `foo.+`, `.*foo.*`... (a literal between `.*` or `.+`): string tests, not the regex."""
        leading = body[:2] if body.startswith((".*", ".+")) else ""
        rest = body[len(leading):]
        trailing = rest[-2:] if len(rest) >= 2 and rest.endswith((".*", ".+")) else ""
        literal = _parse_literal(rest[: len(rest) - len(trailing)])
        if literal is None or not (leading or trailing):
            return
        # `.+` needs at least one character where `.*` takes none; `.` matches newlines here too.
        skip_start = int(leading == ".+")
        skip_end = int(trailing == ".+")
        min_length = len(literal) + skip_start + skip_end
        if leading and trailing:
            self.matches = lambda value: (
                len(value) >= min_length and literal in value[skip_start : len(value) - skip_end])
        elif leading:
            self.matches = lambda value: len(value) >= min_length and value.endswith(literal)
        else:
            self.matches = lambda value: len(value) >= min_length and value.startswith(literal)


def _match_anything(value: str) -> bool:
    return True


def _match_non_empty(value: str) -> bool:
    return value != ""


def _parse_literal(text: str) -> str | None:
    """The string an RE2 pattern without any operator matches (escaped punctuation allowed), else None."""
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 < len(text) and text[index + 1].isascii() and not text[index + 1].isalnum():
                out.append(text[index + 1])
                index += 2
                continue
            return None
        if char in _RE2_META:
            return None
        out.append(char)
        index += 1
    return "".join(out)


def _literal_alternatives(body: str) -> list[str] | None:
    """The literals of `a|b|c` (optionally in one group), or None when the pattern is anything else."""
    if body.startswith("(?:") and body.endswith(")"):
        body = body[3:-1]
    elif body.startswith("(") and not body.startswith("(?") and body.endswith(")"):
        body = body[1:-1]
    parts: list[str] = []
    start = 0
    index = 0
    while index < len(body):
        if body[index] == "\\":
            index += 2
            continue
        if body[index] == "|":
            parts.append(body[start:index])
            start = index + 1
        index += 1
    parts.append(body[start:])
    literals = [_parse_literal(part) for part in parts]
    if any(literal is None for literal in literals):
        return None
    return literals  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> RegexMatcher:
    """The matcher for an RE2 `pattern`, compiled once and cached.

    Raises InvalidRegexError when RE2 would reject the pattern.
    """
    return RegexMatcher(pattern)


# --- RE2 to Python `re` translation ---------------------------------------------------------------------

_MAX_CODE_POINT = 0x10FFFF
_MAX_REPEAT = 1000  # RE2's limit on {n,m} counts

# Ranges are inclusive (lo, hi) code point pairs; RE2's Perl and POSIX classes are ASCII-only.
_PERL_CLASSES = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX_CLASSES = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_WORD_CLASS = "[0-9A-Za-z_]"
# RE2's \b and \B look at ASCII word characters only; Python's look at Unicode ones.
_WORD_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?!{_WORD_CLASS})|(?<!{_WORD_CLASS})(?={_WORD_CLASS}))"
_NOT_WORD_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?={_WORD_CLASS})|(?<!{_WORD_CLASS})(?!{_WORD_CLASS}))"
_CONTROL_ESCAPES = {"a": 0x07, "f": 0x0C, "t": 0x09, "n": 0x0A, "r": 0x0D, "v": 0x0B}
_UNICODE_CATEGORIES = frozenset(
    "C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs".split()
)


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    next_low = 0
    for low, high in sorted(ranges):
        if low > next_low:
            out.append((next_low, low - 1))
        next_low = max(next_low, high + 1)
    if next_low <= _MAX_CODE_POINT:
        out.append((next_low, _MAX_CODE_POINT))
    return out


@functools.lru_cache(maxsize=64)
def _unicode_category_ranges(category: str) -> tuple[tuple[int, int], ...]:
    # Python's unicodedata stands in for Go's unicode tables; versions may differ by a few code points.
    if category == "Any":
        return ((0, _MAX_CODE_POINT),)
    ranges: list[tuple[int, int]] = []
    for code in range(_MAX_CODE_POINT + 1):
        if unicodedata.category(chr(code)).startswith(category):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return tuple(ranges)


def _class_char(code: int) -> str:
    """A code point written so that it stands for itself inside a Python character class."""
    char = chr(code)
    if char.isascii() and char.isalnum():
        return char
    return f"\\U{code:08x}" if code > 0xFFFF else f"\\u{code:04x}"


def _class_pattern(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    parts = [_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges]
    if not parts:
        # An empty class matches nothing (and its negation anything); Python cannot spell `[]`.
        return "(?s:.)" if negated else "(?!)"
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


class _Flags:
    __slots__ = ("case_insensitive", "multi_line", "dot_all", "ungreedy")

    def __init__(self, case_insensitive=False, multi_line=False, dot_all=True, ungreedy=False) -> None:
        self.case_insensitive = case_insensitive
        self.multi_line = multi_line
        self.dot_all = dot_all
        self.ungreedy = ungreedy

    def copy(self) -> _Flags:
        return _Flags(self.case_insensitive, self.multi_line, self.dot_all, self.ungreedy)

    def same_for_python(self, other: _Flags) -> bool:
        return (self.case_insensitive, self.multi_line, self.dot_all) == (
            other.case_insensitive, other.multi_line, other.dot_all)

    def python_group(self) -> str:
        """A Python group opener that sets exactly these flags, e.g. `(?is-m:`."""
        on = "i" * self.case_insensitive + "m" * self.multi_line + "s" * self.dot_all
        off = "i" * (not self.case_insensitive) + "m" * (not self.multi_line) + "s" * (not self.dot_all)
        return f"(?{on}-{off}:" if off else f"(?{on}:"


class _Group:
    """An open parenthesis: the flags to restore at its `)` and the flag groups opened inside it."""

    __slots__ = ("outer_flags", "start_flags", "open_flag_groups")

    def __init__(self, outer_flags: _Flags, start_flags: _Flags) -> None:
        self.outer_flags = outer_flags
        self.start_flags = start_flags
        self.open_flag_groups = 0


class _Re2Translator:
    """Rewrites an RE2 pattern as a Python `re` pattern with the same matches, or raises InvalidRegexError.

    Flags are tracked here rather than left to Python because RE2's `(?i)` may appear mid-pattern (Python
    wants global flags first), `$` without `m` means end of text (Python's `$` also matches before a final
    newline) and RE2 has an ungreedy flag `U` that Python lacks.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0
        self.out: list[str] = []
        self.flags = _Flags()
        self.groups: list[_Group] = [_Group(self.flags, self.flags.copy())]
        self.capture_names: set[str] = set()
        # What a repetition operator would apply to: None (nothing), "atom", or "repeat" (already repeated).
        self.last: str | None = None
        self.last_repeat = ""  # the text of the last repetition operator, for Go's error message

    def fail(self, reason: str) -> InvalidRegexError:
        return InvalidRegexError(f"invalid regular expression {go_quote(self.pattern)}: {reason}", reason)

    def translate(self) -> str:
        pattern = self.pattern
        while self.pos < len(pattern):
            char = pattern[self.pos]
            if char == "\\":
                self.escape()
            elif char == "[":
                self.pos += 1
                ranges, negated = self.char_class()
                self.emit_atom(_class_pattern(ranges, negated))
            elif char == "(":
                self.open_group()
            elif char == ")":
                self.close_group()
            elif char == "|":
                self.pos += 1
                self.alternate()
            elif char in "*+?":
                self.pos += 1
                self.repeat(char)
            elif char == "{" and self.try_counted_repeat():
                pass
            elif char == "^":
                self.pos += 1
                self.out.append("^")
                self.last = None
            elif char == "$":
                self.pos += 1
                self.out.append("$" if self.flags.multi_line else r"\Z")
                self.last = None
            elif char == ".":
                self.pos += 1
                self.emit_atom(".")
            else:
                self.pos += 1
                self.emit_atom(re.escape(char))
        if len(self.groups) > 1:
            raise self.fail("missing closing )")
        self.out.append(")" * self.groups[0].open_flag_groups)
        return self.flags_for_whole_pattern() + "".join(self.out) + ")"

    def flags_for_whole_pattern(self) -> str:
        return _Flags().python_group()

    def emit_atom(self, text: str) -> None:
        self.out.append(text)
        self.last = "atom"

    def repeat(self, operator: str) -> None:
        if self.last is None:
            raise self.fail(f"missing argument to repetition operator: `{operator}`")
        if self.last == "repeat":
            # Go quotes both operators, as written: `**`, `*+`, `{2}*`
            raise self.fail(f"invalid nested repetition operator: `{self.last_repeat}{operator}`")
        lazy = self.pattern.startswith("?", self.pos)
        if lazy:
            self.pos += 1
        self.last_repeat = operator + ("?" if lazy else "")
        # Under RE2's U flag, `x*` is lazy and `x*?` greedy.
        if lazy != self.flags.ungreedy:
            operator += "?"
        self.out.append(operator)
        self.last = "repeat"

    def try_counted_repeat(self) -> bool:
        """Handle `{n}`, `{n,}` or `{n,m}` at pos; False when the brace is a literal, as RE2 reads it."""
        match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.pattern, self.pos)
        if match is None:
            self.pos += 1
            self.emit_atom(r"\{")
            return True
        low = int(match.group(1))
        high = low if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
        if low > _MAX_REPEAT or (high is not None and (high > _MAX_REPEAT or high < low)):
            raise self.fail(f"invalid repeat count: `{match.group(0)}`")
        self.pos = match.end()
        if self.last is None:
            raise self.fail(f"missing argument to repetition operator: `{match.group(0)}`")
        if self.last == "repeat":
            raise self.fail(f"invalid nested repetition operator: `{self.last_repeat}{match.group(0)}`")
        lazy = self.pattern.startswith("?", self.pos)
        if lazy:
            self.pos += 1
        text = f"{{{low}}}" if high == low else f"{{{low},{'' if high is None else high}}}"
        self.out.append(text + ("?" if lazy != self.flags.ungreedy else ""))
        self.last_repeat = match.group(0) + ("?" if lazy else "")
        self.last = "repeat"
        return True

    # Groups and flags.

    def open_group(self) -> None:
        pattern = self.pattern
        self.pos += 1
        if not pattern.startswith("?", self.pos):
            self.push_group("(")
            return
        rest = pattern[self.pos + 1:]
        named = re.match(r"P?<([^>]*)>", rest)
        if named and not rest.startswith(("<=", "<!")):
            name = named.group(1)
            if not name or not all(c == "_" or (c.isascii() and c.isalnum()) for c in name):
                raise self.fail(f"invalid named capture: `(?{named.group(0)}`")
            if name in self.capture_names:
                raise self.fail(f"duplicate capture group name: `(?{named.group(0)}`")
            self.capture_names.add(name)
            self.pos += 1 + named.end()
            self.push_group("(")
            return
        flags_match = re.match(r"([imsU]*)(?:-([imsU]*))?([:)])", rest)
        # RE2 wants at least one flag after a `-`; `(?)` is an (odd) empty flag change.
        if flags_match is None or flags_match.group(2) == "":
            raise self.fail(f"invalid or unsupported Perl syntax: `{pattern[self.pos - 1:self.pos + 2]}`")
        new_flags = self.flags.copy()
        for letters, value in ((flags_match.group(1), True), (flags_match.group(2) or "", False)):
            for letter in letters:
                if letter == "i":
                    new_flags.case_insensitive = value
                elif letter == "m":
                    new_flags.multi_line = value
                elif letter == "s":
                    new_flags.dot_all = value
                else:
                    new_flags.ungreedy = value
        self.pos += 1 + flags_match.end()
        if flags_match.group(3) == ":":
            self.push_group(new_flags.python_group(), new_flags)
            return
        # `(?i)` changes the flags until the end of the enclosing group, across later alternatives too.
        self.flags = new_flags
        self.out.append(new_flags.python_group())
        self.groups[-1].open_flag_groups += 1
        self.last = None

    def push_group(self, opener: str, flags: _Flags | None = None) -> None:
        outer = self.flags
        self.flags = (flags or outer).copy()
        self.groups.append(_Group(outer, self.flags.copy()))
        self.out.append(opener)
        self.last = None

    def close_group(self) -> None:
        self.pos += 1
        if len(self.groups) == 1:
            raise self.fail("unexpected )")
        group = self.groups.pop()
        self.out.append(")" * group.open_flag_groups + ")")
        self.flags = group.outer_flags
        self.last = "atom"

    def alternate(self) -> None:
        group = self.groups[-1]
        self.out.append(")" * group.open_flag_groups + "|")
        group.open_flag_groups = 0
        if not self.flags.same_for_python(group.start_flags):
            self.out.append(self.flags.python_group())
            group.open_flag_groups = 1
        self.last = None

    # Escapes and character classes.

    def escape(self) -> None:
        """An escape outside a character class."""
        pattern = self.pattern
        if self.pos + 1 >= len(pattern):
            raise self.fail("trailing backslash at end of expression")
        letter = pattern[self.pos + 1]
        if letter == "Q":
            end = pattern.find("\\E", self.pos + 2)
            literal = pattern[self.pos + 2:] if end < 0 else pattern[self.pos + 2:end]
            self.pos = len(pattern) if end < 0 else end + 2
            for char in literal:
                self.emit_atom(re.escape(char))
            return
        if letter == "E":
            # A stray \E (no \Q before it) is ignored by RE2.
            self.pos += 2
            return
        simple = {"A": r"\A", "z": r"\Z", "b": _WORD_BOUNDARY, "B": _NOT_WORD_BOUNDARY}
        if letter in simple:
            self.pos += 2
            self.out.append(simple[letter])
            self.last = None
            return
        class_ranges = self.class_escape()
        if class_ranges is not None:
            self.emit_atom(_class_pattern(class_ranges))
            return
        code = self.char_escape()
        self.emit_atom(re.escape(chr(code)))

    def class_escape(self) -> list[tuple[int, int]] | None:
        """`\\d`, `\\PL`, `\\p{Greek}`... at pos as code point ranges (pos moves past it), else None."""
        pattern = self.pattern
        letter = pattern[self.pos + 1]
        if letter.lower() in _PERL_CLASSES:
            self.pos += 2
            ranges = _PERL_CLASSES[letter.lower()]
            return _complement(ranges) if letter.isupper() else list(ranges)
        if letter not in "pP":
            return None
        negated = letter == "P"
        if pattern.startswith("{", self.pos + 2):
            end = pattern.find("}", self.pos + 3)
            if end < 0:
                raise self.fail(f"invalid character class range: `{pattern[self.pos:]}`")
            name = pattern[self.pos + 3:end]
            self.pos = end + 1
        elif self.pos + 2 < len(pattern):
            name = pattern[self.pos + 2]
            self.pos += 3
        else:
            raise self.fail(f"invalid character class range: `{pattern[self.pos:]}`")
        if name.startswith("^"):
            negated = not negated
            name = name[1:]
        if name not in _UNICODE_CATEGORIES and name != "Any":
            # Go knows the Unicode script names too (\p{Greek}); Python's unicodedata does not.
            raise self.fail(f"unsupported Unicode class: `\\p{{{name}}}`")
        ranges = list(_unicode_category_ranges(name))
        return _complement(ranges) if negated else ranges

    def char_escape(self) -> int:
        """A single-character escape at pos (after the backslash is checked to be there): its code point."""
        pattern = self.pattern
        letter = pattern[self.pos + 1]
        if letter in "1234567" and not (self.pos + 2 < len(pattern) and pattern[self.pos + 2] in "01234567"):
            raise self.fail(f"invalid escape sequence: `\\{letter}` (backreferences are not supported)")
        if letter in "01234567":
            # Octal: up to three digits, as in Go.
            digits = re.match(r"[0-7]{1,3}", pattern[self.pos + 1:]).group(0)
            self.pos += 1 + len(digits)
            return int(digits, 8)
        if letter == "x":
            braced = re.match(r"\{([0-9A-Fa-f]+)\}", pattern[self.pos + 2:])
            if braced:
                code = int(braced.group(1), 16)
                if code > _MAX_CODE_POINT:
                    raise self.fail(f"invalid escape sequence: `\\x{braced.group(0)}`")
                self.pos += 2 + braced.end()
                return code
            plain = re.match(r"[0-9A-Fa-f]{2}", pattern[self.pos + 2:])
            if plain is None:
                raise self.fail(f"invalid escape sequence: `{pattern[self.pos:self.pos + 4]}`")
            self.pos += 4
            return int(plain.group(0), 16)
        if letter in _CONTROL_ESCAPES:
            self.pos += 2
            return _CONTROL_ESCAPES[letter]
        if letter.isascii() and not letter.isalnum():
            self.pos += 2
            return ord(letter)
        raise self.fail(f"invalid escape sequence: `\\{letter}`")

    def char_class(self) -> tuple[list[tuple[int, int]], bool]:
        """Parse a class after its `[`: its code point ranges and whether it is negated."""
        pattern = self.pattern
        start = self.pos - 1
        negated = pattern.startswith("^", self.pos)
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if self.pos >= len(pattern):
                raise self.fail(f"missing closing ]: `{pattern[start:]}`")
            char = pattern[self.pos]
            if char == "]" and not first:
                self.pos += 1
                return ranges, negated
            first = False
            if pattern.startswith("[:", self.pos):
                end = pattern.find(":]", self.pos + 2)
                if end >= 0:
                    name = pattern[self.pos + 2:end]
                    posix_negated = name.startswith("^")
                    posix = _POSIX_CLASSES.get(name.lstrip("^"))
                    if posix is None:
                        raise self.fail(f"invalid character class range: `{pattern[self.pos:end + 2]}`")
                    ranges.extend(_complement(posix) if posix_negated else posix)
                    self.pos = end + 2
                    continue
            if char == "\\" and self.pos + 1 < len(pattern):
                class_ranges = self.class_escape()
                if class_ranges is not None:
                    ranges.extend(class_ranges)
                    continue
            low = self.class_char()
            high = low
            if pattern.startswith("-", self.pos) and self.pos + 1 < len(pattern) and pattern[self.pos + 1] != "]":
                range_start = self.pos - 1
                self.pos += 1
                high = self.class_char()
                if high < low:
                    raise self.fail(f"invalid character class range: `{pattern[range_start:self.pos]}`")
            ranges.append((low, high))

    def class_char(self) -> int:
        pattern = self.pattern
        if self.pos >= len(pattern):
            raise self.fail("missing closing ]")
        char = pattern[self.pos]
        if char != "\\":
            self.pos += 1
            return ord(char)
        if self.pos + 1 >= len(pattern):
            raise self.fail("trailing backslash at end of expression")
        return self.char_escape()


def translate_re2(pattern: str) -> str:
    """A Python `re` pattern that fullmatches exactly what Go's `^(?s:pattern)$` matches.

    Raises InvalidRegexError for patterns RE2 rejects (backreferences, lookarounds, possessive or nested
    repetitions, unknown escapes...) and for Unicode script classes, which Python's tables lack.
    """
    return _Re2Translator(pattern).translate()
