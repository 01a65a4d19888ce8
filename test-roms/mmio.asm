; mmio.asm - unassigned MMIO checks (32-bit protected mode).
;
; Physical 0xD0000000 lies in the PCI hole below 4 GiB, where janus has
; neither RAM nor a device: reads must return all ones at every width and
; writes must be dropped. Also checks that ordinary RAM (below 1 MiB and
; above it) still reads back what was written, and that string instructions
; (rep movsd / rep stosd) work against the hole.
;
; Expected outcome: exit status 0; output ends with
;   mmio: PASS
;
; Under QEMU the hole reads as 0 instead of all ones: assembled with
; -DJANUS_QEMU_COMPAT the checks expect QEMU's 0 (writes must still be
; dropped).

%define TEST_NAME "mmio"
%include "janus.inc"

HOLE            equ 0xD0000000

%ifndef JANUS_QEMU_COMPAT
  %define ONES_DWORD 0xFFFFFFFF         ; what the hole reads as
  %define ONES_WORD  0xFFFF
  %define ONES_BYTE  0xFF
%else
  %define ONES_DWORD 0
  %define ONES_WORD  0
  %define ONES_BYTE  0
%endif

main:
        PRINTLN "mmio: unassigned MMIO at 0xD0000000"
        ENTER_PM32                      ; bits 32: flat 4 GiB segments

;--- reads ---------------------------------------------------------------------
        PRINTLN "  reads"
        mov esi, HOLE
        mov eax, [esi]
        CHECK32 1, eax, ONES_DWORD
        movzx eax, word [esi + 2]
        CHECK32 2, eax, ONES_WORD
        movzx eax, byte [esi + 1]
        CHECK32 3, eax, ONES_BYTE
        mov eax, [esi + 0x0FFD]         ; unaligned dword
        CHECK32 4, eax, ONES_DWORD

;--- writes are dropped ------------------------------------------------------------
        PRINTLN "  writes"
        mov dword [esi], 0x12345678
        mov eax, [esi]
        CHECK32 5, eax, ONES_DWORD
        mov word [esi + 0x10], 0x1234
        movzx eax, word [esi + 0x10]
        CHECK32 6, eax, ONES_WORD
        mov byte [esi + 0x21], 0x5A
        movzx eax, byte [esi + 0x21]
        CHECK32 7, eax, ONES_BYTE
        mov eax, 0xA5A5A5A5
        xchg [esi + 0x30], eax          ; read-modify-write: returns old value
        CHECK32 8, eax, ONES_DWORD
        CHECK32 9, dword [esi + 0x30], ONES_DWORD

;--- string instructions ---------------------------------------------------------------
        PRINTLN "  rep movsd / rep stosd"
        cld
        mov edi, 0x40                   ; rep stosd into the hole
        add edi, esi
        mov eax, 0x00C0FFEE
        mov ecx, 4
        rep stosd
        CHECK32 10, dword [esi + 0x4C], ONES_DWORD
        mov edi, buf                    ; rep movsd out of the hole
        mov ecx, 4
        rep movsd
        CHECK32 11, esi, HOLE + 16
        CHECK32 12, dword [buf], ONES_DWORD
        CHECK32 13, dword [buf + 12], ONES_DWORD
        CHECK32 14, dword [buf + 16], 0x600DF00D ; untouched guard dword

;--- RAM still works -----------------------------------------------------------------------
        PRINTLN "  RAM"
        mov dword [0x00080000], 0x11223344      ; below 1 MiB
        CHECK32 15, dword [0x00080000], 0x11223344
        mov dword [0x00200000], 0x55667788      ; 2 MiB
        CHECK32 16, dword [0x00200000], 0x55667788
        mov dword [0x00F00010], 0x99AABBCC      ; just under 16 MiB
        CHECK32 17, dword [0x00F00010], 0x99AABBCC
        CHECK32 18, dword [0x00200000], 0x55667788 ; no aliasing between them
        mov byte [0x00200001], 0
        CHECK32 19, dword [0x00200000], 0x55660088

        TEST_PASS

        align 4
buf:            times 4 dd 0
                dd 0x600DF00D
