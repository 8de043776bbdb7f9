"""The guard's policy evaluated in process by regopy (rego-cpp): no server, no network.

The policy is compiled once into a regopy bundle; each decision only sets the input and
evaluates the compiled entrypoint. regopy interpreters are not documented as thread-safe, so
compiled interpreters live in a small pool: a decision checks one out for its own use and
returns it, and a new one is compiled only when every one is busy (not per thread: LangGraph
may run a node on a fresh thread each time).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import regopy

from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.engine import (
    DEFAULT_POLICY,
    encode_input,
    normalize_policy_path,
    path_to_ref,
)
from langchain_opa_guard.policy_sources import (
    PolicyNotFoundError,
    PolicySources,
    defines,
    load_sources,
)

__all__ = ["EmbeddedPolicy"]


class _Compiled:
    __slots__ = ("bundle", "extra", "generation", "interpreter")

    def __init__(self, interpreter: Any, bundle: Any, generation: int) -> None:
        self.interpreter = interpreter
        self.bundle = bundle
        self.generation = generation
        self.extra: dict[str, Any] = {}


class EmbeddedPolicy:
    """Evaluate the guard's policy in process with regopy, the zero-setup engine.

    Loads a directory of ``.rego`` files with ``data.json``/``data.yaml`` files, or an OPA
    bundle ``.tar.gz``, and compiles the decision path once. The same contract as
    :class:`~langchain_opa_guard.OPAServer`: ``decide``/``adecide`` never raise for a
    failed evaluation, they deny with the failure in ``Decision.error``.

    Args:
        path: A policy directory, a ``.rego`` file, or a bundle ``.tar.gz``.
        policy: Decision path, ``agent/authz/decision`` or ``data.agent.authz.decision``.
        data: Extra data merged over the loaded data.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        PolicyNotFoundError: No loaded module or data defines the decision path.
        ValueError: The policy does not compile.

    Example:
        ```python
        from langchain_opa_guard import EmbeddedPolicy

        engine = EmbeddedPolicy("policies")
        decision = engine.decide({
            "tool": {"name": "delete_customer", "args": {"customer_id": "CUST-3"},
                     "call_id": "1", "metadata": {"toolkit": "CustomerDBTool"}},
            "user": {"id": "user-789", "role": "guest"},
        })
        assert not decision.allow
        ```
    """

    engine_name = "embedded"
    in_process = True

    def __init__(
        self,
        path: str | Path = "policies",
        *,
        policy: str = DEFAULT_POLICY,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.policy = normalize_policy_path(policy)
        self._extra_data = dict(data or {})
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._generation = 0
        self._sources = self._read()
        self._revision = self._sources.revision or self._sources.digest()[:16]
        self._idle: list[_Compiled] = [self._compile(self._sources, self._generation)]
        self._verify(self._sources)

    def __repr__(self) -> str:
        return f"EmbeddedPolicy({str(self.path)!r}, policy={self.policy!r})"

    @property
    def revision(self) -> str:
        """The bundle's revision, or a content hash of the loaded policies and data."""
        return self._revision

    def reload(self) -> None:
        """Read the policies from disk again; later decisions use them.

        Raises:
            ValueError: The new policy does not compile (the old one stays in force).
        """
        sources = self._read()
        compiled = self._compile(sources, self._generation + 1)
        self._verify(sources)
        with self._lock:
            self._sources, self._generation = sources, compiled.generation
            self._revision = sources.revision or sources.digest()[:16]
            self._idle = [compiled]

    # -- decisions --------------------------------------------------------------------

    def decide(self, input: Mapping[str, Any]) -> Decision:
        """Evaluate one input document."""
        try:
            # Encoding checks the input is JSON. regopy converts a Python document about
            # twice as fast as it parses JSON text; strings that JSON would escape are
            # escaped first, so the policy sees exactly what set_input_term would give it.
            encode_input(input, key=None)
            body = input
            compiled = self._checkout()
            try:
                return self._evaluate(compiled, body)
            finally:
                self._checkin(compiled)
        except EngineError as exc:
            return Decision.failure(
                exc.error_type, exc.reason, engine=self.engine_name, policy=self.policy
            )

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Evaluate the inputs of a turn in order (in process there is nothing to overlap)."""
        return [self.decide(i) for i in inputs]

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        """Evaluate in a worker thread, leaving the event loop free."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self.decide, input)

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Evaluate a turn in one worker-thread hop."""
        if not inputs:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self.decide_many, inputs)

    def query(self, path: str, input: Mapping[str, Any]) -> Any:
        """Evaluate another document of the same policy (``agent/authz/visible_tools``).

        Returns the value, or ``None`` when it is undefined.

        Raises:
            EngineError: The evaluation failed.
        """
        path = normalize_policy_path(path)
        encode_input(input, key=None)
        compiled = self._checkout()
        try:
            bundle = compiled.extra.get(path)
            if bundle is None:
                try:
                    bundle = compiled.interpreter.build(path_to_ref(path), [path])
                except regopy.RegoError as exc:
                    raise EngineError(ErrorType.ENGINE, f"{path!r} does not compile") from exc
                compiled.extra[path] = bundle
            _set_input(compiled.interpreter, input)
            ok, text = _query(compiled.interpreter, bundle, path)
        finally:
            self._checkin(compiled)
        if not ok:
            raise EngineError(ErrorType.ENGINE, f"{path!r} failed to evaluate")
        if text == "undefined":
            return None
        try:
            return json.loads(text, strict=False)["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineError(ErrorType.MALFORMED, f"{path!r} gave unreadable output") from None

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # -- internals --------------------------------------------------------------------

    def _read(self) -> PolicySources:
        sources = load_sources(self.path)
        if self._extra_data:
            sources.data = _deep_merge(sources.data, self._extra_data)
        if not sources.modules:
            raise PolicyNotFoundError(f"no Rego modules found at {str(self.path)!r}")
        return sources

    def _verify(self, sources: PolicySources) -> None:
        if not defines(sources.modules.values(), sources.data, self.policy):
            raise PolicyNotFoundError(
                f"nothing at {str(self.path)!r} defines the decision {self.policy!r}"
            )

    def _compile(self, sources: PolicySources, generation: int) -> _Compiled:
        interpreter = regopy.Interpreter()
        # A failing builtin is an error (as with OPA's strict-builtin-errors), not text
        # spliced into the output.
        interpreter.strict_built_in_errors = True
        try:
            for name, source in sources.modules.items():
                interpreter.add_module(name, source)
            if sources.data:
                interpreter.add_data_json(json.dumps(sources.data))
            bundle = interpreter.build(path_to_ref(self.policy), [self.policy])
        except regopy.RegoError as exc:
            raise ValueError(f"the policy at {str(self.path)!r} does not compile: {exc}") from exc
        return _Compiled(interpreter, bundle, generation)

    def _checkout(self) -> _Compiled:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            sources, generation = self._sources, self._generation
        try:
            return self._compile(sources, generation)
        except ValueError as exc:
            raise EngineError(ErrorType.ENGINE, "the embedded policy failed to compile") from exc

    def _checkin(self, compiled: _Compiled) -> None:
        with self._lock:
            if compiled.generation == self._generation:
                self._idle.append(compiled)

    def _evaluate(self, compiled: _Compiled, document: Any) -> Decision:
        try:
            _set_input(compiled.interpreter, document)
            ok, text = _query(compiled.interpreter, compiled.bundle, self.policy)
        except (regopy.RegoError, ValueError) as exc:
            raise EngineError(ErrorType.ENGINE, "the embedded policy failed to evaluate") from exc
        if not ok:
            raise EngineError(ErrorType.ENGINE, "the embedded policy failed to evaluate")
        if text == "undefined":
            raise EngineError(
                ErrorType.UNDEFINED, f"the decision {self.policy!r} is undefined for this input"
            )
        try:
            value = json.loads(text, strict=False)["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EngineError(
                ErrorType.MALFORMED, "the embedded policy's output is unreadable"
            ) from None
        return Decision.from_result(
            value, engine=self.engine_name, policy=self.policy, revision=self._revision
        )

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=2, thread_name_prefix="opa-guard-embedded"
                    )
        return self._pool


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
        interpreter.set_input(_escaped(document))
        return
    handle = _shared.rego_new_input()
    try:
        try:
            failed = _push(handle, document)
        except (TypeError, OverflowError, ctypes.ArgumentError):
            failed = True
        if failed:  # a value the fast path does not take (a huge integer, say)
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


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
