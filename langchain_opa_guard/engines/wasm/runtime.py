"""OPA-compiled WebAssembly run in process with wasmtime: one ``opa_eval`` guest call per
evaluation.

A :class:`WasmModule` is a policy module compiled once for this process; a
:class:`WasmInstance` is one instance of it with its own memory, the data document parsed
into that memory once, and the heap pointer just past it. An evaluation writes the input
JSON past the heap pointer and makes one call to the module's ``opa_eval`` export (OPA's
ABI 1.2 fast path), which parses the input, evaluates the entrypoint and returns the address
of a JSON result set; the heap is reset by the next call.

Every evaluation has a deadline, enforced by wasmtime's epoch interruption (a
process-wide ticker thread advances the epoch every :data:`TICK` seconds), and every
instance a memory cap. A trap (deadline, memory, an ``opa_abort``) leaves the instance in
an unknown state: the caller drops it and makes a fresh one.

wasmtime-py's ``Func.__call__`` converts each argument through its generic value types,
about 50 µs for ``opa_eval``'s seven parameters, several times the policy's own work. The
hot call goes through wasmtime's C API with a preallocated argument array instead
(``wasmtime_func_call_unchecked``, after checking the export's type once at load). That
uses wasmtime-py's private ``_ffi`` module; when its layout is not the one expected, the
public ``Func.__call__`` is used (correct, only slower).

Host builtins (``regex.replace``, ``indexof_n``, ...) are imported the same way: a C
callback (``wasmtime_func_new_unchecked``) that reads the arguments from OPA's value
structs in memory and writes a string result as one struct (see
:mod:`~langchain_opa_guard.engines.wasm.guest_values`; other values go through the guest's
``opa_value_dump``/``opa_value_parse``, as they all do when a module's layout does not pass
the probe at load). Through wasmtime-py's generic values, each argument cost a guest call
and two passes over its text, and a decision on the information-flow pack 2-4 ms. Within
an evaluation, a builtin called again with the same scalar arguments reuses its answer.
A guest call that traps inside a builtin (the memory cap, the deadline) ends the
evaluation, closed.

Why one module: a module, its instances and the C-API fast path share one lifecycle (load,
instantiate, call, trap, drop), and the fast path is only safe beside the checks that guard it.

Example:
    ```python
    from langchain_opa_guard.engines.wasm.runtime import WasmModule

    module = WasmModule(open("policy.wasm", "rb").read())
    instance = module.instance(b'{"agent": {}}', memory_limit=64 << 20)
    result_set = instance.evaluate(0, b'{"tool": {"name": "x"}}', timeout=1.0)
    ```
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import wasmtime

from langchain_opa_guard.decision import EngineError, ErrorType
from langchain_opa_guard.engines.wasm.guest_values import (
    PROBE_VALUES,
    STRING_HEAD_SIZE,
    GuestLayoutError,
    GuestMemory,
    probe_text,
    string_block,
)
from langchain_opa_guard.engines.wasm.host_builtins import BuiltinRefusedError, builtin_deadline
from langchain_opa_guard.engines.wasm.rego_values import dump_value, parse_value

__all__ = ["TICK", "WasmModule", "WasmInstance", "compiled_module", "fast_path_available"]

TICK = 0.005
"""Seconds between two epoch ticks: the resolution of evaluation deadlines."""

_OPA_EVAL = ("opa_eval", 7, 1)
_REQUIRED_EXPORTS = (
    "opa_malloc",
    "opa_json_parse",
    "opa_json_dump",
    "opa_value_dump",
    "opa_value_parse",
    "opa_heap_ptr_get",
    "opa_eval",
    "builtins",
    "entrypoints",
)

try:  # wasmtime-py's C bindings, for the one hot call (see the module docstring)
    from wasmtime import _ffi as _ffi

    _RAW_OK = all(
        hasattr(_ffi, name)
        for name in (
            "wasmtime_func_call_unchecked",
            "wasmtime_val_raw_t",
            "wasm_trap_t",
            "wasmtime_memory_data",
            "wasmtime_memory_data_size",
            "wasmtime_error_delete",
            "wasmtime_func_new_unchecked",
            "wasmtime_func_unchecked_callback_t",
            "wasmtime_caller_context",
            "wasmtime_func_t",
            "wasmtime_context_t",
            "wasmtime_memory_t",
            "wasmtime_error_t",
            "dll",
        )
    )
except ImportError:  # pragma: no cover - a wasmtime-py without the private module
    _ffi = None  # type: ignore[assignment]
    _RAW_OK = False


def _c_function(name: str, restype: Any, *argtypes: Any, keep_gil: bool = False) -> Any:
    """A C function of wasmtime's library with this module's own result type (wasmtime-py's
    binding returns a pointer object that costs a ``ctypes.cast`` per call). ``keep_gil``:
    called without releasing the GIL (a query that returns at once: releasing it would let
    another thread take it, and getting it back costs more than the call)."""
    assert _ffi is not None
    library = ctypes.PyDLL(None, handle=_ffi.dll._handle) if keep_gil else _ffi.dll
    function = library[name]
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


_MEMORY_DATA: Any = None
_MEMORY_SIZE: Any = None
_FUNC_CALL: Any = None
if _RAW_OK:
    try:
        _context_type = ctypes.POINTER(_ffi.wasmtime_context_t)
        _memory_type = ctypes.POINTER(_ffi.wasmtime_memory_t)
        _MEMORY_DATA = _c_function(
            "wasmtime_memory_data", ctypes.c_void_p, _context_type, _memory_type, keep_gil=True
        )
        _MEMORY_SIZE = _c_function(
            "wasmtime_memory_data_size",
            ctypes.c_size_t,
            _context_type,
            _memory_type,
            keep_gil=True,
        )
        _FUNC_CALL = _c_function(
            "wasmtime_func_call_unchecked",
            ctypes.POINTER(_ffi.wasmtime_error_t),
            _context_type,
            ctypes.POINTER(_ffi.wasmtime_func_t),
            ctypes.POINTER(_ffi.wasmtime_val_raw_t),
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.POINTER(_ffi.wasm_trap_t)),
        )
    except (AttributeError, TypeError):  # pragma: no cover - another library layout
        _RAW_OK = False


def fast_path_available() -> bool:
    """Whether evaluations use wasmtime's C API directly (else ``Func.__call__``)."""
    return _RAW_OK


class _Clock:
    """The process-wide wasmtime engine and the thread that advances its epoch.

    The thread is started on first use and again in a forked child (threads do not survive
    ``fork``); it only wakes every :data:`TICK` seconds to increment a counter.
    """

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        # Compilation threads would not survive a fork: a child compiling a module on a
        # thread pool created by its parent would wait forever.
        config.parallel_compilation = False
        # No process-wide SIGSEGV/SIGILL handlers: a trap is an ordinary error whatever
        # handlers the host installs (faulthandler, another runtime); explicit bounds
        # checks cost a few percent of a decision.
        config.signals_based_traps = False
        self.engine = wasmtime.Engine(config)
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            thread = threading.Thread(
                target=_tick, args=(weakref.ref(self),), name="opa-guard-wasm-epoch", daemon=True
            )
            thread.start()
            self._pid = os.getpid()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0


def _tick(clock_ref: Callable[[], _Clock | None]) -> None:
    pid = os.getpid()
    while True:
        time.sleep(TICK)
        clock = clock_ref()
        if clock is None or os.getpid() != pid:
            return
        clock.engine.increment_epoch()


_CLOCK = _Clock()
os.register_at_fork(after_in_child=_CLOCK.after_fork)

_MODULES: OrderedDict[str, WasmModule] = OrderedDict()
_MODULES_LOCK = threading.Lock()
_MODULES_KEPT = 8


def compiled_module(wasm: bytes) -> WasmModule:
    """The :class:`WasmModule` for ``wasm``, compiled once per process (by content)."""
    key = hashlib.sha256(wasm).hexdigest()
    with _MODULES_LOCK:
        module = _MODULES.get(key)
        if module is not None:
            _MODULES.move_to_end(key)
            return module
    module = WasmModule(wasm)
    with _MODULES_LOCK:
        _MODULES[key] = module
        while len(_MODULES) > _MODULES_KEPT:
            _MODULES.popitem(last=False)
    return module


_PAGE = 65536


def _leb128(wasm: bytes, at: int) -> tuple[int, int]:
    """The unsigned LEB128 number at ``at`` and the offset past it."""
    value = shift = 0
    while True:
        byte = wasm[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def data_segments_end(wasm: bytes) -> int:
    """The end, in bytes, of the highest active data segment placed at a constant offset
    (0 when there is none, or the bytes cannot be read: wasmtime reports those).

    Example:
        ```python
        # (module (memory 1) (data (i32.const 8) "abc") (data (i32.const 200) "xy"))
        wasm = bytes.fromhex(
            "0061736d0100000005030100010b11020041080b036162630041c8010b027879"
        )
        assert data_segments_end(wasm) == 202
        ```
    """
    end = 0
    try:
        at = 8
        while at < len(wasm):
            section, at = wasm[at], at + 1
            size, at = _leb128(wasm, at)
            if section == 11:
                count, pos = _leb128(wasm, at)
                for _ in range(count):
                    flags, pos = _leb128(wasm, pos)
                    if flags == 2:
                        _, pos = _leb128(wasm, pos)
                    offset = None
                    if flags in (0, 2):
                        if wasm[pos] == 0x41:  # i32.const
                            offset, pos = _leb128(wasm, pos + 1)
                        while wasm[pos] != 0x0B:
                            pos += 1
                        pos += 1
                    length, pos = _leb128(wasm, pos)
                    if offset is not None:
                        end = max(end, offset + length)
                    pos += length
                return end
            at += size
    except IndexError:
        return end
    return end


HostBuiltin = Callable[[list[Any]], Any]
"""A builtin the host provides: the arguments as JSON-like values -> the result."""


class WasmModule:
    """A policy module compiled by ``opa build -t wasm``, checked and compiled for wasmtime.

    Raises:
        ValueError: The bytes are not an OPA policy module this runtime can run (not
            WebAssembly, an ABI before 1.2, or an export missing or of another type).
    """

    def __init__(self, wasm: bytes) -> None:
        try:
            self.module = wasmtime.Module(_CLOCK.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ValueError("the policy module is not valid WebAssembly") from exc
        exports = {e.name: e.type for e in self.module.exports}
        missing = [name for name in _REQUIRED_EXPORTS if name not in exports]
        if missing:
            raise ValueError(
                "the policy module lacks OPA's exports "
                + ", ".join(missing)
                + " (build it with `opa build -t wasm`, OPA 0.27 or later)"
            )
        opa_eval = exports["opa_eval"]
        if not (
            isinstance(opa_eval, wasmtime.FuncType)
            and [str(t) for t in opa_eval.params] == ["i32"] * _OPA_EVAL[1]
            and [str(t) for t in opa_eval.results] == ["i32"] * _OPA_EVAL[2]
        ):
            raise ValueError("the policy module's opa_eval export has an unexpected type")
        self.digest = hashlib.sha256(wasm).hexdigest()
        # OPA declares its imported memory with 2 pages whatever the size of the policy's
        # constants; the host gives as many as its data segments fill (a larger policy
        # traps at instantiation otherwise).
        self.memory_pages = -(-data_segments_end(wasm) // _PAGE)
        # Read the module's own maps (entrypoints, builtins) from a scratch instance.
        scratch = WasmInstance(self, b"{}", memory_limit=None, host_builtins={})
        self.entrypoints: dict[str, int] = scratch.dump_export("entrypoints")
        self.builtins: dict[str, int] = scratch.dump_export("builtins")
        # Whether host builtins read and write OPA's value structs directly (checked
        # against the module's own dump and parse; see guest_values).
        self.direct_values = scratch.probe_direct_values()
        scratch.close()

    def instance(
        self,
        data: bytes,
        *,
        memory_limit: int | None,
        host_builtins: Mapping[str, HostBuiltin] | None = None,
    ) -> WasmInstance:
        """A fresh instance with ``data`` (a JSON document) parsed into its memory.

        Raises:
            EngineError: The instance could not be made (for example the data does not
                fit in ``memory_limit``).
        """
        return WasmInstance(self, data, memory_limit=memory_limit, host_builtins=host_builtins)


class _Abort(Exception):
    """Raised by the ``opa_abort`` import: the guest gave up (an evaluation error)."""


class _GuestTrapped(Exception):
    """A guest call made from a host builtin trapped: the evaluation ends."""


_MASK = 0xFFFFFFFF
_MEMO_KEPT = 256
_MISSING: Any = object()

# Host builtins called through wasmtime's C API (see WasmInstance._host_builtin): the
# store keeps a number, this map the instance it stands for. Only a weak reference, so
# that an instance dropped by its pool is freed with its store and memory.
_HOSTS: dict[int, weakref.ReferenceType[WasmInstance]] = {}
_HOST_KEYS = itertools.count(1)


def _new_trap(message: str) -> int | None:
    trap = wasmtime.Trap(message)._consume()
    return ctypes.cast(trap, ctypes.c_void_p).value


def _host_trampoline(env: int | None, caller: Any, values: Any, count: int) -> int | None:
    """``opa_builtinN(builtin_id, ctx, arg...) -> value``, called by wasmtime's C API."""
    ref = _HOSTS.get(env or 0)
    instance = ref() if ref is not None else None
    if instance is None:
        return _new_trap("the policy instance is gone")
    try:
        assert _ffi is not None
        arguments = [values[i].i32 & _MASK for i in range(2, count)]
        context = _ffi.wasmtime_caller_context(caller)
        values[0].i32 = instance._host_builtin(context, values[0].i32, arguments)
    except BaseException:  # noqa: BLE001 - any failure here ends the evaluation
        return _new_trap("host builtin failed")
    return 0


def _forget_host(env: int | None) -> None:
    _HOSTS.pop(env or 0, None)


# The C callbacks: kept here for the life of the process (stores point at them).
_HOST_TRAMPOLINE: Any = None
_FORGET_HOST: Any = None
if _RAW_OK:
    assert _ffi is not None
    _HOST_TRAMPOLINE = _ffi.wasmtime_func_unchecked_callback_t(_host_trampoline)
    _FORGET_HOST = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_forget_host)


class WasmInstance:
    """One instance of a policy module; used by one thread at a time."""

    def __init__(
        self,
        module: WasmModule,
        data: bytes,
        *,
        memory_limit: int | None,
        host_builtins: Mapping[str, HostBuiltin] | None,
    ) -> None:
        _CLOCK.ensure_running()
        self.module = module
        self.pid = os.getpid()
        store = wasmtime.Store(_CLOCK.engine)
        if memory_limit is not None:
            store.set_limits(memory_size=memory_limit)
        store.set_epoch_deadline(2**62)
        self.store = store
        self.abort_message = ""
        self.interrupted = False
        self.deadline = math.inf  # time.monotonic() past which host builtins stop
        self._builtins_by_id: dict[int, tuple[str, HostBuiltin]] = {}
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._direct = getattr(module, "direct_values", False)
        self._host_key = 0
        self._view_base = 0
        self._view_size = -1
        me = weakref.ref(self)
        try:
            imports: list[Any] = []
            for imp in module.module.imports:
                kind, name = imp.type, imp.name or ""
                if name == "memory" and isinstance(kind, wasmtime.MemoryType):
                    if kind.limits.min < module.memory_pages and not kind.is_64:
                        limits = wasmtime.Limits(module.memory_pages, kind.limits.max)
                        kind = wasmtime.MemoryType(limits)
                    self.memory = wasmtime.Memory(store, kind)
                    self._memory_ref = ctypes.byref(self.memory._memory)
                    imports.append(self.memory)
                elif not isinstance(kind, wasmtime.FuncType):
                    raise ValueError(f"the policy module imports an unknown {name!r}")
                elif name == "opa_abort":
                    imports.append(wasmtime.Func(store, kind, _weak_abort(me)))
                elif name == "opa_println":
                    imports.append(wasmtime.Func(store, kind, _ignore))
                elif name.startswith("opa_builtin"):
                    imports.append(self._builtin_import(kind, me))
                else:
                    raise ValueError(f"the policy module imports an unknown {imp.name!r}")
            self.instance = wasmtime.Instance(store, module.module, imports)
            exports = self.instance.exports(store)
            self._exports = {name: _func(exports[name], name) for name in _REQUIRED_EXPORTS}
            self._guest_calls = self._raw_exports() if _RAW_OK else {}
            if host_builtins is not None:
                wanted = self.dump_export("builtins")
                self._builtins_by_id = {
                    number: (name, host_builtins[name])
                    for name, number in wanted.items()
                    if name in host_builtins
                }
            self.data_addr = self._parse(data)
            self.heap = int(self._exports["opa_heap_ptr_get"](store))
        except (wasmtime.WasmtimeError, wasmtime.Trap, _Abort) as exc:
            raise EngineError(ErrorType.ENGINE, "the policy module could not be started") from exc
        self._opa_eval = self._exports["opa_eval"]
        self._raw = self._raw_call() if _RAW_OK else None

    def _builtin_import(
        self, kind: wasmtime.FuncType, me: weakref.ReferenceType[WasmInstance]
    ) -> wasmtime.Func:
        if not _RAW_OK:
            return wasmtime.Func(self.store, kind, _weak_builtin(me), access_caller=True)
        assert _ffi is not None
        if not self._host_key:
            self._host_key = next(_HOST_KEYS)
            _HOSTS[self._host_key] = me
        raw = _ffi.wasmtime_func_t()
        _ffi.wasmtime_func_new_unchecked(
            self.store._context(),
            kind.ptr(),
            _HOST_TRAMPOLINE,
            self._host_key,
            _FORGET_HOST,
            ctypes.byref(raw),
        )
        return wasmtime.Func._from_raw(raw)

    def _raw_exports(self) -> dict[str, tuple[Any, Any]]:
        """The exports host builtins call, each with an argument array for the C API."""
        assert _ffi is not None
        calls = {}
        for name in ("opa_malloc", "opa_value_dump", "opa_value_parse"):
            func = self._exports[name]
            kind = func.type(self.store)
            size = max(len(kind.params), len(kind.results), 1)
            calls[name] = (ctypes.byref(func._func), (_ffi.wasmtime_val_raw_t * size)())
        return calls

    # -- evaluation ---------------------------------------------------------------

    def evaluate(self, entrypoint: int, input_json: bytes, *, timeout: float) -> bytes:
        """Evaluate ``entrypoint`` on an input (JSON bytes); the result set in Rego's value
        syntax (JSON unless it holds sets; see :mod:`langchain_opa_guard.engines.wasm.rego_values`).

        Raises:
            EngineError: ``timeout`` when the deadline passed, ``engine_error`` for any
                other trap. Either way the instance must not be used again.
        """
        size = len(input_json)
        end = self.heap + size
        self._ensure_memory(end + 1)
        base, _ = self._memory_view()
        ctypes.memmove(base + self.heap, input_json, size)
        self.store.set_epoch_deadline(max(1, math.ceil(timeout / TICK)))
        self.deadline = time.monotonic() + timeout
        self.abort_message = ""
        self.interrupted = False
        if self._memo:
            self._memo.clear()
        try:
            if self._raw is not None:
                addr = self._raw(entrypoint, self.data_addr, self.heap, size, end)
            else:
                addr = self._public_call(entrypoint, size, end)
        finally:
            if self._memo:
                self._memo.clear()
        return self._string_at(addr)

    def _raw_call(self) -> Callable[[int, int, int, int, int], int]:
        assert _ffi is not None
        args = (_ffi.wasmtime_val_raw_t * 7)()
        trap_type = ctypes.POINTER(_ffi.wasm_trap_t)
        func_ref = ctypes.byref(self._opa_eval._func)
        call = _ffi.wasmtime_func_call_unchecked
        context = self.store._context

        def run(entrypoint: int, data: int, heap: int, size: int, end: int) -> int:
            args[0].i32 = 0
            args[1].i32 = entrypoint
            args[2].i32 = data
            args[3].i32 = heap
            args[4].i32 = size
            args[5].i32 = end
            args[6].i32 = 1  # Rego value syntax: sets stay sets
            trap = trap_type()
            error = call(context(), func_ref, args, 7, ctypes.byref(trap))
            if error:
                _ffi.wasmtime_error_delete(error)
                raise self._trapped(None)
            if trap:
                raise self._trapped(wasmtime.Trap._from_ptr(trap))
            return int(args[0].i32)

        return run

    def _public_call(self, entrypoint: int, size: int, end: int) -> int:
        try:
            return int(
                self._opa_eval(self.store, 0, entrypoint, self.data_addr, self.heap, size, end, 1)
            )
        except wasmtime.Trap as trap:
            raise self._trapped(trap) from None
        except (wasmtime.WasmtimeError, _Abort):
            raise self._trapped(None) from None

    def _trapped(self, trap: wasmtime.Trap | None) -> EngineError:
        _clear_host_exception()
        code = None
        if trap is not None:
            try:
                code = trap.trap_code
            except Exception:  # noqa: BLE001 - an unknown code is just an engine error
                code = None
        if code == wasmtime.TrapCode.INTERRUPT or self.interrupted:
            return EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
        if self.abort_message:
            return EngineError(
                ErrorType.ENGINE, "the policy failed to evaluate: " + self.abort_message
            )
        return EngineError(ErrorType.ENGINE, "the policy failed to evaluate")

    # -- memory -------------------------------------------------------------------

    def _memory_view(self, context: Any = None) -> tuple[int, int]:
        """The memory's base address and size now (from a host function: its caller's
        context, or its ``Caller`` on the public path)."""
        if _RAW_OK and not isinstance(context, wasmtime.Caller):
            if context is None:
                context = self.store._context()
            memory = self._memory_ref
            size = _MEMORY_SIZE(context, memory)
            if size != self._view_size:  # the memory only moves when it grows
                self._view_base = _MEMORY_DATA(context, memory) or 0
                self._view_size = size
            return self._view_base, size
        where = self.store if context is None else context
        pointer = self.memory.data_ptr(where)
        return ctypes.addressof(pointer.contents), self.memory.data_len(where)

    def _ensure_memory(self, needed: int) -> None:
        _, size = self._memory_view()
        if needed <= size:
            return
        pages = (needed - size + 65535) // 65536
        try:
            grown = self.memory.grow(self.store, pages)
        except wasmtime.WasmtimeError:
            grown = False
        if grown is False:
            raise EngineError(ErrorType.ENGINE, "the policy input does not fit the memory cap")

    def _string_at(self, addr: int, context: Any = None) -> bytes:
        base, size = self._memory_view(context)
        if not 0 < addr < size:
            raise EngineError(ErrorType.MALFORMED, "the policy module returned no result")
        return ctypes.string_at(base + addr)

    def _parse(self, document: bytes) -> int:
        exports, store = self._exports, self.store
        addr = int(exports["opa_malloc"](store, len(document)))
        self.memory.write(store, document, addr)
        parsed = int(exports["opa_json_parse"](store, addr, len(document)))
        if not parsed:
            raise EngineError(ErrorType.ENGINE, "the policy data is not valid JSON")
        return parsed

    def dump_export(self, name: str) -> dict[str, int]:
        """The JSON value returned by a no-argument export (``builtins``, ``entrypoints``)."""
        exports, store = self._exports, self.store
        text = self._string_at(int(exports["opa_json_dump"](store, exports[name](store))))
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"the policy module's {name} export is not an object")
        return {str(k): int(v) for k, v in value.items()}

    def probe_direct_values(self) -> bool:
        """Whether OPA's value structs in this module read and write here as its own
        ``opa_value_dump``/``opa_value_parse`` see them (see
        :mod:`~langchain_opa_guard.engines.wasm.guest_values`)."""
        try:
            probe = self._parse_value(None, probe_text())
            dumped = self._dumped_value(None, probe)
            read = GuestMemory(*self._memory_view(), fallback=None).value(probe)
            if not (isinstance(dumped, list) and len(dumped) == len(PROBE_VALUES)):
                return False
            if not _identical(read, dumped):
                return False
            for text in ("", "probe", "h\u00e9 \u4e16 \U0001f600", 'a"\\\n\x00\x7f'):
                written = self._write_string(None, text)
                if self._dumped_value(None, written) != text:
                    return False
                if GuestMemory(*self._memory_view(), fallback=None).value(written) != text:
                    return False
        except (GuestLayoutError, ValueError, UnicodeError, wasmtime.WasmtimeError):
            return False
        except (wasmtime.Trap, _Abort, _GuestTrapped):
            _clear_host_exception()
            return False
        return True

    # -- host builtins --------------------------------------------------------------

    def _abort(self, addr: int) -> None:
        try:
            self.abort_message = self._string_at(addr).decode("utf-8", "replace")[:200]
        except EngineError:
            self.abort_message = "aborted"
        raise _Abort(self.abort_message)

    def _host_builtin(self, context: Any, builtin_id: int, arguments: list[int]) -> int:
        """Dispatch a host builtin; an error or an unknown builtin is undefined (0).

        ``context`` is the caller's (a C-API context, or a ``Caller`` on the public path);
        guest calls made from here go through it. The arguments are read from memory
        directly when the module's layout allows it, else through ``opa_value_dump``; a
        string result is written directly, others through ``opa_value_parse``. Within an
        evaluation, a call repeated with the same scalar arguments reuses the first
        answer (the host builtins are pure).

        A builtin that raises
        :class:`~langchain_opa_guard.engines.wasm.host_builtins.BuiltinRefusedError` (it cannot
        give OPA's answer), and a guest call that traps, end the evaluation (an
        ``engine_error``, or a ``timeout`` when the deadline passed). So does a builtin
        called past the deadline, or that runs past it (:class:`TimeoutError`)."""
        entry = self._builtins_by_id.get(builtin_id)
        if entry is None:
            return 0
        name, function = entry
        key: tuple[Any, ...] | None = None
        try:
            if self._direct:
                memory = GuestMemory(
                    *self._memory_view(context),
                    fallback=lambda address: self._dumped_value(context, address),
                )
                values = [memory.value(a) for a in arguments]
            else:
                values = [self._dumped_value(context, a) for a in arguments]
            key = (builtin_id, tuple(map(type, values)), *values)
            try:
                result = self._memo.get(key, _MISSING)  # type: ignore[arg-type]
            except TypeError:  # an array argument: not kept
                key, result = None, _MISSING
            if result is _MISSING:
                if time.monotonic() > self.deadline:
                    raise TimeoutError("the evaluation's deadline passed")
                with builtin_deadline(self.deadline):
                    result = function(values)
            else:
                key = None
        except TimeoutError:
            # The epoch deadline only interrupts guest code: a builtin stops itself.
            self.interrupted = True
            self.abort_message = "the deadline passed"
            raise _Abort(self.abort_message) from None
        except BuiltinRefusedError as exc:
            self.abort_message = f"{name}: {exc}"[:200]
            raise _Abort(self.abort_message) from None
        except (_GuestTrapped, _Abort, GuestLayoutError):
            raise
        except Exception:  # noqa: BLE001 - OPA's default: a failing builtin is undefined
            result = None
        if key is not None and len(self._memo) < _MEMO_KEPT:
            self._memo[key] = result
        if result is None:
            return 0
        return self._write_result(context, result)

    def _write_result(self, context: Any, result: Any) -> int:
        kind = type(result)
        if kind is str and self._direct:
            return self._write_string(context, result)
        if kind is list and all(type(v) is str or type(v) is int for v in result):
            text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        else:
            text = dump_value(result)
        return self._parse_value(context, text.encode("utf-8", "surrogatepass"))

    def _guest(self, context: Any, name: str, *args: int) -> int:
        """Call one of the module's exports from inside an evaluation."""
        if isinstance(context, wasmtime.Caller) or not self._guest_calls:
            try:
                return int(self._exports[name](context or self.store, *args)) & _MASK
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                _clear_host_exception()
                code = getattr(exc, "trap_code", None) if isinstance(exc, wasmtime.Trap) else None
                self.interrupted = self.interrupted or code == wasmtime.TrapCode.INTERRUPT
                raise _GuestTrapped(name) from None
        assert _ffi is not None
        if context is None:
            context = self.store._context()
        func_ref, values = self._guest_calls[name]
        for i, arg in enumerate(args):
            values[i].i32 = arg
        trap = ctypes.POINTER(_ffi.wasm_trap_t)()
        error = _FUNC_CALL(context, func_ref, values, len(values), ctypes.byref(trap))
        if error:
            _ffi.wasmtime_error_delete(error)
            raise _GuestTrapped(name)
        if trap:
            trapped = wasmtime.Trap._from_ptr(trap)
            try:
                interrupted = trapped.trap_code == wasmtime.TrapCode.INTERRUPT
            except Exception:  # noqa: BLE001 - an unknown code is just an engine error
                interrupted = False
            self.interrupted = self.interrupted or interrupted
            _clear_host_exception()
            raise _GuestTrapped(name)
        return int(values[0].i32) & _MASK

    def _dumped_value(self, context: Any, addr: int) -> Any:
        """The value at ``addr`` through the guest's ``opa_value_dump``."""
        dumped = self._guest(context, "opa_value_dump", addr)
        return parse_value(self._string_at(dumped, context))

    def _malloc(self, context: Any, size: int) -> int:
        addr = self._guest(context, "opa_malloc", size)
        if not addr:
            raise _GuestTrapped("opa_malloc")
        return addr

    def _parse_value(self, context: Any, text: bytes) -> int:
        """A value from its text in Rego's syntax, through the guest's ``opa_value_parse``."""
        addr = self._malloc(context, len(text))
        base, size = self._memory_view(context)
        if addr + len(text) > size:
            raise _GuestTrapped("opa_malloc")
        ctypes.memmove(base + addr, text, len(text))
        parsed = self._guest(context, "opa_value_parse", addr, len(text))
        if not parsed:
            raise _GuestTrapped("opa_value_parse")
        return parsed

    def _write_string(self, context: Any, text: str) -> int:
        """A string value written directly: one ``opa_string_t`` and its bytes."""
        data = text.encode("utf-8", "surrogatepass")
        addr = self._malloc(context, STRING_HEAD_SIZE + len(data))
        block = string_block(addr, data)
        base, size = self._memory_view(context)
        if addr + len(block) > size:
            raise _GuestTrapped("opa_malloc")
        ctypes.memmove(base + addr, block, len(block))
        return addr

    def close(self) -> None:
        """Drop the instance (its store and memory go with the last reference)."""
        self._raw = None


def _identical(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (``Number`` is not ``str``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _weak_abort(me: weakref.ReferenceType[WasmInstance]) -> Callable[[int], None]:
    def abort(addr: int) -> None:
        instance = me()
        if instance is None:
            raise _Abort("aborted")
        instance._abort(addr)

    return abort


def _weak_builtin(me: weakref.ReferenceType[WasmInstance]) -> Callable[..., int]:
    """The public-path ``opa_builtinN`` import (when the C API is not usable)."""

    def builtin(caller: wasmtime.Caller, builtin_id: int, _ctx: int, *args: int) -> int:
        instance = me()
        if instance is None:
            raise _Abort("the policy instance is gone")
        return instance._host_builtin(caller, builtin_id, [a & _MASK for a in args])

    return builtin


def _func(item: Any, name: str) -> wasmtime.Func:
    if not isinstance(item, wasmtime.Func):
        raise ValueError(f"the policy module's {name} export is not a function")
    return item


def _ignore(_addr: int) -> None:
    return None


def _clear_host_exception() -> None:
    """Forget the exception wasmtime-py keeps from a host function that raised (our
    ``opa_abort``): the trap has been handled here."""
    try:
        from wasmtime import _func

        _func.LAST_EXCEPTION = None
    except (ImportError, AttributeError):  # pragma: no cover
        pass
