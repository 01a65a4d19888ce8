//! Tests of the software CPU: a small machine (RAM, a recording I/O handler) and helpers that
//! build real-mode, 32-bit protected-mode and 64-bit long-mode states with their GDT and page
//! tables in guest memory; one file per instruction family or topic.

mod alu;
mod avx;
mod conformance;
mod dma;
mod exceptions;
mod fpu;
mod fuzz;
mod golden;
mod isa;
mod long;
mod modes;
mod msr;
mod nmi;
mod prot;
mod real;
mod report;
mod string;
mod system;
mod tb_flush;

use std::sync::Mutex;

use iced_x86::code_asm::CodeAssembler;

use super::{SoftAccel, SoftVcpu};
use crate::exit::Exit;
use crate::io::IoHandler;
use crate::memory::{GuestMemory, RegionKind};
use crate::state::{CpuState, DescriptorTable, Segment, bits};
use crate::vcpu::Vcpu;

/// Records port and MMIO writes and MMIO reads; reads return all ones.
#[derive(Debug, Default)]
pub struct TestIo {
    pub writes: Mutex<Vec<(u16, Vec<u8>)>>,
    pub mmio: Mutex<Vec<(u64, Vec<u8>)>>,
    pub mmio_reads: Mutex<Vec<(u64, usize)>>,
}

impl TestIo {
    pub fn port_bytes(&self, port: u16) -> Vec<u8> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == port)
            .flat_map(|(_, d)| d.clone())
            .collect()
    }
}

impl IoHandler for TestIo {
    fn pio_read(&self, _: usize, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _: usize, port: u16, data: &[u8]) {
        self.writes.lock().unwrap().push((port, data.to_vec()));
    }
    fn mmio_read(&self, _: usize, addr: u64, data: &mut [u8]) {
        self.mmio_reads.lock().unwrap().push((addr, data.len()));
        data.fill(0xff);
    }
    fn mmio_write(&self, _: usize, addr: u64, data: &[u8]) {
        self.mmio.lock().unwrap().push((addr, data.to_vec()));
    }
}

pub const RAM: u64 = 8 << 20;
pub const GDT: u64 = 0x1000;
pub const IDT: u64 = 0x2000;
pub const TSS: u64 = 0x3000;
pub const PML4: u64 = 0x10000;
pub const CODE: u64 = 0x7c00;

/// A one-vCPU machine over 8 MiB of RAM.
pub struct Machine {
    pub mem: GuestMemory,
    pub cpu: SoftVcpu,
    pub io: TestIo,
}

impl Machine {
    pub fn new() -> Self {
        Self::with_cpu(&crate::cpuid::CpuSpec::default())
    }

    /// The machine with CPU model `spec` (`--cpu`).
    pub fn with_cpu(spec: &crate::cpuid::CpuSpec) -> Self {
        let mut mem = GuestMemory::new();
        mem.add(0, RAM, RegionKind::Ram).unwrap();
        let cpu = SoftAccel::new(mem.clone(), 1)
            .with_cpu(spec)
            .new_vcpu(0)
            .unwrap();
        Machine {
            mem,
            cpu,
            io: TestIo::default(),
        }
    }

    pub fn load(&self, addr: u64, bytes: &[u8]) {
        self.mem.load(addr, bytes).unwrap();
    }

    pub fn run(&mut self) -> Exit {
        self.cpu.run(&self.io).unwrap()
    }

    pub fn state(&mut self) -> CpuState {
        self.cpu.state().unwrap()
    }

    pub fn set(&mut self, s: &CpuState) {
        self.cpu.set_state(s).unwrap();
    }

    pub fn rd(&self, addr: u64, len: usize) -> u64 {
        self.mem.read_le(addr, len).unwrap()
    }

    /// Runs until HLT and returns the state (panics on any other exit).
    pub fn run_to_halt(&mut self) -> CpuState {
        let e = self.run();
        let s = self.state();
        assert_eq!(e, Exit::Halt, "state:\n{s}");
        s
    }
}

/// Assembles with iced's code assembler at `ip`.
pub fn asm(bits: u32, ip: u64, f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a);
    a.assemble(ip).unwrap()
}

/// A GDT descriptor.
pub fn desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    u64::from(limit & 0xffff)
        | u64::from(base & 0xff_ffff) << 16
        | u64::from(access) << 40
        | u64::from((limit >> 16) & 0xf) << 48
        | u64::from(flags & 0xf) << 52
        | u64::from(base >> 24) << 56
}

/// Selectors of the test GDT.
pub const CS32: u16 = 0x08;
pub const DS32: u16 = 0x10;
pub const CS64: u16 = 0x18;
pub const CS32_USER: u16 = 0x28 | 3;
pub const DS32_USER: u16 = 0x30 | 3;
pub const TSS_SEL: u16 = 0x38;
pub const CS64_USER: u16 = 0x48 | 3;

/// Writes the test GDT: null, flat code32, flat data, code64, code16, user code32, user data,
/// a 64-bit TSS (16 bytes), user code64.
pub fn write_gdt(m: &Machine) {
    let g = [
        0,
        desc(0, 0xfffff, 0x9b, 0xc),
        desc(0, 0xfffff, 0x93, 0xc),
        desc(0, 0xfffff, 0x9b, 0xa),
        desc(0, 0xffff, 0x9b, 0x0),
        desc(0, 0xfffff, 0xfb, 0xc),
        desc(0, 0xfffff, 0xf3, 0xc),
        desc(TSS as u32, 0x67, 0x89, 0),
        0,
        desc(0, 0xfffff, 0xfb, 0xa),
    ];
    for (i, d) in g.iter().enumerate() {
        m.mem.write_le(GDT + 8 * i as u64, 8, *d).unwrap();
    }
}

pub fn seg_from(sel: u16, d: u64) -> Segment {
    let mut s = super::seg::from_desc(sel, d);
    s.typ |= 1;
    s
}

/// Real mode at 0000:7C00 with SP = 0x7000.
pub fn real_state() -> CpuState {
    let mut s = CpuState::boot_sector();
    s.gpr[4] = 0x7000;
    s
}

/// Flat 32-bit protected mode, no paging, at CODE with ESP = 0x70000; IDT at IDT (empty).
pub fn prot_state(m: &Machine) -> CpuState {
    write_gdt(m);
    let mut s = CpuState::boot_sector();
    s.cr0 |= bits::CR0_PE;
    s.gdt = DescriptorTable {
        base: GDT,
        limit: 0x4f,
    };
    s.idt = DescriptorTable {
        base: IDT,
        limit: 0x7ff,
    };
    s.cs = seg_from(CS32, desc(0, 0xfffff, 0x9b, 0xc));
    let d = seg_from(DS32, desc(0, 0xfffff, 0x93, 0xc));
    (s.ds, s.es, s.fs, s.gs, s.ss) = (d, d, d, d, d);
    s.tr = seg_from(TSS_SEL, desc(TSS as u32, 0x67, 0x8b, 0));
    s.rip = CODE;
    s.gpr[4] = 0x70000;
    s
}

/// Writes 4-level identity page tables for the first 8 MiB (2 MiB pages, writable, user).
pub fn write_page_tables(m: &Machine) {
    let pdpt = PML4 + 0x1000;
    let pd = PML4 + 0x2000;
    m.mem.write_le(PML4, 8, pdpt | 7).unwrap();
    m.mem.write_le(pdpt, 8, pd | 7).unwrap();
    for i in 0..4u64 {
        m.mem.write_le(pd + 8 * i, 8, (i << 21) | 0x87).unwrap();
    }
}

/// 64-bit long mode with identity paging at CODE, RSP = 0x70000.
pub fn long_state(m: &Machine) -> CpuState {
    let mut s = prot_state(m);
    write_page_tables(m);
    s.cr0 |= bits::CR0_PG;
    s.cr4 |= bits::CR4_PAE;
    s.cr3 = PML4;
    s.efer = bits::EFER_LME | bits::EFER_LMA;
    s.cs = seg_from(CS64, desc(0, 0xfffff, 0x9b, 0xa));
    s.idt = DescriptorTable {
        base: IDT,
        limit: 0xfff,
    };
    s
}

/// Writes a 32-bit interrupt gate.
pub fn gate32(m: &Machine, v: u8, sel: u16, off: u32, typ: u8) {
    let d = u64::from(off & 0xffff)
        | u64::from(sel) << 16
        | u64::from(0x80 | typ) << 40
        | u64::from(off >> 16) << 48;
    m.mem.write_le(IDT + 8 * u64::from(v), 8, d).unwrap();
}

/// Writes a 64-bit interrupt gate with an IST index.
pub fn gate64(m: &Machine, v: u8, off: u64, ist: u8) {
    let lo = (off & 0xffff)
        | u64::from(CS64) << 16
        | u64::from(ist) << 32
        | 0x8e_u64 << 40
        | ((off >> 16) & 0xffff) << 48;
    m.mem.write_le(IDT + 16 * u64::from(v), 8, lo).unwrap();
    m.mem
        .write_le(IDT + 16 * u64::from(v) + 8, 8, off >> 32)
        .unwrap();
}
