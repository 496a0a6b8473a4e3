"""Decision makers and learners for Rapport.

Agents never import ``envs``: spaces, feature names and the action-mask convention are
injected through :class:`agents.protocol.DecisionSchema`.
"""

from agents.protocol import DecisionSchema, Policy

__all__ = ["DecisionSchema", "Policy"]
