; virtio_hostile.asm - a hostile driver for the virtio-blk function at 00:01.0
; (32-bit protected mode; janus runs it with one --drive of at least 4 KiB).
;
; It places BAR 0, negotiates VERSION_1, sets up queue 0 (8 entries) and makes
; four chains available at once:
;   head 0: a looping chain (0 -> 1 -> 0 ...);
;   head 2: a data buffer outside RAM (at 2 GiB);
;   head 4: a read past the end of the disk (sector 0x7fffffff);
;   head 7: a read whose data buffer overlaps its own header.
; The device must return all four (the loop and the out-of-RAM one with no
; bytes written, the past-the-end read with VIRTIO_BLK_S_IOERR, the
; overlapping one served) and stay up. Then the driver index jumps 100
; entries ahead: the device sets DEVICE_NEEDS_RESET; a reset clears it; a
; queue size of 6 (not a power of two) sets it again at DRIVER_OK.
;
; Expected outcome: exit status 0; output includes
;   virtio_hostile: four hostile chains returned
;   virtio_hostile: NEEDS_RESET after a broken ring
;   virtio_hostile: PASS

%define TEST_NAME "virtio_hostile"
%include "janus.inc"

ECAM            equ 0xC0000000
FN              equ ECAM + (1 << 15)    ; 00:01.0
BAR             equ 0xE0000000          ; in the PCI 32-bit window (0xDEC00000-0xFEBFFFFF)
VCFG          equ BAR                 ; virtio-pci common configuration
NOTIFY          equ BAR + 0x3000        ; queue 0's notify address
DESC            equ 0x10000
AVAIL           equ 0x11000
USED            equ 0x12000
BUF             equ 0x20000
NEEDS_RESET     equ 0x40

; DESCR index, addr, len, flags, next
%macro DESCR 5
        mov dword [DESC + 16 * %1], %2
        mov dword [DESC + 16 * %1 + 4], 0
        mov dword [DESC + 16 * %1 + 8], %3
        mov word [DESC + 16 * %1 + 12], %4
        mov word [DESC + 16 * %1 + 14], %5
%endmacro

; SETUP_QUEUE size, check: reset, negotiate VERSION_1 (check number `check`:
; FEATURES_OK sticks), place queue 0, DRIVER_OK.
%macro SETUP_QUEUE 2
        mov byte [VCFG + 0x14], 0
        mov byte [VCFG + 0x14], 3             ; ACKNOWLEDGE | DRIVER
        mov dword [VCFG + 0x08], 1            ; driver_feature_select
        mov dword [VCFG + 0x0c], 1            ; VERSION_1 (bit 32)
        mov byte [VCFG + 0x14], 0x0b          ; | FEATURES_OK
        movzx eax, byte [VCFG + 0x14]
        and eax, 8
        CHECK32 %2, eax, 8
        mov word [VCFG + 0x16], 0             ; queue_select
        mov word [VCFG + 0x18], %1            ; queue_size
        mov dword [VCFG + 0x20], DESC
        mov dword [VCFG + 0x24], 0
        mov dword [VCFG + 0x28], AVAIL
        mov dword [VCFG + 0x2c], 0
        mov dword [VCFG + 0x30], USED
        mov dword [VCFG + 0x34], 0
        mov word [VCFG + 0x1c], 1             ; queue_enable
        mov byte [VCFG + 0x14], 0x0f          ; | DRIVER_OK
%endmacro

main:
        ENTER_PM32
        mov eax, [FN]
        CHECK32 1, eax, 0x10421AF4              ; virtio-blk, modern
        mov dword [FN + 0x10], BAR
        mov word [FN + 0x04], 0x0006            ; memory space, bus master
        movzx eax, word [VCFG + 0x12]         ; num_queues
        CHECK32 2, eax, 1
        SETUP_QUEUE 8, 3

        DESCR 0, BUF, 16, 1, 1                  ; head 0: the loop
        DESCR 1, BUF, 16, 1, 0
        DESCR 2, BUF + 0x100, 16, 1, 3          ; head 2: header, data at 2 GiB,
        DESCR 3, 0x80000000, 512, 3, 5
        DESCR 5, BUF + 0x200, 1, 2, 0           ; status (shared with head 7)
        DESCR 4, BUF + 0x800, 48, 4, 0          ; head 4: an indirect table
        mov dword [BUF + 0x800], BUF + 0x300    ;   header: read sector 0x7fffffff
        mov dword [BUF + 0x808], 16
        mov word [BUF + 0x80c], 1
        mov word [BUF + 0x80e], 1
        mov dword [BUF + 0x810], BUF + 0x1000   ;   data
        mov dword [BUF + 0x818], 512
        mov word [BUF + 0x81c], 3
        mov word [BUF + 0x81e], 2
        mov dword [BUF + 0x820], BUF + 0x400    ;   status
        mov dword [BUF + 0x828], 1
        mov word [BUF + 0x82c], 2
        mov dword [BUF + 0x308], 0x7fffffff
        DESCR 7, BUF + 0x500, 16, 1, 6          ; head 7: header at 0x500 (read
        DESCR 6, BUF + 0x500, 512, 3, 5         ; sector 0), its data over it
        mov byte [BUF + 0x200], 0xee            ; statuses not yet written
        mov byte [BUF + 0x400], 0xee

        mov word [AVAIL + 4], 0
        mov word [AVAIL + 6], 2
        mov word [AVAIL + 8], 4
        mov word [AVAIL + 10], 7
        mov word [AVAIL + 2], 4
        mov word [NOTIFY], 0

        mov ecx, 10000000
.wait:  cmp word [USED + 2], 4
        je .used
        pause
        dec ecx
        jnz .wait
        FAIL 4, "the device never returned the chains"
.used:  mov eax, [USED + 4]                     ; the loop: returned, nothing written
        CHECK32 5, eax, 0
        mov eax, [USED + 8]
        CHECK32 6, eax, 0
        mov eax, [USED + 12]                    ; out of RAM
        CHECK32 7, eax, 2
        mov eax, [USED + 16]
        CHECK32 8, eax, 0
        mov eax, [USED + 20]                    ; past the end: the status alone
        CHECK32 9, eax, 4
        mov eax, [USED + 24]
        CHECK32 10, eax, 1
        movzx eax, byte [BUF + 0x400]
        CHECK32 11, eax, 1                      ; VIRTIO_BLK_S_IOERR
        mov eax, [USED + 28]                    ; overlapping: served
        CHECK32 12, eax, 7
        mov eax, [USED + 32]
        CHECK32 13, eax, 513
        movzx eax, byte [BUF + 0x200]
        CHECK32 14, eax, 0                      ; VIRTIO_BLK_S_OK
        mov eax, [BUF + 0x500]                  ; the disk's first bytes landed
        CHECK32 18, eax, 0x5A5A5A5A
        PRINTLN "virtio_hostile: four hostile chains returned"

        mov word [AVAIL + 2], 104               ; 100 entries ahead
        mov word [NOTIFY], 0
        mov ecx, 10000000
.nr:    test byte [VCFG + 0x14], NEEDS_RESET
        jnz .broken
        pause
        dec ecx
        jnz .nr
        FAIL 15, "no DEVICE_NEEDS_RESET after a broken ring"
.broken:
        mov byte [VCFG + 0x14], 0
        movzx eax, byte [VCFG + 0x14]
        CHECK32 16, eax, 0
        mov word [AVAIL + 2], 0
        SETUP_QUEUE 6, 19
        mov ecx, 10000000
.nr2:   test byte [VCFG + 0x14], NEEDS_RESET
        jnz .broken2
        pause
        dec ecx
        jnz .nr2
        FAIL 17, "no DEVICE_NEEDS_RESET after a bad queue size"
.broken2:
        PRINTLN "virtio_hostile: NEEDS_RESET after a broken ring"
        mov byte [VCFG + 0x14], 0
        TEST_PASS
