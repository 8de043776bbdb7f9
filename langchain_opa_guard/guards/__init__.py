"""The places a guard sits, all on one decision path (:mod:`langchain_opa_guard.deciding`).

- :mod:`.guard_node` and :mod:`.execution`: the guard node and the ``GuardedToolNode`` that runs
  only the calls the guard granted; :mod:`.turns` decides a model turn for the node and the
  middleware alike.
- :mod:`.tool_call_guard`: the ``ToolNode`` interceptor, one call at a time.
- :mod:`.middleware`: the guard for LangChain's ``create_agent``.
- :mod:`.guarded_tools`: plain tools whose every call is checked.
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
