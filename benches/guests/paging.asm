; paging.asm - memory benchmark under 4-level paging with 4 KiB pages.
;
; Long mode with page tables built here (bench.inc's bench_pt_init): the low
; 2 MiB identity-mapped with 4 KiB pages, and a work region of
; 2 * SIEVE_SIZE bytes at virtual 1 GiB (BENCH_WORK_VA) mapped with 4 KiB
; PTEs onto physical memory from 16 MiB, in a scrambled page order (virtual
; page i -> physical page i * 7919 mod the page count). At full size that is
; 32 MiB, 8192 pages: far more than any TLB holds, so the guest is TLB-heavy.
;
; Each iteration (ITERATIONS, 1 by default):
;   1. clears the sieve, SIEVE_SIZE bytes at the start of the region, with
;      `rep stosq`;
;   2. runs the sieve of Eratosthenes (one byte per number) below
;      SIEVE_N = SIEVE_SIZE; the larger primes' strides come close to a
;      page, so that most of their marks land on a page of their own;
;   3. counts the primes (a byte loop over the whole sieve);
;   4. copies the sieve to the second half of the region with `rep movsq`;
;   5. copies it back with a plain 64-bit load/store loop, hashing every
;      quadword into the checksum.
;
; Instructions: the program computes the exact count of its measured part
; (from the first iteration to the end of the last) from the sieve's
; statistics, counting each REP string instruction once, as hardware does:
; 256,274,346 at full size (38,894,326 marks), 214,405 with -DQUICK
; (SIEVE_SIZE 16 KiB).
; Counting every iteration of the two REP instructions as an instruction
; adds SIEVE_SIZE / 4 - 2 per iteration. Setup (page tables: about 70,000
; instructions at full size), mode switches and output come on top.
;
; Expected outcome: exit status 0; output
;   paging: checksum 0x13ef15e6f521075b
;   paging: 1077871 primes below 16777216
;   paging: 256274346 instructions (1 iteration(s), sieve of 16777216 bytes)
;   paging: PASS

%ifdef QUICK
%define ITERATIONS 1
%define SIEVE_SIZE 0x4000               ; 16 KiB
%define PRIMES 1900                     ; primes below 16384
%define CHECKSUM 0xe9fdcec87f83f3c4
%else
%define ITERATIONS 1
%define SIEVE_SIZE 0x1000000            ; 16 MiB
%define PRIMES 1077871                  ; primes below 2^24
%define CHECKSUM 0x13ef15e6f521075b
%endif
%defstr ITERATIONS_STR ITERATIONS
%assign SIEVE_SIZE_DEC SIEVE_SIZE
%defstr SIEVE_SIZE_STR SIEVE_SIZE_DEC

%define TEST_NAME "paging"
%include "bench.inc"

SIEVE_N         equ SIEVE_SIZE          ; sieve the numbers below this
WORK_PAGES      equ 2 * SIEVE_SIZE / 4096
WORK_PTS        equ (WORK_PAGES + 511) / 512
PHYS_BASE       equ 0x1000000           ; 16 MiB
SIEVE           equ BENCH_WORK_VA
COPY            equ BENCH_WORK_VA + SIEVE_SIZE

%if WORK_PAGES & (WORK_PAGES - 1)
  %error "SIEVE_SIZE must be a power of two"
%endif
%if WORK_PAGES > BENCH_WORK_MAX_PAGES || PHYS_BASE + 2 * SIEVE_SIZE > 0x3000000
  %error "SIEVE_SIZE too large (the region must fit below 48 MiB)"
%endif

; Fixed instruction counts of the measured part (see the labels below).
INSNS_CLEAR     equ 6                   ; iteration start and clear
INSNS_SIEVE_SET equ 4                   ; sieve setup
INSNS_COMPOSITE equ 7                   ; outer step for a composite p
INSNS_PRIME     equ 16                  ; outer step for a prime p, + 4 per mark
INSNS_COUNT     equ 2 + 5 * (SIEVE_N - 2) + 2
INSNS_COPY      equ 4 + 2 + 8 * (SIEVE_SIZE / 8) + 2   ; rep movsq, copy back

main:
        ENTER_PM32
        ENTER_LM64
        call bench_idt_init
        mov ecx, WORK_PTS
        mov edx, PTE_P | PTE_W
        call bench_pt_init
        mov edi, BENCH_PT_WORK          ; the work PTEs, scrambled
        xor ecx, ecx
.pte:   imul eax, ecx, 7919
        and eax, WORK_PAGES - 1
        shl rax, 12
        add rax, PHYS_BASE | PTE_P | PTE_W
        mov [rdi + rcx * 8], rax
        inc ecx
        cmp ecx, WORK_PAGES
        jb .pte

        mov rbx, SIEVE                  ; RBX = sieve, R10 = its end,
        lea r10, [rbx + SIEVE_N]        ; R11 = copy, R13 = its end,
        mov r11, COPY                   ; R12 = hash, R14 = iterations left
        lea r13, [r11 + SIEVE_SIZE]
        xor r12d, r12d
        mov r14d, ITERATIONS

.iteration:                             ; --- measured part starts here
        mov rdi, rbx                    ; 1. clear: 6 with the iteration start
        mov ecx, SIEVE_SIZE / 8
        xor eax, eax
        rep stosq
        mov [rbx], al                   ; (0 and 1 are not primes; the
        mov [rbx + 1], al               ;  count below starts at 2)

        mov ecx, 2                      ; 2. sieve: setup 4; RCX = p
        xor r8d, r8d                    ; R8 = marks
        xor r9d, r9d                    ; R9 = primes p with p * p < N
.outer: cmp byte [rbx + rcx], 0         ; composite: 2 + 5; prime: 11 + 5
        jne .next
        mov rdi, rcx
        imul rdi, rcx                   ; p * p
        mov rax, SIEVE_N - 1            ; marks of p: (N - 1 - p * p) / p + 1
        sub rax, rdi
        xor edx, edx
        div rcx
        lea r8, [r8 + rax + 1]
        inc r9
        add rdi, rbx
.mark:  mov byte [rdi], 1               ; 4 per mark
        add rdi, rcx
        cmp rdi, r10
        jb .mark
.next:  inc rcx
        mov rax, rcx
        imul rax, rcx
        cmp rax, SIEVE_N
        jb .outer
        mov r15, rcx                    ; (4th of the setup) R15 = last p + 1

        lea rsi, [rbx + 2]              ; 3. count the composites: 2 ...
        xor edx, edx
.count: movzx eax, byte [rsi]           ; ... 5 per number ...
        add rdx, rax
        inc rsi
        cmp rsi, r10
        jb .count
        mov rbp, SIEVE_N - 2            ; ... 2: RBP = primes below N
        sub rbp, rdx

        mov rsi, rbx                    ; 4. rep movsq: 4
        mov rdi, r11
        mov ecx, SIEVE_SIZE / 8
        rep movsq

        mov rsi, r11                    ; 5. copy back and hash: 2 ...
        mov rdi, rbx
.copy:  mov rax, [rsi]                  ; ... 8 per quadword ...
        mov [rdi], rax
        add r12, rax
        rol r12, 1
        add rsi, 8
        add rdi, 8
        cmp rsi, r13
        jb .copy

        dec r14d                        ; ... 2
        jnz .iteration
.end:                                   ; --- measured part ends here

        BENCH_CHECKSUM 64, r12
        PRINT TEST_NAME, ": "
        PRINT_DEC rbp
        PRINTLN " primes below ", SIEVE_SIZE_STR
        ; instructions = ITERATIONS * (fixed + 7 * composites + 16 * primes
        ;                + 4 * marks), over p = 2 .. R15 - 1
        lea rax, [r15 - 2]              ; p values tried
        sub rax, r9                     ; composites among them
        imul rax, rax, INSNS_COMPOSITE
        imul rcx, r9, INSNS_PRIME
        add rax, rcx
        lea rax, [rax + r8 * 4]
        add rax, INSNS_CLEAR + INSNS_SIEVE_SET + INSNS_COUNT + INSNS_COPY
        imul rax, rax, ITERATIONS
        BENCH_INSNS rax, ITERATIONS_STR, " iteration(s), sieve of ", SIEVE_SIZE_STR, " bytes"
        CHECK64 1, rbp, PRIMES
        CHECK64 2, r12, CHECKSUM
        TEST_PASS

        BENCH_LM64_SUPPORT
