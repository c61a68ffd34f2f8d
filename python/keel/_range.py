# python/keel/_range.py - keel.Range: a PostgreSQL range value (asyncpg's Range, same names).
from __future__ import annotations

import datetime as _dt
from typing import Any

__all__ = ["Range"]


def _bound_text(value: Any) -> str:
    """One bound as PostgreSQL's range literal reads it: quoted, '"' and '\\' escaped."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, (_dt.date, _dt.time)) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Range:
    """A range of a PostgreSQL range type (int4range, numrange, daterange, tstzrange…).

    Range(1, 5) is [1,5); a bound of None is unbounded (lower_inf / upper_inf); Range(empty=True)
    is the empty range. Results of the built-in range types come back as Range; a Range
    parameter goes as its text ("[1,5)"), which the server reads as the type the statement
    gives it (a cast, or a range column); copy_records_to_table loads it in binary, its bounds
    encoded for the column's range type.
    """

    __slots__ = ("_lower", "_upper", "_lower_inc", "_upper_inc", "_empty")

    def __init__(self, lower: Any = None, upper: Any = None, *, lower_inc: bool = True,
                 upper_inc: bool = False, empty: bool = False) -> None:
        self._empty = bool(empty)
        self._lower = None if empty else lower
        self._upper = None if empty else upper
        self._lower_inc = bool(lower_inc) and self._lower is not None
        self._upper_inc = bool(upper_inc) and self._upper is not None

    @property
    def lower(self) -> Any:
        return self._lower

    @property
    def upper(self) -> Any:
        return self._upper

    @property
    def lower_inc(self) -> bool:
        return self._lower_inc

    @property
    def upper_inc(self) -> bool:
        return self._upper_inc

    @property
    def lower_inf(self) -> bool:
        return self._lower is None and not self._empty

    @property
    def upper_inf(self) -> bool:
        return self._upper is None and not self._empty

    @property
    def isempty(self) -> bool:
        return self._empty

    def __bool__(self) -> bool:
        return not self._empty

    def _key(self) -> tuple:
        return (self._lower, self._upper, self._lower_inc, self._upper_inc, self._empty)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Range):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        if self._empty:
            return "<Range empty>"
        return "<Range {}{!r}, {!r}{}>".format("[" if self._lower_inc else "(", self._lower,
                                               self._upper, "]" if self._upper_inc else ")")

    def _keel_text(self) -> str:
        """The range's literal: "empty", or "[lower,upper)" with quoted bounds."""
        if self._empty:
            return "empty"
        return "{}{},{}{}".format("[" if self._lower_inc else "(", _bound_text(self._lower),
                                  _bound_text(self._upper), "]" if self._upper_inc else ")")
