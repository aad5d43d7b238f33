"""Reliability tests: attacks, fuzzing and failure injection against the daemon."""
