"""The guard's policy evaluated in process: OPA-compiled WebAssembly run by wasmtime.

The policy is OPA's own compilation of the Rego (``opa build -t wasm``), so decisions have
OPA's semantics by construction. :class:`EmbeddedPolicy` accepts a wasm bundle, a Rego
bundle, a directory or a single ``.rego`` file; Rego is compiled with the ``opa`` binary
(``opa=``, ``$OPA_BIN`` or ``PATH``) and cached by content digest, and the project's own
``policies/`` need no binary at all (their compiled bundle ships with the package). When
neither can be had, the engine falls back to regopy (rego-cpp, a second implementation of
Rego) and says so once, at WARNING, with the differences a policy author should know.

Why one module: :class:`EmbeddedPolicy` is one engine object (its backend chosen once, its
compiled policy found or built, its fallback to regopy said once); the backends themselves
are in :mod:`.wasm` and :mod:`.regopy`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_opa_guard.decision import Decision, EngineError, ErrorType
from langchain_opa_guard.engines.engine import (
    DEFAULT_POLICY,
    encode_input,
    normalize_policy_path,
    same_json,
    shared_part,
)
from langchain_opa_guard.engines.instance_pool import PoolClosedError
from langchain_opa_guard.engines.policy_sources import (
    PolicyNotFoundError,
    PolicySources,
    defines,
    load_sources,
)
from langchain_opa_guard.engines.wasm.bundles import (
    BATCH_ENTRYPOINT,
    BATCH_FILE,
    TURN_BATCH_ENTRYPOINT,
    CompileError,
    batch_module,
    default_cache_dir,
    find_compiled,
    read_wasm_bundle,
)
from langchain_opa_guard.engines.wasm.evaluator import UNDEFINED, WasmEvaluator
from langchain_opa_guard.fast_json import value_key

__all__ = ["EmbeddedPolicy"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "wasm", "regopy"]
_DEFAULT_INSTANCES = max(2, min(8, os.cpu_count() or 2))


class _Reloaded(Exception):
    """The policy a turn began with was replaced by a reload before the turn was decided."""


@dataclass(frozen=True)
class _Loaded:
    """One loaded policy: what a reload swaps in one assignment."""

    evaluator: Any  # WasmEvaluator | RegopyEvaluator
    revision: str
    batch: str | None
    turn_batch: str | None = None  # the batch entrypoint taking positions in input.turn


class EmbeddedPolicy:
    """Evaluate the guard's policy in process, with OPA's semantics and no server.

    Loads a wasm bundle built by ``opa build -t wasm -e <entrypoints>``, a Rego bundle
    ``.tar.gz``, a policy directory (``.rego`` files with ``data.json``/``data.yaml``
    files, laid out as for ``opa run``) or one ``.rego`` file. Rego is compiled to
    WebAssembly with ``opa`` once per change (cached by content digest); without an
    ``opa`` binary, the project's own ``policies/`` use the compiled bundle shipped with the
    package, and any other Rego falls back to regopy with one WARNING naming the known
    differences (``backend="wasm"`` makes that an error instead).

    The same contract as :class:`~langchain_opa_guard.OPAServer`: ``decide``/``adecide``
    never raise for a failed evaluation, they deny with the failure in ``Decision.error``
    (``timeout`` past the deadline, ``engine_error`` for a trap or an evaluation error,
    ``undefined``, ``malformed``). ``timeout`` bounds a whole decision from the moment it is
    asked for, waiting for a free instance included; a turn's calls given to
    ``decide_many`` are asked for together and are evaluated in one guest call when the
    policy module has the batch entrypoint (every Rego source compiled here has it).

    At most ``max_instances`` policy instances exist at once (callers wait for a free one
    within their timeout); each has a memory cap of ``memory_limit`` bytes. A trapped
    instance is replaced by a fresh one. The engine is thread-safe and fork-safe: a forked
    child makes its own instances and worker threads. ``close()`` (or ``with``) releases
    them.

    Args:
        path: A wasm or Rego bundle ``.tar.gz``, a policy directory, or a ``.rego`` file.
        policy: Decision path, ``agent/authz/decision`` or ``data.agent.authz.decision``.
        data: Extra data merged over the loaded data.
        timeout: Seconds a decision may take, from the moment it is asked for.
        max_instances: The most policy instances (and worker threads) at once.
        memory_limit: Bytes of memory one policy instance may use (for the regopy
            fallback: one interpreter process, over what the loaded policy takes).
        entrypoints: More documents to compile in for :meth:`query` (the decision's
            sibling ``visible_tools`` is added when the policy defines it).
        backend: ``"auto"`` (wasm, else the regopy fallback), ``"wasm"`` or ``"regopy"``.
        opa: The ``opa`` binary to compile Rego with (default ``$OPA_BIN``, then ``PATH``).
        cache_dir: Where compiled modules are kept (default
            ``~/.cache/langchain-opa-guard/wasm``); ``None`` for the default.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        PolicyNotFoundError: No loaded module or data defines the decision path.
        ValueError: The policy does not compile, or an argument is out of range (the
            message names it).
        UnsupportedBuiltinError: The policy calls builtins the embedded engine cannot
            provide (``http.send``, ``net.*``); the message names them and their lines.

    Example:
        ```python
        from langchain_opa_guard import EmbeddedPolicy

        with EmbeddedPolicy("policies") as engine:
            decision = engine.decide({
                "version": 1,
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
        timeout: float = 1.0,
        max_instances: int = _DEFAULT_INSTANCES,
        memory_limit: int = 128 * 1024 * 1024,
        entrypoints: Sequence[str] = (),
        backend: Backend = "auto",
        opa: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if (
            not isinstance(max_instances, int)
            or isinstance(max_instances, bool)
            or (max_instances < 1)
        ):
            raise ValueError(f"max_instances must be an integer >= 1, not {max_instances!r}")
        if not isinstance(memory_limit, int) or memory_limit < 2 * 65536:
            raise ValueError(f"memory_limit must be at least 131072 bytes, not {memory_limit!r}")
        if backend not in ("auto", "wasm", "regopy"):
            raise ValueError(f"backend must be 'auto', 'wasm' or 'regopy', not {backend!r}")
        self.path = Path(path)
        self.policy = normalize_policy_path(policy)
        self.timeout = float(timeout)
        self.max_instances = max_instances
        self.memory_limit = memory_limit
        self._extra_data = dict(data or {})
        self._extra_entrypoints = [normalize_policy_path(e) for e in entrypoints]
        self._backend_choice: Backend = backend
        self._opa = opa
        self._cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._warned = False
        self._closed = False
        self._reload_lock = threading.Lock()
        self._executor_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._state = self._load()
        _ENGINES.add(self)

    def __repr__(self) -> str:
        return (
            f"EmbeddedPolicy({str(self.path)!r}, policy={self.policy!r}, backend={self.backend!r})"
        )

    def __enter__(self) -> EmbeddedPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def revision(self) -> str:
        """The bundle's revision, or a content hash of the loaded policies and data."""
        return self._state.revision

    @property
    def backend(self) -> str:
        """``"wasm"`` (OPA-compiled WebAssembly) or ``"regopy"`` (the fallback)."""
        return str(self._state.evaluator.kind)

    @property
    def batches(self) -> bool:
        """Whether :meth:`decide_many` decides a turn in one guest call."""
        return self._state.batch is not None

    def reload(self) -> None:
        """Read (and compile) the policy again; later decisions use it.

        The new policy is loaded completely before it replaces the old one in a single
        step: a decision sees either policy, never a mix, and decisions in flight finish
        on the policy they started with.

        Raises:
            ValueError: The new policy does not compile (the old one stays in force).
            PolicyNotFoundError: It no longer defines the decision path (likewise).
        """
        with self._reload_lock:
            state = self._load()
            old, self._state = self._state, state
        old.evaluator.close()

    # -- decisions --------------------------------------------------------------------

    def decide(self, input: Mapping[str, Any]) -> Decision:
        """Evaluate one input document."""
        return self._decide(input, time.monotonic() + self.timeout)

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Decide the inputs of a turn: in one guest call when they differ only in
        ``tool`` (as the guard's do), else in order. ``timeout`` bounds the whole turn."""
        return self._decide_many(inputs, time.monotonic() + self.timeout)

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        """Evaluate in a worker thread, leaving the event loop free; ``timeout`` counts
        from this call, time queued for a worker included."""
        deadline = time.monotonic() + self.timeout
        return await self._off_loop(self._decide, input, deadline, count=None)  # type: ignore[no-any-return]

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        """Async twin of :meth:`decide_many`, in one worker-thread hop."""
        if not inputs:
            return []
        deadline = time.monotonic() + self.timeout
        return await self._off_loop(  # type: ignore[no-any-return]
            self._decide_many, inputs, deadline, count=len(inputs)
        )

    def query(self, path: str, input: Mapping[str, Any]) -> Any:
        """Evaluate another document of the same policy (``agent/authz/visible_tools``).

        With the wasm backend, ``path`` must be an entrypoint of the compiled module: the
        decision's sibling ``visible_tools`` is compiled in when the policy defines it,
        others can be asked for with ``entrypoints=``.

        Returns the value, or ``None`` when it is undefined.

        Raises:
            EngineError: The evaluation failed, or ``path`` is not compiled in.
        """
        path = normalize_policy_path(path)
        deadline = time.monotonic() + self.timeout
        value, _state = self._evaluate(path, input, deadline)
        return None if value is UNDEFINED else value

    def close(self) -> None:
        """Release the policy instances and worker threads; later decisions fail closed.
        Safe to call more than once."""
        self._closed = True
        self._state.evaluator.close()
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    # -- internals --------------------------------------------------------------------

    def _decide(
        self, input: Mapping[str, Any], deadline: float, state: _Loaded | None = None
    ) -> Decision:
        try:
            value, state = self._evaluate(self.policy, input, deadline, state)
            if value is UNDEFINED:
                raise EngineError(
                    ErrorType.UNDEFINED, f"the decision {self.policy!r} is undefined for this input"
                )
            return Decision.from_result(
                value, engine=self.engine_name, policy=self.policy, revision=state.revision
            )
        except EngineError as exc:
            return self._failure(exc)

    def _decide_many(self, inputs: Sequence[Mapping[str, Any]], deadline: float) -> list[Decision]:
        while True:
            try:
                return self._decide_turn(inputs, deadline, self._state)
            except _Reloaded:
                # A reload replaced the policy during the turn: decide the whole turn again
                # on the new one, so that no turn is decided partly by each (the deadline
                # bounds the retries).
                continue

    def _decide_turn(
        self, inputs: Sequence[Mapping[str, Any]], deadline: float, state: _Loaded
    ) -> list[Decision]:
        shared = shared_part(inputs) if state.batch is not None and len(inputs) > 1 else None
        if shared is None:  # one by one, under the policy loaded as the turn began
            return [self._decide(i, deadline, state) for i in inputs]
        calls = [document["tool"] for document in inputs]
        # Each call once: by its position in input.turn where the module takes that.
        positions = _turn_positions(shared, calls) if state.turn_batch is not None else None
        entrypoint, listed = (
            (state.turn_batch, positions) if positions is not None else (state.batch, calls)
        )
        try:
            results, state = self._evaluate(
                entrypoint or "", {**shared, "calls": listed}, deadline, state
            )
        except EngineError as exc:
            if exc.error_type == ErrorType.INPUT:
                # A call that is not JSON: decide one by one, so that it alone fails.
                return [self._decide(i, deadline, state) for i in inputs]
            return [self._failure(exc)] * len(inputs)
        if isinstance(results, list) and len(results) != len(calls):
            # turn_decisions: the decisions in the order of the calls, shorter when the
            # decision is undefined for some call. Which one, the keyed entrypoint tells (the
            # calls by value, answered by call id): one more guest call, not one per call.
            try:
                results, state = self._evaluate(
                    state.batch or "", {**shared, "calls": calls}, deadline, state
                )
            except EngineError as exc:
                return [self._failure(exc)] * len(inputs)
            if isinstance(results, list):
                results = {}
        if isinstance(results, list):
            values = results
        else:
            # decisions (and turn_decisions of modules compiled before it was a list): an
            # object keyed by call id, where a call without a key has no decision.
            if not isinstance(results, Mapping):
                results = {}
            values = [results.get(call["call_id"], _MISSING) for call in calls]
        decisions = []
        # Calls decided alike share one Decision, keyed by the result's JSON text (which,
        # unlike ==, tells true from 1 and 1.0 from 1).
        made: dict[bytes | str, Decision] = {}
        for result in values:
            if result is _MISSING:
                decisions.append(
                    self._failure(
                        EngineError(
                            ErrorType.UNDEFINED,
                            f"the decision {self.policy!r} is undefined for this input",
                        )
                    )
                )
                continue
            key = value_key(result)
            decision = made.get(key)
            if decision is None:
                try:
                    decision = made[key] = Decision.from_result(
                        result,
                        engine=self.engine_name,
                        policy=self.policy,
                        revision=state.revision,
                    )
                except EngineError as exc:
                    decision = self._failure(exc)
            decisions.append(decision)
        return decisions

    def _evaluate(
        self,
        path: str,
        input: Mapping[str, Any],
        deadline: float,
        state: _Loaded | None = None,
    ) -> tuple[Any, _Loaded]:
        """The value at ``path`` and the loaded policy that gave it.

        With ``state`` (a turn's policy) the evaluation stays on that policy: when a reload
        closed it, :class:`_Reloaded` is raised for the turn to start again.
        """
        pinned = state is not None
        if self._closed:
            raise EngineError(ErrorType.ENGINE, "the embedded policy engine is closed")
        body = encode_input(input, key=None)  # also checks the input is JSON
        while True:
            state = state or self._state
            evaluator = state.evaluator
            try:
                return evaluator.evaluate(path, body, deadline), state
            except PoolClosedError:
                # A reload closed this evaluator, perhaps while we waited for one of its
                # instances: go on with the policy in force now, as many times as reloads
                # come (the deadline bounds the waiting).
                if self._closed or self._state is state:
                    raise EngineError(
                        ErrorType.ENGINE, "the embedded policy engine is closed"
                    ) from None
                if pinned:
                    raise _Reloaded from None
                state = None

    def _failure(self, exc: EngineError) -> Decision:
        return Decision.failure(
            exc.error_type, exc.reason, engine=self.engine_name, policy=self.policy
        )

    async def _off_loop(self, fn: Any, arg: Any, deadline: float, *, count: int | None) -> Any:
        """``fn(arg, deadline)`` in a worker thread; a failure to get there is one fail-closed
        Decision (``count=None``: ``fn`` answers one input) or a list of ``count``."""
        try:
            executor = self._executor()
        except RuntimeError:
            error = EngineError(ErrorType.ENGINE, "the embedded policy engine is closed")
            return self._failure(error) if count is None else [self._failure(error)] * count
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, fn, arg, deadline)
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            error = EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
            return self._failure(error) if count is None else [self._failure(error)] * count

    def _after_fork(self) -> None:
        """In a forked child: locks anew (a thread of the parent that held one, a reload
        compiling, does not exist here, and would hold it for ever)."""
        self._reload_lock = threading.Lock()
        self._executor_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        if self._closed:
            raise RuntimeError("closed")
        pid = os.getpid()
        if self._pool is None or self._pool_pid != pid:
            with self._executor_lock:
                if self._pool is None or self._pool_pid != pid:
                    # After a fork the parent's workers do not exist here: start afresh.
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.max_instances, thread_name_prefix="opa-guard-embedded"
                    )
                    self._pool_pid = pid
        return self._pool

    def _load(self) -> _Loaded:
        if self.path.is_file() and self.path.name.endswith((".tar.gz", ".tgz")):
            bundle = read_wasm_bundle(self.path)
            if bundle is not None:
                if self._backend_choice == "regopy":
                    raise ValueError(
                        f"{str(self.path)!r} is a compiled wasm bundle: backend='regopy' "
                        "needs Rego sources"
                    )
                if self.policy not in bundle.entrypoints:
                    raise PolicyNotFoundError(
                        f"the wasm bundle {str(self.path)!r} has no entrypoint "
                        f"{self.policy!r} (it has: {', '.join(bundle.entrypoints) or 'none'})"
                    )
                data = _deep_merge(bundle.data, self._extra_data)
                evaluator = self._wasm(bundle.wasm, data, bundle.modules)
                bundle.data = data
                revision = bundle.revision or bundle.digest()[:16]
                return _loaded(evaluator, revision)
        sources = self._read()
        revision = sources.revision or sources.digest()[:16]
        defined = defines(sources.modules.values(), sources.data, self.policy)
        if self._backend_choice != "regopy":
            try:
                wasm = self._compiled(sources)
            except ValueError as exc:
                if not defined and "does not refer to a rule" in str(exc):
                    raise PolicyNotFoundError(
                        f"nothing at {str(self.path)!r} defines the decision {self.policy!r}"
                    ) from None
                raise
            if wasm is not None:
                return _loaded(self._wasm(wasm, sources.data, sources.modules), revision)
            if self._backend_choice == "wasm":
                raise ValueError(
                    "backend='wasm' needs the opa binary to compile this policy "
                    "(pass opa=, set OPA_BIN, or put opa on PATH)"
                )
        if not defined:
            self._regopy_check(sources)
        return _Loaded(self._regopy(sources), revision, None)

    def _regopy_check(self, sources: PolicySources) -> None:
        """Report a policy that does not parse as such, else the missing decision."""
        from langchain_opa_guard.engines.regopy.evaluator import parse_check

        parse_check(sources, str(self.path))
        raise PolicyNotFoundError(
            f"nothing at {str(self.path)!r} defines the decision {self.policy!r}"
        )

    def _read(self) -> PolicySources:
        sources = load_sources(self.path)
        if self._extra_data:
            sources.data = _deep_merge(sources.data, self._extra_data)
        if not sources.modules:
            raise PolicyNotFoundError(f"no Rego modules found at {str(self.path)!r}")
        return sources

    def _entrypoints(self, sources: PolicySources) -> list[str]:
        wanted = [self.policy]
        parent = self.policy.rsplit("/", 1)[0] if "/" in self.policy else ""
        visible = f"{parent}/visible_tools" if parent else "visible_tools"
        if visible != self.policy and defines(sources.modules.values(), {}, visible):
            wanted.append(visible)
        wanted += [e for e in self._extra_entrypoints if e not in wanted]
        return wanted

    def _compiled(self, sources: PolicySources) -> bytes | None:
        entrypoints = self._entrypoints(sources)
        batched = {**sources.modules, BATCH_FILE: batch_module(self.policy)}
        try:
            return find_compiled(
                PolicySources(modules=batched, data=sources.data),
                [*entrypoints, BATCH_ENTRYPOINT, TURN_BATCH_ENTRYPOINT],
                opa=self._opa,
                cache_dir=self._cache_dir,
            )
        except CompileError as exc:
            if BATCH_FILE not in str(exc):
                raise ValueError(
                    f"the policy at {str(self.path)!r} does not compile: {exc}"
                ) from None
        try:  # the generated batch rule does not fit this policy: compile without it
            return find_compiled(sources, entrypoints, opa=self._opa, cache_dir=self._cache_dir)
        except CompileError as exc:
            raise ValueError(f"the policy at {str(self.path)!r} does not compile: {exc}") from None

    def _wasm(
        self, wasm: bytes, data: Mapping[str, Any], modules: Mapping[str, str]
    ) -> WasmEvaluator:
        try:
            return WasmEvaluator(
                wasm,
                data=data,
                modules=modules,
                size=self.max_instances,
                memory_limit=self.memory_limit,
            )
        except EngineError as exc:
            raise ValueError(
                f"the policy at {str(self.path)!r} could not be loaded: {exc}"
            ) from None

    def _regopy(self, sources: PolicySources) -> Any:
        from langchain_opa_guard.engines.regopy.evaluator import KNOWN_DIFFERENCES, RegopyEvaluator

        if not self._warned and self._backend_choice == "auto":
            self._warned = True
            logger.warning(
                "EmbeddedPolicy(%r): no opa binary to compile the policy to WebAssembly "
                "(set OPA_BIN or put opa on PATH); evaluating it with regopy (rego-cpp), "
                "which differs from OPA: %s",
                str(self.path),
                KNOWN_DIFFERENCES,
            )
        try:
            return RegopyEvaluator(
                sources, self.policy, size=self.max_instances, memory_limit=self.memory_limit
            )
        except ValueError as exc:
            raise ValueError(f"the policy at {str(self.path)!r} does not compile: {exc}") from exc


def _loaded(evaluator: Any, revision: str) -> _Loaded:
    """A loaded wasm policy with the batch entrypoints its module has."""
    batch = BATCH_ENTRYPOINT if evaluator.has(BATCH_ENTRYPOINT) else None
    turn_batch = TURN_BATCH_ENTRYPOINT if evaluator.has(TURN_BATCH_ENTRYPOINT) else None
    return _Loaded(evaluator, revision, batch, turn_batch)


_MISSING: Any = object()

_ENGINES: weakref.WeakSet[EmbeddedPolicy] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _turn_positions(shared: Mapping[str, Any], calls: Sequence[Any]) -> list[int] | None:
    """Where each call sits in ``shared["turn"]`` (the guard's inputs carry the very
    objects of the turn), or ``None`` when one is not there.

    A call that is not the very object of its entry matches an entry only when the two are
    the same JSON (:func:`same_json`: ``True`` is not ``1``), since the module decides the
    entry, not the call."""
    turn = shared.get("turn")
    if not isinstance(turn, list):
        return None
    by_identity = {id(entry): index for index, entry in enumerate(turn)}
    positions = []
    for call in calls:
        index = by_identity.get(id(call))
        if index is None:
            index = next((i for i, entry in enumerate(turn) if same_json(entry, call)), None)
            if index is None:
                return None
        positions.append(index)
    return positions


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
