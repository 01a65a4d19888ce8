#!/usr/bin/env bash
# make-iso.sh - build the CD-ROM images of the firmware tests (tests/firmware.rs), kept out of
# git in tests/firmware/assets/ like the Linux test assets:
#
#   linux.iso    grub-mkrescue (BIOS, El Torito) holding the Linux test kernel and initramfs
#                (tests/linux/assets, made by tests/linux/fetch-assets.sh); GRUB on the serial
#                console boots them at once with console=ttyS0
#   noboot.iso   an ISO 9660 image with no El Torito boot record
#
# Needs grub-mkrescue (grub-common, grub-pc-bin), xorriso and mtools. Rebuilds only what is
# missing or older than its inputs. Works from any directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
linux="$root/tests/linux/assets"
out="$here/assets"
mkdir -p "$out"

for tool in grub-mkrescue xorriso mformat; do
    command -v "$tool" >/dev/null || {
        echo "make-iso.sh: $tool not found (apt-get install grub-common grub-pc-bin xorriso mtools)" >&2
        exit 2
    }
done
for f in vmlinuz initramfs.cpio.gz; do
    [ -f "$linux/$f" ] || { echo "make-iso.sh: $linux/$f missing: run tests/linux/fetch-assets.sh" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$out/linux.iso" ] || [ "$linux/vmlinuz" -nt "$out/linux.iso" ] \
    || [ "$linux/initramfs.cpio.gz" -nt "$out/linux.iso" ] || [ "$0" -nt "$out/linux.iso" ]; then
    mkdir -p "$tmp/iso/boot/grub"
    cp "$linux/vmlinuz" "$linux/initramfs.cpio.gz" "$tmp/iso/boot/"
    cat > "$tmp/iso/boot/grub/grub.cfg" <<'CFG'
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
set default=0
menuentry "janus test kernel" {
    linux /boot/vmlinuz console=ttyS0 earlyprintk=serial,ttyS0
    initrd /boot/initramfs.cpio.gz
}
CFG
    grub-mkrescue -o "$tmp/linux.iso" "$tmp/iso" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
    mv "$tmp/linux.iso" "$out/linux.iso"
    echo "built $out/linux.iso"
fi

if [ ! -f "$out/noboot.iso" ]; then
    mkdir -p "$tmp/plain"
    echo "no boot record here" > "$tmp/plain/README.TXT"
    xorriso -as mkisofs -quiet -o "$tmp/noboot.iso" "$tmp/plain"
    mv "$tmp/noboot.iso" "$out/noboot.iso"
    echo "built $out/noboot.iso"
fi
