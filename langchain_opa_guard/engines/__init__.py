"""The policy engines: each answers a policy input with a :class:`~langchain_opa_guard.Decision`.

- :mod:`.engine`: what an engine is (the :class:`PolicyEngine` protocol) and what engines share
  (the default policy path, the input encoding).
- :mod:`.server`: :class:`~langchain_opa_guard.OPAServer`, the client of a real OPA server.
- :mod:`.embedded`: :class:`~langchain_opa_guard.EmbeddedPolicy`, OPA's WebAssembly compilation
  of the policy run in process (:mod:`.wasm`), with the regopy interpreter as its fallback
  (:mod:`.regopy`).
- :mod:`.policy_sources`, :mod:`.workers`, :mod:`.instance_pool`: the policy files, worker
  threads and bounded pools of evaluators the engines build on.

Engines fail closed and know nothing of LangChain, the guards or the tracing package.

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy

    decision = EmbeddedPolicy("policies").decide({"tool": {"name": "search"}, "user": {}})
    ```
"""
