"""PromQL as Prometheus 3.5 speaks it: parser, typed syntax tree, printer and function table.

``parse(text)`` returns an :mod:`~mimird.promql.ast` tree or raises :class:`ParseError`;
``to_string(node)`` prints a tree back as Prometheus's ``String()`` does; ``format_query(text)``
is what ``/api/v1/format_query`` returns.
"""

from mimird.promql.parser import ParseError, parse
from mimird.promql.printer import format_query, to_string

__all__ = ["ParseError", "format_query", "parse", "to_string"]
