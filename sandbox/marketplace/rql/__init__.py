"""RQL on the sandbox's side: a list request's raw query string becomes a compiled query.

- ``query``: splits the query string into the filter and the named parameters;
- ``parser``: reads the filter as the platform's engine does and compiles it as it goes;
- ``predicates``: the compiled conditions (comparisons, like/ilike, in/out, any/all);
- ``values``: literals, constants and their coercion (bool, number, instant);
- ``fields``: the fields each resource exposes; ``sorting``: ``order``.
"""

from sandbox.marketplace.rql.errors import RqlSyntaxError
from sandbox.marketplace.rql.fields import FieldSet
from sandbox.marketplace.rql.predicates import like_pattern
from sandbox.marketplace.rql.query import DEFAULT_LIMIT, MAX_LIMIT, ParsedQuery, parse_query
from sandbox.marketplace.rql.sorting import first_records, sort_in_place, sort_key, sort_records

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "FieldSet",
    "ParsedQuery",
    "RqlSyntaxError",
    "first_records",
    "like_pattern",
    "parse_query",
    "sort_in_place",
    "sort_key",
    "sort_records",
]
