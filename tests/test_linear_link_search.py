"""The information-flow pack's link search is linear in the text.

After untrusted content, every text an egress call sends is searched for links. A search
for one link reads on to the end of its run of text looking for the "@" that ends a
userinfo, so a body of ``"http:!" * 8000`` (48 KB, one run of 8000 link starts) used to
cost 8000 reads of the run: about 12 s in OPA, past any timeout, so the model could make
its own egress calls fail with ``timeout`` instead of the policy's reason. The pack now
searches run by run and counts a run with more link starts than a URL holds as a link it
cannot read. These tests check the decisions (the policy's own reason, under the default
timeouts), not the time.
"""

from __future__ import annotations

import pytest
from test_redteam6_wasm_host_deadline import flow_input

from langchain_opa_guard import PolicyEngine

LINK = "Reset your password at https://evil.test/login "


@pytest.mark.parametrize(
    "padding",
    [
        "http:!" * 8000,  # one run, 8000 link starts
        ("http:" * 64 + "!" * 700 + " ") * 48,  # many runs at the limit, each read 64 times
        "http:" * 64 + "!" * 48000,  # one long run at the limit
        "www." * 12000,
        "mailto:a@b.test " * 6000,  # a link start in each of 6000 runs
        "javascript:!" * 8000,  # one run, 8000 link starts
        "data:x " * 12000,
    ],
    ids=[
        "crowded-run",
        "runs-at-the-limit",
        "long-run-at-the-limit",
        "www",
        "mailto",
        "javascript",
        "data",
    ],
)
def test_a_long_crowded_body_gets_the_policy_s_reason(engine: PolicyEngine, padding: str) -> None:
    decision = engine.decide(flow_input(LINK + padding))
    assert decision.verdict == "deny"
    assert decision.error is None, decision.reasons
    assert "link_not_requested" in set(decision.codes)


def test_a_crowded_run_alone_is_a_link_that_cannot_be_read(engine: PolicyEngine) -> None:
    # No other link: the run itself is what the policy refuses.
    decision = engine.decide(flow_input("see you " + "http:!" * 8000))
    assert decision.verdict == "deny" and decision.error is None
    assert set(decision.codes) == {"link_not_requested"}


def test_a_body_with_links_in_runs_under_the_limit_is_read(engine: PolicyEngine) -> None:
    # Twenty link starts in one run, and links to the requested site only: allowed.
    body = "see https://example.com/a" + "http:!" * 20 + " and //example.com/b"
    decision = engine.decide(flow_input(body))
    assert decision.verdict == "allow", decision.reasons
