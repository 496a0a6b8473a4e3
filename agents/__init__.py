"""Decision makers and learners for Rapport.

Agents never import ``envs``: spaces, feature names and the action-mask convention are
injected through :class:`rapport.agents.protocol.DecisionSchema`.
"""

from rapport.agents.protocol import DecisionSchema, Policy

__all__ = ["DecisionSchema", "Policy"]
