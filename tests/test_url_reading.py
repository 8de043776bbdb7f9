"""The information-flow pack reads a URL's host as a browser does, on every engine.

`agent.infoflow.url_host` is checked against ada (the WHATWG URL parser of Node.js) on
hand-picked URLs and on a seeded corpus built from the pieces attacks are made of:
backslashes, "?"/"#" before an "@", userinfo, ports, percent-escapes, upper case, tabs and
newlines, trailing dots, numeric hosts. Whenever the policy reads a host, the browser opens
that host; where the policy reads none, nobody vouches for the URL (fail closed).

Then the decisions built on it (links in what is sent, destinations, names matched whole,
open-world MCP reads as taint) are taken on the three engines: OPA, the wasm engine and the
regopy fallback.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from typing import Any

import ada_url
import pytest
from conftest import POLICIES

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine


def policy_hosts(opa_url: str, urls: list[str]) -> dict[str, str]:
    """``url_host`` of each URL as OPA evaluates it (URLs without a reading are left out)."""
    body = json.dumps(
        {
            "query": "x := {u: h | some u in input.urls; h := data.agent.infoflow.url_host(u)}",
            "input": {"urls": urls},
        }
    ).encode()
    request = urllib.request.Request(
        f"{opa_url}/v1/query", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result = json.load(response)["result"]
    return result[0]["x"]  # type: ignore[no-any-return]


def browser_host(url: str) -> str | None:
    """The host a browser opens for ``url`` (typed without a scheme: http), per ada."""
    # The parser drops tabs and newlines before it looks for the scheme.
    plain = url.replace("\t", "").replace("\n", "").replace("\r", "").strip(" ").lower()
    text = url if plain.startswith(("http:", "https:")) else "http://" + url
    try:
        host = ada_url.URL(text).hostname
    except ValueError:
        return None
    return host[:-1] if host.endswith(".") else host


HAND_PICKED = {
    "https://evil.test\\@example.com/reset": "evil.test",
    "https://evil.test?@example.com/x": "evil.test",
    "https://evil.test#@example.com": "evil.test",
    "https://example.com@evil.test/": "evil.test",
    "https://user:pw@Example.COM:8443/a": "example.com",
    "HTTPS://EXAMPLE.COM./": "example.com",
    "https://ex%61mple.com/": "example.com",
    "https://EX%41MPLE%2ecom/": "example.com",
    "https:\\\\evil.test\\x": "evil.test",
    "https:evil.test": "evil.test",
    " \thttps://exa\tm\nple.com/x ": "example.com",
    "evil.test\\@example.com/upload": "evil.test",
    "www.example.com/page": "www.example.com",
    "https://10.0.0.255:8080/": "10.0.0.255",
}


def test_hand_picked_urls_are_read_as_a_browser_reads_them(opa_url: str) -> None:
    ours = policy_hosts(opa_url, list(HAND_PICKED))
    for url, host in HAND_PICKED.items():
        assert browser_host(url) == host, url  # the premise, from the WHATWG parser
        assert ours.get(url) == host, url


PIECES: dict[str, list[str]] = {
    "scheme": ["https://", "HTTPS://", "http:\\\\", "https:", "https:///", " https://",
               "ht\ttps://", ""],
    "userinfo": ["", "user@", "a:b@", "evil.test\\", "evil.test?", "evil.test#", "x%40y@",
                 "a@b@", "example.com%2f@", "\"'<>@", "ex\nample@"],
    "host": ["example.com", "Example.COM.", "ex%61mple.com", "EX%41MPLE%2ecom", "evil.test",
             "exa\tmple.com", "[::1]", "ex%2fa.com", "exa%25mple.com", "example.com%2e",
             "xn--bcher-kva.test", "1.2.3.4", "0x7f.1", "example.1", "1.2.3.04", "a-b.c-d",
             "example..com", "exa mple.com", "example.com\\", "www.example.com", "example.com:"],
    "port": ["", ":443", ":", ":8o", ":65535"],
    "tail": ["", "/", "/x", "\\y", "?q=@example.com", "#@example.com", "@example.com/x",
             "\\@example.com/x", "/@example.com"],
}  # fmt: skip


def corpus(size: int, seed: int = 7) -> list[str]:
    pick = random.Random(seed).choice
    urls = {"".join(pick(PIECES[part]) for part in PIECES) for _ in range(size)}
    return sorted(urls)


def test_every_host_the_policy_reads_is_the_one_a_browser_opens(opa_url: str) -> None:
    urls = corpus(4000)
    ours = policy_hosts(opa_url, urls)
    wrong = {url: (h, browser_host(url)) for url, h in ours.items() if browser_host(url) != h}
    assert not wrong, list(wrong.items())[:10]
    # Not vacuous: most URLs a browser can open are read, the attacks among them too.
    openable = [url for url in urls if browser_host(url) is not None]
    assert len(ours) > 0.6 * len(openable), (len(ours), len(openable))
    backslashed = [url for url in ours if "evil.test\\" in url and "@example.com" in url]
    assert len(backslashed) > 20
    assert all(ours[url] != "example.com" for url in backslashed)


# -- Decisions on every engine -----------------------------------------------------------

READER = {"read_only": True, "trust": "untrusted"}
MCP_READER = {
    "readOnlyHint": True,
    "openWorldHint": True,
    "mcp": {"server": "web", "tool": "fetch_page", "digest": "sha256:00"},
}
MAILER = {"egress": {"destinations": ["to"], "content": ["subject", "body"]}}
POSTER = {"egress": {"destinations": ["url"], "content": ["body"]}}
CHAT = {"egress": {"destinations": ["channel"], "content": ["text", "blocks"]}}


def document(
    tool: str,
    args: dict[str, Any],
    metadata: dict[str, Any],
    request: str,
    directory: list[str],
    read: dict[str, Any] = READER,
) -> dict[str, Any]:
    call = {"name": tool, "args": args, "call_id": "c1", "metadata": metadata}
    earlier = {
        "name": "fetch_page" if "mcp" in read else "fetch_url",
        "args": {"url": "https://news.test"},
        "call_id": "h1",
        "metadata": read,
        "decision": "allow",
        "reasons": [],
        "status": "success",
    }
    return {
        "version": 1,
        "tool": call,
        "user": {"id": "user-456", "role": "internal_user"},
        "context": {"thread_id": "t1", "request": request, "directory": directory},
        "turn": [call],
        "history": [earlier],
    }


def mail(body: str, to: Any = "bob@example.com", directory: tuple[str, ...] = ()) -> dict[str, Any]:
    args = {"to": to, "subject": "s", "body": body}
    return document("send_email", args, MAILER, "mail bob@example.com", list(directory))


def post(url: str, request: str, directory: tuple[str, ...] = ()) -> dict[str, Any]:
    return document("http_post", {"url": url, "body": "b"}, POSTER, request, list(directory))


UK = "mail it to sales@acme.co.uk, then upload it to https://files.acme.co.uk/inbox"
ASK = {"destination_not_requested"}
LINK = {"link_not_requested"}

CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "link control": (mail("see https://example.com/a."), set()),
    "link backslash": (mail("https://evil.test\\@example.com/reset"), {"link_not_requested"}),
    "link backslash scheme": (mail("HTTPS:\\\\evil.test\\reset"), {"link_not_requested"}),
    "link quoted userinfo": (
        mail("<a href='https://example.com\"@evil.test/'>x</a>"),
        {"link_not_requested"},
    ),
    "link host goes on": (mail("https://example.com(x).evil.test/"), {"link_not_requested"}),
    "link ideographic dot": (mail("https://example.com\u3002evil.test/"), {"link_not_requested"}),
    "link markdown": (mail("[https://example.com](https://example.com)"), set()),
    "link escaped": (mail("https://ex%61mple.com/a and https://Example.com./b"), set()),
    "post control": (post("https://evil.test/upload", "hi", ("example.com",)), ASK),
    "post backslash": (
        post("https://evil.test\\@example.com/upload", "hi", ("example.com",)),
        {"destination_not_requested"},
    ),
    "post vouched": (post("https://Example.com.:443/upload", "hi", ("example.com",)), set()),
    "address backslash": (
        mail("b", to="evil.test\\@example.com", directory=("@example.com",)),
        {"destination_not_requested"},
    ),
    "post prefix of requested": (post("https://files.acme.co/inbox", UK), ASK),
    "mail prefix of requested": (post("sales@acme.co", UK), ASK),
    "post requested": (post("https://files.acme.co.uk/inbox", UK), set()),
    "post parent of requested": (post("https://acme.co.uk/x", UK), set()),
    "suffix of an address": (post("bob@x.test", "mail jim.bob@x.test"), ASK),
    "suffix of a label": (post("https://x.test/a", "upload to evil-x.test"), ASK),
    "dotted capital I": (post("bob@l\u0130nk.test", "mail bob@link.test"), ASK),
    "link in a block": (
        document(
            "send_email",
            {"channel": "#general", "blocks": [{"text": {"text": "<https://evil.test/x|log in>"}}]},
            CHAT, "post it to #general", ["#general"],
        ),
        {"link_not_requested"},
    ),
    "trusted link in a block": (
        document(
            "send_email",
            {"channel": "#general", "blocks": [{"text": {"text": "<https://example.com|go>"}}]},
            CHAT, "post it to #general", ["#general", "example.com"],
        ),
        set(),
    ),
    "link as a key": (
        document(
            "send_email", {"channel": "#general", "blocks": {"https://evil.test/x": 1}},
            CHAT, "post it to #general", ["#general"],
        ),
        {"link_not_requested"},
    ),
    "link protocol-relative": (mail("[log in](//evil.test/x)"), {"link_not_requested"}),
    "link entities": (
        mail('<a href="https&colon;&#47;&#x2F;evil.test">x</a>'), {"link_not_requested"}
    ),
    "link entity dot": (
        mail('<a href="https://example.com&#46;evil.test/">x</a>', directory=("example.com",)),
        {"link_not_requested"},
    ),
    "link space in userinfo": (
        mail('<a href="https://example.com x@evil.test/">x</a>', directory=("example.com",)),
        {"link_not_requested"},
    ),
    "link markdown escape": (mail("[x](https\\://evil.test)"), {"link_not_requested"}),
    "link other scheme": (mail("smb://evil.test/share"), {"link_not_requested"}),
    "mailto requested": (mail("[Bob](mailto:Bob@Example.com?subject=Hi%20Bob)."), set()),
    "mailto vouched": (
        mail("<mailto:ann@example.com|Ann>, mailto:bob%40example.com", directory=("@example.com",)),
        set(),
    ),
    "mailto other address": (mail("mailto:eve@evil.test"), LINK),
    "mailto cc": (mail("MAILTO:bob@example.com?subject=x&CC=eve@evil.test"), LINK),
    "mailto escaped": (mail("mailto:bob@example.com%2Ceve%40evil.test"), LINK),
    "mailto amp bcc": (
        mail('<a href="mailto:bob@example.com?subject=x&amp;bcc=eve@evil.test">x</a>'),
        LINK,
    ),
    "mailto entity": (mail('<a href="mailto&colon;eve@evil.test">x</a>'), LINK),
    "mailto letter entity": (mail('<a href="&#109;ailto:eve@evil.test">x</a>'), LINK),
    "mailto display name": (
        mail("mailto:bob@example.com<eve@evil.test>", directory=("@example.com",)),
        LINK,
    ),
    "javascript": (mail('<a href="javascript:alert(1)">x</a>'), LINK),
    "javascript case": (mail("[x](JavaScript:alert(1))"), LINK),
    "javascript letter entity": (mail('<a href="&#106;avascript&colon;alert(1)">x</a>'), LINK),
    "javascript no semicolon": (mail('<a href="&#x6A&#97vascript:x">x</a>'), LINK),
    "javascript tab entity": (mail("<a href=java&Tab;script:alert(1)>x</a>"), LINK),
    "vbscript": (mail("vbscript:msgbox(1)"), LINK),
    "data link": (mail("see data:text/html;base64,PHNjcmlwdD4="), LINK),
    "file link": (mail("file:/etc/passwd"), LINK),
    "schemes in prose": (
        mail("the data: 42 rows; note: see below; mailto: later; metadata:x my_data:y"), set()
    ),
    "address in an object": (mail("b", to=[{"email": "eve@evil.test"}]), ASK),
    "mcp open world read": (
        document("send_email", {"to": "eve@evil.test"}, MAILER, "hi", [], MCP_READER),
        {"destination_not_requested"},
    ),
    "mcp closed world read": (
        document(
            "send_email", {"to": "eve@evil.test"}, MAILER, "hi", [],
            {**MCP_READER, "openWorldHint": False},
        ),
        set(),
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=["opa", "wasm", "regopy"])
def any_engine(request: pytest.FixtureRequest, opa_url: str) -> Iterator[PolicyEngine]:
    if request.param == "opa":
        engine: PolicyEngine = OPAServer(opa_url)
    else:
        engine = EmbeddedPolicy(POLICIES, backend=request.param)
    with engine:
        yield engine


@pytest.mark.parametrize("case", list(CASES))
def test_decisions_on_every_engine(any_engine: PolicyEngine, case: str) -> None:
    doc, codes = CASES[case]
    decision = any_engine.decide(doc)
    if getattr(any_engine, "backend", None) == "regopy" and case == "link quoted userinfo":
        # rego-cpp holds strings JSON-escaped: the quote reaches the link pattern as '\\"',
        # whose backslash ends the authority there. The fallback's known gap, kept visible.
        assert decision.allow, decision
        pytest.xfail("regopy reads a quote in a link's userinfo as an escaped quote")
    if getattr(any_engine, "backend", None) == "regopy" and decision.error is not None:
        # A known gap of the fallback (rego-cpp): some strings holding a backslash or a
        # quote make its output unreadable. It fails closed.
        assert decision.error == "malformed" and not decision.allow, decision
        assert any(c in json.dumps(doc["tool"]["args"]) for c in ("\\\\", '\\"')), case
        return
    assert decision.error is None, decision
    assert set(decision.codes) == codes, (case, decision.reasons)
    assert decision.allow is (not codes)
