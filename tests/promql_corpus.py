"""Finds and reads Prometheus 3.5's PromQL test corpus (``shared/promql-tests/*.test``).

The corpus lives next to the repository (``<repo>/../shared/promql-tests``) and is read in place,
never copied. For now this yields the expressions of the ``eval*`` commands; the header grammar
follows FORMAT.md §5.1 (the same patterns Prometheus's harness uses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "promql-tests"

_EVAL_INSTANT = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_EVAL_RANGE = re.compile(
    r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$"
)


@dataclass(frozen=True)
class CorpusExpr:
    """One ``eval`` command's expression and where it was found."""

    file: str
    line: int
    command: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def corpus_files() -> list[Path]:
    """Every ``*.test`` file of the corpus, sorted; empty when the corpus is not present."""
    if not CORPUS_DIR.is_dir():
        return []
    return sorted(CORPUS_DIR.glob("*.test"))


def eval_expressions(path: Path) -> list[CorpusExpr]:
    """The expressions of every ``eval*`` command in one test file, in file order."""
    found = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line.lower().startswith("eval"):
            continue
        match = _EVAL_INSTANT.match(line)
        if match:
            expr = match.group(3)
        else:
            match = _EVAL_RANGE.match(line)
            if not match:
                raise ValueError(f"{path.name}:{number}: unrecognised eval header: {line!r}")
            expr = match.group(5)
        found.append(CorpusExpr(path.name, number, line.split()[0], expr))
    return found


def all_eval_expressions() -> list[CorpusExpr]:
    """Every eval expression of the whole corpus."""
    return [expr for path in corpus_files() for expr in eval_expressions(path)]
