"""Two cheap reads of nftables straight from netfilter's netlink, without libnftables:
the named counters of a table, and the ruleset's generation.

Why: every libnftables ``list`` command first fills nft's cache of the whole table
(chains, rules, sets and each set's elements, one dump per set), whatever it lists.  With
policies (`ecmpd.policyrules`: a verdict map per group, a chain and a counter per policy)
one read of a WAN counter that way costs tens of milliseconds; the probers read them every
round.  Here a counter is one ``NFT_MSG_GETOBJ`` request (a dump of a table's counters
for all of them), and ``NFT_MSG_GETGEN`` answers whether anything in any table changed
since the last look (the generation moves with every committed transaction).

Blocking, with a short timeout (on the daemon's loop): nfnetlink handles a request in
the sender's sendmsg, so the reply is queued before ``send`` returns and ``recv`` does
not wait; the timeout only bounds a surprise.  Acts on the network
namespace the socket was opened in (the caller's, as libnftables does).
"""

from __future__ import annotations

import errno
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFT_MSG_GETOBJ = 19
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFPROTO_INET = 1
NFT_OBJECT_COUNTER = 1
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFTA_COUNTER_PACKETS = 2
NFTA_GEN_ID = 1
_NLA_TYPE_MASK = 0x3FFF
_HEADER = struct.Struct("=IHHII")
_NFGEN = struct.pack("=BBH", NFPROTO_INET, 0, 0)


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _string(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _attrs(data: bytes) -> dict[int, bytes]:
    """A message's attributes by type (nested ones still packed)."""
    out: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out[kind & _NLA_TYPE_MASK] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


class NftNetlink:
    """One netfilter netlink socket of the current network namespace."""

    def __init__(self, timeout: float = 0.1) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.settimeout(timeout)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _request(self, msg_type: int, flags: int, payload: bytes) -> list[dict[int, bytes]]:
        """Send one request; the attributes of each answer (an error raises OSError)."""
        self._seq += 1
        body = _NFGEN + payload
        self._sock.send(_HEADER.pack(_HEADER.size + len(body),
                                     (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
                                     NLM_F_REQUEST | flags, self._seq, 0) + body)
        out: list[dict[int, bytes]] = []
        while True:
            data = self._sock.recv(1 << 16)
            off = 0
            while off + _HEADER.size <= len(data):
                length, kind, mflags, seq, _ = _HEADER.unpack_from(data, off)
                msg = data[off + _HEADER.size:off + length]
                off += max((length + 3) & ~3, _HEADER.size)
                if seq != self._seq:
                    continue            # the late answer of a request that timed out
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", msg)
                    if err:
                        raise OSError(-err, f"nftables netlink: {errno.errorcode.get(-err, err)}")
                    return out
                out.append(_attrs(msg[len(_NFGEN):]))
                if not mflags & NLM_F_MULTI:
                    return out

    def counters(self, table: str, names: list[str] | None = None) -> dict[str, int]:
        """Packets of the named counters of ``table inet <table>``: those in `names`
        that exist (one request each), or all of them (one dump); {} without the table."""
        found: list[dict[int, bytes]] = []
        kind = _attr(NFTA_OBJ_TYPE, struct.pack(">I", NFT_OBJECT_COUNTER))
        if names is None:
            found = self._request(NFT_MSG_GETOBJ, NLM_F_DUMP,
                                  _string(NFTA_OBJ_TABLE, table) + kind)
        else:
            for name in names:
                try:
                    found += self._request(NFT_MSG_GETOBJ, 0, _string(NFTA_OBJ_TABLE, table)
                                           + _string(NFTA_OBJ_NAME, name) + kind)
                except FileNotFoundError:
                    continue        # no such counter (or table)
        out: dict[str, int] = {}
        for attrs in found:
            data = _attrs(attrs.get(NFTA_OBJ_DATA, b""))
            if NFTA_OBJ_NAME in attrs and NFTA_COUNTER_PACKETS in data:
                name = attrs[NFTA_OBJ_NAME].rstrip(b"\0").decode()
                out[name] = struct.unpack(">Q", data[NFTA_COUNTER_PACKETS])[0]
        return out

    def generation(self) -> int:
        """The ruleset's generation: it changes with every committed nft transaction."""
        (attrs,) = self._request(NFT_MSG_GETGEN, 0, b"")
        return int(struct.unpack(">I", attrs[NFTA_GEN_ID])[0])
