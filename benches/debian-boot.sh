#!/usr/bin/env bash
# debian-boot.sh - time from launch to Debian's login prompt on ttyS0: janus's JIT against
# QEMU's TCG booting the same disk image (tests/debian/make-image.sh: SeaBIOS, GRUB, Debian's
# kernel and initramfs, systemd) through the same SeaBIOS, interleaved, N runs each, medians.
#
#   benches/debian-boot.sh [RUNS]          (default 3; needs tests/debian/make-image.sh first)
#
# Both programs get a virtio-blk disk (the image, writes discarded: janus's snapshot=on,
# QEMU's -snapshot), 512 MiB, one vCPU, the serial console on stdout, and nothing else
# (QEMU: -machine pc -nodefaults, so no NIC, VGA, floppy or CD). The time from launch until
# "debian login" appears is taken, and the CPU time the program used until then (user + system,
# from /proc: on a shared host the wall time depends on the load, the CPU time much less); the
# program is then killed. Environment: JANUS (default
# target/release/janus), QEMU (default qemu-system-x86_64), BIOS (default
# /usr/share/seabios/bios-256k.bin), JANUS_ACCEL (default jit), TIMEOUT (seconds per boot,
# default 900). Needs bash 5 ($EPOCHREALTIME).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
img="$root/tests/debian/assets/debian.img"
runs=${1:-3}
janus=${JANUS:-$root/target/release/janus}
qemu=${QEMU:-qemu-system-x86_64}
bios=${BIOS:-/usr/share/seabios/bios-256k.bin}
accel=${JANUS_ACCEL:-jit}
limit=${TIMEOUT:-900}

[ -s "$img" ] || { echo "debian-boot: $img missing (run tests/debian/make-image.sh)" >&2; exit 2; }
[ -s "$bios" ] || { echo "debian-boot: $bios missing (apt-get install seabios)" >&2; exit 2; }
[ -x "$janus" ] || { echo "debian-boot: $janus missing (cargo build --release)" >&2; exit 2; }
command -v "$qemu" >/dev/null || { echo "debian-boot: $qemu not found (apt-get install qemu-system-x86)" >&2; exit 2; }

# Prints the seconds from launch to the login prompt and the CPU seconds (user + system, all
# threads) the program used until then, or FAIL FAIL. The prompt ends in no newline, so the
# output is read in pieces ending at ':'.
tick=$(getconf CLK_TCK)
to_login() {
    local start=$EPOCHREALTIME piece fifo
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    "$@" < /dev/null > "$fifo" 2> /dev/null &
    local pid=$!
    local found="FAIL FAIL"
    while IFS= read -r -d ':' -t "$limit" piece; do
        if [[ $piece == *"debian login" ]]; then
            local now=$EPOCHREALTIME cpu
            cpu=$(awk -v t="$tick" '{ sub(/^.*\) /, ""); printf "%.1f", ($12 + $13) / t }' "/proc/$pid/stat")
            found=$(awk -v a="$start" -v b="$now" -v c="$cpu" 'BEGIN { printf "%.1f %s", b - a, c }')
            break
        fi
    done < "$fifo"
    kill "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    rm -f "$fifo"
    echo "$found"
}

median() { tr ' ' '\n' | grep -Ev '^(FAIL)?$' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "FAIL" }'; }

declare -A wall cpu
for ((r = 1; r <= runs; r++)); do
    echo "debian-boot: run $r/$runs" >&2
    for prog in qemu janus; do
        if [ "$prog" = qemu ]; then
            read -r w c < <(to_login "$qemu" -accel tcg -machine pc -nodefaults -m 512 -smp 1 \
                -bios "$bios" -drive "file=$img,if=virtio,format=raw" -snapshot -display none \
                -serial stdio -monitor none -no-reboot)
        else
            read -r w c < <(to_login "$janus" run --accel "$accel" --mem 512M --bios "$bios" \
                --drive "file=$img,snapshot=on" --timeout "$limit")
        fi
        wall[$prog]+="$w " cpu[$prog]+="$c "
        echo "debian-boot:   $prog: $w s wall, $c s CPU" >&2
    done
done

ratio() { awk -v q="$1" -v j="$2" 'BEGIN { if (q + 0 > 0 && j + 0 > 0) printf "%.2fx", j / q; else print "-" }'; }
qw=$(echo "${wall[qemu]}" | median) jw=$(echo "${wall[janus]}" | median)
qc=$(echo "${cpu[qemu]}" | median) jc=$(echo "${cpu[janus]}" | median)
echo "debian-boot: launch to 'debian login:', median of $runs runs, load average $(cut -d' ' -f1 /proc/loadavg)"
printf '%-10s %12s %14s %16s\n' "" "qemu-tcg s" "janus-$accel s" "janus/qemu"
printf '%-10s %12s %14s %16s\n' wall "$qw" "$jw" "$(ratio "$qw" "$jw")"
printf '%-10s %12s %14s %16s\n' "CPU" "$qc" "$jc" "$(ratio "$qc" "$jc")"
echo "  wall runs: qemu ${wall[qemu]}/ janus ${wall[janus]}" >&2
echo "  CPU runs:  qemu ${cpu[qemu]}/ janus ${cpu[janus]}" >&2
