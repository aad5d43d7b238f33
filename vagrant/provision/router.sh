#!/usr/bin/env bash
# Provision the lab router: name the lab NICs as config/ecmpd.yaml expects, give them
# their addresses (no default route: ecmpd installs it), install ecmpd from the synced
# project folder into a venv from the wheelhouse, and run it under systemd/ecmpd.service
# with config/ecmpd.yaml as /etc/ecmpd/ecmpd.yaml.
#
#   router.sh LAN_SPEC WAN_SPEC...      each spec NAME,MAC,CIDR (see common.sh)
set -euo pipefail
# shellcheck source=common.sh
. /vagrant/vagrant/provision/common.sh

PROJECT=/vagrant
WHEELHOUSE=$PROJECT/vagrant/.wheelhouse
VENV=/opt/ecmpd/venv
CONF=/etc/ecmpd/ecmpd.yaml
[ $# -ge 2 ] || die "usage: router.sh LAN_SPEC WAN_SPEC..."

need "command -v ip" iproute2 \
     "command -v nft" nftables \
     "ldconfig -p | grep -q 'libnftables\.so\.1 '" libnftables1 \
     "python3 -c 'import ensurepip, venv'" python3-venv \
     "command -v ping" iputils-ping

# --- interfaces -------------------------------------------------------------------
name_nics "$@"
no_default_via "$(mgmt_iface "$@")"
static_ifaces - "$@"

# --- ecmpd into a venv, offline ----------------------------------------------------
compgen -G "$WHEELHOUSE/*.whl" >/dev/null ||
  die "$WHEELHOUSE has no wheels: run vagrant/wheelhouse.sh on the host, then 'vagrant provision router'"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
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
if [ -f "$CONF" ] && ! cmp -s "$PROJECT/config/ecmpd.yaml" "$CONF"; then
  cp -p "$CONF" "$CONF.previous"
  log "$CONF differed from config/ecmpd.yaml: replaced, old one kept as $CONF.previous"
fi
install -m 0644 "$PROJECT/config/ecmpd.yaml" "$CONF"
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
log "router ready (WANs turn UP once the isp VM answers the probes)"
