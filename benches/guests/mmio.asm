; mmio.asm - MMIO exit benchmark: ITERATIONS 32-bit accesses to unassigned
; physical memory, in 32-bit protected mode.
;
; Alternates a 32-bit write to 0xD0000000 and a 32-bit read of 0xD0000004
; (both unassigned: janus ignores the writes and reads all ones, QEMU reads
; 0), 1,000,000 accesses in all (500,000 of each), so that each access is
; one MMIO exit to the VMM; the run's time divided by 1e6 is the round trip
; of an MMIO access. The checksum covers the values written; the values read
; are only checked to be all the same, all ones or all zeros, and reported
; on a line of their own (which differs between janus and QEMU).
;
; Instructions: 7 per iteration of 2 accesses, 3,500,000 at full size (3,500
; with -DQUICK); the program prints that. Setup, mode switch and output add
; a few thousand more.
;
; Expected outcome: exit status 0; output
;   mmio: checksum 0x1a987290  (the sum of the values written, mod 2^32)
;   mmio: reads returned 0xffffffff  (0x00000000 under QEMU)
;   mmio: 3500000 instructions (1000000 accesses: 500000 writes, 500000 reads)
;   mmio: PASS

%ifdef QUICK
%define ITERATIONS 1000
%else
%define ITERATIONS 1000000
%endif
%assign PAIRS ITERATIONS / 2
%defstr ITERATIONS_STR ITERATIONS
%defstr PAIRS_STR PAIRS

%define TEST_NAME "mmio"
%include "bench.inc"

MMIO_ADDR       equ 0xD0000000          ; unassigned (the PCI hole)

main:
        ENTER_PM32
        mov edi, MMIO_ADDR
        mov ecx, PAIRS
        xor ebx, ebx                    ; EBX = the sum of the values written
        xor ebp, ebp                    ; EBP = the OR of the values read
        mov edx, 0xFFFFFFFF             ; EDX = their AND
.loop:                                  ; --- measured part: 7 per iteration
        mov [edi], ecx                  ; an MMIO write
        mov eax, [edi + 4]              ; an MMIO read
        or ebp, eax
        and edx, eax
        add ebx, ecx
        dec ecx
        jnz .loop
.end:                                   ; --- measured part ends here

        BENCH_CHECKSUM 32, ebx
        PRINT TEST_NAME, ": reads returned 0x"
        PRINT_HEX 32, ebp
        NEWLINE
        mov eax, 7 * PAIRS
        BENCH_INSNS eax, ITERATIONS_STR, " accesses: ", PAIRS_STR, " writes, ", PAIRS_STR, " reads"
        CHECK32 1, ebx, (PAIRS * (PAIRS + 1) / 2) & 0xFFFFFFFF
        CHECK32 2, ebp, edx             ; every read returned the same value
        inc edx                         ; 0xFFFFFFFF -> 0, 0 -> 1
        cmp edx, 1
        jbe .read_ok
        FAIL 3, "reads returned neither all ones nor zeros"
.read_ok:
        TEST_PASS
