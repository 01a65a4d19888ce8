; syscall.asm - system call benchmark: a user-mode loop calling a tiny
; 64-bit kernel with SYSCALL, which returns with SYSRET.
;
; Long mode with a TSS, kernel and user segments (bench.inc; STAR selects
; them: kernel CS 0x30/SS 0x38, user CS 0x53/SS 0x4B), the low 2 MiB
; user-accessible, EFER.SCE set, LSTAR pointing at the kernel's entry and
; SFMASK clearing IF, TF, DF, AC and NT on entry. The kernel enters user mode
; (CPL 3) with IRETQ; the user loop makes ITERATIONS system calls (1,000,000
; at full size) with the loop counter in RAX; the kernel adds RAX to a sum
; and returns the running sum, which the user adds up. System call 0 ends
; the loop: the kernel then reports and exits.
;
; Note: this guest does not run on kvm_pvm hosts, whose KVM cannot execute
; SYSRET for the guest's kernel (#GP); a kernel that returns with IRETQ gets
; through the loop there, but its port I/O after SYSCALL faults as well.
;
; Instructions: 5 per iteration in the user loop (SYSCALL included) and 6 in
; the kernel (SYSRET included), 11,000,000 at full size (11,000 with
; -DQUICK); the program prints that. Setup, mode switches and output add a
; few thousand more.
;
; Expected outcome: exit status 0; output
;   syscall: checksum 0x04a03d5af7766860  (the user's sum of the returned sums)
;   syscall: 11000000 instructions (1000000 system calls)
;   syscall: PASS

%ifdef QUICK
%define ITERATIONS 1000
%define CHECKSUM 0x13e5e51c
%else
%define ITERATIONS 1000000
%define CHECKSUM 0x04a03d5af7766860
%endif
%defstr ITERATIONS_STR ITERATIONS

%define TEST_NAME "syscall"
%include "bench.inc"

SYS_DONE        equ 0
INSNS_PER_CALL  equ 11
SFMASK          equ 0x47700             ; AC, NT, DF, IF, TF (and IOPL)

main:
        ENTER_PM32
        ENTER_LM64
        call bench_idt_init
        call bench_user_init
        mov ecx, MSR_EFER               ; enable SYSCALL/SYSRET
        rdmsr
        or eax, EFER_SCE
        wrmsr
        mov ecx, MSR_STAR               ; STAR[47:32] = kernel CS (SS = +8),
        xor eax, eax                    ; STAR[63:48] = user base: SYSRET
        mov edx, (SEL_UCODE32 << 16) | SEL_KCODE64  ; loads CS = base + 16,
        wrmsr                           ; SS = base + 8 (RPL 3)
        mov ecx, MSR_LSTAR
        lea rax, [rel kernel_entry]
        mov rdx, rax
        shr rdx, 32
        wrmsr
        mov ecx, MSR_SFMASK
        mov eax, SFMASK
        xor edx, edx
        wrmsr
        xor r8d, r8d                    ; R8 = the kernel's sum
        xor r9d, r9d                    ; R9 = system calls served
        lea rdi, [rel user_loop]
        mov esi, BENCH_USTACK_TOP
        mov edx, 0x0002                 ; RFLAGS: IOPL 0, IF 0
        jmp bench_enter_user

user_loop:                              ; CPL 3 (RCX and R11 belong to SYSCALL)
        mov ebx, ITERATIONS
        xor r12d, r12d                  ; R12 = the sum of the returned sums
.loop:                                  ; --- measured part: 5 per iteration
        mov eax, ebx
        syscall                         ; (+ 6 in the kernel)
        add r12, rax
        dec ebx
        jnz .loop
.end:                                   ; --- measured part ends here
        mov eax, SYS_DONE
        syscall

kernel_entry:                           ; CPL 0, RSP still the user's
        test eax, eax
        jz .done
        inc r9
        add r8, rax
        mov rax, r8
        o64 sysret
.done:  mov esp, BENCH_KSTACK_TOP
        BENCH_CHECKSUM 64, r12
        mov eax, INSNS_PER_CALL * ITERATIONS
        BENCH_INSNS rax, ITERATIONS_STR, " system calls"
        CHECK64 1, r9, ITERATIONS
        CHECK64 2, r8, ITERATIONS * (ITERATIONS + 1) / 2
        CHECK64 3, r12, CHECKSUM
        TEST_PASS


        BENCH_LM64_SUPPORT
