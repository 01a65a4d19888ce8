; nmi.asm - non-maskable interrupts: NMI IPIs, the IOAPIC's NMI mode, NMI
; blocking until IRET, an NMI waking a processor halted with interrupts off.
;
; Run with 2 vCPUs (janus --smp 2); with one (CPUID.1:EBX[23:16] < 2) the
; parts that need the AP are skipped, so that the lockstep differ, which runs
; one vCPU, can check the others. In 32-bit protected mode the bootstrap
; processor enables its local APIC and a 1 kHz PIT watchdog (IRQ 0 through
; LINT0) that bounds the waits, installs an NMI handler (vector 2, an
; interrupt gate; it counts per APIC ID, records the EFLAGS and CS it
; interrupted and whether it was entered again before its IRETD) and starts
; the AP, which parks in `cli; hlt` and counts each time it leaves the HLT.
; Then, each NMI an IPI of delivery mode NMI (ICR bits 10:8 = 100b):
;   * shorthand self with IF = 0: the handler runs once, before any wait,
;     and the frame holds EFLAGS with IF = 0 and CS (no error code);
;   * from inside the handler, two more self-NMIs: neither runs the handler
;     again before its IRETD; after it exactly one is taken (one latched);
;   * physical destination (its own APIC ID) and logical destination (flat
;     model, its LDR bit): one each;
;   * physical destination APIC ID 1: the AP's handler runs, and the NMI
;     woke the AP out of `cli; hlt`;
;   * shorthand all including self: one each; all excluding self: the AP
;     only;
;   * the IOAPIC's NMI delivery mode: the RTC's periodic interrupt (IRQ 8)
;     on IOAPIC pin 8 as an NMI to the BSP wakes it out of `cli; hlt`;
;   * LINT0 in NMI mode: the 8259A's INTR rising (the watchdog's IRQ 0, not
;     acknowledged since LINT0 is no longer ExtINT) is one NMI.
; Handlers return with IRETD (not irq.inc's IRQ_RETURN): IRET is what ends
; the NMI blocking. Where KVM runs ring-0 code in its instruction emulator
; (kvm_pvm), janus's software fallback runs the protected-mode IRETD.
;
; Expected outcome: exit status 0; output
;   nmi: NMI IPIs, NMI blocking until IRET, the IOAPIC's NMI mode
;     AP up: parked in cli; hlt
;     self NMI with IF=0: taken once, EFLAGS.IF=0 and CS in the frame
;     two NMIs inside the handler: none nested, one taken after IRET
;     physical and logical destination: one each
;     NMI to the AP: taken, woke it from cli; hlt
;     all including self: one each; all excluding self: the AP only
;     IOAPIC pin 8 in NMI mode (RTC periodic): woke the BSP from cli; hlt
;     LINT0 in NMI mode: the PIC's INTR rising is one NMI
;   nmi: PASS
; A failure prints "nmi: FAIL check N: ..." and exits with status N.

%define TEST_NAME "nmi"
%include "janus.inc"
%include "irq.inc"

WD_PIT_COUNT    equ 1193            ; watchdog: 1 kHz
SIPI_VECTOR     equ (ap_trampoline - janus_entry + JANUS_LOAD_ADDR) >> 12
AP_STACK        equ 0x3000          ; the AP's stack top (IRQ_IDT ends at 0x1800)
ICR_NMI         equ 4 << 8          ; delivery mode NMI
ICR_LOGICAL     equ 1 << 11
ICR_ALL_INCL    equ 2 << 18
ICR_ALL_EXCL    equ 3 << 18
APIC_LDR        equ 0x0D0
APIC_DFR        equ 0x0E0
RTE_NMI         equ 4 << 8
RTC_PIN         equ 8
STATUS_A_1024HZ equ 0x26            ; divider 010 (32.768 kHz), rate 6

; SPIN_GE n, var, value, "what": poll with interrupts as they are (bounded,
; about 2 million rounds) until the dword `var` >= `value`; fail check n
; otherwise. Preserves registers except the flags.
%macro SPIN_GE 4
        JANUS_CLAIM_CHECK %1
        push eax
        push ecx
        mov ecx, 2000000
%%poll: mov eax, [%2]
        cmp eax, %3
        jae %%ok
        pause
        dec ecx
        jnz %%poll
        mov edx, %3
        JANUS_FAIL %1, 32, %4, " (timed out)"
%%ok:   pop ecx
        pop eax
%endmacro

; SETTLE: let anything still on its way arrive (a bounded spin).
%macro SETTLE 0
        push ecx
        mov ecx, 20000
%%spin: pause
        dec ecx
        jnz %%spin
        pop ecx
%endmacro

main:
        PRINTLN "nmi: NMI IPIs, NMI blocking until IRET, the IOAPIC's NMI mode"
        ENTER_PM32
        IRQ_INIT
        call lapic_enable
        PIC_INIT 0xFE, 0xFF             ; only IRQ 0: the watchdog
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SET_VECTOR 2, nmi_handler

;--- the AP: INIT, SIPI; it parks in cli; hlt -----------------------------------
        mov eax, 1
        cpuid
        shr ebx, 16
        cmp bl, 2                       ; CPUID.1:EBX[23:16]: logical processors
        jae .two
        PRINTLN "  one vCPU: the AP parts skipped (they need --smp 2)"
        jmp .ap_up
.two:   mov byte [have_ap], 1
        SEND_IPI 1, 0, 0x000C4500       ; INIT, assert, all excluding self
        ICR_WAIT 2
        WAIT_TICKS 11                   ; 10 ms
        SEND_IPI 3, 0, 0x000C4600 | SIPI_VECTOR
        ICR_WAIT 4
        WAIT_GE 5, ap_parked, 1, 2000, "the AP came up"
        PRINTLN "  AP up: parked in cli; hlt"
        CHECK32 6, dword [ap_woke], 0
.ap_up:

;--- a self NMI with IF = 0 -----------------------------------------------------
        cli
        SEND_IPI 7, 0, ICR_SELF | ICR_NMI
        SPIN_GE 8, nmi_count, 1, "the self NMI with IF=0"
        SETTLE
        CHECK32 9, dword [nmi_count], 1
        mov eax, [nmi_eflags]
        and eax, 0x200
        CHECK32 10, eax, 0              ; it interrupted code with IF = 0
        CHECK32 11, dword [nmi_cs], SEL_CODE32  ; no error code below EIP
        PRINTLN "  self NMI with IF=0: taken once, EFLAGS.IF=0 and CS in the frame"

;--- two NMIs while the handler runs ----------------------------------------------
        mov dword [nmi_hook], nested_hook
        SEND_IPI 12, 0, ICR_SELF | ICR_NMI
        SPIN_GE 13, nmi_count, 3, "the NMI held back until IRET"
        SETTLE
        CHECK32 14, dword [count_in_hook], 2    ; none ran inside the handler
        CHECK32 15, dword [nmi_nested], 0
        CHECK32 16, dword [nmi_count], 3        ; one was latched, not two
        PRINTLN "  two NMIs inside the handler: none nested, one taken after IRET"

;--- physical and logical destinations --------------------------------------------
        LAPIC_RD APIC_ID
        and eax, 0xFF000000
        SEND_IPI 17, eax, ICR_NMI       ; physical: its own APIC ID
        SPIN_GE 18, nmi_count, 4, "the NMI to its own APIC ID"
        LAPIC_WR APIC_DFR, 0xFFFFFFFF   ; flat model
        LAPIC_WR APIC_LDR, 0x01000000   ; logical ID bit 0
        SEND_IPI 19, 0x01000000, ICR_LOGICAL | ICR_NMI
        SPIN_GE 20, nmi_count, 5, "the NMI to its logical ID"
        SETTLE
        CHECK32 21, dword [nmi_count], 5
        PRINTLN "  physical and logical destination: one each"

;--- the AP, halted with interrupts off ------------------------------------------
        cmp byte [have_ap], 0
        je ioapic_nmi
; Before each NMI to the AP, a few milliseconds for it to halt again: an NMI
; that came before its HLT would be taken without waking it from one.
        WAIT_TICKS 5
        SEND_IPI 22, 0x01000000, ICR_NMI        ; physical: APIC ID 1
        SPIN_GE 23, nmi_count + 4, 1, "the NMI to the AP"
        SPIN_GE 24, ap_woke, 1, "the AP left its HLT"
        SETTLE
        CHECK32 25, dword [nmi_count + 4], 1
        CHECK32 26, dword [nmi_count], 5
        PRINTLN "  NMI to the AP: taken, woke it from cli; hlt"

;--- shorthands: all including self, all excluding self --------------------------
        WAIT_TICKS 5
        SEND_IPI 27, 0, ICR_ALL_INCL | ICR_NMI
        SPIN_GE 28, nmi_count, 6, "all including self: the BSP"
        SPIN_GE 29, nmi_count + 4, 2, "all including self: the AP"
        SPIN_GE 36, ap_woke, 2, "all including self: the AP left its HLT"
        WAIT_TICKS 5
        SEND_IPI 30, 0, ICR_ALL_EXCL | ICR_NMI
        SPIN_GE 31, nmi_count + 4, 3, "all excluding self: the AP"
        SPIN_GE 37, ap_woke, 3, "all excluding self: the AP left its HLT"
        SETTLE
        CHECK32 32, dword [nmi_count], 6
        CHECK32 33, dword [nmi_count + 4], 3
        CHECK32 34, dword [ap_woke], 3
        PRINTLN "  all including self: one each; all excluding self: the AP only"

;--- the IOAPIC's NMI mode: the RTC's periodic interrupt ---------------------------
ioapic_nmi:
        mov eax, [nmi_count]
        inc eax
        mov [nmi_expect], eax
        CMOS_READ RTC_REG_C             ; clear pending flags
        CMOS_WRITE RTC_REG_A, STATUS_A_1024HZ
        IOAPIC_WR IOAPIC_REDIR + RTC_PIN * 2 + 1, 0     ; destination: APIC ID 0
        IOAPIC_WR IOAPIC_REDIR + RTC_PIN * 2, RTE_NMI   ; edge, physical, unmasked
        CMOS_READ RTC_REG_B
        or al, RTC_B_PIE
        mov ah, al
        CMOS_WRITE RTC_REG_B, ah
        cli
        hlt                             ; only the NMI can end this
        IOAPIC_WR IOAPIC_REDIR + RTC_PIN * 2, RTE_MASKED | RTE_NMI
        mov eax, [nmi_count]
        cmp eax, [nmi_expect]
        CHECK_CC 35, ae
        CMOS_READ RTC_REG_B
        and al, ~RTC_B_PIE
        mov ah, al
        CMOS_WRITE RTC_REG_B, ah
        CMOS_READ RTC_REG_C
        PRINTLN "  IOAPIC pin 8 in NMI mode (RTC periodic): woke the BSP from cli; hlt"

;--- LINT0 in NMI mode: the 8259A's INTR (the watchdog's IRQ 0) as an NMI -----------
        mov eax, [nmi_count]
        mov [nmi_expect], eax
        inc eax
        mov [nmi_want], eax
        PIC_MASK 0xFF, 0xFF             ; INTR low
        LAPIC_WR APIC_LVT_LINT0, 0x400  ; NMI
        PIC_MASK 0xFE, 0xFF             ; IRQ 0 pending or soon: INTR rises
        SPIN_GE 38, nmi_count, [nmi_want], "LINT0 in NMI mode: the PIC's INTR"
        SETTLE
        mov ebx, [nmi_expect]
        inc ebx
        CHECK32 39, dword [nmi_count], ebx      ; one edge: INTR stays high (no INTA)
        PIC_MASK 0xFF, 0xFF
        LAPIC_WR APIC_LVT_LINT0, 0x700  ; ExtINT again
        PRINTLN "  LINT0 in NMI mode: the PIC's INTR rising is one NMI"
        TEST_PASS

;--- the NMI handler (both processors) ---------------------------------------------
; [esp] = EIP, CS, EFLAGS: no error code.
nmi_handler:
        push eax
        push ebx
        LAPIC_RD APIC_ID
        shr eax, 24
        and eax, 1                      ; 0: the BSP, 1: the AP
        lock inc dword [nmi_count + eax * 4]
        inc dword [nmi_depth + eax * 4]
        cmp dword [nmi_depth + eax * 4], 1
        jbe .once
        mov dword [nmi_nested], 1       ; entered again before its IRET
.once:  test eax, eax
        jnz .done
        mov ebx, [esp + 12]
        mov [nmi_cs], ebx
        mov ebx, [esp + 16]
        mov [nmi_eflags], ebx
        xor ebx, ebx
        xchg ebx, [nmi_hook]
        test ebx, ebx
        jz .done
        call ebx
.done:  dec dword [nmi_depth + eax * 4]
        pop ebx
        pop eax
        iretd

; Inside the BSP's handler: two self NMIs, which must wait for its IRET.
nested_hook:
        pushad
        call send_self_nmi
        call send_self_nmi
        SETTLE
        SETTLE
        mov eax, [nmi_count]
        mov [count_in_hook], eax
        popad
        ret

; The ICR write of a self NMI (the ICR is idle: delivery is instantaneous).
send_self_nmi:
        LAPIC_WR APIC_ICR_HI, 0
        LAPIC_WR APIC_ICR_LO, ICR_SELF | ICR_NMI
        ret

;--- the application processor ------------------------------------------------------
        bits 16
ap_entry16:
        AP_ENTER_PM32
        mov esp, AP_STACK
        lock inc dword [ap_parked]
.park:  cli
        hlt
        lock inc dword [ap_woke]
        jmp .park

        AP_TRAMPOLINE                   ; the page the start-up IPI names

        align 4
nmi_count:      dd 0, 0             ; NMIs taken, per processor
nmi_depth:      dd 0, 0
nmi_nested:     dd 0
nmi_eflags:     dd 0
nmi_cs:         dd 0
nmi_hook:       dd 0
count_in_hook:  dd 0
ap_parked:      dd 0
ap_woke:        dd 0
nmi_expect:     dd 0
nmi_want:       dd 0
have_ap:        db 0
