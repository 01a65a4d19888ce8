//! Randomised environments: the privilege level, segments, stack size, paging and control
//! bits a fuzz case runs under, drawn per case from a seed the reproducer keeps.
//!
//! One fixed environment per mode (flat 32-bit segments, CPL0, 2 MiB pages) hid whole classes
//! of bugs: a 16-bit stack under 32-bit code, expand-down and limited segments, CPL3 with
//! alignment checks, 4 KiB and 1 GiB pages, reserved bits, SMEP and SMAP. Seed 0 is that fixed
//! environment (and what a reproducer without an `env` line gets); any other seed draws one.
//!
//! Every address a program reaches stays inside the fuzzer's 2 MiB of RAM: the bases of
//! "based" segments are [`BASES`], offsets stay below 64 KiB, and the pages a fault is planted
//! on ([`Env::victim`]) are data or stack pages, never the supervisor's tables, handler or
//! ring-0 stack.

use janus_accel::state::{bits, rflags};
use janus_accel::{CpuState, GuestMemory, MemoryError, Segment};

use super::setup::{FuzzMode, PROGRAM, PROGRAM_MAX, SANDBOX, STACK};

/// Where the page tables of the paging variants live (the fixed environment's PML4 at 0x10000,
/// PDPT 0x11000 and PD 0x12000 come first).
const PT64: u64 = 0x13000;
const PD32: u64 = 0x14000;
const PT32: u64 = 0x15000;
const PDPT_PAE: u64 = 0x16000;
/// The PML4 and the long-mode/PAE page directory (as in [`super::setup`]).
const PML4: u64 = 0x10000;
const PD64: u64 = 0x12000;

/// Bases of "based" segments (and of FS/GS in 64-bit mode).
pub const BASES: [u64; 3] = [0x2_0000, 0x10_0000, 0x1e_0000];

/// How a data segment register (ES, DS, FS, GS) is set up in protected mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSeg {
    /// Base 0, 4 GiB.
    Flat,
    /// Base [`Env::base`], 4 GiB.
    Based,
    /// Base 0, expand-up, byte-granular limit just inside the sandbox.
    Limited,
    /// Base 0, expand-down with B=1: valid offsets above a limit just inside the sandbox.
    ExpandDown,
}

/// How SS is set up in protected mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackSeg {
    /// Base 0, 4 GiB, B=1.
    Flat,
    /// Base [`Env::base`], 4 GiB, B=1.
    Based,
    /// Base 0, 64 KiB, B=0: a 16-bit stack (SP, not ESP) under 32-bit code.
    Small16,
}

/// Paging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Paging off (real mode, or protected mode without CR0.PG).
    Off,
    /// 32-bit paging with 4 KiB pages.
    Legacy4K,
    /// 32-bit paging with one 4 MiB page (CR4.PSE).
    Pse4M,
    /// PAE paging with 2 MiB pages.
    Pae2M,
    /// PAE paging with 4 KiB pages over the first 2 MiB.
    Pae4K,
    /// 4-level paging with 2 MiB pages (the fixed environment).
    Long2M,
    /// 4-level paging with one 1 GiB page.
    Long1G,
    /// 4-level paging with 4 KiB pages over the first 2 MiB.
    Long4K,
}

impl Paging {
    fn small_pages(self) -> bool {
        matches!(self, Paging::Legacy4K | Paging::Pae4K | Paging::Long4K)
    }
}

/// A fault planted on one data or stack page (4 KiB paging only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// P = 0.
    NotPresent,
    /// R/W = 0: faults on a write at CPL3, and at CPL0 when CR0.WP is set.
    ReadOnly,
    /// U/S = 0: faults at CPL3 only.
    Supervisor,
    /// The NX bit with EFER.NXE clear: a reserved bit (#PF with RSVD) on any access.
    Reserved,
}

/// One case's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Env {
    /// The seed it was drawn from (0: the fixed environment).
    pub seed: u64,
    /// Current privilege level (protected mode; user64 is always 3, long64 0).
    pub cpl: u8,
    /// EFLAGS.IOPL.
    pub iopl: u8,
    /// EFLAGS.AC.
    pub ac: bool,
    /// CR0.AM (alignment checks at CPL3 when EFLAGS.AC is set too).
    pub am: bool,
    /// ES, DS, FS, GS in protected mode.
    pub data: [DataSeg; 4],
    /// SS in protected mode.
    pub stack: StackSeg,
    /// Real mode: the selectors of ES, SS, DS, FS, GS.
    pub real: [u16; 5],
    /// Base of the based segments.
    pub base: u64,
    /// Bits 31:16 of ESP where the stack is 16-bit (they must survive every push and pop).
    pub esp_high: u16,
    /// Paging.
    pub paging: Paging,
    /// A fault planted on a page the program's data or stack uses.
    pub victim: Option<(u64, Fault)>,
    /// CR0.WP.
    pub wp: bool,
    /// EFER.NXE (PAE and 4-level paging).
    pub nxe: bool,
    /// CR4.SMEP (with 4 KiB pages: the program's pages are then supervisor pages).
    pub smep: bool,
    /// CR4.SMAP (with 4 KiB pages).
    pub smap: bool,
    /// CR4.PGE.
    pub pge: bool,
    /// FS and GS bases in 64-bit mode.
    pub fs_gs_base: [u64; 2],
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Env {
    /// The fixed environment of `mode` (what seed 0 gives).
    pub fn fixed(mode: FuzzMode) -> Env {
        Env {
            seed: 0,
            cpl: u8::from(mode == FuzzMode::User64) * 3,
            iopl: 0,
            ac: false,
            am: false,
            data: [DataSeg::Flat; 4],
            stack: StackSeg::Flat,
            real: [0; 5],
            base: 0,
            esp_high: 0,
            paging: match mode {
                FuzzMode::Real | FuzzMode::Prot32 => Paging::Off,
                FuzzMode::Long64 | FuzzMode::User64 => Paging::Long2M,
            },
            victim: None,
            wp: matches!(mode, FuzzMode::Long64 | FuzzMode::User64),
            nxe: false,
            smep: false,
            smap: false,
            pge: false,
            fs_gs_base: [0; 2],
        }
    }

    /// An environment seed from random bits: never 0, and bit 1 says whether the environment
    /// is restricted to what kvm_pvm runs (see the reasons in [`Env::new`]).
    pub fn seed_for(bits: u64, restricted: bool) -> u64 {
        (bits & !2) | 1 | u64::from(restricted) << 1
    }

    /// The environment `seed` draws for `mode` (seed 0: [`Env::fixed`]).
    pub fn new(mode: FuzzMode, seed: u64) -> Env {
        let mut e = Env::fixed(mode);
        if seed == 0 {
            return e;
        }
        e.seed = seed;
        let restricted = seed & 2 != 0;
        let mut rng = fastrand::Rng::with_seed(splitmix(seed));
        e.base = BASES[rng.usize(..BASES.len())];
        e.iopl = rng.u8(..4);
        e.ac = rng.bool();
        e.am = rng.bool();
        e.pge = rng.bool();
        e.esp_high = if rng.bool() { rng.u16(..) } else { 0 };
        if restricted {
            // kvm_pvm delivers events in software and there clears EFLAGS.AC in protected
            // mode (hardware keeps it: SDM vol. 2, INT n, "Operation"), and it pushes frames
            // at ESP rather than SP on a 16-bit stack (and shuts the guest down when that is
            // outside RAM): the fuzzer found both, docs/architecture.md lists them.
            e.ac = false;
            e.esp_high = 0;
            // kvm_pvm runs CPL3 code natively with the host's IOPL (0), whatever the guest set.
            if mode == FuzzMode::User64 {
                e.iopl = 0;
            }
        }
        match mode {
            FuzzMode::Real => {
                for s in &mut e.real {
                    *s = [0, 0x1000, 0x2000, 0x1e00][rng.usize(..4)];
                }
            }
            FuzzMode::Prot32 => {
                e.cpl = if rng.bool() { 3 } else { 0 };
                for d in &mut e.data {
                    *d = match rng.u8(..8) {
                        0..=3 => DataSeg::Flat,
                        4 | 5 => DataSeg::Based,
                        6 => DataSeg::Limited,
                        _ => DataSeg::ExpandDown,
                    };
                }
                e.stack = match rng.u8(..4) {
                    0 | 1 => StackSeg::Flat,
                    2 => StackSeg::Based,
                    _ => StackSeg::Small16,
                };
                e.paging = [
                    Paging::Off,
                    Paging::Off,
                    Paging::Legacy4K,
                    Paging::Pse4M,
                    Paging::Pae2M,
                    Paging::Pae4K,
                ][rng.usize(..6)];
                if restricted {
                    // kvm_pvm shuts a 32-bit guest with paging on down at its first
                    // instruction.
                    e.paging = Paging::Off;
                }
                e.wp = rng.bool();
                e.nxe = rng.bool();
            }
            FuzzMode::Long64 | FuzzMode::User64 => {
                e.paging = [
                    Paging::Long2M,
                    Paging::Long1G,
                    Paging::Long4K,
                    Paging::Long4K,
                ][rng.usize(..4)];
                if restricted && e.paging == Paging::Long1G {
                    // kvm_pvm's shadow paging does not take 1 GiB guest pages (a #PF at the
                    // first fetch, then a triple fault).
                    e.paging = Paging::Long2M;
                }
                e.wp = rng.bool();
                e.nxe = rng.bool();
                for b in &mut e.fs_gs_base {
                    *b = if rng.bool() { 0 } else { e.base };
                }
            }
        }
        if e.paging.small_pages() {
            e.smep = rng.u8(..4) == 0;
            e.smap = rng.u8(..4) == 0;
            if rng.u8(..4) == 0 {
                let mut pages = e.data_pages();
                if restricted {
                    pages.retain(|&p| p != e.stack_page());
                }
                let page = pages[rng.usize(..pages.len())];
                let fault = [
                    Fault::NotPresent,
                    Fault::ReadOnly,
                    Fault::Supervisor,
                    Fault::Reserved,
                ][rng.usize(..4)];
                e.victim = Some((page, fault));
            }
        }
        e
    }

    fn seg_base(&self, d: DataSeg) -> u64 {
        if d == DataSeg::Based { self.base } else { 0 }
    }

    fn stack_base(&self) -> u64 {
        if self.stack == StackSeg::Based {
            self.base
        } else {
            0
        }
    }

    /// The 4 KiB pages the program's data and stack accesses land on (linear addresses).
    fn data_pages(&self) -> Vec<u64> {
        let mut bases = vec![0];
        bases.extend(self.data.iter().map(|&d| self.seg_base(d)));
        bases.extend(self.fs_gs_base);
        let mut pages = Vec::new();
        for b in bases {
            pages.push(b + (SANDBOX & !0xfff) - 0x1000);
            pages.push(b + (SANDBOX & !0xfff));
        }
        pages.push(self.stack_base() + STACK - 0x1000);
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    fn user_page(&self, mode: FuzzMode, page: u64) -> bool {
        let program = page + 0x1000 > PROGRAM && page < PROGRAM + PROGRAM_MAX as u64;
        if program {
            return mode != FuzzMode::Long64 || !self.smep;
        }
        if page == self.stack_page() {
            // Restricted to kvm_pvm, a ring-0 stack stays a supervisor page: its software
            // event delivery pushes frames without SMAP and page checks (docs/architecture.md).
            return self.cpl == 3 || !self.restricted();
        }
        // With SMEP or SMAP the supervisor's tables, handler and ring-0 stack are supervisor
        // pages (which those leave alone); the program's data pages are user pages. Without
        // them every page is a user page, as in the fixed environment: a CPL3 string
        // instruction whose two operands would both fault then faults on the one the CPU
        // happens to access first, which differs between vendors.
        self.data_pages().contains(&page) || !(self.smep || self.smap)
    }

    fn restricted(&self) -> bool {
        self.seed & 2 != 0
    }

    fn stack_page(&self) -> u64 {
        self.stack_base() + STACK - 0x1000
    }

    /// The leaf entry (flags) of the 4 KiB page at `page`.
    fn small_entry(&self, mode: FuzzMode, page: u64) -> u64 {
        let mut e = page | 0x3;
        if self.restricted() {
            // Accessed and dirty already: which operand of a CMPS the CPU touches first is the
            // vendor's choice (AMD reads ES:rDI first), and a fresh accessed bit would show it.
            e |= 0x60;
        }
        if self.user_page(mode, page) {
            e |= 0x4;
        }
        if let Some((p, f)) = self.victim
            && p == page
        {
            match f {
                Fault::NotPresent => e &= !1,
                Fault::ReadOnly => e &= !2,
                Fault::Supervisor => e &= !4,
                // NX is a reserved bit while EFER.NXE is clear; 32-bit entries have no
                // reserved bit, so there it is a missing page.
                Fault::Reserved if self.paging == Paging::Legacy4K => e &= !1,
                Fault::Reserved if self.nxe => e &= !1,
                Fault::Reserved => e |= 1 << 63,
            }
        }
        e
    }

    /// Writes what the environment adds to the fixed supervisor structures: segment
    /// descriptors and page tables.
    ///
    /// # Errors
    /// Memory smaller than the fuzzer's.
    pub fn prepare(&self, mem: &GuestMemory, mode: FuzzMode) -> Result<(), MemoryError> {
        // Descriptors at 0x40.. (the fixed ones end with the TSS at 0x30).
        for (slot, seg) in self.extra_descriptors() {
            mem.write_le(0x1000 + u64::from(slot), 8, descriptor_of(&seg))?;
        }
        let small = |i: u64| self.small_entry(mode, i << 12);
        match self.paging {
            Paging::Off | Paging::Long2M => {}
            Paging::Long1G => mem.write_le(PML4 + 0x1000, 8, 0x87)?,
            Paging::Long4K | Paging::Pae4K => {
                mem.write_le(PD64, 8, PT64 | 7)?;
                for i in 0..512 {
                    mem.write_le(PT64 + i * 8, 8, small(i))?;
                }
            }
            Paging::Pae2M => {}
            Paging::Legacy4K => {
                mem.write_le(PD32, 4, PT32 | 7)?;
                for i in 0..1024 {
                    mem.write_le(PT32 + i * 4, 4, small(i) & 0xffff_ffff)?;
                }
            }
            Paging::Pse4M => mem.write_le(PD32, 4, 0x87)?,
        }
        if matches!(self.paging, Paging::Pae2M | Paging::Pae4K) {
            // PAE's PDPTEs have no R/W or U/S bits (reserved there).
            mem.write_le(PDPT_PAE, 8, PD64 | 1)?;
            for i in 1..4 {
                mem.write_le(PDPT_PAE + i * 8, 8, 0)?;
            }
        }
        Ok(())
    }

    /// The descriptors this environment's segments use, by GDT offset.
    fn extra_descriptors(&self) -> Vec<(u16, Segment)> {
        let dpl = self.cpl;
        let data = |base: u64, limit: u32, typ: u8, db: bool, g: bool, sel: u16| Segment {
            selector: sel | u16::from(dpl),
            base,
            limit,
            typ,
            s: true,
            dpl,
            present: true,
            avl: false,
            l: false,
            db,
            g,
            unusable: false,
        };
        vec![
            (
                0x40,
                Segment {
                    typ: 0xb,
                    ..data(0, 0xffff_ffff, 0xb, true, true, 0x40)
                },
            ),
            (0x48, data(0, 0xffff_ffff, 0x3, true, true, 0x48)),
            (0x50, data(self.base, 0xffff_ffff, 0x3, true, true, 0x50)),
            (0x58, data(0, SANDBOX as u32 + 0x10, 0x3, true, false, 0x58)),
            (0x60, data(0, SANDBOX as u32 - 0x40, 0x7, true, false, 0x60)),
            (0x68, data(0, 0xffff, 0x3, false, false, 0x68)),
        ]
    }

    fn descriptor(&self, slot: u16) -> Segment {
        self.extra_descriptors()
            .into_iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, d)| d)
            .unwrap_or_default()
    }

    /// Applies the environment to the fixed initial state of `mode`.
    pub fn apply(&self, mode: FuzzMode, s: &mut CpuState) {
        if self.seed == 0 {
            return;
        }
        s.rflags |= u64::from(self.iopl) << 12;
        if self.ac {
            s.rflags |= rflags::AC;
        }
        if self.am {
            s.cr0 |= bits::CR0_AM;
        }
        if self.pge {
            s.cr4 |= bits::CR4_PGE;
        }
        match mode {
            FuzzMode::Real => {
                let [es, ss, ds, fs, gs] = self.real.map(|sel| Segment::real_mode(sel, false));
                (s.es, s.ss, s.ds, s.fs, s.gs) = (es, ss, ds, fs, gs);
                s.gpr[4] = u64::from(self.esp_high) << 16 | STACK;
            }
            FuzzMode::Prot32 => {
                if self.cpl == 3 {
                    s.cs = self.descriptor(0x40);
                }
                let seg = |d: DataSeg| {
                    self.descriptor(match d {
                        DataSeg::Flat => 0x48,
                        DataSeg::Based => 0x50,
                        DataSeg::Limited => 0x58,
                        DataSeg::ExpandDown => 0x60,
                    })
                };
                (s.es, s.ds, s.fs, s.gs) = (
                    seg(self.data[0]),
                    seg(self.data[1]),
                    seg(self.data[2]),
                    seg(self.data[3]),
                );
                s.ss = self.descriptor(match self.stack {
                    StackSeg::Flat => 0x48,
                    StackSeg::Based => 0x50,
                    StackSeg::Small16 => 0x68,
                });
                if self.stack == StackSeg::Small16 {
                    s.gpr[4] = u64::from(self.esp_high) << 16 | STACK;
                }
                if self.wp {
                    s.cr0 |= bits::CR0_WP;
                }
                match self.paging {
                    Paging::Legacy4K | Paging::Pse4M => {
                        s.cr0 |= bits::CR0_PG;
                        s.cr3 = PD32;
                        if self.paging == Paging::Pse4M {
                            s.cr4 |= bits::CR4_PSE;
                        }
                    }
                    Paging::Pae2M | Paging::Pae4K => {
                        s.cr0 |= bits::CR0_PG;
                        s.cr4 |= bits::CR4_PAE;
                        s.cr3 = PDPT_PAE;
                        if self.nxe {
                            s.efer |= bits::EFER_NXE;
                        }
                    }
                    _ => {}
                }
            }
            FuzzMode::Long64 | FuzzMode::User64 => {
                if !self.wp {
                    s.cr0 &= !bits::CR0_WP;
                }
                if self.nxe {
                    s.efer |= bits::EFER_NXE;
                }
                s.fs.base = self.fs_gs_base[0];
                s.gs.base = self.fs_gs_base[1];
            }
        }
        if self.smep {
            s.cr4 |= bits::CR4_SMEP;
        }
        if self.smap {
            s.cr4 |= bits::CR4_SMAP;
        }
    }

    /// One line saying what the environment is (for reports and reproducers).
    pub fn describe(&self) -> String {
        if self.seed == 0 {
            return "fixed".into();
        }
        let mut s = format!(
            "cpl{} iopl{}{}{} paging {:?}",
            self.cpl,
            self.iopl,
            if self.ac { " ac" } else { "" },
            if self.am { " am" } else { "" },
            self.paging
        );
        if self.data != [DataSeg::Flat; 4] || self.stack != StackSeg::Flat {
            s += &format!(" es/ds/fs/gs {:?} ss {:?}", self.data, self.stack);
        }
        if self.real != [0; 5] {
            s += &format!(" es/ss/ds/fs/gs {:04x?}", self.real);
        }
        if self.base != 0 {
            s += &format!(" base {:#x}", self.base);
        }
        if let Some((p, f)) = self.victim {
            s += &format!(" {f:?} page {p:#x}");
        }
        for (on, name) in [
            (self.wp, "wp"),
            (self.nxe, "nxe"),
            (self.smep, "smep"),
            (self.smap, "smap"),
            (self.pge, "pge"),
        ] {
            if on {
                s += " ";
                s += name;
            }
        }
        s
    }
}

/// The 8-byte GDT descriptor of a code or data segment.
fn descriptor_of(s: &Segment) -> u64 {
    let (limit, g) = if s.g {
        (s.limit >> 12, 1)
    } else {
        (s.limit, 0)
    };
    let access =
        u64::from(s.typ) | u64::from(s.s) << 4 | u64::from(s.dpl) << 5 | u64::from(s.present) << 7;
    let flags = u64::from(s.avl) | u64::from(s.l) << 1 | u64::from(s.db) << 2 | g << 3;
    u64::from(limit & 0xffff)
        | (s.base & 0xff_ffff) << 16
        | access << 40
        | u64::from((limit >> 16) & 0xf) << 48
        | flags << 52
        | (s.base >> 24 & 0xff) << 56
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_accel::RegionKind;

    #[test]
    fn seed_zero_is_the_fixed_environment_and_others_vary() {
        for m in FuzzMode::ALL {
            assert_eq!(Env::new(m, 0), Env::fixed(m));
        }
        let envs: Vec<Env> = (1..200).map(|s| Env::new(FuzzMode::Prot32, s)).collect();
        assert!(envs.iter().any(|e| e.cpl == 3) && envs.iter().any(|e| e.cpl == 0));
        assert!(envs.iter().any(|e| e.stack == StackSeg::Small16));
        assert!(envs.iter().any(|e| e.data.contains(&DataSeg::ExpandDown)));
        assert!(
            envs.iter()
                .any(|e| e.paging == Paging::Pae4K && e.victim.is_some())
        );
        let long: Vec<Env> = (1..200).map(|s| Env::new(FuzzMode::Long64, s)).collect();
        assert!(long.iter().any(|e| e.paging == Paging::Long1G));
        assert!(long.iter().any(|e| e.smap && e.smep));
    }

    #[test]
    fn victims_are_never_the_supervisors_pages() {
        for m in FuzzMode::ALL {
            for seed in 1..2000 {
                let e = Env::new(m, seed);
                if let Some((page, _)) = e.victim {
                    assert!(page >= SANDBOX - 0x1000, "{m:?} {seed}: {page:#x}");
                    assert_ne!(page, super::super::setup::KSTACK - 0x1000);
                    assert!(page + 0x1000 <= super::super::setup::MEM_SIZE);
                }
            }
        }
    }

    #[test]
    fn descriptors_round_trip_through_the_walker() {
        // What the GDT holds is what the hidden state says, so a POP DS reloads the same.
        let e = Env::new(FuzzMode::Prot32, 7);
        for (_, seg) in e.extra_descriptors() {
            let raw = descriptor_of(&seg);
            let g = raw >> 55 & 1 == 1;
            let limit = (raw & 0xffff | (raw >> 48 & 0xf) << 16) as u32;
            let limit = if g { limit << 12 | 0xfff } else { limit };
            let base = (raw >> 16 & 0xff_ffff) | (raw >> 56) << 24;
            assert_eq!((base, limit, g), (seg.base, seg.limit, seg.g), "{raw:#x}");
            assert_eq!(raw >> 40 & 0xf, u64::from(seg.typ));
            assert_eq!(raw >> 45 & 3, u64::from(seg.dpl));
            assert_eq!(raw >> 54 & 1 == 1, seg.db);
            assert_eq!(raw >> 47 & 1, 1);
        }
    }

    #[test]
    fn page_tables_map_the_program_and_plant_the_fault() {
        let mut mem = GuestMemory::new();
        mem.add(0, super::super::setup::MEM_SIZE, RegionKind::Ram)
            .unwrap();
        let seed = (1..5000)
            .find(|&s| {
                let e = Env::new(FuzzMode::Prot32, s);
                e.paging == Paging::Pae4K && matches!(e.victim, Some((_, Fault::NotPresent)))
            })
            .unwrap();
        let e = Env::new(FuzzMode::Prot32, seed);
        super::super::setup::prepare_env(&mem, FuzzMode::Prot32, &e).unwrap();
        let s = super::super::setup::initial_state_env(FuzzMode::Prot32, [0; 16], 0, &e);
        assert_eq!(
            janus_accel::walk::translate(&s, &mem, PROGRAM),
            Some(PROGRAM)
        );
        let (page, _) = e.victim.unwrap();
        assert_eq!(janus_accel::walk::translate(&s, &mem, page + 8), None);
    }
}
