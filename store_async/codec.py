"""JSON on the wire <-> records: one cattrs converter, built once at import, backed by orjson.

- ``dumps(record) -> bytes``: the request body, camelCase, absent optional fields omitted (never
  ``null``). :class:`~store_async.models.ConsumeRequest` takes a hand-written fast path: it is
  serialized once per consume call.
- ``loads(body, cls)`` / ``structure(data, cls)``: a response body into a record. Field names are
  matched case-insensitively (the docs write ``createdtime`` and ``createdTime``, ``Title`` and
  ``title``, ``identitytype``), unknown fields are ignored, JSON types are checked strictly.
  *Any* failure raises :class:`~store_async.errors.ResponseFormatError` naming the field
  (``$.orderLineItems[0].listPrice: expected a number, got string``), never echoing the body.
- ``converter`` is the cattrs converter itself, for records inside your own types.

Values:

- **Money** is :class:`~decimal.Decimal`. orjson reads ``0.99`` as the nearest binary float and
  cannot hand back the original text; the shortest ``repr`` of that float *is* the original text
  for any amount written with at most 15 significant digits (``sys.float_info.dig``), so
  ``Decimal(repr(value))`` restores ``Decimal("0.99")`` exactly. Amounts sent as strings are read
  digit for digit. Written back as JSON numbers (as strings only if a float cannot carry them).
- **Date-times** are timezone-aware. ISO-8601 with 7 fractional digits (cut to microseconds), 6,
  none, ``Z`` or an offset; MS-AJAX ``/Date(ms)/`` and ``/Date(ms+hhmm)/`` (the query example);
  a time without offset is taken as UTC. Written as ISO-8601 with an offset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Any, Final, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import attrs
import orjson
from cattrs import ClassValidationError, IterableValidationError
from cattrs.errors import IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter, make_converter

from store_async import models
from store_async.errors import ResponseFormatError, ValidationError
from store_async.models import ConsumeRequest, GrantRequest, UserIdentity, _checks
from store_async.models.refunds import RefundEventState, refund_event_state

__all__ = ["RECORDS", "converter", "dumps", "loads", "structure", "wire_name"]

T = TypeVar("T")

RECORDS: Final[tuple[type, ...]] = tuple(
    record
    for record in vars(models).values()
    if isinstance(record, type)
    and attrs.has(record)
    and record.__module__ != "store_async.models.refunds"
)
"""The Store services' records of :mod:`store_async.models` (v8 and the service error bodies
included; the refund queue's events are not a Store body). Derived, not kept by hand: the
converter handles *any* attrs class through hook factories, so a new record needs no
registration here."""

# -- the special cases, all in one place (everything else follows from the attrs fields) --

_RENAMES: Final = {
    "is_pi_required": "isPIRequired",
    "total_charged_to_csv_top_off_pi": "totalChargedToCsvTopOffPI",
    "inner_error": "innererror",
    "sandbox_id": "sbx",
}
"""Wire names that are not the plain camelCase of the attribute name."""
_OMITTED_DEFAULTS: Final[frozenset[tuple[type, str]]] = frozenset(
    # GrantRequest.quantity can only be 1 (the default) and the documented body leaves it out.
    {(GrantRequest, "quantity")}
)
"""(record, attribute) pairs left out of a body when they hold their default (besides every
field whose default is ``None``: absent means omitted, never ``null``)."""
# The generators take per-attribute overrides as **kwargs next to their own flags, which mypy
# cannot type; they are called through these untyped names.
_structure_fn: Final[Callable[..., Any]] = make_dict_structure_fn
_unstructure_fn: Final[Callable[..., Any]] = make_dict_unstructure_fn
_MAX_VALUE_CHARS: Final = 64  # longer than any date-time or amount the services send
_MAX_PROBLEMS: Final = 5  # problems listed in one error message
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS_AJAX: Final = re.compile(r"\\?/Date\((-?\d{1,16})(?:([+-])(\d\d)(\d\d))?\)\\?/\Z")


def field_wire_name(field: attrs.Attribute[Any]) -> str:
    """A field's JSON name: its ``wire`` metadata when the record sets one (a name that the
    general renames would get wrong, e.g. an event's ``sandboxId``), else :func:`wire_name`."""
    wire = field.metadata.get("wire")
    return wire if isinstance(wire, str) else wire_name(field.name)


def wire_name(attribute: str) -> str:
    """The JSON name of a record attribute: ``order_line_items`` -> ``orderLineItems``."""
    if attribute in _RENAMES:
        return _RENAMES[attribute]
    head, *rest = attribute.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _kind(value: Any) -> str:
    """The JSON type of a parsed value, for messages that must not echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string" if len(value) <= _MAX_VALUE_CHARS else f"a {len(value)}-character string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: str) -> str:
    """A short quote of a non-secret value (a date-time, an amount) for an error message."""
    return repr(value) if len(value) <= _MAX_VALUE_CHARS else f"a {len(value)}-character string"


# -- strict scalars: JSON types are checked, never coerced (cattrs' defaults call str()/int()) --


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {_kind(value)}")


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        return value
    raise TypeError(f"expected an integer, got {_kind(value)}")


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise TypeError(f"expected true or false, got {_kind(value)}")


def _structure_decimal(value: Any, _: Any) -> Decimal:
    if type(value) is float:
        if value == value and value not in (float("inf"), float("-inf")):
            return Decimal(repr(value))
    elif type(value) is int:
        return Decimal(value)
    elif type(value) is str:
        if len(value) <= _MAX_VALUE_CHARS:
            try:
                amount = Decimal(value)
            except InvalidOperation:
                pass
            else:
                if amount.is_finite():
                    return amount
        raise ValueError(f"expected an amount, got {_show(value)}")
    elif type(value) is Decimal and value.is_finite():
        return value
    raise TypeError(f"expected a number, got {_kind(value)}")


def _unstructure_decimal(value: Decimal) -> float | str:
    number = float(value)
    # A float carries any amount of up to 15 significant digits exactly; anything else is sent
    # as a string rather than silently rounded.
    return number if Decimal(repr(number)) == value else str(value)


def parse_datetime(text: str) -> datetime:
    """Read a service date-time (ISO-8601 or MS-AJAX ``/Date(ms)/``) as an aware datetime."""
    if "Date(" in text:
        match = _MS_AJAX.match(text)
        if match is None:
            raise ValueError(f"expected a /Date(milliseconds)/ date-time, got {_show(text)}")
        milliseconds, sign, hours, minutes = match.groups()
        when = _EPOCH + timedelta(milliseconds=int(milliseconds))
        if sign:
            offset = timedelta(hours=int(hours), minutes=int(minutes))
            when = when.astimezone(timezone(-offset if sign == "-" else offset))
        return when
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _structure_datetime(value: Any, _: Any) -> datetime:
    if type(value) is str and len(value) <= _MAX_VALUE_CHARS:
        try:
            return parse_datetime(value)
        except (ValueError, OverflowError):
            raise ValueError(f"expected an ISO-8601 date-time, got {_show(value)}") from None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    raise TypeError(f"expected a date-time string, got {_kind(value)}")


def _unstructure_datetime(value: datetime) -> str:
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).isoformat()


def _is_tuple_of(type_: Any) -> bool:
    args = get_args(type_)
    return get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_of_factory(type_: Any) -> Callable[[Any, Any], tuple[Any, ...]]:
    """Structure ``tuple[X, ...]`` from a JSON array only (cattrs would split a string into
    letters); ``null`` reads as empty, like a missing list."""
    element = get_args(type_)[0]
    if element is Any:

        def structure_any(value: Any, _: Any) -> tuple[Any, ...]:
            if type(value) is list or type(value) is tuple:
                return tuple(value)
            if value is None:
                return ()
            raise TypeError(f"expected an array, got {_kind(value)}")

        return structure_any

    hook = converter.get_structure_hook(element)

    def structure_tuple(value: Any, _: Any) -> tuple[Any, ...]:
        if type(value) is not list and type(value) is not tuple:
            if value is None:
                return ()
            raise TypeError(f"expected an array, got {_kind(value)}")
        try:
            return tuple([hook(item, element) for item in value])
        except Exception:
            pass
        problems = []
        for index, item in enumerate(value):
            try:
                hook(item, element)
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ index {index}", index, element))
                problems.append(exc)
        raise IterableValidationError(f"While structuring {type_!r}", problems, type_)

    return structure_tuple


# -- records: a generated structuring function per class (exact wire names first, any casing
#    second), None-omitting unstructuring; hook factories on attrs.has, so any record works --

_MISSING: Final = object()
_DATES: Final[dict[str, datetime]] = {}
_DATE_CACHE_SIZE: Final = 4096
_fromisoformat: Final = datetime.fromisoformat
_SCAFFOLDS: Final[dict[type, type | None]] = {}
_ENTRIES: Final[dict[type, Callable[[Any], Any]]] = {}
"""Per record class, its generated structuring function (built on first use)."""


def _date(value: Any) -> datetime:
    """:func:`_structure_datetime` for a value not in the cache, remembering the result: a
    page repeats its date-times (``endDate`` 9999-12-31, ``startDate`` = ``acquiredDate``),
    and each is parsed once. The Store's usual ISO-8601 text takes the short way."""
    if type(value) is not str:
        return _structure_datetime(value, None)
    if len(value) > _MAX_VALUE_CHARS or "Date(" in value:
        when = _structure_datetime(value, None)  # MS-AJAX, or the codec's error
    else:
        try:
            when = _fromisoformat(value)
        except (ValueError, OverflowError):
            return _structure_datetime(value, None)  # raises the codec's error
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    if len(_DATES) >= _DATE_CACHE_SIZE:
        _DATES.clear()  # bounded; datetimes are immutable, so sharing them is safe
    _DATES[value] = when
    return when


def _lower(value: dict[Any, Any]) -> dict[str, Any]:
    """``value`` with its keys lowercased (a later spelling of one name wins, as in JSON)."""
    try:
        return {key.lower(): item for key, item in value.items()}
    except AttributeError:  # a non-string key: only possible for data not from JSON
        return {key.lower(): item for key, item in value.items() if type(key) is str}


class _Source:
    """Python source of one record's structuring function, and the names it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"_MISSING": _MISSING, "_date": _date, "_dates": _DATES.get}

    def name(self, value: Any) -> str:
        """A name for ``value`` in the generated function's globals."""
        for known, bound in self.names.items():
            if bound is value:
                return known
        name = f"_n{len(self.names)}"
        self.names[name] = value
        return name


_EXACT_TYPES: Final = (str, int, bool)


def _element(type_: Any, source: _Source) -> str | None:
    """An expression template (``{}`` = the value) that structures one ``type_``, or None for
    the types checked by ``type(x) is`` (str, int, bool) or taken as they are (Any)."""
    if type_ in _EXACT_TYPES or type_ is Any:
        return None
    if type_ is datetime:
        return "(_dates({}) or _date({}))"  # a cache hit costs one dict lookup
    if isinstance(type_, type) and attrs.has(type_):
        return source.name(_entry(type_)) + "({})"
    # Decimal, and anything a future record may use: the converter's own hook, bound once.
    hook = converter.get_structure_hook(type_)
    return f"{source.name(hook)}({{}}, {source.name(type_)})"


def _convert(type_: Any, variable: str, indent: str, source: _Source) -> None:
    """Lines that check and convert ``variable`` (a JSON value) to ``type_`` in place; any
    problem raises, and the caller then asks cattrs to explain it."""
    add = source.lines.append
    if _is_optional(type_):
        inner = get_args(type_)[0]
        if inner in _EXACT_TYPES:
            checked = source.name(inner)
            add(f"{indent}if {variable} is not None and type({variable}) is not {checked}:")
            add(f"{indent}    raise TypeError")
            return
        add(f"{indent}if {variable} is not None:")
        before = len(source.lines)
        _convert(get_args(type_)[0], variable, indent + "    ", source)
        if len(source.lines) == before:
            add(f"{indent}    pass")
        return
    if _is_tuple_of(type_):
        element = get_args(type_)[0]
        add(f"{indent}if type({variable}) is list or type({variable}) is tuple:")
        template = _element(element, source)
        if template is not None:
            add(
                f"{indent}    {variable} = tuple([{template.format('x', 'x')} for x in {variable}])"
            )
        else:
            if element is not Any:
                checked = source.name(element)
                add(f"{indent}    for x in {variable}:")
                add(f"{indent}        if type(x) is not {checked}:")
                add(f"{indent}            raise TypeError")
            add(f"{indent}    {variable} = tuple({variable})")
        add(f"{indent}elif {variable} is None:")
        add(f"{indent}    {variable} = ()")
        add(f"{indent}else:")
        add(f"{indent}    raise TypeError")
        return
    if type_ in _EXACT_TYPES:
        add(f"{indent}if type({variable}) is not {source.name(type_)}:")
        add(f"{indent}    raise TypeError")
        return
    if isinstance(type_, type) and _inline(type_, variable, indent, source):
        return
    template = _element(type_, source)
    if template is not None:
        add(f"{indent}{variable} = {template.format(variable, variable)}")


def _inline(cls: type, variable: str, indent: str, source: _Source) -> bool:
    """Lines that build a small record (required str/int/bool fields only, built on its
    scaffold, such as a purchaser's IdentityV6) in place, sparing a call: an object holding
    exactly its names as sent is built here, anything else goes to the record's own function.
    False, and nothing written, for any other type."""
    if not attrs.has(cls):
        return False
    direct, scaffold = _settable(cls), _scaffold(cls)
    hints = get_type_hints(cls)
    fields = attrs.fields(cast(Any, cls))
    if (
        direct is None
        or scaffold is None
        or not fields
        or any(
            field.default is not attrs.NOTHING
            or field.converter is not None
            or hints[field.name] not in _EXACT_TYPES
            for field in fields
        )
    ):
        return False
    add = source.lines.append
    function = source.name(_entry(cls))
    add(f"{indent}if type({variable}) is dict and len({variable}) == {len(fields)}:")
    add(f"{indent}    try:")
    for index, field in enumerate(fields):
        add(f"{indent}        {variable}_{index} = {variable}[{field_wire_name(field)!r}]")
    add(f"{indent}    except KeyError:")  # another spelling (or not this record at all)
    add(f"{indent}        {variable} = {function}({variable})")
    add(f"{indent}    else:")
    checks = " or ".join(
        f"type({variable}_{index}) is not {source.name(hints[field.name])}"
        for index, field in enumerate(fields)
    )
    add(f"{indent}        if {checks}:")
    add(f"{indent}            raise TypeError")
    add(f"{indent}        {variable} = {source.name(object.__new__)}({source.name(scaffold)})")
    for index, field in enumerate(fields):
        add(f"{indent}        {variable}.{field.name} = {variable}_{index}")
    add(f"{indent}        {variable}.__class__ = {source.name(cls)}")
    add(f"{indent}else:")
    add(f"{indent}    {variable} = {function}({variable})")
    return True


def _generate(
    cls: type, slow: Callable[[dict[str, Any]], Any] | None = None
) -> Callable[[Any], Any]:
    """The structuring function of ``cls``: for an object whose keys are lowercased (``slow``
    is None), or for any JSON value, matching the wire names as sent and handing an object
    that lacks a required name or holds another spelling of a name to ``slow`` (which looks
    again in any casing). Unknown names are ignored either way."""
    lowered = slow is None
    source = _Source()
    add = source.lines.append
    hints = get_type_hints(cls)
    fields = [field for field in attrs.fields(cast(Any, cls)) if field.init]
    names = [
        field_wire_name(field).lower() if lowered else field_wire_name(field) for field in fields
    ]
    direct = _settable(cls)
    required = {i for i, field in enumerate(fields) if field.default is attrs.NOTHING}
    add("def structure(value):")  # the parameters are completed below
    add("    if type(value) is not dict:")
    add("        raise TypeError")
    if len(required) < len(fields):
        add("    get = value.get")
    # 1. Read the required fields by their exact names.
    if required and lowered:  # absent: KeyError, explained by cattrs
        for index in required:
            add(f"    v{index} = value[{names[index]!r}]")
    elif required:  # absent as sent: perhaps present in another casing
        add("    try:")
        for index in required:
            add(f"        v{index} = value[{names[index]!r}]")
        add("    except KeyError:")
        add(f"        return {source.name(slow)}(value)")
    if not lowered and len(required) < len(fields):
        add(f"    n = {len(fields)}")
    # 2. Convert each value; an optional one is read here (absent: its default, and one name
    #    fewer counted). Converting before the spelling check below is safe: a problem raises,
    #    and the caller then asks cattrs, which reads every name in any casing.
    arguments, factories = [], []
    for index, field in enumerate(fields):
        variable, type_, default = f"v{index}", hints[field.name], field.default
        if index in required:
            _convert(type_, variable, "    ", source)
            arguments.append(f"{field.alias}={variable}")
            continue
        add(f"    {variable} = get({names[index]!r}, _MISSING)")
        absent = [] if lowered else ["n -= 1"]
        if not isinstance(default, cast(Any, attrs.Factory)):
            value = "None" if default is None else source.name(default)
            absent.append(f"{variable} = {value}")  # absent reads as null / the default
        elif direct is not None:
            absent.append(f"{variable} = {source.name(default.factory)}()")
        else:
            factories.append((field.alias, variable))  # absent: attrs calls it
        if absent:
            add(f"    if {variable} is _MISSING:")
            for line in absent:
                add(f"        {line}")
            add("    else:")
        else:
            add(f"    if {variable} is not _MISSING:")
        before = len(source.lines)
        _convert(type_, variable, "        ", source)
        if len(source.lines) == before:
            add("        pass")
        if direct is not None or not isinstance(default, cast(Any, attrs.Factory)):
            arguments.append(f"{field.alias}={variable}")
    if not lowered:
        # Every key was one of the names as sent (the usual case), or the others are unknown
        # names: no other spelling of a name can hide in the object.
        count = "n" if len(required) < len(fields) else str(len(fields))
        known, lower = frozenset(names), frozenset(name.lower() for name in names)
        add(
            f"    if {count} != len(value) and {source.name(_respelled)}(value,"
            f" {source.name(known)}, {source.name(lower)}):"
        )
        add(f"        return {source.name(slow)}(value)")
    # 3. Build the record.
    if direct is not None:
        # What attrs' __init__ would do, minus its keyword-argument call: a new instance, each
        # slot set (a frozen class refuses only setattr), converters applied as attrs applies
        # them (to given and default values alike).
        scaffold = _scaffold(cls)
        if scaffold is not None:
            # Plain assignments on the scaffold (CPython stores straight into the slot, ~3x
            # faster than calling each slot's __set__), then the instance becomes a ``cls``.
            add(f"    record = {source.name(object.__new__)}({source.name(scaffold)})")
            for index, (name, _, converter) in enumerate(direct):
                if converter is None or _keeps(converter, hints[name], fields[index].default):
                    value = f"v{index}"
                else:
                    value = f"{source.name(converter)}(v{index})"
                add(f"    record.{name} = {value}")
            add(f"    record.__class__ = {source.name(cls)}")
        else:
            add(f"    record = {source.name(object.__new__)}({source.name(cls)})")
            for index, (_, setter, converter) in enumerate(direct):
                value = f"v{index}" if converter is None else f"{source.name(converter)}(v{index})"
                add(f"    {source.name(setter)}(record, {value})")
        add("    return record")
    else:
        if factories:
            add("    extra = {}")
            for alias, variable in factories:
                add(f"    if {variable} is not _MISSING:")
                add(f"        extra[{alias!r}] = {variable}")
            arguments.append("**extra")
        add(f"    return {source.name(cls)}({', '.join(arguments)})")
    # Everything the function refers to is bound as a default argument: a local, not a global.
    source.lines[0] = f"def structure(value, {', '.join(f'{n}={n}' for n in source.names)}):"
    namespace = dict(source.names)
    exec("\n".join(source.lines), namespace)  # our own generated source, from attrs fields
    generated: Callable[[Any], Any] = namespace["structure"]
    return generated


def _keeps(converter: Any, type_: Any, default: Any) -> bool:
    """Whether calling ``converter`` on the value the generated code built is a no-op: the
    field is a ``tuple[X, ...]`` (always built as a tuple), its default (if any) is a tuple
    too, and the converter is marked as handing back any tuple unchanged."""
    try:
        marked = converter in _checks.TUPLE_KEEPERS
    except TypeError:  # an unhashable callable
        return False
    return marked and _is_tuple_of(type_) and (default is attrs.NOTHING or type(default) is tuple)


def _respelled(value: dict[Any, Any], known: frozenset[str], lower: frozenset[str]) -> bool:
    """Whether ``value`` holds a key that is not a name as sent but one in another casing (or
    a key that is not a string): then it must be read in any casing."""
    return any(type(key) is not str or key.lower() in lower for key in value.keys() - known)


def _settable(cls: type) -> list[tuple[str, Any, Any]] | None:
    """Per field, its name, the slot's ``__set__`` and the converter (or None), when building
    ``cls`` slot by slot does exactly what its attrs ``__init__`` does: every field in
    ``__init__`` and in a slot, plain converters (or none), no validator, no pre/post-init
    hook, no cached hash, the ``__init__`` attrs generated. None otherwise (the record is
    built by a call)."""
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    if code is None or not code.co_filename.startswith("<attrs generated"):
        return None
    if any(hasattr(cls, hook) for hook in ("__attrs_pre_init__", "__attrs_post_init__")):
        return None
    if getattr(cls, "__attrs_cached_hash__", None) is not None or "_attrs_cached_hash" in getattr(
        cls, "__slots__", ()
    ):
        return None
    found = []
    for field in attrs.fields(cast(Any, cls)):
        slot: Any = cls.__dict__.get(field.name)
        converter = field.converter
        if (
            not field.init
            or field.validator is not None
            or type(slot).__name__ != "member_descriptor"
            or isinstance(converter, attrs.Converter)
            or (isinstance(field.default, cast(Any, attrs.Factory)) and field.default.takes_self)
        ):
            return None
        found.append((field.name, slot.__set__, converter))
    return found


def _scaffold(cls: type) -> type | None:
    """:func:`_make_scaffold`, once per class."""
    if cls not in _SCAFFOLDS:
        _SCAFFOLDS[cls] = _make_scaffold(cls)
    return _SCAFFOLDS[cls]


def _make_scaffold(cls: type) -> type | None:
    """A subclass of ``cls`` that adds nothing but plain assignment (no slots of its own,
    object's ``__setattr__`` and ``__delattr__``): a record is filled as a scaffold, then made
    a ``cls`` by assigning ``__class__``, which Python allows between classes of the same
    layout. None (each slot is then set through its descriptor) when ``cls`` is not a plain
    class, something would run on subclassing it, or the interpreter refuses the switch. (The
    scaffold is listed by ``cls.__subclasses__()``; no instance of it outlives a call.)"""
    if type(cls) is not type or any("__init_subclass__" in vars(base) for base in cls.__mro__[:-1]):
        return None
    namespace = {
        "__slots__": (),
        # Both of these, or Python keeps the frozen class's setattr slot for the subclass.
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
        "__module__": __name__,
        "__doc__": f"Only while the codec fills a {cls.__qualname__}; never handed out.",
    }
    try:
        scaffold = type(f"{cls.__name__}Scaffold", (cls,), namespace)
        probe: Any = object.__new__(scaffold)
        probe.__class__ = cls
    except TypeError:
        return None
    return scaffold


def _entry(cls: type) -> Callable[[Any], Any]:
    """The fast structuring function of ``cls``: raises on any problem (without explaining)."""
    found = _ENTRIES.get(cls)
    if found is not None:
        return found

    def late(value: Any) -> Any:  # only while a record that contains itself is being built
        return _ENTRIES[cls](value)

    _ENTRIES[cls] = late
    any_casing = _generate(cls)

    def look_again(value: dict[Any, Any]) -> Any:
        return any_casing(_lower(value))

    _ENTRIES[cls] = structure_fast = _generate(cls, look_again)
    return structure_fast


def _make_structure_hook(cls: type[T]) -> Callable[[Any, Any], T]:
    fast = _entry(cls)
    renames = {
        f.name: override(rename=field_wire_name(f).lower()) for f in attrs.fields(cast(Any, cls))
    }
    # cattrs' generated function collects every problem with its path; it runs only to explain
    # a failure of the fast one (and so gives the same answer, or the same error, as before).
    detailed: Callable[[dict[str, Any], Any], T]
    detailed = _structure_fn(cls, converter, _cattrs_detailed_validation=True, **renames)

    def structure_record(value: Any, _: Any) -> T:
        try:
            return cast(T, fast(value))
        except Exception:
            pass
        if type(value) is not dict:
            raise TypeError(f"expected an object, got {_kind(value)}")
        return detailed(_lower(value), cls)

    return structure_record


def _is_optional(type_: Any) -> bool:
    args = get_args(type_)
    return len(args) == 2 and args[1] is type(None) and get_origin(type_) in (Union, UnionType)


def _optional_factory(type_: Any) -> Callable[[Any, Any], Any]:
    """``X | None``: ``null`` is ``None``, anything else goes to X's hook (bound once)."""
    inner = get_args(type_)[0]
    hook = converter.get_structure_hook(inner)

    def structure_optional(value: Any, _: Any) -> Any:
        return None if value is None else hook(value, inner)

    return structure_optional


def _make_unstructure_hook(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    overrides = {}
    for field in attrs.fields(cls):
        # Absent means omitted, never null; a flag is sent only when set (includeOrderIds).
        omit = field.default is None or (cls, field.name) in _OMITTED_DEFAULTS
        omit = omit or field.default is False
        overrides[field.name] = override(rename=field_wire_name(field), omit_if_default=omit)
    hook: Callable[[Any], dict[str, Any]] = _unstructure_fn(cls, converter, **overrides)
    return hook


def _user_identity(identity: UserIdentity) -> dict[str, str]:
    return {
        "localTicketReference": identity.local_ticket_reference,
        "identityValue": identity.identity_value,
        "identityType": identity.identity_type,
    }


def _consume_request(request: ConsumeRequest) -> dict[str, Any]:
    # Hand-written: this runs once per consume call and is ~5x faster than the generic hook.
    body: dict[str, Any] = {"beneficiary": _user_identity(request.beneficiary)}
    if request.remove_quantity is not None:  # v8: deduplicated on all four of these values
        body["productId"] = request.product_id
        body["trackingId"] = request.tracking_id
        body["removeQuantity"] = request.remove_quantity
        if request.include_order_ids:
            body["includeOrderIds"] = True
        if request.sandbox_id is not None:
            body["sbx"] = request.sandbox_id
    elif request.tracking_id is not None:
        body["itemId"] = request.item_id
        body["trackingId"] = request.tracking_id
    else:
        body["productId"] = request.product_id
        body["transactionId"] = request.transaction_id
    return body


_HAND_WRITTEN: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    UserIdentity: _user_identity,
    ConsumeRequest: _consume_request,
}
"""Records serialized by a hand-written function instead of the generated one (the last of the
special cases: the hot path's request body)."""


def _unstructure_factory(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    return _HAND_WRITTEN.get(cls) or _make_unstructure_hook(cls)


def _build() -> OrjsonConverter:
    built = make_converter(detailed_validation=True, forbid_extra_keys=False)
    built.register_structure_hook(str, _structure_str)
    built.register_structure_hook(int, _structure_int)
    built.register_structure_hook(bool, _structure_bool)
    built.register_structure_hook(Decimal, _structure_decimal)
    built.register_unstructure_hook(Decimal, _unstructure_decimal)
    built.register_structure_hook(datetime, _structure_datetime)
    built.register_unstructure_hook(datetime, _unstructure_datetime)
    built.register_structure_hook_factory(_is_tuple_of, _tuple_of_factory)
    built.register_structure_hook_factory(_is_optional, _optional_factory)
    built.register_structure_hook_factory(attrs.has, _make_structure_hook)
    built.register_unstructure_hook_factory(attrs.has, _unstructure_factory)
    return built


converter: Final[OrjsonConverter] = _build()
"""The converter for every attrs record (camelCase wire names)."""


# -- the public functions --


def dumps(record: Any) -> bytes:
    """Serialize a request record to its JSON body.

    Raises :class:`~store_async.errors.ValidationError` for a value JSON cannot carry (an
    integer beyond 64 bits, a string with a lone surrogate, an object that is not a record).
    """
    try:
        if type(record) is ConsumeRequest:
            return orjson.dumps(_consume_request(record))
        return orjson.dumps(converter.unstructure(record))
    except orjson.JSONEncodeError as exc:
        # orjson's messages name the problem, never the value.
        raise ValidationError(f"{type(record).__name__} cannot be sent as JSON: {exc}") from None


def loads(data: bytes | bytearray | memoryview | str, cls: type[T]) -> T:
    """Parse a response body, ``data``, into ``cls``; raise only :class:`ResponseFormatError`."""
    name = cls.__name__
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        raise ResponseFormatError(f"{name}: cannot read a body of type {type(data).__name__}")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # exc.msg is orjson's description (no input text); the body itself is never quoted, as
        # it may hold a Store ID key.
        raise ResponseFormatError(
            f"{name}: the body is not JSON ({exc.msg} at position {exc.pos} of {len(data)})"
        ) from None
    except Exception as exc:  # e.g. MemoryError: keep the one-error-type promise
        raise ResponseFormatError(f"{name}: cannot parse the body ({type(exc).__name__})") from None
    return structure(parsed, cls)


def structure(data: Any, cls: type[T]) -> T:
    """Build ``cls`` from parsed JSON; raise only :class:`ResponseFormatError`."""
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        problems = _problems(exc, "$")
        shown = "; ".join(problems[:_MAX_PROBLEMS])
        more = len(problems) - _MAX_PROBLEMS
        suffix = f" (and {more} more)" if more > 0 else ""
        raise ResponseFormatError(f"{cls.__name__}: {shown}{suffix}") from None


def _problems(exc: BaseException, path: str) -> list[str]:
    """Flatten a cattrs error tree into ``$.path: what`` lines, with wire names in the path."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        notes: list[tuple[BaseException, Any]]
        notes, others = exc.group_exceptions()  # type: ignore[assignment]
        found: list[str] = []
        for inner, note in notes:
            if isinstance(exc, IterableValidationError):
                found += _problems(inner, f"{path}[{note.index}]")
            else:
                found += _problems(inner, f"{path}.{wire_name(note.name)}")
        for inner in others:
            found += _problems(inner, path)
        return found
    if isinstance(exc, BaseExceptionGroup):
        return [line for inner in exc.exceptions for line in _problems(inner, path)]
    if isinstance(exc, KeyError):
        return [f"{path}: required field missing"]
    if isinstance(exc, (TypeError, ValueError)) and exc.args and isinstance(exc.args[0], str):
        message = exc.args[0]
        if len(message) > 200:  # not one of ours; never echo a long foreign message
            message = f"{type(exc).__name__} ({len(message)}-character message)"
        return [f"{path}: {message}"]
    return [f"{path}: {type(exc).__name__}"]


# -- refund events (clawback v2): records like any other (the attrs.has factories build them);
#    only their state, a known state or the service's own word, needs a hook --


def _structure_refund_state(value: Any, _: Any) -> RefundEventState | str:
    if type(value) is str:
        return refund_event_state(value)
    raise TypeError(f"expected a string, got {_kind(value)}")


converter.register_structure_hook_factory(
    lambda type_: type_ == RefundEventState | str, lambda _type: _structure_refund_state
)
