; ap_idle.asm - an application processor parked with interrupts off (cli;
; hlt) while the bootstrap processor waits 3 s: the host should see both idle.
;
; Run with 2 vCPUs (janus --smp 2). In 32-bit protected mode the BSP enables
; its local APIC and a 100 Hz PIT watchdog (IRQ 0 through LINT0), starts the
; AP with INIT, SIPI (bounded wait: 1 s), and waits 300 ticks halting with
; interrupts on (sti; hlt). The AP enters protected mode, counts itself and
; halts with interrupts off for good: only NMI, INIT or SMI could wake it.
; The test measures janus's CPU time, which must stay far below the 3 s.
;
; Expected outcome: exit status 0; output
;   ap_idle: an AP in cli; hlt while the BSP waits 3 s
;   ap_idle: PASS
; A failure prints "ap_idle: FAIL check N: ..." and exits with status N.

%define TEST_NAME "ap_idle"
%include "janus.inc"
%include "irq.inc"

WD_PIT_COUNT    equ 11932           ; watchdog: 100 Hz
SIPI_VECTOR     equ (ap_trampoline - janus_entry + JANUS_LOAD_ADDR) >> 12

main:
        PRINTLN "ap_idle: an AP in cli; hlt while the BSP waits 3 s"
        ENTER_PM32
        IRQ_INIT
        call lapic_enable
        PIC_INIT 0xFE, 0xFF             ; only IRQ 0: the watchdog
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SEND_IPI 1, 0, 0x000C4500       ; INIT, assert, all excluding self
        ICR_WAIT 2
        SEND_IPI 3, 0, 0x000C4600 | SIPI_VECTOR ; start-up
        ICR_WAIT 4
        WAIT_GE 5, ap_count, 1, 100, "the AP started"
        WAIT_TICKS 300
        TEST_PASS

;--- the application processor ------------------------------------------------------
        bits 16
ap_entry16:
        AP_ENTER_PM32
        lock inc dword [ap_count]
.park:  cli
        hlt
        jmp .park

        AP_TRAMPOLINE                   ; the page the start-up IPI names

        align 4
ap_count:       dd 0
