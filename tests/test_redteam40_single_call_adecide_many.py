"""Red team 40: ``EmbeddedPolicy.adecide_many`` of a one-call turn answers with a bare
``Decision``, not a list of one, when the engine is closed or the turn times out.

``_off_loop`` builds its failure as ``self._failure(error) if count == 1 else [...] * count``;
``adecide_many`` passes ``count=len(inputs)``, so a turn of one call gets the single-decision
form meant for ``adecide``.
"""

from __future__ import annotations

import threading

from conftest import POLICIES

from langchain_opa_guard import Decision, EmbeddedPolicy, ErrorType

CALL = {
    "name": "fetch_url",
    "args": {"url": "https://example.com"},
    "call_id": "c1",
    "metadata": {"toolkit": "WebTool"},
}
DOC = {
    "version": 1,
    "tool": CALL,
    "user": {"id": "user-789", "role": "guest"},
    "context": {},
    "turn": [CALL],
    "history": [],
}


async def test_a_closed_engine_answers_a_one_call_turn_with_a_list_of_one() -> None:
    """Attack: ``adecide_many([doc])`` on a closed engine.

    Observed: a ``Decision`` comes back (not a list): a caller zipping it with its calls, or
    taking ``len()`` of it, crashes (``Decision`` is not a sequence).

    Expected: ``[Decision]`` (one failed, denying decision), as ``decide_many([doc])`` and
    ``adecide_many`` of two docs answer.
    """
    engine = EmbeddedPolicy(POLICIES)
    engine.close()
    assert len(engine.decide_many([DOC])) == 1
    assert len(await engine.adecide_many([DOC, DOC])) == 2
    decisions = await engine.adecide_many([DOC])
    assert isinstance(decisions, list) and len(decisions) == 1
    assert isinstance(decisions[0], Decision) and not decisions[0].allow


async def test_a_one_call_turn_past_its_deadline_is_answered_with_a_list_of_one() -> None:
    """Attack: ``adecide_many([doc])`` while the engine's only worker thread is busy (a
    long evaluation of another caller), so the turn's deadline passes while it is queued.

    Observed: the timeout failure comes back as a bare ``Decision``.

    Expected: ``[Decision]`` with ``error == "timeout"``, denying.
    """
    engine = EmbeddedPolicy(POLICIES, timeout=0.1, max_instances=1)
    busy = threading.Event()
    engine._executor().submit(busy.wait, 5)  # the only worker is taken
    try:
        decisions = await engine.adecide_many([DOC])
        assert isinstance(decisions, list) and len(decisions) == 1
        assert decisions[0].error == ErrorType.TIMEOUT and not decisions[0].allow
    finally:
        busy.set()
        engine.close()
