; lapic_timer.asm - the local APIC: enabling it, its timer in one-shot,
; periodic and TSC-deadline modes, TPR masking, ISR/PPR in a handler.
;
; In 32-bit protected mode: checks IA32_APIC_BASE (base 0xFEE00000, BSP),
; sets its global enable and software-enables the APIC (SVR bit 8), and
; checks the version register. The 8259A pair is masked except IRQ 0: PIT
; channel 0 at 100 Hz, reaching the CPU through LINT0 (ExtINT), is the
; watchdog that bounds the waits and the reference the timer clock is
; measured against (printed, not checked: janus, KVM and QEMU clock the
; APIC timer at 1 GHz, real processors at their bus or crystal clock).
;   * one-shot (divide by 16): LVT timer and divide read back, the current
;     count decreasing, one interrupt with its ISR bit set and PPR raised
;     to its class in the handler, ISR clear after the EOI, the current
;     count 0 afterwards and no second interrupt;
;   * periodic: 5 interrupts (the handler then masks the LVT entry), none
;     while masked, the counter still reloading; an initial count of 0
;     stops it;
;   * TSC-deadline, if CPUID.1:ECX[24] offers it: IA32_TSC_DEADLINE reads
;     back while armed, one interrupt, not before the deadline, and the MSR
;     reads 0 after it fired;
;   * TPR = 0x40: a self-IPI (shorthand self) with vector 0x41 (class 4)
;     waits in IRR and is not delivered, one with vector 0x51 is; PPR reads
;     0x40; TPR = 0 lets 0x41 in.
;
; Expected outcome: exit status 0; output
;   lapic_timer: local APIC timer, TPR and ISR
;     APIC id 0x00, version 0x00050014, IA32_APIC_BASE 0xfee00900
;     timer clock: ~1000 MHz (PIT-timed; 1 GHz on janus, KVM and QEMU)
;     one-shot: count 0x00030d40 -> 0x000..... -> 0x000....., one interrupt
;     periodic: 5 interrupts, none while masked
;     TSC-deadline: one interrupt at the deadline, MSR cleared
;     TPR 0x40: vector 0x41 held in IRR, vector 0x51 delivered; TPR 0: 0x41 delivered
;   lapic_timer: PASS
; (Without CPUID.1:ECX[24] the TSC-deadline line reads "TSC-deadline: not
; offered (CPUID.1:ECX[24] = 0), skipped"; QEMU offers it with -cpu max.)
; A failure prints "lapic_timer: FAIL check N: ..." and exits with status N.

%define TEST_NAME "lapic_timer"
%include "janus.inc"
%include "irq.inc"

TIMER_VEC       equ 0x61            ; the timer's vector (class 6)
LOW_VEC         equ 0x41            ; class 4: held by TPR 0x40
HIGH_VEC        equ 0x51            ; class 5: above TPR 0x40
ONESHOT_COUNT   equ 2000000         ; x16: 32 ms at 1 GHz (long enough that a busy host cannot
                                    ; let it expire between two MMIO accesses)
PERIODIC_COUNT  equ 62500           ; x16: 1 ms at 1 GHz
TSC_DELTA       equ 2000000         ; TSC-deadline: 2 M TSC cycles ahead
WD_PIT_COUNT    equ 11932           ; watchdog: 100 Hz

main:
        PRINTLN "lapic_timer: local APIC timer, TPR and ISR"
        ENTER_PM32
        IRQ_INIT
        mov ecx, MSR_APIC_BASE
        rdmsr
        mov esi, eax
        and eax, 0xFFFFF000
        CHECK32 1, eax, LAPIC
        mov eax, esi
        and eax, APIC_BASE_BSP
        CHECK32 2, eax, APIC_BASE_BSP   ; we are the bootstrap processor
        call lapic_enable
        mov ecx, MSR_APIC_BASE
        rdmsr
        mov esi, eax
        and eax, APIC_BASE_EN
        CHECK32 3, eax, APIC_BASE_EN
        LAPIC_RD APIC_SVR
        CHECK32 4, eax, SVR_ENABLE | SPURIOUS_VECTOR
        LAPIC_RD APIC_VERSION
        mov edi, eax
        and eax, 0xF0
        CHECK32 5, eax, 0x10            ; an integrated APIC (0x1X)
        LAPIC_RD APIC_ID
        shr eax, 24
        PRINT "  APIC id 0x"
        PRINT_HEX 8, al
        PRINT ", version 0x"
        PRINT_HEX 32, edi
        PRINT ", IA32_APIC_BASE 0x"
        PRINT_HEX 32, esi
        NEWLINE

        PIC_INIT 0xFE, 0xFF             ; only IRQ 0: the watchdog
        PIC_SPURIOUS_HANDLERS
        WD_START_PIT WD_PIT_COUNT
        SET_VECTOR TIMER_VEC, timer_handler
        SET_VECTOR LOW_VEC, low_handler
        SET_VECTOR HIGH_VEC, high_handler

;--- the timer's clock, against the PIT ------------------------------------------
        LAPIC_WR APIC_LVT_TIMER, LVT_MASKED | TIMER_VEC
        LAPIC_WR APIC_TDCR, 0x0B        ; divide by 1
        WAIT_TICKS 1                    ; start at a PIT tick
        LAPIC_WR APIC_TICR, 0xFFFFFFFF
        WAIT_TICKS 1                    ; one 10 ms PIT period
        LAPIC_RD APIC_TCCR
        LAPIC_WR APIC_TICR, 0           ; stop
        not eax                         ; 0xFFFFFFFF - count: clocks elapsed
        xor edx, edx
        mov ecx, 10000                  ; clocks per 10 ms / 10000 = MHz
        div ecx
        PRINT "  timer clock: ~"
        PRINT_DEC eax
        PRINTLN " MHz (PIT-timed; 1 GHz on janus, KVM and QEMU)"

;--- one-shot -------------------------------------------------------------------
        mov dword [timer_count], 0
        mov dword [timer_limit], 0xFFFFFFFF
        LAPIC_WR APIC_TDCR, 0x03        ; divide by 16
        LAPIC_RD APIC_TDCR
        and eax, 0x0B
        CHECK32 6, eax, 0x03
        LAPIC_WR APIC_LVT_TIMER, TIMER_VEC      ; one-shot, unmasked
        LAPIC_RD APIC_LVT_TIMER
        and eax, 0x700FF                ; mode, mask, vector
        CHECK32 7, eax, TIMER_VEC
        LAPIC_WR APIC_TICR, ONESHOT_COUNT
        LAPIC_RD APIC_TCCR
        mov ebx, eax                    ; first count
        test ebx, ebx
        CHECK_CC 8, nz
        cmp ebx, ONESHOT_COUNT
        CHECK_CC 9, be
        mov ecx, 1000000
.poll:  LAPIC_RD APIC_TCCR
        cmp eax, ebx
        jne .moved
        dec ecx
        jnz .poll
.moved: cmp eax, ebx
        CHECK_CC 10, b                  ; decreasing
        mov esi, eax
        LAPIC_RD APIC_TICR
        CHECK32 11, eax, ONESHOT_COUNT  ; the initial count reads back
        WAIT_GE 12, timer_count, 1, 30, "the one-shot timer interrupt"
        mov eax, [isr_seen]
        CHECK32 13, eax, APIC_BIT_FOR(TIMER_VEC)    ; in service in the handler
        mov eax, [ppr_seen]
        and eax, 0xF0
        CHECK32 14, eax, TIMER_VEC & 0xF0           ; PPR: the class in service
        LAPIC_RD APIC_ISR + APIC_REG_FOR(TIMER_VEC)
        CHECK32 15, eax, 0              ; the EOI cleared it
        LAPIC_RD APIC_TCCR
        CHECK32 16, eax, 0              ; one-shot: stays 0
        WAIT_TICKS 2
        mov eax, [timer_count]
        CHECK32 17, eax, 1              ; and no second interrupt
        PRINT "  one-shot: count 0x"
        PRINT_HEX 32, ebx
        PRINT " -> 0x"
        PRINT_HEX 32, esi
        PRINTLN ", one interrupt"

;--- periodic ---------------------------------------------------------------------
        mov dword [timer_count], 0
        mov dword [timer_limit], 5      ; the handler masks the LVT at 5
        LAPIC_WR APIC_LVT_TIMER, LVT_PERIODIC | TIMER_VEC
        LAPIC_WR APIC_TICR, PERIODIC_COUNT
        WAIT_GE 18, timer_count, 5, 30, "5 periodic timer interrupts"
        WAIT_TICKS 2                    ; ~10+ periods, masked
        ; 5, or 6 on a CPU slow enough (KVM nested in QEMU's TCG) that the
        ; next period ends before the 5th handler masks the LVT: that one was
        ; pending in IRR already and is delivered after the EOI.
        mov eax, [timer_count]
        sub eax, 5
        cmp eax, 1
        CHECK_CC 19, be
        LAPIC_RD APIC_LVT_TIMER
        and eax, 0x700FF
        CHECK32 20, eax, LVT_MASKED | LVT_PERIODIC | TIMER_VEC
        ; Still counting, reloaded each period. KVM's in-kernel LAPIC reads 0
        ; between a period's end and its late re-arm on a slow host (KVM nested
        ; in QEMU's TCG), so up to three reads; a stopped timer reads 0 always.
        mov ecx, 3
.tccr:  LAPIC_RD APIC_TCCR
        test eax, eax
        jnz .counting
        dec ecx
        jnz .tccr
.counting:
        test eax, eax
        CHECK_CC 21, nz
        cmp eax, PERIODIC_COUNT
        CHECK_CC 22, be
        LAPIC_WR APIC_TICR, 0           ; an initial count of 0 stops it
        LAPIC_RD APIC_TCCR
        CHECK32 23, eax, 0
        PRINTLN "  periodic: 5 interrupts, none while masked"

;--- TSC-deadline -----------------------------------------------------------------
        mov eax, 1
        cpuid
        bt ecx, 24
        jc .tscd
        PRINTLN "  TSC-deadline: not offered (CPUID.1:ECX[24] = 0), skipped"
        jmp .tpr
.tscd:  mov dword [timer_count], 0
        mov dword [timer_limit], 0xFFFFFFFF
        LAPIC_WR APIC_LVT_TIMER, LVT_TSC_DEADLINE | TIMER_VEC
        LAPIC_RD APIC_LVT_TIMER         ; (the read orders the MMIO write
        and eax, 0x700FF                ;  before the WRMSR)
        CHECK32 24, eax, LVT_TSC_DEADLINE | TIMER_VEC
        rdtsc
        add eax, TSC_DELTA
        adc edx, 0
        mov [deadline], eax
        mov [deadline + 4], edx
        mov ecx, MSR_TSC_DEADLINE
        wrmsr
        rdmsr
        CHECK32 25, eax, [deadline]     ; reads back while armed
        CHECK32 26, edx, [deadline + 4]
        WAIT_GE 27, timer_count, 1, 30, "the TSC-deadline timer interrupt"
        mov eax, [tsc_seen]             ; TSC in the handler >= deadline
        mov edx, [tsc_seen + 4]
        sub eax, [deadline]
        sbb edx, [deadline + 4]
        CHECK_CC 28, ns
        mov ecx, MSR_TSC_DEADLINE
        rdmsr
        or eax, edx
        CHECK32 29, eax, 0              ; cleared when it fired
        WAIT_TICKS 2
        mov eax, [timer_count]
        CHECK32 30, eax, 1
        LAPIC_WR APIC_LVT_TIMER, LVT_MASKED | TIMER_VEC
        PRINTLN "  TSC-deadline: one interrupt at the deadline, MSR cleared"

;--- TPR ------------------------------------------------------------------------
.tpr:   LAPIC_WR APIC_TPR, 0x40
        LAPIC_RD APIC_PPR
        CHECK32 31, eax, 0x40           ; nothing in service: PPR = TPR
        SEND_IPI 32, 0, ICR_SELF | LOW_VEC
        ICR_WAIT 33
        WAIT_TICKS 2                    ; 10+ ms with interrupts enabled
        mov eax, [low_count]
        CHECK32 34, eax, 0              ; class 4 <= TPR class 4: held
        LAPIC_RD APIC_IRR + APIC_REG_FOR(LOW_VEC)
        and eax, APIC_BIT_FOR(LOW_VEC)
        CHECK32 35, eax, APIC_BIT_FOR(LOW_VEC)      ; ... in IRR
        SEND_IPI 36, 0, ICR_SELF | HIGH_VEC
        WAIT_GE 37, high_count, 1, 10, "self-IPI 0x51 above the TPR"
        mov eax, [low_count]
        CHECK32 38, eax, 0
        LAPIC_WR APIC_TPR, 0
        WAIT_GE 39, low_count, 1, 10, "self-IPI 0x41 after TPR = 0"
        LAPIC_RD APIC_IRR + APIC_REG_FOR(LOW_VEC)
        and eax, APIC_BIT_FOR(LOW_VEC)
        CHECK32 40, eax, 0
        PRINTLN "  TPR 0x40: vector 0x41 held in IRR, vector 0x51 delivered; TPR 0: 0x41 delivered"

        mov eax, [lapic_spurious]
        add eax, [pic_spurious]
        test eax, eax
        jz .pass
        PRINT "  (spurious interrupts: "
        PRINT_DEC eax
        PRINTLN ")"
.pass:  TEST_PASS

; The timer: count, note ISR (its vector's bit), PPR and the TSC, mask the
; LVT entry once the count reaches timer_limit, EOI.
timer_handler:
        push eax
        push edx
        inc dword [timer_count]
        LAPIC_RD APIC_ISR + APIC_REG_FOR(TIMER_VEC)
        and eax, APIC_BIT_FOR(TIMER_VEC)
        mov [isr_seen], eax
        LAPIC_RD APIC_PPR
        mov [ppr_seen], eax
        rdtsc
        mov [tsc_seen], eax
        mov [tsc_seen + 4], edx
        mov eax, [timer_count]
        cmp eax, [timer_limit]
        jb .eoi
        LAPIC_RD APIC_LVT_TIMER
        or eax, LVT_MASKED
        LAPIC_WR APIC_LVT_TIMER, eax
.eoi:   LAPIC_WR APIC_EOI, 0
        pop edx
        pop eax
        IRQ_RETURN

low_handler:
        inc dword [low_count]
        LAPIC_WR APIC_EOI, 0
        IRQ_RETURN

high_handler:
        inc dword [high_count]
        LAPIC_WR APIC_EOI, 0
        IRQ_RETURN

        align 8
deadline:       dq 0
tsc_seen:       dq 0
timer_count:    dd 0
timer_limit:    dd 0xFFFFFFFF
isr_seen:       dd 0
ppr_seen:       dd 0
low_count:      dd 0
high_count:     dd 0
