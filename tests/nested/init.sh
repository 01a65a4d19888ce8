#!/bin/sh
# The /init of the nested suite's initramfs (tests/nested/run.sh builds it): runs inside a
# Linux guest booted by QEMU's TCG with AMD-V (-cpu EPYC,+svm), loads Debian's kvm-amd there
# and runs janus on that /dev/kvm (flavour kvm_amd). Every check prints one line
#   NESTED: PASS <name> (<seconds> s)      or      NESTED: FAIL <name> (...) and its output
# and the last line is
#   NESTED-RESULT: pass=<n> fail=<m>
# after which the guest powers off; run.sh turns that line into its exit status.
export PATH=/bin:/usr/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mount -t tmpfs tmpfs /tmp
busybox mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# shellcheck source=/dev/null
. /nested.conf

pass=0
fail=0
# Checks are numbered in the order they run; run.sh restarts a wedged guest with
# nested.skip=N on the kernel command line, and the checks up to N (reported by the runs
# before) are skipped.
n=0
SKIP=0
for a in $(cat /proc/cmdline); do
    case $a in nested.skip=*) SKIP=${a#nested.skip=} ;; esac
done
now() { read -r up _ < /proc/uptime; echo "$up"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
result() { # result OK NAME SECONDS [WHY]
    if [ "$1" = 1 ]; then
        pass=$((pass + 1))
        echo "NESTED: PASS #$n $2 ($3 s)"
    else
        fail=$((fail + 1))
        echo "NESTED: FAIL #$n $2 ($3 s${4:+; $4})"
    fi
}
finish() {
    echo "NESTED-RESULT: pass=$pass fail=$fail"
    sync
    poweroff -f
    while :; do sleep 1; done
}

# expect STATUS NAME [MUST-PRINT] -- COMMAND...: runs COMMAND, which must exit STATUS (and print
# MUST-PRINT when given); its output is shown only when it fails.
# With RETRY=1 a failure is shown and the command run once more (real-time checks on a slow,
# shared host; tests/roms_all.rs does the same); a second failure counts.
# Every command runs under CHECK_TIMEOUT seconds (timeout's status 124 or 143 then), and while it
# runs a line every 60 s tells run.sh's watchdog that the guest is alive.
# `expect` returns 1 for a check skipped (nested.skip), else 0.
RETRY=0
run_check() {
    (i=0; while sleep 60; do i=$((i + 60)); echo "NESTED: ... #$n still running (${i} s)"; done) &
    ticker=$!
    timeout "${CHECK_TIMEOUT:-900}" "$@" > /tmp/out 2>&1
    got=$?
    kill "$ticker" 2>/dev/null
    wait "$ticker" 2>/dev/null
}
expect() {
    want=$1 name=$2 grepfor=
    n=$((n + 1))
    [ "$n" -le "$SKIP" ] && return 1
    shift 2
    if [ "$1" != -- ]; then grepfor=$1; shift; fi
    shift
    echo "NESTED: start #$n $name"
    kvm_stats > /tmp/stats0
    t0=$(now)
    run_check "$@"
    if [ "$RETRY" = 1 ] && { [ "$got" != "$want" ] || { [ -n "$grepfor" ] && ! grep -qF -- "$grepfor" /tmp/out; }; }; then
        echo "NESTED: RETRY #$n $name (exit $got, expected $want${grepfor:+ and '$grepfor'})"
        tail -n 10 /tmp/out | sed 's/^/    | /'
        run_check "$@"
    fi
    secs=$(elapsed "$t0")
    if [ "$got" = "$want" ] && { [ -z "$grepfor" ] || grep -qF -- "$grepfor" /tmp/out; }; then
        result 1 "$name" "$secs"
    else
        result 0 "$name" "$secs" "exit $got, expected $want${grepfor:+ and '$grepfor'}"
        if [ "${SHOW_HEAD:-0}" = 1 ]; then
            head -n 30 /tmp/out | sed 's/^/    | /'
        else
            tail -n 40 /tmp/out | sed 's/^/    | /'
        fi
        # What KVM did meanwhile (its debugfs counters, as deltas): evidence for a hang.
        kvm_stats | awk 'NR == FNR { a[$1] = $2; next } $2 != a[$1] { printf "    kvm %s +%d\n", $1, $2 - a[$1] }' /tmp/stats0 -
    fi
    return 0
}
kvm_stats() {
    for f in exits irq_exits irq_window_exits halt_exits io_exits mmio_exits irq_injections nmi_window_exits request_irq_exits signal_exits insn_emulation nested_run; do
        [ -r "/sys/kernel/debug/kvm/$f" ] && echo "$f $(cat "/sys/kernel/debug/kvm/$f")"
    done
    return 0
}

echo "NESTED: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs, $(awk '/MemTotal/ { print $2 / 1024 " MiB" }' /proc/meminfo)"
grep -q ' svm ' /proc/cpuinfo || { result 0 "cpu-has-svm" 0 "no svm flag in /proc/cpuinfo"; finish; }
for m in irqbypass kvm ccp kvm-amd; do
    if ! insmod "/modules/$m.ko" 2>/tmp/out; then
        result 0 "insmod-$m" 0 "$(cat /tmp/out)"
        finish
    fi
done
[ -e /dev/kvm ] || mknod /dev/kvm c 10 232
expect 0 janus-info "kvm_amd" -- janus info

cd "$ROOT" || finish
export JANUS_REQUIRE_KVM=1
roms=$ROOT/test-roms
T=--timeout=${ROM_TIMEOUT:-60}

case " $STAGES " in *" roms "*)
    RETRY=1
    # Every test ROM on KVM with both interrupt-controller models; the ROMs that start
    # application processors with 1 and 4 vCPUs (acpi counts them).
    for irq in $IRQCHIPS; do
        k="--accel kvm --irqchip $irq $T --serial stdio"
        for rom in $ROMS_PASS; do
            want="$rom: PASS"
            [ "$rom" = demo ] && want="demo finished: all modes OK"
            # ROMs that stop at a check where QEMU's model (the nested guest's CPU) differs
            # from a processor; every check before it is checked:
            #   fpu 26      XSETBV is not intercepted: KVM's copy of XCR0 stays 1 and is loaded
            #               at the next VMRUN, so XSAVE leaves SSE out of XSTATE_BV
            #   corners 10  a reserved bit in a 2 MiB PDE gives #PF error code 0x8, without P
            #   debug 2     DR6 reads 0xffffffff: bit 12 set (the ROM expects 0xffffefff)
            #   isa 2       CPUID.7:EBX without RDSEED, ADX and SHA (TCG has none of them)
            #   protect 14  with SMAP and AC=1, an implicit supervisor read of the LDT from a
            #               user page raises no #PF
            stop=
            case $rom in fpu) stop=26 ;; corners) stop=10 ;; debug|isa) stop=2 ;; protect) stop=14 ;; esac
            if [ -n "$stop" ]; then
                expect "$stop" "rom $rom irqchip=$irq (to check $stop: QEMU's model)" "$rom: FAIL check $stop" -- janus run $k "$roms/$rom.bin"
                continue
            fi
            expect 0 "rom $rom irqchip=$irq" "$want" -- janus run $k "$roms/$rom.bin"
        done
        expect 0 "rom smp --smp 4 irqchip=$irq" "APs up: 3" -- janus run $k --smp 4 "$roms/smp.bin"
        expect 13 "rom smp --smp 1 irqchip=$irq" -- janus run $k --smp 1 "$roms/smp.bin"
        expect 0 "rom xmc --smp 2 irqchip=$irq" "xmc: PASS" -- janus run $k --smp 2 "$roms/xmc.bin"
        expect 116 "rom acpi --smp 1 irqchip=$irq" "MP table: 1 processors" -- janus run $k --smp 1 "$roms/acpi.bin"
        expect 116 "rom acpi --smp 4 irqchip=$irq" "MP table: 4 processors" -- janus run $k --smp 4 "$roms/acpi.bin"
        expect 112 "rom triple irqchip=$irq" -- janus run $k "$roms/triple.bin"
        if [ "$irq" = kernel ]; then
            # KVM's in-kernel LAPIC holds a HLT with interrupts off inside KVM (as hardware
            # would): janus never sees it, the run ends at --timeout.
            expect 124 "rom halt irqchip=$irq" -- janus run --accel kvm --irqchip kernel --timeout 2 "$roms/halt.bin"
        else
            expect 113 "rom halt irqchip=$irq" -- janus run $k "$roms/halt.bin"
        fi
        expect 124 "rom loop irqchip=$irq" -- janus run --accel kvm --irqchip "$irq" --timeout 1 "$roms/loop.bin"
        expect 0 "rom multiboot irqchip=$irq" "multiboot: PASS" -- janus run $k --kernel "$roms/multiboot.bin" --initrd "$roms/multiboot.asm" --append janus-multiboot-test
    done
;; esac

RETRY=0
SHOW_HEAD=1
case " $STAGES " in *" diff "*)
    # Lockstep: KVM single-stepped against the interpreter on every ROM.
    # At most DIFF_STEPS steps each: a ROM that waits for timer ticks runs for minutes when
    # every instruction is a nested VM exit.
    for rom in $DIFF_ROMS; do
        case " $DIFF_SKIP " in *" $rom "*)
            echo "NESTED: SKIP diff kvm-interp $rom (QEMU's AMD-V model or the differ: run.sh, docs/architecture.md)"
            continue ;;
        esac
        expect 0 "diff kvm-interp $rom (<= $DIFF_STEPS steps)" "agreed" -- janus diff --a kvm --b interp --max-steps "$DIFF_STEPS" "$roms/$rom.bin"
    done
;; esac

case " $STAGES " in *" fuzz "*)
    for mode in real prot32 long64; do
        expect 0 "fuzz $mode kvm-interp $FUZZ_COUNT" -- janus fuzz --mode "$mode" --count "$FUZZ_COUNT" --a kvm --b interp --out /tmp/fuzz-out
    done
;; esac

SHOW_HEAD=0
case " $STAGES " in *" linux "*)
    # Debian's kernel on janus on kvm_amd: to /init with KVM's irqchip and with janus's own.
    for irq in kernel user; do
        expect 114 "linux to /init irqchip=$irq" "JANUS-INIT-OK" -- janus run --accel kvm --irqchip "$irq" --mem 256M --timeout 300 --stats \
            --kernel "$ROOT/tests/linux/assets/vmlinuz" --initrd "$ROOT/tests/linux/assets/initramfs.cpio.gz" --append "console=ttyS0" &&
            grep -E "JANUS-INIT-OK|JANUS-CPUS|marker|wall" /tmp/out | sed 's/^/    | /'
    done
    # root=/dev/vda on virtio-blk (a copy of the assets' ext4 image): the initramfs loads the
    # virtio and ext4 modules and switches root to the disk, whose /sbin/init reports and
    # powers off (janus's status 116, as on the JIT).
    cp "$ROOT/tests/linux/assets/disk.img" /tmp/disk.img
    expect 116 "linux root=/dev/vda irqchip=auto" "JANUS-ROOT-OK" -- janus run --accel kvm --mem 256M --timeout 300 --stats \
        --kernel "$ROOT/tests/linux/assets/vmlinuz" --initrd "$ROOT/tests/linux/assets/initramfs.cpio.gz" \
        --append "console=ttyS0 root=/dev/vda" --drive file=/tmp/disk.img &&
        grep -E "JANUS-ROOT|wall" /tmp/out | sed 's/^/    | /'
    rm -f /tmp/disk.img
;; esac

case " $STAGES " in *" tests "*)
    # janus's own integration tests (built by cargo test --no-run), with KVM required.
    while read -r bin filter; do
        [ -n "$bin" ] || continue
        # shellcheck disable=SC2086
        expect 0 "cargo-test $bin${filter:+ $filter}" "test result: ok" -- "/tests/$bin" --test-threads=2 $filter
    done < /tests/list
;; esac

case " $STAGES " in *" cmds "*)
    # NESTED_CMDS of run.sh: commands run as they are, their output shown (for investigating).
    while read -r cmd; do
        [ -n "$cmd" ] || continue
        echo "NESTED-CMD: $cmd"
        kvm_stats > /tmp/stats0
        sh -c "$cmd" < /dev/null 2>&1 | sed 's/^/    | /'
        kvm_stats | awk 'NR == FNR { a[$1] = $2; next } $2 != a[$1] { printf "    kvm %s +%d\n", $1, $2 - a[$1] }' /tmp/stats0 -
    done < /cmds
;; esac

finish
