"""Benchmark 2: ``OPAServer.decide`` against a bare keep-alive ``http.client`` request.

Both send the same body to the same OPA over loopback; OPA's own ``timer_server_handler_ns``
(from ``?metrics=true``) shows how much of the round trip is OPA's.
"""

from __future__ import annotations

import http.client
import json
import statistics
from typing import Any
from urllib.parse import urlparse

from common import Table, interleaved, start_opa, us

from langchain_opa_guard import OPAServer
from langchain_opa_guard.engines.engine import encode_input

CALL = {
    "name": "get_customer_details",
    "args": {"customer_id": "CUST-001", "fields": {"name": True}},
    "call_id": "call-1",
    "metadata": {"toolkit": "CustomerDBTool"},
}
DOCUMENT: dict[str, Any] = {
    "version": 1,
    "tool": CALL,
    "user": {"id": "user-456", "role": "internal_user"},
    "context": {"thread_id": "t", "node": "guard", "step": 2},
    "turn": [CALL],
    "history": [],
}


def run() -> list[Table]:
    opa = start_opa()
    try:
        client = OPAServer(opa.url)
        target = urlparse(opa.url)
        connection = http.client.HTTPConnection(target.hostname, target.port)
        path = "/v1/data/agent/authz/decision"
        body = encode_input(DOCUMENT)
        headers = {"Content-Type": "application/json"}

        def bare() -> Any:
            connection.request("POST", path, body=body, headers=headers)
            return json.loads(connection.getresponse().read())

        def ours() -> Any:
            return client.decide(DOCUMENT)

        assert ours().allow and bare()["result"]["allow"]
        medians = interleaved({"OPAServer.decide": ours, "http.client": bare}, rounds=40, inner=50)
        handler = []
        for _ in range(300):
            connection.request("POST", path + "?metrics=true", body=body, headers=headers)
            reply = json.loads(connection.getresponse().read())
            handler.append(reply["metrics"]["timer_server_handler_ns"] / 1e9)
        opa_side = statistics.median(handler)
        table = Table(
            "Client vs the wire (one decision, loopback)",
            ["path", "median per decision", "ratio to bare http.client"],
        )
        base = medians["http.client"]
        table.add("bare keep-alive http.client", us(base), "1.00x")
        table.add(
            "OPAServer.decide",
            us(medians["OPAServer.decide"]),
            f"{medians['OPAServer.decide'] / base:.2f}x",
        )
        table.add(
            "of which OPA's handler (timer_server_handler_ns)",
            us(opa_side),
            f"{opa_side / base:.2f}x",
        )
        client.close()
        return [table]
    finally:
        opa.stop()


if __name__ == "__main__":
    run()
