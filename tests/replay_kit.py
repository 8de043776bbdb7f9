"""The replays of red teams 53 to 58: a policy where a send is allowed until something was read,
and what a graph's caller sees of a run it streams (``stream_mode="tasks"``).

Example:
    ```python
    engine = replay_engine(tmp_path_factory, "mine")
    payload = await tools_input_seen(graph, config)  # the tools task's input at its start
    ```
"""

from __future__ import annotations

from typing import Any

import pytest
from mediation_kit import USER

from langchain_opa_guard import EmbeddedPolicy

POLICY_TEXT = """package redteam53

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

decision := {"allow": true, "reasons": []} if input.tool.name == "read"

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "send"
	endswith(input.tool.args.to, "@ok.test")
	not read_before
}

after_read := {"code": "send_after_read", "message": "no sending after a read"}

decision := {"allow": false, "reasons": [after_read]} if {
	input.tool.name == "send"
	read_before
}

read_before if {
	some h in input.history
	h.name == "read"
	h.decision != "deny"
}
"""

SEND = {"to": "b@ok.test", "body": "hi"}


def replay_engine(tmp_path_factory: pytest.TempPathFactory, name: str) -> EmbeddedPolicy:
    """The embedded engine on :data:`POLICY_TEXT` (a module of its own per test module)."""
    root = tmp_path_factory.mktemp(name)
    (root / "policy.rego").write_text(POLICY_TEXT)
    return EmbeddedPolicy(root, policy="redteam53/decision")


async def tools_input_seen(graph: Any, config: dict[str, Any], request: str = "send b a hi") -> Any:
    """Stream a run of ``request`` (``tasks`` mode) and close the stream at the tools task's
    start, before its tools run: what the caller saw there, the tools task's input."""
    stream = graph.astream(
        {"messages": [("user", request)]}, config, context={"user": USER}, stream_mode="tasks"
    )
    seen = None
    async for event in stream:
        if event.get("name") == "tools" and "input" in event:
            seen = event["input"]
            break
    await stream.aclose()
    assert seen is not None
    return seen
