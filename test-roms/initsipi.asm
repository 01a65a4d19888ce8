; initsipi.asm - INIT restarts a running application processor, many times.
;
; Run with 2 vCPUs (janus --smp 2). In 32-bit protected mode the bootstrap
; processor enables its local APIC and a 1 kHz PIT watchdog (IRQ 0 through
; LINT0), then ROUNDS times: INIT (all excluding self), SIPI, and waits
; (bounded: 1 s each) until the AP has counted one more start. The AP enters
; protected mode, counts itself (lock inc) and then does not wait for a SIPI:
; after an odd count it spins (pause loop), after an even one it halts with
; interrupts off (cli; hlt). Only INIT can restart it, as on hardware, where
; INIT puts any processor into wait-for-SIPI.
;
; Expected outcome: exit status 0; output
;   initsipi: INIT and SIPI to a running AP, 2000 rounds
;     AP starts: 2000 (expected 2000)
;   initsipi: PASS
; A failure prints "initsipi: FAIL check N: ..." and exits with status N.

%define TEST_NAME "initsipi"
%include "janus.inc"
%include "irq.inc"

ROUNDS          equ 2000
WD_PIT_COUNT    equ 1193            ; watchdog: 1 kHz
SIPI_VECTOR     equ (ap_trampoline - janus_entry + JANUS_LOAD_ADDR) >> 12

main:
        PRINTLN "initsipi: INIT and SIPI to a running AP, 2000 rounds"
        ENTER_PM32
        IRQ_INIT
        call lapic_enable
        PIC_INIT 0xFE, 0xFF             ; only IRQ 0: the watchdog
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        mov esi, 1                      ; the start we wait for
.round:
        SEND_IPI 1, 0, 0x000C4500       ; INIT, assert, all excluding self
        ICR_WAIT 2
        SEND_IPI 3, 0, 0x000C4600 | SIPI_VECTOR ; start-up
        ICR_WAIT 4
        WAIT_GE 5, ap_count, esi, 1000, "the AP restarted"
        inc esi
        cmp esi, ROUNDS
        jbe .round
        mov eax, [ap_count]
        PRINT "  AP starts: "
        PRINT_DEC eax
        PRINT " (expected "
        PRINT_DEC ROUNDS
        PRINTLN ")"
        CHECK32 6, eax, ROUNDS
        TEST_PASS

;--- the application processor ------------------------------------------------------
        bits 16
ap_entry16:
        AP_ENTER_PM32
        lock inc dword [ap_count]
        test dword [ap_count], 1
        jz .park
.spin:  pause                           ; running: only INIT stops it
        jmp .spin
.park:  cli
        hlt
        jmp .park

        AP_TRAMPOLINE                   ; the page the start-up IPI names

        align 4
ap_count:       dd 0
