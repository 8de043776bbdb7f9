"""The orjson paths give what the standard library means, or step aside.

``encode_input`` (every engine's request body), ``value_digest`` (grants, decided views) and
the wasm engine's result reader take orjson's C path for plain JSON data. These tests hold
them to the standard library's meaning: the same values read back, the same refusals
(NaN, infinities, lone surrogates, non-JSON objects), integers past 64 bits kept whole, and
digests that still tell apart every two values the slow path told apart.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import hashlib
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_opa_guard.decision import EngineError, ErrorType
from langchain_opa_guard.engines.engine import encode_input
from langchain_opa_guard.engines.wasm.evaluator import read_result_set
from langchain_opa_guard.fast_json import available, canonical_dumps, loads, plain_dumps, value_key
from langchain_opa_guard.plain_json import canonical_json, value_digest

pytestmark = pytest.mark.skipif(not available(), reason="orjson is not installed")


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


class Lying(int, enum.Enum):
    """An int enum whose members are another int than their value (the docs' pattern)."""

    def __new__(cls, value: int, amount: int) -> Lying:
        member = int.__new__(cls, amount)
        member._value_ = value
        return member

    BIG = (10, 99_999)


NOT_PLAIN = [
    {"amount": float("nan")},
    {"amount": float("inf"), "tenant": None},
    [None, -math.inf],
    {1: "int key"},
    {"s": "lone \ud800 surrogate"},
    {"n": 2**64},
    {"n": -(2**63) - 1},
    {"s": Name("subclass")},
    {"on": datetime.date(2026, 1, 2)},
    {"p": Point(1)},
    {"amount": Lying.BIG},
    {"color": Color.RED},
    {"span": (1, 2)},
    {"id": uuid.UUID(int=1)},
]


@pytest.mark.parametrize("value", NOT_PLAIN, ids=range(len(NOT_PLAIN)))
def test_plain_dumps_steps_aside_for_anything_but_plain_json(value: Any) -> None:
    assert plain_dumps(value) is None
    assert canonical_dumps(value) is None


def test_plain_dumps_writes_plain_json_as_the_standard_library_reads_it() -> None:
    value = {"b": [1, 2.5, None, True, "é\n\x01"], "a": {"z": -0.0, "y": 1e16}, "c": None}
    text = plain_dumps(value)
    assert text is not None
    assert repr(json.loads(text)) == repr(value)


def test_canonical_dumps_is_canonical_json_byte_for_byte() -> None:
    value = {"b": [1, None, True, "é\n\x01\u2028\x7f😀"], "a": {"z": -(2**63), "y": 2**64 - 1}}
    assert canonical_dumps(value) == canonical_json(value)
    assert canonical_dumps({"a": 0.5}) is None  # floats keep canonical_json's spelling


def test_deep_values_step_aside() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    assert plain_dumps(deep) is None
    assert canonical_dumps(deep) is None


def test_encode_input_refuses_non_finite_numbers_with_or_without_other_nulls() -> None:
    for doc in ({"n": float("nan")}, {"n": float("inf"), "tenant": None}, {"a": [None, -math.inf]}):
        with pytest.raises(EngineError) as info:
            encode_input(doc)
        assert info.value.error_type == ErrorType.INPUT


def test_encode_input_refuses_what_json_cannot_hold() -> None:
    for doc in (
        {"s": "lone \udc00"},
        {"on": datetime.datetime(2026, 1, 2)},
        {"p": Point(1)},
        {"o": object()},
    ):
        with pytest.raises(EngineError):
            encode_input(doc)


def test_encode_input_writes_enums_and_uuids_by_value_with_or_without_nulls() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    for extra in ({}, {"tenant": None}):
        doc = {"color": Color.RED, "id": ident, "level": Level.HIGH, **extra}
        assert json.loads(encode_input(doc, key=None)) == {
            "color": "red",
            "id": str(ident),
            "level": 3,
            **extra,
        }


def test_encode_input_keeps_big_integers_and_string_subclasses() -> None:
    doc = {"n": 2**70, "s": Name("x"), "t": (1, 2)}
    assert json.loads(encode_input(doc)) == {"input": {"n": 2**70, "s": "x", "t": [1, 2]}}


def test_loads_keeps_what_json_loads_keeps() -> None:
    for text in (
        b"123456789012345678901234567890",
        b"[-9223372036854775809, 18446744073709551616]",
        b'"\\ud800"',
        b'"a\x01b"',
        b"1e400",
        b'{"a": 1, "a": 2}',
        '"text"',
        '{"n": 99999999999999999999}',
    ):
        assert repr(loads(text)) == repr(json.loads(text, strict=False))
    with pytest.raises(ValueError):
        loads(b"{not json")


def test_read_result_set_keeps_a_big_number_whole() -> None:
    assert read_result_set(b'{{"result": 123456789012345678901234567890}}') == [
        {"result": 123456789012345678901234567890}
    ]


def test_digests_tell_apart_values_json_tells_apart() -> None:
    values = [1, 1.0, True, "1", None, float("nan"), "NaN", [1], {"a": 1}, {"a": 1.0}, 1e16]
    digests = [value_digest(v) for v in values]
    # NaN and "NaN" share one (canonical_json writes NaN as that string, as before); every
    # other pair differs.
    nan, nan_text = digests[5], digests[6]
    assert nan == nan_text
    rest = digests[:5] + digests[7:]
    assert len(set(rest)) == len(rest)
    assert value_digest({"x": float("nan")}) != value_digest({"x": None})


def test_digest_of_plain_json_without_floats_is_the_canonical_one() -> None:
    """Digests taken before the orjson path (no floats in the value) are unchanged."""
    value = ["send_email", {"to": ["a@x.test"], "body": "é \n \x01 \u2028", "n": 3, "z": None}]
    assert value_digest(value) == hashlib.sha256(canonical_json(value)).hexdigest()


def test_digest_is_one_and_the_same_for_equal_values_on_either_path() -> None:
    """A copy of a value (a grant's call, the call where it runs) has the value's digest,
    whether orjson writes it or canonical_json does."""
    for value in ({"b": 1.5e-7, "a": [1e16, None]}, {"s": "\ud800", "n": 2**70}, [None, 0.1]):
        assert value_digest(copy.deepcopy(value)) == value_digest(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _standard(value: Any) -> bytes | None:
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError):
        return None


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_encode_input_means_what_the_standard_library_means(value: Any) -> None:
    standard = _standard(value)
    try:
        ours: bytes | None = encode_input(value, key=None)
    except EngineError:
        ours = None
    assert (ours is None) == (standard is None)
    if ours is not None and standard is not None:
        assert repr(json.loads(ours)) == repr(json.loads(standard))
        assert repr(loads(ours)) == repr(json.loads(standard))


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_digests_differ_when_values_differ(a: Any, b: Any) -> None:
    if canonical_json(a) != canonical_json(b):
        assert value_digest(a) != value_digest(b)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_dumps_gives_canonical_json_or_nothing(value: Any) -> None:
    text = canonical_dumps(value)
    if text is not None:
        assert text == canonical_json(value)


def test_value_key_tells_json_values_apart_by_type_and_matches_equal_ones() -> None:
    """The embedded engine shares one Decision between calls whose results have the same
    key: values that differ as JSON (a number's type, true against 1) never do."""
    alike = ({"allow": True, "reasons": []}, {"allow": True, "reasons": []})
    assert value_key(alike[0]) == value_key(alike[1])
    distinct = [1, 1.0, True, "1", None, 0, False, -0.0, 0.0, [1], {"a": 1}, {"a": 1.0}]
    keys = [value_key(v) for v in distinct]
    assert len(set(keys)) == len(distinct)
    # Past orjson's range (a wide integer, a lone surrogate): repr, still distinct.
    wide = [2**70, 2**70 + 1, "\ud800", "\ud801"]
    assert len({value_key(v) for v in wide}) == len(wide)
