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

# wan_ifaces SPEC...: the router's DHCP and PPPoE WANs ("NAME,MAC,dhcp" and
# "NAME,MAC,pppoe:PPPIF"), as a user sets them up with ifupdown, brought up now and at
# every boot.  No default route is forced or removed: dhclient installs its own in table
# main (ecmpd learns the gateway there, `gateway: auto`), pppd adds none (`nodefaultroute`:
# ecmpd's nexthop for a point-to-point link is the device).
wan_ifaces() {
  local conf=/etc/network/interfaces.d/ecmpd-lab-wans dhconf=/etc/dhcp/dhclient.conf
  local secrets=/etc/ppp/chap-secrets spec name mac how ppp dhcp=0
  echo "# ecmpd lab: the router's DHCP and PPPoE WANs (written by vagrant provisioning)" > "$conf"
  [ ! -f "$dhconf" ] || sed -i '/^# ecmpd-lab begin/,/^# ecmpd-lab end/d' "$dhconf"
  for spec in "$@"; do
    IFS=, read -r name mac how <<<"$spec"
    case "$how" in
      dhcp)
        # allow-hotplug: dhclient starts when the NIC appears and never holds up the boot
        # (it waits for the ISP in the background).
        printf '\n# %s: DHCP; dhclient installs "default via <ISP gateway> dev %s" in main\nallow-hotplug %s\niface %s inet dhcp\n' \
          "$name" "$name" "$name" "$name" >> "$conf"
        dhcp=1
        ;;
      pppoe:*)
        ppp=${how#pppoe:}
        install -d -m 0755 /etc/ppp/peers
        cat > "/etc/ppp/peers/$name" <<PEER
# ecmpd lab: PPPoE over $name -> $ppp (written by vagrant provisioning).
# pon $name / poff $name; ifupdown: \`iface $ppp inet ppp\` with \`provider $name\`.
plugin rp-pppoe.so
nic-$name
user $PPP_USER
unit ${ppp#ppp}
noipdefault
# No default route from pppd: ecmpd (gateway: auto) routes over $ppp itself, a
# point-to-point link.  With \`defaultroute\` pppd would add "default dev $ppp" to main
# only when main has no default route yet (here dhclient's via wlan1 is there); ecmpd's
# rule shadows main either way.
nodefaultroute
noauth
hide-password
# Reconnect forever (a new session may get another address from the ISP's pool).
persist
maxfail 0
holdoff 2
# A dead session is noticed within ~5 s.
lcp-echo-interval 1
lcp-echo-failure 5
mtu 1492
mru 1492
PEER
        touch "$secrets" && chmod 600 "$secrets"
        grep -q "^$PPP_USER \* " "$secrets" || echo "$PPP_USER * $PPP_SECRET *" >> "$secrets"
        printf '\n# %s: PPPoE over %s (pppd: /etc/ppp/peers/%s)\nauto %s\niface %s inet ppp\n    pre-up ip link set dev %s up\n    provider %s\n' \
          "$ppp" "$name" "$name" "$ppp" "$ppp" "$name" "$name" >> "$conf"
        ;;
      *) die "wan_ifaces: $spec is neither dhcp nor pppoe:PPPIF" ;;
    esac
  done
  # dhclient retries every 10 s, not every 5 min, while an ISP does not answer (the isp
  # VM may boot after the router).  Global, not an `interface "NAME" {}` block: with one,
  # every dhclient (eth0's too) would also run DHCP on that interface.
  if [ "$dhcp" = 1 ]; then
    printf '# ecmpd-lab begin (written by vagrant provisioning)\nretry 10;\n# ecmpd-lab end\n' >> "$dhconf"
  fi
  for spec in "$@"; do
    IFS=, read -r name mac how <<<"$spec"
    case "$how" in
      dhcp)
        if ip -4 -o addr show dev "$name" scope global | grep -q inet; then
          log "$name: DHCP ($(ip -4 -o addr show dev "$name" scope global | awk '{print $4; exit}'))"
        else
          ip link set dev "$name" up
          systemctl --no-block restart "ifup@$name.service"
          log "$name: DHCP (dhclient started; it waits for the ISP in the background)"
        fi
        ;;
      pppoe:*)
        ppp=${how#pppoe:}
        if pgrep -f "pppd call $name( |\$)" >/dev/null; then
          log "$ppp: pppd over $name already runs"
        else
          ifup "$ppp"
          log "$ppp: pppd over $name started (persist: it connects once the ISP answers)"
        fi
        ;;
    esac
  done
}
