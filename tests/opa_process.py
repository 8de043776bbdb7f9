"""Starting and stopping real OPA servers for the tests (and the benchmarks)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

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


def _healthy(url: str, verify: bool | ssl.SSLContext) -> bool:
    """``GET /health`` answers 200 (``verify``: how a TLS server is checked)."""
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(  # no proxy from the environment: straight to OPA
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=0.5) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


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
            if _healthy(f"{self.url}/health", self.probe_verify):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("opa did not become healthy in time")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> OPAProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
