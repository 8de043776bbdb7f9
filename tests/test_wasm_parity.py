"""The wasm engine against a real OPA server on odd input: Unicode, control characters,
regexes, sprintf, numbers and sets. 100% agreement is required; the regopy fallback's
agreement is measured and reported separately, with its known gaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_POLICIES
from corpus import corpus_inputs

from langchain_opa_guard import EmbeddedPolicy, EngineError, OPAServer

PATH = "corpus/results"


@pytest.fixture(scope="module")
def wasm_engine() -> Any:
    with EmbeddedPolicy(
        TEST_POLICIES, policy="shapes/object_decision", entrypoints=[PATH], backend="wasm"
    ) as engine:
        yield engine


def test_the_corpus_exercises_every_builtin(wasm_engine: EmbeddedPolicy, opa_url: str) -> None:
    server = OPAServer(opa_url, policy="shapes/object_decision")
    keys: set[str] = set()
    for document in corpus_inputs(60):
        keys |= set(server.query(PATH, document) or {})
    assert len(keys) >= 35, sorted(keys)  # almost every call is defined somewhere


def test_wasm_agrees_with_opa_on_every_input(wasm_engine: EmbeddedPolicy, opa_url: str) -> None:
    server = OPAServer(opa_url, policy="shapes/object_decision")
    mismatches = []
    inputs = corpus_inputs()
    for document in inputs:
        ours, theirs = wasm_engine.query(PATH, document), server.query(PATH, document)
        for key in sorted(set(ours or {}) | set(theirs or {})):
            a, b = (ours or {}).get(key), (theirs or {}).get(key)
            if not _same(a, b):
                mismatches.append((key, document["s"], a, b))
    assert not mismatches, (sorted({m[0] for m in mismatches}), mismatches[:20])
    assert len(inputs) == 300


def _same(a: Any, b: Any) -> bool:
    """Equal JSON values; a number equals the same number written otherwise (``1e21``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def one_package_per_key(source: str) -> dict[str, str]:
    """The corpus with each ``results`` key in a module of its own (package
    ``corpus_one.k_<key>``: a bare key such as ``abs`` reads as a builtin to regopy; rule
    ``result``; the corpus's helper rules beside it). regopy evaluates a whole partial
    object for any of its keys, so one key it cannot compute would fail every key."""
    keyed: dict[str, str] = {}
    helpers: list[str] = []
    for statement in source.split("\n\n"):
        code = "\n".join(
            line for line in statement.splitlines() if not line.lstrip().startswith("#")
        ).strip()
        if code.startswith('results["'):
            key = code[len('results["') : code.index('"]')]
            keyed[key] = "result " + code[code.index(":=") :]
        elif code and not code.startswith("package "):
            helpers.append(code)
    return {
        key: "\n\n".join([f"package corpus_one.k_{key}", *helpers, rule]) + "\n"
        for key, rule in keyed.items()
    }


def test_regopy_fallback_parity_is_reported(opa_url: str, capsys: Any, tmp_path: Path) -> None:
    """The fallback is not exact: its agreement is measured, and its known gaps show."""
    split = tmp_path / "corpus_one"
    split.mkdir()
    source = (TEST_POLICIES / "corpus.rego").read_text()
    for key, module in one_package_per_key(source).items():
        (split / f"{key}.rego").write_text(module)
    server = OPAServer(opa_url, policy="shapes/object_decision")
    engine = EmbeddedPolicy(split, policy="corpus_one", backend="regopy")
    agree = total = failed = 0
    gaps: set[str] = set()
    for document in corpus_inputs(60):
        theirs = server.query(PATH, document) or {}
        for key in theirs:  # one package per builtin: an error fails only its own result
            total += 1
            try:
                ours = engine.query(f"corpus_one/k_{key}/result", document)
            except EngineError:
                failed += 1
                gaps.add(key)
                continue
            if _same(ours, theirs[key]):
                agree += 1
            else:
                gaps.add(key)
    with capsys.disabled():
        print(
            f"\nregopy fallback on the string/number/set corpus: {agree}/{total} results agree "
            f"with OPA ({agree / total:.1%}; {failed} failed to evaluate); differs on: "
            f"{', '.join(sorted(gaps))}"
        )
    assert total > 1000
    # Most builtins agree on most input: a collapse (the corpus no longer evaluating on
    # regopy at all) must not pass as a measurement.
    assert agree / total > 0.5, f"only {agree}/{total} agree"
    # The documented differences: string builtins see JSON escapes.
    assert {"count", "upper"} <= gaps
