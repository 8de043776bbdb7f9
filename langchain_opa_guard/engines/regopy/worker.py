"""A regopy interpreter in a child process: how the fallback's evaluations are bounded.

rego-cpp can be neither interrupted nor capped: an evaluation that runs away
(``numbers.range(1, 1e8)`` fed to ``sprintf``, say) would go on in its thread after the
decision timed out, and take memory without limit. So each interpreter of the fallback lives
in a process of its own, started as ``python -c ...regopy_worker...``:

* the parent waits for an answer until the decision's deadline, then kills the process
  (``SIGKILL``): the CPU and memory it held are released at once, and the next decision gets
  a fresh process;
* the process caps its own data segment (``RLIMIT_DATA``, where the platform has it) at what
  it uses once the policy is loaded plus ``memory_limit``: an evaluation that needs more
  fails, and so does the decision;
* it exits when its parent goes away.

Requests and answers are frames on the child's stdin and stdout: a 4-byte big-endian length
and that many bytes of JSON (the input itself travels as the JSON text the engine encoded).

Example:
    ```python
    import time

    from langchain_opa_guard.engines.policy_sources import load_sources
    from langchain_opa_guard.engines.regopy.worker import RegopyProcess

    worker = RegopyProcess(load_sources("policies"), memory_limit=128 << 20)
    ok, text = worker.evaluate("agent/authz/decision", b"{}", time.monotonic() + 5)
    worker.kill()
    ```
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any, BinaryIO

from langchain_opa_guard.decision import EngineError, ErrorType
from langchain_opa_guard.engines.policy_sources import PolicySources

__all__ = ["AnsweredError", "RegopyProcess", "StillStartingError", "main"]

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 30


class StillStartingError(EngineError):
    """The process had not loaded the policy by the deadline; it is healthy, keep it."""


class AnsweredError(EngineError):
    """The process answered that the evaluation failed; it is healthy, keep it."""


def _command() -> list[str]:
    """The child's command line: this package and regopy importable from where they were
    imported here (they may not be on the child's default path)."""
    import regopy

    roots = [
        str(Path(__file__).resolve().parents[3]),
        str(Path(regopy.__file__).resolve().parent.parent),
    ]
    code = (
        "import sys; sys.path[:0] = " + repr(roots) + "; "
        "from langchain_opa_guard.engines.regopy.worker import main; main()"
    )
    return [sys.executable, "-c", code]


def _kill(process: subprocess.Popen[bytes], owner: int) -> None:
    if os.getpid() != owner:  # a forked child holds a copy: the process is not its own
        return
    try:
        process.kill()
        process.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for stream in (process.stdin, process.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


class RegopyProcess:
    """One child process holding the policy compiled by regopy; one request at a time.

    The process starts at once and loads the policy in the background: the first
    :meth:`evaluate` waits for it (within its deadline; :class:`StillStartingError` if it is
    not ready by then). :meth:`kill` ends it; so does garbage collection.

    Raises:
        EngineError: The process could not be started.
    """

    def __init__(
        self, sources: PolicySources, *, memory_limit: int | None, policy: str | None = None
    ) -> None:
        if not sys.executable:
            raise EngineError(ErrorType.ENGINE, "no Python executable to start regopy in")
        try:
            self.process = subprocess.Popen(
                _command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as exc:
            raise EngineError(ErrorType.ENGINE, "the regopy process could not start") from exc
        self.owner = os.getpid()
        self._finalizer = weakref.finalize(self, _kill, self.process, self.owner)
        self._ready = False
        self._buffer = b""
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self._out = self.process.stdout.fileno()
        setup = {
            "modules": sources.modules,
            "data": sources.data,
            "policy": policy,
            "memory_limit": memory_limit,
        }
        try:
            self._send(json.dumps(setup).encode())
        except EngineError:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, deadline: float) -> None:
        """Wait until the policy is loaded.

        Raises:
            StillStartingError: Not yet, at ``deadline``.
            EngineError: The policy does not compile there, or the process died.
        """
        if self._ready:
            return
        reply = self._receive(deadline, starting=True)
        if not reply.get("ready"):
            raise EngineError(ErrorType.ENGINE, "the embedded policy failed to compile")
        self._ready = True

    def evaluate(self, entrypoint: str, body: bytes, deadline: float) -> tuple[bool, str]:
        """Evaluate ``entrypoint`` on the input ``body`` (JSON): ``(ok, regopy's output)``.

        Raises:
            StillStartingError: The process was still loading the policy at ``deadline``.
            EngineError: ``timeout`` past the deadline, ``engine_error`` when the process
                failed or died (its memory cap, say). Either way, kill it.
        """
        self.wait_ready(deadline)
        header = json.dumps({"entrypoint": entrypoint}).encode()
        self._send(_HEADER.pack(len(header)) + header + body)
        reply = self._receive(deadline, starting=False)
        if "error" in reply:
            raise AnsweredError(ErrorType.ENGINE, "the embedded policy failed to evaluate")
        return bool(reply["ok"]), str(reply["text"])

    def kill(self) -> None:
        self._finalizer()

    # -- frames -----------------------------------------------------------------------

    def _send(self, payload: bytes) -> None:
        try:
            self._stdin.write(_HEADER.pack(len(payload)) + payload)
            self._stdin.flush()
        except (OSError, ValueError) as exc:
            raise EngineError(ErrorType.ENGINE, "the regopy process is gone") from exc

    def _receive(self, deadline: float, *, starting: bool) -> dict[str, Any]:
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                if size > _MAX_FRAME:
                    raise EngineError(ErrorType.ENGINE, "the regopy process answered garbage")
                if len(self._buffer) >= _HEADER.size + size:
                    frame = self._buffer[_HEADER.size : _HEADER.size + size]
                    self._buffer = self._buffer[_HEADER.size + size :]
                    try:
                        value = json.loads(frame)
                    except ValueError:
                        value = None
                    if not isinstance(value, dict):
                        raise EngineError(ErrorType.ENGINE, "the regopy process answered garbage")
                    return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if starting:
                    raise StillStartingError(ErrorType.TIMEOUT, "the policy did not finish in time")
                raise EngineError(ErrorType.TIMEOUT, "the policy did not finish in time")
            try:
                readable, _, _ = select.select([self._out], [], [], remaining)
                chunk = os.read(self._out, 1 << 16) if readable else None
            except (OSError, ValueError) as exc:
                raise EngineError(ErrorType.ENGINE, "the regopy process is gone") from exc
            if chunk == b"":
                raise EngineError(
                    ErrorType.ENGINE, "the embedded policy failed to evaluate (its process ended)"
                )
            if chunk:
                self._buffer += chunk


# -- the child ------------------------------------------------------------------------------


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        return None
    payload = stream.read(size)
    return payload if len(payload) == size else None


def _write_frame(stream: BinaryIO, value: dict[str, Any]) -> None:
    payload = json.dumps(value).encode()
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone (regopy releases the GIL while it evaluates, so this
    runs even during a runaway evaluation)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _cap_memory(limit: int) -> None:
    """Cap the data segment at its size now plus ``limit`` (Linux; elsewhere the
    deadline alone bounds an evaluation)."""
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            used = next(
                int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:")
            )
        cap = used + limit
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    except (ImportError, OSError, StopIteration, ValueError):
        pass


def main() -> None:
    """The child: load the policy, then answer requests until stdin closes."""
    from langchain_opa_guard.engines.regopy.evaluator import compile_sources, run_query

    # Frames go out on a copy of stdout; rego-cpp prints diagnostics on fd 1 itself, which
    # now leads nowhere.
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    setup_frame = _read_frame(stdin)
    if setup_frame is None:
        return
    setup = json.loads(setup_frame)
    try:
        compiled = compile_sources(
            PolicySources(modules=setup["modules"], data=setup["data"]), setup["policy"]
        )
    except ValueError:
        _write_frame(stdout, {"ready": False})
        return
    if setup.get("memory_limit"):
        _cap_memory(int(setup["memory_limit"]))
    _write_frame(stdout, {"ready": True})
    while True:
        frame = _read_frame(stdin)
        if frame is None:
            return
        try:
            (size,) = _HEADER.unpack_from(frame)
            request = json.loads(frame[_HEADER.size : _HEADER.size + size])
            document = json.loads(frame[_HEADER.size + size :])
            ok, text = run_query(compiled, request["entrypoint"], document)
            answer: dict[str, Any] = {"ok": ok, "text": text}
        except MemoryError:
            os._exit(3)
        except Exception:  # noqa: BLE001 - told to the parent as a failed evaluation
            answer = {"error": "failed"}
        _write_frame(stdout, answer)


if __name__ == "__main__":  # pragma: no cover
    main()
