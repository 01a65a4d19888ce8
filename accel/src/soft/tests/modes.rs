//! Mode switches as a boot sector does them: real -> protected (GDT, CR0.PE, far JMP) -> long
//! (CR4.PAE, CR3, EFER.LME, CR0.PG, far JMP), and 32-bit paging (PSE) and PAE paging.

use iced_x86::code_asm::*;

use super::*;
use crate::state::{Reg, bits};

#[test]
fn real_to_protected_to_long_mode() {
    let mut m = Machine::new();
    write_gdt(&m);
    write_page_tables(&m);
    // GDTR image at 0x7f00.
    m.mem.write_le(0x7f00, 2, 0x4f).unwrap();
    m.mem.write_le(0x7f02, 4, GDT).unwrap();
    let real = asm(16, 0x7c00, |a| {
        a.cli().unwrap();
        a.lgdt(word_ptr(0x7f00)).unwrap();
        a.mov(eax, cr0).unwrap();
        a.or(al, 1).unwrap();
        a.mov(cr0, eax).unwrap();
        // jmp dword 0x08:0x7d00
        a.db(&[0x66, 0xea, 0x00, 0x7d, 0x00, 0x00, 0x08, 0x00])
            .unwrap();
    });
    let prot = asm(32, 0x7d00, |a| {
        a.mov(ax, DS32 as u32).unwrap();
        a.mov(ds, ax).unwrap();
        a.mov(ss, ax).unwrap();
        a.mov(es, ax).unwrap();
        a.mov(esp, 0x70000).unwrap();
        a.mov(dx, 0x3f8).unwrap();
        a.mov(al, b'P' as u32).unwrap();
        a.out(dx, al).unwrap();
        a.mov(eax, cr4).unwrap();
        a.or(eax, 0x20).unwrap();
        a.mov(cr4, eax).unwrap();
        a.mov(eax, PML4 as u32).unwrap();
        a.mov(cr3, eax).unwrap();
        a.mov(ecx, 0xc000_0080u32).unwrap();
        a.rdmsr().unwrap();
        a.or(eax, 0x100).unwrap();
        a.wrmsr().unwrap();
        a.mov(eax, cr0).unwrap();
        a.or(eax, 0x8000_0000u32).unwrap();
        a.mov(cr0, eax).unwrap();
        // jmp 0x18:0x7e80
        a.db(&[0xea, 0x80, 0x7e, 0x00, 0x00, 0x18, 0x00]).unwrap();
    });
    let long = asm(64, 0x7e80, |a| {
        a.mov(rax, 0x1_2345_6789u64).unwrap();
        a.mov(qword_ptr(0x5000), rax).unwrap();
        a.mov(al, b'L' as u32).unwrap();
        a.mov(dx, 0x3f8).unwrap(); // rdmsr clobbered edx
        a.out(dx, al).unwrap();
        a.hlt().unwrap();
    });
    m.load(0x7c00, &real);
    m.load(0x7d00, &prot);
    m.load(0x7e80, &long);
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(m.io.port_bytes(0x3f8), b"PL".to_vec(), "{s}");
    assert_eq!(m.rd(0x5000, 8), 0x1_2345_6789);
    assert_eq!(s.mode_name(), "long64");
    assert_ne!(s.efer & bits::EFER_LMA, 0);
    assert_eq!(s.cs.selector, CS64);
}

#[test]
fn protected_32_bit_paging_with_4m_pages_and_pae() {
    // 32-bit paging: PDE 1 maps linear 0x400000 -> physical 0 (4 MiB page); PDE 0 identity.
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    let pd = 0x20000u64;
    m.mem.write_le(pd, 4, 0x83).unwrap();
    m.mem.write_le(pd + 4, 4, 0x83).unwrap();
    m.mem.write_le(0x5000, 4, 0xfeed).unwrap();
    s.cr3 = pd;
    s.cr4 |= bits::CR4_PSE;
    s.cr0 |= bits::CR0_PG;
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            a.mov(eax, dword_ptr(0x405000)).unwrap();
            a.mov(dword_ptr(0x405004), 0x77).unwrap();
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rax), 0xfeed);
    assert_eq!(m.rd(0x5004, 4), 0x77);
    // Accessed and dirty bits were set on the PDE.
    assert_eq!(m.rd(pd + 4, 4) & 0x60, 0x60);

    // PAE: PDPT -> PD with 2 MiB pages; linear 0x200000 -> physical 0.
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    let pdpt = 0x20000u64;
    let pd = 0x21000u64;
    m.mem.write_le(pdpt, 8, pd | 1).unwrap();
    m.mem.write_le(pd, 8, 0x83).unwrap();
    m.mem.write_le(pd + 8, 8, 0x83).unwrap();
    m.mem.write_le(0x5000, 4, 0xbeef).unwrap();
    s.cr3 = pdpt;
    s.cr4 |= bits::CR4_PAE;
    s.cr0 |= bits::CR0_PG;
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            a.mov(eax, dword_ptr(0x205000)).unwrap();
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rax), 0xbeef);
}

#[test]
fn invlpg_and_cr3_reload_flush_the_tlb() {
    let mut m = Machine::new();
    let s = long_state(&m);
    m.mem.write_le(0x5000, 8, 1).unwrap();
    m.mem.write_le(0x7000, 8, 2).unwrap();
    // 4 KiB mapping for linear 0x600000 through a page table at 0x30000.
    let pt = 0x30000u64;
    m.mem.write_le(PML4 + 0x2000 + 24, 8, pt | 7).unwrap();
    m.mem.write_le(pt, 8, 0x5000 | 7).unwrap();
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            a.mov(rax, qword_ptr(0x600000)).unwrap();
            a.mov(rbx, pt).unwrap();
            a.mov(qword_ptr(rbx), 0x7007).unwrap();
            a.mov(rcx, qword_ptr(0x600000)).unwrap(); // stale TLB entry: still 1
            a.invlpg(byte_ptr(0x600000)).unwrap();
            a.mov(rdx, qword_ptr(0x600000)).unwrap(); // 2
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rax), 1);
    assert_eq!(st.reg(Reg::Rcx), 1);
    assert_eq!(st.reg(Reg::Rdx), 2);
}

#[test]
fn mmio_outside_ram_goes_to_the_handler() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            a.mov(ebx, 0xfee0_00b0u32).unwrap();
            a.mov(dword_ptr(ebx), 0x1234).unwrap();
            a.mov(ebx, 0xfec0_0000u32).unwrap();
            a.mov(eax, dword_ptr(ebx)).unwrap();
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rax), 0xffff_ffff);
    let w = m.io.mmio.lock().unwrap().clone();
    assert_eq!(w, vec![(0xfee0_00b0, vec![0x34, 0x12, 0, 0])]);
}
