; ioapic_uart.asm - the UART's interrupt (IRQ 4) through the IOAPIC.
;
; In 32-bit protected mode, with the 8259A pair masked and LINT0 masked (no
; virtual wire): the local APIC timer is the watchdog bounding the waits.
;   * IOAPIC at 0xFEC00000 (IOREGSEL +0x00, IOWIN +0x10): the version
;     register (1) says 24 entries (max redirection entry 23); entry 4
;     (registers 0x18/0x19) is masked at reset; programmed as edge,
;     active high, physical, fixed, vector 0x64, to the BSP's APIC ID, it
;     reads back;
;   * the UART (FIFOs off, MCR = DTR | RTS | OUT2): with IER = 0 IIR reads
;     0x01; enabling the THR-empty interrupt (IER bit 1) raises IRQ 4 at once
;     and the handler reads IIR = 0x02, then EOIs the LAPIC; reading IIR
;     cleared it, so there is no second one;
;   * entry 4 level-triggered and masked: the pending THR-empty interrupt is
;     not delivered; unmasked, it is, with the entry's remote IRR set and the
;     vector's TMR bit set in the handler, and remote IRR clear after the EOI
;     (the LAPIC's EOI broadcast);
;   * loopback (MCR bit 4), edge-triggered again: a byte written to THR comes
;     back as a received-data interrupt (IER bit 0), IIR = 0x04 in the
;     handler, and the byte reads back from RBR.
;
; Expected outcome: exit status 0; output
;   ioapic_uart: UART interrupts (IRQ 4) through the IOAPIC
;     IOAPIC: id 0x.., version 0x00170020: 24 redirection entries
;     entry 4: edge, vector 0x64, to APIC id 0
;     THR empty (IER bit 1): one interrupt, IIR 0x02
;     level-triggered: held while masked; remote IRR set until the EOI
;     loopback (MCR bit 4): received data (IER bit 0), IIR 0x04, byte 0x5a
;   ioapic_uart: PASS
; A failure prints "ioapic_uart: FAIL check N: ..." and exits with status N.

%define TEST_NAME "ioapic_uart"
%include "janus.inc"
%include "irq.inc"

UART_VEC        equ 0x64
UART_PIN        equ 4               ; ISA IRQ 4 = IOAPIC pin 4
RTE_LO          equ IOAPIC_REDIR + 2 * UART_PIN
RTE_HI          equ RTE_LO + 1
WD_PERIOD       equ 10000000        ; LAPIC timer watchdog: 10 ms at 1 GHz
UART_IER        equ COM1 + 1
UART_IIR        equ COM1 + 2        ; (read) / FCR (write)
UART_MCR        equ COM1 + 4
MCR_NORMAL      equ 0x0B            ; DTR, RTS, OUT2 (the IRQ enable on a PC)
MCR_LOOP        equ 0x10
TEST_BYTE       equ 0x5A

; OUTB port, value (clobbers AL, DX)
%macro OUTB 2
        mov dx, %1
        mov al, %2
        out dx, al
%endmacro
; INB port: into AL (clobbers DX)
%macro INB 1
        mov dx, %1
        in al, dx
%endmacro

main:
        PRINTLN "ioapic_uart: UART interrupts (IRQ 4) through the IOAPIC"
        ENTER_PM32
        IRQ_INIT
        call lapic_enable
        LAPIC_WR APIC_LVT_LINT0, LVT_MASKED | 0x700     ; no virtual wire
        PIC_INIT 0xFF, 0xFF             ; the 8259A pair: all masked
        PIC_SPURIOUS_HANDLERS
        WD_START_LAPIC WD_PERIOD
        SET_VECTOR UART_VEC, uart_handler
        LAPIC_RD APIC_ID
        shr eax, 24
        mov [bsp_id], eax

;--- the IOAPIC's registers -------------------------------------------------------
        IOAPIC_RD IOAPIC_REG_ID
        mov ebx, eax
        IOAPIC_RD IOAPIC_REG_VER
        mov esi, eax
        PRINT "  IOAPIC: id 0x"
        shr ebx, 24
        PRINT_HEX 8, bl
        PRINT ", version 0x"
        PRINT_HEX 32, esi
        mov eax, esi
        shr eax, 16
        movzx eax, al
        inc eax
        PRINT ": "
        PRINT_DEC eax
        PRINTLN " redirection entries"
        shr esi, 16
        and esi, 0xFF
        CHECK32 1, esi, 23              ; max redirection entry
        IOAPIC_RD RTE_LO
        and eax, RTE_MASKED
        CHECK32 2, eax, RTE_MASKED      ; masked at reset
        mov eax, [bsp_id]
        shl eax, 24
        IOAPIC_WR RTE_HI, eax           ; destination first, then unmask
        IOAPIC_WR RTE_LO, UART_VEC      ; edge, high, physical, fixed
        IOAPIC_RD RTE_LO
        and eax, 0x1FFFF                ; vector .. mask (incl. status bits)
        CHECK32 3, eax, UART_VEC
        IOAPIC_RD RTE_HI
        shr eax, 24
        CHECK32 4, eax, [bsp_id]
        PRINT "  entry 4: edge, vector 0x64, to APIC id "
        PRINT_DEC [bsp_id]
        NEWLINE

;--- THR empty, edge-triggered ----------------------------------------------------
        call uart_idle                  ; the last byte printed has gone
        OUTB UART_IIR, 0                ; FCR: FIFOs off (IIR bits 7:6 = 0)
        OUTB UART_MCR, MCR_NORMAL
        OUTB UART_IER, 0
        INB UART_IIR
        CHECK8 5, al, 0x01              ; nothing pending
        mov dword [uart_count], 0
        OUTB UART_IER, 0x02             ; THR empty: pending at once
        WAIT_GE 6, uart_count, 1, 20, "the THR-empty interrupt"
        WAIT_TICKS 2                    ; (the handler set IER = 0)
        mov eax, [uart_count]
        CHECK32 7, eax, 1
        mov al, [uart_iir]
        CHECK8 8, al, 0x02
        PRINTLN "  THR empty (IER bit 1): one interrupt, IIR 0x02"

;--- level-triggered: mask, remote IRR, EOI broadcast ------------------------------
        call uart_idle
        cli
        mov dword [uart_count], 0
        IOAPIC_WR RTE_LO, RTE_MASKED | RTE_LEVEL | UART_VEC
        OUTB UART_IER, 0x02             ; IRQ 4 high, but the entry is masked
        WAIT_TICKS 2
        mov eax, [uart_count]
        CHECK32 9, eax, 0
        IOAPIC_WR RTE_LO, RTE_LEVEL | UART_VEC  ; unmask: the line is still
                                        ; high, so it is delivered now
        WAIT_GE 10, uart_count, 1, 20, "the level-triggered interrupt after unmasking"
        mov al, [uart_iir]
        CHECK8 11, al, 0x02
        mov eax, [rte_seen]
        and eax, RTE_REMOTE_IRR
        CHECK32 12, eax, RTE_REMOTE_IRR ; remote IRR while in service
        mov eax, [tmr_seen]
        and eax, APIC_BIT_FOR(UART_VEC)
        CHECK32 13, eax, APIC_BIT_FOR(UART_VEC) ; TMR: level
        IOAPIC_RD RTE_LO
        and eax, RTE_REMOTE_IRR
        CHECK32 14, eax, 0              ; cleared by the EOI broadcast
        WAIT_TICKS 2
        mov eax, [uart_count]
        CHECK32 15, eax, 1
        IOAPIC_WR RTE_LO, UART_VEC      ; edge again
        PRINTLN "  level-triggered: held while masked; remote IRR set until the EOI"

;--- loopback: received data --------------------------------------------------------
        call uart_idle
        cli
        OUTB UART_MCR, MCR_NORMAL | MCR_LOOP
        mov ecx, 32                     ; drain the receiver
.drain: INB COM1_LSR
        test al, 0x01
        jz .empty
        INB COM1
        dec ecx
        jnz .drain
.empty: mov dword [uart_count], 0
        mov byte [uart_rx], 0
        OUTB UART_IER, 0x01             ; received data available
        INB UART_IIR
        mov bl, al
        OUTB COM1, TEST_BYTE            ; loops back to the receiver
        WAIT_GE 16, uart_count, 1, 20, "the received-data interrupt"
        OUTB UART_MCR, MCR_NORMAL       ; (leave loopback before printing)
        CHECK8 17, bl, 0x01             ; nothing pending before the byte
        mov al, [uart_iir]
        CHECK8 18, al, 0x04
        mov al, [uart_rx]
        CHECK8 19, al, TEST_BYTE
        mov eax, [uart_count]
        CHECK32 20, eax, 1
        PRINTLN "  loopback (MCR bit 4): received data (IER bit 0), IIR 0x04, byte 0x5a"

        mov eax, [lapic_spurious]
        add eax, [pic_spurious]
        test eax, eax
        jz .pass
        PRINT "  (spurious interrupts: "
        PRINT_DEC eax
        PRINTLN ")"
.pass:  TEST_PASS

; uart_idle: wait (bounded) for the transmitter to be empty (LSR bit 6).
uart_idle:
        push eax
        push ecx
        push edx
        mov ecx, 1000000
.poll:  INB COM1_LSR
        test al, 0x40
        jnz .done
        dec ecx
        jnz .poll
.done:  pop edx
        pop ecx
        pop eax
        ret

; IRQ 4: note IIR (reading it clears a THR-empty source), read RBR for
; received data, note the IOAPIC entry and the TMR, disable the UART's
; interrupts (IER = 0), EOI.
uart_handler:
        push eax
        push edx
        inc dword [uart_count]
        INB UART_IIR
        mov [uart_iir], al
        and al, 0x0F
        cmp al, 0x04
        jne .norx
        INB COM1
        mov [uart_rx], al
.norx:  IOAPIC_RD RTE_LO
        mov [rte_seen], eax
        LAPIC_RD APIC_TMR + APIC_REG_FOR(UART_VEC)
        mov [tmr_seen], eax
        OUTB UART_IER, 0
        LAPIC_WR APIC_EOI, 0
        pop edx
        pop eax
        IRQ_RETURN

        align 4
bsp_id:         dd 0
uart_count:     dd 0
rte_seen:       dd 0
tmr_seen:       dd 0
uart_iir:       db 0
uart_rx:        db 0
