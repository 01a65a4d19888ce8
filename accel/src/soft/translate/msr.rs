//! Model-specific registers and what hangs off them: CPUID (the machine's table, crate::cpuid), RDMSR/WRMSR, RDTSC/RDTSCP, SWAPGS, SYSCALL/SYSRET and
//! SYSENTER/SYSEXIT.

use iced_x86::{Instruction, Mnemonic};

use super::system::need_cpl0;
use crate::soft::cpu::{Ctx, R, UD, gp};
use crate::soft::mmu::canonical_in;
use crate::state::{Segment, bits, rflags};

/// What the software CPU runs, for the CPU models (crate::cpuid).
pub const OFFER: crate::cpuid::Offer = crate::cpuid::Offer {
    // (MCE and MCA: CR4.MCE and the machine-check banks, where nothing is ever logged; MTRR
    // and PAT: the MSRs, kept and checked; memory types change nothing the software CPU
    // computes.)
    runs: &[
        "fpu",
        "pse",
        "tsc",
        "msr",
        "pae",
        "mce",
        "cx8",
        "apic",
        "sep",
        "mtrr",
        "pge",
        "mca",
        "cmov",
        "pat",
        "pse36",
        "clflush",
        "mmx",
        "fxsr",
        "sse",
        "sse2",
        "sse3",
        "pclmulqdq",
        "ssse3",
        "cx16",
        "sse4.1",
        "sse4.2",
        "movbe",
        "aes",
        "rdrand",
        "x2apic",
        "popcnt",
        "tsc-deadline",
        "xsave",
        "avx",
        "f16c",
        "fma",
        "avx2",
        "hypervisor",
        "tsc-adjust",
        "bmi1",
        "smep",
        "bmi2",
        "invpcid",
        "rdseed",
        "adx",
        "smap",
        "clflushopt",
        "clwb",
        "sha-ni",
        "pku",
        "la57",
        "rdpid",
        "lahf-lm",
        "abm",
        "syscall",
        "nx",
        "pdpe1gb",
        "rdtscp",
        "lm",
        "invtsc",
    ],
    // The `host` model offers all of it but the hypervisor bit (it presents itself as bare
    // hardware) and MCE, MCA, MTRR and PAT (Linux's behaviour on it stays as it was before CPU
    // models). IA32_TSC_ADJUST with the invariant TSC tells a kernel that the TSC is one clock it
    // can trust: Linux then keeps no clocksource watchdog on it, which on a loaded host (vCPU
    // threads starved, ticks late) would otherwise mark it unstable against the jiffies.
    // LA57: Linux takes 5-level paging wherever it is offered (one more level per walk), as
    // QEMU's default models leave it out; `--cpu host,+la57` offers it.
    not_in_host: &["hypervisor", "mce", "mca", "mtrr", "pat", "la57"],
    // The SSE and AVX families run on the host's vector unit (translate::sse).
    needs_host: &[
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "pclmulqdq",
        "aes",
        "sha-ni",
        "avx",
        "f16c",
        "fma",
        "avx2",
    ],
    xcr0: super::fpstate::XCR0_SUPPORTED as u32,
    xsave_size: super::fpstate::XSAVE_SIZE,
    xsaveopt: true,
};

/// CPUID: the machine's table (crate::cpuid, built once from `--cpu`) and the fields that
/// are this vCPU's or follow its state.
pub(super) fn cpuid(c: &mut Ctx, _: &Instruction) -> R<()> {
    let leaf = c.c.get(0, 4) as u32;
    let sub = c.c.get(1, 4) as u32;
    let mut r = c.c.cpuid.get(leaf, sub);
    match leaf {
        1 => {
            r[1] = (r[1] & 0x00ff_ffff) | (c.c.index as u32 & 0xff) << 24;
            if c.c.s.cr4 & bits::CR4_OSXSAVE != 0 {
                r[2] |= 1 << 27;
            }
            // TSC-deadline mode and x2APIC only where the machine has a local APIC (it takes
            // IA32_TSC_DEADLINE); CPUID.1:EDX.APIC follows IA32_APIC_BASE.EN.
            let lapic =
                *c.c.has_lapic
                    .get_or_insert_with(|| c.io.msr_read(c.c.index, index::TSC_DEADLINE).is_some());
            if !lapic {
                r[2] &= !(1 << 24 | 1 << 21);
            }
            if c.c.s.apic_base & APIC_BASE_EN == 0 {
                r[3] &= !(1 << 9);
            }
        }
        7 if sub == 0 && c.c.s.cr4 & bits::CR4_PKE != 0 => r[2] |= 1 << 4,
        // The size of the components XCR0 enables.
        0xd if sub == 0 => r[1] = super::fpstate::xsave_size(c.c.s.fpu.xcr0),
        0xb if r[2] & 0xff00 != 0 => r[3] = c.c.index as u32,
        _ => {}
    }
    for (reg, v) in [0u8, 3, 1, 2].into_iter().zip(r) {
        c.c.set(reg, 4, u64::from(v));
    }
    Ok(())
}

/// HWCR.TscFreqSel (bit 24).
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;

/// IA32_APIC_BASE.EN, the local APIC's global enable.
const APIC_BASE_EN: u64 = 1 << 11;

mod index {
    pub const TSC: u32 = 0x10;
    pub const TSC_DEADLINE: u32 = 0x6e0;
    pub const TSC_ADJUST: u32 = 0x3b;
    /// AMD's hardware configuration register (HWCR).
    pub const AMD_HWCR: u32 = 0xc001_0015;
    /// AMD's northbridge configuration register (NB_CFG).
    pub const AMD_NB_CFG: u32 = 0xc001_001f;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    pub const MTRRCAP: u32 = 0xfe;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const MTRR_VAR: std::ops::RangeInclusive<u32> = 0x200..=0x20f;
    pub const MTRR_FIX64K: u32 = 0x250;
    pub const MTRR_FIX16K: std::ops::RangeInclusive<u32> = 0x258..=0x259;
    pub const MTRR_FIX4K: std::ops::RangeInclusive<u32> = 0x268..=0x26f;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
    pub const MCG_CAP: u32 = 0x179;
    pub const MCG_STATUS: u32 = 0x17a;
    /// IA32_MC0_CTL; bank i has CTL, STATUS, ADDR and MISC at 0x400 + 4 * i.
    pub const MC0_CTL: u32 = 0x400;
}

/// Machine-check banks: IA32_MCG_CAP says this many (and no MCG_CTL, no extended or
/// corrected-error features); their STATUS, ADDR and MISC registers read 0 (nothing is ever
/// logged), CTL keeps what the guest writes.
pub const MC_BANKS: usize = 4;

/// Which register of a machine-check bank `idx` is: (bank, 0 CTL / 1 STATUS / 2 ADDR / 3 MISC).
fn mc_bank(idx: u32) -> Option<(usize, u32)> {
    let rel = idx.checked_sub(index::MC0_CTL)?;
    let bank = (rel / 4) as usize;
    (bank < MC_BANKS).then_some((bank, rel % 4))
}

/// IA32_MISC_ENABLE as this CPU reports it: fast strings on, branch trace storage and PEBS
/// unavailable (read-only bits); the guest may set or clear the rest, which change nothing.
pub const MISC_ENABLE_DEFAULT: u64 = 1 | 1 << 11 | 1 << 12;
const MISC_ENABLE_RO: u64 = 1 << 11 | 1 << 12;

/// IA32_MTRRCAP: 8 variable ranges, the fixed ranges, write-combining; no SMRR.
pub const MTRRCAP: u64 = 8 | 1 << 8 | 1 << 10;

/// IA32_BIOS_SIGN_ID: microcode revision 1 in the high half (a CPU that runs no microcode
/// update reports a revision; 0 reads as "unknown" to some guests).
const BIOS_SIGN_ID: u64 = 1 << 32;

/// A memory type an MTRR may hold: UC, WC, WT, WP, WB.
fn mtrr_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// A fixed-range MTRR (eight types, one per byte) or IA32_PAT (eight entries; PAT also takes
/// 7, UC-): every byte a valid type.
fn types_ok(v: u64, pat: bool) -> bool {
    v.to_le_bytes()
        .iter()
        .all(|&b| mtrr_type_ok(u64::from(b)) || (pat && b == 7))
}

/// Physical-address bits at and above MAXPHYADDR, reserved in MTRR base and mask registers.
fn above_maxphyaddr() -> u64 {
    let bits = crate::cpuid::host(0x8000_0008, 0)[0] & 0xff;
    !((1u64 << bits) - 1)
}

/// The slot of a fixed-range MTRR in [`SoftMsrs::mtrr_fixed`].
fn fixed_slot(idx: u32) -> Option<usize> {
    match idx {
        index::MTRR_FIX64K => Some(0),
        _ if index::MTRR_FIX16K.contains(&idx) => Some((idx - 0x258 + 1) as usize),
        _ if index::MTRR_FIX4K.contains(&idx) => Some((idx - 0x268 + 3) as usize),
        _ => None,
    }
}

/// MSRs only the software CPU keeps (KVM keeps its own): IA32_MISC_ENABLE and the MTRRs. The
/// MTRRs are stored and checked, never applied (memory types do not change what the software
/// CPU computes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftMsrs {
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// The fixed-range MTRRs: 64K_00000, 16K_80000, 16K_A0000, 4K_C0000 .. 4K_F8000.
    pub mtrr_fixed: [u64; 11],
    /// The variable-range MTRRs: PHYSBASE0, PHYSMASK0, ... PHYSMASK7.
    pub mtrr_var: [u64; 16],
    /// IA32_MCi_CTL of each machine-check bank.
    pub mc_ctl: [u64; MC_BANKS],
    /// IA32_TSC_ADJUST: what writes to IA32_TSC and to this register have added to the TSC.
    pub tsc_adjust: u64,
    /// AMD's NB_CFG, kept as written (AMD hosts only).
    pub nb_cfg: u64,
}

impl Default for SoftMsrs {
    fn default() -> Self {
        SoftMsrs {
            misc_enable: MISC_ENABLE_DEFAULT,
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [0; 16],
            mc_ctl: [u64::MAX; MC_BANKS],
            tsc_adjust: 0,
            nb_cfg: 0,
        }
    }
}

pub(super) fn rdmsr(c: &mut Ctx, _: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let amd = c.c.cpuid.vendor() == Some(crate::cpuid::Vendor::Amd);
    let s = &c.c.s;
    let m = &c.c.msrs;
    let idx = c.c.get(1, 4) as u32;
    let v = match idx {
        index::TSC => c.c.tsc(),
        index::TSC_ADJUST => m.tsc_adjust,
        // TscFreqSel: the TSC counts at the P0 frequency (Linux checks it on an AMD CPU with an
        // invariant TSC). Other bits 0.
        index::AMD_HWCR if amd => HWCR_TSC_FREQ_SEL,
        // Kept and read back, meaning nothing (Linux sets EnableCf8ExtCfg, bit 46, on AMD CPUs).
        index::AMD_NB_CFG if amd => m.nb_cfg,
        index::PLATFORM_ID => 0,
        // Locked, VMX and SMX off (neither is advertised).
        index::FEATURE_CONTROL => 1,
        index::BIOS_SIGN_ID => BIOS_SIGN_ID,
        index::MTRRCAP => MTRRCAP,
        index::MISC_ENABLE => m.misc_enable,
        index::PAT => s.pat,
        index::MTRR_DEF_TYPE => m.mtrr_def_type,
        _ if index::MTRR_VAR.contains(&idx) => m.mtrr_var[(idx - 0x200) as usize],
        _ if fixed_slot(idx).is_some() => m.mtrr_fixed[fixed_slot(idx).unwrap_or(0)],
        index::APIC_BASE => s.apic_base,
        index::MCG_CAP => MC_BANKS as u64,
        index::MCG_STATUS => 0,
        _ if mc_bank(idx).is_some() => match mc_bank(idx) {
            Some((bank, 0)) => m.mc_ctl[bank],
            _ => 0,
        },
        index::SYSENTER_CS => s.sysenter_cs,
        index::SYSENTER_ESP => s.sysenter_esp,
        index::SYSENTER_EIP => s.sysenter_eip,
        index::EFER => s.efer,
        index::STAR => s.star,
        index::LSTAR => s.lstar,
        index::CSTAR => s.cstar,
        index::SFMASK => s.sfmask,
        index::FS_BASE => s.fs.base,
        index::GS_BASE => s.gs.base,
        index::KERNEL_GS_BASE => s.kernel_gs_base,
        index::TSC_AUX => s.tsc_aux,
        // The machine's devices: the local APIC's TSC deadline (kept in the clock's TSC,
        // which a guest write to IA32_TSC moves this vCPU's away from) and x2APIC registers.
        _ => match c.io.msr_read(c.c.index, idx) {
            Some(Ok(v)) if idx == index::TSC_DEADLINE && v != 0 => {
                v.wrapping_add(c.c.clock_tsc_delta())
            }
            Some(Ok(v)) => v,
            Some(Err(_)) | None => return Err(gp(0)),
        },
    };
    c.c.set(0, 4, v & 0xffff_ffff);
    c.c.set(2, 4, v >> 32);
    Ok(())
}

pub(super) fn wrmsr(c: &mut Ctx, _: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let v = c.c.get(0, 4) | c.c.get(2, 4) << 32;
    let addr_ok = canonical_in(v, c.c.s.cr4);
    let idx = c.c.get(1, 4) as u32;
    if idx == index::TSC {
        // The SDM: a write to IA32_TSC adds the same difference to IA32_TSC_ADJUST.
        let old = c.c.tsc();
        c.c.msrs.tsc_adjust = c.c.msrs.tsc_adjust.wrapping_add(v.wrapping_sub(old));
        c.c.set_tsc(v);
        return Ok(());
    }
    if idx == index::TSC_ADJUST {
        // ... and a write to IA32_TSC_ADJUST moves the TSC by what it adds to it.
        let delta = v.wrapping_sub(c.c.msrs.tsc_adjust);
        let tsc = c.c.tsc().wrapping_add(delta);
        c.c.set_tsc(tsc);
        c.c.msrs.tsc_adjust = v;
        return Ok(());
    }
    if idx == index::APIC_BASE {
        // The machine's local APIC takes the enable and x2APIC bits (and may refuse them).
        if let Some(Err(_)) = c.io.msr_write(c.c.index, idx, v) {
            return Err(gp(0));
        }
        c.c.s.apic_base = v;
        return Ok(());
    }
    if idx == index::TSC_DEADLINE || (0x800..=0x8ff).contains(&idx) {
        let v = if idx == index::TSC_DEADLINE && v != 0 {
            v.wrapping_sub(c.c.clock_tsc_delta())
        } else {
            v
        };
        return match c.io.msr_write(c.c.index, idx, v) {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) | None => Err(gp(0)),
        };
    }
    let amd = c.c.cpuid.vendor() == Some(crate::cpuid::Vendor::Amd);
    let s = &mut c.c.s;
    let m = &mut c.c.msrs;
    match idx {
        // Writing 0 before CPUID is how a kernel asks for the microcode revision.
        index::BIOS_SIGN_ID => {}
        index::MISC_ENABLE => m.misc_enable = (v & !MISC_ENABLE_RO) | MISC_ENABLE_DEFAULT,
        index::PAT if types_ok(v, true) => s.pat = v,
        index::MTRR_DEF_TYPE if v & !0xcff == 0 && mtrr_type_ok(v & 0xff) => {
            m.mtrr_def_type = v;
        }
        _ if index::MTRR_VAR.contains(&idx) => {
            let reserved = above_maxphyaddr() | if idx & 1 == 0 { 0xf00 } else { 0x7ff };
            if v & reserved != 0 || (idx & 1 == 0 && !mtrr_type_ok(v & 0xff)) {
                return Err(gp(0));
            }
            m.mtrr_var[(idx - 0x200) as usize] = v;
        }
        _ if fixed_slot(idx).is_some() && types_ok(v, false) => {
            m.mtrr_fixed[fixed_slot(idx).unwrap_or(0)] = v;
        }
        // Nothing is logged: MCG_STATUS and the banks' STATUS take only 0, ADDR and MISC too.
        index::MCG_STATUS if v == 0 => {}
        // HWCR keeps its one defined bit; writes to the rest are dropped.
        index::AMD_HWCR if amd => {}
        index::AMD_NB_CFG if amd => m.nb_cfg = v,
        _ if mc_bank(idx).is_some() => match mc_bank(idx) {
            Some((bank, 0)) => m.mc_ctl[bank] = v,
            _ if v == 0 => {}
            _ => return Err(gp(0)),
        },
        index::SYSENTER_CS => s.sysenter_cs = v & 0xffff,
        index::SYSENTER_ESP if addr_ok => s.sysenter_esp = v,
        index::SYSENTER_EIP if addr_ok => s.sysenter_eip = v,
        index::EFER => {
            let allowed = bits::EFER_SCE | bits::EFER_LME | bits::EFER_NXE;
            if v & !(allowed | bits::EFER_LMA) != 0 {
                return Err(gp(0));
            }
            if s.cr0 & bits::CR0_PG != 0 && (v ^ s.efer) & bits::EFER_LME != 0 {
                return Err(gp(0));
            }
            s.efer = (v & allowed) | (s.efer & bits::EFER_LMA);
        }
        index::STAR => s.star = v,
        index::LSTAR if addr_ok => s.lstar = v,
        index::CSTAR if addr_ok => s.cstar = v,
        index::SFMASK => s.sfmask = v & 0xffff_ffff,
        index::FS_BASE if addr_ok => s.fs.base = v,
        index::GS_BASE if addr_ok => s.gs.base = v,
        index::KERNEL_GS_BASE if addr_ok => s.kernel_gs_base = v,
        index::TSC_AUX => s.tsc_aux = v & 0xffff_ffff,
        _ => return Err(gp(0)),
    }
    if idx == index::EFER {
        c.c.tlb.flush(false);
    }
    Ok(())
}

/// RDPMC: this CPU has no performance counters (CPUID leaf 0xA is 0), so every counter
/// number is invalid: #GP(0), as it is at CPL > 0 with CR4.PCE clear.
pub(super) fn rdpmc(_: &mut Ctx, _: &Instruction) -> R<()> {
    Err(gp(0))
}

/// RDPKRU: EAX = PKRU, EDX = 0 (#UD without CR4.PKE, #GP unless ECX = 0).
pub(super) fn rdpkru(c: &mut Ctx, _: &Instruction) -> R<()> {
    if c.c.s.cr4 & bits::CR4_PKE == 0 {
        return Err(UD);
    }
    if c.c.get(1, 4) != 0 {
        return Err(gp(0));
    }
    let v = u64::from(c.c.s.pkru);
    c.c.set(0, 4, v);
    c.c.set(2, 4, 0);
    Ok(())
}

/// WRPKRU: PKRU = EAX (#UD without CR4.PKE, #GP unless ECX = EDX = 0). The TLB holds
/// translations checked against the old PKRU, so it is flushed.
pub(super) fn wrpkru(c: &mut Ctx, _: &Instruction) -> R<()> {
    if c.c.s.cr4 & bits::CR4_PKE == 0 {
        return Err(UD);
    }
    if c.c.get(1, 4) != 0 || c.c.get(2, 4) != 0 {
        return Err(gp(0));
    }
    c.c.s.pkru = c.c.get(0, 4) as u32;
    c.c.tlb.flush(false);
    Ok(())
}

pub(super) fn rdtsc(c: &mut Ctx, i: &Instruction) -> R<()> {
    if c.c.s.cr4 & (1 << 2) != 0 && c.c.cpl() != 0 {
        return Err(gp(0));
    }
    let t = c.c.tsc();
    c.c.set(0, 4, t & 0xffff_ffff);
    c.c.set(2, 4, t >> 32);
    if i.mnemonic() == Mnemonic::Rdtscp {
        let aux = c.c.s.tsc_aux;
        c.c.set(1, 4, aux);
    }
    Ok(())
}

pub(super) fn swapgs(c: &mut Ctx, _: &Instruction) -> R<()> {
    if !c.c.long64() {
        return Err(UD);
    }
    need_cpl0(c)?;
    let s = &mut c.c.s;
    std::mem::swap(&mut s.gs.base, &mut s.kernel_gs_base);
    Ok(())
}

fn flat(sel: u16, code: bool, dpl: u8, long: bool) -> Segment {
    Segment {
        selector: sel,
        base: 0,
        limit: 0xffff_ffff,
        typ: if code { 0xb } else { 0x3 },
        s: true,
        dpl,
        present: true,
        l: code && long,
        db: !(code && long),
        g: true,
        ..Default::default()
    }
}

pub(super) fn fast_syscall(c: &mut Ctx, i: &Instruction) -> R<()> {
    let lma = c.c.s.long_mode_active();
    let next = i.next_ip();
    match i.mnemonic() {
        Mnemonic::Syscall => {
            if c.c.s.efer & bits::EFER_SCE == 0 || !c.c.pe() {
                return Err(UD);
            }
            let sel = ((c.c.s.star >> 32) & 0xfffc) as u16;
            let f = c.c.rflags();
            if lma {
                c.c.set(1, 8, next);
                c.c.set(11, 8, f & !rflags::RF);
                c.c.s.rip = if c.c.long64() {
                    c.c.s.lstar
                } else {
                    c.c.s.cstar
                };
                c.c.set_rflags(f & !c.c.s.sfmask & !rflags::RF);
            } else {
                c.c.set(1, 4, next);
                c.c.s.rip = c.c.s.star & 0xffff_ffff;
                c.c.set_rflags(f & !(rflags::VM | rflags::IF | rflags::RF));
            }
            c.c.s.cs = flat(sel, true, 0, lma);
            c.c.s.ss = flat(sel + 8, false, 0, false);
        }
        Mnemonic::Sysret | Mnemonic::Sysretq => {
            if c.c.s.efer & bits::EFER_SCE == 0 || !c.c.pe() {
                return Err(UD);
            }
            if c.c.cpl() != 0 {
                return Err(gp(0));
            }
            let base = ((c.c.s.star >> 48) & 0xffff) as u16;
            let q = i.mnemonic() == Mnemonic::Sysretq;
            let rip = if q { c.c.get(1, 8) } else { c.c.get(1, 4) };
            if q && !canonical_in(rip, c.c.s.cr4) {
                return Err(gp(0));
            }
            if lma {
                let f = c.c.get(11, 8);
                c.c.set_rflags((f & 0x3c_7fd7) | rflags::FIXED);
            } else {
                c.c.s.rflags |= rflags::IF;
            }
            c.c.s.cs = if q {
                flat((base + 16) | 3, true, 3, true)
            } else {
                flat(base | 3, true, 3, false)
            };
            let mut ss = flat((base + 8) | 3, false, 3, false);
            ss.dpl = 3;
            c.c.s.ss = ss;
            c.c.s.rip = rip;
        }
        Mnemonic::Sysenter => {
            if !c.c.pe() {
                return Err(gp(0));
            }
            let cs = (c.c.s.sysenter_cs & 0xfffc) as u16;
            if cs == 0 {
                return Err(gp(0));
            }
            let f = c.c.rflags();
            c.c.set_rflags(f & !(rflags::VM | rflags::IF | rflags::RF));
            c.c.s.cs = flat(cs, true, 0, lma);
            c.c.s.ss = flat(cs + 8, false, 0, false);
            c.c.s.rip = if lma {
                c.c.s.sysenter_eip
            } else {
                c.c.s.sysenter_eip & 0xffff_ffff
            };
            let sp = c.c.s.sysenter_esp;
            c.c.set(4, 8, if lma { sp } else { sp & 0xffff_ffff });
        }
        _ => {
            let cs = (c.c.s.sysenter_cs & 0xfffc) as u16;
            if !c.c.pe() || c.c.cpl() != 0 || cs == 0 {
                return Err(gp(0));
            }
            let q = i.mnemonic() == Mnemonic::Sysexitq;
            if q {
                c.c.s.cs = flat((cs + 32) | 3, true, 3, true);
                c.c.s.ss = flat((cs + 40) | 3, false, 3, false);
                c.c.s.rip = c.c.get(2, 8);
                let sp = c.c.get(1, 8);
                c.c.set(4, 8, sp);
            } else {
                c.c.s.cs = flat((cs + 16) | 3, true, 3, false);
                c.c.s.ss = flat((cs + 24) | 3, false, 3, false);
                c.c.s.rip = c.c.get(2, 4);
                let sp = c.c.get(1, 4);
                c.c.set(4, 8, sp);
            }
        }
    }
    Ok(())
}
