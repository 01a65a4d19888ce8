; branchy.asm - sorting benchmark: data-dependent branches, 32-bit mode.
;
; Each iteration fills an array of ARRAY_LEN 32-bit words with xorshift32
; pseudo-random numbers (the generator state carries over from one
; iteration to the next), sorts it with insertion sort (unsigned, with a
; zero sentinel below the array, so the inner loop has a single exit whose
; trip count depends on the data), then checks that it is sorted and hashes
; it into the checksum. Paging is off; the array lives at ARRAY (1 MiB).
;
; Instructions: per iteration a fixed ITER_FIXED instructions (generate,
; sort bookkeeping, check and hash) plus 5 per element moved by the sort's
; inner loop; the program counts the moves and prints the exact total of its
; measured part (from the first iteration to the end of the last):
; 343,261,994 at full size (256 iterations of 1024 elements,
; 66,974,882 moves), 345,057 with -DQUICK (4 iterations of 256 elements,
; 62,461 moves).
; Setup, mode switches and output add a few thousand more.
;
; Expected outcome: exit status 0; output
;   branchy: checksum 0x03fc851e
;   branchy: 343261994 instructions (256 iterations of 1024 elements)
;   branchy: PASS

%ifdef QUICK
%define ITERATIONS 4
%define ARRAY_LEN 256
%define CHECKSUM 0x5b9bb52f
%else
%define ITERATIONS 256
%define ARRAY_LEN 1024
%define CHECKSUM 0x03fc851e
%endif
%defstr ITERATIONS_STR ITERATIONS
%defstr ARRAY_LEN_STR ARRAY_LEN

%define TEST_NAME "branchy"
%include "bench.inc"

ARRAY           equ 0x100000            ; ARRAY - 4 holds the sentinel 0
ARRAY_END       equ ARRAY + 4 * ARRAY_LEN
SEED            equ 0x2545F491

; Instructions per iteration outside the sort's inner loop (see the labels):
;   iteration start      2
;   generate            13 per element
;   sort                 2 + 11 per element after the first
;   bookkeeping          4
;   check and hash       8 per element but the last, plus 5
;   iteration end        2
ITER_FIXED      equ 2 + 13 * ARRAY_LEN + 2 + 11 * (ARRAY_LEN - 1) + 4 + 8 * (ARRAY_LEN - 1) + 5 + 2

main:
        ENTER_PM32
        mov dword [ARRAY - 4], 0        ; the sentinel
        mov dword [state], SEED
        mov dword [hash], 0
        mov dword [moves], 0
        mov dword [moves + 4], 0
        mov dword [iterations], ITERATIONS

.iteration:                             ; --- measured part starts here
        mov ebp, [state]                ; 2
        mov edi, ARRAY

.generate:                              ; 13 per element
        mov eax, ebp                    ; xorshift32: x ^= x << 13;
        shl eax, 13                     ;   x ^= x >> 17; x ^= x << 5
        xor ebp, eax
        mov eax, ebp
        shr eax, 17
        xor ebp, eax
        mov eax, ebp
        shl eax, 5
        xor ebp, eax
        mov [edi], ebp
        add edi, 4
        cmp edi, ARRAY_END
        jb .generate

        mov [state], ebp                ; 2
        mov edi, ARRAY + 4              ; a[1]
        xor ebx, ebx                    ; (counted with the bookkeeping)
.outer:                                 ; 5 + 5 per move + 6
        mov eax, [edi]                  ; key = a[i]
        mov esi, edi
        mov edx, [esi - 4]
        cmp edx, eax
        jbe .place
.shift: mov [esi], edx                  ; the inner loop: 5 per move
        sub esi, 4
        mov edx, [esi - 4]
        cmp edx, eax
        ja .shift
.place: mov [esi], eax
        add ebx, edi                    ; EBX += 4 * (moves of this key)
        sub ebx, esi
        add edi, 4
        cmp edi, ARRAY_END
        jb .outer

        shr ebx, 2                      ; bookkeeping: 4 (with the xor above)
        add [moves], ebx
        adc dword [moves + 4], 0

        mov esi, ARRAY                  ; check and hash: 5 ...
        mov edx, [hash]
.check:                                 ; ... plus 8 per element but the last
        mov eax, [esi]
        cmp eax, [esi + 4]
        ja .unsorted
        rol edx, 5
        xor edx, eax
        add esi, 4
        cmp esi, ARRAY_END - 4
        jb .check
        rol edx, 5                      ; the last element
        xor edx, [esi]
        mov [hash], edx

        dec dword [iterations]          ; 2
        jnz .iteration
.end:                                   ; --- measured part ends here

        ENTER_LM64                      ; (for 64-bit arithmetic and output)
        mov ebx, [hash]
        BENCH_CHECKSUM 32, ebx
        mov rax, [moves]                ; instructions: 5 per move ...
        imul rax, rax, 5
        add rax, ITER_FIXED * ITERATIONS ; ... plus the fixed part
        BENCH_INSNS rax, ITERATIONS_STR, " iterations of ", ARRAY_LEN_STR, " elements"
        CHECK32 1, ebx, CHECKSUM
        TEST_PASS

        bits 32
.unsorted:
        FAIL 2, "the array is not sorted"

        align 4
state:          dd 0
hash:           dd 0
iterations:     dd 0
moves:          dq 0
