"""Daemon lifecycle and wiring: the one place where components are built and connected."""

from sentiloop.daemon.app import Daemon

__all__ = ["Daemon"]
