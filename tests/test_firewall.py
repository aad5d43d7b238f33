"""firewall: ecmpd's one nft table — ensure/adopt/rewrite/remove (root, a namespace of our own).

libnftables acts on the namespace of the calling process, so `Firewall` runs in a small
helper process started with ``ip netns exec``; the test sends it one JSON command per
line.  A new helper process stands for a restarted daemon.  `nft` itself (also run in
that namespace) is the independent witness: a rewrite of the table changes its handle,
so "no write" is checked byte for byte on ``nft -j list`` output, handles included.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
from ipaddress import IPv4Address
from typing import Any, Callable, Iterator

import pytest

from ecmpd import nftrules
from lab import Lab, netns
from lab.driver import tool_env
from ecmpd.configmodel import Config, Wan

pytestmark = pytest.mark.lab

WANS = (Wan("wlan1", "wlan1", IPv4Address("10.111.0.1"), 1, 1),
        Wan("wlan2", "wlan2", IPv4Address("10.112.0.1"), 3, 2))

HELPER = r'''
import json, sys
from ipaddress import IPv4Address
from ecmpd.firewall import Firewall
from ecmpd.configmodel import Config, Wan
WANS = (Wan("wlan1", "wlan1", IPv4Address("10.111.0.1"), 1, 1),
        Wan("wlan2", "wlan2", IPv4Address("10.112.0.1"), 3, 2))
fw = None
for line in sys.stdin:
    req = json.loads(line)
    try:
        cfg = Config(lan_interfaces=("Local",), wans=WANS, **req.get("cfg", {}))
        op, result = req["op"], None
        if op == "new":
            fw = Firewall(cfg)
        elif op == "ensure":
            result = fw.ensure()
        elif op == "apply":
            fw.apply()
        elif op == "remove":
            fw.remove()
        elif op == "reconfigure":
            fw.reconfigure(cfg)
        elif op == "read_counters":
            result = {f"{f}:{w}": n for (f, w), n in fw.read_counters().items()}
        else:
            raise ValueError(op)
        reply = {"ok": True, "result": result, "applies": fw.applies}
    except Exception as exc:
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), flush=True)
'''


def cfg(**kw: Any) -> Config:
    return Config(lan_interfaces=("Local",), wans=WANS, **kw)


class FwProcess:
    """One `Firewall` living in a helper process inside namespace `ns`."""

    def __init__(self, ns: str, **cfg_kw: Any) -> None:
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(netns.exec_argv(ns, sys.executable, "-c", HELPER),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=tool_env())
        self.call("new", **cfg_kw)

    def call(self, op: str, **cfg_kw: Any) -> dict[str, Any]:
        """Run `op` (new/ensure/apply/remove/reconfigure); the reply {result, applies}."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, "cfg": cfg_kw}) + "\n").encode())
        self.proc.stdin.flush()
        reply = json.loads(self.read_line(timeout=20))
        assert reply["ok"], reply["error"]
        return reply

    def read_line(self, timeout: float) -> str:
        """The helper's next reply line (it writes exactly one per request)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.endswith(b"\n"):
            self.err.seek(0)
            raise AssertionError(f"no reply from the firewall helper within {timeout}s "
                                 f"(rc={self.proc.poll()}): {self.err.read().decode()[-2000:]}")
        return line.decode()

    def ensure(self) -> tuple[bool, int]:
        r = self.call("ensure")
        return r["result"], r["applies"]

    def counters(self) -> dict[tuple[int, int], int]:
        """`Firewall.read_counters()`: (family, WAN id) -> packets (sent as "f:id")."""
        return {(int(k.split(":")[0]), int(k.split(":")[1])): v
                for k, v in self.call("read_counters")["result"].items()}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.err):
            if f is not None:
                f.close()


@pytest.fixture
def ns(make_netns: Callable[[str], str]) -> str:
    """A bare network namespace of this test (deleted at the end, whatever happens)."""
    return make_netns("fw")


@pytest.fixture
def firewall(ns: str) -> Iterator[Callable[..., FwProcess]]:
    """Factory of helper processes in `ns`; all are killed at the end."""
    procs: list[FwProcess] = []

    def start(**cfg_kw: Any) -> FwProcess:
        procs.append(FwProcess(ns, **cfg_kw))
        return procs[-1]

    try:
        yield start
    finally:
        for p in procs:
            p.close()


def nft(ns: str, *args: str, check: bool = True) -> str:
    return netns.run_in(ns, "nft", *args, check=check).stdout


def listing(ns: str, family: str = "inet", table: str = "ecmpd") -> str:
    """``nft -j list table`` with handles: any rewrite changes it."""
    return nft(ns, "-j", "list", "table", family, table)


def tables(ns: str) -> list[tuple[str, str]]:
    out = json.loads(nft(ns, "-j", "list", "tables"))["nftables"]
    return sorted((o["table"]["family"], o["table"]["name"]) for o in out if "table" in o)


def handle_of_rule(ns: str, chain: str, comment: str) -> int:
    for o in json.loads(listing(ns))["nftables"]:
        r = o.get("rule")
        if r and r["chain"] == chain and r.get("comment") == comment:
            return int(r["handle"])
    raise AssertionError(f"no rule {comment!r} in chain {chain}")


def content(ns: str, table: str = "ecmpd") -> list[dict[str, Any]]:
    """The table's objects without handles (what ecmpd considers its table)."""
    return nftrules.normalize_listing(json.loads(listing(ns, table=table)), table)


# ------------------------------------------------------------------ tests


def test_ensure_writes_the_table_once(ns: str, firewall: Callable[..., FwProcess]) -> None:
    assert tables(ns) == []
    fw = firewall()
    assert fw.ensure() == (True, 1)
    assert tables(ns) == [("inet", "ecmpd")]
    written = listing(ns)
    assert nftrules.listing_digest(json.loads(written)) == nftrules.digest(cfg())
    assert 'oifname "wlan2" masquerade' in nft(ns, "list", "table", "inet", "ecmpd")
    assert fw.ensure() == (False, 1)
    assert fw.ensure() == (False, 1)
    assert listing(ns) == written


def test_a_restarted_daemon_adopts_its_intact_table(
        ns: str, firewall: Callable[..., FwProcess]) -> None:
    first = firewall()
    assert first.ensure() == (True, 1)
    first.close()
    written = listing(ns)
    again = firewall()
    assert again.ensure() == (False, 0)
    assert listing(ns) == written
    # the adopted table is watched like one it wrote itself
    nft(ns, "delete", "rule", "inet", "ecmpd", "nat", "handle",
        str(handle_of_rule(ns, "nat", "masquerade wlan1")))
    assert again.ensure() == (True, 1)
    assert nftrules.listing_digest(json.loads(listing(ns))) == nftrules.digest(cfg())


def test_a_restarted_daemon_rewrites_a_damaged_or_strange_table(
        ns: str, firewall: Callable[..., FwProcess]) -> None:
    first = firewall()
    first.ensure()
    first.close()
    intact = content(ns)
    # damaged while no daemon ran: the digest comment is still there, a rule is not
    nft(ns, "delete", "rule", "inet", "ecmpd", "nat", "handle",
        str(handle_of_rule(ns, "nat", "masquerade wlan2")))
    assert firewall().ensure() == (True, 1)
    assert content(ns) == intact
    # a table of that name that ecmpd did not write (no digest)
    nft(ns, "delete", "table", "inet", "ecmpd")
    netns.nft(ns, "table inet ecmpd {\n chain c {\n type filter hook input priority 0;\n"
                  " policy accept;\n counter\n }\n}")
    assert firewall().ensure() == (True, 1)
    assert content(ns) == intact


def test_external_changes_are_rewritten(ns: str, firewall: Callable[..., FwProcess]) -> None:
    fw = firewall()
    fw.ensure()
    intact = content(ns)
    nft(ns, "delete", "rule", "inet", "ecmpd", "postrouting", "handle",
        str(handle_of_rule(ns, "postrouting", "pin new connections")))
    assert fw.ensure() == (True, 2)
    assert content(ns) == intact
    nft(ns, "delete", "table", "inet", "ecmpd")
    assert fw.ensure() == (True, 3)
    assert content(ns) == intact
    nft(ns, "add", "rule", "inet", "ecmpd", "nat", "counter")  # an extra rule in ecmpd's table
    assert fw.ensure() == (True, 4)
    assert content(ns) == intact
    assert fw.ensure() == (False, 4)


FOREIGN = """
table inet filter {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 22 accept
    ct state established,related accept
  }
}
table ip nat {
  set lan { type ipv4_addr; elements = { 192.168.0.2, 192.168.0.3 } }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    iifname "wlan1" tcp dport 8080 dnat to 192.168.0.2:80
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr @lan oifname "wlan1" masquerade
  }
}
table ip6 ecmpd {
  chain output {
    type filter hook output priority 0; policy accept;
    meta mark 0x10000 counter
  }
}
"""
FOREIGN_TABLES = [("inet", "filter"), ("ip", "nat"), ("ip6", "ecmpd")]
"""Foreign tables, one of them of ecmpd's name in a family ecmpd never uses (ip6)."""


def test_foreign_tables_are_never_touched(ns: str, firewall: Callable[..., FwProcess]) -> None:
    netns.nft(ns, FOREIGN)
    before = {t: listing(ns, *t) for t in FOREIGN_TABLES}

    def untouched() -> bool:
        return {t: listing(ns, *t) for t in FOREIGN_TABLES} == before

    fw = firewall()
    assert fw.ensure() == (True, 1) and untouched()
    fw.call("apply")
    assert untouched()
    assert fw.ensure() == (False, 2) and untouched()
    fw.call("reconfigure", mark_mask=0xFF00)
    assert fw.ensure() == (True, 3) and untouched()
    fw.call("reconfigure", mark_mask=0xFF00, nft_table="ecmpd_b")
    assert untouched()
    assert fw.ensure() == (True, 4) and untouched()
    assert tables(ns) == sorted(FOREIGN_TABLES + [("inet", "ecmpd_b")])
    fw.call("remove")
    assert untouched()
    assert tables(ns) == sorted(FOREIGN_TABLES)


def test_reconfigure_rewrites_only_when_the_table_changes(
        ns: str, firewall: Callable[..., FwProcess]) -> None:
    fw = firewall()
    fw.ensure()
    fw.call("reconfigure", mark_mask=0xFF00)
    assert fw.ensure() == (True, 2)
    digest = nftrules.listing_digest(json.loads(listing(ns)))
    assert digest == nftrules.digest(cfg(mark_mask=0xFF00))
    assert "ct mark & 0x0000ff00" in nft(ns, "list", "table", "inet", "ecmpd")
    assert fw.ensure() == (False, 2)
    written = listing(ns)
    fw.call("reconfigure", mark_mask=0xFF00, route_metric=5, rule_priority=3000)  # not nft's
    assert fw.ensure() == (False, 2)
    assert listing(ns) == written


def test_a_renamed_table_replaces_the_old_one(ns: str, firewall: Callable[..., FwProcess]) -> None:
    fw = firewall()
    fw.ensure()
    fw.call("reconfigure", nft_table="ecmpd_b")
    assert tables(ns) == [("inet", "ecmpd")]   # the old table stays until the new one is in
    assert fw.ensure() == (True, 2)
    assert tables(ns) == [("inet", "ecmpd_b")]
    fw.call("reconfigure", nft_table="ecmpd_c")
    fw.call("remove")                    # stopped before the new one was written
    assert tables(ns) == []
    fw.ensure()
    fw.call("reconfigure", nft_table="ecmpd_b")
    fw.call("remove")
    assert tables(ns) == []
    fw.call("remove")                    # already gone: no error
    assert nft(ns, "list", "table", "inet", "ecmpd_b", check=False) == ""


OLD_TABLE = """
table ip ecmpd {
  counter rx_1 { }
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    iifname vmap { "wlan1" : jump rx_1 } comment "ecmpd:0123456789abcdef"
  }
  chain rx_1 {
    ip saddr != 10.111.0.1 meta pkttype host counter name "rx_1"
  }
  chain nat {
    type nat hook postrouting priority 100; policy accept;
    oifname "wlan1" masquerade
  }
}
"""
"""What an older ecmpd (``table ip``, IPv4 only) left."""


def test_an_older_ecmpds_ip_table_gives_way_to_the_inet_one(
        ns: str, firewall: Callable[..., FwProcess]) -> None:
    netns.nft(ns, FOREIGN)
    foreign = {t: listing(ns, *t) for t in FOREIGN_TABLES}
    netns.nft(ns, OLD_TABLE)
    fw = firewall()
    assert fw.ensure() == (True, 1)
    assert tables(ns) == sorted(FOREIGN_TABLES + [("inet", "ecmpd")])
    assert nftrules.listing_digest(json.loads(listing(ns))) == nftrules.digest(cfg())
    assert fw.ensure() == (False, 1)
    written = listing(ns)
    # left over next to an intact inet table: a restarted daemon does not adopt, it
    # rewrites (and the rewrite removes the ip table)
    fw.close()
    netns.nft(ns, OLD_TABLE)
    again = firewall()
    assert again.ensure() == (True, 1)
    assert tables(ns) == sorted(FOREIGN_TABLES + [("inet", "ecmpd")])
    assert content(ns) == nftrules.normalize_listing(json.loads(written), "ecmpd")
    # the same while running
    netns.nft(ns, OLD_TABLE)
    assert again.ensure() == (True, 2)
    assert again.ensure() == (False, 2)
    assert tables(ns) == sorted(FOREIGN_TABLES + [("inet", "ecmpd")])
    # remove takes both families of ecmpd's name, nothing else
    netns.nft(ns, OLD_TABLE)
    again.call("remove")
    assert tables(ns) == sorted(FOREIGN_TABLES)
    assert {t: listing(ns, *t) for t in FOREIGN_TABLES} == foreign


def test_traffic_is_counted_per_wan_and_never_rewrites_the_table(
        make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()                       # the seed lab: wlan1, wlan2 as in WANS
    rtr, server = lab.ns_router, lab.spec.server_addresses[0]
    fw = FwProcess(rtr)
    try:
        assert fw.counters() == {}         # no table yet
        assert fw.ensure() == (True, 1)
        written, intact = listing(rtr), content(rtr)
        assert fw.counters() == {(4, 1): 0, (6, 1): 0, (4, 2): 0, (6, 2): 0}
        # the router reaches the server by wlan1; the internet reaches it by wlan2
        lab.run(rtr, "ip", "route", "add", server, "via", "10.111.0.1")
        lab.run(rtr, "ip", "route", "add", "100.64.2.0/30", "via", "10.112.0.1")
        lab.run(rtr, "ping", "-c", "5", "-i", "0.05", "-W", "2", server)
        lab.run(lab.ns_inet, "ping", "-c", "3", "-i", "0.05", "-W", "2", "10.112.0.2")
        assert fw.counters() == {(4, 1): 5, (6, 1): 0, (4, 2): 3, (6, 2): 0}
        # the gateways' own answers are no evidence of the upstream: not counted
        lab.run(rtr, "ping", "-c", "4", "-i", "0.05", "-W", "2", "10.111.0.1")
        lab.run(rtr, "ping", "-c", "4", "-i", "0.05", "-W", "2", "10.112.0.1")
        assert fw.counters() == {(4, 1): 5, (6, 1): 0, (4, 2): 3, (6, 2): 0}
        # the kernel's listing moved with the counts; ecmpd's view of it did not
        assert listing(rtr) != written
        assert fw.ensure() == (False, 1)
        assert content(rtr) == intact
        text = nft(rtr, "list", "table", "inet", "ecmpd")
        assert "counter rx_1 {\n\t\tpackets 5 " in text
        # a restarted daemon adopts the counting table too (the counts go on)
        fw.close()
        fw = FwProcess(rtr)
        assert fw.ensure() == (False, 0)
        assert fw.counters() == {(4, 1): 5, (6, 1): 0, (4, 2): 3, (6, 2): 0}
        fw.call("remove")
        assert fw.counters() == {}
    finally:
        fw.close()
