"""The customer-database story the project is told with: tools, scenarios and an agent.

Used by ``make demo`` (``python -m langchain_opa_guard.demo``), the notebooks, the tests and
the benchmarks, so all of them run the same agent.
"""

from langchain_opa_guard.demo.customer_db import (
    Scenario,
    build_agent,
    customer_db_tools,
    load_scenarios,
    scenario_model,
)

__all__ = ["Scenario", "build_agent", "customer_db_tools", "load_scenarios", "scenario_model"]
