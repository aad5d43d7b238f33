#!/usr/bin/env bash
# Provision the lab client: one NIC on the LAN with a static address and the router as
# its default gateway, and `labtool` to see which WAN its connections use.
#
#   client.sh NAME,MAC,CIDR GATEWAY [LABEL=ADDRESS...]
#   LABEL=ADDRESS: WAN names for the router's WAN addresses (labtool wans prints them)
set -euo pipefail
# shellcheck source=common.sh
. /vagrant/vagrant/provision/common.sh
[ $# -ge 2 ] || die "usage: client.sh NAME,MAC,CIDR GATEWAY [LABEL=ADDRESS...]"
nic=$1 gateway=$2
shift 2

need "command -v ip" iproute2 \
     "command -v python3" python3 \
     "command -v ping" iputils-ping

name_nics "$nic"
no_default_via "$(mgmt_iface "$nic")"
static_ifaces "$gateway" "$nic"
install -D -m 0755 "$LAB_DIR/labtool.py" /usr/local/bin/labtool
install -d "$LAB_ETC"
: > "$LAB_ETC/labels"
for label in "$@"; do
  echo "${label#*=} ${label%%=*}" >> "$LAB_ETC/labels"
done

# End-to-end check (a warning only: the isp VM may still be booting).
server=198.51.100.10
log "waiting for $server through the router (up to 3 minutes)"
deadline=$((SECONDS + 180))
until labtool wans -n 1 --quiet "$server" >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    log "WARNING: $server is not reachable yet; once router and isp are up: vagrant ssh client -c 'labtool wans $server'"
    exit 0
  fi
  sleep 1
done
labtool wans -n 30 "$server" || true
log "client ready"
