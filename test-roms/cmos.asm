; cmos.asm - CMOS/RTC checks (real mode).
;
; Reads the RTC date and time (avoiding the update-in-progress window and
; re-reading until two reads agree), decodes it as BCD or binary according
; to status register B, checks every field is valid and in range, and prints
; it as YYYY-MM-DD HH:MM:SS. Checks status D, that bit 7 of the index port
; (the NMI mask) does not change which register is read, and that the memory
; size registers agree with each other, then prints the memory size they
; describe.
;
; Expected outcome: exit status 0; output includes lines like
;   cmos: RTC time 2025-11-26 09:30:12 (weekday 4)
;   cmos: memory 64 MiB (base 640 KiB, extended 64512 KiB, 768 x 64 KiB above 16 MiB, 0 x 64 KiB above 4 GiB)
;   cmos: PASS

%define TEST_NAME "cmos"
%include "janus.inc"

RTC_SEC         equ 0x00
RTC_MIN         equ 0x02
RTC_HOUR        equ 0x04
RTC_WEEKDAY     equ 0x06
RTC_DAY         equ 0x07
RTC_MONTH       equ 0x08
RTC_YEAR        equ 0x09
RTC_CENTURY     equ 0x32
RTC_STATUS_A    equ 0x0A
RTC_STATUS_B    equ 0x0B
RTC_STATUS_D    equ 0x0D
STATUS_A_UIP    equ 0x80            ; update in progress
STATUS_B_24H    equ 0x02
STATUS_B_BINARY equ 0x04            ; DM: 1 = binary, 0 = BCD
NUM_FIELDS      equ 8               ; entries of rtc_regs

; CHECK_RANGE n, operand, lo, hi: lo <= operand <= hi (unsigned), else print
; the value and fail check n.
%macro CHECK_RANGE 4
        cmp %2, %3
        jb %%bad
        cmp %2, %4
        jbe %%ok
%%bad:  PRINT "  value: "
        PRINT_DEC_BYTE %2
        NEWLINE
        FAIL %1, %str(%2), " out of range ", %str(%3), "..", %str(%4)
%%ok:
%endmacro

; PRINT_DEC_BYTE operand: print an unsigned byte in decimal.
%macro PRINT_DEC_BYTE 1
        push eax
        movzx eax, %1
        PRINT_DEC eax
        pop eax
%endmacro

main:
        PRINTLN "cmos: CMOS/RTC checks"

;--- status registers -------------------------------------------------------------
        mov al, RTC_STATUS_D
        call cmos_read
        CHECK8 1, al, 0x80                      ; "RAM and time valid"
        mov al, 0x80 | RTC_STATUS_D             ; same register, NMI masked
        call cmos_read
        CHECK8 2, al, 0x80
        mov al, RTC_STATUS_B
        call cmos_read
        mov [status_b], al
        CHECK8 3, al, STATUS_B_24H              ; janus default: 24h, BCD

;--- read the clock consistently -------------------------------------------------------
        ; Read all fields twice, each time outside an update cycle, until two
        ; reads agree (the clock may tick in between). Give up after 5 tries.
        mov byte [tries], 5
.reread:
        mov di, rtc_now
        call read_clock
        mov di, rtc_again
        call read_clock
        mov si, rtc_now
        mov di, rtc_again
        mov cx, NUM_FIELDS
        repe cmpsb
        je .stable
        dec byte [tries]
        jnz .reread
        FAIL 4, "RTC never read the same twice"
.stable:

;--- decode and validate ------------------------------------------------------------
        ; In 12-hour mode bit 7 of the hour is PM; strip it before decoding.
        mov byte [pm], 0
        test byte [status_b], STATUS_B_24H
        jnz .hour24
        mov al, [rtc_now + 2]
        and al, 0x80
        mov [pm], al
        and byte [rtc_now + 2], 0x7F
.hour24:
        test byte [status_b], STATUS_B_BINARY
        jnz .decoded
        ; BCD: every nibble must be 0-9; then convert in place to binary.
        mov si, rtc_now
        mov cx, NUM_FIELDS
.bcd:   mov al, [si]
        mov dh, al
        and dh, 0x0F                    ; low digit
        cmp dh, 9
        ja .bad_bcd
        shr al, 4                       ; high digit
        cmp al, 9
        ja .bad_bcd
        mov bl, 10                      ; binary = high * 10 + low
        mul bl
        add al, dh
        mov [si], al
        inc si
        loop .bcd
        jmp .decoded
.bad_bcd:
        FAIL 5, "an RTC field is not valid BCD"
.decoded:
        ; 12-hour mode: 12 AM is 0h, 12 PM is 12h, 1-11 PM are 13-23h.
        test byte [status_b], STATUS_B_24H
        jnz .ranges
        cmp byte [rtc_now + 2], 12
        jne .not12
        mov byte [rtc_now + 2], 0
.not12: cmp byte [pm], 0
        je .ranges
        add byte [rtc_now + 2], 12

.ranges:
        mov si, rtc_now                 ; fields in rtc_regs order
        CHECK_RANGE 6, byte [si + 0], 0, 59     ; seconds
        CHECK_RANGE 7, byte [si + 1], 0, 59     ; minutes
        CHECK_RANGE 8, byte [si + 2], 0, 23     ; hours
        CHECK_RANGE 9, byte [si + 3], 1, 7      ; weekday
        CHECK_RANGE 10, byte [si + 4], 1, 31    ; day of month
        CHECK_RANGE 11, byte [si + 5], 1, 12    ; month
        CHECK_RANGE 12, byte [si + 6], 0, 99    ; year in century
        CHECK_RANGE 13, byte [si + 7], 19, 21   ; century

        PRINT "cmos: RTC time "
        movzx eax, byte [rtc_now + 7]   ; year = century * 100 + year
        imul eax, eax, 100
        movzx ebx, byte [rtc_now + 6]
        add eax, ebx
        PRINT_DEC eax
        PUTC '-'
        mov al, [rtc_now + 5]
        call print2
        PUTC '-'
        mov al, [rtc_now + 4]
        call print2
        PUTC ' '
        mov al, [rtc_now + 2]
        call print2
        PUTC ':'
        mov al, [rtc_now + 1]
        call print2
        PUTC ':'
        mov al, [rtc_now + 0]
        call print2
        PRINT " (weekday "
        movzx eax, byte [rtc_now + 3]
        PRINT_DEC eax
        PRINTLN ")"

;--- memory size registers -------------------------------------------------------------
        mov al, 0x15                    ; base memory in KiB
        call cmos_read16
        CHECK16 14, ax, 640
        mov al, 0x17                    ; extended memory (KiB above 1 MiB)
        call cmos_read16
        mov [ext_kib], ax
        mov al, 0x30                    ; the same value again
        call cmos_read16
        CHECK16 15, ax, [ext_kib]
        mov al, 0x34                    ; 64 KiB units above 16 MiB
        call cmos_read16
        mov [hi_64k], ax
        mov al, 0x5B                    ; 64 KiB units above 4 GiB (3 bytes)
        call cmos_read16
        mov [top_64k], ax
        mov al, 0x5D
        call cmos_read
        mov [top_64k + 2], al

        ; RAM of 16 MiB or more: extended KiB = 15 MiB + the units above
        ; 16 MiB, capped at 0xFFFF. Less: nothing may be reported above 16 MiB.
        movzx eax, word [hi_64k]
        test eax, eax
        jz .small
        shl eax, 6                      ; 64 KiB units -> KiB
        add eax, 15 * 1024
        cmp eax, 0xFFFF
        jbe .nocap
        mov eax, 0xFFFF
.nocap: movzx ebx, word [ext_kib]
        CHECK32 16, ebx, eax
        mov eax, [top_64k]              ; total KiB = 16 MiB + 64 KiB units
        movzx ebx, word [hi_64k]        ;   above 16 MiB and above 4 GiB
        add eax, ebx
        shl eax, 6
        add eax, 16 * 1024
        jmp .total
.small: movzx eax, word [ext_kib]
        CHECK32 17, eax, 15 * 1024      ; janus has >= 16 MiB
        add eax, 1024
.total: mov [total_kib], eax
        cmp eax, 16 * 1024
        CHECK_CC 18, ae                 ; at least 16 MiB

        PRINT "cmos: memory "
        mov eax, [total_kib]
        shr eax, 10
        PRINT_DEC eax
        PRINT " MiB (base 640 KiB, extended "
        movzx eax, word [ext_kib]
        PRINT_DEC eax
        PRINT " KiB, "
        movzx eax, word [hi_64k]
        PRINT_DEC eax
        PRINT " x 64 KiB above 16 MiB, "
        PRINT_DEC [top_64k]
        PRINTLN " x 64 KiB above 4 GiB)"

        TEST_PASS

;--- helpers -------------------------------------------------------------------------


; cmos_read: AL = register index -> AL = its value.
cmos_read:
        out CMOS_INDEX, al
        in al, CMOS_DATA
        ret

; cmos_read16: AL = index of the low byte -> AX = (reg[AL+1] << 8) | reg[AL].
cmos_read16:
        push bx
        mov bl, al
        inc al
        call cmos_read                  ; high byte
        mov bh, al
        mov al, bl
        call cmos_read                  ; low byte
        mov ah, bh
        pop bx
        ret

; read_clock: wait until no update is in progress, then store the raw
; registers listed in rtc_regs to [DI..DI+NUM_FIELDS).
read_clock:
        pusha
        mov cx, 0xFFFF                  ; bounded wait (an update takes ~2 ms)
.wait:  mov al, RTC_STATUS_A
        call cmos_read
        test al, STATUS_A_UIP
        jz .ready
        loop .wait
.ready: mov si, rtc_regs
        mov cx, NUM_FIELDS
.next:  lodsb
        call cmos_read
        mov [di], al
        inc di
        loop .next
        popa
        ret

; print2: print AL (0-99) as two decimal digits.
print2:
        push ax
        push bx
        xor ah, ah
        mov bl, 10
        div bl                          ; AL = tens, AH = ones
        add ax, '00'
        PUTC al
        PUTC ah
        pop bx
        pop ax
        ret

;--- data ----------------------------------------------------------------------------
rtc_regs:       db RTC_SEC, RTC_MIN, RTC_HOUR, RTC_WEEKDAY
                db RTC_DAY, RTC_MONTH, RTC_YEAR, RTC_CENTURY
rtc_now:        times NUM_FIELDS db 0
rtc_again:      times NUM_FIELDS db 0
status_b:       db 0
pm:             db 0
tries:          db 0
                align 4
ext_kib:        dw 0
hi_64k:         dw 0
top_64k:        dd 0
total_kib:      dd 0
