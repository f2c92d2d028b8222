#!/bin/bash
# Builds the tiny test guest used by the end-to-end suite: a bootable raw disk image (FAT "superfloppy" with
# SYSLINUX in its boot sector) holding the Debian kernel and a busybox initramfs.
#
# The guest's /init loads the virtio and vfat modules, finds the cloud-init config drive by its label
# `config-2`, prints its user data and metadata on the serial console between markers the tests look for,
# asks for a DHCP lease on eth0 if it has one (printing it), handles the ACPI power button (so graceful
# stop and soft reboot work) and otherwise idles.
#
# Needs (Debian): linux-image-amd64 busybox-static cpio syslinux syslinux-common mtools dosfstools kmod
# Usage: build-guest-image.sh OUT.raw
set -euo pipefail
out=${1:?usage: build-guest-image.sh OUT.raw}
kver=${GUEST_KERNEL_VERSION:-$(ls /lib/modules | sort -V | tail -1)}
kernel=/boot/vmlinuz-$kver
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,mnt,etc/acpi/PWRF,lib/modules,tmp}
cp /bin/busybox "$root/bin/busybox"

# Modules in load order (dependencies first), resolved from modules.dep so kernel updates keep working.
wanted="virtio_pci virtio_blk virtio_rng virtio_net vfat nls_cp437 nls_ascii button evdev"
order=()
resolve() {
  local m=$1 dep
  for dep in $(modinfo -k "$kver" -F depends "$m" 2>/dev/null | tr ',' ' '); do resolve "$dep"; done
  local seen
  for seen in "${order[@]:-}"; do [ "$seen" = "$m" ] && return 0; done
  order+=("$m")
}
for m in $wanted; do resolve "$m"; done
: > "$root/lib/modules/load-order"
for m in "${order[@]}"; do
  file=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null || true)
  case "$file" in
    /*) cp "$file" "$root/lib/modules/"; echo "$(basename "$file")" >> "$root/lib/modules/load-order" ;;
    *) ;; # built into the kernel
  esac
done

cat > "$root/etc/acpi/PWRF/00000080" <<'SH'
#!/bin/busybox sh
/bin/busybox echo "SCS-GUEST-POWER-BUTTON" > /dev/ttyS0
/bin/busybox poweroff -f
SH
chmod +x "$root/etc/acpi/PWRF/00000080"

cat > "$root/etc/udhcpc.sh" <<'SH'
#!/bin/busybox sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}"
    echo "SCS-GUEST-LEASE $ip"
    ;;
esac
SH
chmod +x "$root/etc/udhcpc.sh"

cat > "$root/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec > /dev/ttyS0 2>&1
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m 2>/dev/null; done
echo "SCS-GUEST-BOOT uptime=$(cut -d' ' -f1 /proc/uptime)"
# acpid only watches input devices present when it starts: wait for the ACPI power button's.
for i in $(seq 1 50); do grep -q 'Power Button' /proc/bus/input/devices 2>/dev/null && break; sleep 0.1; done
mkdir -p /var/log /var/run
acpid -f -c /etc/acpi &
dev=""
for i in $(seq 1 50); do
  dev=$(findfs LABEL=config-2 2>/dev/null)
  [ -n "$dev" ] && break
  sleep 0.1
done
if [ -n "$dev" ] && mount -t vfat -o ro "$dev" /mnt; then
  echo "SCS-GUEST-CONFIG-DRIVE $dev"
  echo "SCS-GUEST-META-DATA-BEGIN"; cat /mnt/openstack/latest/meta_data.json; echo; echo "SCS-GUEST-META-DATA-END"
  if [ -f /mnt/openstack/latest/user_data ]; then
    echo "SCS-GUEST-USER-DATA-BEGIN"; cat /mnt/openstack/latest/user_data; echo; echo "SCS-GUEST-USER-DATA-END"
  fi
  umount /mnt
else
  echo "SCS-GUEST-NO-CONFIG-DRIVE"
fi
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip link set eth0 up
  udhcpc -i eth0 -n -q -t 15 -T 1 -s /etc/udhcpc.sh || echo "SCS-GUEST-NO-LEASE"
fi
echo "SCS-GUEST-READY"
while true; do sleep 3600; done
SH
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"

# The disk: FAT filesystem over the whole device, SYSLINUX in its boot sector (SeaBIOS boots it as a superfloppy).
size_kib=$(( ( $(stat -c %s "$kernel") + $(stat -c %s "$work/initrd.gz") ) / 1024 + 4096 ))
rm -f "$out.tmp"
mkfs.vfat -C -n SCSGUEST "$out.tmp" "$size_kib" >/dev/null
syslinux --install "$out.tmp"
# no_timer_check: under TCG on a busy host the kernel's IO-APIC timer check can miss ticks and stall or
# panic the boot; tiny TCG appliances (libguestfs) boot with it for the same reason.
cat > "$work/syslinux.cfg" <<'CFG'
DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet panic=-1 no_timer_check
CFG
mcopy -i "$out.tmp" "$kernel" ::vmlinuz
mcopy -i "$out.tmp" "$work/initrd.gz" ::initrd.gz
mcopy -i "$out.tmp" "$work/syslinux.cfg" ::syslinux.cfg
mv "$out.tmp" "$out"
