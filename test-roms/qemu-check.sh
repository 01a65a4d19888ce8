#!/usr/bin/env bash
# qemu-check.sh - cross-check the guest images against QEMU (TCG), as a
# reference machine independent of janus.
#
#   test-roms/qemu-check.sh [NAME...]     (default: every image)
#   QEMU_ACCEL=kvm test-roms/qemu-check.sh  (default accelerator: tcg)
#
# Needs qemu-system-x86_64 (Debian: qemu-system-x86) and nasm. Each image is
# rebuilt with -DJANUS_QEMU_COMPAT into a temporary directory (that leaves out
# or adapts the few checks for behaviour QEMU models differently from janus:
# the POST port read-back and unassigned MMIO reading as all ones), then run
# with a tiny stand-in firmware whose reset vector sets DL=0x80 and jumps to
# 0000:7C00, as janus enters images. QEMU's isa-debug-exit turns a status
# byte S into the exit code (S << 1) | 1; a triple fault with -no-reboot
# exits 0.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
qemu=${QEMU:-qemu-system-x86_64}
accel=${QEMU_ACCEL:-tcg}
command -v "$qemu" >/dev/null || { echo "qemu-check.sh: $qemu not found" >&2; exit 2; }
command -v nasm >/dev/null || { echo "qemu-check.sh: nasm not found" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The stand-in firmware: 64 KiB, mapped below 1 MiB and 4 GiB.
cat > "$tmp/stub.asm" <<'ASM'
        bits 16
        times 0xFFF0 db 0
        mov edx, 0x80           ; reset vector: DL = 0x80 (boot drive) ...
        jmp 0x0000:0x7C00       ; ... and enter the image like janus does
        times 0x10000 - ($ - $$) db 0
ASM
nasm -f bin -o "$tmp/stub.bin" "$tmp/stub.asm"

# name  expected-outcome  line-the-output-must-contain
expectations="
hello     exit0    hello: PASS
realmode  exit0    realmode: PASS
protmode  exit0    protmode: PASS
longmode  exit0    longmode: PASS
portio    exit0    portio: PASS
cmos      exit0    cmos: PASS
fw_cfg    exit0    fw_cfg: CPUs by port 1, by DMA 1
mmio      exit0    mmio: PASS
demo      exit0    demo finished: all modes OK
outloop   exit0    outloop: done
triple    triple   triple: about to triple fault
loop      timeout  loop: spinning forever
halt      timeout  halt: halting with interrupts off
pit_pic      exit0  pit_pic: PASS
lapic_timer  exit0  lapic_timer: PASS
smp          exit0  smp: PASS
ioapic_uart  exit0  ioapic_uart: PASS
rtc_periodic exit0  rtc_periodic: PASS
"

# Extra QEMU options an image needs (as janus needs --smp 4 for smp.bin).
# -cpu max: lapic_timer's TSC-deadline part (offered with QEMU_ACCEL=kvm;
# QEMU 7.2's TCG has no TSC-deadline timer, so the test skips that part).
flags_of() {
    case "$1" in
        smp) echo "-smp 4" ;;
        lapic_timer) echo "-cpu max" ;;
    esac
}

src_of() {
    if [ -e "$here/$1.asm" ]; then echo "$here/$1.asm"; else echo "$root/benches/guests/$1.asm"; fi
}

failed=0
while read -r name outcome want; do
    [ -n "$name" ] || continue
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    nasm -f bin -DJANUS_QEMU_COMPAT -I "$here/include/" -o "$tmp/$name.bin" "$(src_of "$name")"
    limit=20
    [ "$outcome" = timeout ] && limit=3
    rc=0
    # shellcheck disable=SC2046
    timeout "$limit" "$qemu" -accel "$accel" -m 64 -display none -no-reboot -monitor none \
        $(flags_of "$name") \
        -bios "$tmp/stub.bin" \
        -device loader,file="$tmp/$name.bin",addr=0x7c00,force-raw=on \
        -serial file:"$tmp/$name.out" \
        -device isa-debug-exit,iobase=0xf4,iosize=1 \
        -device isa-debugcon,iobase=0xe9,chardev=dbg -chardev null,id=dbg \
        </dev/null >/dev/null 2>&1 || rc=$?
    case "$outcome" in
        exit0) ok_rc=1 ;;            # status 0 -> (0 << 1) | 1
        triple) ok_rc=0 ;;
        timeout) ok_rc=124 ;;
    esac
    if [ "$rc" = "$ok_rc" ] && grep -qF "$want" "$tmp/$name.out" && ! grep -q "FAIL" "$tmp/$name.out"; then
        echo "ok    $name ($outcome)"
    else
        echo "FAIL  $name: expected $outcome, qemu exit code $rc; output:"
        sed 's/^/      /' "$tmp/$name.out"
        failed=1
    fi
done <<< "$expectations"
exit "$failed"
