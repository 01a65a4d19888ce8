; realmode.asm - real-mode integer instruction checks.
;
; Covers arithmetic with flag results, inc/dec, 8/16-bit multiply and divide,
; shifts and rotates, movzx/movsx, the stack, call/ret, loop, string
; instructions in both directions, xchg, cbw/cwd, lea, 32-bit operand and
; address size overrides, and segment arithmetic (ES/FS far pointers, a far
; call into a different code segment).
;
; Expected outcome: exit status 0; output ends with
;   realmode: PASS
; A failure prints "realmode: FAIL check N: ..." and exits with status N.

%define TEST_NAME "realmode"
%include "janus.inc"

main:
        PRINTLN "realmode: real-mode integer checks"

        ; The protocol enters the image with DL = 0x80 (janus.inc keeps DX).
        CHECK8 1, dl, 0x80

;--- add / adc / sub / sbb and their flags -----------------------------------
        PRINTLN "  add/adc/sub/sbb"
        mov al, 0xFF
        add al, 1                       ; wraps to 0: carry and zero
        CHECK_FLAGS 2, F_ARITH, F_CF | F_ZF
        CHECK8 3, al, 0

        mov al, 0x7F
        add al, 1                       ; signed overflow to 0x80
        CHECK_FLAGS 4, F_ARITH, F_OF | F_SF

        stc
        mov ax, 0x1234
        adc ax, 0x0001                  ; 0x1234 + 1 + CF
        CHECK_FLAGS 5, F_ARITH, 0
        CHECK16 6, ax, 0x1236

        mov ax, 5
        sub ax, 7                       ; borrow: 0xFFFE
        CHECK_FLAGS 7, F_ARITH, F_CF | F_SF
        CHECK16 8, ax, 0xFFFE

        mov al, 0x80
        sub al, 1                       ; -128 - 1 overflows to 0x7F
        CHECK_FLAGS 9, F_ARITH, F_OF

        stc
        mov ax, 0x1000
        sbb ax, 0x0FFF                  ; 0x1000 - 0xFFF - CF = 0
        CHECK_FLAGS 10, F_ARITH, F_ZF

        ; Multi-word add: 0x0001FFFF + 0x00000001 with add/adc on halves.
        mov ax, 0xFFFF
        mov dx, 0x0001
        add ax, 1
        adc dx, 0
        CHECK16 11, dx, 0x0002

;--- and / or / xor, and conditional jumps ----------------------------------
        PRINTLN "  and/or/xor, jcc"
        stc
        mov ax, 0xF0F0
        and ax, 0x8F0F                  ; logic ops clear CF and OF
        CHECK_FLAGS 12, F_ARITH, F_SF
        CHECK16 13, ax, 0x8000

        mov ax, 0x00F0
        or ax, 0x0F00
        CHECK16 14, ax, 0x0FF0

        mov ax, 0x1234
        xor ax, 0x1234
        CHECK_FLAGS 15, F_ARITH | F_PF, F_ZF | F_PF

        mov ax, -1
        cmp ax, 1
        CHECK_CC 16, l                  ; signed: -1 < 1
        cmp ax, 1
        CHECK_CC 17, a                  ; unsigned: 0xFFFF > 1

;--- inc / dec --------------------------------------------------------------
        PRINTLN "  inc/dec"
        stc
        mov al, 0xFF
        inc al                          ; inc leaves CF alone
        CHECK_FLAGS 18, F_ARITH, F_CF | F_ZF

        clc
        mov al, 0x80
        dec al                          ; 0x80 - 1 overflows
        CHECK_FLAGS 19, F_ARITH, F_OF
        mov bx, 0x00FF
        inc bx
        dec bx
        dec bx
        CHECK16 20, bx, 0x00FE

;--- multiply / divide ------------------------------------------------------
        PRINTLN "  mul/imul/div/idiv"
        mov al, 200
        mov bl, 3
        mul bl                          ; AX = 600; high half used: CF=OF=1
        CHECK_FLAGS 21, F_CF | F_OF, F_CF | F_OF
        CHECK16 22, ax, 600

        mov al, -4
        mov bl, 5
        imul bl                         ; AX = -20 fits in AL: CF=OF=0
        CHECK_FLAGS 23, F_CF | F_OF, 0
        CHECK16 24, ax, -20

        mov ax, 0x1234
        mov bx, 0x0100
        mul bx                          ; DX:AX = 0x0012_3400
        CHECK16 25, dx, 0x0012
        CHECK16 26, ax, 0x3400

        mov ax, -300
        mov bx, 300
        imul bx                         ; -90000 = 0xFFFE_A070
        CHECK16 27, dx, 0xFFFE
        CHECK16 28, ax, 0xA070

        mov bx, 12
        imul cx, bx, -7                 ; three-operand form
        CHECK16 29, cx, -84

        mov ax, 1000
        mov bl, 7
        div bl                          ; 1000 = 7 * 142 + 6
        CHECK16 30, ax, (6 << 8) | 142

        mov dx, 0x0001
        mov ax, 0x0000
        mov bx, 300
        div bx                          ; 65536 = 300 * 218 + 136
        CHECK16 31, ax, 218
        CHECK16 32, dx, 136

        mov ax, -100
        mov bl, 7
        idiv bl                         ; -100 = 7 * -14 + -2 (truncates)
        CHECK8 33, al, -14
        CHECK8 34, ah, -2

        mov dx, 0xFFFE                  ; DX:AX = -70000
        mov ax, 0xEE90
        mov bx, 1000
        idiv bx
        CHECK16 35, ax, -70
        CHECK16 36, dx, 0

;--- shifts and rotates -----------------------------------------------------
        PRINTLN "  shifts/rotates"
        mov al, 0x81
        shl al, 1                       ; top bit goes to CF
        CHECK_FLAGS 37, F_CF, F_CF
        CHECK8 38, al, 0x02

        mov ax, 0x8000
        sar ax, 3                       ; arithmetic: sign fills
        CHECK16 39, ax, 0xF000

        mov ax, 0x8001
        shr ax, 1                       ; logical; low bit to CF
        CHECK_FLAGS 40, F_CF, F_CF
        CHECK16 41, ax, 0x4000

        mov ax, 0x0001
        mov cl, 12
        shl ax, cl                      ; count in CL
        CHECK16 42, ax, 0x1000

        mov al, 0x81
        rol al, 1
        CHECK8 43, al, 0x03
        mov al, 0x01
        ror al, 1
        CHECK8 44, al, 0x80

        stc
        mov al, 0
        rcl al, 1                       ; old CF enters bit 0
        CHECK_FLAGS 45, F_CF, 0
        CHECK8 46, al, 0x01

        clc
        mov al, 1
        rcr al, 1                       ; bit 0 leaves into CF
        CHECK_FLAGS 47, F_CF, F_CF
        CHECK8 48, al, 0

;--- movzx / movsx, cbw / cwd ------------------------------------------------
        PRINTLN "  movzx/movsx, cbw/cwd"
        mov bl, 0x80
        movzx ax, bl
        CHECK16 49, ax, 0x0080
        movsx ax, bl
        CHECK16 50, ax, 0xFF80
        mov bx, 0x8001
        movsx eax, bx
        CHECK32 51, eax, 0xFFFF8001
        movzx eax, bx
        CHECK32 52, eax, 0x00008001

        mov al, 0x90
        cbw
        CHECK16 53, ax, 0xFF90
        cwd
        CHECK16 54, dx, 0xFFFF
        mov ax, 0x7000
        cwd
        CHECK16 55, dx, 0

;--- stack, call / ret, loop -------------------------------------------------
        PRINTLN "  push/pop, call/ret, loop"
        mov bp, sp
        push word 0x1111
        push word 0x2222
        mov ax, bp
        sub ax, sp
        CHECK16 56, ax, 4               ; two words pushed
        CHECK16 57, word [bp - 4], 0x2222
        pop bx
        pop cx
        CHECK16 58, bx, 0x2222          ; last in, first out
        CHECK16 59, cx, 0x1111
        CHECK16 60, sp, bp

        push sp                         ; 286+: pushes SP as it was before
        pop ax
        CHECK16 61, ax, bp

        mov ax, 40
        push word 2                     ; argument for add_arg
        call add_arg                    ; AX += arg; `ret 2` drops it
        CHECK16 62, ax, 42
        CHECK16 63, sp, bp

        xor ax, ax                      ; sum 1..10 with loop
        mov cx, 10
.sum:   add ax, cx
        loop .sum
        CHECK16 64, ax, 55
        CHECK16 65, cx, 0

        mov cx, 100                     ; loopnz stops when ZF becomes 1
        mov bx, 5
.find:  dec bx
        loopnz .find
        CHECK16 66, bx, 0
        CHECK16 67, cx, 95

;--- string instructions ----------------------------------------------------
        PRINTLN "  string ops (DF=0 and DF=1)"
        cld
        mov si, pattern                 ; rep movsb copy
        mov di, buf1
        mov cx, pattern_len
        rep movsb
        CHECK16 68, cx, 0
        CHECK16 69, si, pattern + pattern_len
        CHECK16 70, di, buf1 + pattern_len

        mov si, pattern                 ; repe cmpsb: equal all the way
        mov di, buf1
        mov cx, pattern_len
        repe cmpsb
        CHECK_CC 71, e
        CHECK16 72, cx, 0

        mov byte [buf1 + 5], '!'        ; now differ at index 5
        mov si, pattern
        mov di, buf1
        mov cx, pattern_len
        repe cmpsb
        CHECK_CC 73, ne
        CHECK16 74, si, pattern + 6     ; stops just past the mismatch

        mov di, buf2                    ; rep stosw fill
        mov ax, 0xA55A
        mov cx, 8
        rep stosw
        CHECK16 75, di, buf2 + 16
        CHECK16 76, word [buf2 + 14], 0xA55A

        mov si, pattern                 ; lodsb
        lodsb
        CHECK8 77, al, 'j'
        CHECK16 78, si, pattern + 1

        mov di, pattern                 ; repne scasb: find 'u'
        mov al, 'u'
        mov cx, pattern_len
        repne scasb
        CHECK_CC 79, e
        CHECK16 80, di, pattern + 3 + 1 ; 'u' is at index 3

        ; DF=1: copy backwards so an overlapping move up by one works.
        mov si, pattern                 ; buf1 = pattern again
        mov di, buf1
        mov cx, pattern_len
        rep movsb
        std
        mov si, buf1 + pattern_len - 1
        mov di, buf1 + pattern_len
        mov cx, pattern_len
        rep movsb                       ; buf1[1..len] = pattern
        cld
        CHECK16 81, di, buf1            ; DI ends one below the last store
        CHECK8 82, byte [buf1 + 1], 'j'
        CHECK8 83, byte [buf1 + pattern_len], pattern_last

        std                             ; lodsb / scasb / stosw backwards
        mov si, pattern + pattern_len - 1
        lodsb
        CHECK8 84, al, pattern_last
        CHECK16 85, si, pattern + pattern_len - 2
        mov di, pattern + pattern_len - 1
        mov al, 'j'                     ; search back to the first byte
        mov cx, pattern_len
        repne scasb
        CHECK_CC 86, e
        CHECK16 87, di, pattern - 1
        mov di, buf2 + 14
        mov ax, 0x1234
        mov cx, 2
        rep stosw
        cld
        CHECK16 88, word [buf2 + 12], 0x1234
        CHECK16 89, di, buf2 + 10

;--- xchg, lea ---------------------------------------------------------------
        PRINTLN "  xchg, lea"
        mov ax, 0x1111
        mov bx, 0x2222
        xchg ax, bx
        CHECK16 90, ax, 0x2222
        CHECK16 91, bx, 0x1111
        mov word [scratch], 0x3333
        xchg bx, [scratch]
        CHECK16 92, bx, 0x3333
        CHECK16 93, word [scratch], 0x1111

        mov bx, 0x1000
        mov si, 0x0200
        lea ax, [bx + si + 0x34]        ; 16-bit addressing form
        CHECK16 94, ax, 0x1234
        mov ebx, 0x100
        mov ecx, 0x20
        lea eax, [ebx * 4 + ecx + 8]    ; 32-bit addressing (0x67 prefix)
        CHECK32 95, eax, 0x428

;--- 32-bit operand size in real mode ---------------------------------------
        PRINTLN "  32-bit operands"
        mov eax, 0x12345678
        add eax, 0x11111111
        CHECK32 96, eax, 0x23456789
        mov eax, 0xFFFFFFFF
        add eax, 1
        CHECK_FLAGS 97, F_ARITH, F_CF | F_ZF
        mov eax, 0x00010000
        mul eax                         ; EDX:EAX = 2^32
        CHECK32 98, edx, 1
        CHECK32 99, eax, 0
        mov edx, 0
        mov eax, 1000000007
        mov ecx, 1000
        div ecx
        CHECK32 100, eax, 1000000
        CHECK32 101, edx, 7
        mov eax, 0x80000000
        sar eax, 31
        CHECK32 102, eax, 0xFFFFFFFF
        mov eax, 0x12345678
        bswap eax
        CHECK32 103, eax, 0x78563412
        push eax                        ; 32-bit push moves SP by 4
        mov ax, bp
        sub ax, sp
        CHECK16 104, ax, 4
        pop ecx
        CHECK32 105, ecx, 0x78563412
        mov dword [scratch], 0xCAFEF00D ; 32-bit memory operand
        CHECK32 106, dword [scratch], 0xCAFEF00D
        CHECK16 107, word [scratch + 2], 0xCAFE

;--- segment arithmetic ------------------------------------------------------
        PRINTLN "  segments and far pointers"
        ; Linear address = segment * 16 + offset. Write through one
        ; segment:offset pair and read the same byte through another.
        mov ax, 0x1000
        mov es, ax
        mov byte [es:0x0234], 0x5A      ; linear 0x10234
        mov ax, 0x1023
        mov fs, ax
        CHECK8 108, byte [fs:0x0004], 0x5A
        xor ax, ax
        mov es, ax
        mov fs, ax

        les di, [far_ptr]               ; ES:DI = 0x2000:0x0010
        mov ax, es
        CHECK16 109, ax, 0x2000
        CHECK16 110, di, 0x0010
        mov dword [es:di], 0x600DF00D   ; linear 0x20010
        mov ax, 0x2001
        mov es, ax
        CHECK32 111, dword [es:0x0000], 0x600DF00D
        xor ax, ax
        mov es, ax

        ; Far call into CS = 0x07C0: the same code at a different
        ; segment:offset (linear = 0x7C00 + offset).
        mov ax, 1
        call 0x07C0:(far_proc - JANUS_LOAD_ADDR)
        CHECK16 112, ax, 0x07C0
        CHECK16 113, sp, bp

        TEST_PASS

; add_arg: AX += the word argument on the stack; pops it with `ret 2`.
add_arg:
        push bp
        mov bp, sp
        add ax, [bp + 4]
        pop bp
        ret 2

; far_proc: runs with CS = 0x07C0; returns the CS it ran with in AX.
far_proc:
        mov ax, cs
        retf

;--- data ---------------------------------------------------------------------
pattern:        db "janus-realmode"
pattern_len     equ $ - pattern
pattern_last    equ 'e'
far_ptr:        dw 0x0010, 0x2000       ; offset, segment (for les)
scratch:        dd 0
buf1:           times pattern_len + 2 db 0
                align 2
buf2:           times 16 db 0
