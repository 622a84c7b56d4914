"""The PromQL lexer: a port of Prometheus 3.5's hand-written state machine (promql/parser/lex.go).

PromQL's tokens depend on context in ways a table of regular expressions cannot express (inside
``{...}`` keywords are plain identifiers, inside ``[...]`` letters act as colons and numbers may be
durations, keywords are case-insensitive but keep their spelling), so the grammar in
``grammar/promql.lark`` declares its terminals and takes them from this lexer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mimird.promql.quoting import go_quote, go_quote_rune, go_unicode_format

# Keywords (matched case-insensitively) and the token type each becomes.
KEYWORDS: dict[str, str] = {
    "and": "LAND",
    "or": "LOR",
    "unless": "LUNLESS",
    "atan2": "ATAN2",
    "sum": "SUM",
    "avg": "AVG",
    "count": "COUNT",
    "min": "MIN",
    "max": "MAX",
    "group": "GROUP",
    "stddev": "STDDEV",
    "stdvar": "STDVAR",
    "topk": "TOPK",
    "bottomk": "BOTTOMK",
    "count_values": "COUNT_VALUES",
    "quantile": "QUANTILE",
    "limitk": "LIMITK",
    "limit_ratio": "LIMIT_RATIO",
    "offset": "OFFSET",
    "by": "BY",
    "without": "WITHOUT",
    "on": "ON",
    "ignoring": "IGNORING",
    "group_left": "GROUP_LEFT",
    "group_right": "GROUP_RIGHT",
    "bool": "BOOL",
    "start": "START",
    "end": "END",
    "inf": "NUMBER",
    "nan": "NUMBER",
}

AGGREGATOR_TOKENS = frozenset(
    ("SUM", "AVG", "COUNT", "MIN", "MAX", "GROUP", "STDDEV", "STDVAR", "TOPK", "BOTTOMK", "COUNT_VALUES",
     "QUANTILE", "LIMITK", "LIMIT_RATIO")
)
OPERATOR_TOKENS = frozenset(
    ("ADD", "DIV", "EQLC", "EQL_REGEX", "GTE", "GTR", "LAND", "LOR", "LSS", "LTE", "LUNLESS", "MOD", "MUL",
     "NEQ", "NEQ_REGEX", "POW", "SUB", "AT", "ATAN2")
)
KEYWORD_TOKENS = frozenset(("BOOL", "BY", "GROUP_LEFT", "GROUP_RIGHT", "IGNORING", "OFFSET", "ON", "WITHOUT"))

# Token types with a fixed spelling: Prometheus describes them by that spelling in error messages.
FIXED_SPELLING: dict[str, str] = {
    "LEFT_PAREN": "(",
    "RIGHT_PAREN": ")",
    "LEFT_BRACE": "{",
    "RIGHT_BRACE": "}",
    "LEFT_BRACKET": "[",
    "RIGHT_BRACKET": "]",
    "COMMA": ",",
    "EQL": "=",
    "COLON": ":",
    "SUB": "-",
    "ADD": "+",
    "MUL": "*",
    "MOD": "%",
    "DIV": "/",
    "EQLC": "==",
    "NEQ": "!=",
    "LTE": "<=",
    "LSS": "<",
    "GTE": ">=",
    "GTR": ">",
    "EQL_REGEX": "=~",
    "NEQ_REGEX": "!~",
    "POW": "^",
}
for _word, _typ in KEYWORDS.items():
    if _typ != "NUMBER":
        FIXED_SPELLING[_typ] = _word

_DESCRIPTIONS = {
    "EOF": "end of input",
    "IDENTIFIER": "identifier",
    "METRIC_IDENTIFIER": "metric identifier",
    "STRING": "string",
    "NUMBER": "number",
    "DURATION": "duration",
}


@dataclass(frozen=True, slots=True)
class Item:
    """One token: its type name, its text as written and its character offset."""

    type: str
    value: str
    pos: int

    def __str__(self) -> str:
        # Mirrors Item.String() in lex.go.
        if self.type == "EOF":
            return "EOF"
        if self.type in ("IDENTIFIER", "METRIC_IDENTIFIER"):
            return go_quote(self.value)
        if self.type in KEYWORD_TOKENS:
            return f"<{self.value}>"
        if self.type in OPERATOR_TOKENS:
            return f"<op:{self.value}>"
        if self.type in AGGREGATOR_TOKENS:
            return f"<aggr:{self.value}>"
        if len(self.value) > 10:
            return go_quote(self.value[:10]) + "..."
        return go_quote(self.value)

    def describe(self) -> str:
        """How Prometheus names this token after ``unexpected`` in a syntax error."""
        if self.type in FIXED_SPELLING or self.type == "AT":
            return str(self)
        if self.type == "EOF":
            return "end of input"
        return f"{_DESCRIPTIONS.get(self.type, self.type)} {self}"


class LexError(Exception):
    """The lexer met input it cannot tokenise; ``pos`` is the start of the offending token."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


_SPACE = " \t\n\r"
_DIGITS = "0123456789"


def _is_alpha(ch: str) -> bool:
    return ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9" and ch != ""


def _is_alnum(ch: str) -> bool:
    return _is_alpha(ch) or _is_digit(ch)


def _invalid_rune(ch: str) -> bool:
    # Go's decoder yields RuneError both for bad bytes and for a literal U+FFFD.
    return ch == "\ufffd" or "\ud800" <= ch <= "\udfff"


State = Callable[[], "State"] | None


class Lexer:
    """Tokenises one PromQL expression lazily; iterate over :meth:`items`."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.width = 0
        self.paren_depth = 0
        self.brace_open = False
        self.bracket_open = False
        self.got_colon = False
        self.got_duration = False
        self.string_open = ""
        self._pending: list[Item] = []

    # --- primitives -------------------------------------------------------------------------------

    def next(self) -> str:
        if self.pos >= len(self.input):
            self.width = 0
            return ""
        ch = self.input[self.pos]
        self.width = 1
        self.pos += 1
        return ch

    def peek(self) -> str:
        return self.input[self.pos] if self.pos < len(self.input) else ""

    def backup(self) -> None:
        self.pos -= self.width

    def emit(self, typ: str) -> None:
        self._pending.append(Item(typ, self.input[self.start : self.pos], self.start))
        self.start = self.pos

    def ignore(self) -> None:
        self.start = self.pos

    def accept(self, valid: str) -> bool:
        ch = self.next()
        if ch != "" and ch in valid:
            return True
        self.backup()
        return False

    def is_next(self, valid: str) -> bool:
        ch = self.peek()
        return ch != "" and ch in valid

    def accept_run(self, valid: str) -> None:
        while True:
            ch = self.next()
            if ch == "" or ch not in valid:
                break
        self.backup()

    def error(self, message: str) -> None:
        raise LexError(message, self.start)

    def items(self) -> Iterator[Item]:
        """Yield tokens up to and including EOF; comments are dropped. Raises LexError."""
        state: State = self.lex_statements
        while True:
            while not self._pending:
                if state is None:
                    return
                state = state()
            item = self._pending.pop(0)
            if item.type == "COMMENT":
                continue
            yield item
            if item.type == "EOF":
                return

    # --- states -------------------------------------------------------------------------------------

    def lex_statements(self) -> State:
        if self.brace_open:
            return self.lex_inside_braces
        if self.input.startswith("#", self.pos):
            return self.lex_line_comment
        ch = self.next()
        if ch == "":
            if self.paren_depth != 0:
                self.error("unclosed left parenthesis")
            if self.bracket_open:
                self.error("unclosed left bracket")
            self.emit("EOF")
            return None
        if ch == ",":
            self.emit("COMMA")
        elif ch in _SPACE:
            return self.lex_space
        elif ch in "*/%+-^":
            self.emit({"*": "MUL", "/": "DIV", "%": "MOD", "+": "ADD", "-": "SUB", "^": "POW"}[ch])
        elif ch == "=":
            following = self.peek()
            if following == "=":
                self.next()
                self.emit("EQLC")
            elif following == "~":
                self.error(f"unexpected character after '=': {go_quote_rune(following)}")
            else:
                self.emit("EQL")
        elif ch == "!":
            following = self.next()
            if following != "=":
                self.error(f"unexpected character after '!': {go_quote_rune(following)}")
            self.emit("NEQ")
        elif ch == "<":
            if self.peek() == "=":
                self.next()
                self.emit("LTE")
            else:
                self.emit("LSS")
        elif ch == ">":
            if self.peek() == "=":
                self.next()
                self.emit("GTE")
            else:
                self.emit("GTR")
        elif _is_digit(ch) or (ch == "." and _is_digit(self.peek())):
            self.backup()
            return self.lex_number_or_duration
        elif ch in "\"'":
            self.string_open = ch
            return self.lex_string
        elif ch == "`":
            self.string_open = ch
            return self.lex_raw_string
        elif _is_alpha(ch) or ch == ":":
            if not self.bracket_open:
                self.backup()
                return self.lex_keyword_or_identifier
            # Inside brackets Prometheus reads any letter as the subquery colon.
            if self.got_colon:
                self.error(f"unexpected colon {go_quote_rune(ch)}")
            self.emit("COLON")
            self.got_colon = True
        elif ch == "(":
            self.emit("LEFT_PAREN")
            self.paren_depth += 1
        elif ch == ")":
            self.emit("RIGHT_PAREN")
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.error(f"unexpected right parenthesis {go_quote_rune(ch)}")
        elif ch == "{":
            self.emit("LEFT_BRACE")
            self.brace_open = True
            return self.lex_inside_braces
        elif ch == "[":
            if self.bracket_open:
                self.error(f"unexpected left bracket {go_quote_rune(ch)}")
            self.got_colon = False
            self.emit("LEFT_BRACKET")
            if self.peek() in _SPACE and self.peek() != "":
                self.skip_spaces()
            self.bracket_open = True
            return self.lex_duration_expr
        elif ch == "]":
            if not self.bracket_open:
                self.error(f"unexpected right bracket {go_quote_rune(ch)}")
            self.emit("RIGHT_BRACKET")
            self.bracket_open = False
        elif ch == "@":
            self.emit("AT")
        else:
            self.error(f"unexpected character: {go_quote_rune(ch)}")
        return self.lex_statements

    def lex_inside_braces(self) -> State:
        if self.input.startswith("#", self.pos):
            return self.lex_line_comment
        ch = self.next()
        if ch == "":
            self.error("unexpected end of input inside braces")
        elif ch in _SPACE:
            return self.lex_space
        elif _is_alpha(ch):
            self.backup()
            return self.lex_identifier
        elif ch == ",":
            self.emit("COMMA")
        elif ch in "\"'":
            self.string_open = ch
            return self.lex_string
        elif ch == "`":
            self.string_open = ch
            return self.lex_raw_string
        elif ch == "=":
            if self.next() == "~":
                self.emit("EQL_REGEX")
            else:
                self.backup()
                self.emit("EQL")
        elif ch == "!":
            following = self.next()
            if following == "~":
                self.emit("NEQ_REGEX")
            elif following == "=":
                self.emit("NEQ")
            else:
                self.error(f"unexpected character after '!' inside braces: {go_quote_rune(following)}")
        elif ch == "{":
            self.error(f"unexpected left brace {go_quote_rune(ch)}")
        elif ch == "}":
            self.emit("RIGHT_BRACE")
            self.brace_open = False
            return self.lex_statements
        else:
            self.error(f"unexpected character inside braces: {go_quote_rune(ch)}")
        return self.lex_inside_braces

    def lex_escape(self) -> State:
        ch = self.next()
        if ch != "" and ch in ("abfnrtv\\" + self.string_open):
            return self.lex_string
        if ch != "" and ch in "01234567":
            count, base, max_value = 3, 8, 255
        elif ch == "x":
            ch = self.next()
            count, base, max_value = 2, 16, 255
        elif ch == "u":
            ch = self.next()
            count, base, max_value = 4, 16, 0x10FFFF
        elif ch == "U":
            ch = self.next()
            count, base, max_value = 8, 16, 0x10FFFF
        elif ch == "":
            self.error("escape sequence not terminated")
        else:
            self.error(f"unknown escape sequence {go_unicode_format(ch)}")
        value = 0
        while count > 0:
            digit = int(ch, 16) if ch != "" and ch in "0123456789abcdefABCDEF" else 16
            if digit >= base:
                if ch == "":
                    self.error("escape sequence not terminated")
                self.error(f"illegal character {go_unicode_format(ch)} in escape sequence")
            value = value * base + digit
            count -= 1
            if count > 0:
                ch = self.next()
        if value > max_value or 0xD800 <= value < 0xE000:
            self.error("escape sequence is an invalid Unicode code point")
        return self.lex_string

    def lex_string(self) -> State:
        while True:
            ch = self.next()
            if ch == "\\":
                return self.lex_escape
            if _invalid_rune(ch):
                self.error("invalid UTF-8 rune")
            if ch in ("", "\n"):
                self.error("unterminated quoted string")
            if ch == self.string_open:
                break
        self.emit("STRING")
        return self.lex_statements

    def lex_raw_string(self) -> State:
        while True:
            ch = self.next()
            if _invalid_rune(ch):
                self.error("invalid UTF-8 rune")
            if ch == "":
                self.error("unterminated raw string")
            if ch == self.string_open:
                break
        self.emit("STRING")
        return self.lex_statements

    def lex_space(self) -> State:
        while self.peek() != "" and self.peek() in _SPACE:
            self.next()
        self.ignore()
        return self.lex_statements

    def skip_spaces(self) -> None:
        while self.peek() != "" and self.peek() in _SPACE:
            self.next()
        self.ignore()

    def lex_line_comment(self) -> State:
        self.pos += 1
        while self.peek() not in ("", "\r", "\n"):
            self.next()
        self.emit("COMMENT")
        return self.lex_statements

    def lex_number_or_duration(self) -> State:
        if self.scan_number():
            self.emit("NUMBER")
            return self.lex_statements
        if self.accept_remaining_duration():
            self.backup()
            self.emit("DURATION")
            return self.lex_statements
        self.error(f"bad number or duration syntax: {go_quote(self.input[self.start:self.pos])}")
        return None

    def accept_remaining_duration(self) -> bool:
        if not self.accept("smhdwy"):
            return False
        self.accept("s")  # "ms"
        while self.accept(_DIGITS):
            while self.accept(_DIGITS):
                pass
            if not self.accept("smhdw"):
                return False
            self.accept("s")
        return not _is_alnum(self.next())

    def scan_number(self) -> bool:
        initial = self.pos
        digits = _DIGITS
        if self.accept("0") and self.accept("xX"):
            self.accept("_")
            digits = "0123456789abcdefABCDEF"
        self.accept(".")
        self.accept(digits)
        dot_seen = False
        exponent_seen = False
        while self.is_next(digits + "._eE"):
            if self.is_next(".") and dot_seen:
                self.accept(".")
                return False
            if self.is_next("eE") and exponent_seen:
                self.accept("eE")
                return False
            if self.accept("."):
                dot_seen = True
                if self.accept("_."):
                    return False
                if len(digits) > 10:
                    return False  # no hexadecimal fractions
                continue
            if self.accept("eE"):
                exponent_seen = True
                self.accept("+-")
                if self.accept("._eE") or self.peek() == "":
                    return False
                continue
            if self.accept("_"):
                if self.accept("._eE") or self.peek() == "":
                    return False
                continue
            self.accept_run(digits)
        if self.pos == initial:
            return False
        return not _is_alnum(self.peek())

    def lex_identifier(self) -> State:
        while _is_alnum(self.next()):
            pass
        self.backup()
        self.emit("IDENTIFIER")
        return self.lex_statements

    def lex_keyword_or_identifier(self) -> State:
        while True:
            ch = self.next()
            if not (_is_alnum(ch) or ch == ":"):
                self.backup()
                break
        word = self.input[self.start : self.pos]
        keyword = KEYWORDS.get(word.lower())
        if keyword is not None:
            self.emit(keyword)
        elif ":" not in word:
            self.emit("IDENTIFIER")
        else:
            self.emit("METRIC_IDENTIFIER")
        return self.lex_statements

    def lex_duration_expr(self) -> State:
        ch = self.next()
        if ch == "":
            self.error("unexpected end of input in duration expression")
        elif ch == "]":
            self.emit("RIGHT_BRACKET")
            self.bracket_open = False
            self.got_colon = False
            return self.lex_statements
        elif ch == ":":
            self.emit("COLON")
            if not self.got_duration:
                self.error("unexpected colon before duration in duration expression")
            if self.got_colon:
                self.error("unexpected repeated colon in duration expression")
            self.got_colon = True
        elif ch == "(":
            self.emit("LEFT_PAREN")
            self.paren_depth += 1
        elif ch == ")":
            self.emit("RIGHT_PAREN")
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.error(f"unexpected right parenthesis {go_quote_rune(ch)}")
        elif ch in _SPACE:
            self.skip_spaces()
        elif ch in "+-*/%^":
            self.emit({"*": "MUL", "/": "DIV", "%": "MOD", "+": "ADD", "-": "SUB", "^": "POW"}[ch])
        elif _is_digit(ch) or (ch == "." and _is_digit(self.peek())):
            self.backup()
            self.got_duration = True
            return self.lex_number_or_duration
        else:
            self.error(f"unexpected character in duration expression: {go_quote_rune(ch)}")
        return self.lex_duration_expr
