"""Starting the tests' MCP servers (``mcp_servers.py``): stdio connections and an HTTP server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opa_process import free_port, stop_process

SERVERS = Path(__file__).resolve().with_name("mcp_servers.py")


def stdio_connection(kind: str, log: Path, changes: Path | None = None) -> dict[str, Any]:
    """A ``MultiServerMCPClient`` connection that starts the ``kind`` server over stdio."""
    args = [str(SERVERS), kind, "--log", str(log)]
    if changes is not None:
        args += ["--changes", str(changes)]
    return {"command": sys.executable, "args": args, "transport": "stdio"}


def calls_in(log: Path) -> list[dict[str, Any]]:
    """The tool calls that really ran on a server, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


class MCPHTTPServer:
    """A test MCP server over streamable HTTP on a free loopback port."""

    def __init__(self, kind: str, log: Path, changes: Path | None = None) -> None:
        self.kind = kind
        self.log = log
        self.changes = changes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def connection(self) -> dict[str, Any]:
        return {"url": self.url, "transport": "streamable_http"}

    def start(self, timeout: float = 30.0) -> MCPHTTPServer:
        args = [sys.executable, str(SERVERS), self.kind, "--port", str(self.port)]
        args += ["--log", str(self.log)]
        if self.changes is not None:
            args += ["--changes", str(self.changes)]
        errors = open(self.log.with_suffix(".stderr"), "ab")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MCP server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the MCP server did not start listening in time")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> MCPHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
