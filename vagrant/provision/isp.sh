#!/usr/bin/env bash
# Provision the isp VM: both ISPs and the "internet" as network namespaces (see
# isp-net.sh), rebuilt at every boot by ecmpd-lab-isp.service with their DHCP and PPPoE
# servers, and the internet server (labtool serve, in namespace inet) as
# ecmpd-lab-server.service.
#
#   isp.sh ISP_SPEC...      each NS,MAC,GATEWAY/PREFIX,KIND,ROUTER_MAC in WAN order
#                           (wlan1 first); KIND static, dhcp or pppoe (see isp-net.sh)
set -euo pipefail
# shellcheck source=common.sh
. /vagrant/vagrant/provision/common.sh
[ $# -ge 1 ] || die "usage: isp.sh NS,MAC,GATEWAY/PREFIX[,KIND[,ROUTER_MAC]]..."

checks=("command -v ip" iproute2
        "command -v nft" nftables
        "command -v python3" python3)
case " $* " in *,dhcp,*|*,dhcp\ *) checks+=("command -v dnsmasq" dnsmasq-base) ;; esac
case " $* " in
  *,pppoe,*|*,pppoe\ *) checks+=("command -v pppoe-server" pppoe "command -v pppd" ppp) ;;
esac
need "${checks[@]}"

install -D -m 0644 "$LAB_DIR/common.sh" /usr/local/lib/ecmpd-lab/common.sh
install -D -m 0755 "$LAB_DIR/isp-net.sh" /usr/local/sbin/ecmpd-lab-isp
install -D -m 0755 "$LAB_DIR/labtool.py" /usr/local/bin/labtool
install -d "$LAB_ETC"
printf '%s\n' "$@" > "$LAB_ETC/isps"
install -m 0644 "$LAB_DIR/ecmpd-lab-isp.service" "$LAB_DIR/ecmpd-lab-server.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable ecmpd-lab-isp.service ecmpd-lab-server.service >/dev/null 2>&1
# Restarting the namespaces also restarts the server (PartOf=); start it if it was not running.
systemctl restart ecmpd-lab-isp.service
systemctl start ecmpd-lab-server.service

deadline=$((SECONDS + 60))
until ip netns exec inet ss -Htln 'sport = :80' | grep -q .; do
  [ $SECONDS -lt $deadline ] || { journalctl -u ecmpd-lab-server -n 20 --no-pager >&2; die "server not listening"; }
  sleep 0.5
done
for spec in "$@"; do
  IFS=, read -r ns _ <<<"$spec"
  log "$ns: $(ip -n "$ns" -br addr show dev cust)"
done
log "isp ready: try 'sudo ip -n isp1 link set cust down' to fail the first WAN (README.md)"
