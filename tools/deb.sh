#!/usr/bin/env bash
# The Debian package: build it, lintian it, list it; or install it in a fresh chroot.
#
#   tools/deb.sh build   build/deb/ecmpd_<version>_all.deb from a copy of this tree
#                        (dpkg-buildpackage -us -uc -b), then `lintian --fail-on error`
#                        and `dpkg-deb -c`; fails when lintian reports an error or the
#                        package holds lab, bench or test code.  What CI runs (./dev deb).
#   tools/deb.sh check   install that .deb with apt in a clean Debian 12 made by
#                        debootstrap from this machine's apt mirror, run both commands
#                        there, purge it.  Minutes: ./dev deb-check, not in ./dev test.
#
# The pinned wheels the package carries (debian/vendor.txt) are downloaded here, before
# the build; dpkg-buildpackage itself never uses the network.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/deb
SUITE=bookworm

say() { echo "deb: $*"; }

vendor() {
  local missing=0 name
  for name in $(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' debian/vendor.txt); do
    compgen -G "debian/vendor/$name-*.whl" >/dev/null || missing=1
  done
  [ $missing -eq 0 ] && return
  say "fetching the pinned wheels of debian/vendor.txt into debian/vendor"
  /usr/bin/python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary :all: --require-hashes -r debian/vendor.txt -d debian/vendor
}

build() {
  local start=$SECONDS
  vendor
  rm -rf "$OUT"
  mkdir -p "$OUT/src"
  # a copy, so dpkg-buildpackage's files (../*.deb, debian/ecmpd/, build/) stay out of
  # the working tree
  tar --exclude-vcs --exclude=./.venv --exclude=./build --exclude=./.vagrant \
      --exclude=./vagrant/.wheelhouse --exclude=./vagrant/.vagrant --exclude='__pycache__' \
      --exclude='*.egg-info' --exclude=./debian/build --exclude=./debian/ecmpd -cf - . |
    tar -C "$OUT/src" -xf -
  # Debian's tools only, as on a build daemon (no pyenv or /usr/local python first)
  (cd "$OUT/src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b \
     >../build.log 2>&1) ||
    { tail -40 "$OUT/build.log" >&2; say "dpkg-buildpackage failed (log: $OUT/build.log)"; exit 1; }
  local deb
  deb=$(ls "$OUT"/ecmpd_*_all.deb)
  say "built $deb in $((SECONDS - start))s"
  say "lintian:"
  lintian --fail-on error --display-level '>=warning' --tag-display-limit 0 "$OUT"/*.changes |
    tee "$OUT/lintian.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { say "lintian reports errors"; exit 1; }
  dpkg-deb -c "$deb" | tee "$OUT/contents.txt"
  if awk '{print $6}' "$OUT/contents.txt" |
       grep -E '/(lab|bench|tests?|vagrant|tools)/|^\./usr/share/ecmpd/ecmpd/.*test'; then
    say "the package holds lab, bench, test or build-tool files (above)"
    exit 1
  fi
  say "ok in $((SECONDS - start))s: $deb"
}

mirror() {
  # the first Debian mirror this machine's apt uses (deb822 or one-line format)
  local uri
  uri=$(grep -hs -m1 '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | head -1)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '$2 ~ /debian\/?$/ {print $2; exit}')
  echo "${uri:-http://deb.debian.org/debian}"
}

check() {
  local start=$SECONDS deb root base
  deb=$(ls "$OUT"/ecmpd_*_all.deb 2>/dev/null) || { say "no .deb: run ./dev deb first"; exit 1; }
  root=${DEB_CHECK_DIR:-/var/tmp/ecmpd-deb-check}
  base=$root/base
  if [ ! -x "$base/usr/bin/apt-get" ]; then
    rm -rf "$base"
    say "debootstrap $SUITE from $(mirror) into $base (once; reused afterwards)"
    debootstrap --variant=minbase "$SUITE" "$base" "$(mirror)" >"$root.debootstrap.log" 2>&1 ||
      { tail -20 "$root.debootstrap.log" >&2; exit 1; }
  fi
  local sys=$root/run
  # never remove through a mount: a /proc left mounted by an interrupted run goes first
  if mountpoint -q "$sys/proc"; then umount "$sys/proc"; fi
  rm -rf --one-file-system "$sys"
  cp -a "$base" "$sys"
  trap "umount '$sys/proc' 2>/dev/null || true" EXIT
  mount -t proc proc "$sys/proc"
  printf '#!/bin/sh\nexit 101\n' >"$sys/usr/sbin/policy-rc.d"   # start no service here
  chmod +x "$sys/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$sys/etc/resolv.conf"
  cp "$deb" "$sys/tmp/"
  local name
  name=$(basename "$deb")
  say "installing $name with apt in the fresh $SUITE"
  chroot "$sys" sh -ec "
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends /tmp/$name >/tmp/install.log 2>&1 ||
      { cat /tmp/install.log; exit 1; }
    echo '--- installed:'; dpkg -s ecmpd | sed -n '/^Version/p;/^Depends/p'
    ecmpd --version
    ecmpctl --version
    ecmpd --config /etc/ecmpd/ecmpd.yaml --check
    test -f /usr/share/man/man8/ecmpd.8.gz && test -f /usr/share/man/man8/ecmpctl.8.gz
    test -f /usr/share/man/man5/ecmpd.yaml.5.gz
    test -f /usr/share/bash-completion/completions/ecmpctl
    test -f /lib/systemd/system/ecmpd.service
    grep -q '^ExecStart=/usr/bin/ecmpd ' /lib/systemd/system/ecmpd.service
    dpkg-query -W -f='\${Conffiles}\n' ecmpd | grep -q /etc/ecmpd/ecmpd.yaml
    python3 -c 'import sys; sys.path.insert(0, \"/usr/share/ecmpd\"); import pyroute2, icmplib, nftables, yaml; print(\"pyroute2\", pyroute2.__version__, \"from\", pyroute2.__file__); print(\"nftables from\", nftables.__file__)'
    apt-get purge -y -qq ecmpd >/dev/null 2>&1   # (apt: no /dev/pts in the chroot)
    ! test -e /usr/bin/ecmpd && ! test -e /etc/ecmpd/ecmpd.yaml
    echo '--- purged cleanly'
  "
  say "ok in $((SECONDS - start))s: $name installs, runs --version and --check, and purges in a clean $SUITE"
}

case ${1:-} in
  build) build ;;
  check) check ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
