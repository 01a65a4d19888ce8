#!/usr/bin/env bash
# smp-soak.sh - Linux boots with several vCPUs in a loop, counting hangs and wrong CPU counts
# (issue 22's soak; not run by CI).
#
# Usage:
#   benches/smp-soak.sh                          (an hour, --smp 2 and 4 in turn, on the JIT)
#   DURATION=1800 SMPS="2 4" ACCEL=jit benches/smp-soak.sh
#
# Each boot: janus run --accel $ACCEL --smp N --mem 256M --kernel tests/linux/assets/vmlinuz
# --initrd tests/linux/assets/initramfs.cpio.gz --append "console=ttyS0 rdinit=/bin/busybox --
# poweroff -f" --timeout $BOOT_TIMEOUT. A boot is good when janus exits 116 (the guest powered
# off) and the kernel said "smp: Brought up 1 node, N CPUs"; a hang is exit 124 (timeout); any
# other status or CPU count is counted as such. The serial output of every bad boot is kept
# under $OUT. Prints one line per boot and a summary; exits 1 if any boot was bad.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration=${DURATION:-3600}
smps=${SMPS:-"2 4"}
accel=${ACCEL:-jit}
boot_timeout=${BOOT_TIMEOUT:-180}
janus=${JANUS:-$root/target/release/janus}
out=${OUT:-$(mktemp -d /tmp/smp-soak.XXXXXX)}
assets="$root/tests/linux/assets"
mkdir -p "$out" || exit 1
[ -x "$janus" ] || (cd "$root" && cargo build --release -q) || exit 1
for f in vmlinuz initramfs.cpio.gz; do
    [ -f "$assets/$f" ] || { echo "smp-soak: $assets/$f missing (tests/linux/fetch-assets.sh)" >&2; exit 1; }
done
declare -A boots good hangs wrong other
end=$((SECONDS + duration))
i=0
while [ $SECONDS -lt $end ]; do
    for n in $smps; do
        i=$((i + 1))
        log="$out/boot-$i-smp$n.log"
        start=$SECONDS
        "$janus" run --accel "$accel" --smp "$n" --mem 256M --kernel "$assets/vmlinuz" \
            --initrd "$assets/initramfs.cpio.gz" --timeout "$boot_timeout" --serial "file:$log" \
            --append "console=ttyS0 rdinit=/bin/busybox -- poweroff -f" </dev/null 2>"$log.err"
        status=$?
        if [ "$status" = 1 ] || [ "$status" = 2 ]; then
            # janus refused to start (bad input, no KVM): no point in looping.
            echo "smp-soak: janus failed to start (status $status):" >&2
            cat "$log.err" >&2
            exit 1
        fi
        boots[$n]=$((${boots[$n]:-0} + 1))
        cpus=$(grep -o "Brought up 1 node, [0-9]* CPU" "$log" | grep -o "[0-9]* CPU" | cut -d' ' -f1)
        verdict=good
        if [ "$status" = 124 ]; then
            verdict=hang; hangs[$n]=$((${hangs[$n]:-0} + 1))
        elif [ "$status" != 116 ]; then
            verdict="status $status"; other[$n]=$((${other[$n]:-0} + 1))
        elif [ "$cpus" != "$n" ]; then
            verdict="${cpus:-no} CPUs"; wrong[$n]=$((${wrong[$n]:-0} + 1))
        else
            good[$n]=$((${good[$n]:-0} + 1)); rm -f "$log" "$log.err"
        fi
        echo "smp-soak: boot $i --smp $n: $verdict ($((SECONDS - start)) s)"
    done
done
bad=0
for n in $smps; do
    echo "smp-soak: --smp $n: ${boots[$n]:-0} boots, ${good[$n]:-0} good, ${hangs[$n]:-0} hangs," \
        "${wrong[$n]:-0} wrong CPU counts, ${other[$n]:-0} other statuses"
    [ "${good[$n]:-0}" = "${boots[$n]:-0}" ] || bad=1
done
echo "smp-soak: logs of bad boots under $out"
exit $bad
