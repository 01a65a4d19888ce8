; halt.asm - halt with interrupts off.
;
; EXPECTED OUTCOME: the CPU halts with IF=0 and can never wake up; janus
; reports "halted with interrupts off" instead of an exit status. Output:
;   halt: halting with interrupts off

%define TEST_NAME "halt"
%include "janus.inc"

main:
        PRINTLN "halt: halting with interrupts off"
        cli
.halt:  hlt
        jmp .halt                       ; not reached (nothing can wake us)
