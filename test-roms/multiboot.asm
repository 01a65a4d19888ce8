; multiboot.asm - a multiboot v1 kernel that checks what its loader handed over.
;
; Not a flat test image: start it with janus's kernel loader, e.g.
;   janus run --kernel test-roms/multiboot.bin --append janus-multiboot-test \
;             --initrd test-roms/multiboot.asm
; The header uses the a.out kludge (flag 16), so the flat file itself is the
; kernel: loaded at 0x7C00 (where janus.inc assembles everything), 4 KiB of
; bss after it, entered at mb_entry in 32-bit protected mode.
;
; Checks, in order: EAX = 0x2BADB002; IF = 0; CR0.PE = 1, CR0.PG = 0; the info
; flags (memory, cmdline, mods, mmap, loader name); mem_lower = 639 KiB; the
; memory map (size-prefixed entries, RAM at 0 of 0x9FC00 bytes, RAM at 1 MiB
; of mem_upper KiB, at least 3 entries, exactly mmap_length bytes); the
; command line contains "janus-multiboot-test"; one page-aligned module named
; "initrd" that overlaps neither this image nor the info; the loader name
; "janus"; the bss is zeroed; A20 is enabled. Every value is printed first.
;
; Expected outcome: exit status 0; output ends with
;   multiboot: PASS
; and includes "  module: 0x........-0x........ (N bytes) "initrd"" where N
; is the --initrd file's size. Run as a flat image it fails check 1.

%define TEST_NAME "multiboot"
%include "janus.inc"

MB_HEADER_MAGIC equ 0x1BADB002
MB_LOADER_MAGIC equ 0x2BADB002
MB_FLAGS        equ (1 << 0) | (1 << 1) | (1 << 16) ; aligned modules, memory info, address fields

; multiboot_info fields used here.
MBI_FLAGS       equ 0
MBI_MEM_LOWER   equ 4
MBI_MEM_UPPER   equ 8
MBI_CMDLINE     equ 16
MBI_MODS_COUNT  equ 20
MBI_MODS_ADDR   equ 24
MBI_MMAP_LENGTH equ 44
MBI_MMAP_ADDR   equ 48
MBI_LOADER_NAME equ 64
MBI_SIZE        equ 88              ; up to the APM table: what this test reads

INFO_NEEDED     equ (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)

BSS_SIZE        equ 0x1000

main:                                   ; real mode: started as a flat image
        FAIL 1, "not started by a multiboot loader (use janus run --kernel)"

;------------------------------------------------------------------------------
; The multiboot header with the a.out-kludge address fields.
;------------------------------------------------------------------------------
        align 4
mb_header:
        dd MB_HEADER_MAGIC
        dd MB_FLAGS
        dd -(MB_HEADER_MAGIC + MB_FLAGS)
        dd mb_header                    ; header_addr
        dd JANUS_LOAD_ADDR              ; load_addr: the file starts at 0x7C00
        dd image_end                    ; load_end_addr
        dd bss_end                      ; bss_end_addr
        dd mb_entry                     ; entry_addr

        bits 32
mb_entry:
        mov esp, bss_end                ; the loader gives no stack
        CHECK32 2, eax, MB_LOADER_MAGIC
        CHECK_FLAGS 3, 0x200, 0         ; interrupts off
        mov eax, cr0
        and eax, CR0_PE | CR0_PG
        CHECK32 4, eax, CR0_PE
        PRINT "multiboot: entered by a multiboot loader, info at 0x"
        PRINT_HEX 32, ebx
        NEWLINE

;--- flags and memory sizes ---------------------------------------------------
        PRINT "  flags 0x"
        PRINT_HEX 32, dword [ebx + MBI_FLAGS]
        PRINT ", mem_lower "
        PRINT_DEC dword [ebx + MBI_MEM_LOWER]
        PRINT " KiB, mem_upper "
        PRINT_DEC dword [ebx + MBI_MEM_UPPER]
        PRINTLN " KiB"
        mov eax, [ebx + MBI_FLAGS]
        and eax, INFO_NEEDED
        CHECK32 5, eax, INFO_NEEDED
        CHECK32 6, dword [ebx + MBI_MEM_LOWER], 639

;--- the memory map -----------------------------------------------------------
        mov esi, [ebx + MBI_MMAP_ADDR]
        mov edi, esi
        add edi, [ebx + MBI_MMAP_LENGTH] ; end of the map
        xor ebp, ebp                    ; bit 0: RAM at 0 seen, bit 1: RAM at 1 MiB seen
        xor edx, edx                    ; entries
.mmap:  cmp esi, edi
        jae .mmap_done
        PRINT "  mmap 0x"
        PRINT_HEX 32, dword [esi + 8]
        PRINT_HEX 32, dword [esi + 4]
        PRINT " +0x"
        PRINT_HEX 32, dword [esi + 16]
        PRINT_HEX 32, dword [esi + 12]
        PRINT " type "
        PRINT_DEC dword [esi + 20]
        NEWLINE
        cmp dword [esi], 20             ; the size field counts base, length, type
        CHECK_CC 7, ae
        cmp dword [esi + 8], 0          ; entries below 4 GiB only from here on
        jne .next
        cmp dword [esi + 4], 0
        jne .not_low
        CHECK32 8, dword [esi + 20], 1
        CHECK32 9, dword [esi + 12], 0x9FC00
        or ebp, 1
.not_low:
        cmp dword [esi + 4], 0x100000
        jne .next
        CHECK32 10, dword [esi + 20], 1
        mov ecx, [ebx + MBI_MEM_UPPER]
        shl ecx, 10
        CHECK32 11, dword [esi + 12], ecx ; mem_upper agrees with the map
        or ebp, 2
.next:  inc edx
        add esi, [esi]
        add esi, 4
        jmp .mmap
.mmap_done:
        CHECK32 12, esi, edi            ; the last entry ends at mmap_length
        CHECK32 13, ebp, 3
        cmp edx, 3
        CHECK_CC 14, ae

;--- the command line ---------------------------------------------------------
        PRINT "  cmdline: "
        mov esi, [ebx + MBI_CMDLINE]
        call s32_puts
        NEWLINE
.find:  cmp byte [esi], 0
        je .not_found
        push esi
        mov edi, needle
        mov ecx, needle_len
        repe cmpsb
        pop esi
        je .found
        inc esi
        jmp .find
.not_found:
        FAIL 15, "the command line lacks janus-multiboot-test"
.found:

;--- the module ---------------------------------------------------------------
        CHECK32 16, dword [ebx + MBI_MODS_COUNT], 1
        mov esi, [ebx + MBI_MODS_ADDR]
        PRINT "  module: 0x"
        PRINT_HEX 32, dword [esi]
        PRINT "-0x"
        PRINT_HEX 32, dword [esi + 4]
        PRINT " ("
        mov eax, [esi + 4]
        sub eax, [esi]
        PRINT_DEC eax
        PRINT ' bytes) "'
        push esi
        mov esi, [esi + 8]
        call s32_puts
        pop esi
        PRINTLN '"'
        test dword [esi], 0xFFF
        CHECK_CC 17, z                  ; page aligned, as header flag 0 asks
        mov eax, [esi + 4]
        cmp eax, [esi]
        CHECK_CC 18, a                  ; not empty
        push esi
        mov esi, [esi + 8]
        mov edi, initrd_name
        call streq
        pop esi
        CHECK_CC 19, e
        ; Neither the module nor the info may overlap this image.
        mov eax, [esi]
        mov ecx, [esi + 4]
        call outside_image
        CHECK_CC 20, nc
        mov eax, ebx
        lea ecx, [ebx + MBI_SIZE]
        call outside_image
        CHECK_CC 21, nc

;--- the loader name, bss, A20 ------------------------------------------------
        PRINT "  boot loader: "
        mov esi, [ebx + MBI_LOADER_NAME]
        call s32_puts
        NEWLINE
        mov edi, loader_name
        call streq
        CHECK_CC 22, e
        CHECK32 23, dword [bss_start], 0
        ; With A20 off, 0x300600 would alias 0x200600.
        mov dword [0x200600], 0x11111111
        mov dword [0x300600], 0x22222222
        CHECK32 24, dword [0x200600], 0x11111111
        TEST_PASS

; streq: ZF = 1 if the zero-terminated strings at ESI and EDI are equal.
; Preserves all registers but the flags.
streq:
        push eax
        push esi
        push edi
.loop:  mov al, [esi]
        cmp al, [edi]
        jne .done
        inc esi
        inc edi
        test al, al
        jnz .loop                       ; equal so far; ZF = 1 at the end
.done:  pop edi
        pop esi
        pop eax
        ret

; outside_image: CF = 0 if [EAX, ECX) does not overlap [load address, bss_end).
outside_image:
        cmp ecx, JANUS_LOAD_ADDR
        jbe .ok                         ; ends at or below the image
        cmp eax, bss_end
        jae .ok                         ; starts at or above the bss end
        stc
        ret
.ok:    clc
        ret

needle:         db "janus-multiboot-test"
needle_len      equ $ - needle
initrd_name:    db "initrd", 0
loader_name:    db "janus", 0

        align 16
image_end:
bss_start       equ image_end
bss_end         equ image_end + BSS_SIZE
