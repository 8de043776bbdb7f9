"""The regopy fallback of the embedded engine: Rego interpreted in child processes, for
policies OPA cannot compile to WebAssembly.

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy

    engine = EmbeddedPolicy("policies", backend="regopy")
    ```
"""
