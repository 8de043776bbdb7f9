"""Integers the regopy fallback cannot read: rego-cpp reads an integer past 64 bits modulo
2**64 (``2**64 + 5`` as ``5``), so an input holding one is refused, never decided on another
number.

Example:
    ```python
    refuse_wide_integers({"amount": 2**64 + 5})  # raises EngineError (invalid_input)
    ```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_opa_guard.decision import EngineError, ErrorType

__all__ = ["holds_long_digits", "refuse_wide_integers"]

_INT64 = range(-(2**63), 2**63)
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def holds_long_digits(body: bytes) -> bool:
    """Whether JSON text has a run of 19 digits or more (where a wide integer could be)."""
    return _LONG_DIGITS.search(body) is not None


def refuse_wide_integers(value: Any) -> None:
    """Raise for a document holding an integer outside the signed 64-bit range.

    Raises:
        EngineError: ``invalid_input``.
    """
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if value not in _INT64:
            raise EngineError(
                ErrorType.INPUT,
                "the policy input holds an integer past 64 bits, which the regopy fallback "
                "cannot read (the wasm engine can)",
            )
    elif isinstance(value, Mapping):
        for item in value.values():
            refuse_wide_integers(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            refuse_wide_integers(item)
