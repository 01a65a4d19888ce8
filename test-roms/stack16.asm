; stack16.asm - 32-bit stack operations on a 16-bit stack (SS.B = 0) and the
; other way round, and SALC.
;
; Real mode: SALC (0xD6: AL = CF ? 0xFF : 0); o32 PUSHA with ESP = 0x20000
; stores all of ESP (0x20000) and wraps SP only (ESP = 0x2FFE0 after it);
; o32 POPA brings SP back and leaves ESP's upper half alone.
; 32-bit protected mode: o32 POP SS from a 16-bit stack into a 32-bit stack
; segment moves SP at the OLD stack's size (16 bits, wrapping); POP SS from a
; 32-bit stack into a 16-bit one moves all of ESP; PUSH DS / POP ES on a
; 16-bit stack wrap SP at 0 and keep ESP's upper half.
;
; No exceptions and no paging: runs on every backend (on kvm_pvm through
; KVM's instruction emulator).
;
; Expected outcome: exit status 0; output ends with
;   stack16: PASS

%define TEST_NAME "stack16"
%include "janus.inc"

main:
        PRINTLN "stack16: SALC"
        stc
        mov al, 0x12
        db 0xD6                         ; salc
        CHECK8 1, al, 0xFF
        clc
        db 0xD6
        CHECK8 2, al, 0x00

        PRINTLN "stack16: o32 pusha/popa on a 16-bit stack, ESP = 0x20000"
        mov ebx, 0x11111111
        mov ebp, 0x55555555
        mov ax, 0x1000                  ; stack at linear 0x10000-0x1FFFF
        mov ss, ax
        mov esp, 0x20000                ; SP = 0
        pushad
        mov [r_esp1], esp               ; after: SP wrapped to 0xFFE0
        mov esi, [ss:0xFFEC]            ; the pushed ESP (5th dword)
        mov [r_pushed_esp], esi
        mov ecx, [ss:0xFFF0]            ; the pushed EBX
        mov [r_pushed_ebx], ecx
        xor ebx, ebx
        mov ebp, 1
        popad
        mov [r_esp2], esp
        xor ax, ax
        mov ss, ax
        mov esp, JANUS_STACK
        CHECK32 3, dword [r_esp1], 0x2FFE0
        CHECK32 4, dword [r_pushed_esp], 0x20000
        CHECK32 5, dword [r_pushed_ebx], 0x11111111
        CHECK32 6, dword [r_esp2], 0x20000
        CHECK32 7, ebx, 0x11111111
        CHECK32 8, ebp, 0x55555555

        ENTER_PM32
        PRINTLN "stack16: o32 pop ss from a 16-bit stack into a 32-bit one"
        mov ax, SEL_DATA16
        mov ss, ax                      ; 16-bit stack, base 0, limit 0xFFFF
        mov esp, 0x12340000             ; SP = 0
        push dword SEL_DATA             ; SP = 0xFFFC, ESP = 0x1234FFFC
        pop ss                          ; SP += 4 at 16 bits: ESP = 0x12340000
        mov edi, esp
        mov esp, JANUS_STACK
        CHECK32 10, edi, 0x12340000

        PRINTLN "stack16: o32 pop ss from a 32-bit stack into a 16-bit one"
        mov esp, 0x20000
        push dword SEL_DATA16           ; ESP = 0x1FFFC
        pop ss                          ; ESP += 4 at 32 bits: 0x20000
        mov edi, esp
        mov ax, SEL_DATA
        mov ss, ax
        mov esp, JANUS_STACK
        CHECK32 11, edi, 0x20000

        PRINTLN "stack16: push ds / pop es on a 16-bit stack in protected mode"
        mov ax, SEL_DATA16
        mov ss, ax
        mov esp, 0x56780000
        push ds                         ; 4 bytes at SP 0xFFFC
        mov edi, esp
        movzx esi, word [0xFFFC]
        xor ax, ax
        mov es, ax
        pop es
        mov edx, esp
        mov cx, es
        mov ax, SEL_DATA
        mov ss, ax
        mov es, ax
        mov esp, JANUS_STACK
        CHECK32 12, edi, 0x5678FFFC
        CHECK32 13, esi, SEL_DATA
        CHECK32 14, edx, 0x56780000
        CHECK16 15, cx, SEL_DATA

        PRINTLN "stack16: o32 pusha on a 16-bit stack in protected mode"
        mov ax, SEL_DATA16
        mov ss, ax
        mov esp, 0x20010                ; SP = 0x0010: the pushes wrap
        pushad                          ; EAX at SP 0xC ... EBX at 0, ESP at 0xFFFC
        mov [r_esp1], esp
        mov ecx, [0xFFFC]
        mov [r_pushed_esp], ecx
        popad
        mov [r_esp2], esp
        mov ax, SEL_DATA
        mov ss, ax
        mov esp, JANUS_STACK
        CHECK32 16, dword [r_esp1], 0x2FFF0
        CHECK32 17, dword [r_pushed_esp], 0x20010
        CHECK32 18, dword [r_esp2], 0x20010
        TEST_PASS

        align 4
r_esp1:         dd 0
r_esp2:         dd 0
r_pushed_esp:   dd 0
r_pushed_ebx:   dd 0
