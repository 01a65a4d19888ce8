; privilege.asm - privilege changes in long mode: CPL0 -> CPL3 through IRETQ,
; back through a DPL3 interrupt gate with the stack switch to TSS.RSP0
; (checks the new RSP and the frame: user RIP, CS, RFLAGS, RSP, SS), and
; port I/O at CPL3: #GP(0) with IOPL 0 (no I/O bitmap), allowed with IOPL 3.
;
; Expected outcome: exit status 0; output ends with
;   privilege: PASS

%define TEST_NAME "privilege"

%macro JANUS_EXTRA_GDT_ENTRIES 0
        dq 0x00CFF3000000FFFF           ; 0x30 user data, DPL3
        dq 0x00AFFB000000FFFF           ; 0x38 user code64, DPL3
        GDT_ENTRY TSS64_ADDR, 0x67, 0x89, 0x0   ; 0x40 64-bit TSS (16 bytes)
        dq 0
%endmacro

TSS64_ADDR      equ 0x3000
IDT_ADDR        equ 0x1000
RSP0            equ 0x6000
USER_RSP        equ 0x5800

%include "janus.inc"

SEL_UDATA       equ 0x30
SEL_UCODE       equ 0x38
SEL_TSS         equ 0x40

; SET_GATE vector, handler, type/DPL byte (0x8E or 0xEE)
%macro SET_GATE 3
        lea rax, [rel %2]
        mov rdi, IDT_ADDR + (%1) * 16
        mov [rdi], ax
        mov word [rdi + 2], SEL_CODE64
        mov byte [rdi + 4], 0
        mov byte [rdi + 5], %3
        shr rax, 16
        mov [rdi + 6], ax
        shr rax, 16
        mov [rdi + 8], eax
        mov dword [rdi + 12], 0
%endmacro

; TO_RING3 rflags, label: IRETQ to `label` at CPL3 with RSP = USER_RSP.
%macro TO_RING3 2
        push SEL_UDATA | 3
        push USER_RSP
        push %1
        push SEL_UCODE | 3
        lea rax, [rel %2]
        push rax
        iretq
%endmacro

main:
        PRINTLN "privilege: 64-bit long mode"
        ENTER_PM32
        ENTER_LM64
        ; The identity map must be user-accessible: set U in PML4[0], PDPT[0],
        ; and the first PD's entries.
        or byte [JANUS_PT_BASE], 4
        or byte [JANUS_PT_BASE + 0x1000], 4
        mov rdi, JANUS_PT_BASE + 0x2000
        mov ecx, 512
.u:     or byte [rdi], 4
        add rdi, 8
        loop .u
        mov rax, cr3
        mov cr3, rax

        mov rdi, IDT_ADDR
        xor eax, eax
        mov ecx, 256 * 16 / 8
        rep stosq
        SET_GATE 13, gp_handler, 0x8E
        SET_GATE 0x80, int80_handler, 0xEE
        lidt [rel idtr]
        mov rdi, TSS64_ADDR
        xor eax, eax
        mov ecx, 0x68 / 8
        rep stosq
        mov qword [TSS64_ADDR + 4], RSP0
        mov word [TSS64_ADDR + 0x66], 0x68      ; no I/O bitmap
        mov ax, SEL_TSS
        ltr ax

;--- CPL3 and back through an interrupt gate ---------------------------------
        mov qword [rel back], .back1
        TO_RING3 0x0002, user1
.back1:
        mov rsp, JANUS_STACK
        CHECK16 1, word [rel user_cs], SEL_UCODE | 3
        mov rax, [rel h_rsp]
        CHECK64 2, rax, RSP0 - 5 * 8      ; stack from TSS.RSP0
        mov rax, [rel frame + 0]
        lea rdx, [rel user1.after]
        CHECK64 3, rax, rdx                             ; RIP after int 0x80
        mov rax, [rel frame + 8]
        CHECK64 4, rax, SEL_UCODE | 3
        mov rax, [rel frame + 16]
        and eax, 0x3202
        CHECK64 5, rax, 0x0002                          ; RFLAGS: IOPL 0, IF 0
        mov rax, [rel frame + 24]
        CHECK64 6, rax, USER_RSP - 8                    ; user RSP (one push)
        mov rax, [rel frame + 32]
        CHECK64 7, rax, SEL_UDATA | 3
        CHECK64 8, r12, 0x1234                          ; user code ran
        PRINTLN "  CPL3 via IRETQ, back via a DPL3 gate on TSS.RSP0: ok"

;--- I/O at CPL3 ---------------------------------------------------------------
        mov qword [rel back], .back2
        mov qword [rel gp_err], -1
        TO_RING3 0x0002, user_io
.back2:
        mov rsp, JANUS_STACK
        mov rax, [rel gp_err]
        CHECK64 9, rax, 0                ; #GP(0)
        mov rax, [rel frame + 0]
        lea rdx, [rel user_io.out]
        CHECK64 10, rax, rdx                            ; at the OUT
        PRINTLN "  OUT at CPL3 with IOPL 0: #GP(0)"

        mov qword [rel back], .back3
        xor r12, r12
        TO_RING3 0x3002, user_io
.back3:
        mov rsp, JANUS_STACK
        CHECK64 11, r12, 0x5678                         ; got past the I/O
        mov rax, [rel frame + 16]
        and eax, 0x3000
        CHECK64 12, rax, 0x3000
        PRINTLN "  OUT and IN at CPL3 with IOPL 3: allowed"
        TEST_PASS

;--- user code -----------------------------------------------------------------
user1:
        mov ax, cs
        mov [rel user_cs], ax
        mov r12, 0x1234
        push rax
        int 0x80
.after:
        jmp $                           ; not reached

user_io:
        mov al, 0x42
.out:   out 0x80, al
        in al, 0x80
        mov r12, 0x5678
        int 0x80
        jmp $

;--- handlers --------------------------------------------------------------------
int80_handler:
        mov [rel h_rsp], rsp
        mov rax, [rsp]
        mov [rel frame], rax
        mov rax, [rsp + 8]
        mov [rel frame + 8], rax
        mov rax, [rsp + 16]
        mov [rel frame + 16], rax
        mov rax, [rsp + 24]
        mov [rel frame + 24], rax
        mov rax, [rsp + 32]
        mov [rel frame + 32], rax
        jmp [rel back]

gp_handler:
        pop rax
        mov [rel gp_err], rax
        mov rax, [rsp]
        mov [rel frame], rax
        mov rax, [rsp + 8]
        test al, 3
        jnz .user
        PRINTLN "  unexpected #GP at CPL0"
        FAIL 250, "unexpected #GP"
.user:  jmp [rel back]

        align 8
back:   dq 0
h_rsp:  dq 0
gp_err: dq 0
frame:  times 5 dq 0
user_cs: dw 0
idtr:   dw 256 * 16 - 1
        dq IDT_ADDR
