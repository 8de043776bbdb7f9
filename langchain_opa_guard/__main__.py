"""``python -m langchain_opa_guard``: the project's command line.

python -m langchain_opa_guard replay decisions.jsonl --policy policies/
python -m langchain_opa_guard replay decisions.jsonl --opa-url http://localhost:8181
python -m langchain_opa_guard demo
"""

from __future__ import annotations

import argparse
import sys

from langchain_opa_guard.engines.engine import DEFAULT_POLICY, PolicyEngine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m langchain_opa_guard")
    commands = parser.add_subparsers(dest="command", required=True)

    replay = commands.add_parser(
        "replay", help="decide recorded inputs with a candidate policy; report what changes"
    )
    replay.add_argument("log", help="a decision log (JSON lines) written by DecisionLog")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", help="a policy directory, .rego file or bundle (embedded)")
    source.add_argument("--opa-url", help="an OPA server holding the candidate policy")
    replay.add_argument("--path", default=DEFAULT_POLICY, help="the decision path")
    replay.add_argument("--strict", action="store_true", help="also report changed reason codes")

    commands.add_parser("demo", help="run the customer-database demo")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from langchain_opa_guard.demo.__main__ import main as demo

        return demo([])

    from langchain_opa_guard.ops.replay import replay as run_replay

    engine: PolicyEngine
    if args.policy:
        from langchain_opa_guard.engines.embedded import EmbeddedPolicy

        engine = EmbeddedPolicy(args.policy, policy=args.path)
    else:
        from langchain_opa_guard.engines.server.opa_server import OPAServer

        engine = OPAServer(args.opa_url, policy=args.path)
    report = run_replay(args.log, engine, strict=args.strict)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
