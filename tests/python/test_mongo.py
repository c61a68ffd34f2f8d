# tests/python/test_mongo.py - MongoDB from Python: the BSON codec, ObjectId, collections, cursors, transactions, errors.
"""The MongoDB side of keel.

The codec and ObjectId tests need no server: they check encode/decode against byte strings
built by hand from the BSON specification (bsonspec.org) and the Decimal128 vectors of its test
corpus. Everything else runs against the server at KEEL_TEST_MONGO_URL (SecantusDB, started by
scripts/mongo-server), in collections with unique names dropped after each test, since other
suites may use the same server at the same time.
"""
import asyncio
import collections.abc
import copy
import datetime
import decimal
import enum
import os
import pickle
import re
import struct
import time
import types
import uuid
import weakref

import httpx
import pytest
from fastapi import Depends, FastAPI

import keel
from conftest import unique_name, wait_until
from keel import _native
from keel.fastapi import Keel

MONGO_URL = os.environ.get("KEEL_TEST_MONGO_URL", "mongodb://127.0.0.1:27017/keel_test")
UTC = datetime.timezone.utc
MiB = 1024 * 1024


def enc(doc):
    return _native.bson_encode(doc)


def dec(data):
    return _native.bson_decode(data)


def cstr(s):
    return s.encode() + b"\0"


def document(*elements):
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def element(type_byte, key, payload):
    return bytes([type_byte]) + cstr(key) + payload


def string(s):
    b = s.encode()
    return struct.pack("<i", len(b) + 1) + b + b"\0"


# ---- the codec, by hand-built byte strings ----

def test_spec_examples():
    hello = b"\x16\x00\x00\x00\x02hello\x00\x06\x00\x00\x00world\x00\x00"
    assert enc({"hello": "world"}) == hello
    assert dec(hello) == {"hello": "world"}
    awesome = (b"\x31\x00\x00\x00\x04BSON\x00\x26\x00\x00\x00\x020\x00\x08\x00\x00\x00awesome"
               b"\x00\x011\x00\x33\x33\x33\x33\x33\x33\x14\x40\x102\x00\xc2\x07\x00\x00\x00\x00")
    assert enc({"BSON": ["awesome", 5.05, 1986]}) == awesome
    assert dec(awesome) == {"BSON": ["awesome", 5.05, 1986]}


@pytest.mark.parametrize("value, expected", [
    (None, element(0x0A, "v", b"")),
    (True, element(0x08, "v", b"\x01")),
    (False, element(0x08, "v", b"\x00")),
    (0, element(0x10, "v", struct.pack("<i", 0))),
    (2**31 - 1, element(0x10, "v", struct.pack("<i", 2**31 - 1))),
    (-2**31, element(0x10, "v", struct.pack("<i", -2**31))),
    (2**31, element(0x12, "v", struct.pack("<q", 2**31))),
    (-2**31 - 1, element(0x12, "v", struct.pack("<q", -2**31 - 1))),
    (2**63 - 1, element(0x12, "v", struct.pack("<q", 2**63 - 1))),
    (-2**63, element(0x12, "v", struct.pack("<q", -2**63))),
    (1.5, element(0x01, "v", struct.pack("<d", 1.5))),
    (-0.0, element(0x01, "v", struct.pack("<d", -0.0))),
    ("", element(0x02, "v", string(""))),
    ("nul\0inside ü", element(0x02, "v", string("nul\0inside ü"))),
    (b"\x00\xffbin", element(0x05, "v", struct.pack("<i", 5) + b"\x00" + b"\x00\xffbin")),
    ({}, element(0x03, "v", document())),
    ([], element(0x04, "v", document())),
    ({"a": [1, {"b": None}]}, element(0x03, "v", document(element(0x04, "a", document(
        element(0x10, "0", struct.pack("<i", 1)),
        element(0x03, "1", document(element(0x0A, "b", b""))))))))
])
def test_scalar_and_container_encoding(value, expected):
    data = enc({"v": value})
    assert data == document(expected)
    back = dec(data)["v"]
    assert back == value and type(back) is type(value)


def test_other_encodings_by_hand():
    u = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    assert enc({"u": u}) == document(element(0x05, "u", struct.pack("<i", 16) + b"\x04" + u.bytes))
    oid = keel.ObjectId("5f0a1b2c3d4e5f6a7b8c9d0e")
    assert enc({"o": oid}) == document(element(0x07, "o", bytes.fromhex("5f0a1b2c3d4e5f6a7b8c9d0e")))
    # Tuples and bytearray/memoryview encode as arrays and binary, decoded as list and bytes.
    assert dec(enc({"t": (1, 2)})) == {"t": [1, 2]}
    assert dec(enc({"b": bytearray(b"ab"), "m": memoryview(b"cd")})) == {"b": b"ab", "m": b"cd"}
    # Regular expressions: pattern and flags as two cstrings, flags sorted.
    assert enc({"r": keel.Regex("a.c", "mi")}) == document(element(0x0B, "r", b"a.c\0im\0"))
    assert enc({"r": re.compile("a.c", re.I | re.S)}) == document(element(0x0B, "r", b"a.c\0is\0"))
    # Timestamps: increment in the low 32 bits, time in the high ones.
    assert enc({"ts": keel.Timestamp(7, 9)}) == document(element(0x11, "ts", struct.pack("<II", 9, 7)))
    # Key order is kept: a command's name must come first.
    data = enc({"find": "c", "filter": {}, "limit": 1})
    assert list(dec(data)) == ["find", "filter", "limit"]
    assert data[4:10] == b"\x02find\x00"


def test_decoding_by_hand():
    u = uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF)
    data = document(
        element(0x10, "i32", struct.pack("<i", -7)),
        element(0x12, "i64", struct.pack("<q", 1 << 40)),
        element(0x05, "old", struct.pack("<i", 7) + b"\x02" + struct.pack("<i", 3) + b"abc"),
        element(0x05, "uuid", struct.pack("<i", 16) + b"\x04" + u.bytes),
        element(0x09, "dt", struct.pack("<q", 1_600_000_000_123)),
        element(0x0B, "re", b"^x\0ix\0"),
        element(0x11, "ts", struct.pack("<II", 1, 1_700_000_000)),
        element(0x07, "oid", bytes(range(12))),
    )
    got = dec(data)
    assert got["i32"] == -7 and got["i64"] == 1 << 40
    assert got["old"] == b"abc"       # the old binary subtype loses its inner length
    assert got["uuid"] == u
    assert got["dt"] == datetime.datetime(2020, 9, 13, 12, 26, 40, 123000, tzinfo=UTC)
    assert got["dt"].tzinfo is UTC
    assert got["re"] == keel.Regex("^x", "ix")
    assert got["ts"] == keel.Timestamp(1_700_000_000, 1)
    assert got["oid"] == keel.ObjectId(bytes(range(12)))


# Decimal128 vectors of the BSON corpus (decimal128-1.json), as {"d": value} documents.
DECIMAL_VECTORS = [
    ("NaN", "180000001364000000000000000000000000000000007C00"),
    ("-NaN", "18000000136400000000000000000000000000000000FC00"),
    ("sNaN", "180000001364000000000000000000000000000000007E00"),
    ("Infinity", "180000001364000000000000000000000000000000007800"),
    ("-Infinity", "18000000136400000000000000000000000000000000F800"),
    ("0.001234", "18000000136400D204000000000000000000000000343000"),
    ("1", "180000001364000100000000000000000000000000403000"),
    ("1234567890123456789012345678901234", "18000000136400F2AF967ED05C82DE3297FF6FDE3C403000"),
    ("9.999999999999999999999999999999999E+6144",
     "18000000136400FFFFFFFF638E8D37C087ADBE09EDFF5F00"),
    ("1E-6176", "180000001364000100000000000000000000000000000000"),
    ("-0", "18000000136400000000000000000000000000000040B000"),
    ("1.50", "1800000013640096000000000000000000000000003C3000"),
]


@pytest.mark.parametrize("text, hexdata", DECIMAL_VECTORS)
def test_decimal128_vectors(text, hexdata):
    data = bytes.fromhex(hexdata)
    value = decimal.Decimal(text)
    assert enc({"d": value}) == data
    back = dec(data)["d"]
    assert isinstance(back, decimal.Decimal)
    # Exact: same sign, digits and exponent (so "1.50" stays "1.50" and -0 stays -0).
    assert str(back) == str(value)


def test_decimal128_exactness_and_range():
    def roundtrip(text):
        return dec(enc({"d": decimal.Decimal(text)}))["d"]

    # Representable values whose form must change keep their value exactly.
    assert roundtrip("1E+6144") == decimal.Decimal("1E+6144")       # coefficient padded
    assert roundtrip("1" + "0" * 40) == decimal.Decimal("1" + "0" * 40)   # trailing zeros dropped
    assert str(roundtrip("0E+9000")) == "0E+6111"                     # zero: any exponent
    for bad in ["1E+6145", "1" * 35, "1E-6177", "-1.000000000000000000000000000000001E-6176"]:
        with pytest.raises(keel.DataError, match="Decimal128"):
            enc({"d": decimal.Decimal(bad)})
    # Non-canonical encodings (coefficient >= 10**34, or the second combination form) decode
    # as zero, as IEEE 754-2008 says.
    too_big = ((6176 << 113) | 10**34).to_bytes(16, "little")
    assert dec(document(element(0x13, "d", too_big)))["d"] == 0
    second_form = bytes(15) + b"\x6c"
    assert dec(document(element(0x13, "d", second_form)))["d"] == 0


def test_datetimes():
    naive = datetime.datetime(2021, 3, 4, 5, 6, 7, 891234)
    data = enc({"t": naive})
    assert data == document(element(0x09, "t", struct.pack("<q", 1614834367891)))
    # Naive datetimes are UTC; aware ones are converted; precision is the millisecond.
    assert dec(data)["t"] == naive.replace(microsecond=891000, tzinfo=UTC)
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    aware = datetime.datetime(2021, 3, 4, 7, 6, 7, 891234, tzinfo=plus2)
    assert enc({"t": aware}) == data
    # Before 1970 the milliseconds are floored, not rounded towards zero.
    early = datetime.datetime(1969, 12, 31, 23, 59, 59, 999999)
    assert enc({"t": early}) == document(element(0x09, "t", struct.pack("<q", -1)))
    assert dec(enc({"t": early}))["t"] == datetime.datetime(1969, 12, 31, 23, 59, 59, 999000,
                                                            tzinfo=UTC)
    for ms in (-62135596800000, 253402300799999):       # the first and last Python datetimes
        assert dec(document(element(0x09, "t", struct.pack("<q", ms))))["t"].year in (1, 9999)
    with pytest.raises(keel.DataError, match="datetime"):
        dec(document(element(0x09, "t", struct.pack("<q", 253402300800000))))
    with pytest.raises(keel.DataError, match="datetime.date"):
        enc({"when": datetime.date(2020, 1, 1)})


def pymongo_like_bson_classes():
    """Classes shaped as pymongo's bson ones (their module and name, the attributes keel reads),
    for when pymongo is not installed: keel recognises them by module and name, without
    importing bson."""
    def made(module, name, body):
        cls = type(name, body.get("bases", (object,)), {k: v for k, v in body.items() if k != "bases"})
        cls.__module__ = module
        return cls

    ObjectId = made("bson.objectid", "ObjectId", {
        "__init__": lambda self, b: setattr(self, "binary", b)})
    Decimal128 = made("bson.decimal128", "Decimal128", {
        "__init__": lambda self, bid: setattr(self, "bid", bid)})
    Decimal128.from_bid = Decimal128

    def regex_init(self, pattern, flags=0):
        self.pattern, self.flags = pattern, flags
    Regex = made("bson.regex", "Regex", {"__init__": regex_init})

    def ts_init(self, time, inc):
        self.time, self.inc = time, inc
    Timestamp = made("bson.timestamp", "Timestamp", {"__init__": ts_init})

    def binary_new(cls, data, subtype=0):
        self = bytes.__new__(cls, data)
        self.subtype = subtype
        return self
    Binary = made("bson.binary", "Binary", {"bases": (bytes,), "__new__": binary_new})
    Code = made("bson.code", "Code", {})
    return types.SimpleNamespace(ObjectId=ObjectId, Decimal128=Decimal128, Regex=Regex,
                                 Timestamp=Timestamp, Binary=Binary, Code=Code)


def check_pymongo_bson_values(bson):
    """bson's ObjectId, Decimal128, Regex, Timestamp and Binary encode as keel's own values."""
    oid = keel.ObjectId()
    assert enc({"x": bson.ObjectId(oid.binary)}) == enc({"x": oid})
    d = decimal.Decimal("1.50")
    bid = enc({"d": d})[7:23]
    assert enc({"d": bson.Decimal128.from_bid(bid)}) == enc({"d": d})
    assert enc({"r": bson.Regex("^a.c$", re.I | re.M | re.X)}) == enc({"r": keel.Regex("^a.c$", "imx")})
    assert enc({"r": bson.Regex("^a", 0)}) == enc({"r": keel.Regex("^a")})
    assert enc({"t": bson.Timestamp(1700000000, 7)}) == enc({"t": keel.Timestamp(1700000000, 7)})
    u = uuid.uuid4()
    assert enc({"u": bson.Binary(u.bytes, 4)}) == enc({"u": u})
    assert enc({"b": bson.Binary(b"ab", 0)}) == enc({"b": b"ab"})
    # Decoded as keel's types.
    back = dec(enc({"x": bson.ObjectId(oid.binary), "d": bson.Decimal128.from_bid(bid)}))
    assert back == {"x": oid, "d": d}


def test_pymongo_bson_values_by_their_shape():
    fake = pymongo_like_bson_classes()
    check_pymongo_bson_values(fake)
    # Another class of bson's is refused by name, naming pymongo.
    with pytest.raises(keel.DataError,
                       match=r"cannot encode bson\.Code \(pymongo's\) as BSON: .*ObjectId.* at 'c\.0'"):
        enc({"c": [fake.Code()]})
    # A bson class whose attributes are wrong is a DataError naming what is missing.
    with pytest.raises(keel.DataError, match=r"bson\.ObjectId \(pymongo's\) has no 12-byte \.binary at 'x'"):
        enc({"x": fake.ObjectId(b"short")})
    with pytest.raises(keel.DataError, match=r"bson\.Timestamp \(pymongo's\) time or inc is out of range"):
        enc({"t": fake.Timestamp(2**32, 0)})
    with pytest.raises(keel.DataError, match=r"bson\.Binary \(pymongo's\) subtype is not 0-255"):
        enc({"b": fake.Binary(b"x", 300)})
    with pytest.raises(keel.DataError, match=r"bson\.Regex \(pymongo's\) with a bytes pattern"):
        enc({"r": fake.Regex(b"x")})


def test_pymongo_bson_values():
    import sys
    sys.modules.setdefault("pymongo._cmessage", None)
    bson = pytest.importorskip("bson")
    check_pymongo_bson_values(bson)


async def test_pymongo_bson_values_on_the_server(coll):
    fake = pymongo_like_bson_classes()
    oid = keel.ObjectId()
    bid = enc({"d": decimal.Decimal("2.5")})[7:23]
    await coll.insert_one({"_id": fake.ObjectId(oid.binary), "d": fake.Decimal128.from_bid(bid),
                           "name": "Ada"})
    doc = await coll.find_one({"_id": fake.ObjectId(oid.binary)})
    assert doc == {"_id": oid, "d": decimal.Decimal("2.5"), "name": "Ada"}
    assert await coll.count_documents({"name": fake.Regex("^ad", re.I)}) == 1
    r = await coll.update_one({"_id": fake.ObjectId(oid.binary)}, {"$set": {"n": 1}})
    assert r.matched_count == 1
    with pytest.raises(keel.DataError, match=r"bson\.Code \(pymongo's\)"):
        await coll.insert_one({"c": fake.Code()})
    assert await coll.count_documents({}) == 1


def test_encode_errors_name_the_key_path():
    with pytest.raises(keel.DataError, match="must be a dict"):
        enc([1, 2])
    with pytest.raises(keel.DataError, match=r"must be str, not int at 'a\.b'"):
        enc({"a": {"b": {1: "x"}}})
    with pytest.raises(keel.DataError, match=r"NUL character at 'a\.x"):
        enc({"a": {"x\0y": 1}})
    with pytest.raises(keel.DataError, match=r"int64 range of BSON at 'n\.2'"):
        enc({"n": [0, 1, 2**63]})
    with pytest.raises(keel.DataError, match=r"int64 range of BSON at 'n'"):
        enc({"n": -2**63 - 1})
    with pytest.raises(keel.DataError, match=r"type set as BSON at 'x\.1'"):
        enc({"x": [None, {1, 2}]})
    with pytest.raises(keel.DataError, match="nested more than 512"):
        deep = {}
        for _ in range(600):
            deep = {"d": deep}
        enc(deep)
    cyclic = {}
    cyclic["self"] = cyclic
    with pytest.raises(keel.DataError, match="nested more than 512"):
        enc(cyclic)
    with pytest.raises(keel.DataError, match="UTF-8"):
        enc({"s": "\udc80"})
    with pytest.raises(keel.DataError, match="re.ASCII"):
        enc({"r": re.compile("a", re.A)})


def test_decode_errors():
    # An unknown type byte is named, with the key path.
    js = document(element(0x03, "a", document(element(0x0D, "code", string("1+1")))))
    with pytest.raises(keel.DataError, match=r"0x0D \(JavaScript code\) at 'a\.code'"):
        dec(js)
    with pytest.raises(keel.DataError, match="0xFF"):
        dec(document(element(0xFF, "min", b"")))
    with pytest.raises(keel.DataError, match="subtype 0x80"):
        dec(document(element(0x05, "b", struct.pack("<i", 1) + b"\x80x")))
    good = enc({"a": "text", "b": [1, 2]})
    malformed = [
        good[:-1],                                   # missing terminator
        good[:10],                                   # truncated
        struct.pack("<i", len(good) + 1) + good[4:],  # length header too big
        good[:-2] + b"\x01\x00",                     # trailing garbage element
        document(element(0x02, "s", struct.pack("<i", 100) + b"ab\0")),   # string runs past
        document(element(0x02, "s", struct.pack("<i", 3) + b"\xff\xfe\0")),  # invalid UTF-8
        document(element(0x08, "b", b"\x02")),       # a boolean that is neither 0 nor 1
        b"\x05\x00\x00",
    ]
    for data in malformed:
        with pytest.raises(keel.DataError):
            dec(data)


def test_size_limits():
    # A document of exactly 16 MiB is fine; one byte more is refused before anything is sent.
    overhead = len(enc({"s": ""}))
    exact = {"s": "x" * (16 * MiB - overhead)}
    assert len(enc(exact)) == 16 * MiB
    exact["s"] += "x"
    with pytest.raises(keel.DataError, match="16777216-byte BSON limit"):
        enc(exact)


def test_mapping_types_and_raw_documents():
    import collections
    import types
    od = collections.OrderedDict([("b", 1), ("a", 2)])
    assert list(dec(enc({"m": od}))["m"]) == ["b", "a"]
    assert dec(enc({"m": types.MappingProxyType({"x": 1})})) == {"m": {"x": 1}}
    raw = _native.RawDocument(enc({"inner": True}))
    assert dec(enc({"r": raw})) == {"r": {"inner": True}}
    with pytest.raises(keel.DataError, match="RawDocument"):
        enc({"r": _native.RawDocument(b"\x07\x00\x00\x00")})


def test_decoder_survives_mutations():
    # Random damage must raise DataError (or decode), never crash or raise something else.
    import random
    rng = random.Random(7)
    base = bytearray(enc({"a": 1, "b": [1, {"c": "xyz", "d": b"bin"}], "e": 2.5,
                          "o": keel.ObjectId(), "u": uuid.uuid4(), "t": datetime.datetime(2020, 1, 1),
                          "m": decimal.Decimal("1.5"), "r": keel.Regex("a", "i"),
                          "ts": keel.Timestamp(1, 2)}))
    for _ in range(20000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.5:
            data[0:4] = struct.pack("<i", len(data))
        try:
            dec(bytes(data))
        except keel.DataError:
            pass


# ---- ObjectId and the small value types ----

def test_objectid_generation():
    before = int(time.time())
    a, b = keel.ObjectId(), keel.ObjectId()
    after = int(time.time())
    ra, rb = bytes(a), bytes(b)
    assert len(ra) == 12 and ra != rb
    assert before <= int.from_bytes(ra[:4], "big") <= after
    assert ra[4:9] == rb[4:9]                      # the same process
    assert int.from_bytes(rb[9:], "big") == (int.from_bytes(ra[9:], "big") + 1) % 2**24
    assert a < b and sorted([b, a]) == [a, b]
    gt = a.generation_time
    assert gt.tzinfo is UTC and before <= gt.timestamp() <= after


def test_objectid_parsing_and_protocols():
    h = "5f0a1b2c3d4e5f6a7b8c9d0e"
    o = keel.ObjectId(h)
    assert str(o) == h and repr(o) == f"ObjectId('{h}')"
    assert bytes(o) == bytes.fromhex(h) == o.binary
    assert keel.ObjectId(h.upper()) == o == keel.ObjectId(bytes.fromhex(h)) == keel.ObjectId(o)
    assert o != h and o != bytes(o)
    assert hash(o) == hash(keel.ObjectId(h)) and len({o, keel.ObjectId(h)}) == 1
    assert o.generation_time == datetime.datetime.fromtimestamp(0x5F0A1B2C, UTC)
    assert pickle.loads(pickle.dumps(o)) == o and copy.deepcopy(o) == o
    for bad in ["", "xyz", h[:-1], h + "0", "g" * 24, b"short"]:
        with pytest.raises(ValueError, match="not a valid ObjectId"):
            keel.ObjectId(bad)
        assert not keel.ObjectId.is_valid(bad)
    with pytest.raises(TypeError):
        keel.ObjectId(12)
    assert keel.ObjectId.is_valid(h) and keel.ObjectId.is_valid(o) and keel.ObjectId.is_valid(bytes(12))
    assert not keel.ObjectId.is_valid(None) and not keel.ObjectId.is_valid(3.5)
    lo = keel.ObjectId.from_datetime(datetime.datetime(2020, 1, 1))
    assert bytes(lo)[4:] == bytes(8) and lo.generation_time == datetime.datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_objectid_after_fork_is_another_process():
    parent = bytes(keel.ObjectId())[4:9]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, bytes(keel.ObjectId()))
        os._exit(0)
    os.close(w)
    child = os.read(r, 12)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 12 and child[4:9] != parent


def test_regex_and_timestamp_types():
    r = keel.Regex("^a", "xmi")
    assert (r.pattern, r.flags) == ("^a", "imx") and repr(r) == "Regex('^a', 'imx')"
    assert r == keel.Regex("^a", "imx") and hash(r) == hash(keel.Regex("^a", "mix"))
    assert pickle.loads(pickle.dumps(r)) == r
    with pytest.raises(ValueError):
        keel.Regex("a", "I")
    with pytest.raises(ValueError):
        keel.Regex("a\0b")
    t = keel.Timestamp(10, 2)
    assert (t.time, t.inc) == (10, 2) and repr(t) == "Timestamp(10, 2)"
    assert keel.Timestamp(10, 1) < t < keel.Timestamp(11, 0) and t == keel.Timestamp(10, 2)
    assert pickle.loads(pickle.dumps(t)) == t and hash(t) == hash(keel.Timestamp(10, 2))
    with pytest.raises(ValueError):
        keel.Timestamp(2**32, 0)


# ---- against the server ----

@pytest.fixture
def mongo_config(tmp_path):
    """Two databases: "docs" on MongoDB (the default) and "local" on SQLite."""
    return {"default": "docs", "databases": {
        "docs": {"url": MONGO_URL},
        "local": {"url": "sqlite:///" + str(tmp_path / "local.db")}}}


@pytest.fixture
async def mongo_db(mongo_config):
    d = keel.Database(mongo_config)
    await d.start()
    try:
        await asyncio.wait_for(d.ping("docs"), 30)
    except keel.Error as exc:
        pytest.fail(f"no MongoDB server at {MONGO_URL} (start one with scripts/mongo-server): {exc}")
    yield d
    await asyncio.wait_for(d.close(), 30)


@pytest.fixture
async def new_coll(mongo_db):
    """Factory of collections of "docs" with unique names, dropped after the test."""
    made = []

    def make(prefix="c"):
        c = mongo_db.collection(unique_name(prefix), database="docs")
        made.append(c)
        return c

    yield make
    for c in made:
        await c.drop()


@pytest.fixture
def coll(new_coll):
    return new_coll()


async def cursor_is_gone(db, coll_name, cursor_id):
    """True when the server no longer has the cursor (killCursors reports it as not found)."""
    reply = await db.command(None, {"killCursors": coll_name, "cursors": [cursor_id]},
                             database="docs")
    return cursor_id in reply["cursorsNotFound"]


async def open_cursors(db):
    status = await db.command("admin", {"serverStatus": 1}, database="docs")
    return status["metrics"]["cursor"]["open"]["total"]


async def test_crud(mongo_db, coll):
    doc = {"name": "ada", "age": 36}
    r = await coll.insert_one(doc)
    assert isinstance(r, keel.InsertOneResult) and r.acknowledged
    assert isinstance(r.inserted_id, keel.ObjectId) and doc["_id"] == r.inserted_id
    r = await coll.insert_one({"_id": "custom", "name": "bob", "age": 25})
    assert r.inserted_id == "custom"
    many = await coll.insert_many([{"name": f"u{i}", "age": i} for i in range(10)])
    assert isinstance(many, keel.InsertManyResult) and len(many.inserted_ids) == 10

    assert await coll.find_one({"name": "ada"}) == {"_id": doc["_id"], "name": "ada", "age": 36}
    assert await coll.find_one(doc["_id"]) == await coll.find_one({"_id": doc["_id"]})
    assert await coll.find_one({"name": "nobody"}) is None
    assert await coll.find_one({"name": "bob"}, projection={"_id": 0, "age": 1}) == {"age": 25}
    assert await coll.find_one({"name": "bob"}, ["name"]) == {"_id": "custom", "name": "bob"}
    oldest = await coll.find_one({}, sort=[("age", -1)])
    assert oldest["name"] == "ada"

    page = await coll.find({"age": {"$lt": 10}}, sort=[("age", 1)], skip=2, limit=3).to_list()
    assert [d["age"] for d in page] == [2, 3, 4]
    names = [d["name"] async for d in coll.find({}, {"name": 1}, sort="name", limit=2)]
    assert names == ["ada", "bob"]
    assert await coll.count_documents({}) == 12
    assert await coll.count_documents({"age": {"$gte": 5}}) == 7
    assert await coll.count_documents({"age": {"$gte": 5}}, skip=2, limit=3) == 3
    assert await coll.count_documents({"name": "nobody"}) == 0
    assert await coll.estimated_document_count() == 12

    r = await coll.update_one({"name": "ada"}, {"$set": {"age": 37}})
    assert (r.matched_count, r.modified_count, r.upserted_id) == (1, 1, None)
    r = await coll.update_many({"age": {"$lt": 10}}, {"$inc": {"age": 100}})
    assert (r.matched_count, r.modified_count) == (10, 10)
    r = await coll.update_one({"name": "nobody"}, {"$set": {"age": 1}})
    assert (r.matched_count, r.modified_count, r.upserted_id) == (0, 0, None)
    r = await coll.update_one({"name": "zed"}, {"$set": {"age": 50}}, upsert=True)
    assert r.matched_count == 0 and isinstance(r.upserted_id, keel.ObjectId)
    r = await coll.update_many({"name": "pipe"}, [{"$set": {"n": 1}}], upsert=True)
    assert r.upserted_id is not None
    r = await coll.replace_one({"name": "zed"}, {"name": "zed", "replaced": True})
    assert (r.matched_count, r.modified_count) == (1, 1)
    zed = await coll.find_one({"name": "zed"})
    assert zed["replaced"] is True and "age" not in zed
    r = await coll.replace_one({"name": "new"}, {"name": "new"}, upsert=True)
    assert r.upserted_id is not None

    r = await coll.delete_one({"name": "zed"})
    assert isinstance(r, keel.DeleteResult) and r.deleted_count == 1
    assert (await coll.delete_one({"name": "zed"})).deleted_count == 0
    assert (await coll.delete_many({"age": {"$gte": 100}})).deleted_count == 10
    assert (await coll.delete_many({})).deleted_count == 4
    assert await coll.count_documents({}) == 0


async def test_aggregate_and_indexes(mongo_db, coll):
    await coll.insert_many([{"k": i % 3, "v": i} for i in range(30)])
    pipeline = [{"$group": {"_id": "$k", "total": {"$sum": "$v"}}}, {"$sort": {"_id": 1}}]
    assert await coll.aggregate(pipeline).to_list() == [
        {"_id": 0, "total": 135}, {"_id": 1, "total": 145}, {"_id": 2, "total": 155}]
    seen = [d["v"] async for d in coll.aggregate([{"$match": {"k": 1}}, {"$sort": {"v": 1}}],
                                                   batch_size=2)]
    assert seen == list(range(1, 30, 3))
    assert await coll.create_index([("k", 1), ("v", -1)]) == "k_1_v_-1"
    assert await coll.create_index("v", unique=True) == "v_1"
    assert await coll.create_index({"k": 1}, name="by_k", sparse=True) == "by_k"
    indexes = (await mongo_db.command(None, {"listIndexes": coll.name}, database="docs"))
    by_name = {i["name"]: i for i in indexes["cursor"]["firstBatch"]}
    assert by_name["v_1"]["unique"] is True and by_name["by_k"]["sparse"] is True
    await coll.drop()
    await coll.drop()   # dropping a missing collection is fine
    assert await coll.count_documents({}) == 0


BSON_VALUES = {
    "null": None,
    "true": True,
    "false": False,
    "int32": -123,
    "int64": 2**62,
    "int64_min": -2**63,
    "double": 3.25,
    "negzero": -0.0,
    "inf": float("inf"),
    "string": "héllo wörld ✓",
    "bytes": b"\x00\x01\xfe\xff",
    "empty_bytes": b"",
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "oid": keel.ObjectId("5f0a1b2c3d4e5f6a7b8c9d0e"),
    "datetime": datetime.datetime(2024, 2, 29, 23, 59, 58, 999000, tzinfo=UTC),
    "old_datetime": datetime.datetime(1900, 1, 1, tzinfo=UTC),
    "dec": decimal.Decimal("12345.6789"),
    "dec_trailing": decimal.Decimal("1.50"),
    "dec_nan": decimal.Decimal("NaN"),
    "dec_neg_inf": decimal.Decimal("-Infinity"),
    "dec_neg_zero": decimal.Decimal("-0"),
    "dec_tiny": decimal.Decimal("1E-6176"),
    "dec_huge": decimal.Decimal("9.999999999999999999999999999999999E+6144"),
    "regex": keel.Regex("^ab+c$", "im"),
    "nested": {"a": {"b": {"c": [1, [2, [3, {"d": "deep"}]]]}}},
    "array": [1, "two", 3.0, None, {"five": 5}, [6]],
    "empty_doc": {},
    "empty_array": [],
    "sub": {"ts": keel.Timestamp(1_700_000_000, 7)},
}


async def test_every_bson_type_through_the_server(mongo_db, coll):
    doc = dict(BSON_VALUES, _id="all")
    await coll.insert_one(doc)
    back = await coll.find_one({"_id": "all"})
    assert set(back) == set(doc)
    for key, value in doc.items():
        got = back[key]
        if isinstance(value, decimal.Decimal):
            assert str(got) == str(value), key
        else:
            assert got == value and type(got) is type(value), key
    assert str(back["negzero"]) == "-0.0"
    assert back["datetime"].tzinfo is UTC
    # Values also work as query operands.
    assert (await coll.find_one({"uuid": BSON_VALUES["uuid"]}))["_id"] == "all"
    assert (await coll.find_one({"dec": decimal.Decimal("12345.67890")}))["_id"] == "all"
    assert (await coll.find_one({"datetime": {"$gt": datetime.datetime(2024, 1, 1)}}))["_id"] == "all"
    assert (await coll.find_one({"string": re.compile("^H", re.I)}))["_id"] == "all"
    assert (await coll.find_one({"string": keel.Regex("H.LLO", "i")}))["_id"] == "all"
    naive = datetime.datetime(2030, 5, 6, 7, 8, 9)
    await coll.insert_one({"_id": "naive", "t": naive})
    assert (await coll.find_one({"_id": "naive"}))["t"] == naive.replace(tzinfo=UTC)


async def test_nested_documents_and_arrays(coll):
    deep = leaf = {}
    for i in range(90):
        leaf["n"] = {"level": i, "items": [i, {"x": [i] * 3}]}
        leaf = leaf["n"]
    doc = {"_id": 1, "deep": deep, "matrix": [[i * j for j in range(20)] for i in range(20)],
           "people": [{"name": f"p{i}", "tags": ["a", "b"][: i % 3]} for i in range(50)]}
    await coll.insert_one(doc)
    assert await coll.find_one({"_id": 1}) == doc
    assert await coll.count_documents({"people.name": "p7"}) == 1
    r = await coll.update_one({"_id": 1}, {"$push": {"people": {"name": "new"}},
                                          "$set": {"matrix.0.0": -1}})
    assert r.modified_count == 1
    back = await coll.find_one({"_id": 1}, {"people": {"$slice": -1}, "matrix": 1})
    assert back["people"] == [{"name": "new"}] and back["matrix"][0][0] == -1


async def test_large_documents(mongo_db, coll):
    big_text = "x" * (10 * MiB + 123)
    blob = os.urandom(MiB)
    doc = {"_id": "big", "text": big_text, "blob": blob, "list": list(range(1000))}
    await coll.insert_one(doc)
    back = await coll.find_one({"_id": "big"})
    assert back["text"] == big_text and back["blob"] == blob and back["list"] == doc["list"]
    # Close to the 16 MiB limit: the command around the document may exceed 16 MiB.
    near = {"_id": "near", "text": "y" * (16 * MiB - 200)}
    await coll.insert_one(near)
    assert len((await coll.find_one({"_id": "near"}))["text"]) == 16 * MiB - 200
    # Past the limit: refused before sending, naming the document; the pool is unaffected.
    with pytest.raises(keel.DataError, match=r"documents\.0"):
        await coll.insert_one({"_id": "huge", "text": "z" * (16 * MiB)})
    with pytest.raises(keel.DataError, match="16777216-byte BSON limit"):
        await coll.insert_many([{"_id": "huge2", "text": "z" * (16 * MiB)}])
    # Several large documents go in as many commands as the size limit requires.
    r = await coll.insert_many([{"_id": f"m{i}", "text": str(i) * (6 * MiB)} for i in range(3)])
    assert r.inserted_ids == ["m0", "m1", "m2"]
    sizes = [len(d["text"]) async for d in coll.find({"_id": {"$in": r.inserted_ids}})]
    assert sizes == [6 * MiB] * 3
    assert await coll.count_documents({}) == 5
    assert mongo_db.pool_stats("docs")["leased"] == 0


async def test_100k_documents_stream_in_batches(mongo_db, coll):
    n = 100_000
    r = await coll.insert_many([{"i": i, "even": i % 2 == 0} for i in range(n)])
    assert len(r.inserted_ids) == n
    getmores_before = (await mongo_db.command("admin", {"serverStatus": 1},
                                              database="docs"))["opcounters"]["getmore"]
    cursor = coll.find({}, {"i": 1}, batch_size=1000)
    count = total = 0
    open_midway = None
    async for d in cursor:
        count += 1
        total += d["i"]
        if count == 5000:
            # Streaming, not buffered: the server-side cursor is open and the connection leased.
            open_midway = cursor.cursor_id
            assert open_midway and await open_cursors(mongo_db) >= 1
            assert mongo_db.pool_stats("docs")["leased"] == 1
    assert count == n and total == n * (n - 1) // 2
    assert cursor.cursor_id == 0 and not cursor.alive
    status = await mongo_db.command("admin", {"serverStatus": 1}, database="docs")
    assert status["opcounters"]["getmore"] - getmores_before >= n // 1000 - 1
    # Exhausted: the server closed its cursor and the connection went back.
    assert await cursor_is_gone(mongo_db, coll.name, open_midway)
    assert mongo_db.pool_stats("docs")["leased"] == 0
    assert len(await coll.find({"even": True}).to_list()) == n // 2


async def test_abandoned_cursors_are_killed(mongo_db, coll):
    await coll.insert_many([{"i": i} for i in range(500)])
    db = mongo_db

    # aclose()
    cursor = coll.find(batch_size=10)
    assert (await cursor.__anext__())["i"] == 0
    cid = cursor.cursor_id
    assert cid and db.pool_stats("docs")["leased"] == 1
    await cursor.aclose()
    assert db.pool_stats("docs")["leased"] == 0 and await cursor_is_gone(db, coll.name, cid)
    with pytest.raises(StopAsyncIteration):
        await cursor.__anext__()

    # async with
    async with coll.find(batch_size=10) as cursor:
        assert len(await cursor.to_list(15)) == 15
        cid = cursor.cursor_id
    assert db.pool_stats("docs")["leased"] == 0 and await cursor_is_gone(db, coll.name, cid)

    # break out of async for over a temporary cursor: killed from the loop, connection back.
    refs = []

    def track(cursor):
        refs.append(weakref.ref(cursor))
        return cursor

    async for _ in track(coll.find(batch_size=10)):
        cid = refs[0]().cursor_id
        break
    assert refs[0]() is None and cid
    await wait_until(lambda: db.pool_stats("docs")["leased"] == 0)
    assert await cursor_is_gone(db, coll.name, cid)

    # Dropped after a partial to_list.
    cursor = coll.find(batch_size=10)
    assert len(await cursor.to_list(3)) == 3
    cid = cursor.cursor_id
    del cursor
    await wait_until(lambda: db.pool_stats("docs")["leased"] == 0)
    assert await cursor_is_gone(db, coll.name, cid)


async def test_cursors_on_a_connection(mongo_db, coll):
    await coll.insert_many([{"i": i} for i in range(100)])
    async with mongo_db.connection("docs") as conn:
        c = conn.collection(coll.name)
        assert c.database == "docs"
        assert [d["i"] async for d in c.find(sort="i", batch_size=7)] == list(range(100))
        # Broken out of, or dropped: killed right before keel's next command on the connection
        # (never concurrently with the user's own commands, which must not find it busy).
        refs = []

        def track(cursor):
            refs.append(weakref.ref(cursor))
            return cursor

        async for _ in track(c.find(batch_size=5)):
            broken = refs[0]().cursor_id
            break
        cursor = c.find(batch_size=5)
        await cursor.__anext__()
        dropped = cursor.cursor_id
        del cursor
        await asyncio.sleep(0.05)
        assert await c.count_documents({}) == 100   # kills the abandoned cursors first
        assert await cursor_is_gone(mongo_db, coll.name, broken)
        assert await cursor_is_gone(mongo_db, coll.name, dropped)
        # Abandoned and not followed by another command: killed when the connection goes back.
        cursor = c.find(batch_size=5)
        await cursor.__anext__()
        cid = cursor.cursor_id
        del cursor
    assert await cursor_is_gone(mongo_db, coll.name, cid)


async def test_transactions(mongo_db, coll):
    await coll.insert_one({"_id": 0})
    async with mongo_db.connection("docs") as conn:
        c = conn.collection(coll.name)
        async with conn.transaction():
            assert conn.in_transaction
            await c.insert_one({"_id": 1})
            await c.update_one({"_id": 0}, {"$set": {"touched": True}})
            # Isolation: the write is visible inside, not yet outside.
            assert await c.count_documents({}) == 2
            assert await coll.count_documents({}) == 1
            assert await c.find({}, sort="_id").to_list() == [{"_id": 0, "touched": True}, {"_id": 1}]
        assert not conn.in_transaction
        assert await coll.count_documents({}) == 2

        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await c.insert_one({"_id": 2})
                await c.delete_one({"_id": 0})
                raise RuntimeError("abort")
        assert not conn.in_transaction
        assert sorted([d["_id"] async for d in coll.find()]) == [0, 1]

        # MongoDB has no savepoints: nesting is refused and the outer transaction goes on.
        async with conn.transaction():
            await c.insert_one({"_id": 3})
            with pytest.raises(keel.NotSupportedError, match="nested"):
                async with conn.transaction():
                    pass
            assert conn.in_transaction
            await c.insert_one({"_id": 4})
        assert await coll.count_documents({}) == 4

    # db.transaction(): commit on success, rollback on exception.
    async with mongo_db.transaction("docs") as conn:
        await conn.collection(coll.name).insert_one({"_id": 5})
    with pytest.raises(ZeroDivisionError):
        async with mongo_db.transaction("docs") as conn:
            await conn.collection(coll.name).insert_one({"_id": 6})
            1 / 0
    assert sorted([d["_id"] async for d in coll.find()]) == [0, 1, 3, 4, 5]
    assert mongo_db.pool_stats("docs")["leased"] == 0


async def test_a_transaction_started_and_ended_by_hand(mongo_db, coll):
    # tr.start() / tr.commit() / tr.rollback(), as on the SQL engines (trial finding T30).
    async with mongo_db.connection("docs") as conn:
        c = conn.collection(coll.name)
        tr = conn.transaction()
        await tr.start()
        assert conn.in_transaction
        await c.insert_one({"_id": 1})
        with pytest.raises(keel.NotSupportedError, match="nested"):
            await conn.transaction().start()
        await tr.commit()
        assert not conn.in_transaction
        with pytest.raises(keel.InterfaceError, match="it was already committed"):
            await tr.commit()
        tr = conn.transaction()
        await tr.start()
        await c.insert_one({"_id": 2})
        assert await coll.count_documents({}) == 1
        await tr.rollback()
        assert not conn.in_transaction
    assert [d["_id"] async for d in coll.find()] == [1]
    assert mongo_db.pool_stats("docs")["leased"] == 0


async def test_error_inside_a_transaction_rolls_it_back(mongo_db, coll):
    await coll.create_index("u", unique=True)
    await coll.insert_one({"u": 1})
    with pytest.raises(keel.IntegrityError):
        async with mongo_db.transaction("docs") as conn:
            c = conn.collection(coll.name)
            await c.insert_one({"u": 2})
            await c.insert_one({"u": 1})
    assert [d["u"] async for d in coll.find()] == [1]
    # The connection that went back is clean.
    async with mongo_db.transaction("docs") as conn:
        await conn.collection(coll.name).insert_one({"u": 3})
    assert await coll.count_documents({}) == 2


async def test_errors_are_mapped(mongo_db, coll):
    await coll.create_index([("email", 1)], unique=True)
    await coll.insert_one({"email": "a@x"})
    with pytest.raises(keel.IntegrityError) as info:
        await coll.insert_one({"email": "a@x"})
    err = info.value
    assert "E11000" in str(err) and err.code == "KEEL_ERR_INTEGRITY"
    assert err.engine == "mongodb" and err.database == "docs"
    # asyncpg's class for a duplicate key, and the server's own code, as on the SQL engines.
    assert type(err) is keel.UniqueViolationError and err.server_code == 11000
    with pytest.raises(keel.UniqueViolationError) as info:
        await coll.insert_many([{"email": "b@x"}, {"email": "a@x"}, {"email": "c@x"}])
    assert info.value.server_code == 11000
    assert await coll.count_documents({"email": "b@x"}) == 1          # ordered: stopped at 1
    assert await coll.count_documents({"email": "c@x"}) == 0
    with pytest.raises(keel.IntegrityError):
        await coll.insert_many([{"email": "a@x"}, {"email": "d@x"}], ordered=False)
    assert await coll.count_documents({"email": "d@x"}) == 1          # unordered: went on
    with pytest.raises(keel.IntegrityError):
        await coll.update_one({"email": "b@x"}, {"$set": {"email": "a@x"}})
    # A one-statement write's error is the server's message, without "index 0: ".
    with pytest.raises(keel.IntegrityError, match=r"^E11000 .*\(code 11000\)$") as info:
        await coll.insert_one({"email": "a@x"})
    assert info.value.engine == "mongodb" and info.value.database == "docs"
    # (the server may put "Plan executor error during update :: caused by :: " first)
    with pytest.raises(keel.IntegrityError, match=r"^(?!index 0).*E11000 "):
        await coll.update_one({"email": "b@x"}, {"$set": {"email": "a@x"}})
    with pytest.raises(keel.IntegrityError, match=r"^(?!index 0).*E11000 "):
        await coll.update_many({"email": "b@x"}, {"$set": {"email": "a@x"}})
    with pytest.raises(keel.IntegrityError, match=r"^(?!index 0).*E11000 "):
        await coll.replace_one({"email": "b@x"}, {"email": "a@x"})
    assert await coll.count_documents({"email": "b@x"}) == 1
    # A bad sort direction is a bad query, as an unknown operator is.
    with pytest.raises(keel.ProgrammingError):
        await coll.find({}, sort=[("email", 2)]).to_list()
    with pytest.raises(keel.ProgrammingError, match=r"\$sort"):
        await coll.find_one({}, sort=[("email", 2)])
    for bad in ([{"$sort": 1}], [{"$sort": {}}], [{"$limit": -1}], [{"$skip": -1}],
                [{"$project": {"x": "$$nosuch"}}]):
        with pytest.raises(keel.ProgrammingError):
            await coll.aggregate(bad).to_list()
    with pytest.raises(keel.ProgrammingError, match="projection"):
        await coll.find_one({}, {"email": 1, "b": 0})
    with pytest.raises(keel.ProgrammingError, match="[Rr]egular expression"):
        await coll.find_one({"email": {"$regex": "("}})
    assert await coll.count_documents({"email": "b@x"}) == 1   # the connection still works

    with pytest.raises(keel.ProgrammingError, match="bogus"):
        await coll.find_one({"email": {"$bogus": 1}})
    with pytest.raises(keel.ProgrammingError):
        await coll.update_one({}, {"$bogus": {"a": 1}})
    with pytest.raises(keel.ProgrammingError):
        await coll.aggregate([{"$nosuchstage": {}}]).to_list()
    with pytest.raises(keel.ProgrammingError, match=r"\$ operators"):
        await coll.update_one({}, {"email": "replaced?"})
    with pytest.raises(keel.ProgrammingError, match="replacement"):
        await coll.replace_one({}, {"$set": {"a": 1}})
    with pytest.raises(keel.DataError, match=r"filter\.email"):
        await coll.find_one({"email": {1, 2}})
    with pytest.raises(TypeError):
        await coll.insert_one(["not", "a", "document"])
    # After all that the pool is whole and works.
    assert mongo_db.pool_stats("docs")["leased"] == 0
    assert await coll.count_documents({}) == 3


async def test_commands(mongo_db):
    assert (await mongo_db.command(None, {"ping": 1}, database="docs"))["ok"] == 1.0
    hello = await mongo_db.command("admin", {"hello": 1})
    assert hello["isWritablePrimary"] is True and isinstance(hello["localTime"], datetime.datetime)
    async with mongo_db.connection() as conn:
        assert conn.engine == "mongodb"
        assert (await conn.command("admin", {"ping": 1}))["ok"] == 1.0
        with pytest.raises(keel.ProgrammingError, match="non-empty dict"):
            await conn.command(None, {})
        with pytest.raises(keel.DatabaseError):
            await conn.command(None, {"noSuchCommand": 1})
        assert (await conn.command(None, {"ping": 1}))["ok"] == 1.0
    assert await mongo_db.ping("docs") >= 0


async def test_sql_and_documents_do_not_mix(mongo_db):
    with pytest.raises(keel.NotSupportedError, match="commands, not SQL"):
        await mongo_db.fetch("SELECT 1", database="docs")
    async with mongo_db.connection("docs") as conn:
        with pytest.raises(keel.NotSupportedError):
            await conn.execute("DELETE FROM x")
    with pytest.raises(keel.NotSupportedError, match="'local' is a sqlite database") as info:
        mongo_db.collection("users", database="local")
    assert info.value.database == "local" and info.value.engine == "sqlite"
    async with mongo_db.connection("local") as conn:
        with pytest.raises(keel.NotSupportedError, match="sqlite"):
            conn.collection("users")
        with pytest.raises(keel.NotSupportedError, match="sqlite"):
            await conn.command(None, {"ping": 1})
    with pytest.raises(keel.UnknownDatabaseError):
        mongo_db.collection("users", database="nope")


async def test_unreachable_server_fails_quickly():
    secret = "Sup3rSecretPw"
    d = keel.Database(f"mongodb://app:{secret}@127.0.0.1:1/x?serverSelectionTimeoutMS=500")
    try:
        started = time.monotonic()
        with pytest.raises(keel.OperationalError) as info:
            await d.collection("users").find_one()
        assert time.monotonic() - started < 5
        assert secret not in str(info.value) and secret not in repr(info.value)
    finally:
        await asyncio.wait_for(d.close(), 30)


async def fail_point(db, app, block_ms):
    """Blocks the next find of client app for block_ms on the server (off with 0); False when
    the server has no failCommand fail point."""
    cmd = {"configureFailPoint": "failCommand", "mode": "off"}
    if block_ms:
        cmd = {"configureFailPoint": "failCommand", "mode": {"times": 1},
               "data": {"failCommands": ["find"], "blockConnection": True,
                        "blockTimeMS": block_ms, "appName": app}}
    try:
        await db.command("admin", cmd)
    except keel.DatabaseError:
        return False
    return True


async def test_cancelling_a_blocked_find_leaves_the_connection_usable(coll):
    # SecantusDB does not show commands' comments in currentOp, so keel cannot kill the command
    # there: the find then runs to its end on the server. Either way the awaiting task is
    # cancelled at once and the connection is usable afterwards.
    app = "keel-py-cancel"
    d = keel.Database({"default": "docs", "databases": {"docs": {
        "url": MONGO_URL + ("&" if "?" in MONGO_URL else "?") + "appName=" + app,
        "pool": {"min_size": 1, "max_size": 1}}}})
    try:
        c = d.collection(coll.name)
        await c.insert_one({"_id": 1})
        if not await fail_point(d, app, 2000):
            pytest.skip("the server has no failCommand fail point")
        async with d.connection() as conn:
            task = asyncio.create_task(conn.collection(coll.name).find_one({}))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 1
            # A liveness bound: SecantusDB answers the blocked find after 2 s on a quiet machine
            # and has taken over 10 s beside a loaded one.
            async with asyncio.timeout(30):
                assert await conn.collection(coll.name).find_one({}) == {"_id": 1}
        # The same through the pool (one connection): cancelled, then the pool serves again.
        assert await fail_point(d, app, 2000)
        task = asyncio.create_task(c.find_one({}))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(30):
            assert await c.count_documents({}) == 1
        await wait_until(lambda: d.pool_stats()["leased"] == 0)
    finally:
        await fail_point(d, app, 0)
        await asyncio.wait_for(d.close(), 30)


async def test_event_loop_stays_responsive_during_finds(mongo_db, coll):
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            await asyncio.sleep(0.01)
            ticks += 1

    await coll.insert_many([{"i": i, "pad": "p" * 2000} for i in range(6000)])
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    try:
        # A big find: the server works on a worker thread, batches are decoded on the loop.
        before, t0 = ticks, time.monotonic()
        rounds = 0
        while time.monotonic() - t0 < 0.5:
            assert len(await coll.find().to_list()) == 6000
            rounds += 1
        elapsed, during = time.monotonic() - t0, ticks - before
        assert during >= 0.25 * elapsed / 0.01, (during, elapsed, rounds)
        # A find the server holds for a second (when it has fail points).
        app_db = keel.Database(MONGO_URL + ("&" if "?" in MONGO_URL else "?") + "appName=keel-py-tick")
        try:
            if await fail_point(app_db, "keel-py-tick", 1000):
                before, t0 = ticks, time.monotonic()
                await app_db.collection(coll.name).find_one({})
                elapsed, during = time.monotonic() - t0, ticks - before
                assert elapsed >= 0.5
                assert during >= 0.25 * elapsed / 0.01, (during, elapsed)
        finally:
            await fail_point(app_db, "keel-py-tick", 0)
            await asyncio.wait_for(app_db.close(), 30)
    finally:
        stop = True
        await task


async def test_fastapi_dependency_with_a_collection(mongo_db, coll):
    kf = Keel(mongo_db)
    app = FastAPI(lifespan=kf.lifespan)

    @app.post("/users")
    async def create(body: dict, conn=Depends(kf.connection("docs"))):
        r = await conn.collection(coll.name).insert_one(body)
        return {"id": str(r.inserted_id)}

    @app.get("/users/{user_id}")
    async def read(user_id: str, conn=Depends(kf.connection("docs"))):
        doc = await conn.collection(coll.name).find_one(keel.ObjectId(user_id))
        return {"name": doc["name"], "database": conn.database}

    @app.post("/users/tx")
    async def create_tx(body: dict, conn=Depends(kf.transaction("docs"))):
        await conn.collection(coll.name).insert_one(body)
        if body.get("fail"):
            raise RuntimeError("after writing")
        return {"ok": True}

    app.include_router(kf.health_router())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post("/users", json={"name": "ada"})
        assert r.status_code == 200
        user_id = r.json()["id"]
        assert keel.ObjectId.is_valid(user_id)
        assert (await client.get(f"/users/{user_id}")).json() == {"name": "ada", "database": "docs"}
        assert (await client.post("/users/tx", json={"name": "t1"})).status_code == 200
        assert (await client.post("/users/tx", json={"name": "t2", "fail": True})).status_code == 500
        assert sorted([d["name"] async for d in coll.find()]) == ["ada", "t1"]
        ready = (await client.get("/health/ready")).json()
        assert ready["status"] == "ok"
        assert ready["databases"]["docs"]["engine"] == "mongodb"
        assert ready["databases"]["docs"]["status"] == "ok"
    await wait_until(lambda: mongo_db.pool_stats("docs")["leased"] == 0)


# ---- collection arguments: the error names what was wrong, the collection stays usable ----

async def test_collection_names_and_arguments_are_checked(mongo_db, coll):
    with pytest.raises(TypeError, match="a collection name must be a str, not int"):
        mongo_db.collection(5)
    for bad in ("", "a\0b"):
        with pytest.raises(keel.ProgrammingError, match="invalid collection name"):
            mongo_db.collection(bad)
    with pytest.raises(TypeError, match="dbname must be a non-empty str or None"):
        mongo_db.collection("x", dbname="")
    assert repr(coll) == f"<keel.Collection {coll.name!r} database='docs'>"
    assert coll.database == "docs" and coll.dbname is None
    with pytest.raises(TypeError, match="filter must be a dict, not list"):
        coll.find([("a", 1)])
    with pytest.raises(TypeError, match=r"sort must be a list of \(field, direction\) pairs"):
        coll.find(sort=[("a",)])
    with pytest.raises(TypeError, match="projection must be a dict or a list of field names, not int"):
        coll.find(projection=5)
    with pytest.raises(ValueError, match="skip must be >= 0"):
        coll.find(skip=-1)
    with pytest.raises(ValueError, match="batch_size must be >= 0"):
        coll.find(batch_size=-1)
    with pytest.raises(TypeError, match="pipeline must be a list of stages"):
        coll.aggregate({"$match": {}})
    with pytest.raises(TypeError, match="insert_many takes an iterable of documents"):
        await coll.insert_many({"a": 1})
    with pytest.raises(TypeError, match="insert_many needs at least one document"):
        await coll.insert_many([])
    with pytest.raises(TypeError, match="a document must be a dict, not list"):
        await coll.insert_one([("a", 1)])
    with pytest.raises(TypeError, match="update_one: the update must be a non-empty dict or a pipeline"):
        await coll.update_one({}, {})
    with pytest.raises(keel.ProgrammingError, match=r"update_many: the update must use \$ operators"):
        await coll.update_many({}, {"a": 1})
    with pytest.raises(TypeError, match="replace_one: the replacement must be a dict"):
        await coll.replace_one({}, [("a", 1)])
    with pytest.raises(keel.ProgrammingError, match=r"replace_one: a replacement document cannot hold \$"):
        await coll.replace_one({}, {"$set": {"a": 1}})
    with pytest.raises(keel.ProgrammingError, match="an index needs at least one key"):
        await coll.create_index([])
    with pytest.raises(ValueError, match="to_list: length must be None or >= 0"):
        await coll.find().to_list(-1)
    assert await coll.count_documents({}) == 0


async def test_collection_inputs_pymongo_accepts(mongo_db, coll):
    # An immutable mapping is inserted as a copy with the new _id; the caller's is untouched.
    frozen = types.MappingProxyType({"n": 1})
    result = await coll.insert_one(frozen)
    assert "_id" not in frozen
    assert (await coll.find_one({"n": 1}))["_id"] == result.inserted_id
    await coll.insert_many([{"n": 2}, {"n": 3}])
    # A list of field names as projection, a pipeline update, allowDiskUse on aggregate.
    assert await coll.find({"n": 2}, ["n"]).to_list() == [
        {"_id": (await coll.find_one({"n": 2}))["_id"], "n": 2}]
    await coll.update_many({}, [{"$set": {"twice": {"$multiply": ["$n", 2]}}}])
    rows = await coll.aggregate([{"$sort": {"n": 1}}, {"$project": {"_id": 0, "twice": 1}}],
                                allow_disk_use=True).to_list()
    assert rows == [{"twice": 2}, {"twice": 4}, {"twice": 6}]
    cursor = coll.find({}, batch_size=1)
    assert repr(cursor) == f"<keel.Cursor {coll.name!r} new>"
    assert (await cursor.__anext__())["n"] in (1, 2, 3)
    assert repr(cursor).startswith(f"<keel.Cursor {coll.name!r} open id=")
    await cursor.aclose()
    assert repr(cursor) == f"<keel.Cursor {coll.name!r} closed>"
    async with mongo_db.connection("docs") as conn:
        on_conn = conn.collection(coll.name)
        assert repr(on_conn) == f"<keel.Collection {coll.name!r} connection='docs'>"
        assert await on_conn.count_documents({}) == 3


async def test_a_write_concern_the_server_cannot_satisfy_is_an_error(mongo_db, coll):
    # One data-bearing node cannot acknowledge w: 5: the reply's writeConcernError becomes a
    # DatabaseError naming it and its code; the collection stays usable.
    with pytest.raises(keel.DatabaseError) as ei:
        await mongo_db.command(None, {"insert": coll.name, "documents": [{"n": 1}],
                                      "writeConcern": {"w": 5, "wtimeout": 100}})
    assert str(ei.value).startswith("write concern: ")
    assert "(code 100)" in str(ei.value)
    assert ei.value.engine == "mongodb" and ei.value.database == "docs"
    await coll.insert_one({"n": 2})
    assert await coll.count_documents({"n": 2}) == 1


class _OddBytesUUID(uuid.UUID):
    """A UUID whose bytes attribute is `odd` (raised when an exception)."""

    def __init__(self, odd):
        super().__init__(int=1)
        object.__setattr__(self, "odd", odd)

    def __getattribute__(self, name):
        if name != "bytes":
            return super().__getattribute__(name)
        odd = super().__getattribute__("odd")
        if isinstance(odd, BaseException):
            raise odd
        return odd


class _NoOffset(datetime.tzinfo):
    def utcoffset(self, when):
        raise ValueError("no offset today")


class _Items(collections.abc.Mapping):
    """A mapping that is not a dict, whose items() gives `items` (raised when an exception)."""

    def __init__(self, items):
        self._items = items

    def __getitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 1

    def items(self):
        if isinstance(self._items, BaseException):
            raise self._items
        return self._items


class _BadTuple(decimal.Decimal):
    def as_tuple(self):
        raise ArithmeticError("no tuple today")


def test_more_encode_errors_name_what_was_wrong():
    cases = [
        ({"\ud800": 1}, "a document key cannot be encoded as UTF-8"),
        ({"m": _Items(RuntimeError("no items"))},
         "cannot read the items of a mapping (no items) at 'm'"),
        ({"m": _Items([("a", 1, "extra")])}, "mapping items() did not give pairs at 'm'"),
        ({"u": _OddBytesUUID(RuntimeError("no bytes"))},
         "UUID.bytes failed (no bytes) at 'u'"),
        ({"u": _OddBytesUUID(b"short")}, "UUID.bytes is not 16 bytes at 'u'"),
        ({"t": datetime.datetime(2024, 1, 1, tzinfo=_NoOffset())},
         "cannot convert the datetime to UTC (no offset today) at 't'"),
        ({"d": decimal.Decimal("1E+7000")},
         "Decimal is too large for a Decimal128 (overflow) at 'd'"),
        ({"d": _BadTuple("1.5")},
         "Decimal.as_tuple() failed (no tuple today) at 'd'"),
        ({"b": memoryview(b"abcdef")[::2]},
         "unusable buffer (memoryview: underlying buffer is not C-contiguous) at 'b'"),
    ]
    for doc, message in cases:
        with pytest.raises(keel.DataError) as ei:
            enc(doc)
        assert message in str(ei.value), str(ei.value)


def test_encoder_round_trips_odd_but_valid_values():
    class Level(enum.IntEnum):
        HIGH = 3

    # An IntEnum is an int; regex flags m and x are kept; a zero with a tiny exponent is
    # clamped into Decimal128's range, and trailing zeros beyond 34 digits are dropped exactly.
    assert dec(enc({"l": Level.HIGH})) == {"l": 3}
    back = dec(enc({"r": re.compile("a.b", re.M | re.X)}))["r"]
    assert back.pattern == "a.b" and "m" in back.flags and "x" in back.flags
    assert dec(enc({"z": decimal.Decimal("0E-7000")}))["z"] == decimal.Decimal(0)
    forty = decimal.Decimal("1." + "0" * 40)
    assert dec(enc({"d": forty}))["d"] == forty


def test_more_decode_errors():
    def truncated(type_byte, payload):
        # An element whose value stops short: the document ends one byte after it.
        return document(element(type_byte, "v", payload))

    cases = [
        (truncated(0x08, b""), "truncated boolean"),
        (truncated(0x09, b"\0\0\0"), "truncated datetime"),
        (truncated(0x12, b"\0\0\0\0"), "truncated int64"),
        (document(element(0x0B, "r", b"abc")), "unterminated regular expression"),
        (document(element(0x0B, "r", b"abc\0im")), "unterminated regular expression flags"),
    ]
    for data, message in cases:
        with pytest.raises(keel.DataError) as ei:
            dec(data)
        assert message in str(ei.value), (data, str(ei.value))
    deep = b"\0"
    for _ in range(600):
        deep = document(element(0x03, "d", deep if deep != b"\0" else document()))
    with pytest.raises(keel.DataError, match="nested more than 512 levels deep"):
        dec(deep)


async def test_a_password_the_driver_echoes_is_masked():
    # libmongoc's messages name the hosts it tried; a password that shows up in that text (here
    # it equals the host) is masked there, as everywhere in keel's messages.
    config = {"databases": {"m": {"url": "mongodb://app:127.0.0.1@127.0.0.1:1/x",
                                  "connect_timeout": 0.5}}}
    async with keel.Database(config) as db:
        with pytest.raises(keel.ConnectError) as ei:
            await db.command(None, {"ping": 1})
    message = str(ei.value)
    assert message.startswith("cannot connect to MongoDB at 127.0.0.1:1: "), message
    assert "'***:1'" in message and "'127.0.0.1:1'" not in message, message
