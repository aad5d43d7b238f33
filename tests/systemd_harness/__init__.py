"""Helpers for tests that need a real systemd (see machine.py)."""

from .machine import Machine, skip_reason, wait_until

__all__ = ["Machine", "skip_reason", "wait_until"]
