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
from langchain_opa_guard.engines.wasm.host_builtins import BuiltinRefusedError

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
        )
    )
except ImportError:  # pragma: no cover - a wasmtime-py without the private module
    _ffi = None  # type: ignore[assignment]
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
        self._builtins_by_id: dict[int, tuple[str, HostBuiltin]] = {}
        try:
            imports: list[Any] = []
            for imp in module.module.imports:
                kind, name = imp.type, imp.name or ""
                if name == "memory" and isinstance(kind, wasmtime.MemoryType):
                    if kind.limits.min < module.memory_pages and not kind.is_64:
                        limits = wasmtime.Limits(module.memory_pages, kind.limits.max)
                        kind = wasmtime.MemoryType(limits)
                    self.memory = wasmtime.Memory(store, kind)
                    imports.append(self.memory)
                elif not isinstance(kind, wasmtime.FuncType):
                    raise ValueError(f"the policy module imports an unknown {name!r}")
                elif name == "opa_abort":
                    imports.append(wasmtime.Func(store, kind, self._abort))
                elif name == "opa_println":
                    imports.append(wasmtime.Func(store, kind, _ignore))
                elif name.startswith("opa_builtin"):
                    imports.append(wasmtime.Func(store, kind, self._builtin, access_caller=True))
                else:
                    raise ValueError(f"the policy module imports an unknown {imp.name!r}")
            self.instance = wasmtime.Instance(store, module.module, imports)
            exports = self.instance.exports(store)
            self._exports = {name: _func(exports[name], name) for name in _REQUIRED_EXPORTS}
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
        self.abort_message = ""
        if self._raw is not None:
            addr = self._raw(entrypoint, self.data_addr, self.heap, size, end)
        else:
            addr = self._public_call(entrypoint, size, end)
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
        if code == wasmtime.TrapCode.INTERRUPT:
            return EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
        if self.abort_message:
            return EngineError(
                ErrorType.ENGINE, "the policy failed to evaluate: " + self.abort_message
            )
        return EngineError(ErrorType.ENGINE, "the policy failed to evaluate")

    # -- memory -------------------------------------------------------------------

    def _memory_view(self) -> tuple[int, int]:
        if _RAW_OK:
            assert _ffi is not None
            context = self.store._context()
            memory = ctypes.byref(self.memory._memory)
            pointer = _ffi.wasmtime_memory_data(context, memory)
            size = _ffi.wasmtime_memory_data_size(context, memory)
            return ctypes.cast(pointer, ctypes.c_void_p).value or 0, int(size)
        pointer = self.memory.data_ptr(self.store)
        return ctypes.addressof(pointer.contents), self.memory.data_len(self.store)

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

    def _string_at(self, addr: int) -> bytes:
        base, size = self._memory_view()
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

    # -- imports ------------------------------------------------------------------

    def _abort(self, addr: int) -> None:
        try:
            self.abort_message = self._string_at(addr).decode("utf-8", "replace")[:200]
        except EngineError:
            self.abort_message = "aborted"
        raise _Abort(self.abort_message)

    def _builtin(self, caller: wasmtime.Caller, builtin_id: int, _ctx: int, *args: int) -> int:
        """Dispatch a host builtin; an error or an unknown builtin is undefined (0).

        A builtin that raises
        :class:`~langchain_opa_guard.engines.wasm.host_builtins.BuiltinRefusedError` (it cannot
        give OPA's answer) ends the evaluation with an ``engine_error``."""
        entry = self._builtins_by_id.get(builtin_id)
        if entry is None:
            return 0
        name, function = entry
        exports = self._exports
        try:
            values = [self._read_value(caller, exports, a) for a in args]
            result = function(values)
        except BuiltinRefusedError as exc:
            self.abort_message = f"{name}: {exc}"[:200]
            raise _Abort(self.abort_message) from None
        except Exception:  # noqa: BLE001 - OPA's default: a failing builtin is undefined
            return 0
        if result is None:
            return 0
        return self._write_value(caller, exports, result)

    def _read_value(self, caller: wasmtime.Caller, exports: Any, addr: int) -> Any:
        from langchain_opa_guard.engines.wasm.rego_values import parse_value

        dumped = int(exports["opa_value_dump"](caller, addr))
        pointer = self.memory.data_ptr(caller)
        return parse_value(ctypes.string_at(ctypes.addressof(pointer.contents) + dumped))

    def _write_value(self, caller: wasmtime.Caller, exports: Any, value: Any) -> int:
        from langchain_opa_guard.engines.wasm.rego_values import dump_value

        text = dump_value(value).encode()
        addr = int(exports["opa_malloc"](caller, len(text)))
        self.memory.write(caller, text, addr)
        return int(exports["opa_value_parse"](caller, addr, len(text)))

    def close(self) -> None:
        """Drop the instance (its store and memory go with the last reference)."""
        self._raw = None


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
