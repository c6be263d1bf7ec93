"""Recursive-descent parser of one decoded RQL filter, compiled as it is read.

The grammar, as the platform's engine reads it:

- ``a|b`` and ``a;b`` mean *or*; ``a&b`` and ``a,b`` mean *and*, and bind tighter than *or*;
  bare ``( ... )`` groups. Inside an operator's parentheses ``,`` separates its arguments.
- ``op(...)`` with ``op`` in eq ne gt ge lt le like ilike in out and or not any all, in any
  case; ``field=value`` is short for ``eq(field,value)``.
- A value is bare or in single or double quotes. There are no escapes: a quoted value ends at
  the next quote of the same kind; a backslash is an ordinary character (``like``/``ilike``
  give ``\\*`` a meaning, at the very start or end of a pattern only).
- Whitespace outside quotes is an error (the real API would take it as part of a value).
"""

from __future__ import annotations

from sandbox.marketplace.rql.errors import RqlSyntaxError
from sandbox.marketplace.rql.fields import PATH_RE, FieldSet
from sandbox.marketplace.rql.predicates import (
    Predicate,
    all_of,
    any_of,
    compile_comparison,
    compile_in,
    compile_like,
    compile_quantifier,
    negate,
)
from sandbox.marketplace.rql.values import Constant, Literal, Value

# Deep enough for any real filter, shallow enough that neither the parser nor the compiled
# closures get near Python's recursion limit.
MAX_DEPTH = 64

COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
OPERATORS = COMPARISONS | {"like", "ilike", "in", "out", "and", "or", "not", "any", "all"}
CONSTANTS = frozenset({"null", "empty"})
_OR = "|;"
_WORD_END = frozenset("(),=\"'&|;")

Parsed = tuple[str, Predicate]  # canonical text, compiled predicate


class Parser:
    """Parses one filter; ``parse()`` gives its canonical text and predicate."""

    def __init__(self, text: str, fields: FieldSet) -> None:
        self.text = text
        self.pos = 0
        self.fields = fields
        self.top_paths: list[str] = []

    # ---- errors

    def _where(self, position: int) -> str:
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        return f"at character {position + 1} of {shown!r}"

    def _found(self, position: int) -> str:
        if position >= len(self.text):
            return "the end of the expression"
        ch = self.text[position]
        if ch.isspace():
            return "whitespace (quote values that contain spaces)"
        return repr(ch)

    def error(self, message: str, position: int | None = None, field: str | None = None) -> None:
        position = self.pos if position is None else position
        raise RqlSyntaxError(f"{message} {self._where(position)}", position=position, field=field)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str, context: str) -> None:
        if self.peek() == ch:
            self.pos += 1
            return
        if ch == ")" and self.pos >= len(self.text):
            self.error(f"unbalanced parentheses: missing ')' to close {context}")
        self.error(f"expected {ch!r} in {context} but found {self._found(self.pos)}")

    # ---- grammar

    def parse(self) -> Parsed:
        result = self.disjunction(self.fields, 0, top=True, in_args=False)
        if self.pos < len(self.text):
            if self.text[self.pos] == ")":
                self.error("unbalanced parentheses: unexpected ')'")
            self.error(f"unexpected {self._found(self.pos)} after the end of the expression")
        return result

    def disjunction(self, fields: FieldSet, depth: int, *, top: bool, in_args: bool) -> Parsed:
        parts = [self.conjunction(fields, depth, top=top, in_args=in_args)]
        while self.peek() and self.peek() in _OR:
            self.pos += 1
            parts.append(self.conjunction(fields, depth, top=top, in_args=in_args))
        return _combine("or", parts)

    def conjunction(self, fields: FieldSet, depth: int, *, top: bool, in_args: bool) -> Parsed:
        # Inside an operator's parentheses a comma separates arguments, not conditions.
        ands = "&" if in_args else "&,"
        parts = [self.term(fields, depth, top=top)]
        while self.peek() and self.peek() in ands:
            self.pos += 1
            parts.append(self.term(fields, depth, top=top))
        return _combine("and", parts)

    def term(self, fields: FieldSet, depth: int, *, top: bool) -> Parsed:
        if depth >= MAX_DEPTH:
            self.error(f"expression nested more than {MAX_DEPTH} levels deep")
        if self.peek() == "(":
            start = self.pos
            self.pos += 1
            inner = self.disjunction(fields, depth + 1, top=top, in_args=False)
            self.expect(")", f"the group opened at character {start + 1}")
            return inner
        return self.operation(fields, depth, top=top)

    def word(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] not in _WORD_END:
            if text[self.pos].isspace():
                break
            self.pos += 1
        return text[start : self.pos]

    def path(self, fields: FieldSet, context: str, top: bool) -> str:
        start = self.pos
        path = self.word()
        if not path:
            self.error(f"expected a field name in {context} but found {self._found(start)}", start)
        if not PATH_RE.fullmatch(path):
            self.error(f"{path!r} is not a field name", start, field=path)
        if fields.kind(path) is None:
            self.error(f"unknown field {path!r}", start, field=path)
        if top:
            self.top_paths.append(path)
        return path

    def require_value_field(self, fields: FieldSet, path: str, op: str, start: int) -> None:
        kind = fields.kind(path)
        if kind != "value":
            self.error(
                f"{op}() compares values but {path!r} is {'an' if kind == 'object' else 'a'} "
                f"{kind}; only eq/ne with null() or empty() apply to it",
                start,
                field=path,
            )

    def arguments(self, fields: FieldSet, depth: int, top: bool, context: str) -> list[Parsed]:
        parts = [self.disjunction(fields, depth + 1, top=top, in_args=True)]
        while self.peek() == ",":
            self.pos += 1
            parts.append(self.disjunction(fields, depth + 1, top=top, in_args=True))
        self.expect(")", context)
        return parts

    def operation(self, fields: FieldSet, depth: int, *, top: bool) -> Parsed:
        start = self.pos
        name = self.word()
        if not name:
            self.error(
                f"expected an expression like eq(field,value) but found {self._found(start)}",
                start,
            )
        nxt = self.peek()
        if nxt == "=":
            # The shortcut ``field=value`` is an expression anywhere, as in the real parser.
            self.pos = start
            path = self.path(fields, "field=value", top)
            self.pos += 1
            value = self.value("field=value")
            if isinstance(value, Literal):
                self.require_value_field(fields, path, "eq", start)
            return f"eq({path},{value.canonical()})", compile_comparison("eq", path, value)
        if nxt != "(":
            self.error(f"expected an expression like eq(field,value) but found {name!r}", start)
        op = name.lower()
        if op not in OPERATORS:
            if op in CONSTANTS:
                self.error(f"{op}() is a value, not a condition", start)
            self.error(f"unknown operator {name!r}", start)
        self.pos += 1
        context = f"{op}() opened at character {start + 1}"

        if op in COMPARISONS or op in ("like", "ilike"):
            path = self.path(fields, context, top)
            self.expect(",", context)
            value = self.value(context)
            self.expect(")", context)
            text = f"{op}({path},{value.canonical()})"
            if not isinstance(value, Constant) or op not in ("eq", "ne"):
                self.require_value_field(fields, path, op, start)
            if op in ("like", "ilike"):
                if isinstance(value, Constant):
                    self.error(f"{op}() needs a pattern, not {value.name}()", start)
                assert isinstance(value, Literal)
                return text, compile_like(path, value, case_insensitive=op == "ilike")
            if op not in ("eq", "ne") and isinstance(value, Constant):
                self.error(f"{op}() needs a value to compare with, not {value.name}()", start)
            return text, compile_comparison(op, path, value)

        if op in ("in", "out"):
            path = self.path(fields, context, top)
            self.require_value_field(fields, path, op, start)
            self.expect(",", context)
            values = self.value_list(op)
            self.expect(")", context)
            text = f"{op}({path},({','.join(v.canonical() for v in values)}))"
            return text, compile_in(path, values, op == "out")

        if op in ("and", "or"):
            return _combine(op, self.arguments(fields, depth, top, context))

        if op == "not":
            inner_text, inner = self.disjunction(fields, depth + 1, top=top, in_args=True)
            if self.peek() == ",":
                self.error("not() takes exactly one condition")
            self.expect(")", context)
            return f"not({inner_text})", negate(inner)

        # any / all: the condition's paths are relative to one element of the collection.
        path_start = self.pos
        path = self.path(fields, context, top)
        if fields.kind(path) != "collection":
            self.error(f"{op}() needs a collection field; {path!r} is not one", path_start, path)
        self.expect(",", context)
        inner_text, inner = self.disjunction(
            fields.element(path), depth + 1, top=False, in_args=True
        )
        self.expect(")", context)
        return f"{op}({path},{inner_text})", compile_quantifier(op, path, inner)

    def value_list(self, op: str) -> list[Value]:
        if self.peek() != "(":
            self.error(
                f"{op}() needs a list in parentheses, like {op}(field,(a,b)),"
                f" but found {self._found(self.pos)}"
            )
        list_start = self.pos
        self.pos += 1
        values: list[Value] = []
        if self.peek() == ")":
            self.pos += 1
            return values
        list_context = f"the list opened at character {list_start + 1}"
        while True:
            values.append(self.value(list_context))
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect(")", list_context)
            return values

    def value(self, context: str) -> Value:
        text = self.text
        start = self.pos
        if self.peek() in ("'", '"'):
            return self.quoted()
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in "(),=&|;" or ch.isspace():
                break
            if ch in "\"'":
                self.error("a quote inside an unquoted value; quote the whole value")
            self.pos += 1
        if self.pos == start:
            self.error(f"expected a value in {context} but found {self._found(start)}")
        word = text[start : self.pos]
        if self.peek() == "(":
            constant = word.lower()
            if constant not in CONSTANTS:
                self.error(
                    f"expected a value in {context} but found the operator {word!r}; "
                    "only null() and empty() may stand for a value",
                    start,
                )
            self.pos += 1
            self.expect(")", f"{constant}()")
            return Constant(constant)
        return Literal(word)

    def quoted(self) -> Literal:
        text = self.text
        quote = text[self.pos]
        start = self.pos
        end = text.find(quote, start + 1)
        if end < 0:
            self.error(f"unterminated string: the {quote} opened here is never closed", start)
        self.pos = end + 1
        return Literal(text[start + 1 : end])


def _combine(op: str, parts: list[Parsed]) -> Parsed:
    if len(parts) == 1:
        return parts[0]
    predicates = [p for _, p in parts]
    text = f"{op}({','.join(t for t, _ in parts)})"
    return text, all_of(predicates) if op == "and" else any_of(predicates)
