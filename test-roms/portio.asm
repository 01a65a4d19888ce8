; portio.asm - port I/O instruction checks (real mode).
;
; in/out with an imm8 port and with DX, at 8, 16 and 32 bits; the string
; forms rep outsb (to COM1, which prints), rep insb/insw/insd (from an
; unassigned port: all ones; from CMOS status D: 0x80 each) in both
; directions; the UART scratch and line status registers; the Bochs debug
; console's read-back value; the POST port's read-back of the last write.
;
; Ports used: 0xE0 and 0x2F0 are unassigned (reads all ones, writes dropped);
; 0xE9 debug console; 0x80 POST; 0x70/0x71 CMOS; 0x3F8.. COM1.
;
; Expected outcome: exit status 0; output includes
;   portio: this line was written by rep outsb
;   portio: PASS
; (and "portio: hello via port 0xe9" on the debug console, if captured).

%define TEST_NAME "portio"
%include "janus.inc"

UNASSIGNED_IMM  equ 0xE0                ; imm8-reachable unassigned port
UNASSIGNED_DX   equ 0x2F0               ; unassigned port above 0xFF

main:
        PRINTLN "portio: port I/O checks"

;--- in/out, imm8 port ---------------------------------------------------------------
        PRINTLN "  in/out imm8"
        in al, DEBUGCON_PORT            ; the Bochs console reads back 0xE9
        CHECK8 1, al, 0xE9
        mov al, 0x12                    ; writes to nothing are dropped
        out UNASSIGNED_IMM, al
        mov ax, 0x1234
        out UNASSIGNED_IMM, ax
        mov eax, 0x12345678
        out UNASSIGNED_IMM, eax
        xor eax, eax
        in al, UNASSIGNED_IMM
        CHECK32 2, eax, 0x000000FF      ; only AL is written by an 8-bit in
        xor eax, eax
        in ax, UNASSIGNED_IMM
        CHECK32 3, eax, 0x0000FFFF
        xor eax, eax
        in eax, UNASSIGNED_IMM
        CHECK32 4, eax, 0xFFFFFFFF

;--- in/out, DX port ----------------------------------------------------------------
        PRINTLN "  in/out dx"
        mov dx, DEBUGCON_PORT
        in al, dx
        CHECK8 5, al, 0xE9
        mov dx, UNASSIGNED_DX
        mov al, 0x55
        out dx, al
        mov ax, 0x5555
        out dx, ax
        mov eax, 0x55555555
        out dx, eax
        mov eax, 0x11111111
        in al, dx
        CHECK32 6, eax, 0x111111FF
        in ax, dx
        CHECK32 7, eax, 0x1111FFFF
        in eax, dx
        CHECK32 8, eax, 0xFFFFFFFF

        mov si, debugcon_msg            ; 8-bit outs to the debug console
.dbg:   lodsb
        test al, al
        jz .dbg_done
        out DEBUGCON_PORT, al
        jmp .dbg
.dbg_done:

;--- the UART itself ------------------------------------------------------------------
        PRINTLN "  16550A registers"
        mov dx, COM1 + 7                ; scratch register: plain storage
        mov al, 0xA5
        out dx, al
        in al, dx
        CHECK8 9, al, 0xA5
        mov al, 0x5A
        out dx, al
        in al, dx
        CHECK8 10, al, 0x5A
        mov dx, COM1_LSR                ; transmitter ready to take a byte
        in al, dx
        and al, LSR_THRE
        CHECK8 11, al, LSR_THRE

;--- rep outsb ----------------------------------------------------------------------------
        ; Print a whole line with one instruction. (The UART in janus and
        ; QEMU is always ready, so no per-byte THRE polling is needed.)
        cld
        mov si, outs_msg
        mov cx, outs_len
        mov dx, COM1
        rep outsb
        CHECK16 12, cx, 0
        CHECK16 13, si, outs_msg + outs_len

        mov si, outs_msg                ; rep outsw / outsd to nowhere
        mov cx, 4
        mov dx, UNASSIGNED_DX
        rep outsw
        CHECK16 14, si, outs_msg + 8
        mov cx, 2
        rep outsd
        CHECK16 15, si, outs_msg + 16

;--- rep ins from an unassigned port ------------------------------------------------------
        PRINTLN "  rep ins from an unassigned port"
        call clear_buf
        mov di, buf
        mov cx, 16
        mov dx, UNASSIGNED_DX
        rep insb
        CHECK16 16, cx, 0
        CHECK16 17, di, buf + 16
        mov di, buf                     ; all 16 bytes must now be 0xFF
        mov al, 0xFF
        mov cx, 16
        repe scasb
        CHECK_CC 18, e
        CHECK8 19, byte [buf + 16], 0   ; and nothing past them

        call clear_buf
        mov di, buf
        mov cx, 8
        rep insw
        CHECK16 20, word [buf], 0xFFFF
        CHECK16 21, word [buf + 14], 0xFFFF
        CHECK16 22, di, buf + 16

        call clear_buf
        mov di, buf
        mov cx, 4
        rep insd
        CHECK32 23, dword [buf], 0xFFFFFFFF
        CHECK32 24, dword [buf + 12], 0xFFFFFFFF
        CHECK16 25, di, buf + 16

        call clear_buf                  ; DF=1: fills downwards
        std
        mov di, buf + 7
        mov cx, 4
        rep insb
        cld
        CHECK16 26, di, buf + 3
        CHECK32 27, dword [buf + 4], 0xFFFFFFFF
        CHECK8 28, byte [buf + 3], 0

;--- rep insb from CMOS status register D --------------------------------------------------
        PRINTLN "  rep insb from CMOS status D"
        call clear_buf
        mov al, 0x0D                    ; select status D (NMI stays enabled)
        out CMOS_INDEX, al
        mov di, buf
        mov cx, 8
        mov dx, CMOS_DATA
        rep insb                        ; the index stays selected
        mov di, buf
        mov al, 0x80                    ; "valid RAM and time" bit only
        mov cx, 8
        repe scasb
        CHECK_CC 29, e
        CHECK8 30, byte [buf + 8], 0

;--- POST port ------------------------------------------------------------------------------
%ifndef JANUS_QEMU_COMPAT
        PRINTLN "  POST port 0x80 read-back"
        mov al, 0x5A
        out POST_PORT, al
        in al, POST_PORT                ; reads return the last value written
        CHECK8 31, al, 0x5A
        mov dx, POST_PORT
        mov al, 0xC3
        out dx, al
        mov al, 0
        in al, dx
        CHECK8 32, al, 0xC3
%else
        QEMU_SKIPPED "POST port 0x80 read-back"
%endif

        TEST_PASS

; clear_buf: zero the 32-byte buffer.
clear_buf:
        pusha
        cld
        mov di, buf
        xor ax, ax
        mov cx, 16
        rep stosw
        popa
        ret

;--- data ---------------------------------------------------------------------------------
outs_msg:       db "portio: this line was written by rep outsb", 10
outs_len        equ $ - outs_msg
debugcon_msg:   db "portio: hello via port 0xe9", 10, 0
                align 4
buf:            times 32 db 0
