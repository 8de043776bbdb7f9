"""The package's layout: imports flow one way, private names stay in their module, and a long
module says why it is long.

Layers, from the bottom up (a module may import from its own layer and the layers below):

- ``contract``, ``decision``, ``fast_json``, ``plain_json``, ``version``: what every part sees;
- ``engines/``: the policy engines;
- ``tracing/`` and ``ops/``: spans, metrics, the decision log and replay, called by what decides
  (neither imports the other);
- ``deciding``: the decision path;
- ``guards/``: the places a guard sits;
- the package itself (``__init__``, ``__main__``), ``demo/`` and ``testing``: anything.

The checks read the source with :mod:`ast`, so imports inside functions and under
``TYPE_CHECKING`` count as well.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import langchain_opa_guard

PACKAGE = "langchain_opa_guard"
ROOT = Path(langchain_opa_guard.__file__).resolve().parent
MAX_LINES = 400
LONG_MODULE_NOTE = "Why one module:"

BELOW: dict[str, frozenset[str]] = {
    "base": frozenset({"base"}),
    "engines": frozenset({"base", "engines"}),
    "tracing": frozenset({"base", "engines", "tracing"}),
    "ops": frozenset({"base", "engines", "ops"}),
    "deciding": frozenset({"base", "engines", "tracing", "ops", "deciding"}),
    "guards": frozenset({"base", "engines", "tracing", "ops", "deciding", "guards"}),
    "top": frozenset({"base", "engines", "tracing", "ops", "deciding", "guards", "top"}),
}
"""What each layer may import from the package."""

# Outside engines/, a module reads no private attribute of another module's objects. The
# engines reach into wasmtime's and regopy's internals on purpose (pinned by their tests).
PRIVATE_ATTRIBUTES_ALLOWED = frozenset({"engines"})


def layer_of(module: str) -> str:
    """The layer of a module named relative to the package (``""`` is the package itself)."""
    first = module.split(".")[0]
    if first in ("contract", "decision", "fast_json", "plain_json", "version"):
        return "base"
    if first in ("engines", "tracing", "ops", "deciding", "guards"):
        return first
    return "top"  # the package's __init__ and __main__, demo/, testing


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def imports_of(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str, str]]:
    """``(line, imported module, imported name or "")`` for each import of the package,
    modules named relative to the package (``""`` for the package itself)."""
    here = module.split(".") if module else []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield node.lineno, alias.name[len(PACKAGE) + 1 :], ""
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                target = (node.module or "")[len(PACKAGE) + 1 :]
            else:
                continue
            for alias in node.names:
                yield node.lineno, target, alias.name


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def import_problems(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports against the layers, and imports of private names from other modules."""
    problems: list[str] = []
    layer = layer_of(module)
    for line, target, name in imports_of(ast.parse(source), module, is_package):
        full = f"{target}.{name}" if target and name else (target or name)
        if any(is_private(part) for part in target.split(".") if part):
            problems.append(f"{module}:{line} imports the private module {target}")
        if name and is_private(name) and target != module:
            problems.append(f"{module}:{line} imports the private name {name} from {target}")
        # ``from package import x`` names a submodule or something the package exports.
        imported = target if target else full
        imported_layer = layer_of(imported) if imported else "top"
        if imported_layer not in BELOW[layer]:
            problems.append(
                f"{module}:{line} ({layer}) imports {imported or PACKAGE} ({imported_layer})"
            )
    return problems


def defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def private_attribute_problems(source: str, module: str) -> list[str]:
    """Reads of ``x._name`` (``x`` not ``self`` or ``cls``) where ``_name`` is not this
    module's own: a private method or attribute called across modules."""
    tree = ast.parse(source)
    own = defined_names(tree)
    problems = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and is_private(node.attr)):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if node.attr not in own:
            problems.append(f"{module}:{node.lineno} reads {ast.unparse(node)}")
    return problems


# -- the package ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: module_name(p) or PACKAGE)
def test_imports_flow_one_way_and_keep_private_names_private(path: Path) -> None:
    module = module_name(path)
    problems = import_problems(path.read_text(), module, path.name == "__init__.py")
    assert problems == []


@pytest.mark.parametrize(
    "path",
    [p for p in package_modules() if layer_of(module_name(p)) not in PRIVATE_ATTRIBUTES_ALLOWED],
    ids=lambda p: module_name(p) or PACKAGE,
)
def test_no_private_attributes_across_modules(path: Path) -> None:
    module = module_name(path)
    assert private_attribute_problems(path.read_text(), module) == []


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: module_name(p) or PACKAGE)
def test_a_long_module_says_why(path: Path) -> None:
    source = path.read_text()
    lines = source.count("\n")
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert LONG_MODULE_NOTE in docstring, (
        f"{module_name(path)} has {lines} lines: split it, or say in its docstring "
        f"({LONG_MODULE_NOTE!r}) why it is one module"
    )


def test_every_folder_is_a_documented_package() -> None:
    for folder in sorted(p for p in ROOT.rglob("*") if p.is_dir() and any(p.glob("*.py"))):
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder} holds modules but no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


# -- the checks themselves fail where they should -------------------------------------------


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("tracing.spans", "from langchain_opa_guard.guards.turns import TurnDecider"),
        ("engines.embedded", "from langchain_opa_guard.deciding import decide_call"),
        ("deciding", "import langchain_opa_guard.guards.guard_node"),
        ("ops.replay", "from langchain_opa_guard.tracing import attributes"),
        ("tracing.telemetry", "from langchain_opa_guard.ops.decision_log import DecisionLog"),
        ("contract", "from langchain_opa_guard.engines.engine import PolicyEngine"),
        ("guards.turns", "from langchain_opa_guard import PolicyGuardNode"),
        ("tracing.setup", "def f():\n    from langchain_opa_guard.guards import mcp\n"),
        ("guards.turns", "from .. import deciding\nfrom ..demo import build_agent"),
    ],
)
def test_an_import_against_the_layers_is_found(module: str, source: str) -> None:
    assert import_problems(source, module) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("guards.middleware", "from langchain_opa_guard.guards.guard_node import _Turn"),
        ("guards.middleware", "from langchain_opa_guard.guards._helpers import thing"),
        ("demo", "from langchain_opa_guard.deciding import _pool"),
    ],
)
def test_an_import_of_a_private_name_is_found(module: str, source: str) -> None:
    assert import_problems(source, module) != []


def test_allowed_imports_pass() -> None:
    source = (
        "from langchain_opa_guard.deciding import decide_call\n"
        "from langchain_opa_guard.tracing import attributes as A\n"
        "from langchain_opa_guard.engines.engine import PolicyEngine\n"
        "from langchain_opa_guard.contract import jsonable\n"
        "from . import approval\n"
    )
    assert import_problems(source, "guards.turns") == []


def test_a_private_method_called_across_modules_is_found() -> None:
    source = "class M:\n    def run(self):\n        return self.node._plan(1)\n"
    assert private_attribute_problems(source, "guards.middleware") != []
    own = (
        "class M:\n    def _plan(self): ...\n"
        "    def run(self, other):\n        return other._plan()\n"
    )
    assert private_attribute_problems(own, "guards.middleware") == []
