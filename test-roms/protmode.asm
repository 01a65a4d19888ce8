; protmode.asm - enter 32-bit protected mode and run checks there.
;
; Switches from real mode to 32-bit protected mode through the shared flat
; GDT, then checks: the mode itself (CR0.PE, CS, SGDT), data segments with a
; non-zero base (addressing through them lands at base + offset, including
; above 1 MiB), and 32-bit integer arithmetic, bit operations and the stack.
;
; Expected outcome: exit status 0; output ends with
;   protmode: PASS
; A failure prints "protmode: FAIL check N: ..." and exits with status N.

%define TEST_NAME "protmode"

; Two extra data segments, appended to the shared GDT:
;   SEL_BASED (0x30): base 0x00012345, limit 0xFFFF (byte granular), writable
;   SEL_HIGH  (0x38): base 0x00300000, limit 0xFFFFF * 4 KiB, writable
BASED_BASE      equ 0x00012345
HIGH_BASE       equ 0x00300000
%macro JANUS_EXTRA_GDT_ENTRIES 0
        GDT_ENTRY BASED_BASE, 0x0FFFF, 0x93, 0x4
        GDT_ENTRY HIGH_BASE, 0xFFFFF, 0x93, 0xC
%endmacro

%include "janus.inc"

SEL_BASED       equ SEL_EXTRA
SEL_HIGH        equ SEL_EXTRA + 8

main:
        PRINTLN "protmode: entering 32-bit protected mode"
        ENTER_PM32                      ; from here on: bits 32
        PRINTLN "  now in 32-bit protected mode"

;--- the mode itself ---------------------------------------------------------
        mov eax, cr0
        and eax, CR0_PE | CR0_PG
        CHECK32 1, eax, CR0_PE          ; protected, not paged
        mov ax, cs
        CHECK16 2, ax, SEL_CODE32
        mov ax, ss
        CHECK16 3, ax, SEL_DATA
        sgdt [gdtr_copy]
        CHECK16 4, word [gdtr_copy], janus_gdt_end - janus_gdt - 1
        CHECK32 5, dword [gdtr_copy + 2], janus_gdt

;--- segments with a non-zero base -------------------------------------------
        PRINTLN "  segment bases"
        ; Write through the flat DS, read through ES = base 0x12345.
        mov dword [BASED_BASE + 0x10], 0xA1B2C3D4
        mov ax, SEL_BASED
        mov es, ax
        CHECK32 6, dword [es:0x10], 0xA1B2C3D4
        ; ... and the other way round, with a byte store.
        mov byte [es:0x0123], 0x77
        CHECK8 7, byte [BASED_BASE + 0x0123], 0x77
        ; Offsets past 0xFFFF would exceed this segment's limit, but the base
        ; itself may be any byte address: offset 0 is linear 0x12345.
        mov word [es:0], 0xBEEF
        CHECK16 8, word [0x12345], 0xBEEF

        ; FS: base 3 MiB, 4 GiB limit. rep movsd from DS:ESI to ES:EDI with
        ; ES = that segment.
        mov ax, SEL_HIGH
        mov fs, ax
        mov es, ax
        mov dword [fs:0x100], 0x5EED5EED
        CHECK32 9, dword [HIGH_BASE + 0x100], 0x5EED5EED
        cld
        mov esi, copy_src
        mov edi, 0x200                  ; ES offset 0x200 = linear 3 MiB + 0x200
        mov ecx, copy_dwords
        rep movsd
        CHECK32 10, edi, 0x200 + copy_dwords * 4
        CHECK32 11, dword [HIGH_BASE + 0x200], 0x03020100
        CHECK32 12, dword [HIGH_BASE + 0x200 + 12], 0x0F0E0D0C
        mov ax, SEL_DATA
        mov es, ax
        mov fs, ax

;--- 32-bit arithmetic -------------------------------------------------------
        PRINTLN "  32-bit arithmetic"
        mov eax, 0x89ABCDEF
        add eax, 0x76543211             ; = 2^32
        CHECK_FLAGS 13, F_ARITH, F_CF | F_ZF
        mov eax, 0x7FFFFFFF
        inc eax
        CHECK_FLAGS 14, F_OF | F_SF, F_OF | F_SF

        mov eax, 0xDEADBEEF
        mov ebx, 0x01000193             ; FNV prime
        mul ebx
        CHECK32 15, edx, 0x00DEAF1D     ; high dword of the 64-bit product
        CHECK32 16, eax, 0x7A83923D     ; low dword

        mov eax, -123456
        mov ecx, 1000
        imul ecx
        CHECK32 17, eax, -123456000
        CHECK32 18, edx, 0xFFFFFFFF
        imul esi, ecx, -3
        CHECK32 19, esi, -3000

        mov edx, 0x00000003             ; EDX:EAX = 0x3_0000_0005
        mov eax, 0x00000005
        mov ecx, 0x10000
        div ecx
        CHECK32 20, eax, 0x00030000
        CHECK32 21, edx, 5
        mov eax, -1000001
        cdq
        mov ecx, 1000
        idiv ecx
        CHECK32 22, eax, -1000
        CHECK32 23, edx, -1

        mov eax, 0x12345678
        mov edx, 0x9ABCDEF0
        shld eax, edx, 8
        CHECK32 24, eax, 0x3456789A
        shrd eax, edx, 4
        CHECK32 25, eax, 0x03456789

;--- bit operations, setcc, cmov, xadd, cmpxchg --------------------------------
        PRINTLN "  bit ops, setcc, cmov, xadd, cmpxchg"
        mov eax, 0x00010000
        bsf ecx, eax
        CHECK32 26, ecx, 16
        mov eax, 0x00F00000
        bsr ecx, eax
        CHECK32 27, ecx, 23
        mov eax, 0
        bts eax, 31
        CHECK_FLAGS 28, F_CF, 0         ; old bit was 0
        CHECK32 29, eax, 0x80000000
        bt eax, 31
        CHECK_CC 30, c
        btr eax, 31
        CHECK32 31, eax, 0

        mov eax, 5
        cmp eax, 7
        setb bl
        setg bh
        CHECK16 32, bx, 0x0001          ; bl = 1 (below), bh = 0 (not greater)
        mov ecx, 111
        mov edx, 222
        cmp eax, 5
        cmove ecx, edx
        CHECK32 33, ecx, 222

        mov dword [scratch], 10
        mov eax, 32
        xadd [scratch], eax             ; eax = old, [scratch] = sum
        CHECK32 34, eax, 10
        CHECK32 35, dword [scratch], 42
        mov eax, 42
        mov ecx, 99
        cmpxchg [scratch], ecx          ; equal: store 99
        CHECK_CC 36, z
        CHECK32 37, dword [scratch], 99
        mov eax, 0
        cmpxchg [scratch], ecx          ; not equal: eax = current value
        CHECK_CC 38, nz
        CHECK32 39, eax, 99

;--- addressing and the stack -------------------------------------------------
        PRINTLN "  addressing, stack"
        mov ebx, table
        mov ecx, 3
        mov eax, [ebx + ecx * 4 + 4]    ; table[4]
        CHECK32 40, eax, 400
        lea edx, [ecx * 8 + ecx + 1]    ; 3 * 9 + 1
        CHECK32 41, edx, 28

        mov ebp, esp
        mov eax, 0x11111111
        mov ecx, 0x22222222
        pushad                          ; 8 dwords
        mov eax, ebp
        sub eax, esp
        CHECK32 42, eax, 32
        CHECK32 43, dword [esp + 28], 0x11111111 ; EAX is pushed first
        mov eax, 0
        mov ecx, 0
        popad
        CHECK32 44, eax, 0x11111111
        CHECK32 45, ecx, 0x22222222
        CHECK32 46, esp, ebp
        push dword 0x12345678
        push word 0xABCD                ; a 16-bit push in 32-bit code
        mov eax, ebp
        sub eax, esp
        CHECK32 47, eax, 6
        pop ax
        pop edx
        CHECK16 48, ax, 0xABCD
        CHECK32 49, edx, 0x12345678

        ; Print a value from 32-bit code, in hex and decimal.
        PRINT "  print: 0x"
        PRINT_HEX 32, 0xC0FFEE
        PRINT " = "
        PRINT_DEC 0xC0FFEE
        NEWLINE

        TEST_PASS

;--- data ---------------------------------------------------------------------
        align 4
copy_src:       db 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
copy_dwords     equ ($ - copy_src) / 4
table:          dd 0, 100, 200, 300, 400, 500
scratch:        dd 0
gdtr_copy:      times 6 db 0
