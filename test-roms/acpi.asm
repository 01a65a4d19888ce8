; acpi.asm - the firmware tables janus builds: ACPI (RSDP, RSDT, XSDT, MADT,
; FADT, DSDT) and the MP tables, then power-off through the FADT's PM1a port.
;
; In 32-bit protected mode (flat addressing):
;   * finds the RSDP ("RSD PTR " on a 16-byte boundary in 0xE0000-0xFFFFF)
;     and checks both its checksums and its revision (2);
;   * the RSDT and XSDT: signatures, checksums, the same tables in both;
;   * the MADT: checksum, counts the enabled local APICs and compares the
;     count with CPUID.1:EBX[23:16] (janus sets it to --smp), the IOAPIC at
;     0xFEC00000, the override of ISA IRQ 0 to GSI 2;
;   * the MP floating pointer ("_MP_" in 0xF0000-0xFFFFF) and configuration
;     table ("PCMP"): checksums, as many enabled processors as the MADT;
;   * the FADT: checksum, DSDT and X_DSDT agree; the DSDT's checksum, its
;     \_S5 package (AML: NameOp "_S5_" PackageOp ...) gives SLP_TYPa; SCI_EN
;     reads 1 in PM1a_CNT; the PM timer (PM_TMR_BLK) moves;
;   * writes SLP_TYPa << 10 | SLP_EN to PM1a_CNT: the machine powers off.
;
; Expected outcome: janus stops with "guest powered the machine off" (exit
; status 116); output
;   acpi: ACPI and MP tables, power-off through PM1a
;     RSDP at 0x000f0000, revision 2: checksums ok
;     RSDT and XSDT: 2 tables, the same in both
;     MADT: N local APICs (CPUID.1:EBX[23:16] = N), IOAPIC at 0xfec00000, IRQ 0 -> GSI 2
;     MP table: N processors
;     FADT: PM1a_CNT 0x0604, PM timer 0x0608 moving, \_S5 SLP_TYP 5
;   acpi: powering off
; A failure prints "acpi: FAIL check N: ..." and exits with status N.

%define TEST_NAME "acpi"
%include "janus.inc"

main:
        PRINTLN "acpi: ACPI and MP tables, power-off through PM1a"
        ENTER_PM32

;--- RSDP ------------------------------------------------------------------------
        mov esi, 0xE0000
.scan:  cmp dword [esi], 'RSD '
        jne .next
        cmp dword [esi + 4], 'PTR '
        je .found
.next:  add esi, 16
        cmp esi, 0x100000
        jb .scan
        FAIL 1, "no RSDP in 0xE0000-0xFFFFF"
.found: mov [rsdp], esi
        mov ecx, 20
        call sum
        CHECK8 2, al, 0                 ; ACPI 1.0 checksum
        mov al, [esi + 15]
        CHECK8 3, al, 2                 ; revision
        mov ecx, [esi + 20]
        CHECK32 4, ecx, 36              ; length
        call sum
        CHECK8 5, al, 0                 ; extended checksum
        PRINT "  RSDP at 0x"
        PRINT_HEX 32, esi
        PRINTLN ", revision 2: checksums ok"

;--- RSDT and XSDT ---------------------------------------------------------------
        mov esi, [esi + 16]
        mov [rsdt], esi
        mov edx, 'RSDT'
        call table
        CHECK8 6, al, 0
        mov esi, [rsdp]
        mov eax, [esi + 28]
        CHECK32 7, eax, 0               ; XSDT below 4 GiB
        mov esi, [esi + 24]
        mov [xsdt], esi
        mov edx, 'XSDT'
        call table
        CHECK8 8, al, 0
        mov esi, [rsdt]
        mov ecx, [esi + 4]
        sub ecx, 36
        shr ecx, 2                      ; RSDT entries
        mov [ntables], ecx
        mov edi, [xsdt]
        mov eax, [edi + 4]
        sub eax, 36
        shr eax, 3
        CHECK32 9, eax, ecx             ; as many XSDT entries
        xor ebx, ebx
.entry: cmp ebx, [ntables]
        jae .entries_done
        mov eax, [esi + 36 + ebx * 4]
        mov edx, [edi + 36 + ebx * 8]
        CHECK32 10, eax, edx            ; the same table in both
        mov edx, [edi + 40 + ebx * 8]
        CHECK32 11, edx, 0
        mov edx, [eax]
        cmp edx, 'APIC'
        jne .not_madt
        mov [madt], eax
.not_madt:
        cmp edx, 'FACP'
        jne .not_fadt
        mov [fadt], eax
.not_fadt:
        inc ebx
        jmp .entry
.entries_done:
        PRINT "  RSDT and XSDT: "
        PRINT_DEC [ntables]
        PRINTLN " tables, the same in both"

;--- MADT ------------------------------------------------------------------------
        mov esi, [madt]
        test esi, esi
        CHECK_CC 12, nz                 ; an MADT is listed
        mov edx, 'APIC'
        call table
        CHECK8 13, al, 0
        mov eax, [esi + 36]
        CHECK32 14, eax, 0xFEE00000     ; local APIC address
        mov edi, esi
        add edi, [esi + 4]              ; end
        add esi, 44
        xor ebx, ebx                    ; enabled local APICs
        xor ebp, ebp                    ; bit 0: IOAPIC seen, bit 1: IRQ 0 override
.madt:  cmp esi, edi
        jae .madt_done
        movzx ecx, byte [esi + 1]
        cmp ecx, 2
        CHECK_CC 15, ae                 ; entry length
        mov al, [esi]
        cmp al, 0
        jne .not_lapic
        test byte [esi + 4], 1
        jz .step
        inc ebx
        jmp .step
.not_lapic:
        cmp al, 1
        jne .not_ioapic
        mov eax, [esi + 4]
        CHECK32 16, eax, 0xFEC00000     ; IOAPIC address
        or ebp, 1
        jmp .step
.not_ioapic:
        cmp al, 2
        jne .step
        cmp byte [esi + 3], 0
        jne .step
        mov eax, [esi + 4]
        CHECK32 17, eax, 2              ; ISA IRQ 0 -> GSI 2
        or ebp, 2
.step:  add esi, ecx
        jmp .madt
.madt_done:
        CHECK32 18, ebp, 3              ; IOAPIC and IRQ 0 override present
        mov [nlapic], ebx
        mov eax, 1
        cpuid
        shr ebx, 16
        and ebx, 0xFF
        mov eax, [nlapic]
        CHECK32 19, eax, ebx            ; one local APIC per vCPU
        PRINT "  MADT: "
        PRINT_DEC eax
        PRINT " local APICs (CPUID.1:EBX[23:16] = "
        PRINT_DEC ebx
        PRINTLN "), IOAPIC at 0xfec00000, IRQ 0 -> GSI 2"

;--- MP tables -------------------------------------------------------------------
        mov esi, 0xF0000
.mpscan:
        cmp dword [esi], '_MP_'
        je .mpfound
        add esi, 16
        cmp esi, 0x100000
        jb .mpscan
        FAIL 20, "no MP floating pointer in 0xF0000-0xFFFFF"
.mpfound:
        movzx ecx, byte [esi + 8]
        shl ecx, 4
        call sum
        CHECK8 21, al, 0
        mov esi, [esi + 4]              ; configuration table
        cmp dword [esi], 'PCMP'
        CHECK_CC 22, e
        movzx ecx, word [esi + 4]
        call sum
        CHECK8 23, al, 0
        movzx ecx, word [esi + 34]      ; entry count
        add esi, 44
        xor ebx, ebx
.mpentry:
        test ecx, ecx
        jz .mpdone
        cmp byte [esi], 0
        jne .mp8
        test byte [esi + 3], 1
        jz .mp20
        inc ebx
.mp20:  add esi, 20
        dec ecx
        jmp .mpentry
.mp8:   add esi, 8
        dec ecx
        jmp .mpentry
.mpdone:
        mov eax, [nlapic]
        CHECK32 24, ebx, eax            ; as many processors as the MADT has
        PRINT "  MP table: "
        PRINT_DEC ebx
        PRINTLN " processors"

;--- FADT and DSDT -------------------------------------------------------------------
        mov esi, [fadt]
        test esi, esi
        CHECK_CC 25, nz
        mov edx, 'FACP'
        call table
        CHECK8 26, al, 0
        mov eax, [esi + 40]             ; DSDT
        mov edx, [esi + 140]            ; X_DSDT
        CHECK32 27, eax, edx
        mov edx, [esi + 64]
        mov [pm1a_cnt], edx
        mov edx, [esi + 76]
        mov [pm_tmr], edx
        mov esi, eax
        mov edx, 'DSDT'
        call table
        CHECK8 28, al, 0
        mov edi, esi
        add edi, [esi + 4]
        sub edi, 4
        add esi, 36
.s5:    cmp esi, edi
        jae .no_s5
        cmp dword [esi], '_S5_'
        je .s5found
        inc esi
        jmp .s5
.no_s5: FAIL 29, "no _S5_ object in the DSDT"
.s5found:
        mov al, [esi - 1]
        CHECK8 30, al, 0x08             ; NameOp
        mov al, [esi + 4]
        CHECK8 31, al, 0x12             ; PackageOp
        movzx ecx, byte [esi + 5]       ; PkgLength lead byte: bits 7-6 = extra bytes
        shr ecx, 6
        lea esi, [esi + 7 + ecx]        ; past PkgLength and NumElements
        movzx eax, byte [esi]
        cmp al, 0x0A                    ; BytePrefix
        jne .s5_const
        movzx eax, byte [esi + 1]
.s5_const:                              ; ZeroOp (0) and OneOp (1) are their values
        mov [slp_typ], eax

        mov edx, [pm1a_cnt]
        in ax, dx
        and ax, 1
        CHECK16 32, ax, 1               ; SCI_EN: always in ACPI mode
        mov edx, [pm_tmr]
        in eax, dx
        and eax, 0xFFFFFF
        mov ebx, eax
        mov ecx, 100000
.tmr:   in eax, dx
        and eax, 0xFFFFFF
        cmp eax, ebx
        jne .moved
        dec ecx
        jnz .tmr
        FAIL 33, "the PM timer does not move"
.moved:
        PRINT "  FADT: PM1a_CNT 0x"
        PRINT_HEX 16, [pm1a_cnt]
        PRINT ", PM timer 0x"
        PRINT_HEX 16, [pm_tmr]
        PRINT " moving, \_S5 SLP_TYP "
        PRINT_DEC [slp_typ]
        NEWLINE

;--- power off -------------------------------------------------------------------
        PRINTLN "acpi: powering off"
        mov eax, [slp_typ]
        shl eax, 10
        or eax, 1 << 13                 ; SLP_EN
        mov edx, [pm1a_cnt]
        out dx, ax
        FAIL 34, "still running after SLP_EN with the S5 sleep type"

; sum: AL = the sum of ECX bytes at ESI (0 for a good checksum).
sum:    push esi
        push ecx
        xor eax, eax
.l:     add al, [esi]
        inc esi
        dec ecx
        jnz .l
        pop ecx
        pop esi
        ret

; table: the table at ESI must have signature EDX: AL = its checksum sum, or
; 0xFF for a wrong signature.
table:  push ecx
        mov al, 0xFF
        cmp [esi], edx
        jne .bad
        mov ecx, [esi + 4]
        call sum
.bad:   pop ecx
        ret

        align 4
rsdp:       dd 0
rsdt:       dd 0
xsdt:       dd 0
madt:       dd 0
fadt:       dd 0
ntables:    dd 0
nlapic:     dd 0
pm1a_cnt:   dd 0
pm_tmr:     dd 0
slp_typ:    dd 0
