; rtc_alarm.asm - the CMOS RTC's update-ended and alarm interrupts on IRQ 8.
;
; In real mode, interrupts through the IVT, set up as rtc_periodic.asm does
; (virtual wire, the 8259A pair with IRQ 0, 2 and 8 unmasked, PIT channel 0
; at 100 Hz as the watchdog). Then:
;   * UIE (status B bit 4): two update-ended interrupts, each with IRQF and
;     UF (bits 7 and 4) in status C, the seconds register different at the
;     second one (the time advanced by the update);
;   * UIE off, AIE (bit 5) on, with the alarm set to "any hour, any minute,
;     second = now + 2" (0xC0-0xFF is "don't care" in an alarm register):
;     one alarm interrupt, status C with IRQF and AF (bit 5), and the seconds
;     register then equal to the alarm's.
; Each wait is bounded by the watchdog (3 s).
;
; Expected outcome: exit status 0; output
;   rtc_alarm: RTC update-ended and alarm interrupts (IRQ 8)
;     update-ended: 2 interrupts, status C 0x90 (IRQF, UF), seconds 0x.. -> 0x..
;     alarm at second 0x.. (any hour and minute): status C 0xa0 (IRQF, AF)
;   rtc_alarm: PASS
; A failure prints "rtc_alarm: FAIL check N: ..." and exits with status N.

%define TEST_NAME "rtc_alarm"
%include "janus.inc"
%include "irq.inc"

WD_PIT_COUNT    equ 11932           ; watchdog: 100 Hz
RTC_B_UIE       equ 0x10
RTC_B_AIE       equ 0x20
RTC_C_AF        equ 0x20
RTC_C_UF        equ 0x10
RTC_SECONDS     equ 0x00
RTC_SECONDS_ALARM equ 0x01
RTC_MINUTES_ALARM equ 0x03
RTC_HOURS_ALARM equ 0x05

main:
        PRINTLN "rtc_alarm: RTC update-ended and alarm interrupts (IRQ 8)"
        ENTER_PM32                      ; virtual wire, as firmware leaves it
        call lapic_enable
        LEAVE_PM32
        IRQ_INIT                        ; real mode: the IVT
        CMOS_READ RTC_REG_B             ; no RTC interrupts yet, BCD, 24-hour
        and al, ~(RTC_B_PIE | RTC_B_AIE | RTC_B_UIE | 0x04) & 0xFF
        or al, 0x02
        mov [status_b], al
        mov ah, al
        CMOS_WRITE RTC_REG_B, ah
        CMOS_READ RTC_REG_C             ; clear pending flags
        PIC_INIT 0xFA, 0xFE             ; master: IRQ 0, 2; slave: IRQ 8
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SET_VECTOR PIC_S_BASE, rtc_handler

;--- update-ended interrupts ------------------------------------------------------
        mov dword [rtc_count], 0
        mov byte [c_and], 0xFF
        mov ah, [status_b]
        or ah, RTC_B_UIE
        CMOS_WRITE RTC_REG_B, ah
        WAIT_GE 1, rtc_count, 2, 300, "2 update-ended interrupts"
        mov ah, [status_b]
        CMOS_WRITE RTC_REG_B, ah        ; UIE off
        CMOS_READ RTC_REG_C
        mov al, [c_and]
        and al, RTC_C_IRQF | RTC_C_UF
        CHECK8 2, al, RTC_C_IRQF | RTC_C_UF
        mov al, [seconds]
        mov ah, [seconds + 1]
        cmp al, ah
        CHECK_CC 3, ne                  ; the time advanced between the two
        PRINT "  update-ended: 2 interrupts, status C 0x90 (IRQF, UF), seconds 0x"
        PRINT_HEX 8, [seconds]
        PRINT " -> 0x"
        PRINT_HEX 8, [seconds + 1]
        NEWLINE

;--- alarm --------------------------------------------------------------------------
        cli
        CMOS_READ RTC_SECONDS           ; BCD
        mov ah, al
        shr al, 4
        mov bl, 10
        mul bl                          ; AX = tens * 10
        and ah, 0
        mov cl, al
        CMOS_READ RTC_SECONDS
        and al, 0x0F
        add al, cl                      ; binary seconds (read again: same second, or
        add al, 2                       ;  one later, which only delays the alarm)
        xor ah, ah
        mov bl, 60
        div bl                          ; AH = (seconds + 2) mod 60
        mov al, ah
        xor ah, ah
        mov bl, 10
        div bl                          ; AL = tens, AH = units
        shl al, 4
        or al, ah
        mov [alarm], al
        mov ah, al
        CMOS_WRITE RTC_SECONDS_ALARM, ah
        CMOS_WRITE RTC_MINUTES_ALARM, 0xFF      ; any minute
        CMOS_WRITE RTC_HOURS_ALARM, 0xC0        ; any hour
        CMOS_READ RTC_REG_C
        mov dword [rtc_count], 0
        mov byte [c_and], 0xFF
        mov ah, [status_b]
        or ah, RTC_B_AIE
        CMOS_WRITE RTC_REG_B, ah
        WAIT_GE 4, rtc_count, 1, 300, "the alarm interrupt"
        mov ah, [status_b]
        CMOS_WRITE RTC_REG_B, ah        ; AIE off
        mov al, [c_and]
        and al, RTC_C_IRQF | RTC_C_AF | RTC_C_UF
        CHECK8 5, al, RTC_C_IRQF | RTC_C_AF     ; no UF: UIE is off
        mov al, [seconds]
        mov ah, [alarm]
        CHECK8 6, al, ah                ; it rang at the alarm's second
        PRINT "  alarm at second 0x"
        PRINT_HEX 8, [alarm]
        PRINTLN " (any hour and minute): status C 0xa0 (IRQF, AF)"

        mov eax, [pic_spurious]
        test eax, eax
        jz .pass
        PRINT "  (8259A spurious interrupts: "
        PRINT_DEC eax
        PRINTLN ")"
.pass:  TEST_PASS

; IRQ 8: read status C (noted, and-ed over calls), note the seconds register
; (one byte per call, the first two kept), EOI to the slave and the master.
rtc_handler:
        push ax
        push bx
        CMOS_READ RTC_REG_C
        and [c_and], al
        CMOS_READ RTC_SECONDS
        mov bx, [rtc_count]
        cmp bx, 2
        jae .counted
        mov [seconds + bx], al
.counted:
        inc dword [rtc_count]
        mov al, OCW2_EOI
        out PIC_S_CMD, al
        out PIC_M_CMD, al
        pop bx
        pop ax
        iret

        align 4
rtc_count:      dd 0
status_b:       db 0
c_and:          db 0xFF
alarm:          db 0
seconds:        db 0, 0
