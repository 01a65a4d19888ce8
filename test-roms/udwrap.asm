; udwrap.asm - recursive #UD with the stack pointer wrapping through 0.
;
; In 32-bit protected mode with flat segments (SS: expand-up, limit 4 GiB,
; B = 1) and a #UD handler (an interrupt gate) that executes UD2 itself:
;   1. ESP = 0x10, a multiple of 4: the first #UD's frame (EFLAGS, CS, EIP)
;      fills 0x4-0xF; the second's EFLAGS goes to 0x0, its CS and EIP to
;      0xFFFFFFFC and 0xFFFFFFF8: ESP wraps modulo 2^32 and every dword lies
;      inside the segment, so this is no limit violation. The third #UD
;      finds ESP = 0xFFFFFFEC, and the handler leaves.
;   2. ESP = 0x12, not a multiple of 4: the second #UD's frame would put its
;      CS dword at 0xFFFFFFFE-0x00000001, across the top of the segment. The
;      frame is checked against the SS limit before it is pushed, as a PUSH
;      is: #SS, whose frame does not fit either (#SS during #SS: a double
;      fault), nor does the double fault's: a triple fault, which ends the
;      run. (The SDM leaves accesses across the top of a 4 GiB segment
;      implementation-specific (vol. 3, 5.3); janus's PUSH and exception
;      delivery both fault, as KVM's instruction emulator does.)
;
; Expected outcome: a triple fault (janus reports the shutdown); output
;   udwrap: recursive #UD, the stack pointer wrapping through 0
;     aligned: ESP wrapped from 0x00000004 to 0xfffffff8, third #UD at ESP 0xffffffec
;     unaligned: the second #UD's frame crosses the top of SS: expect a triple fault
; A failure prints "udwrap: FAIL check N: ..." and exits with status N; an
; exit with status 0 (check 4) means the unaligned frame did not fault.

%define TEST_NAME "udwrap"
%include "janus.inc"
%include "irq.inc"

main:
        PRINTLN "udwrap: recursive #UD, the stack pointer wrapping through 0"
        ENTER_PM32
        IRQ_INIT
        SET_VECTOR 6, ud_aligned

;--- 1: a multiple of 4 -----------------------------------------------------------
        mov esp, 0x10
        ud2
ud_aligned:
        inc dword [ud_count]
        mov eax, [ud_count]
        mov [ud_esp + eax * 4 - 4], esp
        cmp eax, 3
        jb .again
        mov esp, JANUS_STACK
        jmp aligned_done
.again: ud2

aligned_done:
        CHECK32 1, dword [ud_esp], 0x4
        CHECK32 2, dword [ud_esp + 4], 0xFFFFFFF8
        CHECK32 3, dword [ud_esp + 8], 0xFFFFFFEC
        PRINT "  aligned: ESP wrapped from 0x"
        PRINT_HEX 32, dword [ud_esp]
        PRINT " to 0x"
        PRINT_HEX 32, dword [ud_esp + 4]
        PRINT ", third #UD at ESP 0x"
        PRINT_HEX 32, dword [ud_esp + 8]
        NEWLINE

;--- 2: not a multiple of 4 ---------------------------------------------------------
        PRINTLN "  unaligned: the second #UD's frame crosses the top of SS: expect a triple fault"
        SET_VECTOR 6, ud_unaligned
        mov esp, 0x12
        ud2
ud_unaligned:
        inc dword [ud_count2]
        cmp dword [ud_count2], 2
        jae .ran_on
        ud2
.ran_on:
        mov esp, JANUS_STACK
        mov eax, [ud_count2]
        JANUS_CLAIM_CHECK 4
        xor edx, edx
        JANUS_FAIL 4, 32, "the unaligned #UD frame across the top of SS was pushed"

        align 4
ud_count:       dd 0
ud_esp:         dd 0, 0, 0
ud_count2:      dd 0
