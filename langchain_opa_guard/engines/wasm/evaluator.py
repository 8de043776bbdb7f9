"""Evaluating an OPA-compiled policy module: a bounded pool of wasmtime instances.

Each evaluation borrows one instance (waiting, within the caller's deadline, when all are
busy), makes one ``opa_eval`` guest call with the deadline left, and gives the instance
back; an instance that trapped (deadline, memory cap, an evaluation error) is discarded so
that the next evaluation starts on a fresh one. An answer that comes back after the
deadline is a ``timeout`` too, whatever part of the evaluation was slow.

Example:
    ```python
    import time

    from langchain_opa_guard.engines.wasm.evaluator import WasmEvaluator

    evaluator = WasmEvaluator(wasm_bytes, data={}, modules={}, size=2, memory_limit=64 << 20)
    value = evaluator.evaluate("agent/authz/decision", b"{}", time.monotonic() + 1.0)
    ```
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from langchain_opa_guard.decision import EngineError, ErrorType
from langchain_opa_guard.engines.instance_pool import (
    InstancePool,
    PoolClosedError,
    PoolTimeoutError,
)
from langchain_opa_guard.engines.wasm.host_builtins import HOST_BUILTINS, check_builtins
from langchain_opa_guard.engines.wasm.rego_values import parse_value, to_json
from langchain_opa_guard.engines.wasm.runtime import WasmInstance, compiled_module
from langchain_opa_guard.fast_json import loads

__all__ = ["UNDEFINED", "WasmEvaluator"]

UNDEFINED: Any = object()
"""What :meth:`WasmEvaluator.evaluate` returns for an undefined document."""


class WasmEvaluator:
    """A compiled policy module with a bounded pool of instances.

    Raises:
        ValueError: The module is not an OPA policy module.
        UnsupportedBuiltinError: It needs builtins the host does not provide.
        EngineError: Its data does not load within ``memory_limit``.
    """

    kind = "wasm"

    def __init__(
        self,
        wasm: bytes,
        *,
        data: Mapping[str, Any],
        modules: Mapping[str, str],
        size: int,
        memory_limit: int | None,
    ) -> None:
        self.module = compiled_module(wasm)
        check_builtins(self.module.builtins, modules)
        self.entrypoints = dict(self.module.entrypoints)
        self._data = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False).encode()
        self._memory_limit = memory_limit
        self.pool: InstancePool[WasmInstance] = InstancePool(self._instance, size=size)
        # One instance now: a data document that does not load is an error at start-up.
        self.pool.checkin(*self.pool.checkout(deadline=time.monotonic() + 60))

    def _instance(self) -> WasmInstance:
        return self.module.instance(
            self._data, memory_limit=self._memory_limit, host_builtins=HOST_BUILTINS
        )

    def has(self, entrypoint: str) -> bool:
        return entrypoint in self.entrypoints

    def evaluate(self, entrypoint: str, body: bytes, deadline: float) -> Any:
        """The value of ``entrypoint`` for the input ``body`` (JSON), or :data:`UNDEFINED`.

        Raises:
            EngineError: ``timeout`` past the deadline (waiting for an instance included),
                ``engine_error`` when the evaluation failed, ``malformed`` for output that
                cannot be read.
            PoolClosedError: The evaluator was closed (a reload replaced it).
        """
        number = self.entrypoints.get(entrypoint)
        if number is None:
            raise EngineError(
                ErrorType.ENGINE,
                f"{entrypoint!r} is not an entrypoint of the compiled policy",
            )
        try:
            generation, instance = self.pool.checkout(deadline=deadline)
        except PoolTimeoutError:
            raise EngineError(ErrorType.TIMEOUT, "no policy instance became free in time") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.pool.checkin(generation, instance)
            raise EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
        try:
            text = instance.evaluate(number, body, timeout=remaining)
        except EngineError:
            self.pool.discard(generation, instance)
            raise
        except BaseException:
            self.pool.discard(generation, instance)
            raise
        self.pool.checkin(generation, instance)
        if time.monotonic() > deadline:  # late (a host builtin's time is not guest time)
            raise EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
        result_set = read_result_set(text)
        if not result_set:
            return UNDEFINED
        try:
            return result_set[0]["result"]
        except (TypeError, KeyError, IndexError):
            raise EngineError(ErrorType.MALFORMED, "the policy's output is unreadable") from None

    def close(self) -> None:
        self.pool.close()


def read_result_set(text: bytes) -> Any:
    """The result set ``opa_eval`` wrote in Rego's value syntax, as JSON values.

    The result set is itself a set: ``{{"result": ...}}`` for one result, ``set()`` for
    none. Its member is read as JSON when it is JSON (no sets, no non-string keys inside),
    which is the common case and several times faster than the Rego reader; otherwise the
    whole text goes through the Rego reader and each set is ordered as OPA's JSON orders it.

    Raises:
        EngineError: ``malformed`` when the text is neither.
    """
    if text == b"set()":
        return []
    if text.startswith(b"{{") and text.endswith(b"}}"):
        try:
            member = loads(text[1:-1])
        except ValueError:
            member = None
        if isinstance(member, dict) and list(member) == ["result"]:
            return [member]
    try:
        return loads(text)
    except ValueError:
        pass
    try:
        return to_json(parse_value(text))
    except ValueError:
        raise EngineError(ErrorType.MALFORMED, "the policy's output is unreadable") from None


__all__ += ["PoolClosedError"]
