"""Recording decisions as JSON lines, for replaying them against a candidate policy.

Each line holds the input the policy saw, the decision, and the policy revision:

```json
{"time": "2026-11-25T17:50:00.123Z", "tool": "delete_customer", "call_id": "call_1",
 "input": {...}, "decision": {"verdict": "deny", "allow": false, "reasons": [...],
 "codes": [...], "require_approval": false, "error": null, "decision_id": "...",
 "engine": "opa", "policy": "agent/authz/decision", "revision": "..."}}
```

Inputs hold the calls' arguments: keep the file where such data may live.

Example:
    ```python
    from langchain_opa_guard import DecisionLog, PolicyGuardNode

    guard = PolicyGuardNode(engine, registry=tools, decision_log=DecisionLog("decisions.jsonl"))
    ```
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from langchain_opa_guard.decision import Decision

__all__ = ["DecisionLog", "decision_dict", "read_decision_log"]


def decision_dict(decision: Decision) -> dict[str, Any]:
    """A decision as plain JSON data: what the guard did (``verdict``, ``allow``), with the
    arguments a policy's rewrite ran the call with (``args``) and, for a deny shadow mode
    let run, the verdict the policy gave (``shadowed``, ``would``)."""
    record = {
        "verdict": decision.verdict,
        "allow": decision.allow,
        "reasons": list(decision.reasons),
        "codes": list(decision.codes),
        "require_approval": decision.require_approval,
        "error": decision.error,
        "decision_id": decision.decision_id,
        "engine": decision.engine,
        "policy": decision.policy,
        "revision": decision.revision,
        "args": dict(decision.args) if decision.args is not None else None,
    }
    if decision.shadowed:
        record.update(shadowed=True, would="approval" if decision.require_approval else "deny")
    return record


class DecisionLog:
    """Append decisions to a JSON-lines file (thread-safe; one line per decision).

    :meth:`write` raises ``OSError`` when the file cannot be written, and ``ValueError`` for
    a record that is not JSON; the guards log such a failure and go on deciding.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None

    def write(self, document: Mapping[str, Any], decision: Decision) -> None:
        tool = document.get("tool") if isinstance(document.get("tool"), Mapping) else {}
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "tool": tool.get("name") if isinstance(tool, Mapping) else None,
            "call_id": tool.get("call_id") if isinstance(tool, Mapping) else None,
            "input": document,
            "decision": decision_dict(decision),
        }
        line = json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
        try:
            data = (line + "\n").encode("utf-8")
        except UnicodeEncodeError:
            # Text UTF-8 cannot hold (a lone surrogate, as JSON's "\ud800" decodes): the
            # line in JSON escapes, which read back as the same text.
            data = (json.dumps(record, default=str, allow_nan=False) + "\n").encode("ascii")
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(data)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_decision_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a decision log, in order (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line") from exc
