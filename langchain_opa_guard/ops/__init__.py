"""Operating policies: the decision log and its replay against a candidate policy.

Example:
    ```python
    from langchain_opa_guard import EmbeddedPolicy
    from langchain_opa_guard.ops.replay import assert_no_decision_changes

    assert_no_decision_changes("decisions.jsonl", EmbeddedPolicy("policies"))
    ```
"""
