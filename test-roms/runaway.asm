; runaway.asm - run on through zeroed RAM (a translation-cache stress).
;
; Enters 32-bit protected mode and jumps to 1 MiB, where RAM is zero: every
; two bytes there are `add [eax], al` (EAX = 0, so the same harmless store
; each time), and the guest runs on through memory, a new translated block
; every few dozen bytes, until the host stops it. What janus itself keeps
; must stay bounded (`--tb-size`) however much code the guest runs.
;
; EXPECTED OUTCOME: never exits by itself; the host must stop it (janus
; --timeout). Output:
;   runaway: into zeroed RAM at 1 MiB

%define TEST_NAME "runaway"
%include "janus.inc"

main:
        PRINTLN "runaway: into zeroed RAM at 1 MiB"
        ENTER_PM32
        xor eax, eax
        jmp SEL_CODE32:0x100000
