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
#   linux  Debian's kernel to /init on --accel kvm with both irqchips,
#   tests  janus's own KVM integration tests (cargo test --no-run binaries) with
#          JANUS_REQUIRE_KVM=1,
#   diff   janus diff --a kvm --b interp on every ROM (not by default: KVM's single-step
#          leaves TF in what PUSHF and exception frames store; docs/architecture.md),
#   fuzz   janus fuzz --mode real|prot32|long64 against kvm_amd (not by default: the same),
#   cmds   the commands in NESTED_CMDS.
# Every result is printed as `NESTED: PASS|FAIL ...`; the exit status is 0 when all passed.
#
# Environment:
#   NESTED_FUZZ=N        instructions per fuzz mode (default 20000)
#   NESTED_STAGES=...    which stages run (default "roms linux tests")
#   NESTED_IRQCHIPS=...  the --irqchip values of the ROM stage (default "user kernel")
#   NESTED_TESTS=...     test binaries with their arguments, ';'-separated (default: roms_all
#                        but fpu and exceptions, which the ROM stage runs; kernels. platform's
#                        irqchip test wedged the nested guest as realmode did: not by default)
#   NESTED_SMP, NESTED_MEM  QEMU's vCPUs (default 2) and memory (default 3G)
#   NESTED_ACCEL=...     QEMU's -accel (default tcg,thread=multi)
#   NESTED_TIMEOUT=S     the whole QEMU run's limit in seconds (default 1500)
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
stages=${NESTED_STAGES:-roms linux tests}
irqchips=${NESTED_IRQCHIPS:-user kernel}
tests=${NESTED_TESTS-roms_all --skip fpu --skip exceptions;kernels}
qsmp=${NESTED_SMP:-2}
qmem=${NESTED_MEM:-3G}
qtimeout=${NESTED_TIMEOUT:-1500}

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
for app in sh awk cat grep mknod mount poweroff read sed sleep sync tail insmod uname mkdir; do
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

cp "$assets"/{vmlinuz,initramfs.cpio.gz,VERSION} "$stage$root/tests/linux/assets/"
roms_pass=""
diff_roms=""
for f in "$root"/test-roms/*.bin; do
    r=$(basename "$f" .bin)
    case $r in
        smp|xmc|acpi|triple|halt|loop|multiboot) ;;
        *) roms_pass="$roms_pass $r" ;;
    esac
    case $r in loop|multiboot) ;; *) diff_roms="$diff_roms $r" ;; esac
done
tr ';' '\n' <<< "${NESTED_CMDS:-}" > "$stage/cmds"
cat > "$stage/nested.conf" <<EOF
ROOT='$root'
STAGES='$stages'
IRQCHIPS='$irqchips'
ROMS_PASS='$roms_pass'
DIFF_ROMS='$diff_roms'
FUZZ_COUNT='$fuzz'
ROM_TIMEOUT='${NESTED_ROM_TIMEOUT:-60}'
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

#--- boot it ----------------------------------------------------------------------------------
log="$cache/serial-$$.log"
say "booting $release under QEMU TCG with AMD-V (-smp $qsmp, -m $qmem; log: $log)"
start=$(date +%s)
set +e
timeout --foreground "$qtimeout" qemu-system-x86_64 \
    -accel "${NESTED_ACCEL:-tcg,thread=multi}" -cpu EPYC,+svm -smp "$qsmp" -m "$qmem" \
    -display none -monitor none -serial stdio -no-reboot \
    -kernel "$assets/vmlinuz" -initrd "$cpio" \
    -append "console=ttyS0 panic=-1 quiet mitigations=off" </dev/null | tee "$log"
qrc=${PIPESTATUS[0]}
set -e
secs=$(($(date +%s) - start))
line=$(tr -d '\r' < "$log" | grep '^NESTED-RESULT:' | tail -n1 || true)
[ "$qrc" = 124 ] && say "QEMU did not finish within ${qtimeout}s"
if [ -z "$line" ]; then
    say "FAILED: no result line (QEMU exit $qrc, ${secs}s)"
    exit 1
fi
say "$line (QEMU ${secs}s)"
tr -d '\r' < "$log" | grep -q '^NESTED: FAIL' && { say "FAILED:"; tr -d '\r' < "$log" | grep '^NESTED: FAIL'; exit 1; }
[[ "$line" == *" fail=0" ]] || exit 1
say "all passed"
