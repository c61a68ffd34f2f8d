# python/keel/_codecs.py - set_type_codec: user codecs for PostgreSQL types (asyncpg's contract).
"""Database.set_type_codec / Connection.set_type_codec, as asyncpg's.

A codec belongs to the Database: keel's connections are pooled and interchangeable, so a codec
set through a leased Connection applies to every connection of its Database (what asyncpg users
do in init=, once here). The type is looked up by name in the named database (its OID).

decoder(text) makes the Python value of each column of that type (results come in text form).
encoder(value) makes the text of a parameter of that type, for values keel does not convert
itself: a statement with such a value is described by the server first (once per statement
and database, then cached) to learn which parameters are of the type.

format='binary' and 'tuple' are for dates, times, timestamps and intervals, whose values keel
keeps as PostgreSQL does: convert.c gives the decoder their tuple form (asyncpg's), packed here
into their binary form for 'binary'; 'binary' is also for the built-in scalars whose Python
value (or text) keeps all of the value, inet and cidr among them, and the types of hstore,
citext and ltree (found by their send functions), whose text keel keeps. An encoder's tuple or
bytes becomes the value's text, the form keel sends these parameters in. format='tuple' is
also for composite types: the decoder is given a tuple of the fields' values (parsed here from
the composite's text by each attribute's type), the encoder returns one, sent as the
composite's text.
"""
from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import enum as _enum
import functools as _functools
import ipaddress as _ipaddress
import json as _json
import re
import struct as _struct
import uuid as _uuid
from typing import TYPE_CHECKING, Any, Callable

from . import _native
from ._range import Range

if TYPE_CHECKING:
    from . import Connection, Database

__all__ = ["set_type_codec"]

# Set once any encoder is registered: Connection's query methods look at it before anything else.
encoding = False

# Types whose values keel converts itself (encoders are not consulted for them).
_NATIVE = (type(None), bool, int, float, str, bytes, bytearray, memoryview, _decimal.Decimal,
           _dt.date, _dt.time, _dt.timedelta, _uuid.UUID, dict, list, tuple, Range, _enum.Enum,
           _ipaddress.IPv4Address, _ipaddress.IPv6Address, _ipaddress.IPv4Interface,
           _ipaddress.IPv6Interface, _ipaddress.IPv4Network, _ipaddress.IPv6Network)

# Built-in types whose values keel parses itself: their text is gone by the time a decoder
# could run, so a codec for them is refused.
_PARSED = {"bool", "int2", "int4", "int8", "oid", "float4", "float8", "bytea", "date", "time",
           "timestamp", "timestamptz", "uuid", "interval", "int4range", "int8range", "numrange",
           "daterange", "tsrange", "tstzrange"}

# The type's OID, category (as its character code), array type's OID, a domain's base type's
# OID (else 0) and the position in _EXTENSIONS of its send function's name (else 0). Each is the
# lower bound of an int8range: the one type of these that no codec can be set for, so a codec
# never decodes the lookup's own columns (oid, name and the integers can have binary codecs).
_LOOKUP = ("SELECT int8range(t.oid::int8, t.oid::int8, '[]'), "
           "int8range(ascii(t.typcategory::text), ascii(t.typcategory::text), '[]'), "
           "int8range(t.typarray::int8, t.typarray::int8, '[]'), "
           "int8range(t.typbasetype::int8, t.typbasetype::int8, '[]'), "
           "(SELECT int8range(k, k, '[]') FROM pg_catalog.pg_proc p, "
           "array_position(ARRAY['hstore_send', 'citextsend', 'ltree_send', 'lquery_send', "
           "'ltxtq_send']::name[], p.proname) k WHERE p.oid = t.typsend) "
           "FROM pg_catalog.pg_type t "
           "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
           "WHERE t.typname = $1 AND n.nspname = $2")


class _Codecs:
    """The encoders of a Database, and the parameter types of the statements they needed."""

    __slots__ = ("encoders", "described", "names", "arrays", "literals", "decoders")

    def __init__(self) -> None:
        self.encoders: dict[str, Callable[[Any], Any]] = {}  # by the name describe gives
        self.described: dict[tuple[str | None, str], tuple[str | None, ...]] = {}
        self.names: dict[str, str] = {}  # the type's name by the name describe gives
        self.arrays: dict[str, str] = {}  # an array type's element type, both as described
        # The types of format='binary' / 'tuple' encoders, whose lists go as array literals.
        self.literals: set[str] = set()
        # The decoders taking the server's text (format='text', and composites'), by type OID:
        # a composite's fields of such a type go through them.
        self.decoders: dict[int, Callable[[str], Any]] = {}


def _codecs_of(db: Database) -> _Codecs:
    c = db.__dict__.get("_keel_codecs")
    if c is None:
        c = db.__dict__["_keel_codecs"] = _Codecs()
    return c


async def set_type_codec(db: Database, run: Any, typename: str, *, schema: str,
                         encoder: Callable[[Any], Any] | None,
                         decoder: Callable[[Any], Any] | None, format: str,
                         engine: str, where: str) -> None:
    """Registers a codec on db; run(sql, *args) fetches a row on the database concerned."""
    global encoding
    if format not in ("text", "binary", "tuple"):
        raise ValueError(f"set_type_codec: format must be 'text', 'binary' or 'tuple', "
                         f"not {format!r}")
    if engine != "postgresql":
        raise _native.NotSupportedError(
            f"set_type_codec: {where} is a {engine} database; type codecs are PostgreSQL's")
    for name, fn in (("encoder", encoder), ("decoder", decoder)):
        if fn is not None and not callable(fn):
            raise TypeError(f"set_type_codec: {name} must be callable, not {type(fn).__name__}")
    if not isinstance(typename, str) or not isinstance(schema, str):
        raise TypeError("set_type_codec: typename and schema must be str")
    row = await run(_LOOKUP, typename, schema)
    if row is None:
        raise ValueError(f"set_type_codec: unknown type: {schema}.{typename}")
    # (The type's name is typename: the lookup matches it exactly.)
    name = typename
    oid, category, array_oid, base = (r.lower for r in row[:4])
    # An extension's type keel knows the binary form of (by its send function).
    ext = _EXTENSIONS[row[4].lower - 1] if row[4] is not None and row[4].lower else None
    category = chr(category)
    if base and decoder is not None:
        # Its columns are described as the base type's, so a domain's decoder would never run
        # (its parameters are described as the domain: an encoder of its own does run).
        raise _native.NotSupportedError(
            f"set_type_codec: {schema}.{typename} is a domain (over the type of OID {base}): "
            "PostgreSQL sends a domain's values as its base type's, so its decoder would never "
            "run; set the decoder on the base type (decoder=None for an encoder of the domain)")
    codecs = _codecs_of(db)
    if format == "tuple" and category == "C":
        attrs = await run(_ATTRIBUTES, oid)
        types = tuple((r.lower, e.lower) for r, e in zip(attrs[0] or (), attrs[1] or ())
                      ) if attrs is not None else ()
        decoder = None if decoder is None else _composite_decoder(decoder, name, types, codecs)
        encoder = None if encoder is None else _composite_encoder(encoder, name, types)
    elif format == "binary" and ext is not None:
        decoder = None if decoder is None else _ext_decoder(decoder, name, ext)
        encoder = None if encoder is None else _ext_encoder(encoder, ext)
    elif format != "text":
        kinds = sorted(_FORMS) if format == "tuple" else sorted({*_FORMS, *_SCALARS})
        if name not in kinds or schema != "pg_catalog":
            also = "composite types and " if format == "tuple" else ""
            exts = "" if format == "tuple" else (
                ", and the extensions' types hstore, citext, ltree, lquery, ltxtquery")
            raise _native.NotSupportedError(
                f"set_type_codec: format={format!r} is available for {also}the pg_catalog "
                f"types {', '.join(kinds)}{exts}, not for {schema}.{typename}")
        if name in _FORMS:
            decoder = None if decoder is None else _form_decoder(decoder, name, format)
            encoder = None if encoder is None else _form_encoder(encoder, name, format)
        else:
            decoder = None if decoder is None else _scalar_decoder(decoder, name)
            encoder = None if encoder is None else _scalar_encoder(encoder, name)
    elif name in _PARSED or category == "A":
        raise _native.NotSupportedError(
            f"set_type_codec: keel decodes {schema}.{typename} itself and keeps no text of it; "
            "codecs are for types keel returns as text (custom, composite and extension "
            "types, enums, json, numeric, text, inet…); dates, times and intervals take "
            "format='binary' or 'tuple', bool, integers, floats, bytea and uuid format='binary'")
    else:
        # Failures name the type (the column is named by keel).
        decoder = None if decoder is None else _named_decoder(decoder, name)
    if (format == "text" or category == "C") and decoder is not None:
        codecs.decoders[oid] = decoder
    else:
        codecs.decoders.pop(oid, None)
    db._set_type_decoder(oid, decoder)
    # Its array type too: keel reads its values as lists of the elements' text, and a decoder
    # set for an array type is applied to each element (a list parameter's elements go through
    # the encoder, below; keel sends the list as the array literal of the described type).
    if array_oid:
        db._set_type_decoder(array_oid, decoder)
    # describe names a built-in type by its name and any other by its OID.
    for key in (str(oid), name):
        if encoder is None:
            codecs.encoders.pop(key, None)
        else:
            codecs.encoders[key] = encoder
        codecs.names[key] = name
        # keel writes a list for an array of dates, times or intervals from values it converts
        # itself, not text: such lists go as the array's literal, made here.
        if format == "text":
            codecs.literals.discard(key)
        else:
            codecs.literals.add(key)
    # Lists for its array type are encoded element by element.
    if array_oid:
        for key in (str(array_oid), f"{name}[]", f"_{name}"):
            codecs.arrays[key] = str(oid)
    codecs.described.clear()
    if encoder is not None:
        encoding = True


def _named_decoder(decoder: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def decode(text: str) -> Any:
        try:
            return decoder(text)
        except MemoryError:
            raise
        except Exception as e:
            raise ValueError(f"the decoder of type {name} failed: {e}") from e

    return decode


# format='binary' and 'tuple': the types keel keeps as PostgreSQL does, with the struct of their
# binary form. Their tuple form (asyncpg's) is the same fields, an interval's in the order
# (months, days, microseconds) where its binary form has them the other way round.
_FORMS = {"date": ">i", "time": ">q", "timetz": ">qi", "timestamp": ">q", "timestamptz": ">q",
          "interval": ">qii"}
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DAY = 86_400_000_000
_TIMETZ = re.compile(r"(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?")


def _text_tuple(name: str, text: str) -> tuple[int, ...]:
    """The tuple form of what keel gives as text for a type of _FORMS: ±infinity (dates and
    timestamps, as the int32 / int64 extremes) and timetz (its zone in seconds west of UTC, as
    PostgreSQL sends it)."""
    if name == "timetz":
        m = _TIMETZ.fullmatch(text)
        if m is None:
            raise ValueError(f"unexpected time with time zone text {text!r}")
        hh, mm, ss, frac, sign, zh, zm, zs = m.groups()
        micros = ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * 1_000_000 + int(
            (frac or "0").ljust(6, "0"))
        east = (int(zh) * 60 + int(zm or 0)) * 60 + int(zs or 0)
        return (micros, east if sign == "-" else -east)
    lo, hi = _INT32 if name == "date" else _INT64
    if text in ("infinity", "-infinity"):
        return (hi if text == "infinity" else lo,)
    raise ValueError(f"unexpected {name} text {text!r}")


def _form_decoder(decoder: Callable[[Any], Any], name: str,
                  format: str) -> Callable[[Any], Any]:
    """decoder given the tuple form of each value (convert.c makes it of a date, time,
    timestamp or interval; keel gives the rest as text), or its binary form."""
    st = _struct.Struct(_FORMS[name])

    def decode(value: Any) -> Any:
        t = _text_tuple(name, value) if isinstance(value, str) else value
        if format == "binary":
            value = st.pack(*(t[::-1] if name == "interval" else t))
        else:
            value = t
        try:
            return decoder(value)
        except MemoryError:
            raise
        except Exception as e:
            raise ValueError(f"the decoder of type {name} failed: {e}") from e

    return decode


# format='binary' only: built-in types keel converts into Python values that keep all of the
# value (convert.c gives them to the decoder), or reads as text; the struct of their binary
# form, "" for the types whose binary form is bytes of their own.
_SCALARS = {"bool": "?", "int2": ">h", "int4": ">i", "int8": ">q", "oid": ">I", "float4": ">f",
            "float8": ">d", "bytea": "", "uuid": "", "text": "", "varchar": "", "bpchar": "",
            "name": "", "json": "", "jsonb": "", "numeric": "", "inet": "", "cidr": ""}
# numeric's binary form: its header (digits, weight, sign, display scale), then base-10000 digits.
_NUMERIC = _struct.Struct(">hhHH")
_NUMERIC_SIGNS = {"NaN": 0xC000, "Infinity": 0xD000, "-Infinity": 0xF000}


def _numeric_bytes(text: str) -> bytes:
    """The binary form of a numeric from its text as the server writes it ("-12.3400")."""
    if text in _NUMERIC_SIGNS:
        # The display scale numeric_send gives ±Infinity is 32, the scale bits of its header.
        return _NUMERIC.pack(0, 0, _NUMERIC_SIGNS[text], 0 if text == "NaN" else 32)
    sign = 0x4000 if text.startswith("-") else 0
    whole, _, frac = text.lstrip("-").partition(".")
    whole = whole.lstrip("0")
    whole = whole.rjust(-(-len(whole) // 4) * 4, "0")
    digits = [int((whole + frac.ljust(-(-len(frac) // 4) * 4, "0"))[i:i + 4])
              for i in range(0, len(whole) + -(-len(frac) // 4) * 4, 4)]
    weight = len(whole) // 4 - 1
    # The server keeps no zero digits at either end, and writes zero with weight 0, positive.
    while digits and digits[0] == 0:
        digits.pop(0)
        weight -= 1
    while digits and digits[-1] == 0:
        digits.pop()
    if not digits:
        weight = sign = 0
    return _NUMERIC.pack(len(digits), weight, sign, len(frac)) + _struct.pack(
        f">{len(digits)}H", *digits)


def _numeric_text(b: bytes) -> str:
    """The text of a numeric from its binary form."""
    if len(b) < _NUMERIC.size:
        raise ValueError(f"returned {len(b)} bytes; a binary numeric has at least 8")
    n, weight, sign, dscale = _NUMERIC.unpack_from(b)
    if len(b) != 8 + 2 * n or n < 0:
        raise ValueError(f"returned {len(b)} bytes; a binary numeric of {n} digits has "
                         f"{8 + 2 * max(n, 0)}")
    for word, code in _NUMERIC_SIGNS.items():
        if sign == code:
            return word
    digits = _struct.unpack_from(f">{n}H", b, 8)
    if sign not in (0, 0x4000) or any(d > 9999 for d in digits):
        raise ValueError("returned bytes that are not a binary numeric (its sign or a digit)")
    value = _decimal.Decimal((sign != 0, tuple(int(c) for c in "".join(
        f"{d:04d}" for d in digits)) or (0,), 4 * (weight - n + 1)))
    return f"{value:.{dscale}f}"


# inet and cidr's binary form: family (PostgreSQL's 2 for IPv4, 3 for IPv6), netmask bits, a
# cidr flag and the address's length, then the address.
_INET = _struct.Struct(">BBBB")


def _inet_bytes(text: str, name: str) -> bytes:
    """The binary form of an inet or cidr from its text ("10.1.2.3/8"; an inet's full mask
    is not written)."""
    addr, _, bits = text.partition("/")
    packed = _ipaddress.ip_address(addr).packed
    return _INET.pack(2 if len(packed) == 4 else 3, int(bits) if bits else 8 * len(packed),
                      name == "cidr", len(packed)) + packed


def _inet_text(b: bytes) -> str:
    """The text of an inet or cidr from its binary form (the server checks a cidr's bits)."""
    if len(b) < _INET.size:
        raise ValueError(f"returned {len(b)} bytes; a binary inet or cidr has at least 4")
    family, bits, _, n = _INET.unpack_from(b)
    if family not in (2, 3) or n != (4 if family == 2 else 16) or len(b) != 4 + n \
            or bits > 8 * n:
        raise ValueError("returned bytes that are not a binary inet or cidr (its family, "
                         "length or netmask)")
    addr = _ipaddress.ip_address(b[4:])
    return f"{addr}/{bits}"


def _scalar_decoder(decoder: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """decoder given the binary form of each value, made of keel's Python value (text for the
    text-like types, whose binary form is their UTF-8, after a version byte for jsonb)."""
    st = _struct.Struct(_SCALARS[name]) if _SCALARS[name] else None

    def decode(value: Any) -> Any:
        if st is not None:
            value = st.pack(value)
        elif name == "uuid":
            value = value.bytes
        elif name == "numeric":
            value = _numeric_bytes(value)
        elif name in ("inet", "cidr"):
            value = _inet_bytes(value, name)
        elif name != "bytea":
            value = (b"\x01" if name == "jsonb" else b"") + value.encode()
        try:
            return decoder(value)
        except MemoryError:
            raise
        except Exception as e:
            raise ValueError(f"the decoder of type {name} failed: {e}") from e

    return decode


def _scalar_encoder(encoder: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """encoder's binary form of a value as the text of the value, which keel sends."""
    st = _struct.Struct(_SCALARS[name]) if _SCALARS[name] else None

    def encode(value: Any) -> str:
        out = encoder(value)
        if not isinstance(out, (bytes, bytearray, memoryview)):
            raise TypeError(f"returned {type(out).__name__}, not bytes (format='binary')")
        out = bytes(out)
        if st is not None or name == "uuid":
            size = st.size if st is not None else 16
            if len(out) != size:
                raise ValueError(f"returned {len(out)} bytes; a binary {name} has {size}")
        if st is not None:
            x = st.unpack(out)[0]
            return ("true" if x else "false") if name == "bool" else repr(x)
        if name == "uuid":
            return str(_uuid.UUID(bytes=out))
        if name == "bytea":
            return "\\x" + out.hex()
        if name == "numeric":
            return _numeric_text(out)
        if name in ("inet", "cidr"):
            return _inet_text(out)
        if name == "jsonb":
            if out[:1] != b"\x01":
                raise ValueError("returned bytes that do not start with version 1 of jsonb's "
                                 "binary form")
            out = out[1:]
        return out.decode()

    return encode


# format='binary' for extensions' types keel reads as text, by their send function: hstore's
# binary form is its pair count, then each key and value (-1 for NULL) after its int32 length, in
# the order its text has them; citext's is its UTF-8 text; ltree's, lquery's and ltxtquery's
# their UTF-8 text after a version byte 1.
_EXTENSIONS = ("hstore", "citext", "ltree", "lquery", "ltxtquery")
_HSTORE_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"=>(?:NULL|"((?:[^"\\]|\\.)*)")(?:, |$)')
_UNESCAPE = re.compile(r"\\(.)", re.S)
_INT32_BE = _struct.Struct(">i")


def _hstore_bytes(text: str) -> bytes:
    """hstore's binary form from its text (`"a"=>"1", "b"=>NULL`)."""
    out = []
    at = 0
    while at < len(text):
        m = _HSTORE_ITEM.match(text, at)
        if m is None:
            raise ValueError(f"unexpected hstore text at {text[at:at + 40]!r}")
        key = _UNESCAPE.sub(r"\1", m.group(1)).encode()
        out.append(_INT32_BE.pack(len(key)) + key)
        if m.group(2) is None:
            out.append(_INT32_BE.pack(-1))
        else:
            value = _UNESCAPE.sub(r"\1", m.group(2)).encode()
            out.append(_INT32_BE.pack(len(value)) + value)
        at = m.end()
    return _INT32_BE.pack(len(out) // 2) + b"".join(out)


def _hstore_text(b: bytes) -> str:
    """hstore's text from its binary form."""

    def take(at: int, null: bool) -> tuple[str | None, int]:
        if at + 4 > len(b):
            raise ValueError("returned bytes that end inside a binary hstore")
        n = _INT32_BE.unpack_from(b, at)[0]
        if n == -1 and null:
            return None, at + 4
        if n < 0 or at + 4 + n > len(b):
            raise ValueError("returned bytes that are not a binary hstore (a length)")
        return b[at + 4:at + 4 + n].decode(), at + 4 + n

    if len(b) < 4:
        raise ValueError(f"returned {len(b)} bytes; a binary hstore has at least 4")
    count, at, items = _INT32_BE.unpack_from(b)[0], 4, []
    for _ in range(count):
        key, at = take(at, False)
        value, at = take(at, True)
        items.append(f"{_quoted(key)}=>{'NULL' if value is None else _quoted(value)}")
    if at != len(b):
        raise ValueError("returned bytes past the end of a binary hstore")
    return ", ".join(items)


def _ext_decoder(decoder: Callable[[Any], Any], name: str, ext: str) -> Callable[[str], Any]:
    """decoder given the binary form of each value of an extension's type, from its text."""

    def decode(text: str) -> Any:
        if ext == "hstore":
            value = _hstore_bytes(text)
        else:
            value = (b"" if ext == "citext" else b"\x01") + text.encode()
        try:
            return decoder(value)
        except MemoryError:
            raise
        except Exception as e:
            raise ValueError(f"the decoder of type {name} failed: {e}") from e

    return decode


def _ext_encoder(encoder: Callable[[Any], Any], ext: str) -> Callable[[Any], str]:
    """encoder's binary form of a value of an extension's type as its text, which keel sends."""

    def encode(value: Any) -> str:
        out = encoder(value)
        if not isinstance(out, (bytes, bytearray, memoryview)):
            raise TypeError(f"returned {type(out).__name__}, not bytes (format='binary')")
        out = bytes(out)
        if ext == "hstore":
            return _hstore_text(out)
        if ext != "citext":
            if out[:1] != b"\x01":
                raise ValueError(f"returned bytes that do not start with version 1 of {ext}'s "
                                 "binary form")
            out = out[1:]
        return out.decode()

    return encode


def _civil(days: int) -> str:
    """The date days after 1970-01-01 as PostgreSQL reads it: YYYY-MM-DD, BC for years before 1
    (proleptic Gregorian, the days-to-civil conversion of Howard Hinnant's date algorithms)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    return f"{y:04d}-{m:02d}-{d:02d}" if y > 0 else f"{1 - y:04d}-{m:02d}-{d:02d} BC"


def _clock(micros: int) -> str:
    secs, us = divmod(micros, 1_000_000)
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{us:06d}"


def _form_text(name: str, t: tuple[int, ...]) -> str:
    """The text PostgreSQL reads as the value of tuple form t, whatever its DateStyle and
    IntervalStyle (ISO dates; every interval field signed, so no sign carries over)."""
    if name == "interval":
        months, days, micros = t
        return f"{months:+d} mons {days:+d} days {'-' if micros < 0 else '+'}{_clock(abs(micros))}"
    if name in ("time", "timetz"):
        text = _clock(t[0])
        if name == "timetz":
            mag = abs(t[1])  # seconds west of UTC: a zone east of it is negative
            sign = "+" if t[1] <= 0 else "-"
            text += f"{sign}{mag // 3600:02d}:{mag // 60 % 60:02d}:{mag % 60:02d}"
        return text
    lo, hi = _INT32 if name == "date" else _INT64
    if t[0] in (lo, hi):
        return "infinity" if t[0] == hi else "-infinity"
    if name == "date":
        return _civil(t[0] + 10_957)
    days, micros = divmod(t[0], _DAY)
    date = _civil(days + 10_957)
    text = f"{date.removesuffix(' BC')} {_clock(micros)}"
    if name == "timestamptz":
        text += "+00"
    return text + (" BC" if date.endswith(" BC") else "")


def _form_encoder(encoder: Callable[[Any], Any], name: str,
                  format: str) -> Callable[[Any], Any]:
    """encoder's tuple form or binary form of a value as the text of the value: keel sends
    parameters of these types as text."""
    st = _struct.Struct(_FORMS[name])
    n = len(st.unpack(bytes(st.size)))

    def encode(value: Any) -> str:
        out = encoder(value)
        if format == "binary":
            if not isinstance(out, (bytes, bytearray, memoryview)):
                raise TypeError(f"returned {type(out).__name__}, not bytes (format='binary')")
            if len(out) != st.size:
                raise ValueError(f"returned {len(out)} bytes; a binary {name} has {st.size}")
            t = st.unpack(out)
            return _form_text(name, t[::-1] if name == "interval" else t)
        if (not isinstance(out, (tuple, list)) or len(out) != n
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in out)):
            raise TypeError(f"returned {out!r}, not a tuple of {n} int (format='tuple')")
        out = tuple(out)
        try:  # the struct checks each field's range (int32, int64)
            st.pack(*(out[::-1] if name == "interval" else out))
        except _struct.error as e:
            raise ValueError(f"returned {out!r}, out of range: {e}") from None
        return _form_text(name, out)

    return encode


# format='tuple' for composite types. The OIDs of the type's attributes, in order, and of their
# element types (0 for an attribute that is not an array), each the lower bound of an int8range
# (as in _LOOKUP, so no codec decodes the lookup's own columns).
_ATTRIBUTES = ("SELECT array_agg(int8range(a.atttypid::int8, a.atttypid::int8, '[]') "
               "ORDER BY a.attnum), array_agg(int8range(e.elem, e.elem, '[]') ORDER BY a.attnum) "
               "FROM pg_catalog.pg_attribute a "
               "JOIN pg_catalog.pg_type t ON t.typrelid = a.attrelid "
               "JOIN pg_catalog.pg_type at ON at.oid = a.atttypid, "
               "LATERAL (SELECT CASE WHEN at.typcategory = 'A' THEN at.typelem::int8 ELSE 0 END "
               "AS elem) e "
               "WHERE t.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped")


def _timestamptz(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text).astimezone(_dt.timezone.utc)


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError(f"unexpected bytea text {text[:20]!r} (bytea_output is not hex)")
    return bytes.fromhex(text[2:])


# A field's value from its text, by the OID of its type, as keel gives a column of the type
# (timestamptz in UTC); fields of other types are given as their text.
_FIELDS: dict[int, Callable[[str], Any]] = {
    16: lambda t: t == "t", 17: _bytea, 20: int, 21: int, 23: int, 26: int, 700: float,
    701: float, 1700: _decimal.Decimal, 2950: _uuid.UUID, 114: _json.loads, 3802: _json.loads,
    18: str, 19: str, 25: str, 1042: str, 1043: str, 1082: _dt.date.fromisoformat,
    1083: _dt.time.fromisoformat, 1114: _dt.datetime.fromisoformat, 1184: _timestamptz,
}


def _record_fields(text: str, n: int) -> list[str | None]:
    """The n fields of a composite's text as record_out writes it, e.g. `(1,"a b",)`: an empty
    unquoted field is NULL; inside quotes a doubled quote is one, and a backslash escapes the
    next character anywhere."""
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise ValueError(f"unexpected composite text {text[:40]!r}")
    if n == 0:
        return []
    fields: list[str | None] = []
    end = len(text) - 1
    i = 1
    while True:
        if i == end or text[i] == ",":
            fields.append(None)
        else:
            buf: list[str] = []
            quoted = False
            while i < end and (quoted or text[i] != ","):
                c = text[i]
                if c == "\\" and i + 1 < end:
                    buf.append(text[i + 1])
                    i += 2
                elif c == '"' and quoted and text[i + 1:i + 2] == '"':
                    buf.append('"')
                    i += 2
                elif c == '"':
                    quoted = not quoted
                    i += 1
                else:
                    buf.append(c)
                    i += 1
            fields.append("".join(buf))
        if i >= end:
            break
        i += 1  # the comma
    if len(fields) != n:
        raise ValueError(f"composite text with {len(fields)} fields, not {n}: {text[:40]!r}")
    return fields


def _array_items(text: str, parse: Callable[[str], Any]) -> list[Any]:
    """The elements of an array's text as array_out writes it (`{1,NULL,"a b"}`, nested braces
    for more dimensions, `[0:1]={…}` for other bounds) through parse, NULL as None."""
    if text.startswith("["):
        text = text[text.index("=") + 1:]

    def item(i: int) -> tuple[Any, int]:
        if text[i] == "{":
            items: list[Any] = []
            i += 1
            if text[i] == "}":
                return items, i + 1
            while True:
                x, i = item(i)
                items.append(x)
                if text[i] == "}":
                    return items, i + 1
                i += 1  # the comma
        if text[i] == '"':
            buf = []
            i += 1
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                buf.append(text[i])
                i += 1
            return parse("".join(buf)), i + 1
        j = i
        while text[j] not in ",}":
            j += 1
        return (None if text[i:j] == "NULL" else parse(text[i:j])), j

    try:
        out, end = item(0)
    except IndexError:
        end = -1
    if end != len(text) or not isinstance(out, list):
        raise ValueError(f"unexpected array text {text[:40]!r}")
    return out


def _composite_decoder(decoder: Callable[[Any], Any], name: str,
                       types: tuple[tuple[int, int], ...],
                       codecs: _Codecs) -> Callable[[str], Any]:
    """decoder given a tuple of the composite's field values (None for NULL), each as keel
    decodes its type (through that type's format='text' or composite's codec if it has one;
    an array's elements so, as a list), else its text."""

    def decode(text: str) -> Any:
        try:
            fields = _record_fields(text, len(types))
            values = []
            for i, ((oid, elem), f) in enumerate(zip(types, fields)):
                parse = codecs.decoders.get(oid) or _FIELDS.get(oid)
                # (box, whose arrays' delimiter is ';' where every other built-in's is ',',
                # stays text.)
                each = elem != 603 and elem and (codecs.decoders.get(elem) or _FIELDS.get(elem))
                if parse is None and each:
                    parse = _functools.partial(_array_items, parse=each)
                if f is None or parse is None:
                    values.append(f)
                    continue
                try:
                    values.append(parse(f))
                except ValueError as e:
                    raise ValueError(f"field {i + 1} {f[:40]!r}: {e}") from e
        except ValueError as e:
            raise ValueError(f"cannot read composite {name}: {e}") from e
        try:
            return decoder(tuple(values))
        except MemoryError:
            raise
        except Exception as e:
            raise ValueError(f"the decoder of type {name} failed: {e}") from e

    return decode


def _field_text(v: Any, oid: int, elem: int) -> str:
    """The text of a composite's field from a Python value (the types keel sends itself; a
    list for an array field, of its elements)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v)
    if isinstance(v, (int, _decimal.Decimal, _uuid.UUID)):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(v).hex()
    if isinstance(v, (_dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return f"{v.days} days {v.seconds} seconds {v.microseconds} microseconds"
    if isinstance(v, (dict, list)) and oid in (114, 3802):
        return _json.dumps(v)
    if isinstance(v, (list, tuple)) and elem:
        return _array_text(v, elem)
    raise TypeError(f"a {type(v).__name__}: give a str (the field's text), None, or a bool, int, "
                    "float, Decimal, str, bytes, UUID, date, time, datetime, timedelta (a list for "
                    "an array)")


def _quoted(text: str) -> str:
    """text quoted as record_in and array_in read it."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array_text(v: list[Any] | tuple[Any, ...], elem: int) -> str:
    """The text of an array of elem from a list (nested lists for more dimensions, None as
    NULL; a list in an array of json is a JSON value)."""
    items = []
    for e in v:
        if e is None:
            items.append("NULL")
        elif isinstance(e, (list, tuple)) and elem not in (114, 3802):
            items.append(_array_text(e, elem))
        else:
            items.append(_quoted(_field_text(e, elem, 0)))
    return "{" + ",".join(items) + "}"


def _composite_encoder(encoder: Callable[[Any], Any], name: str,
                       types: tuple[tuple[int, int], ...]) -> Callable[[Any], str]:
    """encoder's tuple of field values as the composite's text (every field quoted, so an
    empty str is not NULL), the form keel sends it in."""

    def encode(value: Any) -> str:
        out = encoder(value)
        if not isinstance(out, (tuple, list)) or len(out) != len(types):
            raise TypeError(f"returned {out!r}, not a tuple of {len(types)} fields "
                            "(format='tuple')")
        items = []
        for i, (v, (oid, elem)) in enumerate(zip(out, types)):
            if v is None:
                items.append("")
                continue
            try:
                items.append(_quoted(_field_text(v, oid, elem)))
            except TypeError as e:
                raise TypeError(f"field {i + 1}: {e}") from None
        return "(" + ",".join(items) + ")"

    return encode


def _needs_encoding(args: Any) -> bool:
    for a in args:
        if isinstance(a, (list, tuple)):
            if _needs_encoding(a):
                return True
        elif not isinstance(a, _NATIVE):
            return True
    return False


def _encode_one(codecs: _Codecs, i: int, tname: str, enc: Callable[[Any], Any], a: Any,
                at: str) -> str:
    try:
        text = enc(a)
    except Exception as e:
        name = codecs.names.get(tname, tname)
        raise _native.DataError(f"parameter ${i + 1}: {at}the encoder of type {name} "
                                f"failed: {e}") from e
    if not isinstance(text, str):
        name = codecs.names.get(tname, tname)
        raise _native.DataError(f"parameter ${i + 1}: {at}the encoder of type {name} "
                                f"returned {type(text).__name__}, not str (format='text')")
    return text


def _encode_list(codecs: _Codecs, i: int, tname: str, enc: Callable[[Any], Any], a: Any,
                 at: str) -> list[Any]:
    """A list for an array of a type with an encoder: its elements (nested lists for more
    dimensions) through the encoder, keel's own values as they are."""
    out: list[Any] = []
    for j, e in enumerate(a):
        where = f"{at}[{j}]"
        if isinstance(e, (list, tuple)):
            out.append(_encode_list(codecs, i, tname, enc, e, where))
        elif isinstance(e, _NATIVE):
            out.append(e)
        else:
            out.append(_encode_one(codecs, i, tname, enc, e, f"element {where}: "))
    return out


def _array_literal(codecs: _Codecs, i: int, tname: str, enc: Callable[[Any], Any], a: Any,
                   at: str) -> str:
    """A list for an array of a type with a binary or tuple encoder as the array's literal: its
    elements (nested lists for more dimensions) through the encoder, None as NULL, a str as
    the element's text."""
    items = []
    for j, e in enumerate(a):
        where = f"{at}[{j}]"
        if e is None:
            items.append("NULL")
            continue
        if isinstance(e, (list, tuple)):
            items.append(_array_literal(codecs, i, tname, enc, e, where))
            continue
        if not isinstance(e, str):
            if isinstance(e, _NATIVE):
                name = codecs.names.get(tname, tname)
                raise _native.DataError(
                    f"parameter ${i + 1}: element {where}: a {type(e).__name__} in a list for "
                    f"an array of {name}, whose codec has format='binary' or 'tuple': give "
                    "values for its encoder, the text of an element, or None")
            e = _encode_one(codecs, i, tname, enc, e, f"element {where}: ")
        items.append(_quoted(e))
    return "{" + ",".join(items) + "}"


async def _encode(codecs: _Codecs, key: tuple[str | None, str], prepare: Any,
                  args: tuple) -> tuple:
    types = codecs.described.get(key)
    if types is None:
        stmt = await prepare()
        types = tuple(p.name for p in stmt.parameters)
        codecs.described[key] = types
    out = list(args)
    for i, a in enumerate(args):
        if i >= len(types) or types[i] is None:
            continue
        if isinstance(a, (list, tuple)):
            elem = codecs.arrays.get(types[i])
            enc = codecs.encoders.get(elem) if elem is not None else None
            if enc is not None and elem in codecs.literals:
                out[i] = _array_literal(codecs, i, elem, enc, a, "")
            elif enc is not None:
                out[i] = _encode_list(codecs, i, elem, enc, a, "")
        elif not isinstance(a, _NATIVE):
            enc = codecs.encoders.get(types[i])
            if enc is not None:
                out[i] = _encode_one(codecs, i, types[i], enc, a, "")
    return tuple(out)


async def encode_db_args(db: Database, sql: str, args: tuple, database: str | None) -> tuple:
    codecs = db.__dict__.get("_keel_codecs")
    if codecs is None or not codecs.encoders or not _needs_encoding(args):
        return args

    async def prepare() -> Any:
        async with db.connection(database) as conn:
            return await conn.prepare(sql)

    return await _encode(codecs, (database, sql), prepare, args)


async def encode_conn_args(conn: Connection, sql: str, args: tuple) -> tuple:
    codecs = conn._db.__dict__.get("_keel_codecs")
    if codecs is None or not codecs.encoders or not _needs_encoding(args):
        return args

    async def prepare() -> Any:
        return await conn.prepare(sql)

    return await _encode(codecs, (conn.database, sql), prepare, args)


def install(db: Database) -> None:
    """Routes db's single statements through encode_db_args (only once a codec has an encoder,
    so a Database without one keeps its direct path)."""
    if "_query" in db.__dict__:
        return
    native = _native.Database._query.__get__(db)

    async def _query(mode: int, sql: str, args: tuple, database: str | None, *rest: Any) -> Any:
        args = await encode_db_args(db, sql, args, database)
        return await native(mode, sql, args, database, *rest)

    db.__dict__["_query"] = _query


async def _encode_rows(codecs: _Codecs, key: tuple[str | None, str], prepare: Any,
                       rows: Any) -> Any:
    rows = list(rows)  # once: rows may be an iterator
    if not any(isinstance(r, (tuple, list)) and _needs_encoding(tuple(r)) for r in rows):
        return rows
    out = []
    for r in rows:
        if isinstance(r, (tuple, list)) and _needs_encoding(tuple(r)):
            r = await _encode(codecs, key, prepare, tuple(r))
        out.append(r)
    return out


async def encode_db_rows(db: Database, sql: str, rows: Any, database: str | None) -> Any:
    """executemany's rows with encoders applied (rows unchanged when db has no encoder)."""
    codecs = db.__dict__.get("_keel_codecs")
    if codecs is None or not codecs.encoders:
        return rows

    async def prepare() -> Any:
        async with db.connection(database) as conn:
            return await conn.prepare(sql)

    return await _encode_rows(codecs, (database, sql), prepare, rows)


async def encode_conn_rows(conn: Connection, sql: str, rows: Any) -> Any:
    codecs = conn._db.__dict__.get("_keel_codecs")
    if codecs is None or not codecs.encoders:
        return rows

    async def prepare() -> Any:
        return await conn.prepare(sql)

    return await _encode_rows(codecs, (conn.database, sql), prepare, rows)
