#!/usr/bin/env bash
# Provision the lab router: name the lab NICs as the lab's ecmpd config expects, bring up
# the LAN (static) and the WANs (static, DHCP or PPPoE), install ecmpd from the synced
# project folder into a venv from the wheelhouse, and run it under systemd/ecmpd.service
# with that config (vagrant/ecmpd.yaml, or $ECMPD_LAB_CONFIG) as /etc/ecmpd/ecmpd.yaml.
#
#   router.sh LAN_SPEC WAN_SPEC...
#     LAN_SPEC  NAME,MAC,CIDR
#     WAN_SPEC  NAME,MAC,CIDR         static address, no gateway (ecmpd routes)
#               NAME,MAC,dhcp         ifupdown + dhclient: `iface NAME inet dhcp`; dhclient
#                                     installs the default route via the ISP in table main
#               NAME,MAC,pppoe:PPPIF  pppd over the NIC NAME (peer file /etc/ppp/peers/NAME,
#                                     `persist`) creates PPPIF; `pon NAME` / `poff NAME`
set -euo pipefail
# shellcheck source=common.sh
. /vagrant/vagrant/provision/common.sh

PROJECT=/vagrant
WHEELHOUSE=$PROJECT/vagrant/.wheelhouse
VENV=/opt/ecmpd/venv
CONF=/etc/ecmpd/ecmpd.yaml
SRC_CONF=$PROJECT/${ECMPD_LAB_CONFIG:-vagrant/ecmpd.yaml}
# shellcheck disable=SC2034  # used by wan_ifaces (common.sh)
PPP_USER=customer PPP_SECRET=lab     # the ISP's CHAP secret (isp-net.sh)
[ $# -ge 2 ] || die "usage: router.sh LAN_SPEC WAN_SPEC..."
[ -f "$SRC_CONF" ] || die "$SRC_CONF is missing"

statics=("$1") dhcps=() pppoes=()
for spec in "${@:2}"; do
  case "${spec##*,}" in
    dhcp) dhcps+=("$spec") ;;
    pppoe:*) pppoes+=("$spec") ;;
    *) statics+=("$spec") ;;
  esac
done

checks=("command -v ip" iproute2
        "command -v nft" nftables
        "ldconfig -p | grep -q 'libnftables\.so\.1 '" libnftables1
        "python3 -c 'import nftables'" python3-nftables
        "python3 -c 'import prometheus_client'" python3-prometheus-client
        "python3 -c 'import ensurepip, venv'" python3-venv
        "command -v ping" iputils-ping)
[ ${#dhcps[@]} -eq 0 ] || checks+=("command -v dhclient" isc-dhcp-client)
[ ${#pppoes[@]} -eq 0 ] || checks+=("command -v pppd && command -v pon" ppp)
need "${checks[@]}"

# --- interfaces -------------------------------------------------------------------
name_nics "$@"
no_default_via "$(mgmt_iface "$@")"
static_ifaces - "${statics[@]}"
wan_ifaces "${dhcps[@]}" "${pppoes[@]}"

# --- ecmpd into a venv, offline ----------------------------------------------------
compgen -G "$WHEELHOUSE/*.whl" >/dev/null ||
  die "$WHEELHOUSE has no wheels: run vagrant/wheelhouse.sh on the host, then 'vagrant provision router'"
# Debian's python3-nftables (and prometheus-client) through the system site packages, as
# the .deb and the dev venv use them
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
pipi() { "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELHOUSE" \
           --disable-pip-version-check --no-warn-script-location -q "$@"; }
log "installing ecmpd from $PROJECT (offline, from the wheelhouse)"
# pip always rebuilds and reinstalls a project given as a directory, so a re-provision
# picks up code changes even when the version number did not change.
pipi "$PROJECT"
# The unit runs /usr/local/bin/ecmpd, as after a system-wide `pip install`.
ln -sfn "$VENV/bin/ecmpd" /usr/local/bin/ecmpd
ln -sfn "$VENV/bin/ecmpctl" /usr/local/bin/ecmpctl

# --- config and unit ----------------------------------------------------------------
install -d -m 0755 /etc/ecmpd
if [ -f "$CONF" ] && ! cmp -s "$SRC_CONF" "$CONF"; then
  cp -p "$CONF" "$CONF.previous"
  log "$CONF differed from ${SRC_CONF#"$PROJECT"/}: replaced, old one kept as $CONF.previous"
fi
install -m 0644 "$SRC_CONF" "$CONF"
/usr/local/bin/ecmpd --config "$CONF" --check

install -m 0644 "$PROJECT/systemd/ecmpd.service" /etc/systemd/system/ecmpd.service
systemctl daemon-reload
systemctl enable ecmpd.service >/dev/null 2>&1
log "starting ecmpd.service"
systemctl restart ecmpd.service || {
  journalctl -u ecmpd.service -n 30 --no-pager >&2
  die "ecmpd.service did not start"
}

# The control socket answers once the daemon is ready (Type=notify already waited).
deadline=$((SECONDS + 60))
until ecmpctl status >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { journalctl -u ecmpd.service -n 30 --no-pager >&2; die "ecmpctl status fails"; }
  sleep 0.5
done
ecmpctl status
log "router ready (WANs turn UP once the isp VM's DHCP and PPPoE servers answer)"
