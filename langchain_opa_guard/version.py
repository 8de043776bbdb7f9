"""The package's version (also in ``pyproject.toml``).

Example:
    ```python
    from langchain_opa_guard import __version__
    ```
"""

__version__ = "0.1.0"
