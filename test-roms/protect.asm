; protect.asm - SMEP, SMAP (STAC/CLAC, EFLAGS.AC, implicit supervisor
; accesses) and protection keys (CR4.PKE, PKRU, RDPKRU/WRPKRU, #PF with PK).
;
; Long mode, ring 0, with trap64.inc's IDT and the library's identity map;
; the 2 MiB page at 0x600000 is made a user page. Each part runs only where
; CPUID offers its feature (it prints "not offered" otherwise; the software
; CPU offers all three, which tests/roms_all.rs requires).
;
; Expected outcome: exit status 0; output ends with
;   protect: PASS

%define TEST_NAME "protect"

%macro JANUS_EXTRA_GDT_ENTRIES 0
        GDT_ENTRY 0x600100, 0x17, 0x82, 0x0     ; 0x30 LDT on the user page
        dq 0                                    ;      (64-bit: upper half)
%endmacro
SEL_LDT         equ 0x30
TRAP64_IDT      equ 0x2000
PML4            equ JANUS_PT_BASE
PDPT            equ JANUS_PT_BASE + 0x1000
PD0             equ JANUS_PT_BASE + 0x2000
UPAGE           equ 0x600000                    ; PD0[3]
CR4_SMEP        equ 1 << 20
CR4_SMAP        equ 1 << 21
CR4_PKE         equ 1 << 22
CR0_WP          equ 1 << 16
%include "janus.inc"
%include "trap64.inc"

; FETCH_FAULT n, "what", error, {jump}: the jump's target fetch raises #PF
; with `error`; saved RIP and CR2 are the target, in rbx.
%macro FETCH_FAULT 4
        JANUS_CLAIM_CHECK %1
        mov qword [rel t64_vec], -1
        lea rax, [rel %%after]
        mov [rel resume], rax
        %4
%%after:
        XCHK %1, [rel t64_vec], 14, {%2, ": vector"}
        XCHK %1, [rel t64_err], %3, {%2, ": error code"}
        XCHK %1, [rel t64_rip], rbx, {%2, ": saved RIP"}
        XCHK %1, [rel t64_cr2], rbx, {%2, ": CR2"}
        PRINTLN "  ", %2, ": #PF"
%endmacro

%macro CR4_SET 1
        mov rax, cr4
        or rax, %1
        mov cr4, rax
%endmacro

%macro CR4_CLEAR 1
        mov rax, cr4
        and rax, ~(%1)
        mov cr4, rax
%endmacro

main:
        ENTER_PM32
        ENTER_LM64
        TRAP64_SETUP
        or qword [PML4], 4              ; U/S on the path to UPAGE
        or qword [PDPT], 4
        or qword [PD0 + 3 * 8], 4
        mov rax, cr3
        mov cr3, rax
        mov byte [UPAGE], 0xC3          ; ret
        mov eax, 7
        xor ecx, ecx
        cpuid
        mov [rel cpuid7_ebx], ebx
        mov [rel cpuid7_ecx], ecx

        PRINTLN "protect: SMEP"
        bt dword [rel cpuid7_ebx], 7
        jc .smep
        PRINTLN "  SMEP not offered: not checked"
        jmp .smap
.smep:
        mov rbx, UPAGE
        call rbx                        ; SMEP off: runs
        CR4_SET CR4_SMEP
        FETCH_FAULT 1, "SMEP: supervisor fetch from a user page", 0x11, {jmp rbx}
        CR4_CLEAR CR4_SMEP
        call rbx
        PRINTLN "  SMEP off again: the user page runs"

.smap:
        PRINTLN "protect: SMAP"
        bt dword [rel cpuid7_ebx], 20
        jc .smap_on
        PRINTLN "  SMAP not offered: not checked"
        jmp .pku
.smap_on:
        mov rbx, UPAGE + 0x10
        mov eax, [rbx]                  ; SMAP off: fine
        CR4_SET CR4_SMAP
        clac
        XTEST 10, "SMAP, AC=0: supervisor read of a user page", 14, 1, 0, {mov eax, [rbx]}
        XCHK 10, [rel t64_cr2], rbx, "CR2"
        XTEST 11, "SMAP, AC=0: supervisor write to a user page", 14, 3, 0, {mov [rbx], eax}
        stac
        NOFAULT 12, "SMAP, AC=1 (stac): read and write", {mov eax, [rbx]}
        mov [rbx], eax
        pushfq
        pop rax
        bt eax, 18
        CHECK_CC 13, c                  ; STAC set EFLAGS.AC
        ; Implicit supervisor access, AC=1 or not: an LDT on the user page.
        mov rax, [rel janus_gdt + SEL_DATA]
        mov [UPAGE + 0x108], rax        ; LDT entry 1: flat data
        mov ax, SEL_LDT
        lldt ax
        mov ax, 0x0C                    ; LDT entry 1, RPL 0
        mov rbx, UPAGE + 0x108
        XTEST 14, "SMAP, AC=1: implicit LDT read from a user page", 14, 1, 0, {mov ds, ax}
        XCHK 14, [rel t64_cr2], rbx, "CR2"
        xor eax, eax
        lldt ax
        clac
        pushfq
        pop rax
        bt eax, 18
        CHECK_CC 15, nc
        CR4_CLEAR CR4_SMAP

.pku:
        PRINTLN "protect: protection keys"
        bt dword [rel cpuid7_ecx], 3
        jc .pku_on
        PRINTLN "  PKU not offered: not checked"
        jmp .done
.pku_on:
        bt dword [rel cpuid7_ecx], 4
        CHECK_CC 20, nc                 ; OSPKE follows CR4.PKE: off
        xor ecx, ecx
        XTEST 21, "rdpkru with CR4.PKE=0", 6, 0, 0, {rdpkru}
        CR4_SET CR4_PKE
        mov eax, 7
        xor ecx, ecx
        cpuid
        bt ecx, 4
        CHECK_CC 22, c                  ; OSPKE
        bts qword [PD0 + 3 * 8], 59     ; key 1 for the user page
        mov rbx, UPAGE + 0x20
        invlpg [rbx]
        xor ecx, ecx
        xor edx, edx
        mov eax, 1 << 2                 ; AD for key 1
        wrpkru
        XTEST 23, "PKRU.AD1: supervisor read of a key-1 user page", 14, 0x21, 0, {mov eax, [rbx]}
        XCHK 23, [rel t64_cr2], rbx, "CR2"
        XTEST 24, "PKRU.AD1: supervisor write", 14, 0x23, 0, {mov [rbx], eax}
        mov eax, 1 << 3                 ; WD for key 1
        xor ecx, ecx
        xor edx, edx
        wrpkru
        NOFAULT 25, "PKRU.WD1: read, and write with CR0.WP=0", {mov eax, [rbx]}
        mov [rbx], eax
        mov rax, cr0
        or rax, CR0_WP
        mov cr0, rax
        XTEST 26, "PKRU.WD1, CR0.WP=1: supervisor write", 14, 0x23, 0, {mov [rbx], eax}
        mov rax, cr0
        and rax, ~CR0_WP
        mov cr0, rax
        mov eax, 0xFFFFFFF0             ; every key but 0 and 1 disabled: key 1 fine
        xor ecx, ecx
        xor edx, edx
        wrpkru
        mov eax, [rbx]
        xor ecx, ecx
        rdpkru
        CHECK32 27, eax, 0xFFFFFFF0
        mov ecx, 1
        XTEST 28, "rdpkru with ECX=1", 13, 0, 0, {rdpkru}
        xor eax, eax
        xor ecx, ecx
        mov edx, 1
        XTEST 29, "wrpkru with EDX=1", 13, 0, 0, {wrpkru}
        CR4_CLEAR CR4_PKE

.done:
        TEST_PASS

        TRAP64_CODE

        align 8
cpuid7_ebx:     dd 0
cpuid7_ecx:     dd 0
