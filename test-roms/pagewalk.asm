; pagewalk.asm - address translation: 32-bit paging (4 KiB and 4 MiB PSE
; pages), then 4-level paging in long mode.
;
; Checks, in each: one physical page seen at two linear addresses (writes
; through one are read through the other); the accessed and dirty bits the
; CPU sets in the paging-structure entries on reads and writes; a changed
; PTE takes effect after INVLPG; a CR3 write re-walks non-global entries;
; a global page (CR4.PGE) is re-walked after INVLPG and after toggling
; CR4.PGE. Only what the architecture guarantees is checked (a stale TLB
; entry is allowed, never required).
;
; Physical test pages: 0x302000 holds 0x2222 at +0x10, 0x303000 0x3333.
;
; Expected outcome: exit status 0; output ends with
;   pagewalk: PASS

%define TEST_NAME "pagewalk"
%include "janus.inc"

PD32            equ 0x20000
PT32            equ 0x21000
PDPT64          equ 0x22000
PD64            equ 0x23000
PT64            equ 0x24000
PG_P            equ 1
PG_RW           equ 2
PG_A            equ 0x20
PG_D            equ 0x40
PG_PS           equ 0x80
PG_G            equ 0x100
CR4_PSE         equ 1 << 4
CR4_PGE         equ 1 << 7

main:
        PRINTLN "pagewalk: 32-bit paging"
        ENTER_PM32
        mov dword [0x302010], 0x2222
        mov dword [0x303010], 0x3333
        mov dword [0x800040], 0x8888    ; behind the 4 MiB page
        ; PT: identity 0-4 MiB, writable; PD[0] -> PT, PD[1] = 4 MiB page at
        ; physical 8 MiB.
        mov edi, PT32
        mov eax, PG_P | PG_RW
        mov ecx, 1024
.pt:    stosd
        add eax, 0x1000
        loop .pt
        mov edi, PD32
        xor eax, eax
        mov ecx, 1024
        rep stosd
        mov dword [PD32], PT32 | PG_P | PG_RW
        mov dword [PD32 + 4], 0x800000 | PG_PS | PG_P | PG_RW
        mov dword [PT32 + 0x300 * 4], 0x302000 | PG_P | PG_RW   ; alias
        mov dword [PT32 + 0x301 * 4], 0x301000 | PG_P | PG_RW   ; A/D clear
        mov eax, cr4
        or eax, CR4_PSE
        mov cr4, eax
        mov eax, PD32
        mov cr3, eax
        mov eax, cr0
        or eax, CR0_PG
        mov cr0, eax
        PRINTLN "  paging on"

        ; Aliasing.
        CHECK32 1, dword [0x300010], 0x2222
        mov dword [0x300020], 0xA11A5
        CHECK32 2, dword [0x302020], 0xA11A5
        ; 4 MiB page: linear 4 MiB + 0x40 = physical 8 MiB + 0x40.
        CHECK32 3, dword [0x400040], 0x8888
        mov dword [0x400044], 0x4444
        mov eax, cr0
        and eax, ~CR0_PG
        mov cr0, eax
        CHECK32 4, dword [0x800044], 0x4444
        mov eax, cr0
        or eax, CR0_PG
        mov cr0, eax
        PRINTLN "  aliases and 4 MiB page: ok"

        ; Accessed and dirty bits.
        mov eax, [0x301000]             ; read
        mov eax, [PT32 + 0x301 * 4]
        and eax, PG_A | PG_D
        CHECK32 5, eax, PG_A
        mov dword [0x301000], 1         ; write
        mov eax, [PT32 + 0x301 * 4]
        and eax, PG_A | PG_D
        CHECK32 6, eax, PG_A | PG_D
        mov eax, [PD32]
        and eax, PG_A
        CHECK32 7, eax, PG_A            ; the PDE's A bit
        mov eax, [PD32 + 4]
        and eax, PG_A | PG_D
        CHECK32 8, eax, PG_A | PG_D     ; the 4 MiB page was read and written
        PRINTLN "  accessed and dirty bits: ok"

        ; INVLPG and CR3 reload.
        CHECK32 9, dword [0x300010], 0x2222     ; (cached now, perhaps)
        mov dword [PT32 + 0x300 * 4], 0x303000 | PG_P | PG_RW
        invlpg [0x300010]
        CHECK32 10, dword [0x300010], 0x3333
        mov dword [PT32 + 0x300 * 4], 0x302000 | PG_P | PG_RW
        mov eax, cr3
        mov cr3, eax
        CHECK32 11, dword [0x300010], 0x2222
        PRINTLN "  INVLPG and CR3 reload: ok"

        ; Global pages.
        mov eax, cr4
        or eax, CR4_PGE
        mov cr4, eax
        mov dword [PT32 + 0x304 * 4], 0x302000 | PG_G | PG_P | PG_RW
        CHECK32 12, dword [0x304010], 0x2222
        mov dword [PT32 + 0x304 * 4], 0x303000 | PG_G | PG_P | PG_RW
        invlpg [0x304010]
        CHECK32 13, dword [0x304010], 0x3333
        mov dword [PT32 + 0x304 * 4], 0x302000 | PG_G | PG_P | PG_RW
        mov eax, cr4                    ; toggling PGE flushes global entries
        and eax, ~CR4_PGE
        mov cr4, eax
        or eax, CR4_PGE
        mov cr4, eax
        CHECK32 14, dword [0x304010], 0x2222
        PRINTLN "  global page: INVLPG and CR4.PGE toggle: ok"

        mov eax, cr0
        and eax, ~CR0_PG
        mov cr0, eax
        mov eax, cr4
        and eax, ~(CR4_PGE | CR4_PSE)
        mov cr4, eax

;--- 4-level paging ----------------------------------------------------------
        PRINTLN "pagewalk: 4-level paging"
        ENTER_LM64
        ; PML4[1] and PML4[511] -> PDPT64 -> PD64 -> PT64; PT64[0] -> 0x302000,
        ; PT64[1] -> 0x301000 (A/D clear).
        mov rdi, PDPT64
        xor eax, eax
        mov ecx, 3 * 4096 / 8
        rep stosq
        mov qword [PDPT64], PD64 | PG_P | PG_RW
        mov qword [PD64], PT64 | PG_P | PG_RW
        mov qword [PT64], 0x302000 | PG_P | PG_RW
        mov qword [PT64 + 8], 0x301000 | PG_P | PG_RW
        mov qword [JANUS_PT_BASE + 1 * 8], PDPT64 | PG_P | PG_RW
        mov qword [JANUS_PT_BASE + 511 * 8], PDPT64 | PG_P | PG_RW
        mov rax, cr3
        mov cr3, rax

        mov rbx, 0x8000000000           ; PML4[1]
        mov rsi, 0xFFFFFF8000000000     ; PML4[511]
        CHECK32 20, dword [rbx + 0x10], 0x2222
        CHECK32 21, dword [rsi + 0x10], 0x2222
        mov dword [rbx + 0x30], 0x5A5A
        CHECK32 22, dword [rsi + 0x30], 0x5A5A
        CHECK32 23, dword [0x302030], 0x5A5A
        PRINTLN "  aliases (also at 0xffffff8000000000): ok"

        mov qword [PT64 + 8], 0x301000 | PG_P | PG_RW
        invlpg [rbx + 0x1000]
        mov eax, [rbx + 0x1000]         ; read
        mov rax, [PT64 + 8]
        and eax, PG_A | PG_D
        CHECK32 24, eax, PG_A
        mov dword [rbx + 0x1000], 2     ; write
        mov rax, [PT64 + 8]
        and eax, PG_A | PG_D
        CHECK32 25, eax, PG_A | PG_D
        mov rax, [JANUS_PT_BASE + 1 * 8]
        and eax, PG_A
        CHECK32 26, eax, PG_A
        mov rax, [PDPT64]
        and eax, PG_A
        CHECK32 27, eax, PG_A
        mov rax, [PD64]
        and eax, PG_A
        CHECK32 28, eax, PG_A
        PRINTLN "  accessed and dirty bits at every level: ok"

        mov qword [PT64], 0x303000 | PG_P | PG_RW
        invlpg [rbx]
        CHECK32 29, dword [rbx + 0x10], 0x3333
        mov qword [PT64], 0x302000 | PG_P | PG_RW
        mov rax, cr3
        mov cr3, rax
        CHECK32 30, dword [rbx + 0x10], 0x2222
        PRINTLN "  INVLPG and CR3 reload: ok"

        TEST_PASS
