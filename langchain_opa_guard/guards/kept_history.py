"""The history entries ``OPAGuardMiddleware`` keeps beside the messages, within a bound.

Every call the model proposes adds an entry, so a plain window of the newest entries is one
the model can flood: a page that asks for a thousand harmless searches would push its own
read out of the window, and the conversation would look as if it never read untrusted
content. :func:`bounded_history` keeps the newest :data:`KEPT_LIMIT` entries as they are;
of the older ones it keeps, for each kind of entry (the tool, its metadata and the call's
outcome), the first and the last. Every fact a policy can draw from the order of kinds
stays true ("an untrusted read", "a personal-data read", "a refusal after an untrusted
read": for any kinds A and B, some entry of A comes before some entry of B exactly when the
first of A comes before the last of B), while memory stays bounded by the number of the
agent's tools. Only counts of older entries are lost. A tool name the agent does not have
(the model can invent any) counts as one kind per metadata and outcome, so invented names
cannot grow the list either.

Example:
    ```python
    kept = bounded_history([*kept, *this_turn], known={"fetch_url", "send_email"})
    ```
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping, Sequence
from typing import Any

__all__ = ["KEPT_LIMIT", "bounded_history", "entry_kind"]

KEPT_LIMIT = 1000
"""The newest this many history entries are kept as they are; older ones by kind."""


def entry_kind(entry: Mapping[str, Any], known: Container[str]) -> str:
    """What an entry is, as far as a policy reading the history can tell: the tool (when the
    agent has it), its metadata, and the call's outcome (``decision`` and ``status``)."""
    name = entry.get("name")
    return json.dumps(
        [
            name if isinstance(name, str) and name in known else None,
            entry.get("metadata"),
            entry.get("decision"),
            entry.get("status"),
        ],
        sort_keys=True,
        default=str,
    )


def bounded_history(
    entries: Sequence[dict[str, Any]],
    known: Container[str],
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """``entries`` (oldest first) with the newest ``limit`` (:data:`KEPT_LIMIT`) kept, and
    of the older ones the first and the last of each kind (:func:`entry_kind`), in order."""
    if limit is None:
        limit = KEPT_LIMIT
    if len(entries) <= limit:
        return list(entries)
    split = len(entries) - limit
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index in range(split):
        kind = entry_kind(entries[index], known)
        first.setdefault(kind, index)
        last[kind] = index
    keep = set(first.values()) | set(last.values())
    return [entries[i] for i in sorted(keep)] + list(entries[split:])
