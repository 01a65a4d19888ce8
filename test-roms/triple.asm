; triple.asm - cause a triple fault on purpose.
;
; EXPECTED OUTCOME: a triple-fault shutdown, NOT exit 0. janus reports the
; triple fault as its own status; this program must never reach its
; `out 0xF4` (if it does, it exits with status 1).
;
; How: in 32-bit protected mode, load an IDT with limit 0, so that no vector
; fits in it, then load a selector that lies beyond the GDT limit into DS.
; That raises #GP; delivering #GP needs IDT entry 13, which is beyond the
; limit, so the CPU raises a double fault instead; entry 8 is beyond the
; limit too, so the CPU shuts down (triple fault). No int3/ud2 is used, so
; this works even where exception delivery is emulated.
;
; Output:
;   triple: about to triple fault

%define TEST_NAME "triple"
%include "janus.inc"

BAD_SELECTOR    equ 0x1230              ; GDT index 0x246, far past the limit

main:
        ENTER_PM32                      ; bits 32
        PRINTLN "triple: about to triple fault"
        lidt [empty_idtr]
        mov ax, BAD_SELECTOR
        mov ds, ax                      ; #GP -> #DF -> shutdown

        ; Not reached on a correct machine.
        mov ax, SEL_DATA
        mov ds, ax
        PRINTLN "triple: FAIL: no triple fault"
        EXIT 1

empty_idtr:
        dw 0                            ; limit 0: no usable vectors
        dd 0
