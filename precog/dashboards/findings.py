"""What the static checks report, and which mapping types suit which use of a field.

>>> suits("double", "average"), suits("keyword", "average"), suits("date", "max")
(True, False, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from precog.dashboards.templates import field_type

NUMERIC = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float",
                     "unsigned_long"})
DATES = frozenset({"date", "date_nanos"})
TERMS = frozenset({"keyword", "integer", "long", "short", "byte", "boolean", "ip"})
LEAF = NUMERIC | DATES | TERMS | {"text"}
#: Which mapping types suit each use of a field (Lens operation types and the report's ops).
SUITABLE: dict[str, frozenset[str]] = {
    "date_histogram": DATES,
    "terms": TERMS,
    "range": NUMERIC, "histogram": NUMERIC,
    "average": NUMERIC, "avg": NUMERIC, "sum": NUMERIC, "median": NUMERIC,
    "percentile": NUMERIC, "standard_deviation": NUMERIC,
    "min": NUMERIC | DATES, "max": NUMERIC | DATES,
    "unique_count": LEAF, "last_value": LEAF, "count": LEAF,
    "filter": LEAF, "column": LEAF, "sort": NUMERIC | DATES | TERMS, "control": TERMS,
}


@dataclass(frozen=True)
class Problem:
    """One finding: where (the object, or the NDJSON line) and what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def suits(es_type: str | None, use: str) -> bool:
    """Whether a field of mapping type ``es_type`` can serve ``use`` (an aggregation)."""
    return es_type is not None and es_type in SUITABLE.get(use, LEAF)


def field_problem(where: str, index: str, body: Mapping[str, Any], name: str, use: str
                   ) -> Problem | None:
    """What is wrong with ``name`` serving ``use`` in the ``index`` template, if anything."""
    es_type = field_type(body, name)
    if es_type is None:
        return Problem(where, f"field {name!r} ({use}) is not in the {index} index template")
    if not suits(es_type, use):
        return Problem(where, f"field {name!r} is {es_type} in the {index} index template, "
                              f"unsuitable for {use}")
    return None
