"""Starting and stopping real OPA servers for the tests (and the benchmarks)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
OPA_VERSION = "v1.22.2"


def opa_binary() -> str:
    """``$OPA_BIN``, the pinned build in ``.tools/bin``, or ``opa`` on PATH; else build it."""
    candidates = [
        os.environ.get("OPA_BIN"),
        str(ROOT / ".tools" / "bin" / "opa"),
        shutil.which("opa"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    target = ROOT / ".tools" / "bin"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "install", f"github.com/open-policy-agent/opa@{OPA_VERSION}"],
        env={**os.environ, "CGO_ENABLED": "0", "GOBIN": str(target)},
        check=True,
    )
    return str(target / "opa")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a server the tests started, killing it if it does not stop in time."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OPAProcess:
    """A real ``opa run --server`` on a free loopback port, with decision logs on."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        port: int | None = None,
        scheme: str = "http",
        probe_verify: bool | ssl.SSLContext = False,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.scheme = scheme
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.probe_verify = probe_verify  # how the readiness probe checks a TLS server
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> OPAProcess:
        args = [
            opa_binary(),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--set",
            "decision_logs.console=true",
            "--log-level",
            "info",
            *self.extra_args,
            *self.paths,
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opa exited with {self.process.returncode}: {args}")
            try:
                if (
                    httpx.get(
                        f"{self.url}/health", timeout=0.5, verify=self.probe_verify
                    ).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("opa did not become healthy in time")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> OPAProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
