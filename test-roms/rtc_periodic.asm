; rtc_periodic.asm - the CMOS RTC's periodic interrupt on IRQ 8, through the
; slave 8259A.
;
; In real mode, interrupts through the IVT. First, as PC firmware does, it
; puts the local APIC in virtual wire mode (a short trip to protected mode:
; SVR enable, LINT0 = ExtINT, LINT1 = NMI) so that the 8259A's INTR reaches
; the CPU: janus's reset state already has the BSP's LINT0 in ExtINT mode,
; but QEMU without firmware leaves it masked (and QEMU 7.2 still routes the
; PIC through LINT0 when IA32_APIC_BASE.EN is clear). Then it programs the
; 8259A pair with IRQ 0 (PIT channel 0 at 100 Hz: the watchdog that bounds
; the waits), IRQ 2 (the cascade) and IRQ 8 unmasked, sets status register
; A to rate 6 (1024 Hz, divider 010 = 32.768 kHz), clears pending flags by
; reading status C, and sets PIE (status B bit 6). Checks:
;   * 8 periodic interrupts arrive; in the handler status C has IRQF (bit 7)
;     and PF (bit 6) set, the slave has IRQ 8 (bit 0) and the master IRQ 2
;     in service; EOI to the slave, then the master;
;   * after the handler clears PIE at the 8th: no more interrupts, status B
;     reads PIE clear, status C has IRQF clear, nothing in service.
;
; Expected outcome: exit status 0; output
;   rtc_periodic: RTC periodic interrupt (IRQ 8) through the slave 8259A
;     status A 0x26 (rate 6: 1024 Hz), status B 0x.. + PIE
;     8 interrupts: status C 0xc0 (IRQF, PF) each time, IRQ 8 and IRQ 2 in service
;     PIE off: no more interrupts, IRQF clear
;   rtc_periodic: PASS
; A failure prints "rtc_periodic: FAIL check N: ..." and exits with status N.

%define TEST_NAME "rtc_periodic"
%include "janus.inc"
%include "irq.inc"

RTC_COUNT       equ 8
WD_PIT_COUNT    equ 11932           ; watchdog: 100 Hz
STATUS_A_1024HZ equ 0x26            ; divider 010 (32.768 kHz), rate 6

main:
        PRINTLN "rtc_periodic: RTC periodic interrupt (IRQ 8) through the slave 8259A"
        ENTER_PM32                      ; virtual wire, as firmware leaves it
        call lapic_enable
        LEAVE_PM32
        IRQ_INIT                        ; real mode: the IVT
        CMOS_READ RTC_REG_B             ; no RTC interrupts yet
        and al, ~(RTC_B_PIE | 0x30) & 0xFF      ; PIE, AIE, UIE off
        mov ah, al
        CMOS_WRITE RTC_REG_B, ah
        CMOS_READ RTC_REG_C             ; clear pending flags
        PIC_INIT 0xFA, 0xFE             ; master: IRQ 0, 2; slave: IRQ 8
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SET_VECTOR PIC_S_BASE, rtc_handler

        CMOS_WRITE RTC_REG_A, STATUS_A_1024HZ
        CMOS_READ RTC_REG_A
        and al, 0x7F                    ; (bit 7: update in progress)
        CHECK8 1, al, STATUS_A_1024HZ
        CMOS_READ RTC_REG_C
        CMOS_READ RTC_REG_B
        mov bl, al
        PRINT "  status A 0x26 (rate 6: 1024 Hz), status B 0x"
        PRINT_HEX 8, bl
        PRINTLN " + PIE"

        mov dword [rtc_count], 0
        mov byte [c_and], 0xFF
        mov byte [isr_and], 0xFF
        or bl, RTC_B_PIE
        CMOS_WRITE RTC_REG_B, bl
        WAIT_GE 2, rtc_count, RTC_COUNT, 50, "8 RTC periodic interrupts"
        mov al, [c_and]
        and al, RTC_C_IRQF | RTC_C_PF
        CHECK8 3, al, RTC_C_IRQF | RTC_C_PF     ; in every handler call
        mov al, [isr_and]
        CHECK8 4, al, 0x05              ; bit 0: slave IRQ 8; bit 2: master IRQ 2
        PRINTLN "  8 interrupts: status C 0xc0 (IRQF, PF) each time, IRQ 8 and IRQ 2 in service"

        WAIT_TICKS 3                    ; 20+ ms: ~20 periods
        ; The handler turned PIE off at the 8th. One more tick may already have been
        ; latched in the PIC's IRR before that write (a slow, emulated CPU makes the
        ; window wide), and it is then delivered after the EOI, as on hardware; more
        ; than that would mean PIE off did not stop the interrupts.
        mov eax, [rtc_count]
        sub eax, RTC_COUNT
        cmp eax, 1
        ja .too_many
        xor eax, eax
.too_many:
        CHECK32 5, eax, 0               ; at most one latched tick after PIE off
        CMOS_READ RTC_REG_B
        and al, RTC_B_PIE
        CHECK8 6, al, 0
        CMOS_READ RTC_REG_C             ; PF may be set again (QEMU: not)
        and al, RTC_C_IRQF
        CHECK8 7, al, 0
        PIC_READ_ISR PIC_S_CMD
        CHECK8 8, al, 0
        PIC_READ_ISR PIC_M_CMD
        CHECK8 9, al, 0
        PRINTLN "  PIE off: no more interrupts, IRQF clear"

        mov eax, [pic_spurious]
        test eax, eax
        jz .pass
        PRINT "  (8259A spurious interrupts: "
        PRINT_DEC eax
        PRINTLN ")"
.pass:  TEST_PASS

; IRQ 8: acknowledge the RTC by reading status C (noted), note the slave's
; and master's ISR, turn PIE off at the 8th, EOI to the slave and the master.
; (Main code touches the CMOS only with interrupts off: the index register
; is shared.)
rtc_handler:
        push ax
        push dx
        inc dword [rtc_count]
        CMOS_READ RTC_REG_C
        and [c_and], al
        PIC_READ_ISR PIC_S_CMD
        and al, 0x01
        mov dl, al
        PIC_READ_ISR PIC_M_CMD
        and al, 0x04
        or al, dl
        and [isr_and], al
        cmp dword [rtc_count], RTC_COUNT
        jb .eoi
        CMOS_READ RTC_REG_B
        and al, ~RTC_B_PIE & 0xFF
        mov ah, al
        CMOS_WRITE RTC_REG_B, ah
.eoi:   mov al, OCW2_EOI
        out PIC_S_CMD, al
        out PIC_M_CMD, al
        pop dx
        pop ax
        iret

        align 4
rtc_count:      dd 0
c_and:          db 0xFF
isr_and:        db 0xFF
