; outloop.asm - port-I/O round-trip benchmark guest.
;
; Executes exactly 1,000,000 `out 0x80, al` (POST port: accepted, no effect)
; in a tight real-mode loop, so each iteration costs one I/O exit to the VMM.
; Time the whole run and divide by 1e6 for the per-exit round trip.
;
; Expected outcome: exit status 0; output
;   outloop: 1000000 outs
;   outloop: done

%define TEST_NAME "outloop"
%include "janus.inc"

%define ITERATIONS 1000000
%defstr ITERATIONS_STR ITERATIONS

main:
        PRINTLN "outloop: ", ITERATIONS_STR, " outs"
        mov ecx, ITERATIONS
        xor al, al
.loop:  out POST_PORT, al
        dec ecx
        jnz .loop
        PRINTLN "outloop: done"
        EXIT 0
