"""Composition root: builds envs, agents and trackers from configuration and runs the loops."""
