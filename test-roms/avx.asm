; avx.asm - AVX, AVX2, FMA, F16C and the YMM state, at CPL3 in 64-bit mode: 256-bit
; arithmetic, moves and shuffles (VPERM2F128, VPERMILPS, VINSERTF128/VEXTRACTF128,
; VBROADCASTSS), VEX.128 zeroing bits 255:128 while legacy SSE keeps them, VTESTPS/VPTEST, FMA
; (VFMADD231PS, VFNMADD213SD), F16C both ways, AVX2 (strlen's VPCMPEQB/VPMOVMSKB step, VPERMD,
; VPERMQ, VPSLLVD, VPBROADCASTB, VPHADDD, VPMINUB), gathers (VPGATHERDD, VGATHERDPD) with the
; mask cleared, masked moves (the unselected elements zeroed or left alone), and XSAVE/XRSTOR
; of YMM_Hi128 at offset 576 with XSTATE_BV[2] clear after VZEROUPPER.
;
; The kernel checks CPUID for AVX, AVX2, FMA, F16C and XSAVE, enables SSE and XSAVE (CR4),
; sets XCR0 to x87|SSE|AVX, checks OSXSAVE and leaf 0xD, makes the low 1 GiB user-accessible
; and enters CPL3 through IRETQ (IOPL 3, so that user code can print); the checks run there
; and end with a SYSCALL back to the kernel. On kvm_pvm CPL3 code runs on the CPU itself, so
; there this ROM is the hardware's answer to the same checks the software CPU passes.
;
; Expected outcome: exit status 0; output ends with
;   avx: AVX, AVX2, FMA, F16C and XSAVE known answers ok
;   avx: PASS

%define TEST_NAME "avx"

%macro JANUS_EXTRA_GDT_ENTRIES 0
        dq 0x00AF9A000000FFFF           ; 0x30 kernel code64
        dq 0x00CF92000000FFFF           ; 0x38 kernel data
        dq 0x00CFFA000000FFFF           ; 0x40 user code32 (SYSRET base)
        dq 0x00CFF2000000FFFF           ; 0x48 user data
        dq 0x00AFFA000000FFFF           ; 0x50 user code64
%endmacro

%include "janus.inc"

K_CS            equ 0x30
U_BASE          equ 0x40
U_SS            equ 0x48 | 3
U_CS            equ 0x50 | 3
MSR_STAR        equ 0xC0000081
MSR_LSTAR       equ 0xC0000082
MSR_SFMASK      equ 0xC0000084
USER_RSP        equ 0x5800
CR4_OSFXSR      equ 1 << 9
CR4_OSXMMEXCPT  equ 1 << 10

; CPUID.1:ECX: FMA, XSAVE, AVX, F16C; CPUID.7.0:EBX: BMI1, AVX2, BMI2.
LEAF1_ECX       equ 1 << 12 | 1 << 26 | 1 << 28 | 1 << 29
LEAF7_EBX       equ 1 << 3 | 1 << 5 | 1 << 8
CR4_OSXSAVE     equ 1 << 18

main:
        PRINTLN "avx: AVX, AVX2, FMA, F16C and the YMM state at CPL3"
        mov eax, 1
        cpuid
        and ecx, LEAF1_ECX
        CHECK32 1, ecx, LEAF1_ECX
        mov eax, 7
        xor ecx, ecx
        cpuid
        and ebx, LEAF7_EBX
        CHECK32 2, ebx, LEAF7_EBX
        ENTER_PM32
        ENTER_LM64
        or byte [JANUS_PT_BASE], 4      ; make the low 1 GiB user-accessible
        or byte [JANUS_PT_BASE + 0x1000], 4
        mov rdi, JANUS_PT_BASE + 0x2000
        mov ecx, 512
.u:     or byte [rdi], 4
        add rdi, 8
        loop .u
        mov rax, cr3
        mov cr3, rax
        mov rax, cr4
        or eax, CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE
        mov cr4, rax
        xor ecx, ecx                    ; XCR0 = x87 | SSE | AVX
        xor edx, edx
        mov eax, 7
        xsetbv
        xor ecx, ecx
        xgetbv
        CHECK32 3, eax, 7
        mov eax, 1
        cpuid
        bt ecx, 27                      ; OSXSAVE follows CR4
        setc al
        CHECK8 4, al, 1
        mov eax, 0xd                    ; the size of XCR0's components; YMM_Hi128 at 576
        xor ecx, ecx
        cpuid
        CHECK32 5, ebx, 832
        mov eax, 0xd
        mov ecx, 2
        cpuid
        CHECK32 6, eax, 256
        CHECK32 7, ebx, 576

        mov ecx, MSR_EFER
        rdmsr
        or eax, 1                       ; SCE
        wrmsr
        mov ecx, MSR_STAR
        xor eax, eax
        mov edx, (U_BASE << 16) | K_CS
        wrmsr
        mov ecx, MSR_LSTAR
        lea rax, [rel finish]
        mov rdx, rax
        shr rdx, 32
        wrmsr
        mov ecx, MSR_SFMASK
        mov eax, 0x0700
        xor edx, edx
        wrmsr
        mov [rel kernel_rsp], rsp

        push U_SS
        push USER_RSP
        push 0x3002                     ; IOPL 3
        push U_CS
        lea rax, [rel user]
        push rax
        iretq

finish:
        mov rsp, [rel kernel_rsp]
        TEST_PASS


;--- user ---------------------------------------------------------------------
user:
;--- AVX: 256-bit arithmetic, moves and shuffles
        vmovups ymm0, [rel f1_8]
        vaddps ymm1, ymm0, [rel halves]
        vextractf128 xmm2, ymm1, 1
        vpextrd eax, xmm2, 3
        CHECK32 10, eax, 0x41080000     ; 8.5
        vmulps ymm2, ymm0, ymm0
        vperm2f128 ymm2, ymm2, ymm2, 1  ; swap the halves
        vmovd eax, xmm2
        CHECK32 11, eax, 0x41c80000     ; 25.0
        vbroadcastss ymm3, [rel f1_8 + 12]
        vpermilps ymm3, ymm0, 0x1b      ; 4 3 2 1 | 8 7 6 5
        vextractf128 xmm4, ymm3, 1
        vmovd eax, xmm4
        CHECK32 12, eax, 0x41000000     ; 8.0
        vinsertf128 ymm5, ymm0, xmm0, 1
        vextractf128 xmm5, ymm5, 1
        vpextrd eax, xmm5, 3
        CHECK32 13, eax, 0x40800000     ; 4.0
        vtestps ymm0, ymm0              ; no sign bit: ZF
        setz al
        CHECK8 14, al, 1
        vmovaps [rel out32], ymm1
        mov eax, [rel out32 + 28]
        CHECK32 15, eax, 0x41080000
        ; VEX.128 zeroes bits 255:128; legacy SSE keeps them.
        vmovups ymm6, [rel f1_8]
        addps xmm6, xmm6
        vextractf128 xmm7, ymm6, 1
        vmovd eax, xmm7
        CHECK32 16, eax, 0x40a00000     ; 5.0 kept
        vmovups ymm6, [rel f1_8]
        vaddps xmm6, xmm6, xmm6
        vextractf128 xmm7, ymm6, 1
        vptest xmm7, xmm7
        setz al
        CHECK8 17, al, 1

;--- FMA and F16C
        vmovaps ymm8, ymm0
        vfmadd231ps ymm8, ymm0, ymm0    ; x + x*x
        vextractf128 xmm8, ymm8, 1
        vpextrd eax, xmm8, 3
        CHECK32 20, eax, 0x42900000     ; 72.0
        vmovsd xmm9, [rel two_and_half]
        vfnmadd213sd xmm9, xmm9, xmm9   ; -(x*x) + x = -3.75
        vmovq rax, xmm9
        CHECK64 21, rax, 0xc00e000000000000
        vcvtps2ph xmm10, ymm0, 0
        vmovq rax, xmm10
        CHECK64 22, rax, 0x4400420040003c00
        vcvtph2ps ymm11, [rel halfs]
        vextractf128 xmm11, ymm11, 1
        vmovd eax, xmm11
        CHECK32 23, eax, 0x477fe000     ; 65504.0

;--- AVX2: strlen's step, permutes, variable shifts, broadcasts
        vpxor xmm12, xmm12, xmm12
        vpcmpeqb ymm13, ymm12, [rel text32]
        vpmovmskb eax, ymm13
        tzcnt eax, eax
        CHECK32 30, eax, 26
        vmovdqu ymm0, [rel ints]
        vpermd ymm1, ymm0, [rel rints]  ; lane k = rints[ints[k]] = 7 - k
        vmovd eax, xmm1
        CHECK32 31, eax, 7
        vpermq ymm2, ymm0, 0x1b
        vmovq rax, xmm2
        CHECK64 32, rax, 0x0000000700000006
        vpsllvd ymm3, ymm0, [rel rints] ; k << (7 - k)
        vextractf128 xmm3, ymm3, 1
        vmovd eax, xmm3
        CHECK32 33, eax, 4 << 3
        vpbroadcastb ymm4, [rel text32]
        vextracti128 xmm4, ymm4, 1
        vpextrd eax, xmm4, 3
        CHECK32 34, eax, 0x61616161
        vpaddd ymm5, ymm0, [rel rints]
        vphaddd ymm5, ymm5, ymm5
        vextracti128 xmm5, ymm5, 1
        vmovd eax, xmm5
        CHECK32 35, eax, 14
        vpminub ymm6, ymm0, [rel rints]
        vextracti128 xmm6, ymm6, 1
        vpextrd eax, xmm6, 1
        CHECK32 36, eax, 2

;--- AVX2 gathers and the masked moves
        vmovdqu ymm1, [rel gidx]        ; 0, 3, 6, ... 21
        vpcmpeqd ymm2, ymm2, ymm2
        vpcmpeqd ymm0, ymm0, ymm0
        lea rbx, [rel table]
        vpgatherdd ymm0, [rbx + ymm1 * 4], ymm2
        vptest ymm2, ymm2               ; mask cleared
        setz al
        CHECK8 40, al, 1
        vextracti128 xmm3, ymm0, 1
        vpextrd eax, xmm3, 3
        CHECK32 41, eax, 1021
        vpcmpeqd xmm2, xmm2, xmm2
        vgatherdpd xmm4, [rbx + xmm1 * 4 + 8], xmm2
        vpextrq rax, xmm4, 1
        CHECK64 42, rax, 0x000003ee000003ed
        vmovdqa xmm5, [rel mask_0_2]
        vmaskmovps xmm6, xmm5, [rel ints]
        vpextrd eax, xmm6, 2
        CHECK32 43, eax, 2
        vpextrd eax, xmm6, 1
        CHECK32 44, eax, 0
        vpcmpeqd xmm7, xmm7, xmm7
        vpmaskmovd [rel out32], xmm5, xmm7
        mov eax, [rel out32 + 4]
        CHECK32 45, eax, 0x40200000     ; out32's 2.5 kept
        mov eax, [rel out32 + 8]
        CHECK32 46, eax, -1

;--- The YMM state in XSAVE: YMM_Hi128 at 576, XSTATE_BV[2] after VZEROUPPER
        vmovups ymm9, [rel f1_8]
        lea rdi, [rel xarea]
        mov eax, 7
        xor edx, edx
        xsave [rdi]
        mov eax, [rdi + 576 + 9 * 16 + 12]
        CHECK32 50, eax, 0x41000000     ; YMM9[255:224] = 8.0
        mov eax, [rdi + 512]
        and eax, 4
        CHECK32 51, eax, 4
        vzeroupper
        mov eax, 7
        xsave [rdi]
        mov eax, [rdi + 512]
        and eax, 4
        CHECK32 52, eax, 0
        vmovups ymm9, [rel f1_8]
        vzeroall
        mov eax, 4
        mov dword [rdi + 512], 4        ; XSTATE_BV: YMM_Hi128 only
        mov dword [rdi + 576 + 16], 0x12345678
        xrstor [rdi]
        vextractf128 xmm1, ymm1, 1
        vmovd eax, xmm1
        CHECK32 53, eax, 0x12345678
        PRINTLN "avx: AVX, AVX2, FMA, F16C and XSAVE known answers ok"
        syscall

        align 32
f1_8:           dd 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0
halves:         times 8 dd 0.5
ints:           dd 0, 1, 2, 3, 4, 5, 6, 7
rints:          dd 7, 6, 5, 4, 3, 2, 1, 0
gidx:           dd 0, 3, 6, 9, 12, 15, 18, 21
mask_0_2:       dd -1, 0, -1, 0
text32:         db "abcdefghijklmnopqrstuvwxyz", 0, "ABCDE"
halfs:          dw 0x3c00, 0xc000, 0x3800, 0x7bff, 0x7bff, 0, 0, 0
two_and_half:   dq 2.5
                align 32
out32:          times 32 db 0
table:
%assign t 1000
%rep 32
                dd t
%assign t t + 1
%endrep
                align 64
xarea:          times 832 db 0
kernel_rsp:     dq 0
