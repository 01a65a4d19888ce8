; longmode.asm - enter 64-bit long mode and run checks there.
;
; Checks CPUID for long mode support, switches real -> 32-bit protected mode
; -> long mode (identity-mapped 4 GiB with 2 MiB pages, PAE, EFER.LME,
; CR0.PG), then checks the mode itself and 64-bit integer work: 64-bit
; immediates, r8-r15 and their partial registers, RIP-relative addressing,
; 64-bit mul/imul/div/idiv, shifts, the 64-bit stack.
;
; Expected outcome: exit status 0; output ends with
;   longmode: PASS
; A failure prints "longmode: FAIL check N: ..." and exits with status N.

%define TEST_NAME "longmode"
%include "janus.inc"

main:
        PRINTLN "longmode: checking CPUID"
        mov eax, 0x80000000             ; highest extended leaf
        cpuid
        cmp eax, 0x80000001
        CHECK_CC 1, ae
        mov eax, 0x80000001
        cpuid
        and edx, 1 << 29                ; LM: long mode supported
        CHECK32 2, edx, 1 << 29
        mov eax, 1
        cpuid
        and edx, 1 << 6                 ; PAE
        CHECK32 3, edx, 1 << 6

        PRINTLN "  entering long mode"
        ENTER_PM32                      ; bits 32
        ENTER_LM64                      ; bits 64
        PRINTLN "  now in 64-bit long mode"

;--- the mode itself ------------------------------------------------------------
        mov ecx, MSR_EFER
        rdmsr
        and eax, (1 << 10) | EFER_LME   ; LMA (active) and LME
        CHECK32 4, eax, (1 << 10) | EFER_LME
        mov rax, cr0
        and eax, CR0_PG | CR0_PE
        CHECK32 5, eax, CR0_PG | CR0_PE
        mov rax, cr3
        CHECK64 6, rax, JANUS_PT_BASE
        mov ax, cs
        CHECK16 7, ax, SEL_CODE64
        mov eax, 0x80000001             ; CPUID works here too
        cpuid
        bt edx, 29
        CHECK_CC 8, c

;--- 64-bit immediates and registers ---------------------------------------------
        PRINTLN "  64-bit registers and immediates"
        mov rax, 0x123456789ABCDEF0
        mov rbx, rax
        shr rbx, 32
        CHECK64 9, rbx, 0x12345678
        mov ecx, 0xFFFFFFFF
        add rcx, 1                      ; carries into bit 32
        CHECK64 10, rcx, 0x100000000
        mov rax, -1
        mov eax, 1                      ; a 32-bit write zero-extends
        CHECK64 11, rax, 1
        mov rax, -1
        mov ax, 2                       ; a 16-bit write does not
        CHECK64 12, rax, 0xFFFFFFFFFFFF0002
        mov rax, 0x8000000000000000
        sub rax, 1
        CHECK_FLAGS 13, F_ARITH, F_OF
        CHECK64 14, rax, 0x7FFFFFFFFFFFFFFF

        mov r8, 1                       ; r8..r15 hold 1, 2, 4, ... 128
        mov r9, 2
        mov r10, 4
        mov r11, 8
        mov r12, 16
        mov r13, 32
        mov r14, 64
        mov r15, 128
        mov rax, r8
        add rax, r9
        add rax, r10
        add rax, r11
        add rax, r12
        add rax, r13
        add rax, r14
        add rax, r15
        CHECK64 15, rax, 255
        mov r8, 0x1122334455667788      ; partial registers of r8
        mov r9d, r8d
        CHECK64 16, r9, 0x55667788
        mov r10, -1
        mov r10b, 0x42
        CHECK64 17, r10, 0xFFFFFFFFFFFFFF42
        mov r11w, r8w
        CHECK16 18, r11w, 0x7788
        movsxd rax, r9d                 ; 0x55667788 is positive
        CHECK64 19, rax, 0x55667788
        mov ecx, 0x80000000
        movsxd rax, ecx
        CHECK64 20, rax, 0xFFFFFFFF80000000
        mov rax, r8
        bswap rax
        CHECK64 21, rax, 0x8877665544332211

;--- RIP-relative addressing -------------------------------------------------------
        PRINTLN "  RIP-relative addressing"
        mov rax, [rel qword_data]
        CHECK64 22, rax, 0xFEEDFACECAFEBEEF
        mov rbx, 0x0123456789ABCDEF
        mov [rel qword_scratch], rbx
        mov rcx, [qword_scratch]        ; same location, absolute address
        CHECK64 23, rcx, 0x0123456789ABCDEF
        lea rdx, [rel qword_data]
        CHECK64 24, rdx, qword_data
        mov r12, 2
        lea r13, [rel qword_table]
        mov rax, [r13 + r12 * 8]        ; qword_table[2]
        CHECK64 25, rax, 0x3333333333333333

;--- 64-bit multiply and divide ------------------------------------------------------
        PRINTLN "  64-bit mul/imul/div/idiv"
        mov rax, -1
        mov rbx, 2
        mul rbx                         ; RDX:RAX = 2^65 - 2
        CHECK64 26, rdx, 1
        CHECK64 27, rax, 0xFFFFFFFFFFFFFFFE
        mov rax, -3
        mov rbx, 0x4000000000000000
        imul rbx                        ; -3 * 2^62
        CHECK64 28, rdx, -1
        CHECK64 29, rax, 0x4000000000000000
        mov rax, 1000000007
        imul rax, rax                   ; two-operand form, fits in 64 bits
        CHECK64 30, rax, 1000000014000000049
        mov rdx, 1                      ; RDX:RAX = 2^64
        xor eax, eax
        mov rcx, 3
        div rcx
        CHECK64 31, rax, 0x5555555555555555
        CHECK64 32, rdx, 1
        mov rax, -10000000000
        cqo
        mov rcx, 7
        idiv rcx                        ; truncates toward zero
        CHECK64 33, rax, -1428571428
        CHECK64 34, rdx, -4

;--- shifts and rotates ---------------------------------------------------------------
        PRINTLN "  64-bit shifts"
        mov rax, 1
        shl rax, 63
        CHECK64 35, rax, 0x8000000000000000
        sar rax, 60
        CHECK64 36, rax, -8
        mov rax, 0x0F00000000000001
        rol rax, 8
        CHECK64 37, rax, 0x000000000000010F
        mov cl, 36
        mov rax, 0xABC
        shl rax, cl
        CHECK64 38, rax, 0xABC000000000

;--- the 64-bit stack -----------------------------------------------------------------
        PRINTLN "  64-bit push/pop"
        mov rbp, rsp
        mov rax, 0x1111222233334444
        push rax
        push -2                         ; imm32 sign-extended to 64 bits
        mov rbx, rbp
        sub rbx, rsp
        CHECK64 39, rbx, 16
        pop rcx
        CHECK64 40, rcx, 0xFFFFFFFFFFFFFFFE
        pop rdx
        CHECK64 41, rdx, 0x1111222233334444
        CHECK64 42, rsp, rbp
        call get_rip_and_depth
after_call:
        CHECK64 43, rax, after_call     ; the return address pushed by call
        CHECK64 44, rbx, 8              ; a call pushes 8 bytes

;--- memory above 1 MiB through the page tables -------------------------------------------
        mov rdi, 0x3000000              ; 48 MiB, in RAM
        mov rax, 0x0DDBA11CAFEF00D5
        mov [rdi], rax
        CHECK64 45, rax, [rdi]          ; (compares rax with the stored qword)

        PRINT "  print: 0x"
        mov rax, 0xFEDCBA9876543210
        PRINT_HEX 64, rax
        PRINT " = "
        PRINT_DEC rax
        NEWLINE

        TEST_PASS

; get_rip_and_depth: RAX = own return address, RBX = bytes the call pushed.
get_rip_and_depth:
        mov rax, [rsp]
        mov rbx, rbp
        sub rbx, rsp
        ret

;--- data --------------------------------------------------------------------------------
        align 8
qword_data:     dq 0xFEEDFACECAFEBEEF
qword_scratch:  dq 0
qword_table:    dq 0x1111111111111111, 0x2222222222222222, 0x3333333333333333
