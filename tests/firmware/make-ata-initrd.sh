#!/usr/bin/env bash
# make-ata-initrd.sh - build tests/firmware/assets/ata.cpio.gz (out of git): the IDE drivers of
# the Linux test kernel (libata, ata_piix, sd_mod, sr_mod and what they need, taken from the
# kernel package named in tests/linux/assets/VERSION) and tests/firmware/ata-init as /init.
# Appended to tests/linux/assets/initramfs.cpio.gz (the kernel reads concatenated archives,
# later files replacing earlier ones), it makes the initramfs of tests/firmware.rs's ata_piix
# test. Needs apt-get download, dpkg-deb, gzip and the busybox of tests/linux/assets.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
linux="$root/tests/linux/assets"
out="$here/assets"
mkdir -p "$out"

[ -f "$linux/VERSION" ] && [ -x "$linux/busybox" ] \
    || { echo "make-ata-initrd.sh: run tests/linux/fetch-assets.sh first" >&2; exit 2; }
read -r pkg version release < "$linux/VERSION"
if [ -f "$out/ata.cpio.gz" ] && [ "$out/ata.cpio.gz" -nt "$linux/VERSION" ] \
    && [ "$out/ata.cpio.gz" -nt "$here/ata-init" ] && [ "$out/ata.cpio.gz" -nt "$0" ]; then
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "$pkg=$version" 2>&1 | grep -v unsandboxed || true)
deb=$(ls "$tmp/${pkg}_"*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || { echo "make-ata-initrd.sh: apt-get download $pkg=$version failed" >&2; exit 1; }
dpkg-deb -x "$deb" "$tmp/x"
kernel="$tmp/x/lib/modules/$release/kernel"
mkdir -p "$tmp/root/lib/ata"
# In load order (each after what it depends on).
for m in drivers/scsi/scsi_common drivers/scsi/scsi_mod drivers/ata/libata drivers/ata/ata_piix \
    crypto/crct10dif_common crypto/crct10dif_generic lib/crc-t10dif lib/crc64 \
    crypto/crc64_rocksoft_generic lib/crc64-rocksoft block/t10-pi drivers/scsi/sd_mod \
    drivers/cdrom/cdrom drivers/scsi/sr_mod; do
    cp "$kernel/$m.ko" "$tmp/root/lib/ata/"
done
install -m 755 "$here/ata-init" "$tmp/root/init"
(cd "$tmp/root" && find . | "$linux/busybox" cpio -o -H newc 2>/dev/null | gzip -9) > "$tmp/ata.cpio.gz"
mv "$tmp/ata.cpio.gz" "$out/ata.cpio.gz"
echo "built $out/ata.cpio.gz"
