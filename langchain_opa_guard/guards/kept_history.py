"""The history entries ``OPAGuardMiddleware`` keeps beside the messages: merged with the
messages' own in the order the calls happened, and bounded.

Each kept entry carries where it came from (``origin``: the model message's id and the
call's position in it), which the middleware makes unique (it gives a reused message id a
fresh one). :func:`merged_history` lays the calls still in the messages over the kept ones
by that origin, never by the call's id, which the model chooses and may reuse: an entry
from the messages that stands for a kept one takes the kept one's place, and one the
middleware never kept goes where the messages put it, after the kept entry of the call
before it. So summarizing turns away, or a model that reuses an old call id for a new
call, never moves a call before or after another one.

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
    now = merged_history(kept, message_history(messages, metadata_of))
    kept = bounded_history([*now, *message_history([turn], metadata_of)], known=metadata_of)
    documents = policy_history(now)  # input.history
    ```
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from langchain_opa_guard.contract import history_documents
from langchain_opa_guard.plain_json import jsonable

__all__ = [
    "KEPT_LIMIT",
    "ORIGIN_KEY",
    "bounded_history",
    "entry_kind",
    "kept_message_ids",
    "merged_history",
    "message_history",
    "policy_history",
]

KEPT_LIMIT = 1000
"""The newest this many history entries are kept as they are; older ones by kind."""

ORIGIN_KEY = "origin"
"""The key of a kept entry's origin, ``[message id, position of the call in it]``; not
part of ``input.history``."""


def message_history(
    messages: Sequence[BaseMessage], metadata_of: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The history entries of ``messages`` (as ``input.history`` has them), each with its
    origin: the id of the model message that proposed it and the call's position there
    (``None`` when the message has no id)."""
    origins: list[list[Any] | None] = []
    for message in messages:
        if not isinstance(message, AIMessage) or not message.tool_calls:
            continue
        named = isinstance(message.id, str) and bool(message.id)
        origins += [[message.id, i] if named else None for i in range(len(message.tool_calls))]
    entries = history_documents(messages, metadata_of)
    return [{**e, ORIGIN_KEY: o} for e, o in zip(entries, origins, strict=True)]


def merged_history(
    kept: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    keep_unnamed: bool = True,
) -> list[dict[str, Any]]:
    """The kept entries with the messages' entries (``current``, from
    :func:`message_history`) laid over them, in the order the calls happened.

    An entry of ``current`` stands for the kept entry of the same origin (a kept entry
    without one, from an older version, for the one with the same call id, tool and
    arguments): it takes that entry's place, with the outcome the messages now show. The
    messages are matched from the newest back, each to the latest kept entry before the
    one matched after it, so the order of the messages is never contradicted. An entry
    kept nowhere goes after the entry matched before it in the messages (before the one
    matched after it when none is; last when nothing matched). With ``keep_unnamed=False``
    unmatched entries without an origin are left out (they could never be matched again).
    """
    slots: dict[str, list[int]] = {}
    for index, entry in enumerate(kept):
        slots.setdefault(_match_key(entry), []).append(index)
    matched: list[int | None] = [None] * len(current)
    bound = len(kept)
    for position in range(len(current) - 1, -1, -1):
        entry = current[position]
        candidates = [*slots.get(_match_key(entry), ()), *slots.get(_content_key(entry), ())]
        below = [i for i in candidates if i < bound]
        if below:
            matched[position] = bound = max(below)
    over: dict[int, dict[str, Any]] = {}
    before: dict[int, list[dict[str, Any]]] = {}
    after: dict[int, list[dict[str, Any]]] = {}
    head: list[dict[str, Any]] = []
    previous: int | None = None
    for entry, slot in zip(current, matched, strict=True):
        if slot is not None:
            over[slot] = dict(entry)
            if not entry.get("metadata") and kept[slot].get("metadata"):
                # Read from the messages by a guard that does not know the tool (yet): the
                # metadata kept when it was known stays.
                over[slot]["metadata"] = kept[slot]["metadata"]
            if head:
                before[slot], head = head, []
            previous = slot
        elif entry.get(ORIGIN_KEY) is None and not keep_unnamed:
            continue
        elif previous is not None:
            after.setdefault(previous, []).append(dict(entry))
        else:
            head.append(dict(entry))
    merged: list[dict[str, Any]] = []
    for index, entry in enumerate(kept):
        merged += before.get(index, ())
        merged.append(over.get(index, dict(entry)))
        merged += after.get(index, ())
    return merged + head


def policy_history(
    entries: Sequence[Mapping[str, Any]],
    metadata_of: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``entries`` as ``input.history`` has them: without their origin, and with the
    metadata the guard knows now for each tool in ``metadata_of`` (an entry kept before the
    guard knew its tool, after a restart say, must not read as a call of a tool without
    metadata: an untrusted read would look trusted)."""
    known: dict[str, Any] = {}  # each tool's metadata as JSON, once per call
    found: list[dict[str, Any]] = []
    for entry in entries:
        plain = {k: v for k, v in entry.items() if k != ORIGIN_KEY}
        name = plain.get("name")
        if metadata_of and isinstance(name, str) and name in metadata_of:
            if name not in known:
                known[name] = jsonable(metadata_of[name] or {})
            plain["metadata"] = known[name]
        found.append(plain)
    return found


def kept_message_ids(kept: Sequence[Mapping[str, Any]]) -> set[str]:
    """The ids of the model messages the kept entries came from."""
    ids: set[str] = set()
    for entry in kept:
        origin = entry.get(ORIGIN_KEY)
        if isinstance(origin, list | tuple) and origin and isinstance(origin[0], str):
            ids.add(origin[0])
    return ids


def _match_key(entry: Mapping[str, Any]) -> str:
    """What an entry is matched by: its origin, else (an entry kept by an older version,
    or from a message without an id) its call id, tool and arguments."""
    origin = entry.get(ORIGIN_KEY)
    if origin is None:
        return _content_key(entry)
    return json.dumps(["origin", origin], default=str)


def _content_key(entry: Mapping[str, Any]) -> str:
    return json.dumps(
        ["call", entry.get("call_id"), entry.get("name"), entry.get("args")],
        sort_keys=True,
        default=str,
    )


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
