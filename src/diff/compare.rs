//! Comparing two CpuStates field by field, masking what the architecture leaves undefined.

use janus_accel::state::{GPR_NAMES, rflags};
use janus_accel::{CpuState, FpuState, Segment};

/// One field that differs between backend A and backend B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    /// Field name, e.g. "rax" or "cs.base".
    pub field: String,
    /// A's value.
    pub a: u64,
    /// B's value.
    pub b: u64,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<14} a={:#018x} b={:#018x}",
            self.field, self.a, self.b
        )
    }
}

/// Converts iced-x86's RflagsBits to RFLAGS bit positions.
pub fn iced_flags_to_rflags(bits: u32) -> u64 {
    use iced_x86::RflagsBits as R;
    let map = [
        (R::OF, rflags::OF),
        (R::SF, rflags::SF),
        (R::ZF, rflags::ZF),
        (R::AF, rflags::AF),
        (R::CF, rflags::CF),
        (R::PF, rflags::PF),
        (R::DF, rflags::DF),
        (R::IF, rflags::IF),
        (R::AC, rflags::AC),
    ];
    map.iter()
        .filter(|(i, _)| bits & i != 0)
        .map(|(_, r)| r)
        .fold(0, |a, b| a | b)
}

/// Whether the host CPU stores the x87 last-instruction pointers (FIP, FDP, FOP) in every
/// FXSAVE/XSAVE image, as Intel CPUs do. AMD CPUs store them only while an exception is pending
/// (FSW.ES set; AMD APM vol. 5, FXSAVE), unless CPUID Fn8000_0008_EBX[2] (Linux's `xsaveerptr`)
/// says they always do. That bit is not enough under KVM: on the AMD EPYC host measured on
/// 2026-12-07 (a VM itself, `xsaveerptr` set) the state KVM reports after a CPL3 `fadd` with no
/// exception pending has FIP=0 and FOP=0. So on an AMD host they are compared only while an
/// exception is pending.
pub fn host_saves_fpu_pointers() -> bool {
    let v = std::arch::x86_64::__cpuid(0);
    let vendor = [v.ebx, v.edx, v.ecx];
    // "AuthenticAMD" and Hygon's "HygonGenuine" (the same x87 state saving).
    let amd = vendor == [0x6874_7541, 0x6974_6e65, 0x444d_4163]
        || vendor == [0x6f67_7948, 0x6e65_476e, 0x656e_6975];
    !amd
}

/// Gives B A's FIP, FDP and FOP when the host's state A came from cannot be trusted to hold
/// them (see [`host_saves_fpu_pointers`]): no exception is pending in A's x87 status word.
pub fn pin_fpu_pointers(a: &CpuState, b: &mut CpuState) {
    const ES: u16 = 1 << 7;
    if !host_saves_fpu_pointers() && a.fpu.fsw & ES == 0 {
        b.fpu.fip = a.fpu.fip;
        b.fpu.fdp = a.fpu.fdp;
        b.fpu.fop = a.fpu.fop;
    }
}

fn seg(out: &mut Vec<FieldDiff>, name: &str, a: &Segment, b: &Segment, long_mode: bool) {
    let mut push = |field: &str, x: u64, y: u64| {
        if x != y {
            out.push(FieldDiff {
                field: format!("{name}.{field}"),
                a: x,
                b: y,
            });
        }
    };
    push("sel", a.selector.into(), b.selector.into());
    let null = |s: &Segment| s.selector & !3 == 0 && name != "cs" && name != "tr";
    if (a.unusable && b.unusable) || (long_mode && null(a) && null(b)) {
        // Hidden parts of an unusable segment, or of a null data/stack selector in 64-bit mode
        // (where CPUs and KVM report different attributes), are not architecturally visible.
        return;
    }
    push("base", a.base, b.base);
    push("limit", a.limit.into(), b.limit.into());
    // The accessed bit (type bit 0) may be set lazily; compare the rest of the attributes.
    push(
        "attr",
        u64::from(a.attributes() & !1),
        u64::from(b.attributes() & !1),
    );
    push("unusable", a.unusable.into(), b.unusable.into());
}

/// The x87 and SSE registers: `st0`..`st7` (significand; `.exp` for sign and exponent, bits
/// 64-79), `xmm0`..`xmm15` (low half; `.hi` for bits 64-127), `ymm0h`..`ymm15h` (bits 128-191
/// of YMM; `.hi` for bits 192-255), and the control words by name.
fn fpu(out: &mut Vec<FieldDiff>, a: &FpuState, b: &FpuState) {
    let mut push = |field: String, x: u64, y: u64| {
        if x != y {
            out.push(FieldDiff { field, a: x, b: y });
        }
    };
    push("fcw".into(), a.fcw.into(), b.fcw.into());
    push("fsw".into(), a.fsw.into(), b.fsw.into());
    push("ftw".into(), a.ftw.into(), b.ftw.into());
    push("fop".into(), a.fop.into(), b.fop.into());
    push("fip".into(), a.fip, b.fip);
    push("fdp".into(), a.fdp, b.fdp);
    for i in 0..8 {
        push(format!("st{i}"), a.st[i] as u64, b.st[i] as u64);
        push(
            format!("st{i}.exp"),
            (a.st[i] >> 64) as u64,
            (b.st[i] >> 64) as u64,
        );
    }
    for i in 0..16 {
        push(format!("xmm{i}"), a.xmm[i] as u64, b.xmm[i] as u64);
        push(
            format!("xmm{i}.hi"),
            (a.xmm[i] >> 64) as u64,
            (b.xmm[i] >> 64) as u64,
        );
        push(format!("ymm{i}h"), a.ymm_hi[i] as u64, b.ymm_hi[i] as u64);
        push(
            format!("ymm{i}h.hi"),
            (a.ymm_hi[i] >> 64) as u64,
            (b.ymm_hi[i] >> 64) as u64,
        );
    }
    push("mxcsr".into(), a.mxcsr.into(), b.mxcsr.into());
    push("xcr0".into(), a.xcr0, b.xcr0);
}

/// Compares everything but the TSC (which runs on its own on every backend); `undefined_flags`
/// are RFLAGS bits whose value the last instruction left undefined.
pub fn compare(a: &CpuState, b: &CpuState, undefined_flags: u64) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let mut push = |field: &str, x: u64, y: u64| {
        if x != y {
            out.push(FieldDiff {
                field: field.to_string(),
                a: x,
                b: y,
            });
        }
    };
    for (i, name) in GPR_NAMES.iter().enumerate() {
        push(name, a.gpr[i], b.gpr[i]);
    }
    push("rip", a.rip, b.rip);
    push(
        "rflags",
        a.rflags & !undefined_flags & !rflags::RF,
        b.rflags & !undefined_flags & !rflags::RF,
    );
    push("cr0", a.cr0, b.cr0);
    push("cr2", a.cr2, b.cr2);
    push("cr3", a.cr3, b.cr3);
    push("cr4", a.cr4, b.cr4);
    push("cr8", a.cr8, b.cr8);
    push("efer", a.efer, b.efer);
    push("gdt.base", a.gdt.base, b.gdt.base);
    push("gdt.limit", a.gdt.limit.into(), b.gdt.limit.into());
    push("idt.base", a.idt.base, b.idt.base);
    push("idt.limit", a.idt.limit.into(), b.idt.limit.into());
    push("star", a.star, b.star);
    push("lstar", a.lstar, b.lstar);
    push("cstar", a.cstar, b.cstar);
    push("sfmask", a.sfmask, b.sfmask);
    push("kernel_gs_base", a.kernel_gs_base, b.kernel_gs_base);
    push("sysenter_cs", a.sysenter_cs, b.sysenter_cs);
    push("sysenter_esp", a.sysenter_esp, b.sysenter_esp);
    push("sysenter_eip", a.sysenter_eip, b.sysenter_eip);
    fpu(&mut out, &a.fpu, &b.fpu);
    for (name, x, y) in [
        ("cs", &a.cs, &b.cs),
        ("ss", &a.ss, &b.ss),
        ("ds", &a.ds, &b.ds),
        ("es", &a.es, &b.es),
        ("fs", &a.fs, &b.fs),
        ("gs", &a.gs, &b.gs),
        ("ldt", &a.ldt, &b.ldt),
        ("tr", &a.tr, &b.tr),
    ] {
        seg(
            &mut out,
            name,
            x,
            y,
            a.long_mode_active() && b.long_mode_active(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_states_have_no_diffs_and_tsc_is_ignored() {
        let a = CpuState::boot_sector();
        let mut b = a.clone();
        b.tsc = 12345;
        assert!(compare(&a, &b, 0).is_empty());
    }

    #[test]
    fn differences_are_named_and_undefined_flags_masked() {
        let a = CpuState::boot_sector();
        let mut b = a.clone();
        b.gpr[3] = 7;
        b.rflags |= rflags::AF;
        b.ds.base = 0x10;
        let d = compare(&a, &b, 0);
        let names: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(names, ["rbx", "rflags", "ds.base"]);
        let d = compare(&a, &b, rflags::AF);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn fpu_registers_are_named() {
        let a = CpuState::boot_sector();
        let mut b = a.clone();
        b.fpu.xmm[3] |= 1 << 100;
        b.fpu.ymm_hi[3] |= 1 << 70;
        b.fpu.st[0] ^= 1;
        b.fpu.mxcsr ^= 0x40;
        b.fpu.fsw ^= 0x4000;
        let d = compare(&a, &b, 0);
        let names: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(names, ["fsw", "st0", "xmm3.hi", "ymm3h.hi", "mxcsr"]);
    }

    #[test]
    fn iced_flag_bits_map_to_rflags() {
        use iced_x86::RflagsBits as R;
        assert_eq!(iced_flags_to_rflags(R::AF | R::OF), rflags::AF | rflags::OF);
        assert_eq!(iced_flags_to_rflags(0), 0);
    }
}
