"""The metrics and labels a PromQL expression asks for, read with a real
PromQL parser (promql-parser), so that a query that does not parse fails too.
Grafana's interval variables ($__rate_interval, ...) stand for a duration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

GRAFANA_DURATIONS = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")


@dataclass(frozen=True)
class Selector:
    """``name{label=...}``: a metric and the labels it is matched on."""

    name: str
    matched: frozenset[str]


@dataclass(frozen=True)
class Grouping:
    """``sum by (labels) (...)``: the labels kept, and the selectors under them."""

    labels: frozenset[str]
    selectors: tuple[Selector, ...]


def parse(promql: ModuleType, expr: str) -> object:
    return promql.parse(GRAFANA_DURATIONS.sub("5m", expr))


def selectors(promql: ModuleType, node: object) -> list[Selector]:
    found: list[Selector] = []

    def visit(n: object) -> None:
        if isinstance(n, promql.VectorSelector):
            matched = frozenset(m.name for m in n.matchers.matchers)
            found.append(Selector(n.name or "", matched))

    promql.walk(node, visit)
    return found


def groupings(promql: ModuleType, node: object) -> list[Grouping]:
    """Every ``by (...)`` of the expression (``without`` keeps what it does
    not name, which asks for no label)."""
    found: list[Grouping] = []

    def visit(n: object) -> None:
        modifier = getattr(n, "modifier", None)
        if isinstance(n, promql.AggregateExpr) and modifier is not None:
            if modifier.type == promql.AggModifierType.By:
                found.append(Grouping(frozenset(modifier.labels), tuple(selectors(promql, n.expr))))

    promql.walk(node, visit)
    return found
