# shellcheck shell=bash
# Helpers shared by the lab's provisioning scripts (sourced; runs as root in a guest).
# NIC specs are "NAME,MAC,CIDR": the NIC with that MAC gets that name and address.
set -euo pipefail

# shellcheck disable=SC2034  # used by the scripts that source this file
LAB_DIR=/vagrant/vagrant/provision
# shellcheck disable=SC2034
LAB_ETC=/etc/ecmpd-lab

log() { echo "ecmpd-lab: $*"; }
die() { echo "ecmpd-lab: ERROR: $*" >&2; exit 1; }

# need CHECK PKG ...: install the Debian package PKG when the shell test CHECK fails.
# Guests without internet must get everything from the box: then say so clearly.
need() {
  local missing=()
  while [ $# -ge 2 ]; do
    bash -c "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (needs internet in the guest)"
  if ! { apt-get -o Acquire::Retries=0 -o Acquire::http::Timeout=15 update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    die "missing ${missing[*]} and apt-get could not install them; use a box that has them (vagrant/README.md)"
  fi
}

# iface_by_mac MAC: the current name of the NIC with that MAC (fails when there is none).
iface_by_mac() {
  local mac=${1,,} f
  for f in /sys/class/net/*/address; do
    if [ "$(cat "$f" 2>/dev/null)" = "$mac" ]; then
      basename "$(dirname "$f")"
      return 0
    fi
  done
  return 1
}

# wait_iface_by_mac MAC [SECONDS]: like iface_by_mac, polling until a deadline (a NIC
# leaving a deleted namespace comes back asynchronously).
wait_iface_by_mac() {
  local deadline=$((SECONDS + ${2:-15}))
  until iface_by_mac "$1"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# name_nics SPEC...: rename the NICs now, and on every boot by a udev rule on the MAC.
name_nics() {
  local rules=/etc/udev/rules.d/70-ecmpd-lab.rules spec name mac cidr cur
  mkdir -p /etc/udev/rules.d
  echo "# ecmpd lab: lab NICs are named by MAC address (written by vagrant provisioning)" > "$rules"
  for spec in "$@"; do
    IFS=, read -r name mac cidr <<<"$spec"
    mac=${mac,,}
    echo "SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"$mac\", NAME=\"$name\"" >> "$rules"
    cur=$(iface_by_mac "$mac") || die "no NIC with MAC $mac (is the VM attached to its lab network?)"
    if [ "$cur" != "$name" ]; then
      ip link set dev "$cur" down
      ip link set dev "$cur" name "$name"
      log "renamed $cur ($mac) to $name"
    fi
  done
}

# mgmt_iface SPEC...: the management NIC (Vagrant's ssh path): the first NIC with a global
# IPv4 address that is not one of the lab NICs.
mgmt_iface() {
  local macs=" " spec name mac cidr f dev
  for spec in "$@"; do IFS=, read -r name mac cidr <<<"$spec"; macs+="${mac,,} "; done
  for f in /sys/class/net/*; do
    dev=${f##*/}
    [ "$dev" = lo ] && continue
    [[ "$macs" == *" $(cat "$f/address") "* ]] && continue
    if ip -4 -o addr show dev "$dev" scope global | grep -q inet; then
      echo "$dev"
      return 0
    fi
  done
  die "no management NIC found"
}

# no_default_via DEV: DEV (the management NIC, on DHCP) must never carry the default
# route: the lab's default route goes through the lab networks.
no_default_via() {
  local dev=$1
  mkdir -p /etc/dhcp/dhclient-enter-hooks.d
  cat > /etc/dhcp/dhclient-enter-hooks.d/ecmpd-lab <<EOF
# ecmpd lab: no default route from DHCP on the management NIC $dev (written by provisioning).
if [ "\$interface" = "$dev" ]; then unset new_routers; fi
EOF
  while ip -4 route show default dev "$dev" | grep -q .; do
    ip -4 route del default dev "$dev"
  done
}

# static_ifaces GATEWAY SPEC...: ifupdown stanzas with static addresses for the lab NICs
# (GATEWAY "-" for none), brought up now and at every boot.
static_ifaces() {
  local gw=$1 conf=/etc/network/interfaces.d/ecmpd-lab spec name mac cidr
  shift
  grep -Eq '^\s*source(-directory)? +/etc/network/interfaces\.d' /etc/network/interfaces ||
    echo "source /etc/network/interfaces.d/*" >> /etc/network/interfaces
  mkdir -p /etc/network/interfaces.d
  echo "# ecmpd lab (written by vagrant provisioning)" > "$conf"
  for spec in "$@"; do
    IFS=, read -r name mac cidr <<<"$spec"
    printf '\nauto %s\niface %s inet static\n    address %s\n' "$name" "$name" "$cidr" >> "$conf"
    if [ "$gw" != - ]; then
      printf '    gateway %s\n' "$gw" >> "$conf"
      gw=-   # one default route
    fi
  done
  for spec in "$@"; do
    IFS=, read -r name mac cidr <<<"$spec"
    if ! ip -4 -o addr show dev "$name" | grep -qw "$cidr"; then
      ifdown --force "$name" >/dev/null 2>&1 || true
      ifup "$name"
    fi
    log "$name: $cidr"
  done
}
