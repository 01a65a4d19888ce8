; interrupt.asm - software interrupt benchmark: INT 0x40 and IRETQ.
;
; Long mode with an IDT and a TSS (bench.inc); vector 0x40 is a 64-bit
; interrupt gate (DPL 3) to a three-instruction kernel handler that counts
; the interrupt, adds RAX to a sum and returns with IRETQ. The main loop
; runs in user mode (CPL 3, so every INT switches privilege level and stack,
; through TSS.RSP0, and IRETQ switches back) and raises it ITERATIONS times
; (1,000,000 at full size) with `int 0x40` (not INT3, which some VMMs
; intercept); then `int 0x41` hands back to the kernel, which reports.
; Note: this guest does not run on kvm_pvm hosts: there, kernel code goes
; through KVM's instruction emulator, which cannot execute INT n outside
; real mode (an emulation failure), and INT n in user mode raises #UD.
;
; Instructions: 4 per iteration in the loop (INT included) and 3 in the
; handler (IRETQ included), 7,000,000 at full size (7,000 with -DQUICK); the
; program prints that. Setup, mode switches and output add a few thousand
; more.
;
; Expected outcome: exit status 0; output
;   interrupt: checksum 0x000000746a5a2920  (the sum of the loop counter values)
;   interrupt: 7000000 instructions (1000000 x int 0x40 and iretq)
;   interrupt: PASS

%ifdef QUICK
%define ITERATIONS 1000
%else
%define ITERATIONS 1000000
%endif
%defstr ITERATIONS_STR ITERATIONS

%define TEST_NAME "interrupt"
%include "bench.inc"

VECTOR          equ 0x40
VECTOR_DONE     equ 0x41

main:
        ENTER_PM32
        ENTER_LM64
        call bench_idt_init
        mov ecx, VECTOR
        lea rax, [rel int_handler]
        mov edx, GATE_INT_DPL3
        call bench_set_gate
        mov ecx, VECTOR_DONE
        lea rax, [rel done]
        call bench_set_gate
        call bench_user_init
        xor r8d, r8d                    ; R8 = the sum (the handler adds)
        xor r9d, r9d                    ; R9 = interrupts handled
        lea rdi, [rel user_loop]
        mov esi, BENCH_USTACK_TOP
        mov edx, 0x0002                 ; RFLAGS: IOPL 0, IF 0
        jmp bench_enter_user

user_loop:                              ; CPL 3
        mov ebx, ITERATIONS
.loop:                                  ; --- measured part: 4 per iteration
        mov eax, ebx
        int VECTOR                      ; (+ 3 in the handler)
        dec ebx
        jnz .loop
.end:                                   ; --- measured part ends here
        int VECTOR_DONE

done:                                   ; CPL 0 again
        BENCH_CHECKSUM 64, r8
        mov eax, 7 * ITERATIONS
        BENCH_INSNS rax, ITERATIONS_STR, " x int 0x40 and iretq"
        CHECK64 1, r9, ITERATIONS
        CHECK64 2, r8, ITERATIONS * (ITERATIONS + 1) / 2
        TEST_PASS

        align 16
int_handler:
        inc r9
        add r8, rax
        iretq

        BENCH_LM64_SUPPORT
