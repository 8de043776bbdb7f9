"""Long arguments through the information-flow pack: the embedded engine against OPA.

After untrusted content, every egress argument is searched for links
(``regex.find_n(link_pattern, ...)``, a host builtin of the embedded engine). This prints
the time of one decision on bodies of 10k to 1M characters (one word without spaces, the
worst case for a search that tries every start position in turn), for ``EmbeddedPolicy``
(wasm) and for an OPA server, and their ratio; and the time of the search alone.

Run: ``.venv/bin/python benchmarks/bench_regex_long.py`` (needs ``$OPA_BIN``, as the tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_opa_guard import EmbeddedPolicy, OPAServer
from langchain_opa_guard.engines.wasm.go_regexp import compile_go

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from opa_process import OPAProcess
from test_redteam6_wasm_host_deadline import flow_input

POLICIES = Path(__file__).resolve().parents[1] / "policies"
SIZES = [10_000, 50_000, 200_000, 1_000_000]
LINK = (
    r"""(?:[hH][tT][tT][pP][sS]?:[/\\]*|[wW][wW][wW]\.|[A-Za-z][A-Za-z0-9+.-]*:[/\\]{2}"""
    r"""|(?:^|[\s("'<=\[:;])[/\\]{2})(?:[^\s/\\?#@]*@)*[A-Za-z0-9.%:-]*"""
)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def main() -> None:
    pattern = compile_go(LINK)
    print(f"{'chars':>9} {'find_n':>9} {'embedded':>9} {'OPA':>9} {'ratio':>6}  verdicts")
    with OPAProcess([POLICIES]) as opa, EmbeddedPolicy(POLICIES, timeout=60) as engine:
        server = OPAServer(opa.url, timeout=60)
        for size in SIZES:
            for body in ("x" * size, ("a.b-c+d" * size)[:size]):
                document = flow_input(body)
                search, _ = timed(pattern.find_all, body, -1)
                ours, mine = timed(engine.decide, document)
                theirs, other = timed(server.decide, document)
                print(
                    f"{size:>9} {search:>8.3f}s {ours:>8.3f}s {theirs:>8.3f}s "
                    f"{ours / theirs:>6.2f}  {mine.verdict}/{other.verdict}  {body[:7]!r}"
                )
        server.close()


if __name__ == "__main__":
    main()
