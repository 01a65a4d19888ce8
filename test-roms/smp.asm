; smp.asm - start the application processors with INIT and SIPI; IPIs.
;
; Run with 4 vCPUs (janus --smp 4, QEMU -smp 4). In 32-bit protected mode
; the bootstrap processor (IA32_APIC_BASE.BSP set) enables its local APIC;
; the 8259A pair is masked except IRQ 0, PIT channel 0 at 1 kHz through
; LINT0 (ExtINT): the watchdog that times the start-up delays and bounds the
; waits. Then:
;   * a fixed self-IPI with the "self" shorthand, and one to its own APIC ID
;     (physical destination), each arrives;
;   * INIT (all excluding self), 10 ms, SIPI, 1 ms, SIPI, the start-up
;     vector naming the 4 KiB-aligned trampoline page inside this image;
;   * each AP runs the trampoline in real mode (CS = vector << 8, IP = 0),
;     switches to protected mode, takes a stack slot (lock xadd), reads its
;     APIC ID (0xFEE00020 >> 24) and IA32_APIC_BASE, prints "AP <id> up"
;     under a spin lock (lock xchg), counts itself (lock inc), sends a fixed
;     IPI to the BSP to wake it, and halts (cli; hlt);
;   * the BSP waits (halting, bounded: 2 s) for 3 APs, waits 20 ms more and
;     checks that exactly 3 came up (a second SIPI must not restart a
;     running AP), that their APIC IDs differ from each other and from the
;     BSP's, that none has IA32_APIC_BASE.BSP set, and that their IPIs woke
;     it. CPUID.1:EBX[23:16] (logical processors per package) is printed,
;     not checked: the expectation is fixed at 4 vCPUs.
;
; Expected outcome: exit status 0; output (the AP lines in any order)
;   smp: INIT/SIPI start-up of the application processors, IPIs
;     BSP: APIC id 0, CPUID.1:EBX[23:16] = 4
;     self-IPI (shorthand self) and self-IPI by APIC id: delivered
;     INIT, SIPI, SIPI to all excluding self (start-up vector 0x..)
;   AP 1 up
;   AP 2 up
;   AP 3 up
;     APs up: 3 (expected 3)
;     the APs' APIC ids are distinct, none is the BSP's; their IPIs woke the BSP
;   smp: PASS
; A failure prints "smp: FAIL check N: ..." and exits with status N.

%define TEST_NAME "smp"
%include "janus.inc"
%include "irq.inc"

EXPECTED_APS    equ 3               ; 4 vCPUs
SELF_VEC        equ 0x50
WAKE_VEC        equ 0x51
AP_MAX          equ 16              ; AP stack slots
AP_STACKS       equ 0x2000          ; AP_MAX x 1 KiB, below the BSP's stack
WD_PIT_COUNT    equ 1193            ; watchdog: 1 kHz
SIPI_VECTOR     equ (ap_trampoline - janus_entry + JANUS_LOAD_ADDR) >> 12

main:
        PRINTLN "smp: INIT/SIPI start-up of the application processors, IPIs"
        ENTER_PM32
        IRQ_INIT
        mov ecx, MSR_APIC_BASE
        rdmsr
        and eax, APIC_BASE_BSP
        CHECK32 1, eax, APIC_BASE_BSP   ; we are the BSP
        call lapic_enable
        LAPIC_RD APIC_ID
        shr eax, 24
        mov [bsp_id], eax
        mov ebx, eax
        mov eax, 1
        cpuid
        shr ebx, 16
        movzx ebx, bl
        PRINT "  BSP: APIC id "
        PRINT_DEC [bsp_id]
        PRINT ", CPUID.1:EBX[23:16] = "
        PRINT_DEC ebx
        NEWLINE

        PIC_INIT 0xFE, 0xFF             ; only IRQ 0: the watchdog
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SET_VECTOR SELF_VEC, self_handler
        SET_VECTOR WAKE_VEC, wake_handler

;--- IPIs to itself -------------------------------------------------------------
        SEND_IPI 2, 0, ICR_SELF | SELF_VEC
        WAIT_GE 3, self_count, 1, 20, "the self-IPI (shorthand self)"
        mov eax, [bsp_id]
        shl eax, 24
        SEND_IPI 4, eax, SELF_VEC       ; physical, to our own APIC ID
        WAIT_GE 5, self_count, 2, 20, "the self-IPI by APIC id"
        ICR_WAIT 6
        PRINTLN "  self-IPI (shorthand self) and self-IPI by APIC id: delivered"

;--- INIT, SIPI, SIPI -------------------------------------------------------------
        PRINT "  INIT, SIPI, SIPI to all excluding self (start-up vector 0x"
        PRINT_HEX 8, SIPI_VECTOR
        PRINTLN ")"
        SEND_IPI 7, 0, 0x000C4500       ; INIT, assert, all excluding self
        ICR_WAIT 8
        WAIT_TICKS 11                   ; 10 ms
        SEND_IPI 9, 0, 0x000C4600 | SIPI_VECTOR ; start-up
        ICR_WAIT 10
        WAIT_TICKS 2                    ; >= 1 ms (200 us would do)
        SEND_IPI 11, 0, 0x000C4600 | SIPI_VECTOR
        ICR_WAIT 12
        WAIT_GE 13, ap_count, EXPECTED_APS, 2000, "3 APs up"
        WAIT_TICKS 20                   ; any late or restarted AP shows up
        call lock_take
        mov eax, [ap_count]
        PRINT "  APs up: "
        PRINT_DEC eax
        PRINT " (expected "
        PRINT_DEC EXPECTED_APS
        PRINTLN ")"
        call lock_drop
        CHECK32 14, eax, EXPECTED_APS

        ; The APs' records: IDs distinct and not the BSP's, no BSP flag.
        xor esi, esi
.each:  mov eax, [ap_ids + esi * 4]
        cmp eax, [bsp_id]
        CHECK_CC 15, ne
        xor edi, edi
.other: cmp edi, esi
        jae .base
        cmp eax, [ap_ids + edi * 4]
        CHECK_CC 16, ne
        inc edi
        jmp .other
.base:  mov eax, [ap_bases + esi * 4]
        and eax, APIC_BASE_BSP
        CHECK32 17, eax, 0
        inc esi
        cmp esi, EXPECTED_APS
        jb .each
        mov eax, [wake_count]           ; (same-vector IPIs may merge in IRR)
        test eax, eax
        CHECK_CC 18, nz
        PRINTLN "  the APs' APIC ids are distinct, none is the BSP's; their IPIs woke the BSP"
        TEST_PASS

;--- the spin lock (lock xchg) -----------------------------------------------------
lock_take:
        push eax
.spin:  mov al, 1
        lock xchg [print_lock], al
        test al, al
        jz .got
        pause
        jmp .spin
.got:   pop eax
        ret
lock_drop:
        mov byte [print_lock], 0
        ret

self_handler:
        inc dword [self_count]
        LAPIC_WR APIC_EOI, 0
        IRQ_RETURN

wake_handler:
        inc dword [wake_count]
        LAPIC_WR APIC_EOI, 0
        IRQ_RETURN

;--- the application processors ---------------------------------------------------
        bits 16
ap_entry16:
        AP_ENTER_PM32
        mov eax, 1
        lock xadd [ap_slot], eax        ; EAX = this AP's slot
        cmp eax, AP_MAX
        jae ap_park
        mov ebp, eax
        lea esp, [eax + 1]
        shl esp, 10
        add esp, AP_STACKS              ; the top of its 1 KiB slot
        mov ecx, MSR_APIC_BASE
        rdmsr
        mov [ap_bases + ebp * 4], eax
        LAPIC_RD APIC_ID
        shr eax, 24
        mov [ap_ids + ebp * 4], eax
        mov ebx, eax
        LAPIC_WR APIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR
        call lock_take
        PRINT "AP "
        PRINT_DEC ebx
        PRINTLN " up"
        lock inc dword [ap_count]
        call lock_drop
        mov ecx, 100000                 ; wake the BSP (bounded ICR wait)
.idle:  LAPIC_RD APIC_ICR_LO
        test eax, ICR_BUSY
        jz .send
        pause
        dec ecx
        jnz .idle
.send:  mov eax, [bsp_id]
        shl eax, 24
        LAPIC_WR APIC_ICR_HI, eax
        LAPIC_WR APIC_ICR_LO, WAKE_VEC  ; fixed, physical
ap_park:
        cli
        hlt
        jmp ap_park

        AP_TRAMPOLINE                   ; the page the start-up IPI names

        align 4
bsp_id:         dd 0
ap_count:       dd 0
ap_slot:        dd 0
self_count:     dd 0
wake_count:     dd 0
ap_ids:         times AP_MAX dd 0xFFFFFFFF
ap_bases:       times AP_MAX dd 0
print_lock:     db 0
