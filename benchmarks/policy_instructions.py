"""Instructions per decision of OPA's own evaluator, counted under valgrind's callgrind.

``opa bench`` reports nanoseconds per decision, which on a shared 2-core machine move by
a tenth or more between runs; the instructions a decision executes do not. This module
builds the small Go program in ``benchmarks/opa_instructions/`` (OPA's ``rego`` package,
the version the tests run, evaluating one query N times in process) and runs it under
callgrind twice, with N = 0 and N = ``EVALUATIONS``, with garbage collection off and one
OS thread: the difference divided by N is what one decision costs, loading and compiling
the policy left out.

    figures = policy_instructions(Path("policies"), Path("input.json"))
    figures.instructions, figures.allocations  # per decision

Needs ``go`` and ``valgrind``; :func:`unavailable` says which is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "opa_instructions"
EVALUATIONS = 1000


@dataclass(frozen=True)
class PolicyInstructions:
    instructions: int  # per decision
    allocations: int  # per decision (Go's heap allocations)
    result: str  # the decision, as JSON


def unavailable() -> str | None:
    """Why the figures cannot be taken here, or ``None``."""
    missing = [tool for tool in ("go", "valgrind") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


_BUILT: dict[str, Path] = {}


def _binary() -> Path:
    if "bin" not in _BUILT:
        target = Path(tempfile.mkdtemp(prefix="opa-instructions-")) / "opa_instructions"
        subprocess.run(
            ["go", "build", "-o", str(target), "."],
            cwd=SOURCE,
            env={**os.environ, "CGO_ENABLED": "0"},
            check=True,
            capture_output=True,
        )
        _BUILT["bin"] = target
    return _BUILT["bin"]


def _count(policy_dir: Path, input_file: Path, n: int) -> tuple[int, str]:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            str(_binary()),
            str(policy_dir),
            str(input_file),
            str(n),
        ],
        env={**os.environ, "GOGC": "off", "GOMAXPROCS": "1", "GODEBUG": "asyncpreemptoff=1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    collected = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if collected is None:
        raise RuntimeError(f"no instruction count from callgrind: {out.stderr[-500:]}")
    return int(collected.group(1)), out.stderr + "\n" + out.stdout


def policy_instructions(policy_dir: Path, input_file: Path) -> PolicyInstructions:
    """Instructions and allocations per decision of ``data.agent.authz.decision``."""
    empty, _ = _count(policy_dir, input_file, 0)
    full, text = _count(policy_dir, input_file, EVALUATIONS)
    allocations = re.search(r"allocs/op (\d+)", text)
    result = text.strip().splitlines()[-1]
    return PolicyInstructions(
        instructions=(full - empty) // EVALUATIONS,
        allocations=int(allocations.group(1)) if allocations else -1,
        result=result,
    )
