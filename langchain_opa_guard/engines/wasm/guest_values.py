"""Rego values read straight from a policy instance's memory, and strings written into it.

A host builtin receives its arguments as addresses of OPA values in the guest's memory.
Rendering each one with the guest's ``opa_value_dump`` and parsing the text back costs a
guest call and two passes over the text per argument; the common arguments (strings,
numbers, booleans, null and arrays of them) are read here from OPA's value structs
instead (``wasm/src/value.h`` in OPA's sources, wasm32: 4-byte pointers and sizes)::

    opa_value      { u8 type }                          null 1, boolean 2, number 3,
    opa_boolean_t  { u8 type; u8 v }                    string 4, array 5, object 6,
    opa_number_t   { u8 type; u8 repr; .. ; union at 8 } set 7, interned string 8,
                     repr 1: i64 at 8; repr 2: text ptr at 8, len at 12   interned boolean 9
    opa_string_t   { u8 type; u8 free; .. ; u32 len at 4; u32 ptr at 8 }
    opa_array_t    { u8 type; .. ; u32 elems at 4; u32 len at 8 }, elems: (index ptr, value ptr)

Anything else (objects, sets, a number in another representation, arrays nested deeper
than :data:`MAX_DEPTH`) goes to the caller's fallback, the ``opa_value_dump`` path. A
string result is written as one ``opa_string_t`` followed by its bytes in a single block
from the guest's ``opa_malloc`` (``free`` unset, so ``opa_value_free`` releases the block
once, by its start).

The layout is OPA's internal one: :meth:`WasmModule` checks it on every module it loads
against the dump path (:func:`probe_text` gives the probe) and uses the direct path only
when every probe value reads the same both ways.

Example:
    ```python
    import ctypes

    from langchain_opa_guard.engines.wasm.guest_values import GuestMemory, string_block

    block = string_block(16, "hé".encode())  # an opa_string_t at address 16
    memory = ctypes.create_string_buffer(bytes(16) + block)
    view = GuestMemory(ctypes.addressof(memory), len(memory.raw), fallback=None)
    assert view.value(16) == "hé"
    ```
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import Any

from langchain_opa_guard.engines.wasm.rego_values import Number

__all__ = [
    "MAX_DEPTH",
    "PROBE_VALUES",
    "GuestLayoutError",
    "GuestMemory",
    "probe_text",
    "string_block",
]

MAX_DEPTH = 8
"""How deeply nested an array is still read here (deeper ones use the fallback)."""

_NULL, _BOOLEAN, _NUMBER, _STRING, _ARRAY = 1, 2, 3, 4, 5
_STRING_INTERNED, _BOOLEAN_INTERNED = 8, 9
_REPR_INT, _REPR_REF = 1, 2

_HEAD = 16  # the largest header read here: opa_number_t
_PAIR = struct.Struct("<II")
_I64 = struct.Struct("<q")
_STRING_HEAD = struct.Struct("<BBxxII")
STRING_HEAD_SIZE = _STRING_HEAD.size

_string_at = ctypes.string_at


class GuestLayoutError(Exception):
    """A value's struct points outside the guest's memory: not OPA's layout."""


class GuestMemory:
    """The guest's memory as it is now (its base address moves when it grows), read as
    Rego values (:class:`~langchain_opa_guard.engines.wasm.rego_values.Number` for numbers,
    ``str``, ``bool``, ``None``, ``list``).

    ``fallback(address)`` reads a value this class does not (through ``opa_value_dump``);
    with ``None`` such a value raises :class:`GuestLayoutError`.
    """

    __slots__ = ("base", "fallback", "size")

    def __init__(self, base: int, size: int, fallback: Callable[[int], Any] | None) -> None:
        self.base = base
        self.size = size
        self.fallback = fallback

    def read(self, address: int, length: int) -> bytes:
        """``length`` bytes at ``address``.

        Raises:
            GuestLayoutError: The range is not inside the memory.
        """
        if address <= 0 or length < 0 or address + length > self.size:
            raise GuestLayoutError("a value points outside the policy's memory")
        return _string_at(self.base + address, length)

    def value(self, address: int, depth: int = 0) -> Any:
        """The Rego value at ``address``."""
        base, size = self.base, self.size
        if 0 < address <= size - _HEAD:
            head = _string_at(base + address, _HEAD)
        else:
            head = self.read(address, min(_HEAD, size - address))
        kind = head[0]
        if kind in (_STRING, _STRING_INTERNED):
            length, pointer = _PAIR.unpack_from(head, 4)
            if not length:
                return ""
            if not (pointer > 0 and pointer + length <= size):
                raise GuestLayoutError("a value points outside the policy's memory")
            return _string_at(base + pointer, length).decode("utf-8", "surrogatepass")
        if kind == _NUMBER and len(head) >= _HEAD:
            representation = head[1]
            if representation == _REPR_INT:
                return Number(_I64.unpack_from(head, 8)[0])
            if representation == _REPR_REF:
                pointer, length = _PAIR.unpack_from(head, 8)
                return Number(self.read(pointer, length).decode("ascii"))
        elif kind in (_BOOLEAN, _BOOLEAN_INTERNED):
            return head[1] != 0
        elif kind == _NULL:
            return None
        elif kind == _ARRAY and depth < MAX_DEPTH:
            elements, length = _PAIR.unpack_from(head, 4)
            if not length:
                return []
            pairs = struct.unpack_from(f"<{2 * length}I", self.read(elements, 8 * length))
            return [self.value(item, depth + 1) for item in pairs[1::2]]
        if self.fallback is None:
            raise GuestLayoutError(f"no direct reading for a value of type {kind}")
        return self.fallback(address)


def string_block(address: int, data: bytes) -> bytes:
    """The bytes of an ``opa_string_t`` at ``address`` holding ``data`` (UTF-8) right
    after its header: what a host builtin writes into a block from ``opa_malloc``."""
    return _STRING_HEAD.pack(_STRING, 0, len(data), address + STRING_HEAD_SIZE) + data


PROBE_VALUES: tuple[str, ...] = (
    '""',
    '"plain"',
    '"h\\u00e9 \\u4e16 \\ud83d\\ude00"',
    '"tab\\there\\nnul\\u0000 del\\u007f quote\\" back\\\\ slash/"',
    '"\\u2028\\u2029\\ufeff\\u00ad"',
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1.50",
    "1e3",
    "-0.0",
    "true",
    "false",
    "null",
    "[]",
    '["a", 1, [true, null, ["b"]], []]',
)
"""Values the direct reader must read as ``opa_value_dump`` renders them (JSON text)."""


def probe_text() -> bytes:
    """The probe values as one JSON array (for ``opa_value_parse``)."""
    return ("[" + ",".join(PROBE_VALUES) + "]").encode()
