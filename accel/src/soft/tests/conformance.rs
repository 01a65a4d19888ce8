//! Regressions found by the lockstep fuzzer (`janus fuzz`, KVM against the software CPU). Where
//! the architecture leaves a result or flag undefined, the expected values are what the host CPU
//! (Intel) gives, measured natively; the shrunk reproducers are in tests/divergences/.

use iced_x86::code_asm::*;

use super::alu::run64;
use super::*;
use crate::state::Reg;

const CF: u64 = 0x1;
const PF: u64 = 0x4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;
const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
const HI: u64 = 0xdead_beef_0000_0000;

#[test]
fn shifts_by_a_masked_count_of_zero_still_write_a_32_bit_register() {
    // Flags stay (here: all set); the register is written back, which zero-extends it.
    let (_, s) = run64(|a| {
        a.mov(rax, HI | 0x8d5).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.mov(rsi, HI | 1).unwrap();
        a.rol(esi, 0).unwrap(); // rol esi, 0
        a.mov(rdi, HI | 2).unwrap();
        a.mov(rcx, HI).unwrap(); // cl = 0
        a.rcr(edi, cl).unwrap(); // rcr edi, cl
        a.mov(r8, HI | 3).unwrap();
        a.mov(rdx, HI | 9).unwrap();
        a.shrd(r8d, edx, 0).unwrap(); // shrd r8d, edx, 0
        a.mov(r9, HI | 4).unwrap();
        a.mov(ecx, 32).unwrap();
        a.shld(r9d, edx, cl).unwrap(); // shld r9d, edx, cl (32 & 31 = 0)
        a.mov(r10, HI | 5).unwrap();
        a.sar(r10d, 0).unwrap(); // sar r10d, 0
    });
    assert_eq!(s.reg(Reg::Rsi), 1);
    assert_eq!(s.reg(Reg::Rdi), 2);
    assert_eq!(s.reg(Reg::R8), 3);
    assert_eq!(s.reg(Reg::R9), 4);
    assert_eq!(s.reg(Reg::R10), 5);
    assert_eq!(s.rflags & ARITH, ARITH);
}

/// Runs 64-bit code that faults on a page fault; the handler at 0x9000 halts. Returns the state
/// and the error code pushed.
fn page_fault64(
    f: impl FnOnce(&mut CodeAssembler),
    setup: impl FnOnce(&Machine),
) -> (CpuState, u64) {
    let mut m = Machine::new();
    let mut s = long_state(&m);
    s.cr0 |= bits::CR0_WP;
    setup(&m);
    gate64(&m, 14, 0x9000, 0);
    m.load(0x9000, &[0xf4]);
    m.load(CODE, &asm(64, CODE, f));
    m.set(&s);
    let st = m.run_to_halt();
    let code = m.rd(st.reg(Reg::Rsp), 8);
    (st, code)
}

#[test]
fn shift_by_zero_of_a_read_only_page_faults_as_a_write() {
    // 2..4 MiB read-only. shl dword [0x200000], 0 writes (the CPU faults on a read-only page).
    let (st, code) = page_fault64(
        |a| {
            a.mov(rdi, 0x20_0000u64).unwrap();
            a.shl(dword_ptr(rdi), 0).unwrap();
            a.hlt().unwrap();
        },
        |m| {
            m.mem
                .write_le(PML4 + 0x2000 + 8, 8, (1 << 21) | 0x85)
                .unwrap()
        },
    );
    assert_eq!(st.cr2, 0x20_0000);
    assert_eq!(code, 3); // present, write
}

#[test]
fn read_modify_write_of_a_missing_page_faults_as_a_write() {
    // Above 8 MiB nothing is mapped. The CPU reads a read-modify-write operand with write
    // intent: add [m], bts [m], xchg [m] report W; a plain read and BT do not.
    type Case = (fn(&mut CodeAssembler), u64);
    let cases: [Case; 5] = [
        (|a| a.add(dword_ptr(rdi), 1).unwrap(), 2),
        (|a| a.bts(qword_ptr(rdi), rax).unwrap(), 2),
        (|a| a.xchg(qword_ptr(rdi), rax).unwrap(), 2),
        (|a| a.mov(eax, dword_ptr(rdi)).unwrap(), 0),
        (|a| a.bt(qword_ptr(rdi), rax).unwrap(), 0),
    ];
    for (insn, want) in cases {
        let (st, code) = page_fault64(
            |a| {
                a.mov(rdi, 0x4000_0000u64).unwrap();
                a.xor(eax, eax).unwrap();
                insn(a);
                a.hlt().unwrap();
            },
            |_| {},
        );
        assert_eq!(st.cr2, 0x4000_0000);
        assert_eq!(code, want, "state:\n{st}");
    }
}

#[test]
fn bit_scan_of_zero_leaves_the_whole_register() {
    let (_, s) = run64(|a| {
        a.mov(rax, HI | 5).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.bsf(eax, ecx).unwrap(); // bsf eax, ecx (0)
        a.mov(rdx, HI | 7).unwrap();
        a.bsr(edx, ecx).unwrap(); // bsr edx, ecx (0)
    });
    assert_eq!(s.reg(Reg::Rax), HI | 5);
    assert_eq!(s.reg(Reg::Rdx), HI | 7);
    assert_eq!(s.rflags & ARITH, ZF | PF);
    // A non-zero source: CF OF SF AF cleared, PF from the result (bsr 0x88 = 7: odd).
    let (_, s) = run64(|a| {
        a.stc().unwrap();
        a.mov(ecx, 0x88).unwrap();
        a.bsr(eax, ecx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 7);
    assert_eq!(s.rflags & ARITH, 0);
}

#[test]
fn cmpxchg_r32_writes_only_what_the_outcome_names() {
    // Not equal: EAX := dest (zero-extended); the destination register is not written.
    let (_, s) = run64(|a| {
        a.mov(rax, HI | 1).unwrap();
        a.mov(rcx, HI | 2).unwrap();
        a.mov(rdx, HI | 3).unwrap();
        a.cmpxchg(ecx, edx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 2);
    assert_eq!(s.reg(Reg::Rcx), HI | 2);
    assert_eq!(s.rflags & ZF, 0);
    // Equal: dest := src (zero-extended); RAX is not written.
    let (_, s) = run64(|a| {
        a.mov(rax, HI | 1).unwrap();
        a.mov(rcx, HI | 1).unwrap();
        a.mov(rdx, HI | 3).unwrap();
        a.cmpxchg(ecx, edx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), HI | 1);
    assert_eq!(s.reg(Reg::Rcx), 3);
    assert_ne!(s.rflags & ZF, 0);
}

#[test]
fn xadd_with_one_register_for_both_operands_keeps_the_sum() {
    // xadd r11d, r11d
    let (_, s) = run64(|a| {
        a.mov(r11, 0x62b6_e2ac_f89c_097eu64).unwrap();
        a.xadd(r11d, r11d).unwrap();
    });
    assert_eq!(s.reg(Reg::R11), 0xf138_12fc);
}

#[test]
fn sixteen_bit_double_shifts_above_16_shift_dest_src_dest() {
    // (instruction, dest, src, count) -> (result, CF PF ZF SF), as the host CPU gives them.
    let cases = [
        (true, 0x1234u64, 0xabcdu64, 17u32, 0x579au64, CF | PF),
        (true, 0x1234, 0xabcd, 24, 0xcd12, CF | PF | SF),
        (true, 0x1234, 0xabcd, 31, 0x891a, SF),
        (false, 0x1234, 0xabcd, 17, 0x55e6, CF),
        (false, 0x1234, 0xabcd, 22, 0xd2af, PF | SF),
        (false, 0x8001, 0x7ffe, 17, 0xbfff, PF | SF),
        (true, 0x1234, 0xabcd, 16, 0xabcd, SF),
    ];
    for (shld, d, src, n, want, flags) in cases {
        let (_, s) = run64(|a| {
            a.mov(eax, d as u32).unwrap();
            a.mov(edx, src as u32).unwrap();
            a.mov(ecx, n).unwrap();
            if shld {
                a.shld(ax, dx, cl).unwrap();
            } else {
                a.shrd(ax, dx, cl).unwrap();
            }
        });
        assert_eq!(s.reg(Reg::Rax) & 0xffff, want, "{shld} {d:#x} {src:#x} {n}");
        assert_eq!(
            s.rflags & (CF | PF | ZF | SF),
            flags,
            "{shld} {d:#x} {src:#x} {n}"
        );
    }
}

#[test]
fn rotate_through_carry_by_a_full_turn_changes_no_flag() {
    // rcr r12b, 27 (27 % 9 = 0) and rcl word [m], 0x31 (17 % 17 = 0): value and flags stay.
    let (m, s) = run64(|a| {
        a.mov(rax, 0x881u64).unwrap(); // CF SF OF
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.mov(r12d, 0x81).unwrap();
        a.rcr(r12b, 27).unwrap();
        a.mov(rdi, 0x5000u64).unwrap();
        a.mov(word_ptr(rdi), 0x8001).unwrap();
        a.rcl(word_ptr(rdi), 0x31).unwrap();
    });
    assert_eq!(s.reg(Reg::R12), 0x81);
    assert_eq!(m.rd(0x5000, 2), 0x8001);
    assert_eq!(s.rflags & ARITH, CF | SF | OF);
}

#[test]
fn lzcnt_tzcnt_popcnt() {
    let (_, s) = run64(|a| {
        a.mov(rax, 0x8d5u64).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.xor(ecx, ecx).unwrap();
        a.mov(rdx, HI | 9).unwrap();
        a.tzcnt(edx, ecx).unwrap(); // 32, zero-extended; CF
    });
    assert_eq!(s.reg(Reg::Rdx), 32);
    assert_eq!(s.rflags & ARITH, CF);
    let (_, s) = run64(|a| {
        a.mov(ecx, 8).unwrap();
        a.tzcnt(esi, ecx).unwrap(); // 3
        a.mov(ecx, 0x8000_0000u32 as i32).unwrap();
        a.lzcnt(edi, ecx).unwrap(); // 0: ZF
        a.xor(ecx, ecx).unwrap();
        a.lzcnt(r8w, cx).unwrap(); // 16
    });
    assert_eq!(s.reg(Reg::Rsi), 3);
    assert_eq!(s.reg(Reg::Rdi), 0);
    assert_eq!(s.reg(Reg::R8) & 0xffff, 16);
    assert_eq!(s.rflags & ARITH, CF);
    let (_, s) = run64(|a| {
        a.stc().unwrap();
        a.xor(ecx, ecx).unwrap();
        a.popcnt(eax, ecx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0);
    assert_eq!(s.rflags & ARITH, ZF);
}

#[test]
fn bmi1_results_and_flags() {
    // (result, flags) of each, as the host CPU gives them (all flags set before).
    let (_, s) = run64(|a| {
        a.mov(rax, 0x8d5u64).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.mov(ecx, 0x0f).unwrap();
        a.mov(rdx, 0x8000_0000_0000_00f0u64).unwrap();
        a.andn(rax, rcx, rdx).unwrap(); // ~0x0f & rdx
    });
    assert_eq!(s.reg(Reg::Rax), 0x8000_0000_0000_00f0);
    assert_eq!(s.rflags & ARITH, SF);
    let (_, s) = run64(|a| {
        a.mov(ecx, 0xabcd_1234u32 as i32).unwrap();
        a.mov(edx, 0x0804).unwrap();
        a.bextr(eax, ecx, edx).unwrap(); // 8 bits from bit 4: 0x23
        a.mov(rcx, 0x8000_0000_0000_0001u64).unwrap();
        a.mov(edx, 0x4000).unwrap();
        a.bextr(rsi, rcx, rdx).unwrap(); // all 64 bits: SF stays clear
    });
    assert_eq!(s.reg(Reg::Rax), 0x23);
    assert_eq!(s.reg(Reg::Rsi), 0x8000_0000_0000_0001);
    assert_eq!(s.rflags & ARITH, 0);
    let (_, s) = run64(|a| {
        a.mov(ecx, 0x8000_0000u32 as i32).unwrap();
        a.blsi(eax, ecx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0x8000_0000);
    assert_eq!(s.rflags & ARITH, CF | SF);
    let (_, s) = run64(|a| {
        a.xor(ecx, ecx).unwrap();
        a.blsmsk(eax, ecx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0xffff_ffff);
    assert_eq!(s.rflags & ARITH, CF | SF);
    let (_, s) = run64(|a| {
        a.mov(ecx, 8).unwrap();
        a.blsr(eax, ecx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0);
    assert_eq!(s.rflags & ARITH, ZF);
}

#[test]
fn cpuid_advertises_bmi1() {
    let (_, s) = run64(|a| {
        a.mov(eax, 7).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
    });
    assert_ne!(s.reg(Reg::Rbx) & (1 << 3), 0);
}

#[test]
fn aad_flags_are_those_of_the_addition_and_aam_flags_of_al() {
    let mut m = Machine::new();
    m.load(
        CODE,
        &[
            0xb8, 0xe7, 0xff, // mov ax, 0xffe7
            0xd5, 0xe1, // aad 0xe1: al = 0xe7 + 0x1f = 0x06, carry out and from bit 3
            0x9c, // pushf
            0x89, 0xc3, // mov bx, ax
            0xb8, 0x9f, 0x00, // mov ax, 0x9f
            0xd4, 0xf1, // aam 0xf1: ah = 0, al = 0x9f: SF PF
            0xf4,
        ],
    );
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx) & 0xffff, 0x0006);
    assert_eq!(m.rd(0x7000 - 2, 2) & ARITH, CF | PF | AF);
    assert_eq!(s.reg(Reg::Rax) & 0xffff, 0x009f);
    assert_eq!(s.rflags & (SF | ZF | PF), SF | PF);
}

#[test]
fn accesses_crossing_a_page_are_split_there_for_mmio() {
    // Flat 32-bit, no paging: RAM ends at 8 MiB, MMIO above.
    let mut m = Machine::new();
    let s = prot_state(&m);
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            a.mov(eax, 0x4433_2211).unwrap();
            a.mov(dword_ptr(0x90_0ffd), eax).unwrap(); // MMIO | MMIO
            a.mov(ecx, dword_ptr(0x90_0ffe)).unwrap();
            a.mov(dword_ptr(0x7f_fffe), eax).unwrap(); // RAM | MMIO
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    let writes = m.io.mmio.lock().unwrap().clone();
    assert_eq!(
        writes,
        [
            (0x90_0ffd, vec![0x11, 0x22, 0x33]),
            (0x90_1000, vec![0x44]),
            (0x80_0000, vec![0x33, 0x44]),
        ]
    );
    assert_eq!(
        m.io.mmio_reads.lock().unwrap().clone(),
        [(0x90_0ffe, 2), (0x90_1000, 2)]
    );
    assert_eq!(st.reg(Reg::Rcx), 0xffff_ffff);
    assert_eq!(m.rd(0x7f_fffe, 2), 0x2211);
}

#[test]
fn mul_undefined_flags_and_div_flags_are_intel_s() {
    // After MUL/IMUL: CF = OF = high half significant, SF and PF from the low half, ZF and AF
    // clear even for a zero product. DIV and IDIV leave every flag as it was.
    let (_, s) = run64(|a| {
        a.mov(rax, 0x8d5u64).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(ecx, 5).unwrap();
        a.mul(ecx).unwrap(); // 0 * 5
    });
    assert_eq!(s.reg(Reg::Rax), 0);
    assert_eq!(s.rflags & ARITH, PF);
    let (_, s) = run64(|a| {
        a.mov(eax, -3i32).unwrap();
        a.mov(ecx, 0x1000_0000).unwrap();
        a.imul_2(eax, ecx).unwrap(); // 0xd0000000 fits: SF, PF (low byte 0)
    });
    assert_eq!(s.rflags & ARITH, SF | PF);
    let (_, s) = run64(|a| {
        a.mov(rax, 0x8d5u64).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.mov(eax, 0x4000_0000).unwrap();
        a.mov(ecx, 4).unwrap();
        a.imul_2(eax, ecx).unwrap(); // overflow to a zero low half: ZF still clear
    });
    assert_eq!(s.reg(Reg::Rax), 0);
    assert_eq!(s.rflags & ARITH, CF | OF | PF);
    let (_, s) = run64(|a| {
        a.mov(rax, 0x8d5u64).unwrap();
        a.push(rax).unwrap();
        a.popfq().unwrap();
        a.mov(eax, 100).unwrap();
        a.xor(edx, edx).unwrap(); // flags: ZF PF
        a.stc().unwrap();
        a.mov(ecx, 7).unwrap();
        a.div(ecx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 14);
    assert_eq!(s.rflags & ARITH, ZF | PF | CF);
}
