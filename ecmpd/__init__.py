"""ecmpd: Linux multi-WAN gateway daemon."""

__version__ = "0.2.0"
