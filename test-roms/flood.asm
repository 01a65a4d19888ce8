; flood.asm - write 100,000 bytes to COM1 without a newline, then "END", then
; spin forever (for testing that output is not lost: a closed pipe, a full
; disk, a stop by a signal).
;
; EXPECTED OUTCOME: never exits by itself; the host must stop it. Output:
;   100,000 'x' bytes followed by "END" (no newline)

%define TEST_NAME "flood"
%include "janus.inc"

main:
        mov     dx, 0x3f8
        mov     ecx, 100000
        mov     al, 'x'
.more:
        out     dx, al
        dec     ecx
        jnz     .more
        PRINT   "END"
        cli
        jmp     $
