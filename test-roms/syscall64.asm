; syscall64.asm - 64-bit SYSCALL/SYSRET: EFER.SCE, STAR, LSTAR and SFMASK.
;
; The kernel enters CPL3 through IRETQ (IOPL 3 so that user code can print),
; then user code makes three SYSCALLs with DF set. In the kernel: RCX = the
; return RIP, R11 = the user RFLAGS (DF set), RFLAGS masked by SFMASK (DF
; clear), CS/SS = STAR[47:32] and +8, CPL 0, user RSP unchanged. Back in user
; code after SYSRET: CS = STAR[63:48] + 16 | 3, SS = STAR[63:48] + 8 | 3,
; RFLAGS = R11 (DF set again), RCX/R11 as the kernel left them.
;
; Expected outcome: exit status 0; output ends with
;   syscall64: PASS

%define TEST_NAME "syscall64"

%macro JANUS_EXTRA_GDT_ENTRIES 0
        dq 0x00AF9B000000FFFF           ; 0x30 kernel code64
        dq 0x00CF93000000FFFF           ; 0x38 kernel data
        dq 0x00CFFB000000FFFF           ; 0x40 user code32 (SYSRET to compat)
        dq 0x00CFF3000000FFFF           ; 0x48 user data
        dq 0x00AFFB000000FFFF           ; 0x50 user code64
%endmacro

%include "janus.inc"

K_CS            equ 0x30
K_SS            equ 0x38
U_BASE          equ 0x40
U_SS            equ 0x48 | 3
U_CS            equ 0x50 | 3
MSR_STAR        equ 0xC0000081
MSR_LSTAR       equ 0xC0000082
MSR_SFMASK      equ 0xC0000084
USER_RSP        equ 0x5800
ROUNDS          equ 3

main:
        PRINTLN "syscall64: 64-bit SYSCALL/SYSRET"
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

        mov ecx, MSR_EFER
        rdmsr
        or eax, 1                       ; SCE
        wrmsr
        mov ecx, MSR_STAR
        xor eax, eax
        mov edx, (U_BASE << 16) | K_CS
        wrmsr
        mov ecx, MSR_LSTAR
        lea rax, [rel kernel_entry]
        mov rdx, rax
        shr rdx, 32
        wrmsr
        mov ecx, MSR_SFMASK
        mov eax, 0x0400 | 0x0100        ; DF, TF
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

;--- kernel -------------------------------------------------------------------
kernel_entry:
        mov [rel k_rcx], rcx
        mov [rel k_r11], r11
        mov [rel k_rsp], rsp
        pushfq
        pop qword [rel k_rflags]
        mov [rel k_cs], cs
        mov [rel k_ss], ss
        cmp rax, -1
        je finish
        inc qword [rel calls]
        mov rax, [rel k_rcx]
        CHECK64 1, rax, rbx                     ; RCX = return RIP (user put it in RBX)
        mov rax, [rel k_r11]
        and eax, 0x3702
        CHECK64 2, rax, 0x3402                  ; R11 = user RFLAGS (DF, IOPL 3, IF 0)
        mov rax, [rel k_rflags]
        and eax, 0x0700
        CHECK64 3, rax, 0                       ; DF, TF masked, IF still 0
        movzx eax, word [rel k_cs]
        CHECK64 4, rax, K_CS                    ; CS from STAR[47:32], CPL 0
        movzx eax, word [rel k_ss]
        CHECK64 5, rax, K_SS                    ; SS = STAR[47:32] + 8
        mov rax, [rel k_rsp]
        CHECK64 6, rax, r13                     ; RSP unchanged
        PRINT "  syscall "
        PRINT_DEC [rel calls]
        PRINTLN ": RCX, R11, RFLAGS, CS, SS ok"
        mov r11, [rel k_r11]
        mov rcx, [rel k_rcx]
        o64 sysret

finish:
        mov rsp, [rel kernel_rsp]
        mov rax, [rel calls]
        CHECK64 7, rax, ROUNDS
        TEST_PASS

;--- user ---------------------------------------------------------------------
user:
        mov r14, ROUNDS
.loop:
        mov r13, rsp
        lea rbx, [rel .ret]
        xor eax, eax
        std
        syscall
.ret:
        pushfq
        cld
        pop rax
        and eax, 0x3700
        CHECK64 10, rax, 0x3400                 ; RFLAGS = R11: DF set, IOPL 3
        mov ax, cs
        movzx eax, ax
        CHECK64 11, rax, U_CS
        mov ax, ss
        movzx eax, ax
        CHECK64 12, rax, U_SS
        CHECK64 13, rcx, rbx                    ; RCX as the kernel left it
        CHECK64 14, rsp, r13
        dec r14
        jnz .loop
        PRINTLN "  sysret: CS, SS, RFLAGS ok (CPL3)"
        mov rax, -1
        syscall

        align 8
kernel_rsp:     dq 0
calls:          dq 0
k_rcx:          dq 0
k_r11:          dq 0
k_rsp:          dq 0
k_rflags:       dq 0
k_cs:           dw 0
k_ss:           dw 0
