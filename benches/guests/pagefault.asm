; pagefault.asm - demand-paging benchmark: one page fault per fresh page.
;
; Long mode with 4 KiB page tables built here (bench.inc). The work region
; at virtual 1 GiB starts with every PTE clear. The main loop writes to each
; of its PAGES pages in turn, then reads the value back: the write faults
; (#PF, not present), and the handler maps the page (fills its PTE, onto a
; pool of 1024 physical pages from 16 MiB that the virtual pages share) and
; returns with IRETQ, so the write is retried and completes. After a round
; over all the pages the PTEs are cleared again and the TLB flushed (CR3
; reload), so the next round faults on every page afresh. Total faults:
; ITERATIONS * PAGES (131,072 at full size, 128 with -DQUICK).
;
; Instructions: per fault 5 in the main loop (the faulting write counted once,
; when it completes) and 19 in the handler (IRETQ included), and 10 per
; round (one `rep stosq` counted once): 3,145,808 at full size, 3,092 with
; -DQUICK; the program prints that.
; Setup, mode switches and output add a few thousand more.
;
; Expected outcome: exit status 0; output
;   pagefault: checksum 0x0000000040010000  (the sum of the values read back)
;   pagefault: 131072 page faults handled
;   pagefault: 3145808 instructions (8 rounds of 16384 pages)
;   pagefault: PASS

%ifdef QUICK
%define ITERATIONS 2
%define PAGES 64
%else
%define ITERATIONS 8
%define PAGES 16384
%endif
%defstr ITERATIONS_STR ITERATIONS
%defstr PAGES_STR PAGES

%define TEST_NAME "pagefault"
%include "bench.inc"

PT_COUNT        equ (PAGES + 511) / 512
POOL_PAGES      equ 1024
PHYS_POOL       equ 0x1000000
FAULTS          equ ITERATIONS * PAGES
INSNS           equ FAULTS * (5 + 19) + ITERATIONS * 10

%if PAGES > BENCH_WORK_MAX_PAGES
  %error "PAGES too large"
%endif

main:
        ENTER_PM32
        ENTER_LM64
        call bench_idt_init
        mov ecx, 14                     ; #PF
        lea rax, [rel pf_handler]
        mov edx, GATE_INT_DPL0
        call bench_set_gate
        mov ecx, PT_COUNT
        mov edx, PTE_P | PTE_W
        call bench_pt_init
        xor ebx, ebx                    ; RBX = the sum of the values read
        xor r15d, r15d                  ; R15 = faults handled
        mov r14d, ITERATIONS

.round:                                 ; --- measured part starts here
        mov rdi, BENCH_WORK_VA          ; 2 ...
        mov ecx, PAGES
.touch: mov [rdi], rcx                  ; 5 per page (+ 19 in the handler)
        add rbx, [rdi]
        add rdi, 4096
        dec ecx
        jnz .touch
        mov edi, BENCH_PT_WORK          ; ... 8: unmap the region again ...
        mov ecx, PAGES
        xor eax, eax
        rep stosq
        mov eax, BENCH_PML4             ; ... and flush the TLB
        mov cr3, rax
        dec r14d
        jnz .round
.end:                                   ; --- measured part ends here

        BENCH_CHECKSUM 64, rbx
        PRINT TEST_NAME, ": "
        PRINT_DEC r15
        PRINTLN " page faults handled"
        mov rax, INSNS
        BENCH_INSNS rax, ITERATIONS_STR, " rounds of ", PAGES_STR, " pages"
        CHECK64 1, r15, FAULTS
        CHECK64 2, rbx, ITERATIONS * PAGES * (PAGES + 1) / 2
        TEST_PASS

; The #PF handler: map the faulting page of the work region.
        align 16
pf_handler:
        push rax
        push rdx
        mov rax, cr2
        cmp qword [rsp + 16], 2         ; error code: a supervisor write to
        jne .bad                        ; a not-present page, nothing else
        sub rax, BENCH_WORK_VA
        shr rax, 12                     ; the page's index in the region
        cmp rax, PAGES
        jae .bad
        mov edx, eax                    ; its frame in the pool
        and edx, POOL_PAGES - 1
        shl edx, 12
        add edx, PHYS_POOL | PTE_P | PTE_W
        mov [BENCH_PT_WORK + rax * 8], rdx
        inc r15
        pop rdx
        pop rax
        add rsp, 8                      ; drop the error code
        iretq
.bad:   pop rdx                         ; report it as an unexpected #PF
        pop rax
        push 14
        jmp bench_exception

        BENCH_LM64_SUPPORT
