; la57.asm - 5-level paging (CR4.LA57): long mode entered with a PML5, 57-bit
; canonical addresses, and the rules around CR4.LA57.
;
; From 32-bit protected mode: CPUID.7.0:ECX[16] must say LA57 (janus's
; software CPU offers it with `--cpu host,+la57`; tests/roms_all.rs runs it
; so); the library's 4-level identity map becomes PML4 0 of a PML5 whose
; entries 0, 1 and 0x100 all point at it, so linear X, X + 2^48 and
; 0xFF00_0000_0000_0000 + X all reach physical X. Checks: those aliases read
; and write the same bytes; 2^56 (bit 56 set, 63:57 clear) is not canonical
; (#GP on a load); clearing CR4.LA57 in long mode is
; #GP; a PML5 entry with PS set is a reserved-bit #PF; CR3 reloads keep LA57.
;
; Expected outcome: exit status 0; output ends with
;   la57: PASS

%define TEST_NAME "la57"
TRAP64_IDT      equ 0x2000
PML5            equ 0x96000
CR4_LA57        equ 1 << 12
%include "janus.inc"
%include "trap64.inc"

main:
        ENTER_PM32
        mov eax, 7
        xor ecx, ecx
        cpuid
        bt ecx, 16
        jc .offered
        PRINTLN "la57: CPUID.7.0:ECX[16] (LA57) is not offered"
        FAIL 1, "LA57 not offered"
.offered:
        call janus_build_page_tables
        cld
        mov edi, PML5
        xor eax, eax
        mov ecx, 4096 / 4
        rep stosd
        mov dword [PML5], JANUS_PT_BASE + 3                 ; PML5[0] -> PML4
        mov dword [PML5 + 1 * 8], JANUS_PT_BASE + 3         ; PML5[1]: 2^48 + X
        mov dword [PML5 + 0x100 * 8], JANUS_PT_BASE + 3     ; PML5[0x100]: 0xFF00.. + X
        mov dword [PML5 + 2 * 8], JANUS_PT_BASE + 0x83      ; PML5[2]: PS set (reserved)
        mov eax, cr4
        or eax, CR4_PAE | CR4_LA57
        mov cr4, eax
        mov eax, PML5
        mov cr3, eax
        mov ecx, MSR_EFER
        rdmsr
        or eax, EFER_LME
        wrmsr
        mov eax, cr0
        or eax, CR0_PG
        mov cr0, eax
        jmp SEL_CODE64:.lm
bits 64
.lm:
        mov ax, SEL_DATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, esp
        TRAP64_SETUP
        PRINTLN "la57: long mode with 5-level paging"
        mov rax, cr4
        bt rax, 12
        CHECK_CC 2, c

        ; Aliases: 2^48 + X and 0xFF00_0000_0000_0000 + X are X.
        mov rbx, cell
        mov qword [rbx], 0x1234
        mov rcx, 1 << 48
        add rcx, rbx
        mov rax, [rcx]
        CHECK64 3, rax, 0x1234
        mov qword [rcx], 0x5678
        mov rax, [rbx]
        CHECK64 4, rax, 0x5678
        mov rcx, 0xFF00000000000000
        add rcx, rbx
        mov rax, [rcx]
        CHECK64 5, rax, 0x5678
        PRINTLN "  2^48 + X and 0xFF00_0000_0000_0000 + X reach X"

        ; 57-bit canonical checks.
        mov rcx, 1 << 56
        XTEST 6, "load from 2^56 (not canonical)", 13, 0, 0, {mov rax, [rcx]}
        mov rcx, 0xFE00000000000000     ; bits 63:57 set, 56 clear
        XTEST 7, "load from 0xFE00_0000_0000_0000", 13, 0, 0, {mov rax, [rcx]}
        mov rcx, 0x00FFFFFFFFFFFFF8     ; canonical, PML5[0x1ff] not present
        XTEST 8, "load from 0x00FF_FFFF_FFFF_FFF8 (not present)", 14, 0, 0, {mov rax, [rcx]}
        XCHK 8, [rel t64_cr2], rcx, "CR2"
        mov rcx, 2 << 48                ; PML5[2] has PS set: reserved bit
        XTEST 9, "PML5 entry with PS set", 14, 9, 0, {mov rax, [rcx]}


        ; CR4.LA57 cannot change in long mode; a CR3 reload keeps 5 levels.
        mov rax, cr4
        and rax, ~CR4_LA57
        XTEST 11, "clearing CR4.LA57 in long mode", 13, 0, 0, {mov cr4, rax}
        mov rax, cr3
        mov cr3, rax
        mov rcx, 1 << 48
        add rcx, rbx
        mov rax, [rcx]
        CHECK64 12, rax, 0x5678
        PRINTLN "  CR4.LA57 stays; CR3 reload keeps 5-level paging"

        ; A jump through an alias: code runs at 2^48 + X.
        mov rax, 1 << 48
        lea rcx, [rel .high]
        add rax, rcx
        jmp rax
.high:
        lea rax, [rel .high]
        shr rax, 48
        CHECK64 13, rax, 1
        PRINTLN "  code runs at 2^48 + X"
        TEST_PASS

        TRAP64_CODE

        align 8
cell:   dq 0
