; post.asm - write POST codes, then halt with interrupts off: janus's stop
; report names the last code written to the POST port (0x80, or --post-port).
;
; Expected outcome: **halt** with interrupts off (exit 113); output
;   post: codes 0x11, 0x22 to port 0x80, 0x5a to port 0x190
; and on stderr `last POST code 0x22 (port 0x80)` (0x5a with --post-port 0x190);
; --post file:PATH logs 0x11 and 0x22 (0x5a with --post-port 0x190).

%define TEST_NAME "post"
%include "janus.inc"

main:
        PRINTLN "post: codes 0x11, 0x22 to port 0x80, 0x5a to port 0x190"
        mov al, 0x11
        out POST_PORT, al
        mov al, 0x22
        out POST_PORT, al
        mov dx, 0x190
        mov al, 0x5a
        out dx, al
        cli
        hlt
