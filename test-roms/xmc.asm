; xmc.asm - cross-modifying code: one CPU patches code that another runs.
;
; Run with 2 vCPUs (janus --smp 2, QEMU -smp 2). In 32-bit protected mode the
; BSP starts the AP (INIT, SIPI) with PIT channel 0 at 1 kHz as the watchdog
; that bounds every wait. The AP calls three small functions on a page of
; their own, each `mov eax, imm32; ret`, in loops that count their runs, and
; the BSP rewrites them once the AP has run each 1000 times (long enough for
; any translator to have compiled them):
;   1. the BSP stores a new immediate, then sets a flag; the AP, seeing the
;      flag, serialises (CPUID) and calls the function again: it must return
;      the new immediate (Intel SDM vol. 3, 9.1.3 "Handling cross-modifying
;      code");
;   2. the BSP stores a new immediate, then sends the AP an IPI; the AP,
;      seeing its handler's count move, serialises and must see the new code;
;   3. what Linux's text_poke_bp does: the BSP writes INT3 over the first
;      byte, waits until the AP has taken that breakpoint 100 times (its #BP
;      handler stands in for the instruction while the INT3 is there), then
;      writes the new immediate behind it and the opcode back. The AP's
;      handler, finding the INT3 gone, backs up to run the instruction that is
;      there now (as Linux's kprobe handler does): the new one. A CPU that
;      kept running a stale copy with the INT3 would loop in the handler
;      forever; here the BSP's wait times out instead.
;
; Expected outcome: exit status 0; output
;   xmc: cross-modifying code between two CPUs
;     store, flag, CPUID on the other CPU: it runs the new code
;     store, IPI, CPUID on the other CPU: it runs the new code
;     INT3 over the first byte, then the new instruction: the other CPU backs up onto it
;   xmc: PASS
; A failure prints "xmc: FAIL check N: ..." and exits with status N.

%define TEST_NAME "xmc"
%include "janus.inc"
%include "irq.inc"

WD_PIT_COUNT    equ 1193            ; watchdog: 1 kHz
IPI_VEC         equ 0x52
AP_STACK        equ 0x2800          ; the AP's stack top (below the BSP's)
RUNS            equ 1000
SIPI_VECTOR     equ (ap_trampoline - janus_entry + JANUS_LOAD_ADDR) >> 12

main:
        PRINTLN "xmc: cross-modifying code between two CPUs"
        ENTER_PM32
        IRQ_INIT
        call lapic_enable
        PIC_INIT 0xFE, 0xFF             ; only IRQ 0: the watchdog
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SET_VECTOR IPI_VEC, ipi_handler
        SET_VECTOR 3, bp_handler

        SEND_IPI 1, 0, 0x000C4500       ; INIT, assert, all excluding self
        ICR_WAIT 2
        WAIT_TICKS 11                   ; 10 ms
        SEND_IPI 3, 0, 0x000C4600 | SIPI_VECTOR
        ICR_WAIT 4

;--- 1: a store, then a flag --------------------------------------------------------
        WAIT_GE 5, runs1, RUNS, 2000, "the AP running function 1"
        mov dword [site1 + 1], 2
        mov dword [flag1], 1
        WAIT_GE 6, phase, 2, 2000, "the AP past function 1"
        mov eax, [seen1]
        CHECK32 7, eax, 2
        PRINTLN "  store, flag, CPUID on the other CPU: it runs the new code"

;--- 2: a store, then an IPI ---------------------------------------------------------
        WAIT_GE 8, runs2, RUNS, 2000, "the AP running function 2"
        mov dword [site2 + 1], 2
        SEND_IPI 9, 0, 0x000C0000 | IPI_VEC ; fixed, all excluding self
        ICR_WAIT 10
        WAIT_GE 11, phase, 3, 2000, "the AP past function 2"
        mov eax, [seen2]
        CHECK32 12, eax, 2
        PRINTLN "  store, IPI, CPUID on the other CPU: it runs the new code"

;--- 3: INT3 over the first byte, then the new instruction ---------------------------
        WAIT_GE 13, runs3, RUNS, 2000, "the AP running function 3"
        mov byte [site3], 0xCC
        WAIT_GE 14, bp_count, 100, 2000, "the AP taking the INT3 100 times"
        mov dword [site3 + 1], 4
        mov byte [site3], 0xB8          ; mov eax, 4
        WAIT_GE 15, phase, 4, 2000, "the AP running the new function 3 (it backed up over the removed INT3)"
        PRINTLN "  INT3 over the first byte, then the new instruction: the other CPU backs up onto it"
        TEST_PASS

; The AP's IPI: counted.
ipi_handler:
        inc dword [ipi_count]
        LAPIC_WR APIC_EOI, 0
        IRQ_RETURN

; The AP's breakpoint in function 3: the pushed EIP is just past the INT3. While the
; INT3 is there, stand in for the instruction (EAX = 3, on to the RET); once it is
; gone, back up onto the instruction there now.
bp_handler:
        inc dword [bp_count]
        cmp byte [site3], 0xCC
        jne .gone
        mov eax, 3
        mov dword [esp], site3 + 5
        IRQ_RETURN
.gone:  mov dword [esp], site3
        IRQ_RETURN

;--- the application processor --------------------------------------------------------
        bits 16
ap_entry16:
        AP_ENTER_PM32
        mov esp, AP_STACK
        LAPIC_WR APIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR
        sti

.f1:    call site1
        inc dword [runs1]
        cmp dword [flag1], 0
        je .f1
        xor eax, eax
        cpuid                           ; serialise
        call site1
        mov [seen1], eax
        mov dword [phase], 2

.f2:    call site2
        inc dword [runs2]
        cmp dword [ipi_count], 0
        je .f2
        xor eax, eax
        cpuid
        call site2
        mov [seen2], eax
        mov dword [phase], 3

.f3:    call site3
        inc dword [runs3]
        cmp eax, 4
        jne .f3
        mov dword [phase], 4
.park:  cli
        hlt
        jmp .park

        AP_TRAMPOLINE                   ; the page the start-up IPI names

        bits 32
; The functions the BSP rewrites, on a page of their own.
        times (0x1000 - (($ - $$ + JANUS_LOAD_ADDR) & 0xFFF)) & 0xFFF db 0
site1:  mov eax, 1
        ret
site2:  mov eax, 1
        ret
site3:  mov eax, 3
        ret

        times (0x1000 - (($ - $$ + JANUS_LOAD_ADDR) & 0xFFF)) & 0xFFF db 0
        align 4
phase:          dd 1
flag1:          dd 0
seen1:          dd 0
seen2:          dd 0
runs1:          dd 0
runs2:          dd 0
runs3:          dd 0
ipi_count:      dd 0
bp_count:       dd 0
