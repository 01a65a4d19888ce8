//! The MSRs a Linux kernel touches at boot: IA32_MISC_ENABLE, IA32_PAT, the MTRRs, the
//! microcode signature and feature control; reserved values and unknown MSRs raise #GP(0),
//! which a handler can skip as the kernel's exception-table fixup does for `rdmsr_safe`.

use iced_x86::code_asm::*;

use super::*;
use crate::state::{PAT_DEFAULT, Reg};

/// Runs 64-bit code at CODE with a #GP handler that counts in R12 and skips the 2-byte
/// faulting instruction (RDMSR/WRMSR), as an exception-table fixup does.
fn run64(f: impl FnOnce(&mut CodeAssembler)) -> CpuState {
    let mut m = Machine::new();
    let s = long_state(&m);
    gate64(&m, 13, 0x9000, 0);
    m.load(
        0x9000,
        &asm(64, 0x9000, |a| {
            a.pop(rax).unwrap(); // the error code
            a.add(qword_ptr(rsp), 2).unwrap();
            a.inc(r12).unwrap();
            a.iretq().unwrap();
        }),
    );
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            f(a);
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    m.run_to_halt()
}

fn rdmsr_to(a: &mut CodeAssembler, msr: u32, to: AsmRegister64) {
    a.mov(ecx, msr as i32).unwrap();
    a.rdmsr().unwrap();
    a.shl(rdx, 32).unwrap();
    a.or(rax, rdx).unwrap();
    a.mov(to, rax).unwrap();
}

fn wrmsr(a: &mut CodeAssembler, msr: u32, v: u64) {
    a.mov(ecx, msr as i32).unwrap();
    a.mov(eax, v as u32).unwrap();
    a.mov(edx, (v >> 32) as u32).unwrap();
    a.wrmsr().unwrap();
}

#[test]
fn misc_enable_pat_and_mtrrs_read_and_round_trip() {
    let pat = 0x0007_0106_0007_0406;
    let st = run64(|a| {
        rdmsr_to(a, 0x1a0, rbx); // IA32_MISC_ENABLE
        rdmsr_to(a, 0xfe, rsi); // IA32_MTRRCAP
        rdmsr_to(a, 0x277, rdi); // IA32_PAT at reset
        wrmsr(a, 0x277, pat);
        rdmsr_to(a, 0x277, r8);
        wrmsr(a, 0x2ff, 0xc06); // MTRRs and fixed ranges on, default WB
        wrmsr(a, 0x200, 0x8000_0000); // PHYSBASE0: 2 GiB, UC
        wrmsr(a, 0x201, 0xf_8000_0800); // PHYSMASK0: 2 GiB, valid
        wrmsr(a, 0x250, 0x0606_0606_0606_0606); // FIX64K_00000: WB
        rdmsr_to(a, 0x2ff, r9);
        rdmsr_to(a, 0x201, r10);
        rdmsr_to(a, 0x250, r11);
        rdmsr_to(a, 0x8b, r13); // IA32_BIOS_SIGN_ID
        rdmsr_to(a, 0x3a, r14); // IA32_FEATURE_CONTROL
    });
    assert_eq!(st.reg(Reg::R12), 0, "no #GP expected");
    assert_eq!(st.reg(Reg::Rbx) & 1, 1, "fast strings");
    assert_eq!(st.reg(Reg::Rsi), 0x508);
    assert_eq!(st.reg(Reg::Rdi), PAT_DEFAULT);
    assert_eq!(st.reg(Reg::R8), pat);
    assert_eq!(st.pat, pat, "PAT is architectural state");
    assert_eq!(st.reg(Reg::R9), 0xc06);
    assert_eq!(st.reg(Reg::R10), 0xf_8000_0800);
    assert_eq!(st.reg(Reg::R11), 0x0606_0606_0606_0606);
    assert_eq!(st.reg(Reg::R13) >> 32, 1, "a microcode revision");
    assert_eq!(st.reg(Reg::R14) & 1, 1, "feature control is locked");
}

#[test]
fn reserved_values_and_unknown_msrs_raise_gp_that_a_fixup_can_skip() {
    let st = run64(|a| {
        wrmsr(a, 0x277, 0x0007_0406_0007_0402); // PAT type 2 is reserved
        wrmsr(a, 0x2ff, 0x1_0000_0006); // reserved bit of MTRR_DEF_TYPE
        wrmsr(a, 0x250, 0x0303); // fixed-range type 3 is reserved
        wrmsr(a, 0x3a, 5); // feature control is locked
        a.mov(ecx, 0x1234_5678).unwrap(); // an MSR that does not exist
        a.mov(ebx, 0x55).unwrap();
        a.rdmsr().unwrap();
        a.mov(ebx, 0x66).unwrap();
        rdmsr_to(a, 0x277, r8);
    });
    assert_eq!(st.reg(Reg::R12), 5);
    assert_eq!(st.reg(Reg::Rbx), 0x66, "execution went on after the fixup");
    assert_eq!(st.reg(Reg::R8), PAT_DEFAULT);
}

#[test]
fn pat_survives_set_state() {
    let mut m = Machine::new();
    let mut s = long_state(&m);
    s.pat = 0x0101_0101_0101_0101;
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            rdmsr_to(a, 0x277, rbx);
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rbx), 0x0101_0101_0101_0101);
    assert_eq!(st.pat, 0x0101_0101_0101_0101);
}

/// Machine-check MSRs read (four banks, nothing logged); speculation-control MSRs that CPUID
/// does not advertise, non-canonical SYSENTER entry points (Intel's rule; AMD ignores the upper
/// half and KVM canonicalises, so test-roms/corners.asm checks them only on Intel) and RDPMC of
/// a counter this CPU lacks raise #GP(0).
#[test]
fn machine_check_msrs_read_and_unadvertised_ones_fault() {
    let st = run64(|a| {
        rdmsr_to(a, 0x179, rbx); // IA32_MCG_CAP
        rdmsr_to(a, 0x17a, rsi); // IA32_MCG_STATUS
        wrmsr(a, 0x40c, 0x1f); // MC3_CTL
        rdmsr_to(a, 0x40c, rdi);
        rdmsr_to(a, 0x40d, r8); // MC3_STATUS
        wrmsr(a, 0x40d, 0); // clearing a status is fine
        wrmsr(a, 0x40d, 1); // #GP: only 0
        rdmsr_to(a, 0x410, r9); // #GP: MC4 does not exist
        rdmsr_to(a, 0x48, r9); // #GP: SPEC_CTRL
        wrmsr(a, 0x49, 1); // #GP: PRED_CMD
        wrmsr(a, 0x10b, 1); // #GP: FLUSH_CMD
        wrmsr(a, 0x175, 0x8000_0000_0000); // #GP: SYSENTER_ESP
        wrmsr(a, 0x176, 0x8000_0000_0000); // #GP: SYSENTER_EIP
        a.mov(ecx, 0).unwrap();
        a.rdpmc().unwrap(); // #GP: no counters
    });
    assert_eq!(st.reg(Reg::Rbx), 4, "MCG_CAP: four banks");
    assert_eq!(st.reg(Reg::Rsi), 0);
    assert_eq!(st.reg(Reg::Rdi), 0x1f);
    assert_eq!(st.reg(Reg::R8), 0);
    assert_eq!(st.reg(Reg::R12), 8);
}

/// IA32_TSC_ADJUST (CPUID.7.0:EBX[1]) follows writes to IA32_TSC, and a write to it moves the
/// TSC by the same amount.
#[test]
fn tsc_adjust_tracks_tsc_writes_and_moves_the_tsc() {
    let st = run64(|a| {
        a.mov(eax, 7).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
        a.mov(r15, rbx).unwrap();
        rdmsr_to(a, 0x3b, r8);
        wrmsr(a, 0x10, 1 << 40);
        rdmsr_to(a, 0x3b, r9);
        a.mov(r11, r9).unwrap();
        a.add(r11, 0x1000_0000).unwrap();
        a.mov(ecx, 0x3b).unwrap();
        a.mov(rax, r11).unwrap();
        a.mov(rdx, r11).unwrap();
        a.shr(rdx, 32).unwrap();
        a.wrmsr().unwrap();
        rdmsr_to(a, 0x10, r10);
        rdmsr_to(a, 0x3b, r13);
    });
    assert_eq!(st.reg(Reg::R12), 0, "no #GP expected");
    assert_ne!(st.reg(Reg::R15) & 2, 0, "CPUID.7.0:EBX.TSC_ADJUST");
    assert_eq!(st.reg(Reg::R8), 0, "TSC_ADJUST starts at 0");
    let adj = st.reg(Reg::R9);
    assert!(
        ((1u64 << 40) - 999..=1 << 40).contains(&adj),
        "a TSC write adds its difference to TSC_ADJUST: {adj:#x}"
    );
    let tsc = st.reg(Reg::R10);
    assert!(
        ((1u64 << 40) + 0x1000_0000..(1u64 << 40) + 0x1000_0000 + 1000).contains(&tsc),
        "a TSC_ADJUST write moves the TSC: {tsc:#x}"
    );
    assert_eq!(st.reg(Reg::R13), adj + 0x1000_0000);
}
