; debug.asm - the debug registers: data breakpoints of every length and type
; on DR0-DR3, instruction breakpoints and RF, DR6/DR7 fixed bits, general
; detect (DR7.GD), single step (DR6.BS), ICEBP (INT1).
;
; Long mode, ring 0, with trap64.inc's IDT. Each #DB is checked for its
; saved RIP (the instruction for faults: instruction breakpoints, general
; detect; the next one for traps: data breakpoints, single step, ICEBP) and
; DR6 (cleared to its fixed bits, 0xFFFF0FF0, before each check).
;
; Expected outcome: exit status 0; output ends with
;   debug: PASS

%define TEST_NAME "debug"
TRAP64_IDT      equ 0x2000
%include "janus.inc"
%include "trap64.inc"

; DR7 fields: enable Ln of breakpoint n, R/W and LEN of breakpoint n.
%define L(n) (1 << (2 * (n)))
%define RW(n, t) ((t) << (16 + 4 * (n)))
%define LEN(n, l) ((l) << (18 + 4 * (n)))
RW_X    equ 0
RW_W    equ 1
RW_RW   equ 3
LEN1    equ 0
LEN2    equ 1
LEN8    equ 2
LEN4    equ 3

; ARM dr7value: clear DR6, load DR7.
%macro ARM 1
        xor eax, eax
        mov dr6, rax
        mov rax, %1
        mov dr7, rax
%endmacro

; DR6_IS n, expected: DR6 as read now.
%macro DR6_IS 2
        mov rax, dr6
        XCHK %1, rax, %2, "DR6"
%endmacro

; DATA_HIT n, "what", dr6 bits, {access}: the access raises a #DB trap.
%macro DATA_HIT 4
        xor eax, eax
        mov dr6, rax
        XTEST %1, %2, 1, 0, 1, {%4}
        DR6_IS %1, 0xFFFF0FF0 | (%3)
%endmacro

; DATA_MISS n, "what", {access}: no #DB.
%macro DATA_MISS 3
        xor eax, eax
        mov dr6, rax
        NOFAULT %1, %2, {%3}
        DR6_IS %1, 0xFFFF0FF0
%endmacro

main:
        ENTER_PM32
        ENTER_LM64
        TRAP64_SETUP

        PRINTLN "debug: DR6 and DR7"
        xor eax, eax
        mov dr6, rax
        DR6_IS 1, 0xFFFF0FF0
        mov rax, 0xFFFFFFFF
        mov dr6, rax
        DR6_IS 2, 0xFFFFEFFF
        xor eax, eax
        mov dr7, rax
        mov rax, dr7
        CHECK64 3, rax, 0x400
        mov rax, 0x12345678
        mov dr0, rax
        mov rax, dr0
        CHECK64 4, rax, 0x12345678
        mov rax, 0x100000000
        XTEST 5, "mov dr7, value above 32 bits", 13, 0, 0, {mov dr7, rax}

        PRINTLN "debug: data breakpoints"
        lea rax, [rel var]
        mov dr0, rax                    ; var+0, 1 byte, write
        lea rbx, [rax + 2]
        mov dr1, rbx                    ; var+2, 2 bytes, read/write
        lea rbx, [rax + 6]
        mov dr2, rbx                    ; var+4..7 (aligned down), 4 bytes, write
        lea rbx, [rax + 8]
        mov dr3, rbx                    ; var+8..15, 8 bytes, read/write
        lea rsi, [rel var]
        ARM L(0) | RW(0, RW_W) | LEN(0, LEN1) | L(1) | RW(1, RW_RW) | LEN(1, LEN2) | L(2) | RW(2, RW_W) | LEN(2, LEN4) | L(3) | RW(3, RW_RW) | LEN(3, LEN8)
        DATA_HIT 10, "DR0 write, 1 byte", 1, {mov byte [rsi], 1}
        DATA_MISS 11, "DR0 write-only, read", {mov al, [rsi]}
        DATA_MISS 12, "DR0 1 byte, write of the next byte", {mov byte [rsi + 1], 1}
        DATA_HIT 13, "DR1 read/write, 2 bytes, read overlapping", 2, {mov eax, [rsi + 3]}
        DATA_HIT 14, "DR1 read/write, 2 bytes, write", 2, {mov word [rsi + 2], 7}
        DATA_MISS 15, "DR2 write-only, 4 bytes, read", {mov eax, [rsi + 4]}
        DATA_HIT 16, "DR2 4 bytes aligned down, write of its first byte", 4, {mov byte [rsi + 4], 1}
        DATA_HIT 17, "DR3 8 bytes, read of its last byte", 8, {mov al, [rsi + 15]}
        DATA_MISS 18, "DR3 8 bytes, the byte after", {mov al, [rsi + 16]}
        DATA_HIT 19, "two breakpoints, one access", 1 | 2, {mov dword [rsi], 0}
        lea rdi, [rsi + 8]
        DATA_HIT 20, "stosq into DR3's range", 8, {stosq}
        ARM L(0) | RW(0, RW_W) | LEN(0, LEN1)
        DATA_MISS 21, "DR1 disabled in DR7", {mov word [rsi + 2], 7}

        PRINTLN "debug: instruction breakpoints and RF"
        lea rax, [rel bp_target]
        mov dr0, rax
        ARM L(0) | RW(0, RW_X) | LEN(0, LEN1)
        mov dword [rel hits], 0
        JANUS_CLAIM_CHECK 30
        mov qword [rel t64_vec], -1
        lea rax, [rel bp_target]
        mov [rel resume], rax           ; back to the breakpoint with RF=1:
        mov byte [rel t64_rf], 1        ; it must not refire (a second #DB
        call bp_target                  ; would be unexpected)
        XCHK 30, [rel t64_vec], 1, "instruction breakpoint: vector"
        lea rax, [rel bp_target]
        XCHK 30, [rel t64_rip], rax, "instruction breakpoint: saved RIP"
        XCHK 30, [rel hits], 1, "the instruction ran once after IRET with RF"
        DR6_IS 30, 0xFFFF0FF1
        PRINTLN "  execute breakpoint: fault at the instruction, RF=1 runs it once"
        JANUS_CLAIM_CHECK 31
        mov qword [rel t64_vec], -1     ; RF is gone: it fires again
        lea rax, [rel .after31]
        mov [rel resume], rax
        call bp_target
.after31:
        add rsp, 8                      ; the CALL's return address
        XCHK 31, [rel t64_vec], 1, "instruction breakpoint again: vector"
        XCHK 31, [rel hits], 1, "instruction breakpoint again: not run"
        ARM 0
        call bp_target                  ; disarmed
        CHECK32 32, dword [rel hits], 2

        PRINTLN "debug: general detect"
        ARM (1 << 13)                   ; GD
        XTEST 40, "mov rax, dr0 with DR7.GD", 1, 0, 0, {mov rax, dr0}
        DR6_IS 40, 0xFFFF0FF0 | (1 << 13)
        mov rax, dr7
        CHECK64 41, rax, 0x400          ; GD cleared for the handler

        PRINTLN "debug: single step and ICEBP"
        ARM 0
        pushfq
        or qword [rsp], 0x100           ; TF
        XTEST 50, "popfq setting TF, then nop", 1, 0, 1, {db 0x9D, 0x90}
        DR6_IS 50, 0xFFFF0FF0 | (1 << 14)
        xor eax, eax
        mov dr6, rax
        XTEST 51, "icebp (0xF1)", 1, 0, 1, {db 0xF1}
        DR6_IS 51, 0xFFFF0FF0
        TEST_PASS

bp_target:
        inc dword [rel hits]
        ret

        TRAP64_CODE

        align 16
var:            times 32 db 0
hits:           dd 0
