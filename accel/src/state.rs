//! The backend-neutral architectural state of one x86-64 vCPU.
//!
//! Every backend converts to and from [`CpuState`]; the lockstep differ compares two of them.
//! Segment registers keep their hidden parts (base, limit, attributes) explicitly, as the CPU's
//! descriptor caches do, so that real mode, protected mode and long mode all round-trip.

/// Index of a general-purpose register in [`CpuState::gpr`], in the x86 encoding order.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Reg {
    Rax = 0,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

/// Register names in encoding order, for reports.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// A segment register with its hidden descriptor cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The visible selector.
    pub selector: u16,
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes (already scaled by the granularity bit).
    pub limit: u32,
    /// Descriptor type field (4 bits).
    pub typ: u8,
    /// S bit: 1 for code/data, 0 for system descriptors.
    pub s: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present bit.
    pub present: bool,
    /// Available-for-software bit.
    pub avl: bool,
    /// L bit: 64-bit code segment.
    pub l: bool,
    /// D/B bit: 32-bit default operand size / big stack.
    pub db: bool,
    /// Granularity bit.
    pub g: bool,
    /// The segment register holds no usable descriptor (a null selector in protected mode).
    pub unusable: bool,
}

impl Segment {
    /// A real-mode segment as the CPU loads it: base = selector * 16, 64 KiB limit, read/write
    /// data (or execute/read code with accessed bit for CS).
    pub fn real_mode(selector: u16, code: bool) -> Self {
        Segment {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xffff,
            typ: if code { 0xb } else { 0x3 },
            s: true,
            dpl: 0,
            present: true,
            ..Default::default()
        }
    }

    /// The attribute bits packed in the layout of a descriptor's bytes 5-6 (type, S, DPL, P,
    /// AVL, L, D/B, G): the form `LAR` reports and VMX uses, handy for printing and comparing.
    pub fn attributes(&self) -> u16 {
        u16::from(self.typ & 0xf)
            | u16::from(self.s) << 4
            | u16::from(self.dpl & 3) << 5
            | u16::from(self.present) << 7
            | u16::from(self.avl) << 12
            | u16::from(self.l) << 13
            | u16::from(self.db) << 14
            | u16::from(self.g) << 15
    }

    /// Unpacks attributes in the [`Segment::attributes`] layout.
    pub fn set_attributes(&mut self, attr: u16) {
        self.typ = (attr & 0xf) as u8;
        self.s = attr & 0x10 != 0;
        self.dpl = ((attr >> 5) & 3) as u8;
        self.present = attr & 0x80 != 0;
        self.avl = attr & 0x1000 != 0;
        self.l = attr & 0x2000 != 0;
        self.db = attr & 0x4000 != 0;
        self.g = attr & 0x8000 != 0;
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// An exception waiting to be delivered (or being re-delivered) on the next entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingException {
    /// Vector number.
    pub vector: u8,
    /// Error code, for the vectors that push one.
    pub error_code: Option<u32>,
}

/// Event state that is not a register: interrupt shadow, NMI state, pending events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Interrupts are blocked for one instruction after STI.
    pub sti_shadow: bool,
    /// Interrupts and debug traps are blocked for one instruction after MOV SS / POP SS.
    pub mov_ss_shadow: bool,
    /// An NMI is pending.
    pub nmi_pending: bool,
    /// NMIs are masked (an NMI handler is running).
    pub nmi_masked: bool,
    /// An exception to deliver before the next instruction.
    pub exception: Option<PendingException>,
    /// An external interrupt vector injected and not yet delivered.
    pub interrupt: Option<u8>,
}

/// RFLAGS bits used throughout janus.
pub mod rflags {
    /// Carry flag.
    pub const CF: u64 = 1 << 0;
    /// Reserved bit 1, always set.
    pub const FIXED: u64 = 1 << 1;
    /// Parity flag.
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry flag.
    pub const AF: u64 = 1 << 4;
    /// Zero flag.
    pub const ZF: u64 = 1 << 6;
    /// Sign flag.
    pub const SF: u64 = 1 << 7;
    /// Trap flag.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable flag.
    pub const IF: u64 = 1 << 9;
    /// Direction flag.
    pub const DF: u64 = 1 << 10;
    /// Overflow flag.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (2 bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume flag.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID available.
    pub const ID: u64 = 1 << 21;
}

/// Control-register and EFER bits used throughout janus.
pub mod bits {
    /// CR0.PE: protected mode.
    pub const CR0_PE: u64 = 1 << 0;
    /// CR0.MP.
    pub const CR0_MP: u64 = 1 << 1;
    /// CR0.EM.
    pub const CR0_EM: u64 = 1 << 2;
    /// CR0.TS.
    pub const CR0_TS: u64 = 1 << 3;
    /// CR0.ET.
    pub const CR0_ET: u64 = 1 << 4;
    /// CR0.NE.
    pub const CR0_NE: u64 = 1 << 5;
    /// CR0.WP: supervisor writes honour read-only pages.
    pub const CR0_WP: u64 = 1 << 16;
    /// CR0.AM.
    pub const CR0_AM: u64 = 1 << 18;
    /// CR0.NW.
    pub const CR0_NW: u64 = 1 << 29;
    /// CR0.CD.
    pub const CR0_CD: u64 = 1 << 30;
    /// CR0.PG: paging.
    pub const CR0_PG: u64 = 1 << 31;
    /// CR4.PSE: 4 MiB pages in 32-bit paging.
    pub const CR4_PSE: u64 = 1 << 4;
    /// CR4.PAE.
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4.PGE: global pages.
    pub const CR4_PGE: u64 = 1 << 7;
    /// CR4.LA57: 5-level paging (57-bit linear addresses) in long mode.
    pub const CR4_LA57: u64 = 1 << 12;
    /// CR4.OSFXSR: FXSAVE/FXRSTOR and SSE enabled by the OS.
    pub const CR4_OSFXSR: u64 = 1 << 9;
    /// CR4.OSXMMEXCPT: unmasked SIMD floating-point exceptions raise #XM (else #UD).
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    /// CR4.OSXSAVE: XSAVE family and XGETBV/XSETBV enabled.
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    /// CR4.SMEP: no supervisor instruction fetches from user pages.
    pub const CR4_SMEP: u64 = 1 << 20;
    /// CR4.SMAP: no supervisor data accesses to user pages (unless explicit with EFLAGS.AC).
    pub const CR4_SMAP: u64 = 1 << 21;
    /// CR4.PKE: protection keys for user pages (PKRU).
    pub const CR4_PKE: u64 = 1 << 22;
    /// EFER.SCE: SYSCALL enable.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER.LME: long mode enable.
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER.LMA: long mode active.
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER.NXE: no-execute enable.
    pub const EFER_NXE: u64 = 1 << 11;
}

/// The debug registers: breakpoint addresses DR0-DR3, status DR6 and control DR7 (DR4 and DR5
/// are aliases of DR6 and DR7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    /// DR0-DR3: breakpoint linear addresses.
    pub dr: [u64; 4],
    /// DR6: which conditions raised the last #DB (B0-B3, BD, BS, BT; the rest read as set).
    pub dr6: u64,
    /// DR7: breakpoint enables (L0-G3), GD, and each breakpoint's type and length.
    pub dr7: u64,
}

impl DebugRegs {
    /// DR6 at reset (every reserved bit set, RTM 1 = no transaction).
    pub const DR6_RESET: u64 = 0xffff_0ff0;
    /// DR7 at reset (bit 10 reads as 1).
    pub const DR7_RESET: u64 = 0x400;
}

impl Default for DebugRegs {
    fn default() -> Self {
        DebugRegs {
            dr: [0; 4],
            dr6: Self::DR6_RESET,
            dr7: Self::DR7_RESET,
        }
    }
}

/// The whole architectural state of a vCPU that janus saves, restores and compares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// General-purpose registers, indexed by [`Reg`].
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// Code segment.
    pub cs: Segment,
    /// Data segment.
    pub ds: Segment,
    /// Extra segment.
    pub es: Segment,
    /// FS (its base is the FS_BASE MSR).
    pub fs: Segment,
    /// GS (its base is the GS_BASE MSR).
    pub gs: Segment,
    /// Stack segment.
    pub ss: Segment,
    /// Local descriptor table register.
    pub ldt: Segment,
    /// Task register.
    pub tr: Segment,
    /// Global descriptor table register.
    pub gdt: DescriptorTable,
    /// Interrupt descriptor table register.
    pub idt: DescriptorTable,
    /// CR0.
    pub cr0: u64,
    /// CR2: the last page-fault address.
    pub cr2: u64,
    /// CR3: page-table root.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8: task priority.
    pub cr8: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    /// IA32_STAR.
    pub star: u64,
    /// IA32_LSTAR.
    pub lstar: u64,
    /// IA32_CSTAR.
    pub cstar: u64,
    /// IA32_FMASK (SFMASK).
    pub sfmask: u64,
    /// IA32_KERNEL_GS_BASE (swapped in by SWAPGS).
    pub kernel_gs_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_TSC_AUX (RDTSCP).
    pub tsc_aux: u64,
    /// IA32_PAT: the page attribute table (eight memory types, one per byte).
    pub pat: u64,
    /// Time-stamp counter.
    pub tsc: u64,
    /// Debug registers.
    pub debug: DebugRegs,
    /// PKRU: access- and write-disable bits of the 16 protection keys (CR4.PKE).
    pub pkru: u32,
    /// Interrupt shadow and pending events.
    pub events: Events,
    /// x87, SSE and XCR0 state.
    pub fpu: FpuState,
}

/// The x87 FPU, SSE and XSAVE-control state, in the form FXSAVE stores it: ST registers in
/// stack order (ST0 first, not by physical register) and the abridged tag word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpuState {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word (TOP in bits 11-13).
    pub fsw: u16,
    /// Abridged tag word: bit `i` set when physical register `i` is not empty.
    pub ftw: u8,
    /// Opcode of the last non-control x87 instruction (11 bits).
    pub fop: u16,
    /// Linear address of the last non-control x87 instruction.
    pub fip: u64,
    /// Linear address of the last x87 memory operand.
    pub fdp: u64,
    /// ST0..ST7: 80-bit extended-precision values in the low bits.
    pub st: [u128; 8],
    /// XMM0..XMM15 (the low halves of YMM0..YMM15).
    pub xmm: [u128; 16],
    /// Bits 255:128 of YMM0..YMM15, as XSAVE's YMM_Hi128 component holds them. Legacy SSE
    /// instructions leave them alone; VEX.128 forms zero their destination's.
    pub ymm_hi: [u128; 16],
    /// SSE control and status register.
    pub mxcsr: u32,
    /// Extended control register 0 (XSETBV), the enabled XSAVE components.
    pub xcr0: u64,
}

impl FpuState {
    /// The state at RESET (SDM Vol. 3 Table 9-1): FCW 0x40, FTW 0x5555 (every register holds
    /// +0.0, so the abridged tag is all ones), MXCSR 0x1F80, XCR0 = 1 (x87 only).
    pub const RESET: FpuState = FpuState {
        fcw: 0x40,
        fsw: 0,
        ftw: 0xff,
        fop: 0,
        fip: 0,
        fdp: 0,
        st: [0; 8],
        xmm: [0; 16],
        ymm_hi: [0; 16],
        mxcsr: 0x1f80,
        xcr0: 1,
    };

    /// TOP: the physical register that is ST0.
    pub fn top(&self) -> u8 {
        ((self.fsw >> 11) & 7) as u8
    }
}

impl Default for FpuState {
    fn default() -> Self {
        Self::RESET
    }
}

/// IA32_PAT after RESET: WB, WT, UC-, UC, twice.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// Default IA32_APIC_BASE: the xAPIC at 0xFEE00000, globally enabled.
pub const APIC_BASE_DEFAULT: u64 = 0xfee0_0000 | (1 << 11);

impl CpuState {
    /// The state a CPU has after RESET: real mode at F000:FFF0 with CS.base = 0xFFFF0000, so the
    /// first fetch comes from the top of the 4 GiB space.
    pub fn reset(bsp: bool) -> Self {
        let data = Segment::real_mode(0, false);
        let mut cs = Segment::real_mode(0xf000, true);
        cs.base = 0xffff_0000;
        CpuState {
            rip: 0xfff0,
            rflags: rflags::FIXED,
            cs,
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            ldt: Segment {
                limit: 0xffff,
                typ: 2,
                present: true,
                ..Default::default()
            },
            tr: Segment {
                limit: 0xffff,
                typ: 3,
                present: true,
                ..Default::default()
            },
            gdt: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idt: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            cr0: bits::CR0_ET | bits::CR0_NW | bits::CR0_CD,
            apic_base: APIC_BASE_DEFAULT | if bsp { 1 << 8 } else { 0 },
            pat: PAT_DEFAULT,
            // EDX after reset holds the processor signature; janus's loaders set what they need.
            ..Default::default()
        }
    }

    /// The state a boot sector is entered with: 0000:7C00 in real mode, interrupts off,
    /// DL = 0x80 (the boot drive), as in the guest test protocol.
    pub fn boot_sector() -> Self {
        let mut s = Self::reset(true);
        s.cs = Segment::real_mode(0, true);
        s.rip = 0x7c00;
        s.gpr[Reg::Rdx as usize] = 0x80;
        s.cr0 = bits::CR0_ET;
        s
    }

    /// The state an application processor starts in after a start-up IPI with `vector`: real
    /// mode at `vector << 8`:0000.
    pub fn startup_ipi(vector: u8) -> Self {
        let mut s = Self::reset(false);
        s.cs = Segment::real_mode(u16::from(vector) << 8, true);
        s.rip = 0;
        s.cr0 = bits::CR0_ET;
        s
    }

    /// Reads a general-purpose register.
    pub fn reg(&self, r: Reg) -> u64 {
        self.gpr[r as usize]
    }

    /// Writes a general-purpose register.
    pub fn set_reg(&mut self, r: Reg, v: u64) {
        self.gpr[r as usize] = v;
    }

    /// The CPU is in 64-bit or compatibility mode.
    pub fn long_mode_active(&self) -> bool {
        self.efer & bits::EFER_LMA != 0
    }

    /// A short name of the current execution mode, for reports.
    pub fn mode_name(&self) -> &'static str {
        if self.cr0 & bits::CR0_PE == 0 {
            "real"
        } else if self.rflags & rflags::VM != 0 {
            "vm86"
        } else if self.long_mode_active() {
            if self.cs.l { "long64" } else { "compat32" }
        } else if self.cs.db {
            "prot32"
        } else {
            "prot16"
        }
    }

    /// The linear address of the next instruction (CS.base + RIP, truncated outside 64-bit mode).
    pub fn linear_rip(&self) -> u64 {
        if self.long_mode_active() && self.cs.l {
            self.rip
        } else {
            (self.cs.base.wrapping_add(self.rip)) & 0xffff_ffff
        }
    }

    /// Whether an instruction may be VEX, EVEX or XOP encoded: not in real-address or
    /// virtual-8086 mode, where C4 and C5 are LES and LDS, 62 is BOUND and 8F is POP (each
    /// raising #UD with the register operand that the other reading would have taken).
    pub fn vex_exists(&self) -> bool {
        self.cr0 & bits::CR0_PE != 0 && self.rflags & rflags::VM == 0
    }

    /// Whether `insn` is one the CPU in this mode could have decoded: a VEX, EVEX or XOP
    /// encoding is not, in real and virtual-8086 mode (see [`CpuState::vex_exists`]).
    pub fn decodes(&self, insn: &iced_x86::Instruction) -> bool {
        use iced_x86::EncodingKind::{EVEX, MVEX, VEX, XOP};
        self.vex_exists() || !matches!(insn.encoding(), VEX | EVEX | XOP | MVEX)
    }

    /// Code bitness for a decoder: 16, 32 or 64.
    pub fn code_bitness(&self) -> u32 {
        if self.cr0 & bits::CR0_PE == 0 || self.rflags & rflags::VM != 0 {
            16
        } else if self.long_mode_active() && self.cs.l {
            64
        } else if self.cs.db {
            32
        } else {
            16
        }
    }
}

impl std::fmt::Display for CpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, name) in GPR_NAMES.iter().enumerate() {
            write!(f, "{name:>3}={:016x}", self.gpr[i])?;
            f.write_str(if i % 4 == 3 { "\n" } else { " " })?;
        }
        writeln!(
            f,
            "rip={:016x} rflags={:08x} mode={}",
            self.rip,
            self.rflags,
            self.mode_name()
        )?;
        for (name, s) in [
            ("cs", &self.cs),
            ("ss", &self.ss),
            ("ds", &self.ds),
            ("es", &self.es),
            ("fs", &self.fs),
            ("gs", &self.gs),
            ("ldt", &self.ldt),
            ("tr", &self.tr),
        ] {
            writeln!(
                f,
                "{name:>3}={:04x} base={:016x} limit={:08x} attr={:04x}{}",
                s.selector,
                s.base,
                s.limit,
                s.attributes(),
                if s.unusable { " unusable" } else { "" }
            )?;
        }
        writeln!(
            f,
            "gdt={:016x}/{:04x} idt={:016x}/{:04x}",
            self.gdt.base, self.gdt.limit, self.idt.base, self.idt.limit
        )?;
        write!(
            f,
            "cr0={:08x} cr2={:016x} cr3={:016x} cr4={:08x} efer={:x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}

/// Whether RFLAGS.IF is set in `rflags`.
pub fn rflags_if(rflags: u64) -> bool {
    rflags & rflags::IF != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut s = Segment::default();
        for attr in [0x0000u16, 0x009b, 0xa09b, 0xc093, 0x00f3, 0x108b] {
            s.set_attributes(attr);
            assert_eq!(s.attributes(), attr);
        }
    }

    #[test]
    fn reset_state_fetches_from_reset_vector() {
        let s = CpuState::reset(true);
        assert_eq!(s.linear_rip(), 0xffff_fff0);
        assert_eq!(s.code_bitness(), 16);
        assert_eq!(s.mode_name(), "real");
    }

    #[test]
    fn boot_sector_state_matches_protocol() {
        let s = CpuState::boot_sector();
        assert_eq!(s.linear_rip(), 0x7c00);
        assert_eq!(s.reg(Reg::Rdx), 0x80);
        assert_eq!(s.rflags & rflags::IF, 0);
    }
}
