; exceptions.asm - raise the CPU exceptions and check vector, error code,
; faulting EIP/RIP and CR2.
;
; 32-bit protected mode (IDT at 0x1000, one stub per vector 0-63 recording
; vector, error code, EIP, CS and CR2, then resuming at the address the test
; set in `resume`), first at CPL0, then with 32-bit paging (#PF), then at
; CPL3 (through IRETD, TSS.ESP0 stack) for the privilege faults; then 64-bit
; long mode with a 64-bit IDT at 0x2000 and the same scheme.
;
; Each test prints one line "  <what>: vector 0x.. error 0x........" and
; checks the vector, the error code and the saved EIP/RIP (the faulting
; instruction for faults, the next one for traps and INT n), and CR2 for #PF.
; An exception nobody expected prints itself and exits 250 (32-bit) or 251
; (64-bit).
;
; Expected outcome: exit status 0; output ends with
;   exceptions: PASS

%define TEST_NAME "exceptions"

%macro JANUS_EXTRA_GDT_ENTRIES 0
        dq 0x00CFFB000000FFFF           ; 0x30 user code32, DPL3
        dq 0x00CFF3000000FFFF           ; 0x38 user data, DPL3
        GDT_ENTRY TSS32_ADDR, 0xE8, 0x89, 0x0   ; 0x40 32-bit TSS, I/O bitmap for ports 0-0x3ff
        dq 0x00CF12000000FFFF           ; 0x48 data, not present
        dq 0x00CF91000000FFFF           ; 0x50 data, read-only
        GDT_ENTRY 0, 0x7FFF, 0x93, 0x4  ; 0x58 data, limit 0x7FFF (byte granular)
        dq 0x00CF99000000FFFF           ; 0x60 code, execute-only
%endmacro

TSS32_ADDR      equ 0x3000
IDT32_ADDR      equ 0x1000
IDT64_ADDR      equ 0x2000
PD32_ADDR       equ 0x20000
PT32_ADDR       equ 0x21000
RING0_STACK     equ 0x6000          ; TSS.ESP0
USER_STACK      equ 0x5800
NSTUBS          equ 72          ; vectors 0-0x47

%include "janus.inc"

SEL_UCODE       equ 0x30
SEL_UDATA       equ 0x38
SEL_TSS         equ 0x40
SEL_NP          equ 0x48
SEL_RO          equ 0x50
SEL_SMALL       equ 0x58
SEL_XO          equ 0x60
SEL_BAD         equ 0x0FF8          ; beyond the GDT limit

;------------------------------------------------------------------------------
; Test macros
;------------------------------------------------------------------------------

; XCHK n, got, expected, "what": compare (32-bit, or 64-bit in 64-bit code)
; without claiming the check number (several comparisons share one).
%macro XCHK 4
%if __?BITS?__ == 64
        push rax
        mov rax, %3
        mov [rel janus_expected64], rax
        pop rax
        push rax
        mov rax, %2
        cmp rax, [rel janus_expected64]
        pop rax
        je %%ok
        mov rax, %2
        mov rdx, [rel janus_expected64]
        JANUS_FAIL %1, 64, %4
%else
        cmp dword %2, %3
        je %%ok
        mov eax, %2
        mov edx, %3
        JANUS_FAIL %1, 32, %4
%endif
%%ok:
%endmacro

; XTEST n, "what", vector, error, trap?, {instruction(s)}
; Runs the instruction(s), which must raise `vector` with `error`; the
; handler resumes after them. trap = 0: the saved EIP/RIP must be the first
; instruction; trap = 1: the one after it.
%macro XTEST 6
        JANUS_CLAIM_CHECK %1
%if __?BITS?__ == 64
        mov qword [rel got_vec], -1
        mov qword [rel got_err], -1
        push rax
        lea rax, [rel %%after]
        mov [rel resume], rax
        pop rax
%else
        mov dword [got_vec], -1
        mov dword [got_err], -1
        mov dword [resume], %%after
%endif
%%insn:
        %6
%if %5
%%expip:
%endif
        jmp %%after                     ; no exception: fall into the check
%%after:
        XCHK %1, [got_vec], %3, {%2, ": vector"}
        XCHK %1, [got_err], %4, {%2, ": error code"}
%if __?BITS?__ == 64
        lea rdx, [rel %%insn]
  %if %5
        lea rdx, [rel %%expip]
  %endif
        XCHK %1, [got_eip], rdx, {%2, ": saved RIP"}
%else
  %if %5
        mov edx, %%expip
  %else
        mov edx, %%insn
  %endif
        XCHK %1, [got_eip], edx, {%2, ": saved EIP"}
%endif
        PRINT "  ", %2, ": vector 0x"
        PRINT_HEX 8, [got_vec]
        PRINT " error 0x"
        PRINT_HEX 32, [got_err]
        NEWLINE
%endmacro

; CR2_IS n, value: CR2 recorded by the last exception.
%macro CR2_IS 2
        XCHK %1, [got_cr2], %2, "CR2"
%endmacro

;------------------------------------------------------------------------------
main:
        PRINTLN "exceptions: 32-bit protected mode"
        ENTER_PM32

        ; IDT: vectors 0-63 -> stubs32 (interrupt gates, DPL0; 3, 4, 0x40
        ; and 0x42 DPL3).
        mov edi, IDT32_ADDR
        mov ebx, stubs32
        xor ecx, ecx
.idt32: mov eax, ebx
        mov [edi], ax
        mov word [edi + 2], SEL_CODE32
        mov word [edi + 4], 0x8E00
        shr eax, 16
        mov [edi + 6], ax
        add ebx, 16
        add edi, 8
        inc ecx
        cmp ecx, NSTUBS
        jb .idt32
        mov byte [IDT32_ADDR + 3 * 8 + 5], 0xEE
        mov byte [IDT32_ADDR + 4 * 8 + 5], 0xEE
        mov byte [IDT32_ADDR + 0x40 * 8 + 5], 0xEE
        mov eax, back_to_ring0          ; 0x42: DPL3, leaves ring 3 for good
        mov [IDT32_ADDR + 0x42 * 8], ax
        shr eax, 16
        mov [IDT32_ADDR + 0x42 * 8 + 6], ax
        mov byte [IDT32_ADDR + 0x42 * 8 + 5], 0xEE
        lidt [idtr32]

        ; TSS: ESP0/SS0 and an I/O permission bitmap (ports 0-0x3ff, the
        ; byte after it beyond the limit) that lets CPL3 reach COM1 and the
        ; exit port 0xf4 only, so that checks at CPL3 can still report.
        mov edi, TSS32_ADDR
        xor eax, eax
        mov ecx, 0x68 / 4
        rep stosd
        dec eax
        mov ecx, 0x80 / 4
        rep stosd
        mov dword [TSS32_ADDR + 4], RING0_STACK
        mov dword [TSS32_ADDR + 8], SEL_DATA
        mov word [TSS32_ADDR + 0x66], 0x68
        mov byte [TSS32_ADDR + 0x68 + 0x3F8 / 8], 0     ; COM1 0x3f8-0x3ff
        and byte [TSS32_ADDR + 0x68 + 0xF4 / 8], ~(1 << (0xF4 & 7))
        mov ax, SEL_TSS
        ltr ax

;--- CPL0, no paging ---------------------------------------------------------
        xor ecx, ecx
        mov eax, 1234
        xor edx, edx
        XTEST 1, "#DE div by zero", 0, 0, 0, {div ecx}
        mov eax, 0
        mov edx, 1                      ; EDX:EAX = 2^32
        mov ecx, 1
        XTEST 2, "#DE idiv overflow (2^32 / 1)", 0, 0, 0, {idiv ecx}
%ifndef JANUS_QEMU_COMPAT
        mov eax, 0
        mov edx, 0x80000000             ; EDX:EAX = -2^63
        mov ecx, -1
        XTEST 15, "#DE idiv overflow (-2^63 / -1)", 0, 0, 0, {idiv ecx}
%else
        QEMU_SKIPPED "idiv -2^63 / -1: QEMU 7.2 TCG dies of a host SIGFPE"
%endif
        XTEST 3, "#BP int3", 3, 0, 1, {int3}
        mov al, 0x7F
        add al, 1                       ; OF=1
        XTEST 4, "#OF into", 4, 0, 1, {into}
        mov eax, 50
        XTEST 5, "#BR bound", 5, 0, 0, {bound eax, [bounds]}
        mov eax, 15
        bound eax, [bounds]             ; inside [10, 20]: no exception
        XTEST 6, "#UD ud2", 6, 0, 0, {ud2}
        XTEST 7, "#UD FE /7", 6, 0, 0, {db 0xFE, 0xF8}
        XTEST 8, "#UD lock on a register operand", 6, 0, 0, {db 0xF0, 0x01, 0xD8}
        mov ax, SEL_NP
        XTEST 9, "#NP not-present data segment", 11, SEL_NP, 0, {mov es, ax}
        mov ax, SEL_BAD
        XTEST 10, "#GP selector beyond the GDT limit", 13, SEL_BAD, 0, {mov es, ax}
        mov ax, SEL_XO
        XTEST 11, "#GP execute-only code into DS", 13, SEL_XO, 0, {mov ds, ax}
%ifndef JANUS_QEMU_COMPAT
        mov ax, SEL_RO
        mov es, ax
        XTEST 12, "#GP write to a read-only segment", 13, 0, 0, {mov dword [es:0x500], eax}
        mov ax, SEL_DATA
        mov es, ax
        mov ax, SEL_SMALL
        mov ss, ax
        mov ebp, 0x10000
        XTEST 13, "#SS beyond the SS limit", 12, 0, 0, {mov eax, [ebp]}
        mov ax, SEL_DATA
        mov ss, ax
%else
        QEMU_SKIPPED "segment write permission and limit checks (QEMU TCG makes none)"
%endif
        XTEST 14, "INT 0x40", 0x40, 0, 1, {int 0x40}

;--- 32-bit paging: #PF ------------------------------------------------------
        PRINTLN "  32-bit paging"
        mov edi, PT32_ADDR              ; identity 0-4 MiB, 4 KiB pages, user
        mov eax, 7
        mov ecx, 1024
.pt:    stosd
        add eax, 0x1000
        loop .pt
        mov dword [PT32_ADDR + 0x300 * 4], 0                ; not present
        mov dword [PT32_ADDR + 0x301 * 4], 0x301000 | 1     ; read-only, supervisor
        mov dword [PT32_ADDR + 0x302 * 4], 0x302000 | 3     ; writable, supervisor
        mov edi, PD32_ADDR
        xor eax, eax
        mov ecx, 1024
        rep stosd
        mov dword [PD32_ADDR], PT32_ADDR | 7
        mov eax, PD32_ADDR
        mov cr3, eax
        mov eax, cr0
        or eax, CR0_PG | (1 << 16)      ; PG, WP
        mov cr0, eax

        mov ebx, 0x300010
        XTEST 20, "#PF read, not present", 14, 0, 0, {mov eax, [ebx]}
        CR2_IS 20, 0x300010
        mov ebx, 0x300020
        XTEST 21, "#PF write, not present", 14, 2, 0, {mov [ebx], eax}
        CR2_IS 21, 0x300020
        mov ebx, 0x301008
        XTEST 22, "#PF write, read-only page, CR0.WP=1", 14, 3, 0, {mov [ebx], eax}
        CR2_IS 22, 0x301008
        mov eax, cr0                    ; WP=0: supervisor writes go through
        and eax, ~(1 << 16)
        mov cr0, eax
        mov dword [0x301008], 0x12345678
        mov eax, cr0
        or eax, 1 << 16
        mov cr0, eax
        CHECK32 23, dword [0x301008], 0x12345678

;--- CPL3 --------------------------------------------------------------------
        PRINTLN "  CPL3"
        push dword SEL_UDATA | 3        ; SS
        push dword USER_STACK           ; ESP
        push dword 0x0002               ; EFLAGS: IOPL 0, IF 0
        push dword SEL_UCODE | 3        ; CS
        push dword ring3
        iretd
ring3:
        mov ax, SEL_UDATA | 3
        mov ds, ax
        mov es, ax
        mov ax, cs
        CHECK16 30, ax, SEL_UCODE | 3
        XTEST 31, "#GP cli at CPL3, IOPL 0", 13, 0, 0, {cli}
        XTEST 32, "#GP hlt at CPL3", 13, 0, 0, {hlt}
        XTEST 33, "#GP mov eax, cr0 at CPL3", 13, 0, 0, {mov eax, cr0}
        XTEST 34, "#GP in al, 0x80 at CPL3, IOPL 0, denied by the I/O bitmap", 13, 0, 0, {in al, 0x80}
        XTEST 35, "#GP int 0x41 (DPL0 gate) at CPL3", 13, 0x41 * 8 + 2, 0, {int 0x41}
        XTEST 36, "#GP int 0x05 (DPL0 gate) at CPL3", 13, 0x05 * 8 + 2, 0, {int 0x05}
        XTEST 37, "#BP int3 at CPL3 (DPL3 gate)", 3, 0, 1, {int3}
        XTEST 38, "INT 0x40 at CPL3 (DPL3 gate)", 0x40, 0, 1, {int 0x40}
        CHECK16 39, word [got_cs], SEL_UCODE | 3
        mov ebx, 0x302000
        XTEST 40, "#PF user read, supervisor page", 14, 5, 0, {mov eax, [ebx]}
        CR2_IS 40, 0x302000
        mov ebx, 0x301004
        XTEST 41, "#PF user write, read-only supervisor page", 14, 7, 0, {mov [ebx], eax}
        CR2_IS 41, 0x301004
        mov ebx, 0x300ffc
        XTEST 42, "#PF user read, not present", 14, 4, 0, {mov eax, [ebx]}
        CR2_IS 42, 0x300ffc
        int 0x42                        ; to back_to_ring0
        FAIL 43, "int 0x42 returned to CPL3"

back_to_ring0:
        mov esp, JANUS_STACK
        mov ax, SEL_DATA
        mov ds, ax
        mov es, ax
        mov eax, cr0
        and eax, ~(CR0_PG | (1 << 16))
        mov cr0, eax

;--- 64-bit long mode --------------------------------------------------------
        PRINTLN "exceptions: 64-bit long mode"
        ENTER_LM64
        mov rdi, IDT64_ADDR
        lea rbx, [rel stubs64]
        xor ecx, ecx
.idt64: mov rax, rbx
        mov [rdi], ax
        mov word [rdi + 2], SEL_CODE64
        mov word [rdi + 4], 0x8E00
        shr rax, 16
        mov [rdi + 6], ax
        shr rax, 16
        mov [rdi + 8], eax
        mov dword [rdi + 12], 0
        add rbx, 16
        add rdi, 16
        inc ecx
        cmp ecx, NSTUBS
        jb .idt64
        lidt [rel idtr64]

        xor ecx, ecx
        mov eax, 99
        xor edx, edx
        XTEST 50, "#DE div by zero (64-bit)", 0, 0, 0, {div rcx}
        mov rcx, -1
        xor eax, eax
        mov rdx, -1
        bts rax, 63                     ; RDX:RAX = -2^63
        XTEST 51, "#DE idiv overflow (64-bit)", 0, 0, 0, {idiv rcx}
        XTEST 52, "#BP int3 (64-bit)", 3, 0, 1, {int3}
        XTEST 53, "#UD ud2 (64-bit)", 6, 0, 0, {ud2}
        XTEST 54, "#UD push es (0x06) in 64-bit mode", 6, 0, 0, {db 0x06}
        XTEST 55, "#UD into (0xCE) in 64-bit mode", 6, 0, 0, {db 0xCE}
        mov rbx, 0x8000000000000000
        XTEST 56, "#GP non-canonical address", 13, 0, 0, {mov rax, [rbx]}
%ifndef JANUS_QEMU_COMPAT
        mov rbp, 0x0000800000000000
        XTEST 57, "#SS non-canonical stack address", 12, 0, 0, {mov rax, [rbp]}
%else
        QEMU_SKIPPED "#SS for a non-canonical stack address (QEMU TCG raises #GP)"
%endif
        mov ax, SEL_NP
        XTEST 58, "#NP not-present data segment (64-bit)", 11, SEL_NP, 0, {mov es, ax}
        mov ax, SEL_BAD
        XTEST 59, "#GP selector beyond the GDT limit (64-bit)", 13, SEL_BAD, 0, {mov ds, ax}
        XTEST 60, "INT 0x40 (64-bit)", 0x40, 0, 1, {int 0x40}

        ; #PF: PML4[1] is empty; PD[2] (4-6 MiB) not present; PD[1] (2-4 MiB)
        ; NX; PD[3] (6-8 MiB) with a reserved bit.
        mov rbx, 0x8000000010
        XTEST 61, "#PF read, not-present PML4 entry", 14, 0, 0, {mov rax, [rbx]}
        mov rax, 0x8000000010
        CR2_IS 61, rax
        and byte [JANUS_PT_BASE + 0x2000 + 2 * 8], ~1
        mov rbx, 0x400008
        invlpg [rbx]
        XTEST 62, "#PF write, not-present 2 MiB page", 14, 2, 0, {mov [rbx], eax}
        CR2_IS 62, 0x400008
        or byte [JANUS_PT_BASE + 0x2000 + 2 * 8], 1
        invlpg [rbx]
        mov dword [rbx], 0x11223344      ; present again

        mov ecx, MSR_EFER
        rdmsr
        or eax, 1 << 11                 ; NXE
        wrmsr
        bts qword [JANUS_PT_BASE + 0x2000 + 1 * 8], 63
        mov rbx, 0x200000
        invlpg [rbx]
        mov byte [rbx], 0xC3            ; data accesses to an NX page are fine
        CHECK8 63, byte [rbx], 0xC3
        mov rbx, 0x200000
        ; The saved RIP is the jump target, not the jump.
        mov qword [rel got_eip], -1
        lea rax, [rel .nx_back]
        mov [rel resume], rax
        jmp rbx
.nx_back:
        CHECK64 64, rbx, 0x200000
        JANUS_CLAIM_CHECK 65
        XCHK 65, [got_vec], 14, "#PF NX fetch: vector"
        XCHK 65, [got_err], 0x11, "#PF NX fetch: error code"
        XCHK 65, [got_eip], 0x200000, "#PF NX fetch: saved RIP"
        CR2_IS 65, 0x200000
        PRINT "  #PF instruction fetch, NX page: vector 0x"
        PRINT_HEX 8, [rel got_vec]
        PRINT " error 0x"
        PRINT_HEX 32, [rel got_err]
        NEWLINE

        mov rax, 1 << 51
        or [JANUS_PT_BASE + 0x2000 + 3 * 8], rax
        mov rbx, 0x600100
        invlpg [rbx]
        %ifndef JANUS_QEMU_COMPAT
        XTEST 66, "#PF reserved bit (51) in a PDE", 14, 9, 0, {mov eax, [rbx]}
%else   ; QEMU 7.2 TCG reports RSVD without P (hardware sets both)
        XTEST 66, "#PF reserved bit (51) in a PDE", 14, 8, 0, {mov eax, [rbx]}
%endif
        CR2_IS 66, 0x600100

        TEST_PASS

;------------------------------------------------------------------------------
; Handlers
;------------------------------------------------------------------------------
        bits 32
        align 16
stubs32:
%assign v 0
%rep NSTUBS
%if v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30
        nop
        nop
%else
        push byte 0
%endif
        push byte v
        jmp common32
        times (stubs32 + (v + 1) * 16) - $ db 0xCC
%assign v v + 1
%endrep

common32:
        push eax
        mov eax, [esp + 4]
        mov [got_vec], eax
        mov eax, [esp + 8]
        mov [got_err], eax
        mov eax, [esp + 12]
        mov [got_eip], eax
        mov eax, [esp + 16]
        mov [got_cs], eax
        mov eax, cr2
        mov [got_cr2], eax
        mov eax, [resume]
        test eax, eax
        jz .unexpected
        mov dword [resume], 0
        mov [esp + 12], eax
        test byte [esp + 16], 3
        pop eax
        lea esp, [esp + 8]
        jnz .iret
        push dword [esp + 8]            ; same privilege: IRETD by hand
        popfd
        retf 4
.iret:  iretd
.unexpected:
        ; A failing check at CPL3 (IOPL 0) faults on its first IN/OUT: give
        ; the user code IOPL 3 and retry, so that the report gets printed.
        test byte [esp + 16], 3
        jz .report
        cmp dword [esp + 4], 13
        jne .report
        test dword [esp + 20], 0x3000
        jnz .report
        or dword [esp + 20], 0x3000
        pop eax
        add esp, 8
        iretd
.report:
        PRINT "  unexpected exception: vector 0x"
        PRINT_HEX 8, [got_vec]
        PRINT " error 0x"
        PRINT_HEX 32, [got_err]
        PRINT " at 0x"
        PRINT_HEX 32, [got_eip]
        NEWLINE
        FAIL 250, "unexpected exception (32-bit)"

        bits 64
        align 16
stubs64:
%assign v 0
%rep NSTUBS
%if v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30
        nop
        nop
%else
        push byte 0
%endif
        push byte v
        jmp common64
        times (stubs64 + (v + 1) * 16) - $ db 0xCC
%assign v v + 1
%endrep

common64:
        push rax
        mov rax, [rsp + 8]
        mov [rel got_vec], rax
        mov rax, [rsp + 16]
        mov [rel got_err], rax
        mov rax, [rsp + 24]
        mov [rel got_eip], rax
        mov rax, [rsp + 32]
        mov [rel got_cs], rax
        mov rax, cr2
        mov [rel got_cr2], rax
        mov rax, [rel resume]
        test rax, rax
        jz .unexpected
        mov qword [rel resume], 0
        mov [rsp + 24], rax
        pop rax
        add rsp, 16
        iretq
.unexpected:
        PRINT "  unexpected exception: vector 0x"
        PRINT_HEX 8, [rel got_vec]
        PRINT " error 0x"
        PRINT_HEX 32, [rel got_err]
        PRINT " at 0x"
        PRINT_HEX 64, [rel got_eip]
        NEWLINE
        FAIL 251, "unexpected exception (64-bit)"

;------------------------------------------------------------------------------
; Data
;------------------------------------------------------------------------------
        align 8
got_vec:        dq 0
got_err:        dq 0
got_eip:        dq 0
got_cs:         dq 0
got_cr2:        dq 0
resume:         dq 0
bounds:         dd 10, 20
idtr32:         dw NSTUBS * 8 - 1
                dd IDT32_ADDR
idtr64:         dw NSTUBS * 16 - 1
                dq IDT64_ADDR
