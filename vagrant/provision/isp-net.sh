#!/usr/bin/env bash
# The lab's ISPs and "internet" as network namespaces inside the isp VM (run at boot by
# ecmpd-lab-isp.service; installed as /usr/local/sbin/ecmpd-lab-isp).
#
#   ecmpd-lab-isp up      (re)build everything from /etc/ecmpd-lab/isps
#   ecmpd-lab-isp down    delete the namespaces (the NICs return to the VM)
#
# /etc/ecmpd-lab/isps has one line per ISP, "NS,MAC,GATEWAY/PREFIX" (line i is ISP i):
#   NS    namespace of the ISP's router; the NIC with MAC (on the WAN network shared with
#         the lab router) moves into it as "cust" with the customer gateway address;
#   it reaches the "internet" namespace inet over a veth ("uplink" <-> "NS"), 100.64.i.0/30.
# inet holds the servers' addresses and routes each customer subnet back to its ISP, as
# if the customers' addresses were public: a server sees which WAN a connection used.
# Each ISP drops forwarded customer packets whose source is not the customer subnet
# (BCP38), so a LAN packet leaking out un-NATed, or NATed to the other WAN's address,
# is dropped there as a real ISP would (see `nft list ruleset` inside NS).
set -euo pipefail
# shellcheck source=common.sh
. "${ECMPD_LAB_LIB:-/usr/local/lib/ecmpd-lab}/common.sh"   # installed by isp.sh

CONF=${ECMPD_LAB_ISPS:-/etc/ecmpd-lab/isps}
SERVERS=(198.51.100.10 203.0.113.10)

namespaces() { echo inet; cut -d, -f1 "$CONF" | grep -v '^\s*$' || true; }

down() {
  local ns
  for ns in $(namespaces); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  local i=0 ns mac gw dev subnet
  [ -s "$CONF" ] || die "$CONF is missing or empty"
  down
  ip netns add inet
  ip -n inet link set lo up
  for a in "${SERVERS[@]}"; do ip -n inet addr add "$a/32" dev lo; done
  while IFS=, read -r ns mac gw; do
    [ -n "$ns" ] || continue
    i=$((i + 1))
    dev=$(wait_iface_by_mac "$mac") || die "no NIC with MAC $mac for $ns"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link set dev "$dev" down
    ip link set dev "$dev" netns "$ns"
    ip -n "$ns" link set dev "$dev" name cust
    ip -n "$ns" addr add "$gw" dev cust
    ip -n "$ns" link set cust up
    ip -n "$ns" link add uplink type veth peer name "$ns" netns inet
    ip -n "$ns" addr add "100.64.$i.1/30" dev uplink
    ip -n inet addr add "100.64.$i.2/30" dev "$ns"
    ip -n "$ns" link set uplink up
    ip -n inet link set "$ns" up
    ip -n "$ns" route add default via "100.64.$i.2"
    subnet=$(ip -n "$ns" -4 route show dev cust proto kernel scope link | awk '{print $1; exit}')
    ip -n inet route add "$subnet" via "100.64.$i.1"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$ns" nft -f - <<NFT
table inet bcp38 {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "cust" ip saddr != $subnet counter drop comment "BCP38: customer packets must come from $subnet"
    iifname "cust" meta nfproto ipv6 counter drop comment "no IPv6 service"
  }
}
NFT
    log "$ns: gateway $gw on cust (customers $subnet), uplink 100.64.$i.1/30"
  done < "$CONF"
  log "inet: servers ${SERVERS[*]}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
