#!/usr/bin/env bash
# net-throughput.sh - guest-to-host TCP throughput over virtio-net: janus (JIT by default)
# against QEMU's TCG, the same kernel, initramfs and guest commands, over user-mode networking
# (janus: passt; QEMU: its libslirp) and over a TAP in a network namespace of our own.
#
#   benches/net-throughput.sh [RUNS] [MIB]     (default 3 runs of 32 MiB each; needs
#                                               tests/linux/fetch-assets.sh first)
#
# The guest runs `busybox dd if=/dev/zero bs=64k | busybox nc HOST PORT`; a sink on the host
# (benches/net/throughput.py) times the bytes from the first to the last. Prints each run's MB/s
# and the median per (VM, network). Environment: JANUS (default target/release/janus), QEMU
# (default qemu-system-x86_64), JANUS_ACCEL (default jit). TAP needs `unshare -rn` and
# `ip tuntap` (root, or unprivileged user namespaces).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
assets="$root/tests/linux/assets"
runs=${1:-3}
mib=${2:-32}
janus=${JANUS:-$root/target/release/janus}
qemu=${QEMU:-qemu-system-x86_64}
accel=${JANUS_ACCEL:-jit}
kernel="$assets/vmlinuz"
initrd="$assets/initramfs.cpio.gz"
append="console=ttyS0 quiet janus.shell"

for f in "$kernel" "$initrd" "$assets/modules/order"; do
    [ -s "$f" ] || { echo "net-throughput: $f missing (run tests/linux/fetch-assets.sh)" >&2; exit 2; }
done
[ -x "$janus" ] || (cd "$root" && cargo build --release -q)
command -v "$qemu" >/dev/null || { echo "net-throughput: $qemu not found" >&2; exit 2; }

janus_cmd() { echo "$janus run --accel $accel --mem 256M --kernel $kernel --initrd $initrd --append '$append' --serial stdio --netdev $1"; }
qemu_cmd() { echo "$qemu -accel tcg -m 256M -smp 1 -nographic -no-reboot -kernel $kernel -initrd $initrd -append '$append' -netdev $1 -device virtio-net-pci,netdev=n0"; }

# median of the MBPS lines on stdin
median() { grep '^MBPS' | awk '{ print $2 }' | sort -n | awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : "FAIL" }'; }

measure() { # name mode command
    local name=$1 mode=$2 cmd=$3 out
    if [ "$mode" = tap ]; then
        out=$(unshare -rn sh -c "ip tuntap add dev jtap0 mode tap && ip addr add 10.9.0.1/24 dev jtap0 && ip link set jtap0 up && ip link set lo up && python3 '$here/net/throughput.py' --mode tap --mib $mib --runs $runs -- $cmd" 2>&1) || true
    else
        out=$(sh -c "python3 '$here/net/throughput.py' --mode user --mib $mib --runs $runs -- $cmd" 2>&1) || true
    fi
    echo "$out" | grep -E '^(MBPS|throughput)' | sed "s/^/  $name: /" >&2
    printf '%-22s %-6s %10s\n' "$name" "$mode" "$(echo "$out" | median)"
}

echo "guest -> host TCP, $runs x $mib MiB, MB/s (median), kernel $(cut -d' ' -f3 "$assets/VERSION")"
printf '%-22s %-6s %10s\n' "vm" "net" "MB/s"
measure "janus --accel $accel" user "$(janus_cmd user,id=n0)"
measure "qemu tcg" user "$(qemu_cmd user,id=n0)"
measure "janus --accel $accel" tap "$(janus_cmd tap,id=n0,ifname=jtap0)"
measure "qemu tcg" tap "$(qemu_cmd tap,id=n0,ifname=jtap0,script=no,downscript=no)"
