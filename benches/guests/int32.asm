; int32.asm - 32-bit protected-mode integer loop benchmark.
;
; The loop body is ten ALU instructions with a loop-carried dependency chain
; and carry flags in use (add/xor/rol/adc/xor/rol/cmp/adc/dec/jnz), the shape
; the JIT issue quotes for QEMU TCG (about 1,330 guest MIPS on this machine).
; No memory access in the loop.
;
; Instructions: the loop runs exactly 10 * ITERATIONS instructions
; (400,000,000 at full size, 400,000 with -DQUICK); the program prints that.
; Setup, mode switch and output add a few thousand more.
;
; Expected outcome: exit status 0; output
;   int32: checksum 0x2cabb816
;   int32: 400000000 instructions (loop: 10 x 40000000 iterations)
;   int32: PASS

%ifdef QUICK
%define ITERATIONS 40000
%define CHECKSUM 0x9b62574b
%else
%define ITERATIONS 40000000
%define CHECKSUM 0x2cabb816
%endif
%defstr ITERATIONS_STR ITERATIONS

%define TEST_NAME "int32"
%include "bench.inc"

main:
        ENTER_PM32
        mov eax, 0x12345678
        mov ebx, 0x9ABCDEF0
        xor edx, edx
        mov esi, 0x0F1E2D3C
        xor edi, edi
        mov ecx, ITERATIONS
        align 16
.loop:  add eax, ebx
        xor ebx, ecx
        rol eax, 7
        adc edx, eax                    ; CF = bit 0 of the rotated EAX
        xor esi, edx
        rol ebx, 13
        cmp eax, esi
        adc edi, esi                    ; CF = EAX < ESI (unsigned)
        dec ecx                         ; (leaves CF alone)
        jnz .loop

        add eax, ebx                    ; checksum: the sum of the registers
        add eax, edx
        add eax, esi
        add eax, edi
        BENCH_CHECKSUM 32, eax
        BENCH_INSNS 10 * ITERATIONS, "loop: 10 x ", ITERATIONS_STR, " iterations"
        CHECK32 1, eax, CHECKSUM
        TEST_PASS
