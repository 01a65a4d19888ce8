; demo.asm - the bundled janus demo guest.
;
; A tour of what a guest can do under janus with no BIOS at all: print a
; banner over the serial port, identify the CPU with CPUID, read the memory
; size from CMOS, then compute something in each CPU mode:
;   real mode (16-bit)       a sieve of Eratosthenes: the primes below 100
;   protected mode (32-bit)  CRC-32 of "123456789" (the standard check value)
;   long mode (64-bit)       20! with 64-bit multiplies, in hex and decimal
; Each result is also checked, so the demo doubles as a smoke test.
;
; Expected outcome: exit status 0; output ends with
;   demo finished: all modes OK

%define TEST_NAME "demo"
%include "janus.inc"

SIEVE_LIMIT     equ 100

main:
        PRINT_STR banner

;--- CPU identification -------------------------------------------------------------
        PRINT "cpu:     "
        xor eax, eax                    ; leaf 0: vendor in EBX, EDX, ECX
        cpuid
        mov [vendor + 0], ebx
        mov [vendor + 4], edx
        mov [vendor + 8], ecx
        PRINT_STR vendor
        mov eax, 0x80000000             ; brand string needs leaves ..02-..04
        cpuid
        cmp eax, 0x80000004
        jb .no_brand
        mov di, brand
        mov esi, 0x80000002
.brand: mov eax, esi
        cpuid
        mov [di + 0], eax
        mov [di + 4], ebx
        mov [di + 8], ecx
        mov [di + 12], edx
        add di, 16
        inc esi
        cmp esi, 0x80000004
        jbe .brand
        mov si, brand                   ; skip the leading padding spaces
.trim:  cmp byte [si], ' '
        jne .trimmed
        inc si
        jmp .trim
.trimmed:
        PRINT ", "
        call s16_puts
.no_brand:
        NEWLINE

;--- memory size from CMOS ------------------------------------------------------------
        ; 0x34/0x35: 64 KiB units above 16 MiB; 0x5B-0x5D: above 4 GiB;
        ; below 16 MiB use 0x30/0x31: KiB above 1 MiB.
        PRINT "memory:  "
        mov al, 0x35
        call cmos_read
        mov ah, al
        mov al, 0x34
        call cmos_read
        movzx ebx, ax
        test ebx, ebx
        jz .small
        mov al, 0x5D
        call cmos_read
        movzx ecx, al
        shl ecx, 16
        mov al, 0x5C
        call cmos_read
        mov ch, al
        mov al, 0x5B
        call cmos_read
        mov cl, al
        add ebx, ecx                    ; 64 KiB units above 16 MiB, in all
        shr ebx, 4                      ; -> MiB
        add ebx, 16
        jmp .mem_done
.small: mov al, 0x31
        call cmos_read
        mov ah, al
        mov al, 0x30
        call cmos_read
        movzx ebx, ax
        shr ebx, 10                     ; KiB -> MiB
        add ebx, 1
.mem_done:
        PRINT_DEC ebx
        PRINTLN " MiB (from CMOS)"
        NEWLINE

;--- real mode: sieve of Eratosthenes -----------------------------------------------------
        PRINTLN "[real mode, 16-bit]"
        PRINT "  primes below 100:"
        mov di, sieve                   ; sieve[i] = 1: i is composite
        mov cx, SIEVE_LIMIT
        xor al, al
        cld
        rep stosb
        mov bx, 2                       ; for each prime p with p*p < LIMIT
.outer: mov ax, bx
        mul bx
        cmp ax, SIEVE_LIMIT
        jae .sieved
        cmp byte [sieve + bx], 0
        jne .next_p
        mov si, ax                      ;   cross out p*p, p*p+p, ...
.cross: mov byte [sieve + si], 1
        add si, bx
        cmp si, SIEVE_LIMIT
        jb .cross
.next_p:
        inc bx
        jmp .outer
.sieved:
        xor ecx, ecx                    ; print and count the primes
        mov bx, 2
.list:  cmp byte [sieve + bx], 0
        jne .skip
        PUTC ' '
        movzx eax, bx
        PRINT_DEC eax
        inc ecx
.skip:  inc bx
        cmp bx, SIEVE_LIMIT
        jb .list
        NEWLINE
        PRINT "  that is "
        PRINT_DEC ecx
        PRINTLN " primes"
        CHECK32 1, ecx, 25

;--- protected mode: CRC-32 ------------------------------------------------------------------
        ENTER_PM32                      ; bits 32
        PRINTLN "[protected mode, 32-bit]"
        mov esi, crc_input
        mov ecx, crc_input_len
        call crc32
        PRINT '  crc32("123456789") = 0x'
        PRINT_HEX 32, eax
        NEWLINE
        CHECK32 2, eax, 0xCBF43926

;--- long mode: 20! -------------------------------------------------------------------------
        ENTER_LM64                      ; bits 64
        PRINTLN "[long mode, 64-bit]"
        mov eax, 1                      ; rax = 20!
        mov ecx, 1
.fact:  imul rax, rcx
        inc ecx
        cmp ecx, 20
        jbe .fact
        PRINT "  20! = 0x"
        PRINT_HEX 64, rax
        PRINT " = "
        PRINT_DEC rax
        NEWLINE
        CHECK64 3, rax, 2432902008176640000

        NEWLINE
        PRINTLN "demo finished: all modes OK"
        EXIT 0

;--- helpers --------------------------------------------------------------------------------

        bits 16
; cmos_read: AL = CMOS register index -> AL = its value.
cmos_read:
        out CMOS_INDEX, al
        in al, CMOS_DATA
        ret

        bits 32
; crc32: CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) of ECX bytes
; at ESI, bit by bit (no table). Returns EAX; clobbers ECX, EDX, ESI.
crc32:
        mov eax, 0xFFFFFFFF
.byte:  xor al, [esi]
        inc esi
        mov edx, 8
.bit:   shr eax, 1                      ; shift out the low bit ...
        jnc .nopoly
        xor eax, 0xEDB88320             ; ... and fold the polynomial if set
.nopoly:
        dec edx
        jnz .bit
        dec ecx
        jnz .byte
        not eax
        ret

;--- data -----------------------------------------------------------------------------------
banner:
        db 10
        db "     _", 10
        db "    (_) __ _ _ __  _   _ ___", 10
        db "    | |/ _` | '_ \| | | / __|", 10
        db "    | | (_| | | | | |_| \__ \", 10
        db "   _/ |\__,_|_| |_|\__,_|___/", 10
        db "  |__/   janus demo guest", 10
        db 10, 0
crc_input:      db "123456789"
crc_input_len   equ $ - crc_input
vendor:         times 13 db 0           ; 12 characters + terminator
brand:          times 49 db 0           ; 48 characters + terminator
sieve:          times SIEVE_LIMIT db 0
