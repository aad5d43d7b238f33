"""nftnetlink: requests and answers on the wire (a fake socket; the kernel's side is in
tests/test_policy_nft_lab.py and tests/test_firewall.py)."""

from __future__ import annotations

import errno
import struct

import pytest

from ecmpd import nftnetlink as nl


def message(kind: int, seq: int, payload: bytes, flags: int = 0) -> bytes:
    body = payload + b"\0" * (-len(payload) % 4)
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + body


def counter(seq: int, name: str, packets: int, multi: bool = False) -> bytes:
    data = nl._attr(nl.NFTA_COUNTER_PACKETS, struct.pack(">Q", packets))
    attrs = (nl._string(nl.NFTA_OBJ_TABLE, "ecmpd") + nl._string(nl.NFTA_OBJ_NAME, name)
             + nl._attr(nl.NFTA_OBJ_DATA | 0x8000, nl._attr(1, struct.pack(">Q", 9)) + data))
    return message((nl.NFNL_SUBSYS_NFTABLES << 8) | 18, seq, nl._NFGEN + attrs,
                   nl.NLM_F_MULTI if multi else 0)


def error(seq: int, err: int) -> bytes:
    return message(nl.NLMSG_ERROR, seq, struct.pack("=i", -err) + b"\0" * 16)


class FakeSocket:
    """Answers each request with the next canned reply (a function of its sequence)."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.sent: list[bytes] = []
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        seq = struct.unpack_from("=I", data, 8)[0]
        self.pending += self.replies.pop(0)(seq)
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.pending.pop(0)


@pytest.fixture
def reader():
    r = nl.NftNetlink()
    r._sock.close()
    return r


def test_a_dump_of_the_tables_counters_over_several_reads(reader) -> None:
    reader._sock = FakeSocket(lambda seq: [
        counter(seq - 1, "stale", 5, True),                 # a late answer: skipped
        counter(seq, "rx_1", 17, True) + counter(seq, "pol_3", 4, True),
        counter(seq, "rx6_1", 0, True) + message(nl.NLMSG_DONE, seq, b"\0" * 4, 2)])
    assert reader.counters("ecmpd") == {"rx_1": 17, "pol_3": 4, "rx6_1": 0}
    (sent,) = reader._sock.sent
    length, kind, flags = struct.unpack_from("=IHH", sent)
    assert (length, kind, flags) == (len(sent), (10 << 8) | 19, 0x301)
    assert sent[16:20] == bytes([1, 0, 0, 0])               # inet, v0, res_id 0
    attrs = nl._attrs(sent[20:])
    assert attrs[nl.NFTA_OBJ_TABLE] == b"ecmpd\0" and nl.NFTA_OBJ_NAME not in attrs
    assert attrs[nl.NFTA_OBJ_TYPE] == struct.pack(">I", 1)


def test_named_counters_one_request_each_a_missing_one_left_out(reader) -> None:
    reader._sock = FakeSocket(lambda seq: [counter(seq, "rx_1", 3)],
                              lambda seq: [error(seq, errno.ENOENT)],
                              lambda seq: [counter(seq, "rx_2", 8)])
    assert reader.counters("ecmpd", ["rx_1", "rx6_1", "rx_2"]) == {"rx_1": 3, "rx_2": 8}
    assert [nl._attrs(s[20:])[nl.NFTA_OBJ_NAME] for s in reader._sock.sent] == \
        [b"rx_1\0", b"rx6_1\0", b"rx_2\0"]
    assert all(struct.unpack_from("=H", s, 6)[0] == 1 for s in reader._sock.sent)
    reader._sock = FakeSocket(lambda seq: [error(seq, errno.EPERM)])
    with pytest.raises(PermissionError):
        reader.counters("ecmpd", ["rx_1"])


def test_the_generation(reader) -> None:
    gen = nl._attr(nl.NFTA_GEN_ID, struct.pack(">I", 4711))
    reader._sock = FakeSocket(lambda seq: [message((10 << 8) | 15, seq, nl._NFGEN + gen)])
    assert reader.generation() == 4711
    assert struct.unpack_from("=H", reader._sock.sent[0], 4)[0] == (10 << 8) | 16
