#!/usr/bin/env bash
# run.sh - janus's KVM backend on hardware-assisted semantics: a nested KVM under QEMU's TCG.
#
#   tests/nested/run.sh
#
# Boots Debian's kernel (tests/linux/assets/vmlinuz) under qemu-system-x86_64 -accel tcg
# -cpu EPYC,+svm, whose AMD-V model (SVM with nested paging) lets Debian's kvm-amd module give a
# /dev/kvm of flavour kvm_amd inside that guest, and runs there (tests/nested/init.sh):
#   roms   every test ROM on --accel kvm with --irqchip user and kernel (SMP ROMs with 1 and 4
#          vCPUs; exceptions.bin built as for QEMU, fpu.bin expected to stop at check 26),
#   linux  Debian's kernel to /init on --accel kvm with both irqchips, and with root=/dev/vda
#          on virtio-blk,
#   tests  janus's own KVM integration tests (cargo test --no-run binaries) with
#          JANUS_REQUIRE_KVM=1,
#   diff   janus diff --a kvm --b interp on every ROM (at most NESTED_DIFF_STEPS steps each;
#          the few that QEMU's model gets wrong are skipped loudly, see diff_skip below),
#   fuzz   janus fuzz --mode real|prot32|long64 against kvm_amd,
#   cmds   the commands in NESTED_CMDS.
# Every result is printed as `NESTED: PASS|FAIL #N ...`; the exit status is 0 when all passed.
# A watchdog restarts a guest that wedges (no output for NESTED_SILENCE seconds) from the check
# after the last one reported (see "boot it, watched" below).
#
# Environment:
#   NESTED_FUZZ=N        instructions per fuzz mode (default 20000)
#   NESTED_STAGES=...    which stages run (default "roms linux tests diff fuzz")
#   NESTED_DIFF_STEPS=N  steps per ROM in the diff stage (default 5000)
#   NESTED_DIFF_ROMS, NESTED_DIFF_SKIP  the ROMs the diff stage runs and skips
#   NESTED_CHECK_TIMEOUT=S  one check's limit in the guest (default 900)
#   NESTED_SILENCE=S, NESTED_RESTARTS=N  the watchdog: silence that counts as a wedge
#                        (default 150; NESTED_BOOT_SILENCE, 600, before the guest's first
#                        line) and restarts allowed (default 4)
#   NESTED_IRQCHIPS=...  the --irqchip values of the ROM stage (default "user kernel")
#   NESTED_TESTS=...     test binaries with their arguments, ';'-separated (default: roms_all
#                        but the ROMs the ROM stage runs to QEMU's deviations; kernels. platform's
#                        irqchip test wedged the nested guest as realmode did: not by default)
#   NESTED_SMP, NESTED_MEM  QEMU's vCPUs (default 2) and memory (default 3G)
#   NESTED_ACCEL=...     QEMU's -accel (default tcg,thread=multi)
#   NESTED_TIMEOUT=S     the whole suite's limit in seconds, restarts included (default 4200)
#   NESTED_CMDS='a;b'    with the stage "cmds": shell commands run in the guest, output shown
#
# Needs qemu-system-x86_64, the Linux test assets (tests/linux/fetch-assets.sh), apt-get
# download (the linux-image package of the same kernel, for its modules: cached), objcopy,
# strip, ldd and cargo. Everything built is cached in tests/nested/cache/ (git-ignored): the
# modules by kernel release, the initramfs by the hash of its contents.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="$here/cache"
assets="$root/tests/linux/assets"
say() { echo "nested: $*"; }
die() { echo "nested: $*" >&2; exit 1; }

fuzz=${NESTED_FUZZ:-20000}
stages=${NESTED_STAGES:-roms linux tests diff fuzz}
irqchips=${NESTED_IRQCHIPS:-user kernel}
tests=${NESTED_TESTS-roms_all --skip fpu --skip exceptions --skip corners --skip debug --skip isa --skip protect;kernels}
qsmp=${NESTED_SMP:-2}
qmem=${NESTED_MEM:-3G}
qtimeout=${NESTED_TIMEOUT:-4200}

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
[ -s "$assets/vmlinuz" ] && [ -s "$assets/VERSION" ] || bash "$root/tests/linux/fetch-assets.sh"
read -r _ _ release < "$assets/VERSION"
mkdir -p "$cache"

#--- the modules of the kernel booted ---------------------------------------------------------
mods="$cache/modules-$release"
if [ ! -s "$mods/kvm-amd.ko" ]; then
    pkg="linux-image-$release"
    say "downloading $pkg for its KVM modules"
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    mkdir -m 777 "$tmp/dl"
    (cd "$tmp/dl" && apt-get download -qq "$pkg" 2>&1 | grep -v unsandboxed || true)
    deb=$(ls "$tmp/dl/${pkg}_"*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
    mkdir -p "$mods.new"
    for ko in arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-amd.ko drivers/crypto/ccp/ccp.ko virt/lib/irqbypass.ko; do
        dpkg-deb --fsys-tarfile "$deb" | tar -xO "./lib/modules/$release/kernel/$ko" > "$mods.new/${ko##*/}"
        # Debian's modules carry BTF that this kernel refuses when loading them ("BPF:
        # Invalid name"); without it they load.
        objcopy --remove-section=.BTF "$mods.new/${ko##*/}"
    done
    rm -rf "$tmp" "$mods"
    mv "$mods.new" "$mods"
fi

#--- janus and its test binaries --------------------------------------------------------------
say "building janus (release) and the test binaries"
(cd "$root" && cargo build --release -q)
json=
if [[ " $stages " == *" tests "* ]] && [ -n "$tests" ]; then
    json=$(cd "$root" && cargo test --workspace --no-run --message-format=json 2>/dev/null)
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,usr/bin,modules,tests,proc,sys,dev,tmp}
# copy_bin SRC DEST: a stripped executable and every shared library it needs, at their paths.
copy_bin() {
    install -D -m 755 "$1" "$stage$2"
    strip "$stage$2"
    ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$stage$lib" ] || install -D -m 755 "$lib" "$stage$lib"
    done
}
copy_bin "$root/target/release/janus" /usr/bin/janus
: > "$stage/tests/list"
wanted=()
[ -z "$json" ] || IFS=';' read -ra wanted <<< "$tests"
for t in "${wanted[@]}"; do
    read -r name filter <<< "$t"
    [ -n "$name" ] || continue
    exe=$(sed -n "s/.*\"target\":{[^}]*\"name\":\"$name\".*\"executable\":\"\([^\"]*\)\".*/\1/p" <<< "$json" | head -n1)
    [ -n "$exe" ] || die "no test binary named $name"
    copy_bin "$exe" "/tests/$name"
    echo "$name $filter" >> "$stage/tests/list"
done
cp "$assets/busybox" "$stage/bin/busybox"
for app in sh awk cat cp grep head kill mknod mount poweroff read rm sed sleep sync tail timeout insmod uname mkdir; do
    ln -s busybox "$stage/bin/$app"
done
cp "$mods"/*.ko "$stage/modules/"
cp "$here/init.sh" "$stage/init"
chmod 755 "$stage/init"
# The repository's files at their own absolute paths: the test binaries find them through
# CARGO_MANIFEST_DIR, fixed when they were compiled.
mkdir -p "$stage$root/test-roms" "$stage$root/tests/linux/assets"
cp "$root"/test-roms/*.bin "$root/test-roms/multiboot.asm" "$stage$root/test-roms/"
# The nested guest's code runs in QEMU's TCG (its model of an SVM guest), with TCG's own
# limits: exceptions.bin is built as for test-roms/qemu-check.sh. Above all, its 32-bit
# `idiv ecx` of -2^63 by -1 (check 15) kills QEMU 7.2 with a host SIGFPE: QEMU's
# helper_idivl_EAX divides the 64-bit dividend by the divisor in host arithmetic before
# checking for overflow (INT64_MIN / -1 traps on x86). It also makes no segment
# write-permission or limit checks, raises #GP for a non-canonical stack address and reports
# a reserved-bit #PF without P.
nasm -f bin -DJANUS_QEMU_COMPAT -I "$root/test-roms/include/" \
    -o "$stage$root/test-roms/exceptions.bin" "$root/test-roms/exceptions.asm"

cp "$assets"/{vmlinuz,initramfs.cpio.gz,disk.img,VERSION} "$stage$root/tests/linux/assets/"
roms_pass=""
diff_roms=""
for f in "$root"/test-roms/*.bin; do
    r=$(basename "$f" .bin)
    case $r in
        # Run by init.sh with their own arguments and expectations.
        smp|xmc|acpi|triple|halt|loop|multiboot) ;;
        # Not plain "exit 0" ROMs: they need a set-up or input that tests/*.rs gives them
        # (firmware, a debugger, stdin, --smp, virtio devices, an expected triple fault or halt).
        bootsector|echo|flood|gdb|initsipi|udwrap|virtio_hostile|ap_idle|post|runaway) ;;
        *) roms_pass="$roms_pass $r" ;;
    esac
    case $r in multiboot) ;; *) diff_roms="$diff_roms $r" ;; esac
done
# The ROMs the lockstep stage leaves out, each for a deviation of QEMU's AMD-V model or a limit
# of the differ, not of janus's KVM backend (docs/architecture.md, "kvm_amd: the nested suite"):
#   exceptions  QEMU pushes RF=0 in a fault's frame; processors (and janus) push RF=1
#   debug       the guest's own data breakpoint does not fire on the KVM side while KVM
#               single-steps (QEMU's VMRUN loads DR7 without arming its breakpoints)
#   fpu, fallback  XSETBV is not intercepted by QEMU's model (see the ROM stage)
#   fw_cfg      fw_cfg DMA writes guest memory outside the differ's replay (kvm_pvm too)
#   protect     the same RF=0 in a #PF frame (memory 0x6fea kvm=0x00 interp=0x01)
#   realmode    `xchg [mem], bx`, single-stepped in QEMU's nested guest, leaves RFLAGS 0x02
#               where it was 0x46: QEMU's multi-threaded TCG path for atomics (with
#               NESTED_ACCEL=tcg,thread=single the diff agrees on all 5193 steps)
diff_skip="exceptions protect debug fpu fallback fw_cfg realmode"
tr ';' '\n' <<< "${NESTED_CMDS:-}" > "$stage/cmds"
cat > "$stage/nested.conf" <<EOF
ROOT='$root'
STAGES='$stages'
IRQCHIPS='$irqchips'
ROMS_PASS='$roms_pass'
DIFF_ROMS='${NESTED_DIFF_ROMS:-$diff_roms}'
DIFF_STEPS='${NESTED_DIFF_STEPS:-5000}'
DIFF_SKIP='${NESTED_DIFF_SKIP-$diff_skip}'
FUZZ_COUNT='$fuzz'
ROM_TIMEOUT='${NESTED_ROM_TIMEOUT:-60}'
CHECK_TIMEOUT='${NESTED_CHECK_TIMEOUT:-900}'
EOF

#--- the initramfs: a newc cpio, uncompressed, cached by the hash of its contents -------------
key=$(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
    if [ -L "$p" ]; then echo "L $p $(readlink "$p")"
    elif [ -d "$p" ]; then echo "D $p"
    else echo "F $p $(stat -c %a "$p") $(sha256sum < "$p")"; fi
done | sha256sum | cut -c1-16)
cpio="$cache/initramfs-$key.cpio"
if [ -s "$cpio" ]; then
    say "initramfs: cached ($(basename "$cpio"))"
else
    rm -f "$cache"/initramfs-*.cpio
    ino=0
    pad4() { head -c $(((4 - $1 % 4) % 4)) /dev/zero; }
    entry() { # NAME MODE SIZE [DATA-FILE]
        local namesize=$((${#1} + 1))
        ino=$((ino + 1))
        printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
            "$ino" "$2" 0 0 1 0 "$3" 0 0 0 0 "$namesize" 0
        printf '%s\0' "$1"
        pad4 $((110 + namesize))
        if [ -n "${4:-}" ]; then cat "$4"; fi
        pad4 "$3"
    }
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
        n=${p#./}
        if [ -L "$p" ]; then
            t=$(readlink "$p")
            printf '%s' "$t" > "$stage.link"
            entry "$n" $((8#120777)) ${#t} "$stage.link"
        elif [ -d "$p" ]; then
            entry "$n" $((8#040755)) 0
        else
            entry "$n" $((8#100000 | 8#$(stat -c %a "$p"))) "$(stat -c %s "$p")" "$p"
        fi
    done
    entry TRAILER!!! 0 0) > "$cpio.tmp"
    rm -f "$stage.link"
    mv "$cpio.tmp" "$cpio"
    say "initramfs: built $(basename "$cpio") ($(($(stat -c %s "$cpio") / 1048576)) MiB)"
fi

#--- boot it, watched ----------------------------------------------------------------------
# The nested guest sometimes wedges (docs/architecture.md, "kvm_amd: the nested suite"): no
# more output while QEMU keeps running. A watchdog kills QEMU after NESTED_SILENCE seconds
# without output (a check prints a line a minute while it runs), and the run starts again
# with nested.skip=N: the checks up to N, reported by the runs before, are not run again. A
# check that wedges twice counts as failed and the run goes on after it; at most
# NESTED_RESTARTS restarts in all.
silence=${NESTED_SILENCE:-150}
# Until the guest's first line (the kernel boots quietly, a minute or more under TCG).
boot_silence=${NESTED_BOOT_SILENCE:-600}
max_restarts=${NESTED_RESTARTS:-4}
mon="$cache/monitor-$$.sock"
results="$cache/results-$$.txt"
: > "$results"
start=$(date +%s)
skip=0
restarts=0
wedged_twice=""
last_wedge=""
final=""
# monitor CMD: a line for QEMU's human monitor, answered on stdout (python3, where present).
monitor() {
    command -v python3 >/dev/null || { echo "(python3 missing: no monitor query)"; return; }
    python3 - "$mon" "$1" <<'PY' 2>&1 | tr -d '\r' | grep -v '^(qemu)' | head -n 80
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
time.sleep(0.3)
s.recv(65536)
s.sendall((sys.argv[2] + "\n").encode())
time.sleep(1.0)
out = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
except Exception:
    pass
print(out.decode(errors="replace"))
PY
}
set +e
while :; do
    log="$cache/serial-$$-$restarts.log"
    say "booting $release under QEMU TCG with AMD-V (-smp $qsmp, -m $qmem, nested.skip=$skip; log: $log)"
    rm -f "$mon"
    qemu-system-x86_64 \
        -accel "${NESTED_ACCEL:-tcg,thread=multi}" -cpu EPYC,+svm -smp "$qsmp" -m "$qmem" \
        -display none -monitor "unix:$mon,server=on,wait=off" -serial stdio -no-reboot \
        -kernel "$assets/vmlinuz" -initrd "$cpio" \
        -append "console=ttyS0 panic=-1 quiet mitigations=off nested.skip=$skip" \
        </dev/null > "$log" 2>&1 &
    qpid=$!
    tail -n +1 -f --pid="$qpid" "$log" | grep --line-buffered -v "TCG doesn't support requested feature" &
    tpid=$!
    size=-1
    quiet_since=$(date +%s)
    wedged=0
    while kill -0 "$qpid" 2>/dev/null; do
        sleep 5
        now=$(date +%s)
        cur=$(stat -c %s "$log")
        limit=$silence
        grep -q '^NESTED:' "$log" || limit=$boot_silence
        if [ "$cur" != "$size" ]; then
            size=$cur
            quiet_since=$now
        elif [ $((now - quiet_since)) -ge "$limit" ]; then
            wedged=1
        fi
        if [ $((now - start)) -ge "$qtimeout" ]; then
            say "the suite did not finish within ${qtimeout}s (NESTED_TIMEOUT)"
            wedged=2
        fi
        if [ "$wedged" != 0 ]; then
            say "WEDGED: no output for $((now - quiet_since)) s; QEMU's vCPUs (info registers -a, abridged):"
            monitor "info registers -a" | grep -E '^(CPU#|RIP|RSP|CS |EFL|CR0)' | sed 's/^/nested:   /'
            kill "$qpid" 2>/dev/null
            wait "$qpid" 2>/dev/null
            break
        fi
    done
    wait "$qpid" 2>/dev/null
    sleep 1
    kill "$tpid" 2>/dev/null
    wait "$tpid" 2>/dev/null
    tr -d '\r' < "$log" | grep -E '^NESTED: (PASS|FAIL) #' >> "$results" || true
    line=$(tr -d '\r' < "$log" | grep '^NESTED-RESULT:' | tail -n1 || true)
    if [ -n "$line" ]; then
        final=$line
        break
    fi
    [ "$wedged" = 2 ] && break
    # The last check reported, in this run or the ones before: the next one wedged.
    last=$(grep -o '^NESTED: [A-Z]* #[0-9]*' "$results" | grep -o '[0-9]*$' | sort -n | tail -n1)
    last=${last:-0}
    [ "$last" -lt "$skip" ] && last=$skip
    next=$((last + 1))
    restarts=$((restarts + 1))
    if [ "$restarts" -gt "$max_restarts" ]; then
        say "FAILED: more than $max_restarts restarts"
        break
    fi
    if [ "$last_wedge" = "$next" ]; then
        say "RESTART $restarts: check #$next wedged the guest twice: it fails, the run goes on after it"
        echo "NESTED: FAIL #$next (wedged the nested guest twice)" >> "$results"
        wedged_twice="$wedged_twice #$next"
        skip=$next
    else
        say "RESTART $restarts: the guest wedged after check #$last (QEMU killed); running again from check #$next"
        last_wedge=$next
        skip=$last
    fi
done
set -e
rm -f "$mon"
secs=$(($(date +%s) - start))
pass=$(grep -c '^NESTED: PASS' "$results" || true)
fail=$(grep -c '^NESTED: FAIL' "$results" || true)
say "QEMU ${secs}s in all, $restarts restart(s)${wedged_twice:+, wedged twice:$wedged_twice}"
if [ -z "$final" ]; then
    say "FAILED: no result line (pass=$pass fail=$fail so far)"
    exit 1
fi
say "NESTED-RESULT: pass=$pass fail=$fail (all runs)"
if [ "$fail" != 0 ]; then
    say "FAILED:"
    grep '^NESTED: FAIL' "$results"
    exit 1
fi
say "all passed"
