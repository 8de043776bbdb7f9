"""Shared pieces of the benchmarks: interleaved timing, medians, ratios, servers, graphs.

Every comparison runs its sides in one process, interleaved round by round, so that the
machine's noise lands on both sides alike; figures are medians over rounds.
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from opa_process import OPAProcess  # noqa: E402

POLICIES = ROOT / "policies"
SERVER_POLICIES = ROOT / "server-policies"


def interleaved(
    sides: dict[str, Callable[[], Any]], *, rounds: int = 30, inner: int = 20, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each side, measured in alternating rounds."""
    for _ in range(warmup):
        for fn in sides.values():
            for _ in range(inner):
                fn()
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            for name in order:
                fn = sides[name]
                start = time.perf_counter()
                for _ in range(inner):
                    fn()
                samples[name].append((time.perf_counter() - start) / inner)
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


class Table:
    """A markdown table that is also printed as it fills."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[str]] = []
        print(f"\n## {title}\n")
        print(" | ".join(self.columns))

    def add(self, *cells: Any) -> None:
        row = [str(c) for c in cells]
        self.rows.append(row)
        print(" | ".join(row), flush=True)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def start_opa(*extra: str) -> OPAProcess:
    return OPAProcess([POLICIES, SERVER_POLICIES], extra_args=list(extra)).start()
