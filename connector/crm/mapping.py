"""Column mappings: which export columns hold the email, the name and the opt-out flags.

A mapping is a ``CrmMapping`` validated on load by a typed model (``MappingFile``, pydantic),
from a built-in YAML file (``connector/crm/mappings/*.yaml``: salesforce, hubspot, dynamics365,
generic), a YAML file of the user's, or a dict (run configuration). An invalid mapping raises
``CrmMappingError`` naming the file, the field and what is allowed. ``resolve_columns``
matches a mapping against a file's header (case- and whitespace-insensitive) and
``detect_mapping`` picks the built-in that fits a header best (both in ``columns.py``). The
YAML format::

    name: acme-crm                       # optional; defaults to the file name
    description: ACME CRM contact export # optional
    columns:
      email: [Email, E-mail]             # required: a header name or a list of accepted names
      name: Full Name                    # optional full-name column ...
      first_name: First Name             # ... or first + last, used when the full name is empty
      last_name: Last Name
    true_values: [true, "1", yes]        # optional; replaces DEFAULT_TRUE_VALUES
    false_values: [false, "0", no]       # optional; replaces DEFAULT_FALSE_VALUES
    flags:                               # any entry reading true sets the flag
      do_not_email: [Do Not Email]       # an entry: a column name, a list of names, or a mapping
      unsubscribed:
        - column: Subscription
          true_values: [Unsubscribed, Opted Out]   # this column's own true values ...
          false_values: [Subscribed]               # ... and false values
      hard_bounced:
        - column: [Bounce Reason, Hard Bounce Reason]
          when: nonempty                 # any value but a blank or "no value" one (0, no, n/a)
    category_opt_outs:                   # optional per-category opt-outs
      - column: "Opted out: Invoices"
        category: NTC-1234-5678
    required: [name]                     # optional; email is always required
    recognise: [Contact ID]              # optional; more columns that identify this export

Every scalar in a YAML mapping reads as a string (``yes`` stays ``"yes"``), so values are
written as they appear in the export. Values are compared case- and whitespace-insensitively.
Fail closed: a flag cell is read true only for a true value and false only for a false value
or an empty cell; any other value (``Ja``, ``✓``, ``-``) makes the row rejected, naming the
column and the value, since guessing would email someone who asked not to be. A ``nonempty``
column reads any text as set, except the "no value" words in ``NONEMPTY_FALSE_VALUES``; a cell
of punctuation only (``-``, ``?``) is rejected too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
# The opposites of the true values above. "-" is not one: no preset's CRM documents it, and a
# dash in an opt-out column is as likely "not asked" as "no"; such a row is rejected.
DEFAULT_FALSE_VALUES = frozenset({
    "false", "f", "0", "no", "n", "off", "unchecked", "opted in", "subscribed", "allow",
})
# fmt: on
# Read as "not set" by a ``when: nonempty`` column, which otherwise counts any value.
NONEMPTY_FALSE_VALUES = frozenset({"false", "f", "0", "no", "n", "none", "null", "n/a", "off"})
CATEGORY_ID = re.compile(r"NTC-\d{4}-\d{4}")


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
    false_values: frozenset[str] = DEFAULT_FALSE_VALUES


@dataclass(frozen=True)
class CategoryColumn:
    """A column whose true value means the contact opted out of one platform category."""

    names: tuple[str, ...]
    category_id: str
    true_values: frozenset[str]
    nonempty: bool = False
    false_values: frozenset[str] = DEFAULT_FALSE_VALUES


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
    false_values: frozenset[str] = DEFAULT_FALSE_VALUES

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


# -- the typed model of a mapping file ---------------------------------------------------------


def _names(value: Any) -> Any:
    """A header name or a list of them, as a list; anything else is left for the type check."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        if not value:
            raise PydanticCustomError("names", "must name at least one column")
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise PydanticCustomError(
                    "names", "{item} is not a column name", {"item": repr(item)}
                )
    return value


def _optional_names(value: Any) -> Any:
    """As ``_names``, and nothing (a blank YAML key) is no column."""
    return [] if value is None or value == [] else _names(value)


def _values(value: Any) -> Any:
    """Cell values (strings, or booleans and numbers from run config) as ``value_key`` forms."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, (int, float)):
            item = str(item)
        if not isinstance(item, str) or not item.strip():
            raise PydanticCustomError("values", "{item} is not a value", {"item": repr(item)})
        out.append(value_key(item))
    if not out:
        raise PydanticCustomError("values", "must list at least one value")
    return out


def _listed(value: Any) -> Any:
    """One entry or a list of entries, as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _as_entry(value: Any) -> Any:
    """A bare column name or list of names is an entry with only ``column``."""
    return {"column": value} if isinstance(value, (str, list)) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
OptionalNames = Annotated[tuple[str, ...], BeforeValidator(_optional_names)]
Values = Annotated[frozenset[str], BeforeValidator(_values)]


class _Model(BaseModel):
    """Unknown keys are errors that list the allowed ones; models are immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = sorted(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key (allowed: {allowed})",
                        {"key": str(key), "allowed": ", ".join(allowed)},
                    )
        return data


class ColumnsModel(_Model):
    """``columns:`` which header holds the email and the name."""

    email: Names
    name: OptionalNames = ()
    first_name: OptionalNames = ()
    last_name: OptionalNames = ()


class FlagEntryModel(_Model):
    """One entry under ``flags.<flag>``: a column and how its values read."""

    column: Names
    true_values: Values | None = None
    false_values: Values | None = None
    when: Literal["true_values", "nonempty"] = "true_values"

    @model_validator(mode="after")
    def _consistent(self) -> FlagEntryModel:
        if self.when == "nonempty" and self.true_values is not None:
            raise PydanticCustomError(
                "when", "not used with 'when: nonempty'", {"key": "true_values"}
            )
        _disjoint(self.true_values, self.false_values)
        return self


class CategoryEntryModel(FlagEntryModel):
    """One entry under ``category_opt_outs``: a column and the category it opts out of."""

    category: str

    @field_validator("category")
    @classmethod
    def _category_id(cls, value: str) -> str:
        if not CATEGORY_ID.fullmatch(value.strip()):
            raise PydanticCustomError(
                "category", "{value} is not a category id (NTC-####-####)", {"value": repr(value)}
            )
        return value.strip()


FlagEntries = Annotated[
    tuple[Annotated[FlagEntryModel, BeforeValidator(_as_entry)], ...], BeforeValidator(_listed)
]


class FlagsModel(_Model):
    """``flags:`` the columns of each flag."""

    do_not_email: FlagEntries = ()
    unsubscribed: FlagEntries = ()
    hard_bounced: FlagEntries = ()


class MappingFile(_Model):
    """A mapping document as written in YAML or given as run config."""

    name: str | None = None
    description: str | None = None
    columns: ColumnsModel
    true_values: Values | None = None
    false_values: Values | None = None
    flags: Annotated[FlagsModel, BeforeValidator(lambda v: {} if v is None else v)] = FlagsModel()
    category_opt_outs: Annotated[tuple[CategoryEntryModel, ...], BeforeValidator(_listed)] = ()
    required: Annotated[tuple[Literal["email", "name"], ...], BeforeValidator(_listed)] = ()
    recognise: OptionalNames = ()

    @model_validator(mode="after")
    def _consistent(self) -> MappingFile:
        _disjoint(self.true_values, self.false_values)
        columns = self.columns
        if "name" in self.required and not (
            columns.name or columns.first_name or columns.last_name
        ):
            raise PydanticCustomError(
                "name_required",
                "'name' is required but no name column is mapped",
                {"key": "required"},
            )
        return self

    def to_mapping(self, source: str, default_name: str) -> CrmMapping:
        """The ``CrmMapping`` the readers use, defaults filled in."""
        true_values = self.true_values if self.true_values is not None else DEFAULT_TRUE_VALUES
        false_values = _false_values(true_values, self.false_values, DEFAULT_FALSE_VALUES)

        def column(entry: FlagEntryModel) -> tuple[tuple[str, ...], frozenset[str], bool, Any]:
            nonempty = entry.when == "nonempty"
            if nonempty:
                own_false = entry.false_values or NONEMPTY_FALSE_VALUES
                return entry.column, frozenset(), True, own_false
            own_true = entry.true_values if entry.true_values is not None else true_values
            own_false = _false_values(own_true, entry.false_values, false_values)
            return entry.column, own_true, False, own_false

        flags = {
            flag: tuple(FlagColumn(*column(e)) for e in getattr(self.flags, flag))
            for flag in FLAG_NAMES
        }
        categories = []
        for entry in self.category_opt_outs:
            names, values, nonempty, false = column(entry)
            categories.append(CategoryColumn(names, entry.category, values, nonempty, false))
        return CrmMapping(
            name=self.name or default_name,
            source=source,
            email=self.columns.email,
            full_name=self.columns.name,
            first_name=self.columns.first_name,
            last_name=self.columns.last_name,
            do_not_email=flags["do_not_email"],
            unsubscribed=flags["unsubscribed"],
            hard_bounced=flags["hard_bounced"],
            category_opt_outs=tuple(categories),
            required=frozenset({*self.required, "email"}),
            recognise=self.recognise,
            description=self.description or "",
            true_values=true_values,
            false_values=false_values,
        )


def _disjoint(true_values: frozenset[str] | None, false_values: frozenset[str] | None) -> None:
    both = sorted((true_values or frozenset()) & (false_values or frozenset()))
    if both:
        raise PydanticCustomError(
            "values",
            "{value} is listed both as a true and as a false value",
            {"value": repr(both[0]), "key": "false_values"},
        )


def _false_values(
    true_values: frozenset[str], own: frozenset[str] | None, default: frozenset[str]
) -> frozenset[str]:
    # A default false value a mapping lists as true (an inverted "0") reads true.
    return own if own is not None else default - true_values


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
    return mapping_from_dict(read_mapping_file(path), source=str(path), default_name=path.stem)


def read_mapping_file(path: Path) -> Any:
    """A mapping file's YAML document, every scalar a string; ``CrmMappingError`` if unreadable."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StringLoader)
    except OSError as exc:
        raise CrmMappingError(f"{path}: cannot read the mapping file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise CrmMappingError(f"{path}: not valid YAML ({exc})") from exc


def mapping_from_dict(
    data: Any, source: str = "mapping", default_name: str = "custom"
) -> CrmMapping:
    """Validate a mapping given as a dict (parsed YAML or run configuration)."""
    if not isinstance(data, Mapping):
        raise CrmMappingError(f"{source}: a mapping must be a YAML mapping of keys")
    try:
        model = MappingFile.model_validate(data)
    except ValidationError as exc:
        raise CrmMappingError(_describe(source, exc)) from None
    return model.to_mapping(source, default_name)


def _describe(source: str, exc: ValidationError) -> str:
    """``<file>: <field>: <problem>`` for the first error, then how many more there are."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    ctx = first.get("ctx", {})
    where = _location(first["loc"], ctx.get("key"))
    if first["type"] == "missing":
        problem = "required"
    elif first["type"] == "literal_error":
        problem = f"{first['input']!r} is not allowed (allowed: {ctx['expected']})"
    else:
        problem = first["msg"]
    text = f"{source}: {where}: {problem}" if where else f"{source}: {problem}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return text


def _location(loc: tuple[int | str, ...], key: str | None) -> str:
    parts = [*loc, key] if key is not None else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"tuple[...]"}:
            continue  # pydantic's name for a validator step, not a key the user wrote
        else:
            out += f".{part}" if out else part
    return out


_BUILTINS: dict[str, CrmMapping] = {}


def _builtin(name: str) -> CrmMapping:
    if name not in _BUILTINS:
        data = read_mapping_file(BUILTIN_DIR / f"{name}.yaml")
        _BUILTINS[name] = mapping_from_dict(data, source=f"built-in:{name}", default_name=name)
    return _BUILTINS[name]


def builtin_mappings() -> list[CrmMapping]:
    """Every ready-made mapping, in auto-detection priority order."""
    return [_builtin(name) for name in BUILTIN_NAMES]
