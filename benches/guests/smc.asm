; smc.asm - self-modifying code benchmark, 32-bit protected mode.
;
; Each iteration
;   1. rewrites the 32-bit immediate of the `add ebx, imm32` that follows the
;      store (the next instruction, in the same page and block), so the new
;      value must be the one that executes;
;   2. rewrites the immediate of a two-instruction function (`xor eax, imm32;
;      ret`) that the program wrote at FUNC, in another page, and calls it.
; A translating CPU must notice both writes to code it has translated and
; retranslate before running it. ITERATIONS: 100,000 at full size.
;
; Instructions: 12 per iteration (10 in the loop, 2 in the function),
; 1,200,000 at full size (1,200 with -DQUICK); the program prints that.
; Setup, mode switch and output add a few thousand more.
;
; Expected outcome: exit status 0; output
;   smc: checksum 0xbdb8ac38
;   smc: 1200000 instructions (100000 iterations, 2 code writes each)
;   smc: PASS

%ifdef QUICK
%define ITERATIONS 100
%define CHECKSUM 0xa8d08cf1
%else
%define ITERATIONS 100000
%define CHECKSUM 0xbdb8ac38
%endif
%defstr ITERATIONS_STR ITERATIONS

%define TEST_NAME "smc"
%include "bench.inc"

FUNC            equ 0x20000             ; the function written at run time

main:
        ENTER_PM32
        mov byte [FUNC], 0x35           ; xor eax, imm32
        mov dword [FUNC + 1], 0
        mov byte [FUNC + 5], 0xC3       ; ret
        mov ecx, ITERATIONS
        xor ebx, ebx
        xor esi, esi
.loop:                                  ; --- measured part: 10 per iteration
        mov eax, ecx
        imul eax, eax, -0x61C8864F      ; (0x9E3779B1)
        mov [.imm], eax                 ; rewrite the next instruction
        db 0x81, 0xC3                   ; add ebx, imm32
.imm:   dd 0
        rol ebx, 3
        mov [FUNC + 1], ebx             ; rewrite the function
        call FUNC                       ; (+ 2: EAX ^= EBX)
        add esi, eax
        dec ecx
        jnz .loop
.end:                                   ; --- measured part ends here

        add esi, ebx
        BENCH_CHECKSUM 32, esi
        mov eax, 12 * ITERATIONS
        BENCH_INSNS eax, ITERATIONS_STR, " iterations, 2 code writes each"
        CHECK32 1, esi, CHECKSUM
        TEST_PASS
