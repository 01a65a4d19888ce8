; fpu.asm - x87, SSE/SSE2 and the FXSAVE/XSAVE state in 64-bit long mode.
;
; Enables the FPU and SSE (CR0.EM clear, MP and NE set; CR4.OSFXSR, OSXMMEXCPT, OSXSAVE;
; XCR0 = x87|SSE), checks CPUID's FPU/SSE/SSE2/FXSR/XSAVE bits, then computes with the x87
; stack (integer and constant loads, 80-bit arithmetic, FSQRT, rounding-control stores,
; compares into EFLAGS, FXAM), with SSE (packed single adds, scalar double division under two
; rounding modes with the inexact flag, conversions, integer SIMD, a NaN rule), and round-trips
; the whole state through FXSAVE64/FXRSTOR64 and XSAVE/XRSTOR (with the header's XSTATE_BV and
; an init-optimised restore). Prints the x87 square root of 2 times 10^9 and exits.
;
; Expected outcome: exit status 0; output ends with
;   fpu: sqrt(2) * 1e9 = 1414213562
;   fpu: PASS

%define TEST_NAME "fpu"
%include "janus.inc"

CR0_MP_BIT      equ 1 << 1
CR0_EM_BIT      equ 1 << 2
CR0_TS_BIT      equ 1 << 3
CR0_NE_BIT      equ 1 << 5
CR4_OSFXSR      equ 1 << 9
CR4_OSXMMEXCPT  equ 1 << 10
CR4_OSXSAVE     equ 1 << 18

main:
        PRINTLN "fpu: x87, SSE, SSE2, FXSAVE and XSAVE in long mode"
        mov eax, 1
        cpuid
        mov eax, edx
        and eax, (1 << 0) | (1 << 24) | (1 << 25) | (1 << 26)
        CHECK32 1, eax, (1 << 0) | (1 << 24) | (1 << 25) | (1 << 26)
        and ecx, 1 << 26                ; XSAVE
        CHECK32 2, ecx, 1 << 26
        ENTER_PM32
        ENTER_LM64

        mov rax, cr0
        and eax, ~(CR0_EM_BIT | CR0_TS_BIT)
        or eax, CR0_MP_BIT | CR0_NE_BIT
        mov cr0, rax
        mov rax, cr4
        or eax, CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE
        mov cr4, rax
        xor ecx, ecx
        xor edx, edx
        mov eax, 3                      ; XCR0 = x87 | SSE
        xsetbv
        xor ecx, ecx
        xgetbv
        CHECK32 3, eax, 3
        mov eax, 1
        cpuid
        and ecx, 1 << 27                ; OSXSAVE mirrors CR4
        CHECK32 4, ecx, 1 << 27

;--- x87 ----------------------------------------------------------------------
        PRINTLN "  x87"
        fninit
        fnstcw [rel cw]
        CHECK16 5, word [rel cw], 0x037F
        fild dword [rel three]          ; 3
        fldpi                           ; pi, 3
        fmulp st1, st0                  ; 3pi
        fld1
        fadd st0, st0                   ; 2, 3pi
        fdivp st1, st0                  ; 1.5pi
        fistp dword [rel out32]         ; round to nearest: 5
        CHECK32 6, dword [rel out32], 5
        fnstsw ax
        and ax, 0x3800                  ; TOP back to 0
        CHECK16 7, ax, 0
        fild dword [rel two]
        fsqrt
        fild dword [rel billion]
        fmulp st1, st0
        fld st0
        fistp qword [rel out64]         ; 1414213562.37... -> 1414213562
        mov rax, [rel out64]
        CHECK64 8, rax, 1414213562
        fnstcw [rel cw]
        or word [rel cw], 0x0C00        ; round toward zero
        fldcw [rel cw]
        fchs
        fistp dword [rel out32]
        CHECK32 9, dword [rel out32], -1414213562
        fldz
        fld1                            ; 1, 0
        fcomi st0, st1                  ; 1 > 0: CF = ZF = 0
        CHECK_CC 10, a
        fxam                            ; +1: normal, C2 set
        fnstsw ax
        and ax, 0x4700
        CHECK16 11, ax, 0x0400
        fcompp
        fninit

;--- SSE / SSE2 ---------------------------------------------------------------
        PRINTLN "  SSE and SSE2"
        movaps xmm0, [rel ps_a]
        addps xmm0, [rel ps_b]
        movaps [rel out128], xmm0
        mov rax, [rel out128]
        CHECK64 12, rax, 0x4010000040200000     ; 2.25f, 2.5f
        movsd xmm1, [rel one_d]
        divsd xmm1, [rel three_d]
        movq rax, xmm1
        CHECK64 13, rax, 0x3FD5555555555555     ; 1/3 rounded to nearest
        stmxcsr [rel mx]
        mov eax, [rel mx]
        and eax, 0x3F
        CHECK32 14, eax, 0x20                   ; precision (inexact) flag
        mov dword [rel mx], 0x1F80 | (2 << 13)  ; round up
        ldmxcsr [rel mx]
        movsd xmm1, [rel one_d]
        divsd xmm1, [rel three_d]
        movq rax, xmm1
        CHECK64 15, rax, 0x3FD5555555555556
        mov dword [rel mx], 0x1F80
        ldmxcsr [rel mx]
        mov rax, -7
        cvtsi2sd xmm2, rax
        cvttsd2si rcx, xmm2
        CHECK64 16, rcx, -7
        movdqa xmm3, [rel pi_a]
        paddusb xmm3, [rel pi_b]                ; saturating byte add
        pcmpeqb xmm4, xmm4
        pmovmskb eax, xmm3
        CHECK32 17, eax, 0x8081
        pshufd xmm5, xmm3, 0x1B
        movq rax, xmm5
        CHECK64 18, rax, 0xFF000000
        pxor xmm6, xmm6
        divps xmm6, xmm6                        ; 0/0: the default NaN
        movd eax, xmm6
        CHECK32 19, eax, 0xFFC00000
        ucomisd xmm1, xmm1                      ; ordered, equal
        CHECK_CC 20, e

;--- FXSAVE / XSAVE -----------------------------------------------------------
        PRINTLN "  FXSAVE64/FXRSTOR64 and XSAVE/XRSTOR"
        mov dword [rel mx], 0x1F80      ; clear the sticky flags of the 0/0 above
        ldmxcsr [rel mx]
        fninit
        fld1
        movdqa xmm7, [rel pi_a]
        fxsave64 [rel area]
        CHECK16 21, word [rel area], 0x037F     ; FCW
        CHECK8 22, byte [rel area + 4], 0x80    ; abridged tag: physical 7 in use
        CHECK32 23, dword [rel area + 24], 0x1F80
        pxor xmm7, xmm7
        fninit
        fxrstor64 [rel area]
        movq rax, xmm7
        mov rdx, [rel pi_a]
        CHECK64 24, rax, rdx
        fnstsw ax
        CHECK16 25, ax, 0x3800                  ; TOP = 7 again
        mov qword [rel xarea + 512], 0
        mov eax, 3
        xor edx, edx
        xsave [rel xarea]
        mov rax, [rel xarea + 512]
        CHECK64 26, rax, 3                      ; XSTATE_BV: x87 and SSE in use
        pxor xmm7, xmm7
        xrstor [rel xarea]
        movq rax, xmm7
        mov rdx, [rel pi_a]
        CHECK64 27, rax, rdx
        mov qword [rel xarea + 512], 1          ; SSE not in use: XRSTOR zeroes XMM
        mov eax, 3
        xor edx, edx
        xrstor [rel xarea]
        movq rax, xmm7
        CHECK64 28, rax, 0

;--- result -------------------------------------------------------------------
        fninit
        fild dword [rel two]
        fsqrt
        fild dword [rel billion]
        fmulp st1, st0
        fistp qword [rel out64]                 ; round to nearest
        PRINT "fpu: sqrt(2) * 1e9 = "
        mov rax, [rel out64]
        PRINT_DEC rax
        NEWLINE
        TEST_PASS

        align 16
ps_a:   dd 1.0, 2.0, 3.0, 4.0
ps_b:   dd 1.5, 0.25, -3.0, 0.5
pi_a:   db 0xF0, 1, 2, 3, 4, 5, 6, 0x70, 0, 0, 0, 0, 0, 0, 0, 0x10
pi_b:   db 0x20, 1, 1, 1, 1, 1, 1, 0x10, 0, 0, 0, 0, 0, 0, 0, 0xF0
out128: dq 0, 0
one_d:  dq 1.0
three_d: dq 3.0
out64:  dq 0
three:  dd 3
two:    dd 2
billion: dd 1000000000
out32:  dd 0
mx:     dd 0
cw:     dw 0
        align 64
area:   times 512 db 0
xarea:  times 576 db 0
