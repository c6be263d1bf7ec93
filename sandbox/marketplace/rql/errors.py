"""The one error the sandbox's RQL raises: a query the API would answer with 400."""

from __future__ import annotations


class RqlSyntaxError(ValueError):
    """A query string the API would answer with 400: says what is wrong and where."""

    def __init__(
        self,
        message: str,
        *,
        parameter: str = "filter",
        position: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.parameter = parameter  # filter, limit, offset, select or order
        self.position = position  # 0-based offset in the decoded query, when known
        self.field = field  # the offending field name, when there is one
