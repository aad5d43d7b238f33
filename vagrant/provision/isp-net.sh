#!/usr/bin/env bash
# The lab's ISPs and "internet" as network namespaces inside the isp VM (run at boot by
# ecmpd-lab-isp.service; installed as /usr/local/sbin/ecmpd-lab-isp).
#
#   ecmpd-lab-isp up               (re)build everything from /etc/ecmpd-lab/isps
#   ecmpd-lab-isp down             stop the ISPs' servers, delete the namespaces (the NICs
#                                  return to the VM)
#   ecmpd-lab-isp uplink NS down   cut ISP NS from the internet (its gateway still answers)
#   ecmpd-lab-isp uplink NS up     reconnect it: link and routes back
#
# /etc/ecmpd-lab/isps has one line per ISP, "NS,MAC,GATEWAY/PREFIX[,KIND[,ROUTER_MAC]]"
# (line i is ISP i):
#   NS    namespace of the ISP's router; the NIC with MAC (on the WAN network shared with
#         the lab router) moves into it as "cust";
#   KIND  static (default): GATEWAY/PREFIX on cust, the customer configures its address;
#         dhcp:   GATEWAY/PREFIX on cust, and dnsmasq hands out .2 (fixed for ROUTER_MAC)
#                 .. .9 of the subnet with GATEWAY as router, 2-minute leases;
#         pppoe:  no address on cust: pppoe-server answers PPPoE there, and
#                 each session's pppd (CHAP, user "customer", secret "lab") gets local
#                 address GATEWAY and gives the customer .2 .. .9 of the subnet (pool).
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
RUN=${ECMPD_LAB_RUN:-/run/ecmpd-lab}
SERVERS=(198.51.100.10 203.0.113.10)
POOL=8                      # customer addresses .2 .. .(POOL+1) of a DHCP or PPPoE ISP
PPP_USER=customer PPP_SECRET=lab

namespaces() { echo inet; cut -d, -f1 "$CONF" | grep -v '^\s*$' || true; }

# kill_ns NS: end every process inside NS (servers, per-session pppd), so that deleting
# it really frees the namespace and its NIC.
kill_ns() {
  local ns=$1 pids i sig=TERM
  for i in $(seq 50); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    [ "$i" -le 30 ] || sig=KILL
    # shellcheck disable=SC2086  # a list of pids
    kill -s "$sig" $pids 2>/dev/null || true
    sleep 0.1
  done
}

down() {
  local ns
  for ns in $(namespaces); do
    kill_ns "$ns"
    ip netns del "$ns" 2>/dev/null || true
  done
}

# net_of A.B.C.D/P: the network address/prefix of that address.
net_of() {
  local a b c d p ip mask
  IFS=./ read -r a b c d p <<<"$1"
  ip=$(( (a << 24) | (b << 16) | (c << 8) | d ))
  mask=$(( p == 0 ? 0 : (0xffffffff << (32 - p)) & 0xffffffff ))
  ip=$(( ip & mask ))
  echo "$((ip >> 24 & 255)).$((ip >> 16 & 255)).$((ip >> 8 & 255)).$((ip & 255))/$p"
}

# host_in NET/P N: the N-th address of that network.
host_in() {
  local a b c d p
  IFS=./ read -r a b c d p <<<"$1"
  local ip=$(( ((a << 24) | (b << 16) | (c << 8) | d) + $2 ))
  echo "$((ip >> 24 & 255)).$((ip >> 16 & 255)).$((ip >> 8 & 255)).$((ip & 255))"
}

# isp_index NS: the line number of ISP NS in $CONF (its uplink is 100.64.<index>.0/30).
isp_index() {
  local i=0 ns rest
  while IFS=, read -r ns rest; do
    [ -n "$ns" ] || continue
    i=$((i + 1))
    [ "$ns" = "$1" ] && { echo "$i"; return 0; }
  done < "$CONF"
  die "no ISP $1 in $CONF"
}

# routes I NS SUBNET: the ISP's default route to inet and inet's route back to SUBNET.
routes() {
  ip -n "$2" route replace default via "100.64.$1.2"
  ip -n inet route replace "$3" via "100.64.$1.1"
}

dhcp_server() {   # dhcp_server NS GATEWAY/PREFIX SUBNET [ROUTER_MAC]
  local ns=$1 subnet=$3 mac=${4:-}
  local first last
  first=$(host_in "$subnet" 2) last=$(host_in "$subnet" $((POOL + 1)))
  ip netns exec "$ns" dnsmasq --conf-file=/dev/null --port=0 --interface=cust --bind-interfaces \
    --dhcp-authoritative --dhcp-range="$first,$last,2m" ${mac:+--dhcp-host="$mac,$first"} \
    --dhcp-leasefile="$RUN/$ns.leases" --pid-file="$RUN/$ns.dnsmasq.pid" --log-dhcp
}

pppoe_server() {   # pppoe_server NS GATEWAY/PREFIX SUBNET
  local ns=$1 gw=${2%/*} subnet=$3 secrets=/etc/ppp/chap-secrets
  touch "$secrets" && chmod 600 "$secrets"
  grep -q "^$PPP_USER $ns " "$secrets" ||
    echo "$PPP_USER $ns $PPP_SECRET *   # ecmpd lab: the customer of $ns" >> "$secrets"
  cat > "$RUN/$ns.pppd-options" <<OPTS
# ecmpd lab: pppd options of $ns's PPPoE sessions (written by ecmpd-lab-isp up)
name $ns
require-chap
lcp-echo-interval 1
lcp-echo-failure 5
mtu 1492
mru 1492
nodefaultroute
noipdefault
OPTS
  # User-mode PPPoE on this side (Debian's pppoe-server runs each session's pppd over
  # /usr/sbin/pppoe; -k wants a plugin path Debian's ppp does not have); the router's
  # pppd uses the kernel's PPPoE (rp-pppoe plugin), as a real customer's would.
  ip netns exec "$ns" pppoe-server -I cust -C "$ns" -L "$gw" -R "$(host_in "$subnet" 2)" \
    -N "$POOL" -O "$RUN/$ns.pppd-options" -X "$RUN/$ns.pppoe-server.pid"
}

up() {
  local i=0 ns mac gw kind rmac dev subnet custif
  [ -s "$CONF" ] || die "$CONF is missing or empty"
  down
  mkdir -p "$RUN"
  ip netns add inet
  ip -n inet link set lo up
  for a in "${SERVERS[@]}"; do ip -n inet addr add "$a/32" dev lo; done
  while IFS=, read -r ns mac gw kind rmac; do
    [ -n "$ns" ] || continue
    i=$((i + 1))
    kind=${kind:-static}
    case "$kind" in static|dhcp|pppoe) ;; *) die "$ns: unknown kind $kind (static, dhcp, pppoe)" ;; esac
    dev=$(wait_iface_by_mac "$mac") || die "no NIC with MAC $mac for $ns"
    subnet=$(net_of "$gw")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link set dev "$dev" down
    ip link set dev "$dev" netns "$ns"
    ip -n "$ns" link set dev "$dev" name cust
    [ "$kind" = pppoe ] || ip -n "$ns" addr add "$gw" dev cust
    ip -n "$ns" link set cust up
    ip -n "$ns" link add uplink type veth peer name "$ns" netns inet
    ip -n "$ns" addr add "100.64.$i.1/30" dev uplink
    ip -n inet addr add "100.64.$i.2/30" dev "$ns"
    ip -n "$ns" link set uplink up
    ip -n inet link set "$ns" up
    routes "$i" "$ns" "$subnet"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    custif=cust
    [ "$kind" = pppoe ] && custif='ppp*'   # customer packets arrive on the session's pppN
    ip netns exec "$ns" nft -f - <<NFT
table inet bcp38 {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$custif" ip saddr != $subnet counter drop comment "BCP38: customer packets must come from $subnet"
    iifname "$custif" meta nfproto ipv6 counter drop comment "no IPv6 service"
  }
}
NFT
    case "$kind" in
      static) log "$ns: gateway $gw on cust (customers $subnet), uplink 100.64.$i.1/30" ;;
      dhcp) dhcp_server "$ns" "$gw" "$subnet" "$rmac"
            log "$ns: DHCP on cust, gateway $gw (customers $subnet${rmac:+, $rmac gets $(host_in "$subnet" 2)}), uplink 100.64.$i.1/30" ;;
      pppoe) pppoe_server "$ns" "$gw" "$subnet"
             log "$ns: PPPoE on cust, sessions ${gw%/*} -> $(host_in "$subnet" 2)..$(host_in "$subnet" $((POOL + 1))), uplink 100.64.$i.1/30" ;;
    esac
  done < "$CONF"
  log "inet: servers ${SERVERS[*]}"
}

uplink() {   # uplink NS up|down
  local ns=${1:-} how=${2:-} i gw subnet
  if [ -z "$ns" ] || ! [[ "$how" =~ ^(up|down)$ ]]; then die "usage: $0 uplink NS up|down"; fi
  i=$(isp_index "$ns")
  ip -n "$ns" link set uplink "$how"
  if [ "$how" = up ]; then
    # The kernel dropped the routes through uplink when it went down: put them back.
    gw=$(awk -F, -v ns="$ns" '$1 == ns {print $3}' "$CONF")
    subnet=$(net_of "$gw")
    routes "$i" "$ns" "$subnet"
  fi
  log "$ns: uplink $how"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  uplink) shift; uplink "$@" ;;
  *) echo "usage: $0 up|down|uplink NS up|down" >&2; exit 2 ;;
esac
