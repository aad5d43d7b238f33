"""The ISPs' nft scripts: BCP38, faults, loss and modem NAT, each in an nft table of its own.

Every script replaces its table atomically (``add`` + ``delete`` + ``add`` in one
transaction), so they never disturb each other and are idempotent.  Chain names avoid
nft keywords (``fwd`` fails to parse).  `lab.lab.Lab` loads them into the ISP namespaces;
`lab.dhcp` and `lab.ptp` replace the IPv4 BCP38 table for their kinds of WAN.

Both families: BCP38 is two tables of one name (``ip lab_bcp38`` and ``ip6 lab_bcp38``);
the faults and loss act on IPv4 and IPv6 alike (``netdev`` and ``inet`` tables), and a
fault may be limited to one family (``family=4`` / ``family=6``: tables ``lab_dead4``,
``lab_upstream6``, ...), so that one family fails while the other keeps working.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

CUST = "cust"
"""The ISP's customer-facing interface."""
UP = "up"
"""The ISP's transit interface toward inet."""
BCP38_TABLE = "lab_bcp38"
DEAD_TABLE = "lab_dead"
UPSTREAM_TABLE = "lab_upstream"
LOSS_TABLE = "lab_loss"
MODEM_TABLE = "lab_modem"
FAULT_MODES = ("dead", "upstream")
"""Fault modes implemented with nft (``carrier`` is a link state)."""
ALL_MODES = ("dead", "upstream", "carrier")
FAMILIES = (4, 6)
"""`fault_script`'s `family` values (None: both)."""
LOSS_SCALE = 10000
"""`numgen random mod LOSS_SCALE`: loss resolution is 0.01 %."""
NOT_FORWARDED6 = "{ fe80::/10, ::/128 }"
"""IPv6 sources an ISP accepts from its customer for itself only (neighbour discovery,
router solicitations, MLD) and never forwards."""


def _replace(family: str, table: str, body: str) -> str:
    return (f"add table {family} {table}\ndelete table {family} {table}\n"
            f"table {family} {table} {{\n{body}}}\n")


def _remove(family: str, table: str) -> str:
    return f"add table {family} {table}\ndelete table {family} {table}\n"


def bcp38_script(customer_net: str | None, *routed: str) -> str:
    """Drop what arrives on `cust` from outside `customer_net` and the prefixes `routed`
    to the customer (forwarded or local); None: drop every IPv4 packet from `cust` (an
    IPv6-only customer link)."""
    if customer_net is None:
        rule = f'    iifname "{CUST}" counter drop\n'
    else:
        nets = [str(IPv4Network(n)) for n in (customer_net, *routed)]
        allowed = nets[0] if len(nets) == 1 else f"{{ {', '.join(nets)} }}"
        rule = f'    iifname "{CUST}" ip saddr != {allowed} counter drop\n'
    return _replace("ip", BCP38_TABLE, (
        "  chain bcp38 {\n"
        "    type filter hook prerouting priority -300; policy accept;\n"
        f"{rule}"
        "  }\n"))


def bcp38_6_script(customer_net6: str | None, *routed: str) -> str:
    """IPv6 BCP38 (table ``ip6 lab_bcp38``): drop what arrives on `cust` from outside
    `customer_net6` and the prefixes `routed` to the customer, except link-local and
    unspecified sources, which reach the ISP itself (neighbour discovery, router
    solicitations) but are never forwarded, nor is anything to a link-local address.
    None: only those reach the ISP (IPv4-only link)."""
    allowed = NOT_FORWARDED6 if customer_net6 is None else "{ " + "".join(
        f"{IPv6Network(n)}, " for n in (customer_net6, *routed)) + "fe80::/10, ::/128 }"
    return _replace("ip6", BCP38_TABLE, (
        "  chain bcp38 {\n"
        "    type filter hook prerouting priority -300; policy accept;\n"
        f'    iifname "{CUST}" ip6 saddr != {allowed} counter drop\n'
        "  }\n"
        "  chain link_local {\n"
        "    type filter hook forward priority -300; policy accept;\n"
        f"    ip6 saddr {NOT_FORWARDED6} counter drop\n"
        "    ip6 daddr fe80::/10 counter drop\n"
        "  }\n"))


def modem_script() -> str:
    """A home modem's NAT (table ``inet lab_modem``): masquerade, in both families,
    everything the ISP forwards out of `UP` (so inet sees the ISP's transit address)."""
    return _replace("inet", MODEM_TABLE, (
        "  chain modem_nat {\n"
        "    type nat hook postrouting priority 100; policy accept;\n"
        f'    oifname "{UP}" masquerade\n'
        "  }\n"))


def fault_table(mode: str, family: int | None = None) -> str:
    """The nft table name of fault `mode` for `family` (None: both families)."""
    base = {"dead": DEAD_TABLE, "upstream": UPSTREAM_TABLE}[mode]
    return base if family is None else f"{base}{family}"


def fault_script(mode: str, family: int | None = None) -> str:
    """The nft script that puts fault `mode` (``dead`` or ``upstream``) in place, for
    both families (`family` None) or only IPv4 (4) or IPv6 (6)."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be 4, 6 or None, not {family!r}")
    if mode not in FAULT_MODES:
        raise ValueError(f"no nft fault mode {mode!r}")
    table = fault_table(mode, family)
    if mode == "dead":
        # Silent both ways on the customer link (ARP / neighbour discovery included).
        if family is None:
            policy, rule = "drop", ""
        else:
            policy = "accept"
            rule = "    meta protocol { ip, arp } drop\n" if family == 4 else \
                "    meta protocol ip6 drop\n"
        return _replace("netdev", table, (
            "  chain dead_in {\n"
            f'    type filter hook ingress device "{CUST}" priority -500; policy {policy};\n'
            f"{rule}"
            "  }\n"
            "  chain dead_out {\n"
            f'    type filter hook egress device "{CUST}" priority -500; policy {policy};\n'
            f"{rule}"
            "  }\n"))
    # upstream: the gateway itself still answers (input/output untouched); nothing is
    # forwarded (in that family).
    if family is None:
        policy, rule = "drop", ""
    else:
        policy, rule = "accept", f"    meta nfproto ipv{family} drop\n"
    return _replace("inet", table, (
        "  chain drop_forward {\n"
        f"    type filter hook forward priority -500; policy {policy};\n"
        f"{rule}"
        "  }\n"))


def heal_script() -> str:
    """Remove every nft fault table, of both and of single families (absent ones are fine)."""
    out = ""
    for family in (None, *FAMILIES):
        out += _remove("netdev", fault_table("dead", family))
        out += _remove("inet", fault_table("upstream", family))
    return out + _remove("ip", UPSTREAM_TABLE)  # where older labs put it


def loss_script(percent: float) -> str:
    """Random drop of `percent` % of IP packets (IPv4 and IPv6) on `cust`, each
    direction; 0 removes it."""
    if not 0 <= percent <= 100:
        raise ValueError(f"loss percent {percent} out of 0..100")
    n = round(percent * LOSS_SCALE / 100)
    if n == 0:
        return _remove("inet", LOSS_TABLE)
    rule = f"numgen random mod {LOSS_SCALE} < {n} counter drop"
    if n >= LOSS_SCALE:  # nft refuses `< 10000` (out of numgen's range): 100 % is a plain drop
        rule = "counter drop"
    return _replace("inet", LOSS_TABLE, (
        "  chain loss_in {\n"
        "    type filter hook prerouting priority -400; policy accept;\n"
        f'    iifname "{CUST}" {rule}\n'
        "  }\n"
        "  chain loss_out {\n"
        "    type filter hook postrouting priority 400; policy accept;\n"
        f'    oifname "{CUST}" {rule}\n'
        "  }\n"))
