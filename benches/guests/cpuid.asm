; cpuid.asm - CPUID benchmark: ITERATIONS `cpuid` instructions in 64-bit mode.
;
; Alternates leaf 0 and leaf 1 (sub-leaf 0). Under KVM every CPUID exits to
; the hypervisor; in the software CPU it reads the machine's CPUID table
; (computed once from --cpu); a CPU model that ran the host's CPUID at guest
; run time would pay a trap to the host's hypervisor for each when janus
; itself runs in a VM. The results differ between backends and hosts, so
; the checksum is the sum of the loop counter only.
;
; Instructions: 7 per iteration, 7,000,000 at full size (7,000 with -DQUICK).
;
; Expected outcome: exit status 0; output
;   cpuid: checksum 0x0000000000746a5a2920  (the sum of the loop counter values)
;   cpuid: 7000000 instructions (1000000 CPUIDs, leaves 0 and 1)
;   cpuid: PASS

%ifdef QUICK
%define ITERATIONS 1000
%else
%define ITERATIONS 1000000
%endif
%defstr ITERATIONS_STR ITERATIONS

%define TEST_NAME "cpuid"
%include "bench.inc"

main:
        ENTER_PM32
        ENTER_LM64
        call bench_idt_init
        mov r13d, ITERATIONS
        xor r12d, r12d                  ; R12 = the checksum
.loop:                                  ; --- measured part: 7 per iteration
        mov eax, r13d
        and eax, 1
        xor ecx, ecx
        cpuid
        add r12, r13
        dec r13d
        jnz .loop
.end:                                   ; --- measured part ends here

        BENCH_CHECKSUM 64, r12
        mov eax, 7 * ITERATIONS
        BENCH_INSNS rax, ITERATIONS_STR, " CPUIDs, leaves 0 and 1"
        CHECK64 1, r12, ITERATIONS * (ITERATIONS + 1) / 2
        TEST_PASS

        BENCH_LM64_SUPPORT
