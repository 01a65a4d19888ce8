#!/usr/bin/env bash
# make-image.sh - build the Debian system image that janus's disk-boot test
# (frontend/tests/debian.rs)
# and benchmark (benches/debian-boot.sh) boot, kept out of git in tests/debian/assets/ like the
# Linux test assets:
#
#   tests/debian/make-image.sh           build debian.img unless it is there and newer than
#                                        this script
#   tests/debian/make-image.sh --force   build it again
#
#   debian.img   a raw disk (1 GiB, sparse) with an MBR partition table: partition 1 (ext4,
#                from sector 2048, UUID 4a616e75-732d-4465-6269-616e2d726f6f) holds Debian
#                bookworm amd64 with its updates and security updates (mmdebstrap
#                --variant=minbase plus systemd-sysv, udev and linux-image-amd64, the same kernel
#                as tests/linux/fetch-assets.sh's, with its initramfs, no recommends), root's
#                password empty, the daily timers and getty-static masked; GRUB i386-pc's
#                boot.img is in the MBR and its core.img in the gap after it, and GRUB on the
#                serial console boots the kernel at once with console=ttyS0. Typing `root` at
#                the ttyS0 login prompt logs in.
#   VERSION      the kernel package and the build date
#
# Runs as root (mmdebstrap --mode=root; the hooks chroot) but needs no loop devices or mounts:
# mmdebstrap into a directory, `mke2fs -d` into the partition, dd into place. Needs
# mmdebstrap, e2fsprogs, fdisk (sfdisk), grub-pc-bin (grub-mkimage and /usr/lib/grub/i386-pc)
# and Debian's package servers.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/assets"
force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

say() { echo "make-image: $*"; }
die() { echo "make-image: $*" >&2; exit 1; }

img="$out/debian.img"
if [ "$force" = 0 ] && [ -s "$img" ] && [ "$img" -nt "${BASH_SOURCE[0]}" ]; then
    say "$img is up to date"
    exit 0
fi

for tool in mmdebstrap mke2fs sfdisk grub-mkimage; do
    command -v "$tool" >/dev/null \
        || die "$tool not found (apt-get install mmdebstrap e2fsprogs fdisk grub-pc-bin)"
done
grubdir=/usr/lib/grub/i386-pc
[ -f "$grubdir/boot.img" ] || die "$grubdir/boot.img missing (apt-get install grub-pc-bin)"

mkdir -p "$out"
tmp=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
start=$SECONDS

# Fixed filesystem UUID: the kernel command line and fstab name the root by it.
uuid=4a616e75-732d-4465-6269-616e2d726f6f
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap --mode=root and chroot)"

say "mmdebstrap bookworm (minbase + systemd-sysv, udev, linux-image-amd64) into $root"
# The initramfs holds only what finds the root on a virtio or IDE disk (MODULES=list), so it is
# small; the hooks write the configuration before the kernel's package makes the initramfs.
mmdebstrap --mode=root --variant=minbase \
    --include=systemd-sysv,udev,linux-image-amd64,initramfs-tools,zstd \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/lib/modules/*/kernel/sound/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/sound/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/gpu/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/media/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*' \
    --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/infiniband/*' \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"
        printf "MODULES=list\nCOMPRESS=zstd\n" > "$1/etc/initramfs-tools/conf.d/janus"
        printf "virtio_pci\nvirtio_blk\nata_piix\nata_generic\nsd_mod\next4\n" \
            > "$1/etc/initramfs-tools/modules.janus"' \
    --customize-hook='cat "$1/etc/initramfs-tools/modules.janus" >> "$1/etc/initramfs-tools/modules"
        rm "$1/etc/initramfs-tools/modules.janus"
        chroot "$1" update-initramfs -u -k all' \
    bookworm "$root" "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" \
    || die "mmdebstrap failed (are Debian's package servers reachable?)"

say "configuring: hostname, fstab, empty root password, serial console, masked timers"
echo debian > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n' > "$root/etc/hosts"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" > "$root/etc/fstab"
# Root logs in with no password (pam_unix's nullok in Debian's common-auth).
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
# Nothing here needs the daily timers; their first runs would only slow the boot down. Nor
# getty-static.service, which (with no D-Bus or logind) starts gettys on tty2-6.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
        fstrim.timer dpkg-db-backup.timer getty-static.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# On a software CPU on a loaded host, the boot's steps take longer than systemd's default 90 s:
# a start job, and the wait for /dev/ttyS0 (a device job's timeout is DefaultTimeoutStartSec's
# in systemd 252), on which the serial getty depends, get 10 minutes.
mkdir -p "$root/etc/systemd/system.conf.d" "$root/etc/systemd/system/dev-ttyS0.device.d"
printf '[Manager]\nDefaultTimeoutStartSec=600s\n' > "$root/etc/systemd/system.conf.d/janus.conf"
printf '[Unit]\nJobRunningTimeoutSec=600s\n' \
    > "$root/etc/systemd/system/dev-ttyS0.device.d/janus.conf"
# journald keeps its journal in memory: the disk stays as the test wrote it.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/janus.conf"
rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id"
: > "$root/etc/machine-id"

kver=$(basename "$(ls -d "$root"/lib/modules/*)")
[ -f "$root/boot/vmlinuz-$kver" ] || die "no kernel in $root/boot"
[ -f "$root/boot/initrd.img-$kver" ] || die "no initramfs in $root/boot"

say "GRUB (i386-pc) configuration and modules"
mkdir -p "$root/boot/grub/i386-pc"
cp "$grubdir"/*.mod "$grubdir"/*.lst "$root/boot/grub/i386-pc/"
cat > "$root/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry 'Debian GNU/Linux (janus test image)' {
    linux /boot/vmlinuz-$kver root=UUID=$uuid ro console=ttyS0,115200
    initrd /boot/initrd.img-$kver
}
CFG

say "ext4 partition (mke2fs -d)"
size_mib=1024
part_start=2048 # sectors: 1 MiB, room for GRUB's core.img after the MBR
part_mib=$((size_mib - 1))
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -L debian -U "$uuid" \
    -E root_owner=0:0 -d "$root" "$tmp/part.img" "${part_mib}M" \
    || die "mke2fs -d failed"

say "disk: MBR, GRUB boot.img and core.img, partition 1"
truncate -s "${size_mib}M" "$tmp/disk.img"
echo "start=$part_start, type=83, bootable" | sfdisk -q --label dos "$tmp/disk.img" >/dev/null
grub-mkimage -O i386-pc -o "$tmp/core.img" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile serial terminal echo search \
    || die "grub-mkimage failed"
core_sectors=$(( ($(stat -c %s "$tmp/core.img") + 511) / 512 ))
[ "$core_sectors" -lt "$part_start" ] || die "core.img ($core_sectors sectors) does not fit"
# boot.img's first 440 bytes (code) go before the partition table; it loads sector 1, where
# core.img's first sector (diskboot.img) loads the rest, whose length grub-mkimage wrote.
dd if="$grubdir/boot.img" of="$tmp/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$tmp/core.img" of="$tmp/disk.img" bs=512 seek=1 conv=notrunc status=none
dd if="$tmp/part.img" of="$tmp/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none

mv "$tmp/disk.img" "$img"
pkg=$(cd "$root" && chroot . dpkg-query -W -f '${Package} ${Version}\n' "linux-image-$kver" \
    2>/dev/null || echo "linux-image-$kver")
printf '%s\nkernel %s\nbuilt %s\n' "$pkg" "$kver" "$(date -u +%Y-%m-%d)" > "$out/VERSION"
say "done in $((SECONDS - start)) s: $img ($(du -h --apparent-size "$img" | cut -f1), $(du -h "$img" | cut -f1) used), kernel $kver"
