"""The ISPs' nft scripts: BCP38, faults and loss, each in an nft table of its own.

Every script replaces its table atomically (``add`` + ``delete`` + ``add`` in one
transaction), so they never disturb each other and are idempotent.  Chain names avoid
nft keywords (``fwd`` fails to parse).  `lab.lab.Lab` loads them into the ISP namespaces;
`lab.dhcp` and `lab.ptp` replace the BCP38 table for their kinds of WAN.
"""

from __future__ import annotations

from ipaddress import IPv4Network

CUST = "cust"
"""The ISP's customer-facing interface."""
BCP38_TABLE = "lab_bcp38"
DEAD_TABLE = "lab_dead"
UPSTREAM_TABLE = "lab_upstream"
LOSS_TABLE = "lab_loss"
FAULT_MODES = ("dead", "upstream")
"""Fault modes implemented with nft (``carrier`` is a link state)."""
ALL_MODES = ("dead", "upstream", "carrier")
LOSS_SCALE = 10000
"""`numgen random mod LOSS_SCALE`: loss resolution is 0.01 %."""


def _replace(family: str, table: str, body: str) -> str:
    return (f"add table {family} {table}\ndelete table {family} {table}\n"
            f"table {family} {table} {{\n{body}}}\n")


def _remove(family: str, table: str) -> str:
    return f"add table {family} {table}\ndelete table {family} {table}\n"


def bcp38_script(customer_net: str) -> str:
    """Drop what arrives on `cust` from outside `customer_net` (forwarded or local)."""
    net = IPv4Network(customer_net)
    return _replace("ip", BCP38_TABLE, (
        "  chain bcp38 {\n"
        "    type filter hook prerouting priority -300; policy accept;\n"
        f'    iifname "{CUST}" ip saddr != {net} counter drop\n'
        "  }\n"))


def fault_script(mode: str) -> str:
    """The nft script that puts fault `mode` (``dead`` or ``upstream``) in place."""
    if mode == "dead":
        # Silent both ways on the customer link, ARP included.
        return _replace("netdev", DEAD_TABLE, (
            "  chain dead_in {\n"
            f'    type filter hook ingress device "{CUST}" priority -500; policy drop;\n'
            "  }\n"
            "  chain dead_out {\n"
            f'    type filter hook egress device "{CUST}" priority -500; policy drop;\n'
            "  }\n"))
    if mode == "upstream":
        # The gateway itself still answers (input/output untouched); nothing is forwarded.
        return _replace("ip", UPSTREAM_TABLE, (
            "  chain drop_forward {\n"
            "    type filter hook forward priority -500; policy drop;\n"
            "  }\n"))
    raise ValueError(f"no nft fault mode {mode!r}")


def heal_script() -> str:
    """Remove every nft fault table (absent ones are fine)."""
    return _remove("netdev", DEAD_TABLE) + _remove("ip", UPSTREAM_TABLE)


def loss_script(percent: float) -> str:
    """Random drop of `percent` % of IP packets on `cust`, each direction; 0 removes it."""
    if not 0 <= percent <= 100:
        raise ValueError(f"loss percent {percent} out of 0..100")
    n = round(percent * LOSS_SCALE / 100)
    if n == 0:
        return _remove("ip", LOSS_TABLE)
    rule = f"numgen random mod {LOSS_SCALE} < {n} counter drop"
    if n >= LOSS_SCALE:  # nft refuses `< 10000` (out of numgen's range): 100 % is a plain drop
        rule = "counter drop"
    return _replace("ip", LOSS_TABLE, (
        "  chain loss_in {\n"
        "    type filter hook prerouting priority -400; policy accept;\n"
        f'    iifname "{CUST}" {rule}\n'
        "  }\n"
        "  chain loss_out {\n"
        "    type filter hook postrouting priority 400; policy accept;\n"
        f'    oifname "{CUST}" {rule}\n'
        "  }\n"))
