"""MCP tools under the guard: their server, annotations and a digest of each definition.

Tools loaded with ``langchain-mcp-adapters`` already carry their MCP annotations in
``tool.metadata`` (``title``, ``readOnlyHint``, ``destructiveHint``, ``idempotentHint``,
``openWorldHint``). :func:`mcp_tools` loads the tools of every server of a
``MultiServerMCPClient`` and adds what the policy needs beside them, under the ``"mcp"`` key::

    {"readOnlyHint": true, "openWorldHint": false, "title": "Read a ticket",
     "mcp": {"server": "tickets", "tool": "get_ticket", "digest": "sha256:9f2c..."}}

``server`` is the name the client's connections give the server, ``tool`` the tool's MCP name
(the LangChain name may carry the client's server prefix), and ``digest`` the SHA-256 of the
tool's definition (see :func:`definition_digest`). Annotations left unset are left out.

The stamped metadata is the tools' own ``metadata``, so every surface of the guard (the guard
node, ``ToolCallGuard``, ``OPAGuardMiddleware``, ``guard_tools``, ``visible_tools``) puts it
in ``input.tool.metadata`` with no further setup. :func:`mcp_pins` gives the digests to pin
(``data.agent.config.mcp.pins``), so the shipped policy denies a tool whose definition changed
after review.

Example:
    ```python
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_opa_guard import EmbeddedPolicy, ToolCallGuard, mcp_pins, mcp_tools

    client = MultiServerMCPClient({
        "tickets": {"command": "python", "args": ["tickets_server.py"], "transport": "stdio"},
        "web": {"url": "http://127.0.0.1:8765/mcp", "transport": "streamable_http"},
    })
    tools = await mcp_tools(client)
    guard = ToolCallGuard(EmbeddedPolicy("policies"), registry=tools)
    reviewed = mcp_pins(tools)  # {"tickets": {"get_ticket": "sha256:..."}, ...}
    ```
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel

from langchain_opa_guard.contract import MCP_METADATA_KEY
from langchain_opa_guard.plain_json import DIGEST_DEPTH, NestingTooDeep, canonical_json

__all__ = [
    "ANNOTATION_KEYS",
    "MCP_METADATA_KEY",
    "definition_digest",
    "mcp_pins",
    "mcp_tools",
    "with_mcp_metadata",
]

logger = logging.getLogger(__name__)

ANNOTATION_KEYS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
"""The annotations MCP defines for a tool, as MCP names them."""


class _MCPClient(Protocol):
    """What :func:`mcp_tools` uses of ``langchain_mcp_adapters.client.MultiServerMCPClient``."""

    connections: Mapping[str, Any]

    async def get_tools(self, *, server_name: str | None = None) -> list[BaseTool]: ...

    def session(self, server_name: str) -> Any: ...


def definition_digest(
    name: str,
    description: str | None,
    input_schema: Mapping[str, Any] | None,
    annotations: Mapping[str, Any] | None = None,
) -> str:
    """The digest of an MCP tool definition: ``"sha256:<hex>"``.

    It covers the tool's MCP ``name``, ``description`` (``None`` counts as ``""``),
    ``inputSchema`` and ``annotations`` (unset ones left out): the SHA-256 of the UTF-8 JSON
    ``{"annotations": ..., "description": ..., "inputSchema": ..., "name": ...}`` with sorted
    keys and no whitespace, so it can be recomputed from a server's ``tools/list`` answer.
    The annotations are in it because the shipped policy decides on them: a server that
    turns ``destructiveHint`` off after review changes the digest. The digest covers the
    whole definition, however deep a change is.

    Raises:
        NestingTooDeep: (a ``ValueError``) the definition nests more than
            :data:`~langchain_opa_guard.plain_json.DIGEST_DEPTH` levels deep; such a tool is
            stamped without a digest (:func:`with_mcp_metadata`), so no pin matches it.

    Example:
        ```python
        schema = {"type": "object", "properties": {"ticket_id": {"type": "string"}}}
        definition_digest("get_ticket", "Read a ticket.", schema, {"readOnlyHint": True})
        # 'sha256:...'
        ```
    """
    document = {
        "name": name,
        "description": description or "",
        "inputSchema": dict(input_schema or {}),
        "annotations": {k: v for k, v in (annotations or {}).items() if v is not None},
    }
    try:
        text = canonical_json(document)
    except (NestingTooDeep, RecursionError):
        raise NestingTooDeep(
            f"the definition of MCP tool {name!r} nests more than {DIGEST_DEPTH} levels deep, "
            "too deep to digest whole"
        ) from None
    return "sha256:" + hashlib.sha256(text).hexdigest()


def with_mcp_metadata(
    tools: Sequence[BaseTool], server: str, *, name_prefix: bool = False
) -> list[BaseTool]:
    """Copies of one server's MCP tools whose metadata names the server and the digest.

    For tools loaded from one session or connection, e.g. with
    ``langchain_mcp_adapters.tools.load_mcp_tools(session, server_name="tickets")``.

    Args:
        tools: The server's tools, as ``langchain-mcp-adapters`` converted them.
        server: The name the policy knows the server by (``data.agent.config.mcp.servers``).
        name_prefix: The tool names carry ``"<server>_"`` (the client's ``tool_name_prefix``);
            the MCP name without it goes into ``metadata["mcp"]["tool"]``.

    Raises:
        ValueError: ``server`` is empty, or a prefixed name lacks the prefix.
        TypeError: ``tools`` holds something that is not a LangChain tool.

    Example:
        ```python
        async with client.session("tickets") as session:
            tools = with_mcp_metadata(await load_mcp_tools(session), "tickets")
            guard = ToolCallGuard(engine, registry=tools)
        ```
    """
    if not isinstance(server, str) or not server:
        raise ValueError("server must be a non-empty string (the MCP server's name)")
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
        raise TypeError("tools must be a sequence of LangChain tools")
    stamped: list[BaseTool] = []
    for tool in tools:
        if not isinstance(tool, BaseTool):
            raise TypeError(f"tools must hold LangChain tools, not {type(tool).__name__}")
        stamped.append(_stamp(tool, server, name_prefix))
    return stamped


async def mcp_tools(
    client: _MCPClient, *, servers: Collection[str] | None = None, recheck: bool = False
) -> list[BaseTool]:
    """Load the tools of a ``MultiServerMCPClient``, each stamped with its server and digest.

    Each server's tools are loaded with ``client.get_tools(server_name=...)`` (concurrently),
    so the server name is the one in the client's ``connections``.

    The digest is the definition as loaded, and the policy decides on it: a server that
    changes a tool's definition afterwards is not seen by the pins. With ``recheck=True``
    each call first reads the tool's current definition from the server (a session and a
    ``tools/list``: for a stdio server, one more process per call) and is refused, never
    sent, when it differs from the loaded one, when the server no longer offers the tool,
    or when the definition cannot be read.

    Args:
        client: A ``langchain_mcp_adapters.client.MultiServerMCPClient``.
        servers: Load only these servers (default: every connection).
        recheck: Before each call, compare the server's current definition of the tool
            with the loaded one (see above).

    Raises:
        TypeError: ``client`` has no ``connections`` or ``get_tools``.
        ValueError: ``servers`` names a server the client has no connection for, or two
            servers offer tools of the same name (the guard and the ``ToolNode`` find tools
            by name; use ``MultiServerMCPClient(..., tool_name_prefix=True)``).

    Example:
        ```python
        tools = await mcp_tools(MultiServerMCPClient(connections))
        agent = create_agent(model, tools, middleware=[OPAGuardMiddleware(engine, registry=tools)])
        ```
    """
    connections = getattr(client, "connections", None)
    if not isinstance(connections, Mapping) or not callable(getattr(client, "get_tools", None)):
        raise TypeError("client must be a MultiServerMCPClient (connections and get_tools)")
    names = list(connections) if servers is None else list(servers)
    unknown = [n for n in names if n not in connections]
    if unknown:
        raise ValueError(f"servers names servers the client has no connection for: {unknown}")
    prefix = bool(getattr(client, "tool_name_prefix", False))
    loaded = await asyncio.gather(*(client.get_tools(server_name=n) for n in names))
    tools: list[BaseTool] = []
    owner: dict[str, str] = {}
    for name, server_tools in zip(names, loaded, strict=True):
        for tool in with_mcp_metadata(server_tools, name, name_prefix=prefix):
            if tool.name in owner:
                raise ValueError(
                    f"servers {owner[tool.name]!r} and {name!r} both offer a tool named "
                    f"{tool.name!r}; load them with MultiServerMCPClient(tool_name_prefix=True)"
                )
            owner[tool.name] = name
            tools.append(_rechecked(tool, client, name) if recheck else tool)
    return tools


def mcp_pins(tools: Sequence[BaseTool]) -> dict[str, dict[str, str]]:
    """The digests of stamped MCP tools, as ``data.agent.config.mcp.pins`` holds them.

    ``{server: {mcp tool name: digest}}``. Pin the definitions a person reviewed; with them
    in the policy data, the shipped policy denies a pinned tool whose definition changed,
    and a tool the server added later.

    Example:
        ```python
        pins = mcp_pins(await mcp_tools(client))
        Path("policies/agent/config/mcp/pins/data.json").write_text(json.dumps(pins, indent=2))
        # or: EmbeddedPolicy("policies", data={"agent": {"config": {"mcp": {"pins": pins}}}})
        ```
    """
    pins: dict[str, dict[str, str]] = {}
    for tool in tools:
        info = (tool.metadata or {}).get(MCP_METADATA_KEY)
        if not isinstance(info, Mapping):
            continue
        server, name, digest = info.get("server"), info.get("tool"), info.get("digest")
        if isinstance(server, str) and isinstance(name, str) and isinstance(digest, str):
            pins.setdefault(server, {})[name] = digest
    return pins


# -- helpers -------------------------------------------------------------------------------


def _stamp(tool: BaseTool, server: str, name_prefix: bool) -> BaseTool:
    # Only the annotations MCP defines, each of them covered by the digest: anything else a
    # server puts in a tool's annotations (the adapters copy them all into the metadata)
    # could steer a policy past its pin, so it is dropped.
    given = dict(tool.metadata or {})
    annotations = {k: given[k] for k in ANNOTATION_KEYS if given.get(k) is not None}
    metadata: dict[str, Any] = dict(annotations)
    name = tool.name
    if name_prefix:
        prefix = f"{server}_"
        if not name.startswith(prefix):
            raise ValueError(f"tool {name!r} does not carry the server prefix {prefix!r}")
        name = name[len(prefix) :]
    try:
        digest: str | None = definition_digest(
            name, tool.description, _input_schema(tool), annotations
        )
    except NestingTooDeep as exc:
        # No digest: a pin never matches it, so a pinned server's tool is denied as changed.
        logger.warning("MCP server %r: %s; it is stamped without a digest", server, exc)
        digest = None
    metadata[MCP_METADATA_KEY] = {"server": server, "tool": name, "digest": digest}
    stamped: BaseTool = tool.model_copy(update={"metadata": metadata})
    return stamped


def _rechecked(tool: BaseTool, client: _MCPClient, server: str) -> BaseTool:
    """The tool, refusing a call when the server now defines it otherwise."""
    if not isinstance(tool, StructuredTool) or tool.coroutine is None:
        raise TypeError(
            f"recheck=True needs the MCP adapters' tools (a StructuredTool with a coroutine); "
            f"{tool.name!r} is a {type(tool).__name__}"
        )
    info = (tool.metadata or {})[MCP_METADATA_KEY]
    name, loaded = info["tool"], info["digest"]
    call = tool.coroutine
    # The connection the tool was loaded with, which its calls keep using: the definition
    # is read from the server the call goes to, even if the client's entry is replaced.
    connection = client.connections[server]

    @functools.wraps(call)  # keeps the signature, so injected arguments still arrive
    async def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            current = await _current_digest(connection, name)
        except Exception as exc:  # noqa: BLE001 - an unreadable definition is refused
            logger.warning(
                "MCP server %r: reading the definition of %r failed: %r", server, name, exc
            )
            current = "unreadable"
        if loaded is None or current != loaded:
            why = {
                None: "no longer offers it",
                "unreadable": "could not be asked for its current definition",
            }.get(current, "now defines it differently from when it was loaded")
            raise _NotCalled(
                f'MCP tool "{name}" of server "{server}" was not called: the server {why}. '
                "Its tools must be loaded (and reviewed) again."
            )
        return await call(*args, **kwargs)

    given = tool.handle_tool_error

    def handle(error: ToolException) -> Any:
        """The refusal as the tool's error answer; any other error as the tool had it."""
        if isinstance(error, _NotCalled):
            return str(error)
        if given is None or given is False:
            raise error
        if given is True:
            return error.args[0] if error.args else "Tool execution error"
        if isinstance(given, str):
            return given
        return given(error)

    rechecked: BaseTool = tool.model_copy(
        update={"coroutine": checked, "handle_tool_error": handle}
    )
    return rechecked


class _NotCalled(ToolException):
    """A rechecked MCP tool's call refused before it reached the server."""


async def _current_digest(connection: Any, name: str) -> str | None:
    """The digest of the definition the server of ``connection`` gives now for its tool
    ``name`` (its MCP name), or ``None`` when it does not list it (in at most
    :data:`_MAX_PAGES` pages of ``tools/list``)."""
    from langchain_mcp_adapters.sessions import create_session

    async with create_session(connection) as session:
        await session.initialize()
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            listed = await session.list_tools(cursor=cursor)
            for tool in listed.tools:
                if tool.name == name:
                    given = tool.annotations.model_dump() if tool.annotations is not None else {}
                    annotations = {k: given[k] for k in ANNOTATION_KEYS if given.get(k) is not None}
                    return definition_digest(
                        tool.name, tool.description, tool.inputSchema, annotations
                    )
            cursor = listed.nextCursor
            if not cursor:
                return None
    return None


_MAX_PAGES = 1000
"""Pages of ``tools/list`` read at most (as the adapters do): a server whose cursor never
ends gets its calls refused, not hung."""


def _input_schema(tool: BaseTool) -> Mapping[str, Any]:
    """The tool's MCP ``inputSchema``: the adapters keep it as the tool's ``args_schema``."""
    schema = tool.args_schema
    if isinstance(schema, Mapping):
        return schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    return {}
