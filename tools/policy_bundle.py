"""Build, or check, the wasm bundle of ``policies/`` shipped with the package.

    python tools/policy_bundle.py build [--opa PATH]   # rebuild when stale (make bundle)
    python tools/policy_bundle.py check                # exit 1 when stale (make bundle-check)

The bundle records the digest of the policy sources (non-test modules and data) it was
built from; ``check`` compares it with ``policies/`` as they are now, so it needs no
``opa`` binary. ``build`` compiles with ``opa build -t wasm`` the entrypoints the embedded
engine asks for by default (the decision, ``visible_tools`` and the generated batch rule)
and writes the bundle (OPA's wasm output differs from build to build, so `build` leaves a
current bundle alone).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from langchain_opa_guard.engines.engine import DEFAULT_POLICY  # noqa: E402
from langchain_opa_guard.engines.policy_sources import defines, load_sources  # noqa: E402
from langchain_opa_guard.engines.wasm.bundles import (  # noqa: E402
    BATCH_ENTRYPOINT,
    BATCH_FILE,
    SHIPPED_BUNDLE,
    TURN_BATCH_ENTRYPOINT,
    _opa_version,
    batch_module,
    build_bundle,
    opa_binary,
    shipped_is_current,
    shipped_metadata,
    write_bundle,
)

POLICIES = ROOT / "policies"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("--opa", help="the opa binary (default $OPA_BIN, then PATH)")
    parser.add_argument("--force", action="store_true", help="build even when current")
    args = parser.parse_args()
    sources = load_sources(POLICIES)
    modules = {**sources.modules, BATCH_FILE: batch_module(DEFAULT_POLICY)}
    current, why = shipped_is_current(sources, modules)
    if args.command == "check":
        if current:
            print(f"{SHIPPED_BUNDLE.relative_to(ROOT)} is current with policies/")
            return 0
        print(f"STALE: {why}; run `make bundle` and commit the result", file=sys.stderr)
        return 1
    if current and not args.force:
        print(f"{SHIPPED_BUNDLE.relative_to(ROOT)} is current with policies/; nothing to do")
        return 0
    opa = opa_binary(args.opa)
    if opa is None:
        print("no opa binary: pass --opa, set OPA_BIN or put opa on PATH", file=sys.stderr)
        return 2
    entrypoints = [DEFAULT_POLICY]
    visible = DEFAULT_POLICY.rsplit("/", 1)[0] + "/visible_tools"
    if defines(sources.modules.values(), {}, visible):
        entrypoints.append(visible)
    bundle = build_bundle(
        modules,
        [*entrypoints, BATCH_ENTRYPOINT, TURN_BATCH_ENTRYPOINT],
        opa=opa,
        revision=sources.digest()[:16],
        data=sources.data,
        metadata=shipped_metadata(sources, modules, _opa_version(opa)),
    )
    write_bundle(bundle, SHIPPED_BUNDLE)
    print(
        f"wrote {SHIPPED_BUNDLE.relative_to(ROOT)} ({SHIPPED_BUNDLE.stat().st_size:,} bytes, "
        f"revision {bundle.revision}, entrypoints {', '.join(bundle.entrypoints)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
