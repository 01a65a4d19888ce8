; gdb.asm - the subject of the gdbstub test (tests/gdb.rs), which drives gdb against it.
;
; Enters 64-bit long mode, maps a second view of low memory at 0xFFFFFF8000000000 (PML4[511]
; -> the identity PDPT), loads known values into registers (RBX, RCX, XMM1, ST0), and reaches
; `gdb_here` at the fixed address 0x8C00, where the test stops it with a breakpoint. From
; there the program checks what only a debugger can have done: RSI = 0x5A5A (written by gdb
; as a register) and the qword at `gdb_poke` (0x8E08) = 77 (written by gdb through the high
; virtual view). A run without the debugger fails check 1.
;
; Fixed addresses (the test uses them):
;   0x8C00 gdb_here    mov ecx, 0x1234 (5 bytes), then inc ecx at 0x8C05
;   0x8C10 gdb_hw      a second stop for a hardware breakpoint
;   0x8E00 gdb_data    dq 0xFEEDFACECAFEBEEF
;   0x8E08 gdb_poke    dq 0
;
; Expected outcome, with the test's gdb: exit status 0; output ends with
;   gdb: PASS

%define TEST_NAME "gdb"
%include "janus.inc"

GDB_HIGH        equ 0xFFFFFF8000000000

main:
        PRINTLN "gdb: start"
        ENTER_PM32                      ; bits 32
        ENTER_LM64                      ; bits 64
        mov rax, JANUS_PT_BASE + 0x1000 + 3
        mov [JANUS_PT_BASE + 511 * 8], rax      ; PML4[511] -> PDPT: the high view
        mov rax, cr3
        mov cr3, rax
        mov rax, cr4
        or eax, 1 << 9                  ; OSFXSR: SSE on
        mov cr4, rax
        mov rax, 0x0123456789ABCDEF
        movq xmm1, rax
        finit
        fld1                            ; ST0 = 1.0
        mov rbx, 0x1122334455667788
        xor esi, esi
        jmp gdb_here

        times 0x1000 - ($ - $$) int3
gdb_here:                               ; 0x8C00
        mov ecx, 0x1234
        inc ecx
        jmp gdb_hw
        times 0x1010 - ($ - $$) int3
gdb_hw:                                 ; 0x8C10
        cmp ecx, 0x1235
        CHECK_CC 2, e
        cmp esi, 0x5A5A                 ; written by gdb
        CHECK_CC 1, e
        mov rax, [gdb_poke]             ; written by gdb through the high view
        CHECK64 3, rax, 77
        mov rax, GDB_HIGH + gdb_data    ; the high view reads the same
        mov rax, [rax]
        mov rdx, 0xFEEDFACECAFEBEEF
        CHECK64 4, rax, rdx
        TEST_PASS

        times 0x1200 - ($ - $$) int3
gdb_data:                               ; 0x8E00
        dq 0xFEEDFACECAFEBEEF
gdb_poke:                               ; 0x8E08
        dq 0
