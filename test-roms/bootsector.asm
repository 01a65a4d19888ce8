; bootsector.asm - a 512-byte boot sector for firmware boot tests (not a flat
; janus test image: a BIOS loads it from a disk at 0000:7C00).
;
; Prints that it runs and the boot drive (DL) on COM1, reads the disk's second
; sector with INT 13h (AH=02h, CHS 0/0/2) to 0x8000, checks that it starts with
; "JANUS SECTOR 1" and prints it, then exits through the debug-exit port 0xf4:
; 0 on success, 1 if INT 13h failed, 2 if the sector is not the expected one.
; tests/firmware.rs writes the disk: this sector, then that second sector.
;
; Expected output:
;   bootsector: running, boot drive 0x80
;   bootsector: INT 13h read JANUS SECTOR 1
;   bootsector: PASS

        bits 16
        org 0x7c00

COM1            equ 0x3f8
DEBUG_EXIT      equ 0xf4

start:
        cli
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov sp, 0x7c00
        mov [drive], dl
        mov si, msg_run
        call puts
        mov al, [drive]
        call hex8
        call newline

        ; INT 13h AH=02h: 1 sector, cylinder 0, sector 2, head 0, to ES:BX = 0:8000.
        mov ax, 0x0201
        mov cx, 0x0002
        xor dh, dh
        mov dl, [drive]
        mov bx, 0x8000
        int 0x13
        jc .int13_failed
        mov si, 0x8000
        mov di, want
        mov cx, want_len
        repe cmpsb
        jne .wrong
        mov si, msg_read
        call puts
        mov si, 0x8000
        call puts
        call newline
        mov si, msg_pass
        call puts
        xor al, al
        out DEBUG_EXIT, al
.int13_failed:
        mov si, msg_int13
        call puts
        mov al, 1
        out DEBUG_EXIT, al
.wrong:
        mov si, msg_wrong
        call puts
        mov al, 2
        out DEBUG_EXIT, al
        jmp $

; puts: print the NUL-terminated string at DS:SI.
puts:
        lodsb
        test al, al
        jz .done
        call putc
        jmp puts
.done:  ret

newline:
        mov al, 10
        ; fall through
; putc: AL to COM1 once its transmitter is empty.
putc:
        push dx
        push ax
        mov dx, COM1 + 5
.wait:  in al, dx
        test al, 0x20
        jz .wait
        pop ax
        mov dx, COM1
        out dx, al
        pop dx
        ret

; hex8: print AL as 0xNN.
hex8:
        push ax
        mov al, '0'
        call putc
        mov al, 'x'
        call putc
        pop ax
        push ax
        shr al, 4
        call .digit
        pop ax
        and al, 0x0f
.digit: add al, '0'
        cmp al, '9'
        jbe .out
        add al, 'a' - '0' - 10
.out:   jmp putc

msg_run:   db "bootsector: running, boot drive ", 0
msg_read:  db "bootsector: INT 13h read ", 0
msg_pass:  db "bootsector: PASS", 10, 0
msg_int13: db "bootsector: INT 13h failed", 10, 0
msg_wrong: db "bootsector: the second sector is not JANUS SECTOR 1", 10, 0
want:      db "JANUS SECTOR 1", 0
want_len   equ $ - want
drive:     db 0

        times 510 - ($ - $$) db 0
        dw 0xaa55
