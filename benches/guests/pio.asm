; pio.asm - port-I/O exit benchmark: ITERATIONS `out` instructions.
;
; Executes exactly 1,000,000 `out 0x80, al` (POST port: accepted, no effect)
; in a tight loop, so each iteration costs one I/O exit to the VMM; the
; run's time divided by 1e6 is the round trip of a port write. Unlike
; outloop.bin (real mode), the loop runs in 64-bit long mode (CPL 0).
; (A CPL-3 loop with IOPL 3 would stay native on a host whose KVM emulates
; kernel code, but kvm_pvm does not honour IOPL: the `out` raises #GP.)
;
; Instructions: 5 per iteration, 5,000,000 at full size (5,000 with
; -DQUICK); the program prints that. Setup, mode switches and output add a
; few thousand more.
;
; Expected outcome: exit status 0; output
;   pio: checksum 0x000000746a5a2920  (the sum of the loop counter values)
;   pio: 5000000 instructions (1000000 outs to port 0x80)
;   pio: PASS

%ifdef QUICK
%define ITERATIONS 1000
%else
%define ITERATIONS 1000000
%endif
%defstr ITERATIONS_STR ITERATIONS

%define TEST_NAME "pio"
%include "bench.inc"

main:
        ENTER_PM32
        ENTER_LM64
        call bench_idt_init
        mov ebx, ITERATIONS
        xor r12d, r12d                  ; R12 = the checksum
.loop:                                  ; --- measured part: 5 per iteration
        mov eax, ebx
        out POST_PORT, al
        add r12, rax
        dec ebx
        jnz .loop
.end:                                   ; --- measured part ends here

        BENCH_CHECKSUM 64, r12
        mov eax, 5 * ITERATIONS
        BENCH_INSNS rax, ITERATIONS_STR, " outs to port 0x80"
        CHECK64 1, r12, ITERATIONS * (ITERATIONS + 1) / 2
        TEST_PASS

        BENCH_LM64_SUPPORT
