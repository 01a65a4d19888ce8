; pci.asm - the PCI root bus through configuration mechanism #1 (real mode).
;
; What an OS does to find PCI without ACPI (Linux's pci_check_type1 and
; pci_sanity_check, then its scan of bus 0):
;   * a byte write to 0xCFB is not CONFIG_ADDRESS; a dword write to 0xCF8 is,
;     and reads back (enable bit, bus/device/function/register; the two low
;     bits read 0);
;   * 00:00.0 is the host bridge: vendor 1b36, device 0008, class 06 00 00,
;     header type 0, read as a dword and as bytes and words at offsets
;     0xCFC-0xCFF;
;   * its command register keeps what is written (memory, bus master);
;   * with the enable bit clear, CONFIG_DATA reads all ones;
;   * a scan of the 32 slots of bus 0 finds exactly the host bridge, and other
;     functions and buses read all ones.
;   * in 32-bit protected mode, ECAM (at 0xC0000000, where the board puts it
;     and the MCFG says) gives the same 64 header bytes of 00:00.0 as
;     mechanism #1, a command register write through ECAM reads back through
;     mechanism #1, and absent devices read all ones.
;
; Expected outcome: exit status 0; output includes
;   pci: 00:00.0 1b36:0008 class 060000
;   pci: 1 device on bus 0
;   pci: ECAM matches mechanism #1
;   pci: PASS

%define TEST_NAME "pci"
%include "janus.inc"

ECAM            equ 0xC0000000      ; bus 0 (board::PciLayout, the MCFG)
CONFIG_ADDRESS  equ 0xCF8
CONFIG_DATA     equ 0xCFC
ENABLE          equ 0x80000000

; CFG_ADDR device, register: latch 00:device.0 register in CONFIG_ADDRESS
%macro CFG_ADDR 2
        mov dx, CONFIG_ADDRESS
        mov eax, ENABLE | ((%1) << 11) | (%2)
        out dx, eax
%endmacro

main:
        PRINTLN "pci: configuration mechanism #1"

;--- CONFIG_ADDRESS -------------------------------------------------------------------
        mov dx, CONFIG_ADDRESS
        mov eax, ENABLE
        out dx, eax
        mov dx, CONFIG_ADDRESS + 3      ; a byte write at 0xCFB is not CONFIG_ADDRESS
        mov al, 0x01
        out dx, al
        mov dx, CONFIG_ADDRESS
        in eax, dx
        CHECK32 1, eax, ENABLE
        mov eax, ENABLE | (3 << 16) | (5 << 11) | (2 << 8) | 0x47
        out dx, eax
        in eax, dx
        CHECK32 2, eax, ENABLE | (3 << 16) | (5 << 11) | (2 << 8) | 0x44

;--- the host bridge ------------------------------------------------------------------
        CFG_ADDR 0, 0x00
        mov dx, CONFIG_DATA
        in eax, dx
        mov [id], eax
        CHECK32 3, eax, 0x00081B36
        mov dx, CONFIG_DATA + 2         ; the device ID as a word, then bytes
        xor eax, eax
        in ax, dx
        CHECK32 4, eax, 0x0008
        mov dx, CONFIG_DATA + 1
        in al, dx
        CHECK8 5, al, 0x1B
        CFG_ADDR 0, 0x08
        mov dx, CONFIG_DATA
        in eax, dx
        shr eax, 8
        mov [class], eax
        CHECK32 6, eax, 0x060000
        CFG_ADDR 0, 0x0C
        mov dx, CONFIG_DATA + 2         ; header type: byte 0x0E
        in al, dx
        CHECK8 7, al, 0
        PRINT "pci: 00:00.0 "
        PRINT_HEX 16, [id]
        PUTC ':'
        PRINT_HEX 16, [id + 2]
        PRINT " class "
        PRINT_HEX 8, [class + 2]
        PRINT_HEX 16, [class]
        NEWLINE

;--- the command register keeps what is written -----------------------------------------
        CFG_ADDR 0, 0x04
        mov dx, CONFIG_DATA
        mov ax, 0x0006                  ; memory space, bus master
        out dx, ax
        xor eax, eax
        in ax, dx
        CHECK32 8, eax, 0x0006
        xor ax, ax
        out dx, ax
        in ax, dx
        CHECK32 9, eax, 0

;--- enable bit clear: all ones -----------------------------------------------------------
        mov dx, CONFIG_ADDRESS
        xor eax, eax
        out dx, eax
        mov dx, CONFIG_DATA
        in eax, dx
        CHECK32 10, eax, 0xFFFFFFFF

;--- scan bus 0 ----------------------------------------------------------------------------
        xor ecx, ecx                    ; device
        xor ebx, ebx                    ; devices found
.scan:  mov eax, ecx
        shl eax, 11
        or eax, ENABLE
        mov dx, CONFIG_ADDRESS
        out dx, eax
        mov dx, CONFIG_DATA
        in eax, dx
        cmp ax, 0xFFFF
        je .empty
        inc ebx
.empty: inc ecx
        cmp ecx, 32
        jb .scan
        CHECK32 11, ebx, 1
        PRINT "pci: "
        PRINT_DEC ebx
        PRINTLN " device on bus 0"

;--- other functions and buses are absent ---------------------------------------------------
        mov dx, CONFIG_ADDRESS
        mov eax, ENABLE | (1 << 8)      ; 00:00.1
        out dx, eax
        mov dx, CONFIG_DATA
        in eax, dx
        CHECK32 12, eax, 0xFFFFFFFF
        mov dx, CONFIG_ADDRESS
        mov eax, ENABLE | (1 << 16)     ; 01:00.0
        out dx, eax
        mov dx, CONFIG_DATA
        in eax, dx
        CHECK32 13, eax, 0xFFFFFFFF

;--- ECAM, in 32-bit protected mode ------------------------------------------------------------
        ENTER_PM32
        xor ebx, ebx                    ; register
.cmp:   mov eax, ebx
        or eax, ENABLE
        mov dx, CONFIG_ADDRESS
        out dx, eax
        mov dx, CONFIG_DATA
        in eax, dx
        mov ecx, [ECAM + ebx]
        CHECK32 14, ecx, eax
        add ebx, 4
        cmp ebx, 64
        jb .cmp
        mov eax, [ECAM]
        CHECK32 15, eax, 0x00081B36
        mov word [ECAM + 4], 0x0002     ; memory space, through ECAM
        mov dx, CONFIG_ADDRESS
        mov eax, ENABLE | 0x04
        out dx, eax
        mov dx, CONFIG_DATA
        xor eax, eax
        in ax, dx
        CHECK32 16, eax, 0x0002
        mov word [ECAM + 4], 0
        mov eax, [ECAM + (1 << 15)]     ; 00:01.0
        CHECK32 17, eax, 0xFFFFFFFF
        movzx eax, byte [ECAM + 0x0B]   ; class byte
        CHECK32 18, eax, 0x06
        PRINTLN "pci: ECAM matches mechanism #1"

        TEST_PASS

                align 4
id:             dd 0
class:          dd 0
