"""Column mappings: which export columns hold the email, the name and the opt-out flags.

A mapping is a ``CrmMapping`` validated on load, from a built-in YAML file
(``connector/crm/mappings/*.yaml``: salesforce, hubspot, dynamics365, generic), a YAML file of
the user's, or a dict (run configuration). ``resolve_columns`` matches it against a file's
header (case- and whitespace-insensitive) and ``detect_mapping`` picks the built-in that fits a
header best (both in ``columns.py``). The YAML format::

    name: acme-crm                       # optional; defaults to the file name
    description: ACME CRM contact export # optional
    columns:
      email: [Email, E-mail]             # required: a header name or a list of accepted names
      name: Full Name                    # optional full-name column ...
      first_name: First Name             # ... or first + last, used when the full name is empty
      last_name: Last Name
    true_values: [true, "1", yes, y, opted out, unsubscribed]  # optional; replaces the default
    flags:                               # any entry reading true sets the flag
      do_not_email: [Do Not Email]       # an entry: a column name, a list of names, or a mapping
      unsubscribed:
        - column: Subscription
          true_values: [Unsubscribed, Opted Out]   # this column's own true values
      hard_bounced:
        - column: [Bounce Reason, Hard Bounce Reason]
          when: nonempty                 # any value but a blank or false-like one (0, no, n/a)
    category_opt_outs:                   # optional per-category opt-outs
      - column: "Opted out: Invoices"
        category: NTC-1234-5678
    required: [name]                     # optional; email is always required
    recognise: [Contact ID]              # optional; more columns that identify this export

Every scalar in a YAML mapping reads as a string (``yes`` stays ``"yes"``), so true values are
written as they appear in the export. Values are compared case- and whitespace-insensitively;
any other value, or an empty cell, reads false. The default true values are in
``DEFAULT_TRUE_VALUES`` (true, 1, yes, y, x, opted out, unsubscribed, do not allow, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from connector.crm.errors import CrmMappingError

BUILTIN_DIR = Path(__file__).with_name("mappings")
# Order matters: on an equal score the earlier one wins, and ``generic`` is the fallback.
BUILTIN_NAMES = ("salesforce", "hubspot", "dynamics365", "generic")
FLAG_NAMES = ("do_not_email", "unsubscribed", "hard_bounced")
# Written as exports spell them; compared after ``value_key`` (case and spacing folded).
# fmt: off
DEFAULT_TRUE_VALUES = frozenset({
    "true", "t", "1", "yes", "y", "x", "on", "checked", "opted out", "opt out", "opted-out",
    "unsubscribed", "do not allow", "do not email", "bounced", "hard bounce", "hard bounced",
})
# fmt: on
# Read as "not set" by a ``when: nonempty`` column, which otherwise counts any value.
FALSE_VALUES = frozenset({"", "false", "f", "0", "no", "n", "none", "null", "n/a", "-", "off"})
CATEGORY_ID = re.compile(r"NTC-\d{4}-\d{4}")

_TOP_KEYS = {
    "name",
    "description",
    "columns",
    "flags",
    "category_opt_outs",
    "true_values",
    "required",
    "recognise",
}
_COLUMN_KEYS = {"email", "name", "first_name", "last_name"}
_ENTRY_KEYS = {"column", "true_values", "when"}
_CATEGORY_KEYS = {"column", "category", "true_values", "when"}
_WHEN = {"true_values", "nonempty"}
_REQUIRABLE = {"email", "name"}


def header_key(label: str) -> str:
    """The form header names are compared in: trimmed, inner whitespace collapsed, case-folded."""
    return " ".join(label.replace("\ufeff", "").split()).casefold()


def value_key(value: str) -> str:
    """The form cell values are compared with true values in."""
    return " ".join(value.split()).casefold()


@dataclass(frozen=True)
class FlagColumn:
    """One column that can set a flag: accepted header names and how its values read."""

    names: tuple[str, ...]
    true_values: frozenset[str]
    nonempty: bool = False  # any non-empty value sets the flag (bounce reasons, dates)


@dataclass(frozen=True)
class CategoryColumn:
    """A column whose true value means the contact opted out of one platform category."""

    names: tuple[str, ...]
    category_id: str
    true_values: frozenset[str]
    nonempty: bool = False


@dataclass(frozen=True)
class CrmMapping:
    """A validated column mapping."""

    name: str
    source: str
    email: tuple[str, ...]
    full_name: tuple[str, ...] = ()
    first_name: tuple[str, ...] = ()
    last_name: tuple[str, ...] = ()
    do_not_email: tuple[FlagColumn, ...] = ()
    unsubscribed: tuple[FlagColumn, ...] = ()
    hard_bounced: tuple[FlagColumn, ...] = ()
    category_opt_outs: tuple[CategoryColumn, ...] = ()
    required: frozenset[str] = frozenset({"email"})
    recognise: tuple[str, ...] = ()
    description: str = ""
    true_values: frozenset[str] = DEFAULT_TRUE_VALUES

    def flags(self, flag: str) -> tuple[FlagColumn, ...]:
        """The columns of one flag (``do_not_email``, ``unsubscribed``, ``hard_bounced``)."""
        return getattr(self, flag)  # type: ignore[no-any-return]

    def known_columns(self) -> set[str]:
        """Every header name (as ``header_key``) this mapping knows, for auto-detection."""
        names: list[str] = [*self.email, *self.full_name, *self.first_name, *self.last_name]
        for flag in FLAG_NAMES:
            for column in self.flags(flag):
                names.extend(column.names)
        for category in self.category_opt_outs:
            names.extend(category.names)
        names.extend(self.recognise)
        return {header_key(n) for n in names}


# -- loading -------------------------------------------------------------------------------


class _StringLoader(yaml.SafeLoader):
    """Safe YAML with every scalar a string, so ``yes`` and ``1`` stay what the user typed."""


_StringLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag
        not in {
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        }
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_mapping(name_or_path: str | Path | CrmMapping | Mapping[str, Any]) -> CrmMapping:
    """A built-in mapping by name, a YAML mapping file by path, or a mapping given as a dict."""
    if isinstance(name_or_path, CrmMapping):
        return name_or_path
    if isinstance(name_or_path, Mapping):
        return mapping_from_dict(name_or_path)
    text = str(name_or_path)
    if text == "auto":
        raise CrmMappingError(
            "mapping 'auto' is chosen per file from its header: pass it to read_export"
        )
    if isinstance(name_or_path, str) and text in BUILTIN_NAMES:
        return _builtin(text)
    path = Path(text)
    if not path.suffix and not path.exists():
        raise CrmMappingError(
            f"unknown mapping {text!r}: use one of {', '.join(BUILTIN_NAMES)}, 'auto', "
            "or the path of a YAML mapping file"
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StringLoader)
    except OSError as exc:
        raise CrmMappingError(f"{path}: cannot read the mapping file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise CrmMappingError(f"{path}: not valid YAML ({exc})") from exc
    return mapping_from_dict(data, source=str(path), default_name=path.stem)


def mapping_from_dict(
    data: Any, source: str = "mapping", default_name: str = "custom"
) -> CrmMapping:
    """Validate a mapping given as a dict (parsed YAML or run configuration)."""
    return _Parser(source).mapping(data, default_name)


_BUILTINS: dict[str, CrmMapping] = {}


def _builtin(name: str) -> CrmMapping:
    if name not in _BUILTINS:
        path = BUILTIN_DIR / f"{name}.yaml"
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StringLoader)
        _BUILTINS[name] = mapping_from_dict(data, source=f"built-in:{name}", default_name=name)
    return _BUILTINS[name]


def builtin_mappings() -> list[CrmMapping]:
    """Every ready-made mapping, in auto-detection priority order."""
    return [_builtin(name) for name in BUILTIN_NAMES]


class _Parser:
    """Turns a parsed mapping document into a ``CrmMapping``, naming the key of any error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> CrmMappingError:
        return CrmMappingError(f"{self.source}: {key}: {problem}")

    def mapping(self, data: Any, default_name: str) -> CrmMapping:
        if not isinstance(data, Mapping):
            raise CrmMappingError(f"{self.source}: a mapping must be a YAML mapping of keys")
        self.check_keys(data, _TOP_KEYS, "")
        true_values = (
            self.values(data["true_values"], "true_values")
            if data.get("true_values") is not None
            else DEFAULT_TRUE_VALUES
        )
        columns = data.get("columns")
        if not isinstance(columns, Mapping):
            raise self.fail("columns", "required: a mapping with at least 'email'")
        self.check_keys(columns, _COLUMN_KEYS, "columns.")
        if columns.get("email") in (None, "", []):
            raise self.fail("columns.email", "required: the header name of the email column")
        flags = data.get("flags") or {}
        if not isinstance(flags, Mapping):
            raise self.fail("flags", "must be a mapping of flag name to columns")
        self.check_keys(flags, set(FLAG_NAMES), "flags.")
        parsed_flags = {
            flag: tuple(
                self.flag_entry(entry, f"flags.{flag}[{i}]", true_values)
                for i, entry in enumerate(self.as_list(flags.get(flag), f"flags.{flag}"))
            )
            for flag in FLAG_NAMES
        }
        categories = tuple(
            self.category(entry, f"category_opt_outs[{i}]", true_values)
            for i, entry in enumerate(
                self.as_list(data.get("category_opt_outs"), "category_opt_outs")
            )
        )
        required = set(self.names(data.get("required") or None, "required"))
        unknown = required - _REQUIRABLE
        if unknown:
            raise self.fail(
                "required", f"unknown field {sorted(unknown)[0]!r} (allowed: email, name)"
            )
        if "name" in required and not (
            columns.get("name") or columns.get("first_name") or columns.get("last_name")
        ):
            raise self.fail("required", "'name' is required but no name column is mapped")
        name = data.get("name") or default_name
        if not isinstance(name, str):
            raise self.fail("name", "must be a string")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise self.fail("description", "must be a string")
        return CrmMapping(
            name=name,
            source=self.source,
            email=self.names(columns["email"], "columns.email"),
            full_name=self.names(columns.get("name"), "columns.name"),
            first_name=self.names(columns.get("first_name"), "columns.first_name"),
            last_name=self.names(columns.get("last_name"), "columns.last_name"),
            do_not_email=parsed_flags["do_not_email"],
            unsubscribed=parsed_flags["unsubscribed"],
            hard_bounced=parsed_flags["hard_bounced"],
            category_opt_outs=categories,
            required=frozenset(required | {"email"}),
            recognise=self.names(data.get("recognise"), "recognise"),
            description=description,
            true_values=true_values,
        )

    def check_keys(self, data: Mapping[Any, Any], allowed: set[str], prefix: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(
                    f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )

    def as_list(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, list):
            return value
        if isinstance(value, (str, Mapping)):
            return [value]
        raise self.fail(key, "must be a list")

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        """Header names: a string or a list of non-empty strings."""
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.fail(key, "must be a column name or a non-empty list of column names")
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise self.fail(key, f"{item!r} is not a column name")
        return tuple(items)

    def values(self, value: Any, key: str) -> frozenset[str]:
        items = value if isinstance(value, list) else [value]
        out: set[str] = set()
        for item in items:
            if isinstance(item, bool):  # dict mappings from run config may hold real booleans
                item = "true" if item else "false"
            elif isinstance(item, (int, float)):
                item = str(item)
            if not isinstance(item, str) or not item.strip():
                raise self.fail(key, f"{item!r} is not a value")
            out.add(value_key(item))
        if not out:
            raise self.fail(key, "must list at least one value")
        return frozenset(out)

    def column_spec(
        self, entry: Any, key: str, allowed: set[str], true_values: frozenset[str]
    ) -> tuple[tuple[str, ...], frozenset[str], bool, Mapping[str, Any]]:
        if isinstance(entry, (str, list)):
            return self.names(entry, key), true_values, False, {}
        if not isinstance(entry, Mapping):
            raise self.fail(key, "must be a column name, a list of names or a mapping")
        self.check_keys(entry, allowed, f"{key}.")
        if entry.get("column") is None:
            raise self.fail(f"{key}.column", "required: the header name of the column")
        when = entry.get("when", "true_values")
        if when not in _WHEN:
            raise self.fail(f"{key}.when", f"{when!r} is not one of {', '.join(sorted(_WHEN))}")
        if when == "nonempty" and entry.get("true_values") is not None:
            raise self.fail(f"{key}.true_values", "not used with 'when: nonempty'")
        own = (
            self.values(entry["true_values"], f"{key}.true_values")
            if entry.get("true_values") is not None
            else true_values
        )
        return self.names(entry["column"], f"{key}.column"), own, when == "nonempty", entry

    def flag_entry(self, entry: Any, key: str, true_values: frozenset[str]) -> FlagColumn:
        names, values, nonempty, _ = self.column_spec(entry, key, _ENTRY_KEYS, true_values)
        return FlagColumn(names, values, nonempty)

    def category(self, entry: Any, key: str, true_values: frozenset[str]) -> CategoryColumn:
        if not isinstance(entry, Mapping):
            raise self.fail(key, "must be a mapping with 'column' and 'category'")
        names, values, nonempty, _ = self.column_spec(entry, key, _CATEGORY_KEYS, true_values)
        category = entry.get("category")
        if not isinstance(category, str) or not CATEGORY_ID.fullmatch(category.strip()):
            raise self.fail(f"{key}.category", f"{category!r} is not a category id (NTC-####-####)")
        return CategoryColumn(names, category.strip(), values, nonempty)
