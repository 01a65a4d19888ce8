; loop.asm - spin forever with interrupts off (for testing --timeout).
;
; EXPECTED OUTCOME: never exits by itself; the host must stop it (janus
; --timeout). Output:
;   loop: spinning forever

%define TEST_NAME "loop"
%include "janus.inc"

main:
        PRINTLN "loop: spinning forever"
        cli
        jmp $
