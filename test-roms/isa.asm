; isa.asm - the extensions after SSE2, at CPL3 in 64-bit mode: SSE3, SSSE3, SSE4.1, SSE4.2
; (string compares, CRC32), POPCNT, MOVBE, BMI2, ADX, RDRAND/RDSEED, RDPID, AES-NI (FIPS-197's
; AES-128 example), PCLMULQDQ and SHA (SHA-256 of "abc", FIPS 180-4).
;
; The kernel checks CPUID for every one of them, enables SSE (CR4.OSFXSR, OSXMMEXCPT), makes
; the low 1 GiB user-accessible and enters CPL3 through IRETQ (IOPL 3, so that user code can
; print); the checks run there and end with a SYSCALL back to the kernel. On kvm_pvm CPL3 code
; runs on the CPU itself, so there this ROM is the hardware's answer to the same checks the
; software CPU passes.
;
; Expected outcome: exit status 0; output ends with
;   isa: AES-128 and SHA-256 known answers ok
; (after "isa: RDPID = RDTSCP's TSC_AUX" where CPUID offers RDPID)
;   isa: PASS

%define TEST_NAME "isa"

%macro JANUS_EXTRA_GDT_ENTRIES 0
        dq 0x00AF9B000000FFFF           ; 0x30 kernel code64
        dq 0x00CF93000000FFFF           ; 0x38 kernel data
        dq 0x00CFFB000000FFFF           ; 0x40 user code32 (SYSRET base)
        dq 0x00CFF3000000FFFF           ; 0x48 user data
        dq 0x00AFFB000000FFFF           ; 0x50 user code64
%endmacro

%include "janus.inc"

K_CS            equ 0x30
U_BASE          equ 0x40
U_SS            equ 0x48 | 3
U_CS            equ 0x50 | 3
MSR_STAR        equ 0xC0000081
MSR_LSTAR       equ 0xC0000082
MSR_SFMASK      equ 0xC0000084
MSR_TSC_AUX     equ 0xC0000103
USER_RSP        equ 0x5800
CR4_OSFXSR      equ 1 << 9
CR4_OSXMMEXCPT  equ 1 << 10

; CPUID.1:ECX: SSE3, PCLMULQDQ, SSSE3, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND.
LEAF1_ECX       equ 1 | 1 << 1 | 1 << 9 | 1 << 19 | 1 << 20 | 1 << 22 | 1 << 23 | 1 << 25 | 1 << 30
; CPUID.7.0:EBX: BMI1, BMI2, RDSEED, ADX, SHA; ECX: RDPID.
LEAF7_EBX       equ 1 << 3 | 1 << 8 | 1 << 18 | 1 << 19 | 1 << 29
LEAF7_ECX       equ 1 << 22

main:
        PRINTLN "isa: SSE3 to SSE4.2, BMI2, ADX, AES-NI, PCLMULQDQ, SHA at CPL3"
        mov eax, 1
        cpuid
        and ecx, LEAF1_ECX
        CHECK32 1, ecx, LEAF1_ECX
        mov eax, 7
        xor ecx, ecx
        cpuid
        and ebx, LEAF7_EBX
        CHECK32 2, ebx, LEAF7_EBX
        and ecx, LEAF7_ECX              ; RDPID: checked where offered (KVM may not)
        mov [rel has_rdpid], ecx
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
        or eax, CR4_OSFXSR | CR4_OSXMMEXCPT
        mov cr4, rax

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
        mov ecx, MSR_TSC_AUX
        mov eax, 0x2a
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
;--- SSE3
        movaps xmm0, [rel f1234]
        haddps xmm0, [rel f10_40]       ; 3, 7, 30, 70
        cvttps2dq xmm0, xmm0
        movq rax, xmm0
        CHECK64 10, rax, 0x0000000700000003
        pextrq rax, xmm0, 1
        CHECK64 11, rax, 0x000000460000001e
        movddup xmm1, [rel f1234 + 8]
        pextrq rax, xmm1, 1
        movq rdx, xmm1
        CHECK64 12, rax, rdx
        lddqu xmm2, [rel bytes + 1]     ; unaligned
        movq rax, xmm2
        CHECK64 13, rax, 0x0807060504030201

;--- SSSE3
        movdqa xmm1, [rel bytes]
        pshufb xmm1, [rel reverse]
        movq rax, xmm1
        CHECK64 14, rax, 0x08090a0b0c0d0e0f
        movdqa xmm2, [rel bytes]
        palignr xmm2, [rel reverse], 14 ; bytes 14, 15 of reverse, then bytes 0..13
        movq rax, xmm2
        CHECK64 15, rax, 0x0504030201000001
        pabsd xmm3, [rel negs]
        movq rax, xmm3
        CHECK64 16, rax, 0x0000000200000001

;--- SSE4.1
        movdqa xmm1, [rel negs]         ; -1, -2, 3, 4
        pminsd xmm1, [rel ones]
        movq rax, xmm1
        CHECK64 17, rax, 0xfffffffeffffffff
        pmulld xmm1, [rel negs]         ; 1, 4, 3, 4
        pextrd eax, xmm1, 1
        CHECK32 18, eax, 4
        mov ecx, 0x12345678
        pinsrd xmm1, ecx, 3
        pextrq rax, xmm1, 1
        CHECK64 19, rax, 0x1234567800000003
        ptest xmm1, xmm1                ; not zero: ZF clear; CF set
        CHECK_FLAGS 20, F_ZF | F_CF, F_CF
        movsd xmm4, [rel two_and_half]
        roundsd xmm4, xmm4, 0           ; nearest even: 2.0
        cvttsd2si eax, xmm4
        CHECK32 21, eax, 2
        pmovzxbw xmm5, [rel bytes + 8]
        pextrw eax, xmm5, 7
        CHECK32 22, eax, 15

;--- SSE4.2
        movdqa xmm1, [rel comma]
        pcmpistri xmm1, [rel text], 0   ; equal any: the index of ','
        CHECK_FLAGS 23, F_CF | F_ZF | F_SF | F_OF, F_CF | F_ZF | F_SF
        CHECK32 24, ecx, 5
        mov eax, 1
        mov edx, 12
        pcmpestrm xmm1, [rel text + 0], 0x40
        pextrb eax, xmm0, 5
        CHECK32 25, eax, 0xff
        mov eax, -1
        lea rsi, [rel digits]
        mov ecx, 9
.crc:   crc32 eax, byte [rsi]
        inc rsi
        loop .crc
        not eax
        CHECK32 26, eax, 0xe3069283     ; CRC-32C check value
        mov rax, 0xffffffff00000000
        crc32 rax, qword [rel digits]
        mov rdx, rax
        shr rdx, 32
        CHECK64 27, rdx, 0              ; zero-extended
        movdqa xmm1, [rel negs]
        pcmpgtq xmm1, [rel ones]        ; -2:-1 > 1? no; 4:3 > 1? yes
        pextrq rax, xmm1, 1
        CHECK64 28, rax, -1

;--- POPCNT, MOVBE, BMI2, ADX
        mov rax, 0xf0f0f0f0f0f0f0f0
        popcnt rax, rax
        CHECK64 29, rax, 32
        movbe eax, [rel bytes + 1]
        CHECK32 30, eax, 0x01020304
        movbe [rel scratch], ax
        movzx eax, word [rel scratch]
        CHECK32 31, eax, 0x0403
        mov eax, 0x12345678
        mov ecx, 0xff00ff00
        pdep edx, eax, ecx
        CHECK32 32, edx, 0x56007800
        pext edx, eax, ecx
        CHECK32 33, edx, 0x1256
        rorx edx, ecx, 4
        CHECK32 34, edx, 0x0ff00ff0
        mov edx, 0xffffffff
        mulx esi, edi, ecx              ; 0xffffffff * 0xff00ff00
        CHECK32 35, esi, 0xff00feff
        CHECK32 36, edi, 0x00ff0100
        mov edx, 36
        shlx edx, eax, edx              ; count masked to 4
        CHECK32 37, edx, 0x23456780
        mov rdx, -16
        mov rcx, 2
        sarx rdx, rdx, rcx
        CHECK64 38, rdx, -4
        mov ecx, 8
        bzhi edx, eax, ecx
        CHECK32 39, edx, 0x78
        stc
        mov rax, -1
        mov rcx, 1
        adcx rax, rcx                   ; -1 + 1 + CF: 1, CF set
        CHECK_CC 40, c
        CHECK64 41, rax, 1
        xor edx, edx                    ; OF clear
        mov rdx, 5
        adox rdx, rcx
        CHECK64 42, rdx, 6

;--- RDRAND, RDSEED, RDPID
        mov ecx, 10
.rnd:   rdrand rax
        jc .rnd_ok
        loop .rnd
        FAIL 43, "RDRAND never succeeded"
.rnd_ok:
        mov ecx, 10
.seed:  rdseed rdx
        jc .seed_ok
        loop .seed
        FAIL 44, "RDSEED never succeeded"
.seed_ok:
        cmp dword [rel has_rdpid], 0
        je .no_rdpid
        rdtscp                          ; ECX = IA32_TSC_AUX
        mov rdi, rcx
        rdpid rax
        CHECK64 45, rax, rdi
        PRINTLN "isa: RDPID = RDTSCP's TSC_AUX"
.no_rdpid:

;--- PCLMULQDQ
        movdqa xmm1, [rel clmul_a]
        pclmulqdq xmm1, [rel clmul_a], 0x00     ; 3 x 3 = 5 (carry-less)
        movq rax, xmm1
        CHECK64 46, rax, 5
        movdqa xmm1, [rel clmul_a]
        pclmulqdq xmm1, [rel clmul_a], 0x11     ; all-ones squared: the even bits
        movq rax, xmm1
        mov rdx, 0x5555555555555555
        CHECK64 47, rax, rdx
        pextrq rax, xmm1, 1
        CHECK64 48, rax, rdx

;--- AES-128, FIPS-197 appendix B
        movdqa xmm1, [rel aes_key]
        movdqa xmm0, [rel aes_in]
        movdqa [rel round_keys], xmm1
        pxor xmm0, xmm1
%assign r 1
%rep 10
  %if r <= 8
    %assign rcon 1 << (r - 1)
  %elif r == 9
    %assign rcon 0x1b
  %else
    %assign rcon 0x36
  %endif
        aeskeygenassist xmm2, xmm1, rcon
        pshufd xmm2, xmm2, 0xff
        movdqa xmm3, xmm1
        pslldq xmm3, 4
        pxor xmm1, xmm3
        pslldq xmm3, 4
        pxor xmm1, xmm3
        pslldq xmm3, 4
        pxor xmm1, xmm3
        pxor xmm1, xmm2
        movdqa [rel round_keys + 16 * r], xmm1
  %if r < 10
        aesenc xmm0, xmm1
  %else
        aesenclast xmm0, xmm1
  %endif
%assign r r + 1
%endrep
        movq rax, xmm0
        mov rdx, [rel aes_out]
        CHECK64 49, rax, rdx
        pextrq rax, xmm0, 1
        mov rdx, [rel aes_out + 8]
        CHECK64 50, rax, rdx
        pxor xmm0, [rel round_keys + 16 * 10]
%assign r 9
%rep 9
        aesimc xmm5, [rel round_keys + 16 * r]
        aesdec xmm0, xmm5
%assign r r - 1
%endrep
        aesdeclast xmm0, [rel round_keys]
        movq rax, xmm0
        mov rdx, [rel aes_in]
        CHECK64 51, rax, rdx

;--- SHA-256 of "abc"
%assign k 4
%rep 12
        movdqa xmm3, [rel sha_w + 16 * (k - 4)]
        sha256msg1 xmm3, [rel sha_w + 16 * (k - 3)]
        movdqa xmm7, [rel sha_w + 16 * (k - 1)]
        palignr xmm7, [rel sha_w + 16 * (k - 2)], 4
        paddd xmm3, xmm7
        sha256msg2 xmm3, [rel sha_w + 16 * (k - 1)]
        movdqa [rel sha_w + 16 * k], xmm3
%assign k k + 1
%endrep
        movdqa xmm1, [rel sha_h]        ; a b c d
        movdqa xmm2, [rel sha_h + 16]   ; e f g h
        pshufd xmm1, xmm1, 0xb1         ; CDAB
        pshufd xmm2, xmm2, 0x1b         ; EFGH
        movdqa xmm7, xmm1
        palignr xmm1, xmm2, 8           ; ABEF
        pblendw xmm2, xmm7, 0xf0        ; CDGH
        movdqa xmm8, xmm1
        movdqa xmm9, xmm2
%assign k 0
%rep 16
        movdqa xmm0, [rel sha_w + 16 * k]
        paddd xmm0, [rel sha_k + 16 * k]
        sha256rnds2 xmm2, xmm1          ; (XMM0 implicit)
        pshufd xmm0, xmm0, 0x0e
        sha256rnds2 xmm1, xmm2
%assign k k + 1
%endrep
        paddd xmm1, xmm8
        paddd xmm2, xmm9
        pshufd xmm1, xmm1, 0x1b         ; FEBA
        pshufd xmm2, xmm2, 0xb1         ; DCHG
        movdqa xmm7, xmm1
        pblendw xmm1, xmm2, 0xf0        ; DCBA
        palignr xmm2, xmm7, 8           ; HGFE
        movq rax, xmm1
        CHECK64 52, rax, 0x8f01cfeaba7816bf
        pextrq rax, xmm2, 1
        CHECK64 53, rax, 0xf20015adb410ff61
        ; SHA1MSG1's low dword: W5 ^ W3, the second source's dword 2 and the first's dword 0.
        movdqa xmm1, [rel sha_h]
        sha1msg1 xmm1, [rel sha_h + 16]
        movd eax, xmm1
        CHECK32 54, eax, 0x1f83d9ab ^ 0x6a09e667
        PRINTLN "isa: AES-128 and SHA-256 known answers ok"
        syscall

        align 16
f1234:          dd 1.0, 2.0, 3.0, 4.0
f10_40:         dd 10.0, 20.0, 30.0, 40.0
bytes:          db 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
                align 16
reverse:        db 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0
negs:           dd -1, -2, 3, 4
ones:           dd 1, 1, 1, 1
comma:          db ",", 0
                align 16
text:           db "hello, world", 0, 0, 0, 0
two_and_half:   dq 2.5
scratch:        dq 0
digits:         db "123456789"
                align 16
clmul_a:        dq 3, -1
aes_key:        db 0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6
                db 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c
aes_in:         db 0x32, 0x43, 0xf6, 0xa8, 0x88, 0x5a, 0x30, 0x8d
                db 0x31, 0x31, 0x98, 0xa2, 0xe0, 0x37, 0x07, 0x34
aes_out:        db 0x39, 0x25, 0x84, 0x1d, 0x02, 0xdc, 0x09, 0xfb
                db 0xdc, 0x11, 0x85, 0x97, 0x19, 0x6a, 0x0b, 0x32
round_keys:     times 11 * 16 db 0
sha_h:          dd 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
                dd 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
sha_w:          dd 0x61626380, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x18
                times 12 * 16 db 0
sha_k:          dd 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1
                dd 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3
                dd 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786
                dd 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
                dd 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147
                dd 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13
                dd 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b
                dd 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
                dd 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a
                dd 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208
                dd 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
kernel_rsp:     dq 0
has_rdpid:      dd 0
