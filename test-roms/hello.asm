; hello.asm - the smallest janus guest: print a greeting and exit 0.
;
; Expected outcome: exit status 0; output
;   Hello from janus
;   hello: PASS

%define TEST_NAME "hello"
%include "janus.inc"

main:
        PRINTLN "Hello from janus"
        TEST_PASS
