//! System instructions: descriptor-table registers, LTR/STR, LAR/VERR/VERW/ARPL, SMSW/LMSW/CLTS,
//! control and debug registers, CLI and port I/O at CPL 3, SYSENTER/SYSEXIT, RDTSCP.

use iced_x86::code_asm::*;

use super::*;
use crate::state::{Reg, bits};

fn run32(f: impl FnOnce(&mut CodeAssembler)) -> (Machine, CpuState) {
    let mut m = Machine::new();
    let s = prot_state(&m);
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            f(a);
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let s = m.run_to_halt();
    (m, s)
}

#[test]
fn descriptor_table_registers_round_trip() {
    let (m, s) = run32(|a| {
        a.sgdt(ptr(0x5000)).unwrap();
        a.mov(word_ptr(0x5010), 0x3ff).unwrap();
        a.mov(dword_ptr(0x5012), 0x8000).unwrap();
        a.lidt(ptr(0x5010)).unwrap();
        a.sidt(ptr(0x5020)).unwrap();
        a.mov(ax, TSS_SEL as u32).unwrap();
        a.ltr(ax).unwrap();
        a.str(bx).unwrap();
        a.sldt(cx).unwrap();
    });
    assert_eq!(m.rd(0x5000, 2), 0x4f);
    assert_eq!(m.rd(0x5002, 4), GDT);
    assert_eq!((s.idt.base, s.idt.limit), (0x8000, 0x3ff));
    assert_eq!(m.rd(0x5022, 4), 0x8000);
    assert_eq!(s.reg(Reg::Rbx) & 0xffff, u64::from(TSS_SEL));
    // LTR marks the TSS busy, in the register and in the GDT.
    assert_eq!(s.tr.typ, 0xb);
    assert_eq!(m.rd(GDT + 0x38 + 5, 1) & 0xf, 0xb);
}

#[test]
fn lar_verr_verw_arpl() {
    let (_, s) = run32(|a| {
        a.mov(ecx, CS32 as u32).unwrap();
        a.verr(cx).unwrap(); // readable code: ZF=1
        a.setz(bl).unwrap();
        a.verw(cx).unwrap(); // code is not writable: ZF=0
        a.setz(bh).unwrap();
        a.mov(ecx, 0x400).unwrap();
        a.lar(edx, ecx).unwrap(); // beyond the GDT: ZF=0, edx unchanged
        a.setz(dl).unwrap();
        a.mov(ax, 0x10).unwrap();
        a.mov(si, 0x13).unwrap();
        a.arpl(ax, si).unwrap(); // rpl 0 < 3: ax = 0x13, ZF=1
    });
    assert_eq!(s.reg(Reg::Rbx) & 0xffff, 0x0001);
    assert_eq!(s.reg(Reg::Rdx) & 0xff, 0);
    assert_eq!(s.reg(Reg::Rax) & 0xffff, 0x13);
}

#[test]
fn control_and_debug_registers() {
    let (_, s) = run32(|a| {
        a.smsw(ax).unwrap();
        a.mov(ebx, cr0).unwrap();
        a.or(ebx, 8).unwrap(); // TS
        a.mov(cr0, ebx).unwrap();
        a.clts().unwrap();
        a.mov(ecx, 0x1234).unwrap();
        a.mov(dr0, ecx).unwrap();
        a.mov(edx, dr0).unwrap();
        a.mov(esi, dr7).unwrap();
        a.mov(edi, 0xabc).unwrap();
        a.mov(cr2, edi).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 1, 1);
    assert_eq!(s.cr0 & bits::CR0_TS, 0);
    assert_eq!(s.reg(Reg::Rdx), 0x1234);
    assert_eq!(s.reg(Reg::Rsi), 0x400);
    assert_eq!(s.cr2, 0xabc);
}

#[test]
fn cli_and_port_io_at_cpl3_raise_gp() {
    for code in [[0xfa, 0x90], [0xe6, 0x80]] {
        // cli / out 0x80, al
        let mut m = Machine::new();
        let mut s = prot_state(&m);
        gate32(&m, 13, CS32, 0x9000, 0xe);
        m.load(0x9000, &[0xf4]);
        m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
        m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
        // I/O map base past the TSS limit: no port is permitted at CPL3 with IOPL 0.
        m.mem.write_le(TSS + 0x66, 2, 0x68).unwrap();
        s.cs = seg_from(CS32_USER, desc(0, 0xfffff, 0xfb, 0xc));
        let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
        (s.ds, s.es, s.ss) = (dseg, dseg, dseg);
        m.load(CODE, &code);
        m.set(&s);
        let st = m.run_to_halt();
        assert_eq!(st.rip, 0x9001);
        assert_eq!(m.rd(0x60000 - 20, 4), CODE);
        assert!(m.io.writes.lock().unwrap().is_empty());
    }
}

#[test]
fn sysenter_and_sysexit() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    // SYSEXIT to CS = SYSENTER_CS + 16 = 0x18 | 3 (the GDT's code64 slot would be wrong here, but
    // SYSEXIT loads flat caches without reading the GDT).
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            a.mov(ecx, 0x174).unwrap();
            a.mov(eax, CS32 as u32).unwrap();
            a.xor(edx, edx).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0x175).unwrap();
            a.mov(eax, 0x60000).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0x176).unwrap();
            a.mov(eax, 0x9000).unwrap(); // kernel entry
            a.wrmsr().unwrap();
            a.mov(edx, 0x9100).unwrap(); // user entry
            a.mov(ecx, 0x50000).unwrap();
            a.sysexit().unwrap();
        }),
    );
    m.load(0x9000, &[0xf4]); // hlt
    m.load(0x9100, &[0x89, 0xe3, 0x0f, 0x34]); // mov ebx, esp; sysenter
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rbx), 0x50000);
    assert_eq!(st.reg(Reg::Rsp), 0x60000);
    assert_eq!(st.cs.selector, CS32);
}

#[test]
fn rdtscp_counts_instructions_and_reads_tsc_aux() {
    let (_, s) = run32(|a| {
        a.mov(ecx, 0xc000_0103u32).unwrap();
        a.mov(eax, 7).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.rdtscp().unwrap();
    });
    assert_eq!(s.reg(Reg::Rcx), 7);
    assert_eq!(s.reg(Reg::Rax), 4);
}

/// With the machine's clock behind the TSC, RDTSC reads the clock (plus what WRMSR to IA32_TSC
/// set), and CPUID says its rate: leaf 0x15 (TSC = crystal x 1/1, crystal 1 GHz) and 0x16.
#[test]
fn tsc_follows_the_machine_clock_and_cpuid_reports_its_rate() {
    let mut m = Machine::new();
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(5_000_000));
    let clock = now.clone();
    m.cpu = SoftAccel::new(m.mem.clone(), 1)
        .with_tsc_clock(1_000_000_000, move || {
            clock.load(std::sync::atomic::Ordering::Relaxed)
        })
        .new_vcpu(0)
        .unwrap();
    let s = prot_state(&m);
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            for (leaf, out) in [(0u32, 0x1000u32), (0x15, 0x1010), (0x16, 0x1020)] {
                a.mov(eax, leaf).unwrap();
                a.xor(ecx, ecx).unwrap();
                a.cpuid().unwrap();
                a.mov(dword_ptr(out), eax).unwrap();
                a.mov(dword_ptr(out + 4), ebx).unwrap();
                a.mov(dword_ptr(out + 8), ecx).unwrap();
            }
            a.rdtsc().unwrap();
            a.mov(dword_ptr(0x1030), eax).unwrap();
            a.mov(ecx, 0x10u32).unwrap();
            a.mov(eax, 0x100u32).unwrap();
            a.xor(edx, edx).unwrap();
            a.wrmsr().unwrap();
            a.rdtsc().unwrap();
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert!(
        m.rd(0x1000, 4) >= 0x16,
        "max basic leaf {:#x}",
        m.rd(0x1000, 4)
    );
    assert_eq!(
        [m.rd(0x1010, 4), m.rd(0x1014, 4), m.rd(0x1018, 4)],
        [1, 1, 1_000_000_000]
    );
    assert_eq!(
        [m.rd(0x1020, 4), m.rd(0x1024, 4), m.rd(0x1028, 4)],
        [1000, 1000, 1000]
    );
    // The state set the TSC to 0 and the clock stood still; then WRMSR wrote 0x100.
    assert_eq!(m.rd(0x1030, 4), 0);
    assert_eq!(st.reg(Reg::Rax), 0x100);
    // The counter moves with the clock, not with instructions.
    now.fetch_add(1234, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(m.state().tsc, 0x100 + 1234);
}
