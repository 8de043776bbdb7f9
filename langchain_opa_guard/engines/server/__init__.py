"""The OPA server engine: the REST client, its connection pool and its optional session.

Example:
    ```python
    from langchain_opa_guard import OPAServer

    engine = OPAServer("http://localhost:8181", timeout=2.0)
    ```
"""
