"""The places a guard sits, all on one decision path (:mod:`langchain_opa_guard.deciding`).

- :mod:`.guard_node`: :class:`~langchain_opa_guard.PolicyGuardNode`, a graph node that routes
  a decided turn; :mod:`.execution`: the ``GuardedToolNode`` that runs only the calls the
  guard granted; :mod:`.claims`: each call of a decided turn runs once.
- :mod:`.turns`: a model turn decided for the node and the middleware alike, planned in
  :mod:`.planning` and reviewed on resume in :mod:`.resume`.
- :mod:`.middleware` (with :mod:`.middleware_grants`): the guard for ``create_agent``.
- :mod:`.tool_call_guard`: the ``ToolNode`` interceptor, one call at a time;
  :mod:`.guarded_tools`: plain tools whose every call is checked.
- :mod:`.prepared_calls`: a call as it will run (its arguments through the tool's schema);
  :mod:`.tool_readings`: whether a tool reads them its own way, or alike every time;
  :mod:`.decided_views`: the same call read again right before its tool runs;
  :mod:`.plain_messages`: a model's message rebuilt to hold exactly the calls that run;
  :mod:`.kept_history`: the middleware's history kept beside the messages;
  :mod:`.open_calls`: answers for the calls a cut-off turn left open.
- :mod:`.approval`, :mod:`.denials`, :mod:`.visibility`, :mod:`.mcp`, :mod:`.arguments`: human
  approval, what a denied call is answered with, which tools the model sees, MCP tools, and
  the constructor checks.

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode

    tool_node = GuardedToolNode(tools)
    guard = PolicyGuardNode(EmbeddedPolicy("policies"), registry=tool_node)
    ```
"""
