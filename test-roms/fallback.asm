; fallback.asm - kernel-mode instructions that some KVM flavours cannot run.
;
; On hosts whose KVM runs kernel code in its in-kernel instruction emulator
; (kvm_pvm), `int3` delivery, `ud2`, `lock cmpxchg16b` and `xrstor` end in
; KVM_EXIT_INTERNAL_ERROR. janus's KVM backend then runs that one instruction
; (or delivers that event) in its software CPU over the same guest memory and
; resumes KVM; `--no-fallback` shows the raw failure instead. On the software
; backends, and on VT-x/AMD-V hosts, everything here simply runs.
;
; 64-bit long mode at CPL0 with an IDT for #BP and #UD:
;   1. int3: the #BP handler sees the return RIP after the int3;
;   2. ud2: the #UD handler sees the ud2's own RIP and skips it;
;   3. lock cmpxchg16b, equal (ZF=1, memory replaced) and unequal (ZF=0,
;      RDX:RAX loaded) cases;
;   4. CR4.OSFXSR|OSXSAVE, XCR0 = x87|SSE, xsave of XMM0/XMM7, clobber,
;      xrstor, and the registers and XSTATE_BV come back.
;
; Expected outcome: exit status 0; output ends with
;   fallback: PASS

%define TEST_NAME "fallback"
%include "janus.inc"

IDT_ADDR        equ 0x2000
NVEC            equ 32
CR4_OSFXSR      equ 1 << 9
CR4_OSXSAVE     equ 1 << 18

main:
        PRINTLN "fallback: kernel-mode int3, ud2, cmpxchg16b, xsave/xrstor"
        ENTER_PM32
        ENTER_LM64

        ; IDT: every vector to `unexpected`, then #BP and #UD to their handlers.
        mov rdi, IDT_ADDR
        xor ecx, ecx
.idt:   lea rax, [rel unexpected]
        cmp ecx, 3
        jne .not_bp
        lea rax, [rel bp_handler]
.not_bp:
        cmp ecx, 6
        jne .not_ud
        lea rax, [rel ud_handler]
.not_ud:
        mov [rdi], ax
        mov word [rdi + 2], SEL_CODE64
        mov word [rdi + 4], 0x8E00
        shr rax, 16
        mov [rdi + 6], ax
        shr rax, 16
        mov [rdi + 8], eax
        mov dword [rdi + 12], 0
        add rdi, 16
        inc ecx
        cmp ecx, NVEC
        jb .idt
        lidt [rel idtr]

;--- 1. int3 ------------------------------------------------------------------
        int3
after_int3:
        mov rax, [rel bp_count]
        CHECK64 1, rax, 1
        mov rax, [rel bp_rip]
        lea rbx, [rel after_int3]
        CHECK64 2, rax, rbx
        PRINTLN "  int3: #BP delivered, return RIP after the int3"

;--- 2. ud2 -------------------------------------------------------------------
at_ud2: ud2
        mov rax, [rel ud_count]
        CHECK64 3, rax, 1
        mov rax, [rel ud_rip]
        lea rbx, [rel at_ud2]
        CHECK64 4, rax, rbx
        PRINTLN "  ud2: #UD delivered at the ud2"

;--- 3. lock cmpxchg16b -------------------------------------------------------
        mov qword [rel slot], 0x1111
        mov qword [rel slot + 8], 0x2222
        mov eax, 0x1111
        mov edx, 0x2222
        mov ebx, 0x3333
        mov ecx, 0x4444
        lock cmpxchg16b [rel slot]
        CHECK_FLAGS 5, F_ZF, F_ZF
        mov rax, [rel slot]
        CHECK64 6, rax, 0x3333
        mov rax, [rel slot + 8]
        CHECK64 7, rax, 0x4444
        mov eax, 0x5555
        mov edx, 0x6666
        lock cmpxchg16b [rel slot]
        CHECK_FLAGS 8, F_ZF, 0
        CHECK64 9, rax, 0x3333
        CHECK64 10, rdx, 0x4444
        PRINTLN "  lock cmpxchg16b: equal and unequal cases"

;--- 4. xsave / xrstor --------------------------------------------------------
        mov eax, 1
        cpuid
        bt ecx, 26                      ; XSAVE
        jc .has_xsave
        FAIL 11, "CPUID does not advertise XSAVE"
.has_xsave:
        mov rax, cr4
        or rax, CR4_OSFXSR | CR4_OSXSAVE
        mov cr4, rax
        xor ecx, ecx
        mov eax, 3                      ; XCR0 = x87 | SSE
        xor edx, edx
        xsetbv
        xor ecx, ecx
        xgetbv
        CHECK64 12, rax, 3
        movdqu xmm0, [rel pattern0]
        movdqu xmm7, [rel pattern7]
        mov eax, 3
        xor edx, edx
        xsave [rel area]
        pxor xmm0, xmm0
        pxor xmm7, xmm7
        mov eax, 3
        xor edx, edx
        xrstor [rel area]
        movq rax, xmm0
        mov rbx, [rel pattern0]
        CHECK64 13, rax, rbx
        pshufd xmm1, xmm7, 0x4e         ; high qword of xmm7
        movq rax, xmm1
        mov rbx, [rel pattern7 + 8]
        CHECK64 14, rax, rbx
        mov rax, [rel area + 512]       ; XSTATE_BV
        and eax, 2
        CHECK64 15, rax, 2              ; SSE state saved (XMM registers not in init state)
        PRINTLN "  xsave/xrstor: XMM0 and XMM7 restored, XSTATE_BV.SSE set"

        TEST_PASS

;--- handlers -----------------------------------------------------------------
bp_handler:
        inc qword [rel bp_count]
        push rax
        mov rax, [rsp + 8]
        mov [rel bp_rip], rax
        pop rax
        iretq

ud_handler:
        inc qword [rel ud_count]
        push rax
        mov rax, [rsp + 8]
        mov [rel ud_rip], rax
        add qword [rsp + 8], 2          ; skip the ud2
        pop rax
        iretq

unexpected:
        PRINTLN "fallback: unexpected exception"
        EXIT 250

        align 8
idtr:           dw NVEC * 16 - 1
                dq IDT_ADDR
bp_count:       dq 0
bp_rip:         dq 0
ud_count:       dq 0
ud_rip:         dq 0
pattern0:       dq 0x0123456789abcdef, 0xfedcba9876543210
pattern7:       dq 0x7777666655554444, 0x3333222211110000
        align 16
slot:           dq 0, 0
        align 64
area:           times 1024 db 0
