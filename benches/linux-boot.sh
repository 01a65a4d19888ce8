#!/usr/bin/env bash
# linux-boot.sh - time from launch to the initramfs's init marker: janus's JIT against QEMU's
# TCG on the same kernel, initrd and command line, interleaved, N runs each, medians.
#
#   benches/linux-boot.sh [RUNS]          (default 3; needs tests/linux/fetch-assets.sh first)
#
# For each of the bzImage (vmlinuz) and the PVH vmlinux, each program is started with the
# serial console on stdout, and the time from its launch until `JANUS-INIT-OK` appears there
# is taken; the program is then killed. Environment: JANUS (default target/release/janus),
# QEMU (default qemu-system-x86_64), JANUS_ACCEL (default jit), SMP (vCPUs of both, default 1),
# TIMEOUT (seconds, default 300). Needs bash 5
# ($EPOCHREALTIME).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
assets="$root/tests/linux/assets"
runs=${1:-3}
janus=${JANUS:-$root/target/release/janus}
qemu=${QEMU:-qemu-system-x86_64}
accel=${JANUS_ACCEL:-jit}
smp=${SMP:-1}
limit=${TIMEOUT:-300}
cmdline="console=ttyS0 reboot=t"

for f in vmlinuz vmlinux initramfs.cpio.gz; do
    [ -s "$assets/$f" ] || { echo "linux-boot: $assets/$f missing (run tests/linux/fetch-assets.sh)" >&2; exit 2; }
done
[ -x "$janus" ] || (cd "$root" && cargo build --release -q)
command -v "$qemu" >/dev/null || { echo "linux-boot: $qemu not found (apt-get install qemu-system-x86)" >&2; exit 2; }

# Prints the seconds from launch to the marker, or FAIL.
to_marker() {
    local start=$EPOCHREALTIME line
    local fifo
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    "$@" < /dev/null > "$fifo" 2> /dev/null &
    local pid=$!
    local found=FAIL
    while IFS= read -r -t "$limit" line; do
        if [[ $line == *JANUS-INIT-OK* ]]; then
            found=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
            break
        fi
    done < "$fifo"
    kill "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    rm -f "$fifo"
    echo "$found"
}

median() { tr ' ' '\n' | grep -Ev '^(FAIL)?$' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "FAIL" }'; }

declare -A times
for ((r = 1; r <= runs; r++)); do
    echo "linux-boot: run $r/$runs" >&2
    for kernel in vmlinuz vmlinux; do
        t=$(to_marker "$qemu" -accel tcg -smp "$smp" -m 256 -display none -serial stdio -no-reboot \
            -monitor none -kernel "$assets/$kernel" -initrd "$assets/initramfs.cpio.gz" \
            -append "$cmdline")
        times[qemu-$kernel]+="$t "
        t=$(to_marker "$janus" run --accel "$accel" --smp "$smp" --mem 256M --kernel "$assets/$kernel" \
            --initrd "$assets/initramfs.cpio.gz" --append "$cmdline")
        times[janus-$kernel]+="$t "
    done
done

echo "linux-boot: $smp vCPU(s)" >&2
printf '%-12s %12s %12s %18s\n' kernel "qemu-tcg s" "janus-$accel s" "janus/qemu time"
for kernel in vmlinuz vmlinux; do
    q=$(echo "${times[qemu-$kernel]}" | median)
    j=$(echo "${times[janus-$kernel]}" | median)
    ratio=$(awk -v q="$q" -v j="$j" 'BEGIN { if (q + 0 > 0 && j + 0 > 0) printf "%.2fx", j / q; else print "-" }')
    printf '%-12s %12s %12s %18s\n' "$kernel" "$q" "$j" "$ratio"
    echo "  runs: qemu ${times[qemu-$kernel]}/ janus ${times[janus-$kernel]}" >&2
done
