; fw_cfg.asm - QEMU's firmware configuration interface (real mode).
;
; Reads the signature and the interface id through the ports (selector 0x510,
; data 0x511), the number of CPUs through the ports and through the DMA
; interface (a big-endian descriptor whose address is written to 0x514/0x518),
; the signature again by DMA with SKIP, checks that a DMA WRITE is refused with
; the ERROR bit, and that the file directory lists etc/table-loader.
;
; Expected outcome: exit status 0; output includes
;   fw_cfg: CPUs by port N, by DMA N
;   fw_cfg: PASS
; where N is the machine's vCPU count (--smp).

%define TEST_NAME "fw_cfg"
%include "janus.inc"

FW_CFG_SEL      equ 0x510
FW_CFG_DATA     equ 0x511
FW_CFG_DMA_HI   equ 0x514
FW_CFG_DMA_LO   equ 0x518
KEY_SIGNATURE   equ 0x00
KEY_ID          equ 0x01
KEY_NB_CPUS     equ 0x05
KEY_FILE_DIR    equ 0x19
DMA_ERROR       equ 1
DMA_READ        equ 2
DMA_SKIP        equ 4
DMA_SELECT      equ 8
DMA_WRITE       equ 0x10

; DMA control, length, address: fill the descriptor (big-endian) and run it.
%macro DMA 3
        mov eax, %1
        bswap eax
        mov [desc], eax
        mov eax, %2
        bswap eax
        mov [desc + 4], eax
        mov dword [desc + 8], 0
        mov eax, %3
        bswap eax
        mov [desc + 12], eax
        call run_dma
%endmacro

main:
        PRINTLN "fw_cfg: signature, id, CPU count by port and by DMA"

;--- the port interface ---------------------------------------------------------
        mov ax, KEY_SIGNATURE
        mov dx, FW_CFG_SEL
        out dx, ax
        mov dx, FW_CFG_DATA
        mov cx, 4
        mov di, buf
.sig:   in al, dx
        mov [di], al
        inc di
        loop .sig
        CHECK32 1, dword [buf], 'QEMU'
        mov ax, KEY_ID
        mov dx, FW_CFG_SEL
        out dx, ax
        mov dx, FW_CFG_DATA
        in al, dx
        test al, 2
        jnz .dma_ok
        FAIL 2, "the id does not announce DMA"
.dma_ok:
        mov ax, KEY_NB_CPUS
        mov dx, FW_CFG_SEL
        out dx, ax
        mov dx, FW_CFG_DATA
        in al, dx
        mov ah, al
        in al, dx
        xchg al, ah
        mov [cpus_port], ax
        cmp ax, 1
        jae .some
        FAIL 3, "no CPUs by port"
.some:

;--- the DMA interface ----------------------------------------------------------
        mov word [buf], 0xffff
        DMA (KEY_NB_CPUS << 16) | DMA_SELECT | DMA_READ, 2, buf
        CHECK32 4, dword [desc], 0
        mov ax, [buf]
        mov [cpus_dma], ax
        CHECK16 5, ax, [cpus_port]
        ; The signature's last three bytes: SKIP 1, then READ 3 (one zero past the end).
        mov dword [buf], 0xffffffff
        DMA (KEY_SIGNATURE << 16) | DMA_SELECT | DMA_SKIP, 1, 0
        DMA DMA_READ, 4, buf
        CHECK32 6, dword [buf], 'EMU'
        ; No item is writable.
        DMA (KEY_NB_CPUS << 16) | DMA_SELECT | DMA_WRITE, 2, buf
        mov eax, [desc]
        bswap eax
        CHECK32 7, eax, DMA_ERROR

;--- the file directory lists etc/table-loader --------------------------------
        DMA (KEY_FILE_DIR << 16) | DMA_SELECT | DMA_READ, 4, buf
        mov ecx, [buf]
        bswap ecx
.next:  jecxz .missing
        DMA DMA_READ, 64, entry
        mov si, entry + 8
        mov di, want
        push cx
        mov cx, want_len
        repe cmpsb
        pop cx
        je .found
        dec ecx
        jmp .next
.missing:
        FAIL 8, "etc/table-loader not in the file directory"
.found:
        PRINT "fw_cfg: CPUs by port "
        movzx eax, word [cpus_port]
        PRINT_DEC eax
        PRINT ", by DMA "
        movzx eax, word [cpus_dma]
        PRINT_DEC eax
        NEWLINE
        TEST_PASS

; Runs the descriptor at `desc`: its address, big-endian, high half then low.
run_dma:
        push eax
        push dx
        xor eax, eax
        mov dx, FW_CFG_DMA_HI
        out dx, eax
        mov eax, desc
        bswap eax
        mov dx, FW_CFG_DMA_LO
        out dx, eax
        pop dx
        pop eax
        ret

want:   db "etc/table-loader", 0
want_len equ $ - want

        align 16
desc:   times 16 db 0
buf:    times 8 db 0
entry:  times 64 db 0
cpus_port: dw 0
cpus_dma:  dw 0
