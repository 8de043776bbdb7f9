"""The embedded engine and a real OPA server reach identical decisions on generated inputs."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_opa_guard import EmbeddedPolicy, OPAServer

TOOLS = [
    "get_customer_details",
    "update_customer_status",
    "delete_customer",
    "fetch_url",
    "search_web",
    "send_email",
    "http_post",
]
METADATA = {
    "get_customer_details": {"toolkit": "CustomerDBTool"},
    "update_customer_status": {"toolkit": "CustomerDBTool"},
    "delete_customer": {"toolkit": "CustomerDBTool"},
    "fetch_url": {"trust": "untrusted"},
    "search_web": {"trust": "untrusted"},
    "send_email": {"egress": True},
    "http_post": {"egress": True},
}
FIELDS = ["name", "email", "phone", "status", "address"]

text = st.text(max_size=12)
names = st.one_of(st.sampled_from(TOOLS), text)
roles = st.one_of(st.sampled_from(["admin", "internal_user", "guest"]), text)
users = st.one_of(
    st.none(),
    st.fixed_dictionaries({"id": text, "role": roles}),
    st.fixed_dictionaries({"id": text}),
    st.fixed_dictionaries({"id": text, "role": st.integers()}),
)
args = st.one_of(
    st.fixed_dictionaries(
        {"customer_id": text},
        optional={
            "fields": st.dictionaries(st.sampled_from(FIELDS), st.booleans(), max_size=4),
            "new_status": st.one_of(
                st.sampled_from(["active", "inactive", "pending", "suspended"]), text
            ),
            "to": st.one_of(st.sampled_from(["bob@example.com", "eve@evil.test"]), text),
            "url": text,
        },
    ),
    st.dictionaries(text, st.one_of(text, st.integers(), st.booleans()), max_size=3),
)


@st.composite
def calls(draw: Any) -> dict[str, Any]:
    name = draw(names)
    metadata = draw(
        st.one_of(st.just(METADATA.get(name, {})), st.just({}), st.just({"toolkit": "Other"}))
    )
    return {"name": name, "args": draw(args), "call_id": draw(text), "metadata": metadata}


@st.composite
def inputs(draw: Any) -> dict[str, Any]:
    call = draw(calls())
    others = draw(st.lists(calls(), max_size=2))
    history = [
        {
            **c,
            "decision": draw(st.sampled_from(["allow", "deny", None])),
            "reasons": [],
            "status": draw(st.sampled_from(["success", "error", "pending"])),
        }
        for c in draw(st.lists(calls(), max_size=3))
    ]
    return {
        "version": draw(st.sampled_from([1, 1, 1, 2])),
        "tool": call,
        "user": draw(users),
        "context": {"thread_id": draw(st.one_of(st.none(), text)), "node": "guard", "step": 1},
        "turn": [call, *others],
        "history": history,
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=inputs())
def test_engines_agree(embedded: EmbeddedPolicy, opa_url: str, document: dict[str, Any]) -> None:
    server = _server(opa_url)
    ours, theirs = embedded.decide(document), server.decide(document)
    assert theirs.error is None and ours.error is None
    assert (ours.allow, ours.require_approval, ours.reasons) == (
        theirs.allow,
        theirs.require_approval,
        theirs.reasons,
    )


_servers: dict[str, OPAServer] = {}


def _server(url: str) -> OPAServer:
    if url not in _servers:
        _servers[url] = OPAServer(url)
    return _servers[url]


def test_engines_agree_on_a_seeded_corpus_covering_every_verdict(
    embedded: EmbeddedPolicy, opa_url: str
) -> None:
    """Hundreds of inputs from a fixed seed; every verdict occurs, and both engines agree."""
    import random
    from collections import Counter

    rng = random.Random(20261125)
    server = _server(opa_url)
    verdicts: Counter[str] = Counter()
    for _ in range(500):
        name = rng.choice([*TOOLS, "send_email", "http_post"])
        call = {
            "name": name,
            "args": {
                "customer_id": f"CUST-{rng.randint(1, 9):03d}",
                "fields": {f: True for f in rng.sample(FIELDS, rng.randint(0, 3))},
                "new_status": rng.choice(["active", "pending", "deleted"]),
                "to": rng.choice(["bob@example.com", "eve@evil.test"]),
            },
            "call_id": f"c{rng.randint(0, 10**6)}",
            "metadata": METADATA[name] if rng.random() < 0.9 else {},
        }
        earlier = rng.choice([[], ["fetch_url"], ["search_web", "get_customer_details"]])
        document = {
            "version": 1,
            "tool": call,
            "user": {"id": "u", "role": rng.choice(["admin", "internal_user", "guest", ""])},
            "context": {"thread_id": "t", "node": "guard", "step": 3},
            "turn": [call],
            "history": [
                {
                    "name": n,
                    "args": {},
                    "call_id": f"h{i}",
                    "metadata": METADATA[n],
                    "decision": "allow",
                    "reasons": [],
                    "status": "success",
                }
                for i, n in enumerate(earlier)
            ],
        }
        ours, theirs = embedded.decide(document), server.decide(document)
        assert (ours.verdict, ours.reasons) == (theirs.verdict, theirs.reasons), document
        verdicts[ours.verdict] += 1
    assert min(verdicts["allow"], verdicts["deny"], verdicts["approval"]) >= 20, verdicts
