#!/usr/bin/env bash
# compare-qemu.sh - janus against QEMU on the same guest images, side by side.
#
# Usage:
#   benches/compare-qemu.sh                      (from any directory)
#   RUNS=5 JANUS_ACCELS=kvm,jit WORKLOADS="int32 branchy" benches/compare-qemu.sh
#
# Runs the BIOS-ROM builds of the benchmark guests (benches/guests/NAME.rom,
# built by test-roms/build.sh) under
#   qemu-system-x86_64 -accel tcg   and   -accel kvm
#       (-display none -no-reboot -bios NAME.rom -serial file:... -m 64
#        -device isa-debug-exit,iobase=0xf4,iosize=1 -monitor none)
#   janus run --bios NAME.rom --accel A --mem 64M --serial file:...
#       for each backend A in JANUS_ACCELS,
# interleaved (run 1 of every workload on every program, then run 2, ...),
# RUNS times each, and prints one table: the median wall time of each
# workload on each program with that program's fixed start-up cost (the
# median time of empty.rom, a guest that exits at once) subtracted, and for
# each janus backend its speed relative to QEMU's on the same kind of
# accelerator (kvm against QEMU's KVM, any software backend against TCG):
# QEMU's time / janus's time, so above 1 means janus is faster.
#
# Every run must succeed (QEMU exits with (status << 1) | 1, so 1; janus
# with the status, so 0), and every run's "NAME: checksum ..." line must be
# the same on every program; otherwise the table marks it and the script
# exits 1 at the end. Serial output and stderr of failed runs are kept under
# $OUT (printed at the end).
#
# Environment:
#   WORKLOADS     workloads to run, space or comma separated (default: all of
#                 int32 branchy callret paging pagefault pio mmio interrupt
#                 syscall smc cpuid)
#   RUNS          timed runs per workload and program (default 3)
#   JANUS         the janus binary (default: target/release/janus, built
#                 with `cargo build --release` if it is missing)
#   JANUS_ACCELS  janus backends, comma or space separated (default: kvm;
#                 empty: no janus runs)
#   QEMU          QEMU binary (default: qemu-system-x86_64; when it is
#                 missing, Debian's qemu-system-x86 is installed with apt-get)
#   QEMU_ACCELS   QEMU accelerators (default: "tcg kvm"; kvm is left out with
#                 a note when /dev/kvm is not usable; empty: no QEMU runs)
#   GUESTS        directory with the NAME.rom files (default: benches/guests;
#                 e.g. a directory of -DQUICK builds for a quick check)
#   TIMEOUT       seconds one run may take before it counts as failed
#                 (default: 600)
#   OUT           where to keep the runs' output (default: a temporary
#                 directory, removed at the end unless a run failed)
#
# Needs bash 5 (for $EPOCHREALTIME), timeout and awk.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

all_workloads="int32 branchy callret paging pagefault pio mmio interrupt syscall smc cpuid"
IFS=', ' read -r -a workloads <<< "${WORKLOADS:-$all_workloads}"
runs=${RUNS:-3}
janus=${JANUS:-$root/target/release/janus}
IFS=', ' read -r -a janus_accels <<< "${JANUS_ACCELS-kvm}"
qemu=${QEMU:-qemu-system-x86_64}
IFS=', ' read -r -a qemu_accels <<< "${QEMU_ACCELS-tcg kvm}"
guests=${GUESTS:-$here/guests}
limit=${TIMEOUT:-600}

die() { echo "compare-qemu: $*" >&2; exit 2; }

[ "${BASH_VERSINFO[0]}" -ge 5 ] || die "needs bash 5 or later (for \$EPOCHREALTIME)"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not '$runs'"
[[ "$limit" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive number of seconds, not '$limit'"
[ ${#workloads[@]} -gt 0 ] || die "WORKLOADS is empty"
for tool in timeout awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
for accel in "${qemu_accels[@]}"; do
    case "$accel" in
        tcg|kvm) ;;
        *) die "QEMU_ACCELS: unknown accelerator '$accel' (tcg, kvm)" ;;
    esac
done

for name in empty "${workloads[@]}"; do
    [ -f "$guests/$name.rom" ] || die "$guests/$name.rom not found (build it with test-roms/build.sh)"
done

# --- the programs --------------------------------------------------------

if [ ${#qemu_accels[@]} -gt 0 ] && ! command -v "$qemu" >/dev/null; then
    [ -z "${QEMU:-}" ] || die "QEMU=$qemu not found"
    echo "compare-qemu: $qemu not found; installing qemu-system-x86 with apt-get" >&2
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: install qemu-system-x86 yourself"
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends qemu-system-x86
    command -v "$qemu" >/dev/null || die "$qemu still not found after installing qemu-system-x86"
fi

if [ ${#janus_accels[@]} -gt 0 ] && [ ! -x "$janus" ]; then
    [ -z "${JANUS:-}" ] || die "JANUS=$janus is not an executable"
    echo "compare-qemu: $janus not found; building it with cargo build --release" >&2
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set JANUS)"
    (cd "$root" && cargo build --release --bin janus)
    [ -x "$janus" ] || die "$janus still missing after cargo build"
fi

programs=()                             # "qemu-tcg", "janus-kvm", ...
for accel in "${qemu_accels[@]}"; do
    case "$accel" in
        tcg) ;;
        kvm)
            if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
                echo "compare-qemu: /dev/kvm is not usable; leaving out qemu-kvm" >&2
                continue
            fi ;;
    esac
    programs+=("qemu-$accel")
done
for accel in "${janus_accels[@]}"; do
    programs+=("janus-$accel")
done
[ ${#programs[@]} -gt 0 ] || die "no programs to run (QEMU_ACCELS and JANUS_ACCELS are empty)"

# --- running ---------------------------------------------------------------

keep=0
if [ -n "${OUT:-}" ]; then
    out=$OUT
    mkdir -p "$out"
    keep=1
else
    out=$(mktemp -d)
fi
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$out"; fi; }
trap cleanup EXIT

declare -A times=()      # "program workload" -> "t1 t2 ..." (seconds)
declare -A failed=()     # "program workload" -> why (first failure)
declare -A checksum=()   # workload -> the first checksum line seen
declare -A checksum_from=()
status=0

# run_one PROGRAM WORKLOAD RUN: run once, record the time or the failure.
run_one() {
    local prog=$1 name=$2 run=$3
    local rom="$guests/$name.rom" base="$out/$prog.$name.$run"
    local -a cmd
    local want rc=0 t0 t1
    case "$prog" in
        qemu-*)
            cmd=(timeout "$limit" "$qemu" -accel "${prog#qemu-}" -display none -no-reboot
                 -bios "$rom" -serial "file:$base.serial" -m 64 -monitor none
                 -device isa-debug-exit,iobase=0xf4,iosize=1)
            want=1 ;;
        janus-*)
            cmd=(timeout "$limit" "$janus" run --bios "$rom" --accel "${prog#janus-}" --mem 64M
                 --serial "file:$base.serial")
            want=0 ;;
    esac
    : > "$base.serial"
    t0=$EPOCHREALTIME
    "${cmd[@]}" < /dev/null > "$base.stdout" 2> "$base.stderr" || rc=$?
    t1=$EPOCHREALTIME
    local key="$prog $name"
    if [ "$rc" != "$want" ]; then
        local why="exit status $rc"
        [ "$rc" = 124 ] && why="timed out after ${limit}s"
        [ -n "${failed[$key]:-}" ] || failed[$key]="$why (run $run; output in $base.*)"
        keep=1
        status=1
        return
    fi
    times[$key]="${times[$key]:-} $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')"
    [ "$name" = empty ] && return
    local line
    line=$(grep -a -m1 "^$name: checksum " "$base.serial" || true)
    if [ -z "$line" ]; then
        [ -n "${failed[$key]:-}" ] || failed[$key]="no checksum line (run $run; output in $base.*)"
        keep=1
        status=1
    elif [ -z "${checksum[$name]:-}" ]; then
        checksum[$name]=$line
        checksum_from[$name]=$prog
    elif [ "$line" != "${checksum[$name]}" ]; then
        [ -n "${failed[$key]:-}" ] || failed[$key]="checksum differs: '$line' here, '${checksum[$name]}' on ${checksum_from[$name]} (run $run)"
        keep=1
        status=1
    fi
}

tty=0
[ -t 2 ] && tty=1
# progress TEXT: a progress line (on a terminal; elsewhere only run starts).
progress() {
    if [ "$tty" = 1 ]; then
        printf '\r\033[K%s' "$*" >&2
    elif [[ "$*" == *": empty on ${programs[0]}" ]]; then
        echo "${*%%:*}" >&2
    fi
}

echo "compare-qemu: ${programs[*]} on ${workloads[*]}; $runs run(s) each, interleaved" >&2
# A warm-up run of the empty guest per program (loads binaries and caches).
for prog in "${programs[@]}"; do
    progress "warm-up: $prog"
    run_one "$prog" empty 0
done
times=()
for ((run = 1; run <= runs; run++)); do
    for name in empty "${workloads[@]}"; do
        for prog in "${programs[@]}"; do
            progress "run $run/$runs: $name on $prog"
            run_one "$prog" "$name" "$run"
        done
    done
done
[ "$tty" = 1 ] && printf '\r\033[K' >&2

# --- the table -------------------------------------------------------------

# median "t1 t2 ...": prints the median (seconds), or nothing.
median() {
    tr ' ' '\n' <<< "$1" | awk 'NF' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A startup=()
for prog in "${programs[@]}"; do
    startup[$prog]=$(median "${times[$prog empty]:-}")
done

# The ratio columns: each janus backend against QEMU's matching accelerator.
ratio_cols=()
for prog in "${programs[@]}"; do
    case "$prog" in
        janus-kvm) ref=qemu-kvm ;;
        janus-*) ref=qemu-tcg ;;
        *) continue ;;
    esac
    for p in "${programs[@]}"; do
        if [ "$p" = "$ref" ]; then ratio_cols+=("$prog:$ref"); fi
    done
done

echo
echo "Median wall time in ms over $runs run(s), minus each program's start-up time"
printf 'Start-up (empty.rom):'
for prog in "${programs[@]}"; do
    s=${startup[$prog]}
    if [ -n "$s" ]; then
        printf '  %s %s ms' "$prog" "$(awk -v s="$s" 'BEGIN { printf "%.1f", s * 1000 }')"
    else
        printf '  %s failed' "$prog"
    fi
done
echo
if [ ${#ratio_cols[@]} -gt 0 ]; then
    echo "Ratios: QEMU's time / janus's time (janus's speed relative to QEMU's; above 1 = janus faster)"
fi
echo

printf '%-10s' workload
for prog in "${programs[@]}"; do printf ' %12s' "$prog"; done
for col in "${ratio_cols[@]}"; do printf ' %20s' "${col%%:*}/${col#*:}"; done
echo
declare -A net=()
for name in "${workloads[@]}"; do
    printf '%-10s' "$name"
    for prog in "${programs[@]}"; do
        key="$prog $name"
        m=$(median "${times[$key]:-}")
        s=${startup[$prog]}
        if [ -n "${failed[$key]:-}" ]; then
            cell=FAIL
        elif [ -z "$m" ] || [ -z "$s" ]; then
            cell=-
        else
            net[$key]=$(awk -v m="$m" -v s="$s" 'BEGIN { printf "%.6f", m - s }')
            cell=$(awk -v n="${net[$key]}" 'BEGIN { printf "%.1f", n * 1000 }')
        fi
        printf ' %12s' "$cell"
    done
    for col in "${ratio_cols[@]}"; do
        j=${net[${col%%:*} $name]:-}
        q=${net[${col#*:} $name]:-}
        cell=$(awk -v j="$j" -v q="$q" 'BEGIN {
            if (j == "" || q == "") print "-";
            else if (j <= 0 || q <= 0) print "~0 ms";
            else printf "%.2fx", q / j }')
        printf ' %20s' "$cell"
    done
    echo
done

echo
for name in "${workloads[@]}"; do
    if [ -n "${checksum[$name]:-}" ]; then echo "  ${checksum[$name]}"; fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo
    echo "Failures:"
    for key in "${!failed[@]}"; do
        echo "  $key: ${failed[$key]}"
    done | sort
fi
if [ "$keep" = 1 ]; then
    echo
    echo "Run output kept in $out"
fi
if [ "$status" = 0 ]; then
    echo
    echo "All runs succeeded; the checksums agree across programs."
fi
exit "$status"
