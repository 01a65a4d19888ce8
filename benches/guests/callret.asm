; callret.asm - call/return benchmark: recursive Fibonacci in 64-bit mode.
;
; Each iteration computes fib(FIB_N) by naive double recursion (every call
; is a near CALL and a RET, with pushes and pops around the recursion), so
; the guest is dominated by direct calls and returns, whose targets come
; from the stack. The checksum is the sum of the results.
;
; Instructions: fib(n) for n >= 2 runs 12 instructions plus its two
; recursive calls, fib(0) and fib(1) run 4, so one tree costs
; 12 * (F(n+1) - 1) + 4 * F(n+1) and makes 2 * F(n+1) - 1 calls. An
; iteration adds 5 instructions of its own. The program prints the exact
; total of its measured part: 325,438,016 at full size (64 iterations of
; fib(27): 40,679,744 calls), 330,696 with -DQUICK (8 of fib(17)).
; Setup, mode switches and output add a few thousand more.
;
; Expected outcome: exit status 0; output
;   callret: checksum 0x0000000000bfd080  (64 * fib(27) = 64 * 196418)
;   callret: 325438016 instructions (64 iterations of fib(27))
;   callret: PASS

%ifdef QUICK
%define ITERATIONS 8
%define FIB_N 17
%else
%define ITERATIONS 64
%define FIB_N 27
%endif
%defstr ITERATIONS_STR ITERATIONS
%defstr FIB_N_STR FIB_N

%define TEST_NAME "callret"
%include "bench.inc"

; F(n) at assembly time, for the expected values.
%assign FIB_A 0
%assign FIB_B 1
%rep FIB_N
  %assign FIB_T FIB_A + FIB_B
  %assign FIB_A FIB_B
  %assign FIB_B FIB_T
%endrep
FIB_RESULT      equ FIB_A                       ; F(FIB_N)
FIB_NEXT        equ FIB_B                       ; F(FIB_N + 1)
TREE_INSNS      equ 12 * (FIB_NEXT - 1) + 4 * FIB_NEXT
TOTAL_INSNS     equ ITERATIONS * (TREE_INSNS + 5)

main:
        ENTER_PM32
        ENTER_LM64
        xor r12d, r12d                  ; the sum of the results
        mov r13d, ITERATIONS

.iteration:                             ; --- measured part: 5 per iteration
        mov edi, FIB_N
        call fib
        add r12, rax
        dec r13d
        jnz .iteration
.end:                                   ; --- measured part ends here

        BENCH_CHECKSUM 64, r12
        mov rax, TOTAL_INSNS
        BENCH_INSNS rax, ITERATIONS_STR, " iterations of fib(", FIB_N_STR, ")"
        CHECK64 1, r12, ITERATIONS * FIB_RESULT
        TEST_PASS

; fib: RAX = F(RDI). Clobbers RDI, RDX.
        align 16
fib:    cmp rdi, 2
        jb .base
        push rdi
        dec rdi
        call fib                        ; F(n - 1)
        pop rdi
        push rax
        sub rdi, 2
        call fib                        ; F(n - 2)
        pop rdx
        add rax, rdx
        ret
.base:  mov rax, rdi                    ; F(0) = 0, F(1) = 1
        ret
