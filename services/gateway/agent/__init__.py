"""Agents: a server-side loop in which a model calls Zhiku's tools (``tools/``) until it answers."""
