//! The fuzzer's small supervisor: per mode, the descriptor tables, page tables and exception
//! handlers a generated program runs under, and the initial CpuState. Everything is built from
//! Rust straight into guest memory, so both backends start from the same bytes and state without
//! running any set-up code.
//!
//! Physical layout (identity mapped where paging is on):
//! ```text
//! 0x0000  real-mode IVT          0x1000  GDT          0x2000  IDT         0x3000  TSS
//! 0x4000  exception handler (HLT)                      0x7c00  the program (<= 12 KiB)
//! 0xc000  data sandbox (memory operands are [rBX + disp8] around it)
//! 0xe000  ring-0 stack top (TSS.RSP0)                  0xf000  program stack top
//! 0x10000 page tables: PML4, PDPT, PD with 2 MiB pages over the first 1 GiB (user-accessible)
//! ```

use janus_accel::state::{bits, rflags};
use janus_accel::{CpuState, DescriptorTable, GuestMemory, MemoryError, Segment};

use super::env::Env;

/// Where the program is loaded.
pub const PROGRAM: u64 = 0x7c00;
/// Largest program.
pub const PROGRAM_MAX: usize = 0x3000;
/// Centre of the data sandbox (rBX and rBP point here).
pub const SANDBOX: u64 = 0xc000;
/// Top of the program's stack.
pub const STACK: u64 = 0xf000;
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
const HANDLER: u64 = 0x4000;
/// Top of the ring-0 stack (TSS.RSP0): exception frames from CPL3 land just below it.
pub const KSTACK: u64 = 0xe000;
const PML4: u64 = 0x10000;

/// Guest memory a fuzz case needs.
pub const MEM_SIZE: u64 = 2 << 20;

/// The execution mode of a fuzz case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FuzzMode {
    /// 16-bit real mode.
    Real,
    /// 32-bit protected mode, flat segments, no paging, CPL0.
    Prot32,
    /// 64-bit long mode, 4-level paging, CPL0.
    Long64,
    /// 64-bit long mode at CPL3 (KVM runs this natively even on kvm_pvm: the hardware oracle).
    User64,
}

impl FuzzMode {
    /// Every mode.
    pub const ALL: [FuzzMode; 4] = [
        FuzzMode::Real,
        FuzzMode::Prot32,
        FuzzMode::Long64,
        FuzzMode::User64,
    ];

    /// Code bitness.
    pub fn bitness(self) -> u32 {
        match self {
            FuzzMode::Real => 16,
            FuzzMode::Prot32 => 32,
            FuzzMode::Long64 | FuzzMode::User64 => 64,
        }
    }

    /// The name used on the command line and in reproducers.
    pub fn name(self) -> &'static str {
        match self {
            FuzzMode::Real => "real",
            FuzzMode::Prot32 => "prot32",
            FuzzMode::Long64 => "long64",
            FuzzMode::User64 => "user64",
        }
    }
}

impl std::str::FromStr for FuzzMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FuzzMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown fuzz mode '{s}' (real, prot32, long64, user64)"))
    }
}

fn flat(selector: u16, typ: u8, dpl: u8, db: bool, l: bool) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        typ,
        s: true,
        dpl,
        present: true,
        avl: false,
        l,
        db,
        g: true,
        unusable: false,
    }
}

fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    u64::from(limit & 0xffff)
        | u64::from(base & 0xff_ffff) << 16
        | u64::from(access) << 40
        | u64::from((limit >> 16) & 0xf) << 48
        | u64::from(flags & 0xf) << 52
        | u64::from(base >> 24) << 56
}

/// Writes the supervisor structures for `mode` into `mem`.
///
/// # Errors
/// Memory smaller than [`MEM_SIZE`].
pub fn prepare(mem: &GuestMemory, mode: FuzzMode) -> Result<(), MemoryError> {
    prepare_env(mem, mode, &Env::fixed(mode))
}

/// Writes the supervisor structures for `mode` under the environment `env` into `mem`.
///
/// # Errors
/// Memory smaller than [`MEM_SIZE`].
pub fn prepare_env(mem: &GuestMemory, mode: FuzzMode, env: &Env) -> Result<(), MemoryError> {
    // Exception handler: HLT, forever (interrupts are off, so the run ends there).
    mem.write(HANDLER, &[0xf4, 0xeb, 0xfd])?;
    // GDT.
    let gdt = [
        0,
        descriptor(0, 0xfffff, 0x9b, 0xc),     // 0x08 code32
        descriptor(0, 0xfffff, 0x93, 0xc),     // 0x10 data
        descriptor(0, 0xfffff, 0x9b, 0xa),     // 0x18 code64
        descriptor(0, 0xfffff, 0xf3, 0xc),     // 0x20 data dpl3
        descriptor(0, 0xfffff, 0xfb, 0xa),     // 0x28 code64 dpl3
        descriptor(TSS as u32, 0x67, 0x8b, 0), // 0x30 TSS (busy), low half
        0,                                     // TSS high half (base 63:32 = 0)
    ];
    for (i, d) in gdt.iter().enumerate() {
        mem.write_le(GDT + i as u64 * 8, 8, *d)?;
    }
    // TSS: the ring-0 stack, as RSP0 (64-bit layout) or ESP0 and SS0 (32-bit layout).
    if mode == FuzzMode::Prot32 {
        mem.write_le(TSS + 4, 4, KSTACK)?;
        mem.write_le(TSS + 8, 2, 0x10)?;
    } else {
        mem.write_le(TSS + 4, 8, KSTACK)?;
    }
    // IVT and IDT: every vector goes to the handler.
    for v in 0..32u64 {
        match mode {
            FuzzMode::Real => mem.write_le(v * 4, 4, HANDLER)?,
            FuzzMode::Prot32 => {
                let gate =
                    (HANDLER & 0xffff) | 0x08 << 16 | 0x8e00u64 << 32 | (HANDLER >> 16) << 48;
                mem.write_le(IDT + v * 8, 8, gate)?;
            }
            FuzzMode::Long64 | FuzzMode::User64 => {
                let lo = (HANDLER & 0xffff)
                    | 0x18 << 16
                    | 0x8e00u64 << 32
                    | ((HANDLER >> 16) & 0xffff) << 48;
                mem.write_le(IDT + v * 16, 8, lo)?;
                mem.write_le(IDT + v * 16 + 8, 8, HANDLER >> 32)?;
            }
        }
    }
    // Page tables: PML4[0] -> PDPT[0] -> PD of 2 MiB pages, all present, writable, user.
    mem.write_le(PML4, 8, (PML4 + 0x1000) | 7)?;
    mem.write_le(PML4 + 0x1000, 8, (PML4 + 0x2000) | 7)?;
    for i in 0..512u64 {
        mem.write_le(PML4 + 0x2000 + i * 8, 8, (i << 21) | 0x87)?;
    }
    env.prepare(mem, mode)
}

/// The initial state for `mode`, with `gpr` as the general registers (rBX, rBP and rSP are set to
/// the sandbox and stack) and the arithmetic flags from `flags`.
pub fn initial_state(mode: FuzzMode, gpr: [u64; 16], flags: u64) -> CpuState {
    initial_state_env(mode, gpr, flags, &Env::fixed(mode))
}

/// The initial state for `mode` under the environment `env` (see [`initial_state`]).
pub fn initial_state_env(mode: FuzzMode, gpr: [u64; 16], flags: u64, env: &Env) -> CpuState {
    let mut s = CpuState::boot_sector();
    s.gpr = gpr;
    s.gpr[3] = SANDBOX;
    s.gpr[5] = SANDBOX;
    s.gpr[4] = STACK;
    s.rip = PROGRAM;
    s.rflags = rflags::FIXED
        | (flags
            & (rflags::CF
                | rflags::PF
                | rflags::AF
                | rflags::ZF
                | rflags::SF
                | rflags::OF
                | rflags::DF));
    // SSE enabled; x87 and SSE as after FNINIT with every exception masked; XMM registers
    // derived from the general registers, so a reproducer (which saves those) rebuilds them.
    s.fpu.fcw = 0x37f;
    s.fpu.ftw = 0;
    // Rounding and precision controls, DAZ and FTZ, and now and then one unmasked SIMD
    // exception, from RDX's upper half (a reproducer saves RDX, so it rebuilds them too).
    // Not overflow or underflow: with those unmasked the CPU's precision flag reflects the
    // exponent-scaled result, which the software CPU does not compute (docs/architecture.md).
    let g = gpr[2] >> 32;
    s.fpu.fcw = 0x37f & !0xf00 | (g as u16 & 0xf00);
    s.fpu.mxcsr = 0x1f80 | (g as u32 & 0xe040);
    if (g >> 16) & 7 == 0 {
        let unmask = [7, 8, 9, 12]; // IM, DM, ZM, PM
        s.fpu.mxcsr &= !(1 << unmask[(g >> 19) as usize % 4]);
    }
    for (i, x) in s.fpu.xmm.iter_mut().enumerate() {
        *x = u128::from(gpr[i]) | u128::from(gpr[(i + 5) % 16]) << 64;
    }
    // User64 draws AVX forms: XSAVE enabled with x87|SSE|AVX, the YMM upper halves likewise
    // derived from the general registers.
    if mode == FuzzMode::User64 {
        s.fpu.xcr0 = 7;
        for (i, x) in s.fpu.ymm_hi.iter_mut().enumerate() {
            *x = u128::from(gpr[(i + 3) % 16]) | u128::from(gpr[(i + 11) % 16]) << 64;
        }
    }
    let mask = |v: u64, bits: u32| if bits == 64 { v } else { v & ((1 << bits) - 1) };
    match mode {
        FuzzMode::Real => {
            for g in &mut s.gpr {
                *g = mask(*g, 32);
            }
            s.gpr[4] = STACK;
        }
        FuzzMode::Prot32 => {
            for g in &mut s.gpr {
                *g = mask(*g, 32);
            }
            s.cr0 = bits::CR0_PE | bits::CR0_ET;
            s.cs = flat(0x08, 0xb, 0, true, false);
            let d = flat(0x10, 0x3, 0, true, false);
            (s.ds, s.es, s.fs, s.gs, s.ss) = (d, d, d, d, d);
        }
        FuzzMode::Long64 | FuzzMode::User64 => {
            s.cr0 = bits::CR0_PE | bits::CR0_ET | bits::CR0_PG | bits::CR0_WP;
            s.cr4 = bits::CR4_PAE;
            s.cr3 = PML4;
            s.efer = bits::EFER_LME | bits::EFER_LMA;
            if mode == FuzzMode::Long64 {
                s.cs = flat(0x18, 0xb, 0, false, true);
                let d = flat(0x10, 0x3, 0, true, false);
                (s.ds, s.es, s.fs, s.gs, s.ss) = (d, d, d, d, d);
            } else {
                s.cs = flat(0x2b, 0xb, 3, false, true);
                let d = flat(0x23, 0x3, 3, true, false);
                (s.ds, s.es, s.fs, s.gs, s.ss) = (d, d, d, d, d);
            }
        }
    }
    s.cr4 |= bits::CR4_OSFXSR | bits::CR4_OSXMMEXCPT;
    if mode == FuzzMode::User64 {
        s.cr4 |= bits::CR4_OSXSAVE;
    }
    s.cr0 |= bits::CR0_NE | bits::CR0_MP;
    if mode != FuzzMode::Real {
        s.gdt = DescriptorTable {
            base: GDT,
            limit: 0x6f,
        };
        s.idt = DescriptorTable {
            base: IDT,
            limit: if mode == FuzzMode::Prot32 {
                0xff
            } else {
                0x1ff
            },
        };
        s.tr = Segment {
            selector: 0x30,
            base: TSS,
            limit: 0x67,
            typ: 0xb,
            present: true,
            ..Default::default()
        };
        s.ldt = Segment {
            unusable: true,
            ..Default::default()
        };
    }
    env.apply(mode, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_accel::RegionKind;

    #[test]
    fn modes_parse_and_report_bitness() {
        for m in FuzzMode::ALL {
            assert_eq!(m.name().parse::<FuzzMode>(), Ok(m));
        }
        assert_eq!(FuzzMode::User64.bitness(), 64);
        assert!("vm86".parse::<FuzzMode>().is_err());
    }

    #[test]
    fn user64_state_is_cpl3_long_mode_and_tables_are_written() {
        let mut m = GuestMemory::new();
        m.add(0, MEM_SIZE, RegionKind::Ram).unwrap();
        prepare(&m, FuzzMode::User64).unwrap();
        let s = initial_state(FuzzMode::User64, [7; 16], !0);
        assert_eq!(s.mode_name(), "long64");
        assert_eq!(s.cs.dpl, 3);
        assert_eq!(s.gpr[3], SANDBOX);
        assert_eq!(s.rflags & rflags::IF, 0);
        // The identity map covers the sandbox.
        assert_eq!(
            janus_accel::walk::translate(&s, &m, SANDBOX + 5),
            Some(SANDBOX + 5)
        );
        assert_eq!(m.read_le(HANDLER, 1).unwrap(), 0xf4);
    }
}
