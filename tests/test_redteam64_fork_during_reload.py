"""Red team 64: a process forked while another thread reloads the embedded policy leaves its
child unable ever to reload.

README ("Engines"): ``EmbeddedPolicy`` is "thread-safe, fork-safe (a forked child, gunicorn
``--preload`` or a ``ProcessPoolExecutor`` with fork, makes its own instances and workers;
tested with real forks)", and ``reload()`` is the way to put a new policy in force.

What was done: a real ``EmbeddedPolicy`` (wasm, compiled by ``opa``) decides in the parent;
a thread of the parent calls ``reload()`` (a new policy: ``opa build`` runs, which takes a
moment), and the process forks while that reload is under way (as a gunicorn master with a
policy watcher thread forks a worker). In the child: a decision, then ``reload()`` to a newer
policy, then a decision.

Observed: the child decides, but its ``reload()`` never returns: ``EmbeddedPolicy`` keeps its
``_reload_lock`` (a ``threading.Lock``) across the fork, held by a thread that does not exist
in the child, and nothing resets it after a fork (the instance pool, the wasm clock and the
worker threads are reset; this lock is not). The child keeps the policy it was forked with
for ever, and a worker thread that calls ``reload()`` hangs.

Expected: the child reloads (the lock made afresh after a fork, as the pool's are) and then
decides on the new policy; the parent is unaffected.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from test_fork import in_child

from langchain_opa_guard import EmbeddedPolicy

RULE = 'package agent.authz\n\ndecision := {"allow": %s, "reasons": ["%s"]}\n'


def request() -> dict[str, Any]:
    return {
        "version": 1,
        "tool": {"name": "read", "args": {}, "call_id": "c1"},
        "user": {"id": "u", "role": "r"},
    }


def test_a_child_forked_during_a_reload_can_reload(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex  # fresh policies: each reload really compiles
    policy = tmp_path / "policy.rego"
    policy.write_text(RULE % ("true", "v1-" + tag))
    engine = EmbeddedPolicy(tmp_path, cache_dir=tmp_path / "cache", timeout=5.0)
    try:
        assert engine.decide(request()).allow
        policy.write_text(RULE % ("true", "v2-" + tag))
        reloading = threading.Thread(target=engine.reload)
        reloading.start()
        until = time.monotonic() + 5
        while not engine._reload_lock.locked() and time.monotonic() < until:
            time.sleep(0.001)
        assert engine._reload_lock.locked(), "the reload did not start"

        def child() -> dict[str, Any]:
            first = engine.decide(request()).allow
            policy.write_text(RULE % ("false", "v3-" + tag))
            done = threading.Event()
            errors: list[str] = []

            def reload() -> None:
                try:
                    engine.reload()
                except Exception as exc:  # noqa: BLE001 - reported
                    errors.append(repr(exc))
                done.set()

            threading.Thread(target=reload, daemon=True).start()
            finished = done.wait(4)
            after = engine.decide(request())
            return {
                "first": first,
                "reloaded": finished,
                "errors": errors,
                "after": after.verdict,
                "reasons": list(after.reasons),
            }

        got = in_child(child)
        reloading.join(30)
    finally:
        engine.close()
    assert got["first"] is True
    assert got["errors"] == []
    assert got["reloaded"], "the child's reload() never returned (a lock held across the fork)"
    assert got["after"] == "deny" and got["reasons"] == ["v3-" + tag]
