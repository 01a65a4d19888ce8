#!/usr/bin/env bash
# startup.sh - janus's start-up cost and memory overhead, as medians over repeated runs.
#
#   benches/startup.sh [RUNS]        (default 21 runs per backend)
#
# Each run is `janus run --accel A --mem 128M benches/guests/empty.bin --serial none --stats` (a
# guest that exits at once, one vCPU, 128 MiB of RAM); the figures come from janus's own --stats
# lines:
#   launch to entry   time from the start of main() to the boot vCPU entering the guest
#   peak RSS          VmHWM of the process; "janus" is VmHWM minus the guest memory touched
#                     (resident pages of guest RAM, counted with mincore)
#   file, anon, shm   the resident set at the end of the run: pages mapped from files (janus's
#                     code and read-only data, libc, the dynamic loader), anonymous pages
#                     (heap, stacks, relocated data, the software CPU's tables) and shared
#                     memory (the JIT's code buffer, a memfd)
# Targets: launch to entry <= 5 ms, janus's own memory <= 5 MiB.
#
# Environment:
#   ACCELS     backends (default: kvm jit interp; kvm only where /dev/kvm can be opened)
#   JANUS      the janus binary (default: target/release/janus, or $CARGO_TARGET_DIR/release/janus;
#              build it first: cargo build --release)
#   CHECK=1    exit 1 if a backend's median of janus's own memory is above MAX_MIB (default 5)
#              or its median launch to entry above MAX_MS (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-21}
janus=${JANUS:-${CARGO_TARGET_DIR:-target}/release/janus}
[ -x "$janus" ] || { echo "startup.sh: $janus missing (cargo build --release)" >&2; exit 1; }
if [ -z "${ACCELS:-}" ]; then
    ACCELS="jit interp"
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
        ACCELS="kvm $ACCELS"
    else
        echo "startup.sh: /dev/kvm not usable, kvm left out" >&2
    fi
fi
max_mib=${MAX_MIB:-5}
max_ms=${MAX_MS:-5}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

failed=0
printf '%-8s %5s %18s %14s %15s %12s %11s %11s %10s\n' backend runs "entry median (ms)" "entry min-max" "peak RSS (MiB)" "janus (MiB)" "file (MiB)" "anon (MiB)" "shm (MiB)"
for a in $ACCELS; do
    entry=() rss=() own=() file=() anon=() shm=()
    for ((i = 0; i < runs; i++)); do
        out=$("$janus" run --accel "$a" --mem 128M benches/guests/empty.bin --serial none --stats 2>&1 || true)
        entry+=("$(awk '/launch to entry/ { print $4 }' <<< "$out")")
        rss+=("$(awk '/peak RSS/ { print $3 }' <<< "$out")")
        own+=("$(sed -n 's/.*janus \([0-9.]*\) MiB.*/\1/p' <<< "$out")")
        file+=("$(awk '/RSS at the end/ { print $5 }' <<< "$out")")
        anon+=("$(awk '/RSS at the end/ { print $11 }' <<< "$out")")
        shm+=("$(awk '/RSS at the end/ { print $14 }' <<< "$out")")
    done
    e=$(printf '%s\n' "${entry[@]}" | median)
    lo=$(printf '%s\n' "${entry[@]}" | sort -n | head -n1)
    hi=$(printf '%s\n' "${entry[@]}" | sort -n | tail -n1)
    r=$(printf '%s\n' "${rss[@]}" | median)
    o=$(printf '%s\n' "${own[@]}" | median)
    f=$(printf '%s\n' "${file[@]}" | median)
    n=$(printf '%s\n' "${anon[@]}" | median)
    m=$(printf '%s\n' "${shm[@]}" | median)
    verdict=""
    if [ "${CHECK:-0}" = 1 ]; then
        if awk -v o="$o" -v m="$max_mib" -v e="$e" -v t="$max_ms" 'BEGIN { exit !(o == "n/a" || e == "n/a" || o > m || e > t) }'; then
            verdict="  OVER (limits $max_mib MiB, $max_ms ms)"
            failed=1
        else
            verdict="  ok"
        fi
    fi
    printf '%-8s %5d %18s %14s %15s %12s %11s %11s %10s%s\n' "$a" "$runs" "$e" "$lo-$hi" "$r" "$o" "$f" "$n" "$m" "$verdict"
done
exit "$failed"
