#!/usr/bin/env bash
# startup.sh - janus's start-up cost and memory overhead, as medians over repeated runs.
#
#   benches/startup.sh [RUNS]        (default 21 runs per backend)
#
# Each run is `janus run --accel A --mem 128M benches/guests/empty.bin --stats` (a guest that
# exits at once, one vCPU, 128 MiB of RAM); the figures come from janus's own --stats lines:
#   launch to entry   time from the start of main() to the boot vCPU entering the guest
#   peak RSS          VmHWM of the process; "janus" is VmHWM minus the guest memory touched
#                     (resident pages of guest RAM, counted with mincore)
# Targets: launch to entry <= 5 ms, janus's own memory <= 5 MiB. Uses target/release/janus
# (build it first: cargo build --release), or $JANUS.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-21}
janus=${JANUS:-target/release/janus}
[ -x "$janus" ] || { echo "startup.sh: $janus missing (cargo build --release)" >&2; exit 1; }
accels=${ACCELS:-jit interp}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '%-8s %6s %18s %18s %16s %16s\n' backend runs "entry median (ms)" "entry min-max" "peak RSS (MiB)" "janus (MiB)"
for a in $accels; do
    entry=() rss=() own=()
    for ((i = 0; i < runs; i++)); do
        out=$("$janus" run --accel "$a" --mem 128M benches/guests/empty.bin --serial none --stats 2>&1 || true)
        entry+=("$(awk '/launch to entry/ { print $4 }' <<< "$out")")
        rss+=("$(awk '/peak RSS/ { print $3 }' <<< "$out")")
        own+=("$(sed -n 's/.*janus \([0-9.]*\) MiB.*/\1/p' <<< "$out")")
    done
    e=$(printf '%s\n' "${entry[@]}" | median)
    lo=$(printf '%s\n' "${entry[@]}" | sort -n | head -n1)
    hi=$(printf '%s\n' "${entry[@]}" | sort -n | tail -n1)
    r=$(printf '%s\n' "${rss[@]}" | median)
    o=$(printf '%s\n' "${own[@]}" | median)
    printf '%-8s %6d %18s %18s %16s %16s\n' "$a" "$runs" "$e" "$lo-$hi" "$r" "$o"
done
