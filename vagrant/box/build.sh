#!/usr/bin/env bash
# Build the lab's offline Vagrant box: Debian 12 (bookworm), libvirt provider, with every
# package the lab's guests use already installed (box/packages), so the guests need no
# internet.  Adds it to Vagrant as ecmpd-lab/bookworm; use it with
#   ECMPD_LAB_BOX=ecmpd-lab/bookworm vagrant up
#
#   sudo ./box/build.sh [--driver qemu] [--name NAME] [--no-add]
#     --driver qemu   write libvirt.driver = "qemu" (software emulation) into the box, for
#                     hosts without a usable KVM; by default libvirt's default (kvm) is used
#     --name NAME     box name (default ecmpd-lab/bookworm)
#     --no-add        only build vagrant/.box/ecmpd-lab-bookworm.box, do not `vagrant box add`
#                     (by default the file is removed once Vagrant has added the box)
#   MIRROR=http://deb.debian.org/debian   Debian mirror (default: mmdebstrap's choice)
#   VAGRANT_PUBKEY=FILE                   Vagrant's insecure public key (default: found in
#                                         the Vagrant installation)
#
# Needs root (a loop device and a mount for the boot loader) and, on a Debian/Ubuntu host:
#   apt-get install mmdebstrap extlinux syslinux-common qemu-utils e2fsprogs fdisk vagrant
# The box: a 4 GB qcow2 disk, one ext4 partition booted by extlinux, Debian's generic
# kernel (the cloud kernel has no PPP), ifupdown with eth0 on DHCP, user vagrant
# (password vagrant, passwordless sudo, Vagrant's insecure key).  Takes 2-3 minutes and
# ~600 MB of downloads.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(dirname "$here")/.box
name=ecmpd-lab/bookworm
driver=
add=1
while [ $# -gt 0 ]; do
  case "$1" in
    --driver) driver=${2:?--driver needs a value}; shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --no-add) add=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "build.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (sudo): it needs a loop device and a mount"
case "$driver" in ''|qemu|kvm) ;; *) die "--driver must be qemu or kvm" ;; esac
for tool in mmdebstrap extlinux qemu-img mkfs.ext4 sfdisk losetup; do
  command -v "$tool" >/dev/null || die "$tool is missing (see the header of $0)"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || die "$mbr is missing (apt-get install syslinux-common)"

key=${VAGRANT_PUBKEY:-}
if [ -z "$key" ]; then
  for k in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
           /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub \
           /opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub; do
    [ -f "$k" ] && { key=$k; break; }
  done
fi
if [ -z "$key" ] || [ ! -f "$key" ]; then
  die "Vagrant's insecure public key not found: set VAGRANT_PUBKEY=FILE"
fi

pkgs=$(grep -v '^\s*#' "$here/packages" | awk 'NF {print $1}' | paste -sd, -)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/ecmpd-lab-box.XXXXXX")
loop=
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "build.sh: debootstrapping bookworm with: $pkgs"
# shellcheck disable=SC2016  # the hooks' $1 is expanded by mmdebstrap's shell
mmdebstrap --variant=minbase --mode=root --include="$pkgs" \
  --customize-hook='echo vagrant-box > "$1/etc/hostname"' \
  --customize-hook='chroot "$1" useradd -m -s /bin/bash -G sudo vagrant' \
  --customize-hook='echo "vagrant:vagrant" | chroot "$1" chpasswd' \
  --customize-hook='echo "vagrant ALL=(ALL) NOPASSWD:ALL" > "$1/etc/sudoers.d/vagrant"; chmod 440 "$1/etc/sudoers.d/vagrant"' \
  --customize-hook="install -d -m 700 \"\$1/home/vagrant/.ssh\"; install -m 600 '$key' \"\$1/home/vagrant/.ssh/authorized_keys\"" \
  --customize-hook='chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh' \
  --customize-hook='printf "auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n\nsource /etc/network/interfaces.d/*\n" > "$1/etc/network/interfaces"' \
  --customize-hook='echo "UseDNS no" > "$1/etc/ssh/sshd_config.d/vagrant.conf"' \
  bookworm "$work/rootfs" ${MIRROR:+"$MIRROR"}

for mod in ppp_generic pppoe; do
  find "$work/rootfs/lib/modules" -name "$mod.ko*" | grep -q . ||
    die "the kernel has no $mod module: PPPoE would not work in the lab"
done

echo "build.sh: disk image"
raw=$work/disk.raw
truncate -s 4G "$raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
loop=$(losetup -f --show -P "$raw")
sleep 1; [ -b "${loop}p1" ] || partx -a "$loop"
mkfs.ext4 -q -L root "${loop}p1"
uuid=$(blkid -s UUID -o value "${loop}p1")
mkdir -p "$work/mnt" && mount "${loop}p1" "$work/mnt"
cp -a "$work/rootfs/." "$work/mnt/"
rm -rf "$work/rootfs"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" > "$work/mnt/etc/fstab"
kver=$(find "$work/mnt/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -1)
[ -n "$kver" ] || die "no kernel in /boot"
mkdir -p "$work/mnt/boot/extlinux"
printf 'DEFAULT debian\nTIMEOUT 1\nLABEL debian\n  LINUX /boot/vmlinuz-%s\n  INITRD /boot/initrd.img-%s\n  APPEND root=UUID=%s ro console=ttyS0 net.ifnames=0 biosdevname=0 quiet\n' \
  "$kver" "$kver" "$uuid" > "$work/mnt/boot/extlinux/extlinux.conf"
extlinux --install "$work/mnt/boot/extlinux" >/dev/null
umount "$work/mnt"
dd if="$mbr" of="$loop" bs=440 count=1 conv=notrunc status=none
sync; losetup -d "$loop"; loop=

echo "build.sh: box"
mkdir -p "$work/box" "$out"
qemu-img convert -O qcow2 "$raw" "$work/box/box.img" && rm -f "$raw"
echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 4}' > "$work/box/metadata.json"
{
  echo 'Vagrant.configure("2") do |config|'
  echo '  config.vm.provider :libvirt do |libvirt|'
  [ -z "$driver" ] || echo "    libvirt.driver = \"$driver\""
  echo '    libvirt.disk_bus = "virtio"'
  echo '    libvirt.nic_model_type = "virtio"'
  echo '  end'
  echo 'end'
} > "$work/box/Vagrantfile"
file=$out/ecmpd-lab-bookworm.box
tar -C "$work/box" -czf "$file" metadata.json Vagrantfile box.img
[ -z "${SUDO_USER:-}" ] || chown "$SUDO_USER" "$out" "$file"
echo "build.sh: $file ($(du -h "$file" | cut -f1))"

if [ "$add" = 1 ]; then
  command -v vagrant >/dev/null || die "vagrant is missing: add the box later with: vagrant box add --force --name $name $file"
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    sudo -u "$SUDO_USER" -H vagrant box add --force --name "$name" "$file"
  else
    vagrant box add --force --name "$name" "$file"
  fi
  rm -f "$file"   # Vagrant keeps its own copy
  echo "build.sh: box $name added; use it with: ECMPD_LAB_BOX=$name vagrant up"
fi
