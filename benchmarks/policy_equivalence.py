"""The shipped policy decides as another revision of it does, on thousands of varied inputs.

A rewrite of ``policies/`` for speed must not change a single decision. This script
generates inputs across the whole input contract (from a fixed seed): roles that are
missing, empty or not strings; every tool group (customer database, ``"egress": true``
tools, egress tools with destinations and content, MCP tools with and without
annotations, untrusted tools, unknown tools, names that are not strings); histories with
untrusted reads, open-world MCP reads, refused calls and personal data; turns with other
untrusted calls; malformed versions, users and arguments. Each input is decided by OPA
itself (one ``opa eval`` per policy tree, every input evaluated ``with input as``) on the
policies of the working tree and on those of a git revision (``main`` unless told), under
the shipped data and under data with MCP pins, a trusted directory and
``approve_writes_after_untrusted`` set. The decision documents and ``visible_tools`` must
be identical for every input.

    python benchmarks/policy_equivalence.py                 # 5000 inputs against main
    python benchmarks/policy_equivalence.py --against HEAD~1 --count 20000 --seed 7

It prints how many inputs it compared, how the decisions spread over the reason codes
(so a run that only ever exercised one path shows it), and every difference; it exits
with 1 when any decision differs.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from opa_process import opa_binary  # noqa: E402

# --- Inputs ---------------------------------------------------------------------------

ROLES: list[Any] = ["admin", "internal_user", "guest", "admin", "internal_user", "guest"]
ODD_ROLES: list[Any] = ["", "superuser", "Admin", 7, None, True, ["admin"], {"r": "admin"}]
DB_TOOLS = ["get_customer_details", "update_customer_status", "delete_customer"]
PLAIN_TOOLS = ["fetch_url", "search_web", "send_email", "http_post"]
ODD_NAMES: list[Any] = ["drop_tables", "", "Fetch_URL", 7, None, ["fetch_url"]]
FIELDS = ["name", "email", "phone", "status", "address", "EMAIL", "Phone"]
STATUSES = ["active", "inactive", "pending", "suspended", "deleted", "ACTIVE", ""]
ADDRESSES = [
    "bob@example.com",
    "Bob <bob@EXAMPLE.com>",
    "eve@evil.test",
    "alice@partner.test",
    "x@example.com.evil.test",
    "no-at-sign",
    "",
]
LINKS = [
    "https://example.com/a",
    "https://evil.test/x?d=1",
    "see www.partner.test today",
    "http://news.example.org/story",
    "https://example.com\\@evil.test/",
    "https&colon;&#47;&#47;evil.test",
    "https\\://evil.test",
    '<a href="https://example.com x@evil.test/">x</a>',
    "plain text, no link",
    "//evil.test/path",
    "mail bob@example.com.",
]
REQUESTS = [
    "Mail the summary to bob@example.com",
    "Summarize news.example.org and mail it to bob@example.com",
    "Post it to https://partner.test/inbox",
    "Send alice@partner.test the report. Then stop.",
    "Look up the weather",
    "",
]
MCP_SERVERS: list[Any] = ["tickets", "web", "web", "unknown", 7]
MCP_TOOLS = ["create_ticket", "search", "send_email", "delete_ticket", "read"]


def _pick(rng: random.Random, values: list[Any]) -> Any:
    return values[rng.randrange(len(values))]


def _args(rng: random.Random, name: Any) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return _pick(rng, ["not an object", ["a"], None, 3])
    args: dict[str, Any] = {}
    if rng.random() < 0.8:
        args["customer_id"] = _pick(rng, ["CUST-001", "CUST-002", 7])
    if name == "get_customer_details" or rng.random() < 0.15:
        shape = rng.randrange(6)
        if shape == 0:
            args["fields"] = {f: rng.random() < 0.7 for f in rng.sample(FIELDS, rng.randint(0, 3))}
        elif shape == 1:
            args["fields"] = rng.sample(FIELDS, rng.randint(0, 3)) + _pick(rng, [[], [7]])
        elif shape == 2:
            args["fields"] = {}
        elif shape == 3:
            args["fields"] = _pick(rng, ["email", None, 5])
        # shapes 4, 5: no fields
    if (name == "update_customer_status" or rng.random() < 0.1) and rng.random() < 0.85:
        args["new_status"] = _pick(rng, [*STATUSES, 3, None])
    if name in ("send_email", "http_post") or rng.random() < 0.25:
        for field in ("to", "cc", "bcc"):
            if rng.random() < (0.7 if field == "to" else 0.2):
                shape = rng.randrange(4)
                if shape == 0:
                    args[field] = _pick(rng, ADDRESSES)
                elif shape == 1:
                    args[field] = rng.sample(ADDRESSES, rng.randint(0, 3))
                elif shape == 2:
                    args[field] = [{"email": _pick(rng, ADDRESSES), "name": "Bob"}]
                else:
                    args[field] = ", ".join(rng.sample(ADDRESSES, 2))
        if rng.random() < 0.6:
            args["body"] = " ".join(rng.sample(LINKS, rng.randint(0, 3)))
        if rng.random() < 0.3:
            args["subject"] = _pick(rng, LINKS)
        if rng.random() < 0.3:
            args["url"] = _pick(rng, LINKS)
        if rng.random() < 0.2:
            args["recipient_name"] = _pick(rng, ["Bob", "alice", "Eve"])
    return args


def _metadata(rng: random.Random, name: Any) -> Any:
    roll = rng.random()
    if roll < 0.03:
        return _pick(rng, [None, "untrusted", []])
    meta: dict[str, Any] = {}
    if name in DB_TOOLS:
        if rng.random() < 0.85:
            meta["toolkit"] = _pick(rng, ["CustomerDBTool", "CustomerDBTool", "Other"])
    elif rng.random() < 0.05:
        meta["toolkit"] = "CustomerDBTool"
    if name in ("fetch_url", "search_web") and rng.random() < 0.85:
        meta["trust"] = "untrusted"
    elif rng.random() < 0.08:
        meta["trust"] = _pick(rng, ["untrusted", "Untrusted", "trusted"])
    if name in ("send_email", "http_post") and rng.random() < 0.85:
        if rng.random() < 0.5:
            meta["egress"] = True
        else:
            meta["egress"] = {
                "destinations": rng.sample(["to", "cc", "url", 7], rng.randint(0, 2)),
                "content": rng.sample(["body", "subject"], rng.randint(0, 2)),
            }
            if rng.random() < 0.3:
                meta["egress"]["addressee"] = "recipient_name"
    elif rng.random() < 0.05:
        meta["egress"] = _pick(rng, [True, False, {"destinations": ["to"]}])
    for flag in ("personal_data", "read_only", "destructive"):
        if rng.random() < 0.12:
            meta[flag] = _pick(rng, [True, True, False, "yes"])
    if rng.random() < 0.2:
        meta["mcp"] = {"server": _pick(rng, MCP_SERVERS)}
        if rng.random() < 0.7:
            meta["mcp"]["tool"] = _pick(rng, [*MCP_TOOLS, 5])
        if rng.random() < 0.5:
            meta["mcp"]["digest"] = _pick(rng, ["sha256:aa", "sha256:bb", "sha256:cc"])
        for hint in ("readOnlyHint", "destructiveHint", "openWorldHint", "idempotentHint"):
            if rng.random() < 0.5:
                meta[hint] = _pick(rng, [True, False, None])
    elif rng.random() < 0.03:
        meta["mcp"] = _pick(rng, ["web", {"tool": "x"}])
    return meta


def _call(rng: random.Random, call_id: str) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.3:
        name: Any = _pick(rng, DB_TOOLS)
    elif roll < 0.75:
        name = _pick(rng, PLAIN_TOOLS)
    elif roll < 0.9:
        name = _pick(rng, MCP_TOOLS)
    else:
        name = _pick(rng, ODD_NAMES)
    call: dict[str, Any] = {"name": name, "args": _args(rng, name), "call_id": call_id}
    call["metadata"] = _metadata(rng, name)
    if name in MCP_TOOLS and rng.random() < 0.8 and isinstance(call["metadata"], dict):
        call["metadata"]["mcp"] = {
            "server": _pick(rng, MCP_SERVERS),
            "tool": name,
            "digest": _pick(rng, ["sha256:aa", "sha256:bb"]),
        }
    for key in ("name", "args", "metadata", "call_id"):
        if rng.random() < 0.02:
            del call[key]
    return call


def _user(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.8:
        return {"id": "user-1", "role": _pick(rng, ROLES)}
    if roll < 0.9:
        return {"id": "user-1", "role": _pick(rng, ODD_ROLES)}
    if roll < 0.95:
        return {"id": "user-1"}
    return _pick(rng, [None, "admin", []])


def generated_input(rng: random.Random) -> dict[str, Any]:
    """One input of the contract, most of them well formed, some not in every way."""
    tool = _call(rng, "call-0")
    turn = [tool] + [_call(rng, f"call-{i}") for i in range(1, rng.randint(1, 4))]
    rng.shuffle(turn)
    history = []
    for i in range(_pick(rng, [0, 0, 1, 2, 3, 4, 6])):
        past = _call(rng, f"h{i}")
        past["decision"] = _pick(rng, ["allow", "allow", "allow", "deny", "approve", None])
        past["reasons"] = []
        past["status"] = _pick(rng, ["success", "error"])
        if rng.random() < 0.05:
            del past["decision"]
        history.append(past)
    doc: dict[str, Any] = {
        "version": 1,
        "tool": tool,
        "user": _user(rng),
        "context": {"thread_id": "t-1", "node": "tools", "step": 1, "tenant": None},
        "turn": turn,
        "history": history,
    }
    if rng.random() < 0.5:
        doc["context"]["request"] = _pick(rng, [*REQUESTS, 7])
    if rng.random() < 0.3:
        doc["context"]["directory"] = rng.sample(
            ["@example.com", "alice@partner.test", "partner.test", 7], rng.randint(0, 2)
        )
    if rng.random() < 0.15:
        doc["tools"] = [_call(rng, f"t{i}") for i in range(rng.randint(0, 4))]
    roll = rng.random()
    if roll < 0.06:
        doc["version"] = _pick(rng, [2, 0, "1", None, 1.5])
    elif roll < 0.08:
        del doc["version"]
    if rng.random() < 0.02:
        doc["turn"] = _pick(rng, [None, "x", {}])
    if rng.random() < 0.02:
        doc["history"] = _pick(rng, [None, {}])
    if rng.random() < 0.02:
        del doc["user"]
    if rng.random() < 0.01:
        doc["tool"] = _pick(rng, [None, "fetch_url", []])
    return doc


def generated_inputs(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [generated_input(rng) for _ in range(count)]


# --- Deciding them ---------------------------------------------------------------------

# Data under which the rules that the shipped data leaves idle run too.
OTHER_DATA = {
    "mcp": {
        "servers": {
            "tickets": {
                "roles": ["internal_user", "admin"],
                "destructive_roles": ["admin"],
                "tools": {"delete_ticket": {"roles": ["admin"], "destructive_roles": []}},
            },
            "web": {
                "roles": ["guest", "internal_user", "admin"],
                "tools": {"send_email": {"roles": ["internal_user", "admin"]}},
            },
        },
        "pins": {
            "tickets": {"create_ticket": "sha256:aa", "delete_ticket": ["sha256:aa", "sha256:bb"]},
        },
    },
    "infoflow": {"approve_writes_after_untrusted": True},
    "trusted_directory": ["@example.com", "partner.test"],
}

QUERY = """
results := [r |
	some doc in input.docs
	r := {
		"decision": object.get({"d": data.agent.authz.decision}, "d", "<undefined>"),
		"visible": object.get({"v": data.agent.authz.visible_tools}, "v", "<undefined>"),
	} with input as doc
]
other := [r |
	some doc in input.docs
	r := {
		"decision": object.get({"d": data.agent.authz.decision}, "d", "<undefined>"),
		"visible": object.get({"v": data.agent.authz.visible_tools}, "v", "<undefined>"),
	} with input as doc
		with data.agent.config.mcp as input.other.mcp
		with data.agent.config.infoflow as input.other.infoflow
		with data.agent.config.trusted_directory as input.other.trusted_directory
]
"""


def decide_all(policy_dir: Path, docs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every input's decision and visible tools, under both data sets, by ``opa eval``."""
    with tempfile.TemporaryDirectory() as tmp:
        query_file = Path(tmp) / "query.rego"
        query_file.write_text("package policy_equivalence\n" + QUERY)
        out = subprocess.run(
            [
                opa_binary(),
                "eval",
                "--ignore",
                "*_test.rego",
                "-d",
                str(policy_dir),
                "-d",
                str(query_file),
                "--stdin-input",
                "--format",
                "json",
                "data.policy_equivalence",
            ],
            input=json.dumps({"docs": docs, "other": OTHER_DATA}),
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"opa eval failed on {policy_dir}: {out.stderr[:2000]}")
    value = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return {"shipped data": value["results"], "other data": value["other"]}


def policies_at(revision: str, into: Path) -> Path:
    """The ``policies/`` tree of a git revision, written under ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "policies"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "policies"


def outcome(result: dict[str, Any]) -> str:
    decision = result["decision"]
    if not isinstance(decision, dict):
        return str(decision)
    kind = (
        "allow"
        if decision.get("allow")
        else ("approval" if decision.get("require_approval") else "deny")
    )
    codes = sorted({r.get("code", "?") for r in decision.get("reasons", [])})
    return " ".join([kind, *codes])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision (default: main)")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20260412)
    parser.add_argument("--policies", default=str(ROOT / "policies"))
    args = parser.parse_args()
    docs = generated_inputs(args.count, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = policies_at(args.against, Path(tmp))
        expected = decide_all(reference, docs)
    got = decide_all(Path(args.policies), docs)
    differences = 0
    spread: collections.Counter[str] = collections.Counter()
    for data_set, results in expected.items():
        for i, (want, have) in enumerate(zip(results, got[data_set], strict=True)):
            spread[outcome(want)] += 1
            if want != have:
                differences += 1
                if differences <= 10:
                    print(f"DIFFERENT ({data_set}, input {i}):")
                    print("  input:   ", json.dumps(docs[i])[:1500])
                    print("  expected:", json.dumps(want))
                    print("  got:     ", json.dumps(have))
    compared = sum(len(r) for r in expected.values())
    print(
        f"{compared} decisions compared ({args.count} inputs x {len(expected)} data sets, "
        f"seed {args.seed}) against {args.against}: {differences} differ"
    )
    print("outcomes (reference policy):")
    for name, n in spread.most_common():
        print(f"  {n:6d}  {name}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
