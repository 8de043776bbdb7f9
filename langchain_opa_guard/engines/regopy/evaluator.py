"""The regopy (rego-cpp) evaluator: the embedded engine's fallback when no compiled policy
module can be had (no ``opa`` binary to compile the Rego with, and no matching bundle).

rego-cpp is a second implementation of Rego, not OPA: strings reach it JSON-escaped, so
string builtins see escapes instead of characters (``count("é")`` is 6, ``regex.match``
on a tab differs, ``upper`` of non-ASCII text is garbled), ``sprintf`` mangles ``%s``
arguments, and any module using ``with`` slows every decision. :data:`KNOWN_DIFFERENCES`
names them; the engine logs them once when it falls back.

A policy is compiled once per interpreter; interpreters are not documented as
thread-safe, so each lives in a bounded
:class:`~langchain_opa_guard.engines.instance_pool.InstancePool`.
rego-cpp can be neither interrupted nor capped, so on POSIX systems each interpreter runs
in a child process (:mod:`langchain_opa_guard.engines.regopy.worker`): past the deadline the
process is killed, and its memory is capped at ``memory_limit`` over what the loaded policy
takes. An evaluation cannot go on after its decision timed out, nor take the host's memory.

Example:
    ```python
    import time

    from langchain_opa_guard.engines.policy_sources import load_sources
    from langchain_opa_guard.engines.regopy.evaluator import RegopyEvaluator

    evaluator = RegopyEvaluator(
        load_sources("policies"), "agent/authz/decision", size=2, memory_limit=128 << 20
    )
    value = evaluator.evaluate("agent/authz/decision", b"{}", time.monotonic() + 1.0)
    evaluator.close()
    ```
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import regopy

from langchain_opa_guard.decision import EngineError, ErrorType
from langchain_opa_guard.engines.engine import path_to_ref
from langchain_opa_guard.engines.instance_pool import (
    InstancePool,
    PoolClosedError,
    PoolTimeoutError,
)
from langchain_opa_guard.engines.policy_sources import PolicySources
from langchain_opa_guard.engines.regopy.wide_integers import holds_long_digits, refuse_wide_integers
from langchain_opa_guard.engines.wasm.evaluator import UNDEFINED

__all__ = [
    "ISOLATED",
    "KNOWN_DIFFERENCES",
    "PoolClosedError",
    "RegopyEvaluator",
    "compile_sources",
    "parse_check",
    "run_query",
]

KNOWN_DIFFERENCES = (
    "strings reach rego-cpp JSON-escaped (count, upper/lower, regex.match and comparisons "
    "differ on non-ASCII and control characters), sprintf mangles %s arguments, "
    "builtins such as http.send, net.* and json.match_schema are missing, and a module "
    "using `with` slows every decision"
)
"""How the regopy fallback differs from OPA, as logged when it is used."""


def parse_check(sources: PolicySources, where: str) -> None:
    """Raise ``ValueError`` when regopy cannot parse the modules (no ``opa`` needed).

    Raises:
        ValueError: A module does not parse.
    """
    interpreter = regopy.Interpreter()
    try:
        for name, source in sources.modules.items():
            interpreter.add_module(name, source)
        interpreter.query("true")
    except regopy.RegoError as exc:
        raise ValueError(f"the policy at {where!r} does not compile: {exc}") from None


class _Compiled:
    __slots__ = ("bundle", "extra", "interpreter", "policy")

    def __init__(self, interpreter: Any, bundle: Any, policy: str) -> None:
        self.interpreter = interpreter
        self.bundle = bundle
        self.policy = policy
        self.extra: dict[str, Any] = {}


def compile_sources(sources: PolicySources, policy: str) -> _Compiled:
    """The policy compiled by one regopy interpreter, its decision built.

    Raises:
        ValueError: The policy does not compile.
    """
    interpreter = regopy.Interpreter()
    # A failing builtin is an error (as with OPA's strict-builtin-errors), not text
    # spliced into the output.
    interpreter.strict_built_in_errors = True
    try:
        for name, source in sources.modules.items():
            interpreter.add_module(name, source)
        if sources.data:
            interpreter.add_data_json(json.dumps(sources.data))
        bundle = interpreter.build(path_to_ref(policy), [policy])
    except regopy.RegoError as exc:
        raise ValueError(f"the policy does not compile: {exc}") from exc
    return _Compiled(interpreter, bundle, policy)


def run_query(compiled: _Compiled, entrypoint: str, document: Any) -> tuple[bool, str]:
    """Evaluate ``entrypoint`` (built on first use) on ``document``: ``(ok, output text)``.

    Raises:
        regopy.RegoError, ValueError: The entrypoint does not compile, or the input is
            refused.
    """
    bundle = compiled.bundle if entrypoint == compiled.policy else compiled.extra.get(entrypoint)
    if bundle is None:
        bundle = compiled.interpreter.build(path_to_ref(entrypoint), [entrypoint])
        compiled.extra[entrypoint] = bundle
    _set_input(compiled.interpreter, document)
    return _query(compiled.interpreter, bundle, entrypoint)


ISOLATED = os.name == "posix"
"""Whether interpreters run in child processes (killed at the deadline, memory capped)."""

_STARTUP = 60.0  # seconds the first interpreter process may take to load the policy


class RegopyEvaluator:
    """The policy compiled by regopy, in a bounded pool of interpreters.

    On POSIX systems each interpreter lives in a child process
    (:class:`~langchain_opa_guard.engines.regopy.worker.RegopyProcess`): an evaluation past its
    deadline is killed with its process, and one that needs more than ``memory_limit``
    bytes fails; either way the decision fails closed and the next one gets a fresh
    process. Elsewhere interpreters run in process, where neither bound holds.

    Raises:
        ValueError: The policy does not compile, or its first process does not start.
    """

    kind = "regopy"

    def __init__(
        self,
        sources: PolicySources,
        policy: str,
        *,
        size: int,
        memory_limit: int | None = None,
        isolated: bool = ISOLATED,
    ) -> None:
        self.sources = sources
        self.policy = policy
        self.memory_limit = memory_limit
        self.isolated = isolated
        self.entrypoints: dict[str, int] = {}
        compiled = compile_sources(sources, policy)  # a policy that does not compile: here
        self.pool: InstancePool[Any]
        if not isolated:
            self.pool = InstancePool(self._compile_checked, size=size)
            self.pool.replace(self._compile_checked, compiled)
            return
        del compiled
        self.pool = InstancePool(self._start, size=size, dispose=_kill)
        generation, first = self.pool.checkout(deadline=time.monotonic() + 1)
        try:
            first.wait_ready(time.monotonic() + _STARTUP)
        except EngineError as exc:
            self.pool.discard(generation, first)
            raise ValueError(f"the regopy process could not load the policy: {exc}") from None
        self.pool.checkin(generation, first)

    def has(self, entrypoint: str) -> bool:
        return True

    def _start(self) -> Any:
        from langchain_opa_guard.engines.regopy.worker import RegopyProcess

        return RegopyProcess(self.sources, memory_limit=self.memory_limit, policy=self.policy)

    def _compile_checked(self) -> _Compiled:
        try:
            return compile_sources(self.sources, self.policy)
        except ValueError as exc:
            raise EngineError(ErrorType.ENGINE, "the embedded policy failed to compile") from exc

    def evaluate(self, entrypoint: str, body: bytes, deadline: float) -> Any:
        """The value of ``entrypoint`` for the input ``body`` (JSON), or ``UNDEFINED``.

        Raises:
            EngineError: The evaluation failed, timed out, or gave unreadable output.
            PoolClosedError: The evaluator was closed (a reload replaced it).
        """
        if holds_long_digits(body):  # an integer past 64 bits, perhaps
            refuse_wide_integers(json.loads(body))
        try:
            generation, interpreter = self.pool.checkout(deadline=deadline)
        except PoolTimeoutError:
            raise EngineError(
                ErrorType.TIMEOUT, "no policy interpreter became free in time"
            ) from None
        if self.isolated:
            ok, text = self._in_child(generation, interpreter, entrypoint, body, deadline)
        else:
            try:
                ok, text = run_query(interpreter, entrypoint, json.loads(body))
            except (regopy.RegoError, ValueError) as exc:
                raise EngineError(
                    ErrorType.ENGINE, "the embedded policy failed to evaluate"
                ) from exc
            finally:
                self.pool.checkin(generation, interpreter)
            if time.monotonic() > deadline:  # it cannot be stopped here: late is a timeout
                raise EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
        if not ok:
            raise EngineError(ErrorType.ENGINE, "the embedded policy failed to evaluate")
        if text == "undefined":
            return UNDEFINED
        try:
            return json.loads(text, strict=False)["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineError(
                ErrorType.MALFORMED, "the embedded policy's output is unreadable"
            ) from None

    def _in_child(
        self, generation: int, worker: Any, entrypoint: str, body: bytes, deadline: float
    ) -> tuple[bool, str]:
        from langchain_opa_guard.engines.regopy.worker import AnsweredError, StillStartingError

        try:
            result: tuple[bool, str] = worker.evaluate(entrypoint, body, deadline)
        except (StillStartingError, AnsweredError):
            self.pool.checkin(generation, worker)  # healthy: not ready yet, or it said no
            raise
        except BaseException:
            worker.kill()  # past its deadline, out of memory, or gone: never reused
            self.pool.discard(generation, worker)
            self._replenish()
            raise
        self.pool.checkin(generation, worker)
        return result

    def _replenish(self) -> None:
        """Start the replacement of a killed process now (it loads the policy while the
        next decision is on its way), if the pool has room and nobody waits."""
        try:
            generation, worker = self.pool.checkout(deadline=time.monotonic())
        except (PoolTimeoutError, PoolClosedError, EngineError):
            return
        self.pool.checkin(generation, worker)

    def close(self) -> None:
        self.pool.close()


def _kill(worker: Any) -> None:
    worker.kill()


def _plain(text: str) -> bool:
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _json_text(text: str) -> str:
    """``text`` as it stands between the quotes of a JSON string, non-ASCII left as UTF-8
    (regopy keeps ``\\u00e9`` escapes as six characters, so ``count`` and ``indexof``
    would disagree with OPA); lone surrogates, which UTF-8 cannot hold, stay escaped."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    try:
        escaped.encode()
    except UnicodeEncodeError:
        return json.dumps(text)[1:-1]
    return escaped


def _escaped(value: Any) -> Any:
    """A copy of a JSON document whose strings are in the form regopy keeps parsed JSON in."""
    if isinstance(value, str):
        return value if _plain(value) else _json_text(value)
    if isinstance(value, Mapping):
        return {(k if _plain(k) else json.dumps(k)[1:-1]): _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


def _set_input(interpreter: Any, document: Any) -> None:
    """Give ``document`` to the interpreter as its input.

    regopy's own converter walks the document with abstract-type checks and one buffer per
    string; this walk pushes the same values onto regopy's input builder directly (about
    twice as fast), with strings in the escaped form regopy keeps parsed JSON in.
    """
    if _shared is None:  # pragma: no cover
        refuse_wide_integers(document)
        interpreter.set_input(_escaped(document))
        return
    handle = _shared.rego_new_input()
    try:
        try:
            failed = _push(handle, document)
        except (TypeError, OverflowError, ctypes.ArgumentError):
            failed = True
        if failed:  # a value the fast path does not take (a huge integer, say)
            refuse_wide_integers(document)
            interpreter.set_input_term(json.dumps(document))
            return
        _shared.rego_set_input(interpreter._impl, handle)
    finally:
        _shared.rego_free_input(handle)


def _push(handle: Any, value: Any) -> int:
    """Push ``value`` onto a regopy input builder; non-zero if any push failed."""
    lib = _shared.rego  # type: ignore[union-attr]
    failed = 0
    kind = type(value)
    if kind is str:
        text = value if _plain(value) else _json_text(value)
        return int(lib.regoInputString(handle, text.encode()))
    if kind is dict:
        for key, item in value.items():
            text = key if _plain(key) else _json_text(key)
            failed |= lib.regoInputString(handle, text.encode())
            failed |= _push(handle, item)
            failed |= lib.regoInputObjectItem(handle)
        return failed | int(lib.regoInputObject(handle, len(value)))
    if kind is list or kind is tuple:
        for item in value:
            failed |= _push(handle, item)
        return failed | int(lib.regoInputArray(handle, len(value)))
    if kind is bool:
        return int(lib.regoInputBoolean(handle, value))
    if kind is int:
        return int(lib.regoInputInt(handle, value))
    if kind is float:
        return int(lib.regoInputFloat(handle, value))
    if value is None:
        return int(lib.regoInputNull(handle))
    return _push(handle, _escaped(json.loads(json.dumps(value, default=str))))


def _query(interpreter: Any, bundle: Any, entrypoint: str) -> tuple[bool, str]:
    """Evaluate an entrypoint; ``(ok, output text)``.

    regopy's ``Output`` parses its own text with a strict JSON parser, which fails on a string
    holding a control character (a tool name the model made up, say), and parses it once more
    than needed. The output handle is read and freed directly instead.
    """
    if _shared is None:  # pragma: no cover - older/newer regopy layouts
        output = interpreter.query_bundle_entrypoint(bundle, entrypoint)
        return bool(output.ok()), str(output)
    impl = _shared.rego_bundle_query_entrypoint(interpreter._impl, bundle._impl, entrypoint)
    try:
        return bool(_shared.rego_output_ok(impl)), str(_shared.rego_output_string(impl))
    finally:
        _shared.rego_free_output(impl)


try:
    from regopy import rego_shared as _shared

    if not all(
        hasattr(_shared, name)
        for name in (
            "rego",
            "rego_new_input",
            "rego_set_input",
            "rego_free_input",
            "rego_bundle_query_entrypoint",
            "rego_output_ok",
            "rego_output_string",
            "rego_free_output",
        )
    ):
        _shared = None
except ImportError:  # pragma: no cover
    _shared = None
