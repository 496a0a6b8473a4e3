"""Rapport's Hydra configs, shipped in the package (``rapport.conf``) and found through Hydra's
package search path ``pkg://rapport.conf``; each YAML file documents its keys."""
