"""Errors raised while reading CRM exports; both derive from ``ConnectorError``.

ConnectorError
└── CrmError
    ├── CrmMappingError   a column mapping (YAML or dict) is invalid; names its source and key
    └── CrmFileError      an export cannot be read at all; names the file and the problem
"""

from __future__ import annotations

from connector.errors import ConnectorError


class CrmError(ConnectorError):
    """Root of the CRM export errors."""


class CrmMappingError(CrmError, ValueError):
    """A column mapping is invalid: unknown key, missing email column, bad category id, ..."""


class CrmFileError(CrmError):
    """An export cannot be read at all; nothing is read from it."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")
