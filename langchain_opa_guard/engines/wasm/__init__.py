"""OPA's WebAssembly compilation of a policy, run in process with wasmtime.

:mod:`.bundles` finds or builds the compiled policy (``shipped/`` holds the bundle of this
project's ``policies/``), :mod:`.runtime` runs its module, :mod:`.evaluator` evaluates one
input, and :mod:`.host_builtins`, :mod:`.go_regexp` and :mod:`.rego_values` supply the
built-in functions OPA leaves to the host.

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy

    engine = EmbeddedPolicy("policies")  # the wasm engine, when the policy compiles
    ```
"""
