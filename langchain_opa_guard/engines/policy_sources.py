"""Reading Rego modules and data from a directory or an OPA bundle, laid out the way OPA does.

A data file's place in ``data`` follows its folder, as in ``opa run``: ``data.json`` at the top
merges into ``data`` itself, ``agent/data.json`` into ``data.agent``. Test modules
(``*_test.rego``) are left out: they decide nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["PolicyNotFoundError", "PolicySources", "defines", "load_sources"]

_DATA_NAMES = {"data.json", "data.yaml", "data.yml"}

_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.MULTILINE)
_RULE_HEAD = re.compile(r"^(?:default\s+)?([A-Za-z_][\w]*)\b", re.MULTILINE)


class PolicyNotFoundError(ValueError):
    """The configured decision path is defined by no loaded policy or data.

    Raised at start-up, so that a missing or misnamed policy is an error instead of a
    silent deny-all.
    """


def defines(modules: Iterable[str], data: Mapping[str, Any], path: str) -> bool:
    """Whether some Rego module (or data document) defines ``path`` (``agent/authz/decision``)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts:
        return False
    for source in modules:
        match = _PACKAGE.search(source)
        if match is None:
            continue
        package = match.group(1).split(".")
        if package[: len(parts)] == parts:
            return True  # the path is the package itself (or a parent of it)
        if parts[: len(package)] == package and len(parts) > len(package):
            rule = parts[len(package)]
            body = source[match.end() :]
            if any(m.group(1) == rule for m in _RULE_HEAD.finditer(body)):
                return True
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


@dataclass
class PolicySources:
    """Rego modules (file name -> source) and the merged data document."""

    modules: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    revision: str = ""

    def digest(self) -> str:
        """A content hash of the modules and data, stable across machines."""
        h = hashlib.sha256()
        for name in sorted(self.modules):
            h.update(name.encode() + b"\0" + self.modules[name].encode() + b"\0")
        h.update(json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode())
        return h.hexdigest()


def load_sources(path: str | Path) -> PolicySources:
    """Load a policy directory, a single ``.rego`` file, or an OPA bundle ``.tar.gz``.

    Raises:
        FileNotFoundError: Nothing is at ``path``.
        ValueError: A data file cannot be read, or two data files collide.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no policy at {str(root)!r}")
    sources = PolicySources()
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        _load_bundle(root, sources)
    elif root.is_file():
        sources.modules[root.name] = root.read_text(encoding="utf-8")
    else:
        for file in sorted(root.rglob("*")):
            if not file.is_file() or any(p.startswith(".") for p in file.relative_to(root).parts):
                continue
            rel = PurePosixPath(file.relative_to(root).as_posix())
            _add_file(sources, rel, file.read_bytes())
    return sources


def _load_bundle(path: Path, sources: PolicySources) -> None:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            name = member.name
            while name.startswith(("./", "/")):
                name = name[2:] if name.startswith("./") else name[1:]
            rel = PurePosixPath(name)
            handle = tar.extractfile(member)
            if handle is None:
                continue
            content = handle.read()
            if rel.name == ".manifest":
                manifest = json.loads(content or b"{}")
                sources.revision = str(manifest.get("revision", ""))
                continue
            _add_file(sources, rel, content)


def _add_file(sources: PolicySources, rel: PurePosixPath, content: bytes) -> None:
    if rel.suffix == ".rego":
        if not rel.name.endswith("_test.rego"):
            sources.modules[str(rel)] = content.decode("utf-8")
    elif rel.name in _DATA_NAMES:
        document = _parse_data(rel, content)
        if not isinstance(document, dict):
            raise ValueError(f"{rel}: a data file must hold an object")
        target = sources.data
        for part in rel.parent.parts:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(
                    f"{rel}: data collides with a value at {'/'.join(rel.parent.parts)}"
                )
        _merge(target, document, str(rel))


def _parse_data(rel: PurePosixPath, content: bytes) -> Any:
    if rel.suffix == ".json":
        return json.loads(content or b"{}")
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is a dependency
        raise ValueError(f"{rel}: reading YAML data needs PyYAML") from exc
    return yaml.safe_load(io.BytesIO(content)) or {}


def _merge(target: dict[str, Any], document: dict[str, Any], origin: str) -> None:
    for key, value in document.items():
        if key in target and isinstance(target[key], dict) and isinstance(value, dict):
            _merge(target[key], value, origin)
        elif key in target:
            raise ValueError(f"{origin}: data key {key!r} is defined twice")
        else:
            target[key] = value
