; echo.asm - a console to type into: print every byte received on COM1 as
; "<xx>" (hex) and exit 0 on "q". For the console tests: in raw mode each key
; arrives at once (no line buffering), Ctrl-C arrives as <03>, and Ctrl-A x
; is janus's and never reaches the guest.
;
; Expected outcome: exit status 0 after a "q"; output
;   echo: type keys, q ends
;   <61><03>...      one per byte received
;   echo: PASS

%define TEST_NAME "echo"
%include "janus.inc"

COM1_RBR        equ COM1        ; receive buffer register
LSR_DR          equ 0x01        ; data ready

main:
        PRINTLN "echo: type keys, q ends"
.poll:
        mov dx, COM1_LSR
        in al, dx
        test al, LSR_DR
        jz .poll
        mov dx, COM1_RBR
        in al, dx
        cmp al, 'q'
        je .done
        PUTC '<'
        PRINT_HEX 8, al
        PUTC '>'
        jmp .poll
.done:
        NEWLINE
        TEST_PASS
