; corners.asm - conformance corners of 64-bit ring-0 code: local APIC
; self-IPIs and CPUID bits, reserved page-table bits, canonical checks on
; LGDT/LIDT and base/entry-point MSRs, machine-check and speculation MSRs,
; RDPMC, SALC in 64-bit mode, EMMS.
;
; Long mode with the library's identity map (2 MiB pages) and an IDT whose
; stubs record each exception (trap64.inc). Interrupt checks: the vCPU runs
; with IF=1 and TPR 0 for a while after the self-IPI; the interrupt must have
; arrived by then.
;
; Expected outcome: exit status 0; output ends with
;   corners: PASS

%define TEST_NAME "corners"
TRAP64_IDT      equ 0x2000
LAPIC           equ 0xFEE00000
PD0             equ JANUS_PT_BASE + 0x2000      ; the first GiB's PD
PDPT            equ JANUS_PT_BASE + 0x1000
MSR_APIC_BASE   equ 0x1B
%include "janus.inc"
%include "trap64.inc"

; IPI_TEST n, "what", vector, {send}: with IF=1 after sending, `vector`
; must be taken within a short spin.
%macro IPI_TEST 4
        JANUS_CLAIM_CHECK %1
        mov qword [rel t64_vec], -1
        lea rax, [rel %%after]
        mov [rel resume], rax
        %4
        sti
        mov ecx, 100000
%%spin: dec ecx
        jnz %%spin
%%after:
        cli
        mov qword [rel resume], 0
        XCHK %1, [rel t64_vec], %3, {%2, ": vector taken"}
        PRINTLN "  ", %2, ": taken"
%endmacro

; WRMSR_GP n, msr, high, low: WRMSR of high:low to msr raises #GP(0).
%macro WRMSR_GP 4
        mov ecx, %2
        mov edx, %3
        mov eax, %4
        XTEST %1, {"wrmsr ", %str(%2), " = ", %str(%3), ":", %str(%4)}, 13, 0, 0, {wrmsr}
%endmacro

main:
        ENTER_PM32
        ENTER_LM64
        TRAP64_SETUP

        PRINTLN "corners: local APIC"
        mov eax, 1
        cpuid
        bt edx, 9
        CHECK_CC 1, c                   ; APIC
        mov [rel cpuid1_ecx], ecx
        mov rbx, LAPIC
        mov dword [rbx + 0xF0], 0x1FF   ; SVR: software-enabled, spurious 0xFF
        mov dword [rbx + 0x80], 0       ; TPR 0
        IPI_TEST 3, "self-IPI, ICR shorthand self", 0x41, {mov dword [rbx + 0x300], 0x40041}
        mov dword [rbx + 0xB0], 0       ; EOI
        IPI_TEST 4, "self-IPI, ICR all including self", 0x43, {mov dword [rbx + 0x300], 0x80043}
        mov dword [rbx + 0xB0], 0

        bt dword [rel cpuid1_ecx], 21   ; x2APIC (the software CPU offers it)
        jc .x2apic
        PRINTLN "  x2APIC not offered: not checked"
        jmp .disable
.x2apic:
        mov ecx, MSR_APIC_BASE
        rdmsr
        or eax, 1 << 10                 ; EXTD: x2APIC mode
        wrmsr
        IPI_TEST 5, "x2APIC SELF IPI (MSR 0x83F)", 0x42, {call x2apic_self_ipi_42}
        mov ecx, 0x80B                  ; EOI
        xor eax, eax
        xor edx, edx
        wrmsr
.disable:

        mov ecx, MSR_APIC_BASE          ; globally disable (x2APIC -> off is allowed)
        rdmsr
        and eax, ~((1 << 10) | (1 << 11))
        wrmsr
        mov eax, 1
        cpuid
        bt edx, 9
        CHECK_CC 6, nc                  ; CPUID.1:EDX.APIC follows IA32_APIC_BASE.EN
        mov ecx, MSR_APIC_BASE
        rdmsr
        or eax, 1 << 11
        wrmsr
        mov eax, 1
        cpuid
        bt edx, 9
        CHECK_CC 7, c

        PRINTLN "corners: reserved page-table bits"
        bts qword [PD0 + 2 * 8], 13     ; 2 MiB PDE, bit 13 (bits 20:13 reserved)
        mov rbx, 0x400008
        invlpg [rbx]
        XTEST 10, "#PF read, 2 MiB PDE with bit 13", 14, 9, 0, {mov eax, [rbx]}
        XCHK 10, [rel t64_cr2], rbx, "CR2"
        btr qword [PD0 + 2 * 8], 13
        bts qword [PD0 + 2 * 8], 20
        invlpg [rbx]
        XTEST 11, "#PF write, 2 MiB PDE with bit 20", 14, 11, 0, {mov [rbx], eax}
        btr qword [PD0 + 2 * 8], 20
        bts qword [PD0 + 2 * 8], 51     ; above MAXPHYADDR
        invlpg [rbx]
        XTEST 12, "#PF read, PDE address bit 51", 14, 9, 0, {mov eax, [rbx]}
        btr qword [PD0 + 2 * 8], 51
        invlpg [rbx]
        mov eax, [rbx]                  ; fine again

        mov rax, 0x100000000 | 0x83 | (1 << 13)
        mov [PDPT + 4 * 8], rax         ; 1 GiB PDPTE at 4 GiB, bit 13 reserved
        mov rbx, 0x100000010
        XTEST 13, "#PF read, 1 GiB PDPTE with bit 13", 14, 9, 0, {mov eax, [rbx]}
        mov qword [PDPT + 4 * 8], 0
        invlpg [rbx]
        mov rax, PDPT | 0x83            ; PS in a PML4E is reserved
        mov [JANUS_PT_BASE + 1 * 8], rax
        mov rbx, 0x8000000020
        XTEST 14, "#PF read, PML4E with PS", 14, 9, 0, {mov eax, [rbx]}
        mov qword [JANUS_PT_BASE + 1 * 8], 0
        invlpg [rbx]

        PRINTLN "corners: canonical checks"
        XTEST 20, "lgdt, non-canonical base", 13, 0, 0, {lgdt [rel bad_dtr]}
        XTEST 21, "lidt, non-canonical base", 13, 0, 0, {lidt [rel bad_dtr]}
        lidt [rel t64_idtr]
        WRMSR_GP 22, 0xC0000100, 0x8000, 0  ; FS_BASE
        WRMSR_GP 23, 0xC0000101, 0x8000, 0  ; GS_BASE
        WRMSR_GP 24, 0xC0000102, 0xFFFF7FFF, 0 ; KERNEL_GS_BASE
        WRMSR_GP 25, 0xC0000082, 0x8000, 0  ; LSTAR
        WRMSR_GP 26, 0xC0000083, 0x8000, 0  ; CSTAR
        ; SYSENTER_EIP/ESP: #GP on Intel; AMD CPUs ignore their upper half (and
        ; KVM canonicalises the value on every vendor).
        xor eax, eax
        cpuid
        cmp ecx, "ntel"                 ; GenuineIntel
        jne .not_intel
        WRMSR_GP 27, 0x176, 0x8000, 0       ; SYSENTER_EIP
        WRMSR_GP 28, 0x175, 0x8000, 0       ; SYSENTER_ESP
.not_intel:

        PRINTLN "corners: MSRs"
        mov ecx, 0x179
        NOFAULT 30, "rdmsr IA32_MCG_CAP", {rdmsr}
        movzx ebx, al                   ; bank count
        mov ecx, 0x17A
        NOFAULT 31, "rdmsr IA32_MCG_STATUS", {rdmsr}
        test ebx, ebx
        jz .no_banks
        lea ecx, [rbx * 4 + 0x400 - 4 + 1]  ; the last bank's STATUS
        NOFAULT 32, "rdmsr the last IA32_MCi_STATUS", {rdmsr}
        CHECK32 33, eax, 0
.no_banks:
        mov eax, 7
        xor ecx, ecx
        cpuid
        bt edx, 26                      ; IBRS/IBPB: SPEC_CTRL, PRED_CMD
        jc .spec
        mov eax, 0x80000008             ; AMD: IBPB, IBRS, STIBP, SSBD
        cpuid
        test ebx, (1 << 12) | (1 << 14) | (1 << 15) | (1 << 24) | (1 << 25)
        jnz .spec
        mov ecx, 0x48
        XTEST 34, "rdmsr IA32_SPEC_CTRL, not in CPUID", 13, 0, 0, {rdmsr}
        WRMSR_GP 35, 0x49, 0, 1         ; PRED_CMD
        jmp .flush
.spec:
        PRINTLN "  SPEC_CTRL advertised: not checked"
.flush:
        ; FLUSH_CMD without L1D_FLUSH in CPUID: #GP on the software CPU (a unit
        ; test checks it), but KVM accepts the write.
        mov ecx, 0x1234
        XTEST 37, "rdpmc, invalid counter 0x1234", 13, 0, 0, {rdpmc}

        PRINTLN "corners: instructions"
        XTEST 40, "salc in 64-bit mode", 6, 0, 0, {db 0xD6}
        fninit
        fld1
        emms                            ; every x87 register empty again
        fxsave64 [rel fxbuf]
        CHECK8 41, byte [rel fxbuf + 4], 0      ; abridged tag word
        PRINTLN "  emms: x87 tags empty"
        TEST_PASS

        TRAP64_CODE

x2apic_self_ipi_42:
        mov ecx, 0x83F                  ; SELF IPI
        mov eax, 0x42
        xor edx, edx
        wrmsr
        ret

        align 16
fxbuf:          times 512 db 0xFF
cpuid1_ecx:     dd 0
bad_dtr:        dw 0xFFF
                dq 0x0000800000000000
