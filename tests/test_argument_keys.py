"""Keys of the arguments: each entry the tool gets is one the policy input holds.

The policy input writes every key as text, so keys that are not text must stay apart as text
(``1`` and ``"1"`` would merge, and so would two NaN keys, which Python keeps apart because
NaN equals nothing); a NaN or infinite key is refused like such a value, and text keys must be
text UTF-8 holds.
"""

from __future__ import annotations

from decimal import Decimal

from langchain_opa_guard.plain_json import (
    BAD_TEXT,
    KEYS_ALIKE,
    NON_FINITE,
    arguments_problem,
    jsonable,
)


def test_keys_that_read_alike_as_text_are_refused() -> None:
    assert arguments_problem({"m": {1: "a", "1": "b"}}) == KEYS_ALIKE
    assert arguments_problem({"m": {True: "a", "True": "b"}}) == KEYS_ALIKE
    assert arguments_problem({"m": {1.5: "a", "1.5": "b"}}) == KEYS_ALIKE


def test_non_finite_keys_are_refused() -> None:
    assert arguments_problem({"m": {float("nan"): "a", 1.0: "b"}}) == NON_FINITE
    assert arguments_problem({"m": {Decimal("Infinity"): "a"}}) == NON_FINITE


def test_a_key_utf8_cannot_hold_is_refused() -> None:
    assert arguments_problem({"m": {"\ud800": 1}}) == BAD_TEXT


def test_distinct_keys_pass_and_read_as_text() -> None:
    args = {"m": {1: "a", 2: "b", "x": "c"}, "é": {"ü": 1}}
    assert arguments_problem(args) is None
    assert jsonable(args) == {"m": {"1": "a", "2": "b", "x": "c"}, "é": {"ü": 1}}
