"""ecmpd: Linux multi-WAN gateway daemon.

Its version is pyproject.toml's, read by `ecmpd.console.version` when asked for."""
