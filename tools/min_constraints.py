"""Print pip constraints that pin every declared dependency to its lowest allowed version.

``make test-min`` installs the package with these constraints and runs the test suite, so
the floors in ``pyproject.toml`` are the versions the suite really passed on. Each floor
must be a version that exists: pip refuses a pin to one that does not.

Usage:
    python tools/min_constraints.py [pyproject.toml] [extra ...]  > constraints.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("tools/min_constraints.py needs Python 3.11 or later (tomllib)")

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def floor(requirement: str) -> str:
    """``"requests>=2.32.2,<3"`` -> ``"requests==2.32.2"``."""
    match = _REQUIREMENT.match(requirement.split(";", 1)[0])
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    name, _extras, specifiers = match.groups()
    lows = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
    if len(lows) != 1:
        raise ValueError(f"{requirement!r} must have exactly one '>=' floor")
    return f"{name}=={lows[0]}"


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(path.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in argv[1:]:
        requirements += project["optional-dependencies"][extra]
    for requirement in requirements:
        print(floor(requirement))


if __name__ == "__main__":
    main(sys.argv[1:])
