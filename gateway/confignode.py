"""Moved to :mod:`gateway.config`; this name stays while callers move their imports."""

from gateway.config import ConfigError, Node

__all__ = ["ConfigError", "Node"]
