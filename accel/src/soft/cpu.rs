//! The software vCPU's working state: the architectural registers, lazy flags, soft TLB,
//! translation cache and counters, with register and segment accessors shared by every module.

use crate::exit::ExitCounters;
use crate::memory::GuestMemory;
use crate::state::{CpuState, Segment, bits, rflags};

use super::cache::Cache;
use super::flags::{ARITH, Lazy};
use super::mmu::Tlb;

/// Segment register numbers in encoding order.
pub mod seg {
    /// ES.
    pub const ES: u8 = 0;
    /// CS.
    pub const CS: u8 = 1;
    /// SS.
    pub const SS: u8 = 2;
    /// DS.
    pub const DS: u8 = 3;
    /// FS.
    pub const FS: u8 = 4;
    /// GS.
    pub const GS: u8 = 5;
}

/// A guest-visible event that interrupts an instruction, or a reason to leave the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An exception with its vector and error code.
    Exc {
        /// Vector.
        vector: u8,
        /// Error code, for vectors that push one.
        code: Option<u32>,
    },
    /// HLT executed (RIP already past it).
    Halt,
    /// Something the backend cannot do.
    Unsupported(&'static str),
}

/// Result of an operation that may fault.
pub type R<T> = Result<T, Fault>;

/// Exception vectors.
pub mod vec {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint.
    pub const BP: u8 = 3;
    /// Overflow.
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available (x87/SSE with CR0.EM or CR0.TS).
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating-point error.
    pub const MF: u8 = 16;
    /// SIMD floating-point exception.
    pub const XM: u8 = 19;
}

/// #UD.
pub const UD: Fault = Fault::Exc {
    vector: vec::UD,
    code: None,
};

/// #GP with an error code.
pub fn gp(code: u32) -> Fault {
    Fault::Exc {
        vector: vec::GP,
        code: Some(code),
    }
}

/// #SS with an error code.
pub fn ss_fault(code: u32) -> Fault {
    Fault::Exc {
        vector: vec::SS,
        code: Some(code),
    }
}

/// #NP with an error code.
pub fn np(code: u32) -> Fault {
    Fault::Exc {
        vector: vec::NP,
        code: Some(code),
    }
}

/// #TS with an error code.
pub fn ts(code: u32) -> Fault {
    Fault::Exc {
        vector: vec::TS,
        code: Some(code),
    }
}

/// Where the guest TSC comes from when the machine has a clock: the same reading for every
/// vCPU.
#[derive(Clone)]
pub struct TscClock {
    /// Reads the clock's TSC.
    pub read: std::sync::Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Its frequency (CPUID leaves 0x15 and 0x16 report it).
    pub hz: u64,
}

impl std::fmt::Debug for TscClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TscClock")
    }
}

/// The software vCPU's state.
#[derive(Debug)]
pub struct Core {
    /// Architectural state; the arithmetic flags in `s.rflags` are stale, `lazy` holds them.
    pub s: CpuState,
    /// Lazy arithmetic flags.
    pub lazy: Lazy,
    /// Guest memory.
    pub mem: GuestMemory,
    /// vCPU index, passed to the I/O handler.
    pub index: usize,
    /// The soft TLB.
    pub tlb: Tlb,
    /// Translated blocks.
    pub cache: Cache,
    /// Exit counters.
    pub counters: ExitCounters,
    /// Instructions retired.
    pub icount: u64,
    /// Translated code was overwritten during the current block: leave it before the next
    /// instruction.
    pub smc: bool,
    /// Instruction index inside the running block (for exact counting on a fault).
    pub cur: u16,
    /// What the guest TSC adds to its base (the machine clock's TSC, or the instruction count).
    pub tsc_offset: u64,
    /// The machine's clock, when the TSC follows it: then every vCPU reads the same TSC, and it
    /// runs on while the vCPU halts, as on hardware. Without one the TSC counts retired
    /// instructions (bare runs, the fuzzer, and deterministic time, which sets the offset).
    pub tsc_clock: Option<TscClock>,
    /// The translator's scratch vector for a block's ops (`translate::translate`).
    pub op_scratch: Vec<super::ir::Op>,
    /// The machine's CPUID table (`--cpu`), shared by every vCPU.
    pub cpuid: std::sync::Arc<crate::cpuid::Cpuid>,
    /// Whether the machine gives this vCPU a local APIC (asked once, at the first CPUID).
    pub has_lapic: Option<bool>,
    /// Data-breakpoint hits (DR6.B0-B3) of the instruction running, reported when it completes.
    pub dbg_hits: u64,
    /// The memory access under way is an implicit supervisor access (descriptor tables, TSS,
    /// IDT): SMAP applies to it whatever EFLAGS.AC says.
    pub implicit: bool,
    /// Single-stepping: a REP string instruction runs one iteration per step, as with TF.
    pub single_step: bool,
    /// Test-only: report CF inverted after ADD (see `SoftAccel::plant_flag_bug`).
    pub planted_bug: bool,
    /// MSRs kept only by this backend (IA32_MISC_ENABLE, MTRRs).
    pub msrs: super::translate::SoftMsrs,
    /// A valid instruction this CPU does not implement stops the vCPU as unsupported instead of
    /// raising #UD (the KVM fallback: the guest's CPUID is KVM's, not this CPU's).
    pub strict_isa: bool,
    /// Soft-TLB misses (page walks, or segment-only translations with paging off).
    pub tlb_misses: u64,
    /// Blocks translated to IR.
    pub translated: u64,
    /// RDRAND/RDSEED's generator under deterministic time (splitmix64 state): then their values
    /// are a function of the vCPU and how many it drew, so `--icount` runs repeat.
    pub rdrand_state: u64,
}

impl Core {
    /// A core over `mem`.
    pub fn new(mem: GuestMemory, index: usize) -> Self {
        Core {
            rdrand_state: 0x6a09_e667_f3bc_c908 ^ index as u64,
            s: CpuState::reset(index == 0),
            lazy: Lazy::default(),
            mem,
            index,
            tlb: Tlb::new(),
            cache: Cache::new(),
            counters: ExitCounters::default(),
            icount: 0,
            smc: false,
            cur: 0,
            tsc_offset: 0,
            tsc_clock: None,
            op_scratch: Vec::with_capacity(256),
            has_lapic: None,
            cpuid: std::sync::Arc::new(crate::cpuid::Cpuid::new(
                &crate::cpuid::CpuSpec::default(),
                1,
                &super::translate::OFFER,
            )),
            dbg_hits: 0,
            implicit: false,
            single_step: false,
            planted_bug: false,
            msrs: Default::default(),
            strict_isa: false,
            tlb_misses: 0,
            translated: 0,
        }
    }

    /// RFLAGS with the arithmetic flags folded in.
    #[inline]
    pub fn rflags(&self) -> u64 {
        let f = (self.s.rflags & !ARITH) | self.lazy.all() | rflags::FIXED;
        if self.planted_bug && self.lazy.op == crate::soft::flags::CcOp::Add {
            // The deliberately wrong flag of `SoftAccel::plant_flag_bug`.
            return f ^ rflags::CF;
        }
        f
    }

    /// Replaces RFLAGS (all bits; callers mask what the instruction may change).
    #[inline]
    pub fn set_rflags(&mut self, v: u64) {
        self.s.rflags = (v & !ARITH & 0x003f_7fd5) | rflags::FIXED;
        self.lazy.set_eflags(v);
    }

    /// Current privilege level.
    #[inline]
    pub fn cpl(&self) -> u8 {
        if self.s.cr0 & bits::CR0_PE == 0 {
            0
        } else if self.s.rflags & rflags::VM != 0 {
            3
        } else {
            self.s.cs.selector as u8 & 3
        }
    }

    /// 64-bit code is running.
    #[inline]
    pub fn long64(&self) -> bool {
        self.s.efer & bits::EFER_LMA != 0 && self.s.cs.l
    }

    /// Protected mode is on.
    #[inline]
    pub fn pe(&self) -> bool {
        self.s.cr0 & bits::CR0_PE != 0
    }

    /// Reads register `r` at size `sz`; for `sz == 1`, `r` 16..=19 names AH, CH, DH, BH.
    #[inline]
    pub fn get(&self, r: u8, sz: u8) -> u64 {
        if r >= 16 {
            return (self.s.gpr[usize::from(r - 16)] >> 8) & 0xff;
        }
        self.s.gpr[usize::from(r & 15)] & super::flags::mask(sz)
    }

    /// Writes register `r` at size `sz` (32-bit writes zero the upper half).
    #[inline]
    pub fn set(&mut self, r: u8, sz: u8, v: u64) {
        if r >= 16 {
            let g = &mut self.s.gpr[usize::from(r - 16)];
            *g = (*g & !0xff00) | ((v & 0xff) << 8);
            return;
        }
        let g = &mut self.s.gpr[usize::from(r & 15)];
        let m = super::flags::mask(sz);
        // 8- and 16-bit writes merge; 32-bit writes zero the upper half.
        let keep = if sz >= 4 { 0 } else { !m };
        *g = (*g & keep) | (v & m);
    }

    /// Segment register `i` (encoding order).
    #[inline]
    pub fn seg(&self, i: u8) -> &Segment {
        match i {
            seg::ES => &self.s.es,
            seg::CS => &self.s.cs,
            seg::SS => &self.s.ss,
            seg::DS => &self.s.ds,
            seg::FS => &self.s.fs,
            _ => &self.s.gs,
        }
    }

    /// Mutable segment register `i`.
    #[inline]
    pub fn seg_mut(&mut self, i: u8) -> &mut Segment {
        match i {
            seg::ES => &mut self.s.es,
            seg::CS => &mut self.s.cs,
            seg::SS => &mut self.s.ss,
            seg::DS => &mut self.s.ds,
            seg::FS => &mut self.s.fs,
            _ => &mut self.s.gs,
        }
    }

    /// The stack pointer width in bytes: 8 in 64-bit mode, else by SS.B.
    #[inline]
    pub fn stack_size(&self) -> u8 {
        if self.long64() {
            8
        } else if self.s.ss.db {
            4
        } else {
            2
        }
    }

    /// Mask of the instruction pointer for the current code size.
    #[inline]
    pub fn ip_mask(&self) -> u64 {
        match self.s.code_bitness() {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        }
    }

    /// The time-stamp counter: the machine clock's TSC plus the offset, or without a clock the
    /// offset plus the retired instructions, so that runs repeat.
    pub fn tsc(&self) -> u64 {
        self.tsc_offset.wrapping_add(self.tsc_base())
    }

    /// Sets the time-stamp counter to `v` (WRMSR, restoring a state).
    pub fn set_tsc(&mut self, v: u64) {
        self.tsc_offset = v.wrapping_sub(self.tsc_base());
    }

    /// What this vCPU's TSC adds to the machine clock's (0 when the TSC counts instructions,
    /// or under deterministic time, where it is the clock's).
    pub fn clock_tsc_delta(&self) -> u64 {
        if self.tsc_clock.is_some() {
            self.tsc_offset
        } else {
            0
        }
    }

    fn tsc_base(&self) -> u64 {
        match &self.tsc_clock {
            Some(clock) => (clock.read)(),
            None => self.icount,
        }
    }
}

/// A core together with the I/O handler of the current `run`: what helpers and memory accesses
/// work on.
#[allow(missing_debug_implementations)]
pub struct Ctx<'a> {
    /// The vCPU state.
    pub c: &'a mut Core,
    /// Ports and MMIO.
    pub io: &'a dyn crate::io::IoHandler,
}
