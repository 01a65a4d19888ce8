; pit_pic.asm - 8254 PIT timer interrupts through the 8259A PIC pair.
;
; In 32-bit protected mode: programs the 8259A pair (ICW1-4, vector bases
; 0x20/0x28) and checks its mask register; the local APIC is put in virtual
; wire mode (LINT0 = ExtINT) and its timer serves as the watchdog that
; bounds every wait (10 ms ticks with a 1 GHz APIC timer clock). Then:
;   * PIT channel 0, mode 0 (one-shot): the read-back status (OUT low, mode
;     0), the count decreasing through the counter-latch command and through
;     the read-back command, exactly one IRQ 0 at terminal count, then OUT
;     high in the read-back status;
;   * mode 2 (rate generator), count 1193 (~1 kHz): 10 interrupts, each
;     with IRQ 0 in service (ISR read through OCW3) and a non-specific EOI;
;     after the handler masks IRQ 0, it is not delivered while the PIT keeps
;     requesting, the request waits in IRR (OCW3 read) and is delivered once
;     IRQ 0 is unmasked;
;   * port 0x61: channel 2 in mode 0 drives OUT2 (bit 5) low at the control
;     word; with the gate (bit 0) high it goes high at terminal count;
;     rewriting the control word drives it low again and a short count
;     rises again (polled, as calibration loops do). Whether the count was
;     held while the gate was low (the 8254 holds it; QEMU's and KVM's PIT
;     models do not) is printed, not checked.
;
; Expected outcome: exit status 0; output
;   pit_pic: 8254 PIT and 8259A PIC
;     PIC: ICW1-4 (vector bases 0x20/0x28), IMR read-back
;     PIT channel 0, mode 0 (one-shot): count 0x.... -> 0x.... (latch) -> 0x.... (read-back)
;     mode 0: one IRQ 0 at terminal count, then OUT high
;     PIT channel 0, mode 2 (rate generator, count 1193): 10 interrupts
;     masked IRQ 0: pending in IRR, not delivered; delivered after unmasking
;     gate low: channel 2 held its count (as the 8254)
;     port 0x61: channel 2 OUT2 (bit 5) follows mode 0 and the gate (bit 0)
;   pit_pic: PASS
; (under QEMU or KVM's in-kernel PIT the gate line reads "gate low: channel
; 2 counted anyway (as QEMU's and KVM's PIT)").
; A failure prints "pit_pic: FAIL check N: ..." and exits with status N.

%define TEST_NAME "pit_pic"
%include "janus.inc"
%include "irq.inc"

ONESHOT_COUNT   equ 23864           ; mode 0: 20 ms
RATE_COUNT      equ 1193            ; mode 2: 1.000 kHz
WD_PERIOD       equ 10000000        ; LAPIC timer watchdog: 10 ms at 1 GHz

main:
        PRINTLN "pit_pic: 8254 PIT and 8259A PIC"
        ENTER_PM32
        IRQ_INIT
        call lapic_enable               ; virtual wire mode, and the watchdog
        PIC_INIT 0xFF, 0xFF             ; everything masked
        PIC_SPURIOUS_HANDLERS
        WD_START_LAPIC WD_PERIOD
        SET_VECTOR PIC_M_BASE, irq0_handler

;--- the PIC's registers ---------------------------------------------------------
        PRINTLN "  PIC: ICW1-4 (vector bases 0x20/0x28), IMR read-back"
        in al, PIC_M_DATA
        CHECK8 1, al, 0xFF
        mov al, 0xFE
        out PIC_M_DATA, al
        in al, PIC_M_DATA
        CHECK8 2, al, 0xFE
        in al, PIC_S_DATA
        CHECK8 3, al, 0xFF
        mov al, 0xFF
        out PIC_M_DATA, al
        PIC_READ_ISR PIC_M_CMD
        CHECK8 4, al, 0                 ; nothing in service

;--- channel 0, mode 0: one-shot -------------------------------------------------
        PIT_PROGRAM 0, 0, ONESHOT_COUNT
        mov al, 0xE2                    ; read-back: status only, channel 0
        out PIT_CMD, al
        in al, PIT_CH0
        and al, 0xBF                    ; (null count depends on the clock edge)
        CHECK8 5, al, 0x30              ; OUT low, LSB/MSB, mode 0, binary

        PIT_LATCH 0
        movzx ebx, ax                   ; first count
        test bx, bx
        CHECK_CC 6, nz
        cmp bx, ONESHOT_COUNT
        CHECK_CC 7, be
        mov ecx, 1000000                ; poll until the count moves (< 1 us)
.latch: PIT_LATCH 0
        cmp ax, bx
        jne .moved
        dec ecx
        jnz .latch
.moved: cmp ax, bx
        CHECK_CC 8, b                   ; decreasing
        movzx esi, ax                   ; second count
        mov ecx, 1000000
.rdbk:  mov al, 0xD2                    ; read-back: count only, channel 0
        out PIT_CMD, al
        in al, PIT_CH0
        mov ah, al
        in al, PIT_CH0
        xchg al, ah
        cmp ax, si
        jne .moved2
        dec ecx
        jnz .rdbk
.moved2:
        cmp ax, si
        CHECK_CC 9, b
        PRINT "  PIT channel 0, mode 0 (one-shot): count 0x"
        PRINT_HEX 16, bx
        PRINT " -> 0x"
        PRINT_HEX 16, si
        PRINT " (latch) -> 0x"
        PRINT_HEX 16, ax
        PRINTLN " (read-back)"

        ; A request already in IRR (QEMU's PIT runs mode 3 from power-on, so
        ; an edge may have come before channel 0 was reprogrammed) is
        ; delivered too; OUT stays low until terminal count, so nothing else
        ; can be pending. On a slow CPU (KVM nested in QEMU's TCG) the
        ; terminal count itself may already be in IRR: then one interrupt
        ; stands for both, so 1 to IRR + 1 interrupts are right.
        PIC_READ_IRR PIC_M_CMD
        and eax, 1
        lea ebx, [eax + 1]              ; interrupts to expect at most
        mov dword [irq0_count], 0
        mov dword [irq0_limit], 0xFFFFFFFF
        mov al, 0xFE
        out PIC_M_DATA, al              ; unmask IRQ 0
        WAIT_GE 10, irq0_count, 1, 20, "the mode 0 terminal-count interrupt"
        WAIT_TICKS 3                    ; 20-30 ms more: no second one
        mov eax, [irq0_count]
        cmp eax, ebx
        CHECK_CC 11, be
        mov al, 0xE2
        out PIT_CMD, al
        in al, PIT_CH0
        and al, 0x80
        CHECK8 12, al, 0x80             ; OUT high after terminal count
        PRINTLN "  mode 0: one IRQ 0 at terminal count, then OUT high"

;--- channel 0, mode 2: rate generator -------------------------------------------
        cli
        mov al, 0xFF
        out PIC_M_DATA, al
        mov dword [irq0_count], 0
        mov dword [irq0_limit], 10      ; the handler masks IRQ 0 at 10
        mov byte [isr_seen], 0
        PIT_PROGRAM 0, 2, RATE_COUNT
        mov al, 0xFE
        out PIC_M_DATA, al
        WAIT_GE 13, irq0_count, 10, 50, "10 IRQ 0 interrupts at 1 kHz"
        mov al, [isr_seen]
        CHECK8 14, al, 0x01             ; IRQ 0 was in service in the handler
        PRINTLN "  PIT channel 0, mode 2 (rate generator, count 1193): 10 interrupts"
        in al, PIC_M_DATA
        CHECK8 15, al, 0xFF             ; masked by the handler
        PIC_READ_ISR PIC_M_CMD
        CHECK8 16, al, 0                ; the EOI took it out of service

        WAIT_TICKS 2                    ; >= 10 ms, ~10 more PIT periods
        mov eax, [irq0_count]
        CHECK32 17, eax, 10             ; masked: not delivered
        PIC_READ_IRR PIC_M_CMD
        and al, 0x01
        CHECK8 18, al, 0x01             ; but requested
        mov dword [irq0_limit], 11
        mov al, 0xFE
        out PIC_M_DATA, al
        WAIT_GE 19, irq0_count, 11, 5, "IRQ 0 after unmasking"
        mov eax, [irq0_count]
        CHECK32 20, eax, 11
        PRINTLN "  masked IRQ 0: pending in IRR, not delivered; delivered after unmasking"

;--- port 0x61 and channel 2 -----------------------------------------------------
        in al, PORT_B
        and al, ~(PORT_B_GATE2 | PORT_B_SPEAKER) & 0x0F
        out PORT_B, al                  ; gate low, speaker off
        PIT_PROGRAM 2, 0, RATE_COUNT    ; 1 ms
        in al, PORT_B
        and al, PORT_B_OUT2
        CHECK8 21, al, 0                ; OUT2 low after the control word
        ; The 8254 holds a mode 0 count while GATE is low; the PIT models of
        ; QEMU and KVM (the in-kernel PIT) count regardless, so this is
        ; reported, not checked.
        WAIT_TICKS 2                    ; > 1 ms with the gate low
        in al, PORT_B
        test al, PORT_B_OUT2
        jnz .counted
        PRINTLN "  gate low: channel 2 held its count (as the 8254)"
        jmp .gate_on
.counted:
        PRINTLN "  gate low: channel 2 counted anyway (as QEMU's and KVM's PIT)"
.gate_on:
        in al, PORT_B
        or al, PORT_B_GATE2
        and al, 0x0F
        out PORT_B, al                  ; gate high
        WAIT_TICKS 2
        in al, PORT_B
        and al, PORT_B_OUT2
        CHECK8 22, al, PORT_B_OUT2      ; terminal count reached
        ; ~7 ms: long enough that OUT2 is still low when read back even on a
        ; slow host (KVM nested in QEMU's TCG, where one VM exit can take
        ; longer than the ~20 us a count of 24 would last).
        PIT_PROGRAM 2, 0, 0x2000
        in al, PORT_B
        and al, PORT_B_OUT2
        CHECK8 23, al, 0                ; the control word drove it low
        mov ecx, 10000000               ; > 7 ms even at 1 ns per instruction
.out2:  in al, PORT_B                   ; a calibration loop: poll for OUT2
        test al, PORT_B_OUT2
        jnz .high
        dec ecx
        jnz .out2
.high:  and al, PORT_B_OUT2
        CHECK8 24, al, PORT_B_OUT2
        in al, PORT_B
        and al, 0x0F & ~PORT_B_GATE2
        out PORT_B, al
        PRINTLN "  port 0x61: channel 2 OUT2 (bit 5) follows mode 0 and the gate (bit 0)"

        mov eax, [pic_spurious]
        test eax, eax
        jz .pass
        PRINT "  (8259A spurious interrupts: "
        PRINT_DEC eax
        PRINTLN ")"
.pass:  TEST_PASS

; IRQ 0: count, note the ISR as seen in the handler, mask IRQ 0 once the
; count reaches irq0_limit, non-specific EOI to the master.
irq0_handler:
        push eax
        inc dword [irq0_count]
        PIC_READ_ISR PIC_M_CMD
        or [isr_seen], al
        mov eax, [irq0_count]
        cmp eax, [irq0_limit]
        jb .eoi
        mov al, 0xFF
        out PIC_M_DATA, al
.eoi:   mov al, OCW2_EOI
        out PIC_M_CMD, al
        pop eax
        IRQ_RETURN

        align 4
irq0_count:     dd 0
irq0_limit:     dd 0xFFFFFFFF
isr_seen:       db 0
