"""One side of the cross-process approval test: start a run, or resume it, from SQLite."""

from __future__ import annotations

import json
import sqlite3
import sys

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from test_approval import INTERNAL, exfiltration_model

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.demo import build_agent
from langchain_opa_guard.demo.web import web_tools


def main(step: str, database: str, policies: str) -> None:
    tools, outbox = web_tools()
    saver = SqliteSaver(sqlite3.connect(database, check_same_thread=False))
    graph = build_agent(EmbeddedPolicy(policies), exfiltration_model(), tools, checkpointer=saver)
    config = {"configurable": {"thread_id": "across-processes"}}
    if step == "start":
        result = graph.invoke({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
        waiting = [i.value for i in result.get("__interrupt__", [])]
        print(json.dumps({"waiting": waiting, "sent": outbox.sent}))
    else:
        result = graph.invoke(Command(resume="approve"), config, context={"user": INTERNAL})
        answers = [str(m.content) for m in result["messages"] if m.type == "tool"]
        last = str(result["messages"][-1].content)
        print(json.dumps({"sent": outbox.sent, "last": last, "answers": answers}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
