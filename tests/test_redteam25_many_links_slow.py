"""Red team 25: many short, distinct links make the information-flow pack slow.

Commit a365a8a bounds the cost of one run of text (at most 64 link starts are read in a
run), but not the number of links read in a text: every distinct link found anywhere in
every reading of the text (as written, Markdown-unescaped, HTML-decoded, each quoted or
angle-bracketed span with its whitespace removed) goes through ``url_host``, ``site``,
``mentioned`` and ``in_directory`` in Rego, at roughly 0.1-0.3 ms each in OPA and about
1 ms each in the embedded (wasm) engine. A body is allowed any number of short runs.

Inputs (bodies under 100 KB, sent after untrusted content was read):

* ``"<//1a2\\. t"`` repeated with distinct hosts (9,000 tokens, 99 KB): each token is three
  distinct links (``//1a2`` as written, ``//1a2.`` Markdown-unescaped, ``//1a2.t`` from the
  angle-bracket span with its space removed) and an extra content text. OPA server: about
  3.5 s of evaluation; ``OPAServer`` (default timeout 2 s) gives ``timeout``.
* ``"//1a2.t "`` repeated with distinct hosts: the embedded engine's time grows faster than
  the text (1,000 links 0.2 s, 3,000 0.9 s, 6,000 (50 KB) 3 s, 11,000 (95 KB) 10 s; OPA
  about 2 s for 95 KB); 50 KB is past its default 1 s timeout.

Observed: the decision is the engine's ``timeout`` (fail closed), not the policy's
``link_not_requested``: the model can turn any egress decision into an engine failure.
Expected: the policy's own reason, within the default timeouts.

Smallest fix: bound the number of links read per call, not only per run: count link starts
over all content texts (``regex.find_n(link_start, text, cap + 1)`` per text, summed) and,
above a cap (a few hundred), count the call as carrying an unreadable link
(``link_not_requested``) without reading each link.
"""

from __future__ import annotations

import json

import pytest
from test_redteam6_wasm_host_deadline import flow_input

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine

# Three distinct links per token, and one more content text (the span "<//1a2\. t" read
# without its space).
ANGLE_MARKDOWN = "".join(f"<//{i:x}\\. t" for i in range(8000))

# Plain links, one per run, each to its own host.
PLAIN = " ".join(f"//{i:x}.t" for i in range(6000))


def test_many_distinct_links_get_the_policy_s_reason(engine: PolicyEngine) -> None:
    assert len(ANGLE_MARKDOWN) < 100_000
    decision = engine.decide(flow_input(ANGLE_MARKDOWN))
    assert decision.verdict == "deny"
    assert decision.error is None, (decision.error, decision.reasons)
    assert "link_not_requested" in set(decision.codes)


def test_a_50_kb_list_of_links_gets_the_policy_s_reason_on_the_embedded_engine(
    embedded: EmbeddedPolicy,
) -> None:
    assert len(PLAIN) < 50_000
    decision = embedded.decide(flow_input(PLAIN))
    assert decision.verdict == "deny"
    assert decision.error is None, (decision.error, decision.reasons)
    assert "link_not_requested" in set(decision.codes)


# Red team 25, second finding: no link at all, but many content strings. Every string of a
# content argument (a list or object, as Slack's Block Kit blocks) is read in each of its
# renderings: one holding "&" is HTML-decoded (two regex.replace and two strings.replace_n
# with the ~60 character references), and each reading is searched for quoted spans, runs
# and links. A list of 10,500 strings such as "a1&" (90 KB as JSON) takes the
# embedded engine about 2.4 s (OPA about 0.8 s) and is allowed once read. Smallest fix:
# cap the number of content strings read (above, say, 1,000 count the call as carrying an
# unreadable link), or read them as one text joined by newlines (one search, not two host
# calls per string); and HTML-decode only a text holding "&#" or a named reference.
MANY_STRINGS = [f"{i:x}&" for i in range(10_500)]


def test_many_short_content_strings_get_the_policy_s_answer_on_the_embedded_engine(
    embedded: EmbeddedPolicy,
) -> None:
    assert len(json.dumps(MANY_STRINGS)) < 100_000
    decision = embedded.decide(flow_input(MANY_STRINGS))  # type: ignore[arg-type]
    assert decision.error is None, (decision.error, decision.reasons)
    # Mended by a cap: content in more strings than the pack reads (500) counts as a link
    # nobody vouched for, so the answer is the policy's denial, at once.
    assert decision.verdict == "deny" and set(decision.codes) == {"link_not_requested"}


def test_content_under_the_string_cap_is_read(embedded: EmbeddedPolicy) -> None:
    decision = embedded.decide(flow_input([f"{i:x}&" for i in range(400)]))  # type: ignore[arg-type]
    assert decision.error is None and decision.verdict == "allow", decision.reasons


# Links without "//": each mailto:, javascript:, vbscript:, data: or file: link is a link
# start too (so thousands of them are not read one by one), and the addresses of all
# mailto: links are read up to 256 separators in all.
MAILTO_DISTINCT = " ".join(f"mailto:{i:x}@x.test?cc={i:x}@y.test" for i in range(3000))
MAILTO_UNDER_THE_CAP = " ".join(f"mailto:{i:x}%40x.test,{i:x}@y.test" for i in range(250))
MAILTO_MANY_ADDRESSES = "mailto:" + ",".join(f"{i:x}@x.test" for i in range(8000))
SCRIPTS = " ".join(f"javascript:{i:x}" for i in range(6000))


@pytest.mark.parametrize(
    "body",
    [MAILTO_DISTINCT, MAILTO_UNDER_THE_CAP, MAILTO_MANY_ADDRESSES, SCRIPTS],
    ids=["mailto-distinct", "mailto-under-the-cap", "mailto-many-addresses", "javascript"],
)
def test_many_hostless_links_get_the_policy_s_reason(engine: PolicyEngine, body: str) -> None:
    assert len(body) < 100_000
    decision = engine.decide(flow_input(body))
    assert decision.error is None, (decision.error, decision.reasons)
    assert decision.verdict == "deny" and set(decision.codes) == {"link_not_requested"}


def test_mailto_links_to_the_requested_address_under_the_caps_are_read(
    engine: PolicyEngine,
) -> None:
    body = " ".join(f"mailto:bob%40example.com?subject={i}" for i in range(500))
    decision = engine.decide(flow_input(body))
    assert decision.error is None and decision.verdict == "allow", decision.reasons
