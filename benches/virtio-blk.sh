#!/usr/bin/env bash
# virtio-blk.sh - disk throughput inside the guest: janus (JIT by default) against QEMU's TCG,
# the same kernel, initramfs, disks and guest commands. Not a timed test: a table.
#
#   benches/virtio-blk.sh [MiB]           (default 64; needs tests/linux/fetch-assets.sh first)
#
# Builds, in a temporary directory, an ext4 root image (mke2fs -d: busybox and an /sbin/init
# that runs the measurements) and a MiB-sized raw data disk. Each program boots the PVH vmlinux
# (janus) or the bzImage (QEMU 7.2 cannot load this PVH vmlinux), with root=/dev/vda (the
# initramfs loads the virtio modules and switches root), and the guest measures on /dev/vdb,
# timing with /proc/uptime (10 ms):
#   seq-write  dd if=/dev/zero of=/dev/vdb bs=1M count=MiB conv=fsync
#   seq-read   dd if=/dev/vdb of=/dev/null bs=1M count=MiB       (after drop_caches)
#   direct     the same with iflag=direct (no page cache: the device's own speed)
#   rand-read  1000 x dd if=/dev/vdb bs=4k count=1 skip=<random> iflag=direct  (one process
#              each: this measures busybox's start-up as much as the disk)
# Environment: JANUS (default target/release/janus), JANUS_ACCEL (default jit), QEMU (default
# qemu-system-x86_64), TIMEOUT (seconds, default 600).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
assets="$root/tests/linux/assets"
mib=${1:-64}
janus=${JANUS:-$root/target/release/janus}
accel=${JANUS_ACCEL:-jit}
qemu=${QEMU:-qemu-system-x86_64}
limit=${TIMEOUT:-600}

for f in vmlinux vmlinuz initramfs.cpio.gz busybox modules/order; do
    [ -s "$assets/$f" ] || { echo "virtio-blk: $assets/$f missing (run tests/linux/fetch-assets.sh)" >&2; exit 2; }
done
[ -x "$janus" ] || (cd "$root" && cargo build --release -q)
command -v "$qemu" >/dev/null || { echo "virtio-blk: $qemu not found" >&2; exit 2; }
command -v mke2fs >/dev/null || { echo "virtio-blk: mke2fs not found (e2fsprogs)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/sbin" "$tmp/root/dev" "$tmp/root/proc" "$tmp/root/sys"
cp "$assets/busybox" "$tmp/root/bin/busybox"
ln -s busybox "$tmp/root/bin/sh"
cat > "$tmp/root/sbin/init" <<EOF
#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
now() { busybox cut -d' ' -f1 /proc/uptime; }
s=\$(now); busybox dd if=/dev/zero of=/dev/vdb bs=1M count=$mib conv=fsync 2>/dev/null; e=\$(now)
echo "BENCH seq-write \$s \$e"
echo 3 > /proc/sys/vm/drop_caches
s=\$(now); busybox dd if=/dev/vdb of=/dev/null bs=1M count=$mib 2>/dev/null; e=\$(now)
echo "BENCH seq-read \$s \$e"
s=\$(now); busybox dd if=/dev/vdb of=/dev/null bs=1M count=$mib iflag=direct 2>/dev/null; e=\$(now)
echo "BENCH direct \$s \$e"
blocks=\$(($mib * 256))
s=\$(now)
i=0
while [ \$i -lt 1000 ]; do
    busybox dd if=/dev/vdb of=/dev/null bs=4k count=1 skip=\$(( (i * 7919) % blocks )) iflag=direct 2>/dev/null
    i=\$((i + 1))
done
e=\$(now)
echo "BENCH rand-read \$s \$e"
busybox poweroff -f
EOF
chmod 755 "$tmp/root/sbin/init"
mke2fs -q -t ext4 -E root_owner=0:0 -d "$tmp/root" "$tmp/root.img" 16M 2>/dev/null
truncate -s "${mib}M" "$tmp/data.img"

# run NAME COMMAND...: the guest's BENCH lines, as "NAME TEST SECONDS".
run() {
    local name=$1
    shift
    timeout "$limit" "$@" < /dev/null 2>/dev/null | tr -d '\r' \
        | awk -v n="$name" '$1 == "BENCH" { printf "%s %s %.2f\n", n, $2, $4 - $3 }'
}

append="console=ttyS0 root=/dev/vda quiet"
results=$(
    run "janus-$accel" "$janus" run --accel "$accel" --mem 256M --kernel "$assets/vmlinux" \
        --initrd "$assets/initramfs.cpio.gz" --append "$append" \
        --drive "file=$tmp/root.img" --drive "file=$tmp/data.img"
    run "qemu-tcg" "$qemu" -accel tcg -m 256M -display none -no-reboot -nodefaults -serial stdio \
        -kernel "$assets/vmlinuz" -initrd "$assets/initramfs.cpio.gz" -append "$append" \
        -drive "file=$tmp/root.img,if=virtio,format=raw" \
        -drive "file=$tmp/data.img,if=virtio,format=raw"
)
echo "$results" | awk -v mib="$mib" '
    { t[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
    END {
        printf "| %-12s | %16s | %16s | %18s | %22s |\n", "program", "seq write MB/s", "seq read MB/s", "direct read MB/s", "4 KiB rand read IOPS"
        printf "|--------------|-----------------:|-----------------:|-------------------:|-----------------------:|\n"
        for (i = 1; i <= n; i++) {
            p = order[i]
            w = t[p, "seq-write"] > 0 ? mib * 1.048576 / t[p, "seq-write"] : 0
            r = t[p, "seq-read"] > 0 ? mib * 1.048576 / t[p, "seq-read"] : 0
            d = t[p, "direct"] > 0 ? mib * 1.048576 / t[p, "direct"] : 0
            q = t[p, "rand-read"] > 0 ? 1000 / t[p, "rand-read"] : 0
            printf "| %-12s | %16.1f | %16.1f | %18.1f | %22.0f |\n", p, w, r, d, q
        }
    }'
