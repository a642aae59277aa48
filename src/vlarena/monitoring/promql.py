"""The metric names a PromQL expression reads: enough of a PromQL lexer to find its selectors."""

from __future__ import annotations

import re

# Words that are operators, modifiers or aggregations (`sum by (le) (...)`), not metric names.
KEYWORDS = frozenset(
    {
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<braces>\{[^{}]*\})
  | (?P<range>\[[^\[\]]*\])
  | (?P<grouping>\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\))
  | (?P<variable>\$\{?\w+(?::\w+)?\}?)
  | (?P<duration>\b(?:\d+(?:ms|s|m|h|d|w|y))+\b)
  | (?P<number>\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?
    """,
    re.VERBOSE,
)


def metric_names(expr: str) -> set[str]:
    """Names of the metrics (or recorded series) `expr` selects.

    Label matchers, ranges, grouping clauses, strings, numbers and Grafana variables are
    skipped; a name followed by `(` is a function or aggregation.
    """
    names = set()
    for match in _TOKEN.finditer(expr):
        name = match.group("name")
        if name and not match.group("call") and name.lower() not in KEYWORDS:
            names.add(name)
    return names
