"""Starting and stopping a real Jaeger v2 (in-memory, loopback only) for the tracing tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from opa_process import stop_process

ROOT = Path(__file__).resolve().parent.parent
JAEGER_VERSION = "v1.76.0"  # pinned by tools/jaeger/go.mod (Jaeger v2 ships as v1.x Go tags)
JAEGER_TOOLS_DIR = ROOT / "tools" / "jaeger"
JAEGER_CONFIG = Path(__file__).resolve().parent / "jaeger-config.yaml"


def jaeger_binary() -> str:
    """``$JAEGER_BIN`` or the pinned build in ``.tools/bin``; else build it (minutes when cold)."""
    candidates = [
        os.environ.get("JAEGER_BIN"),
        str(ROOT / ".tools" / "bin" / "jaeger"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    target = ROOT / ".tools" / "bin"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "go",
            "build",
            "-o",
            str(target / "jaeger"),
            "github.com/jaegertracing/jaeger/cmd/jaeger",
        ],
        cwd=JAEGER_TOOLS_DIR,
        env={**os.environ, "CGO_ENABLED": "0"},
        check=True,
    )
    return str(target / "jaeger")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class JaegerProcess:
    """A real ``jaeger --config tests/jaeger-config.yaml``: OTLP in, query API out, memory storage.

    All four listeners (OTLP gRPC/HTTP, query HTTP/gRPC) are free ports on 127.0.0.1.
    """

    def __init__(
        self,
        *,
        config: str | Path = JAEGER_CONFIG,
        log_path: Path | None = None,
        log_level: str = "info",
    ) -> None:
        self.config = str(config)
        self.log_path = log_path
        self.log_level = log_level
        self.otlp_grpc_port = free_port()
        self.otlp_http_port = free_port()
        self.query_http_port = free_port()
        self.query_grpc_port = free_port()
        self.otlp_http_endpoint = f"http://127.0.0.1:{self.otlp_http_port}"
        self.otlp_grpc_endpoint = f"http://127.0.0.1:{self.otlp_grpc_port}"
        self.otlp_traces_url = f"{self.otlp_http_endpoint}/v1/traces"
        self.query_url = f"http://127.0.0.1:{self.query_http_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> JaegerProcess:
        args = [jaeger_binary(), "--config", self.config]
        env = {
            **os.environ,
            "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc_port),
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_http_port),
            "JAEGER_QUERY_HTTP_PORT": str(self.query_http_port),
            "JAEGER_QUERY_GRPC_PORT": str(self.query_grpc_port),
            "JAEGER_LOG_LEVEL": self.log_level,
        }
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jaeger exited with {self.process.returncode}: {args}")
            try:
                if (
                    requests.get(f"{self.query_url}/api/services", timeout=0.5).status_code == 200
                    and _port_open(self.otlp_http_port)
                    and _port_open(self.otlp_grpc_port)
                ):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("jaeger did not become ready in time")

    def services(self) -> list[str]:
        """Service names Jaeger has seen (``GET /api/services``)."""
        response = requests.get(f"{self.query_url}/api/services", timeout=5.0)
        response.raise_for_status()
        return list(response.json().get("data") or [])

    def get_trace(self, trace_id_hex: str) -> dict[str, Any] | None:
        """The trace as OTLP JSON (``{"resourceSpans": [...]}``), or None if Jaeger has none.

        ``GET /api/v3/traces/{id}`` wraps it as ``{"result": {"resourceSpans": [...]}}`` (a 404
        with ``{"error": ...}`` when unknown); this returns the inner ``result``. Unlike the OTLP
        JSON spec, trace/span ids are lowercase hex, ``kind`` is the enum number (1 = internal),
        64-bit ints and ``*TimeUnixNano`` are strings, and empty fields are left out.
        """
        trace_id = trace_id_hex.lower().rjust(32, "0")
        response = requests.get(f"{self.query_url}/api/v3/traces/{trace_id}", timeout=5.0)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result = response.json().get("result")
        if not result or not result.get("resourceSpans"):
            return None
        return dict(result)

    @staticmethod
    def spans(trace: dict[str, Any] | None) -> list[dict[str, Any]]:
        """All span dicts in an OTLP JSON trace (flattened over resourceSpans/scopeSpans)."""
        if not trace:
            return []
        return [
            span
            for resource_spans in trace.get("resourceSpans", [])
            for scope_spans in resource_spans.get("scopeSpans", [])
            for span in scope_spans.get("spans", [])
        ]

    def wait_for_trace(
        self, trace_id_hex: str, min_spans: int = 1, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll until the trace has at least ``min_spans`` spans; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        trace: dict[str, Any] | None = None
        while True:
            trace = self.get_trace(trace_id_hex)
            if trace is not None and len(self.spans(trace)) >= min_spans:
                return trace
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        found = len(self.spans(trace))
        raise TimeoutError(
            f"trace {trace_id_hex}: {found} span(s) after {timeout}s, wanted {min_spans}"
        )

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> JaegerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
