//! Pure conversions between [`CpuState`] and KVM's register structures. No ioctls here, so every
//! mapping is unit-tested without /dev/kvm.

use kvm_bindings::{
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW, kvm_debugregs, kvm_dtable,
    kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};

use crate::state::{CpuState, DebugRegs, DescriptorTable, Events, PendingException, Segment};

/// Interrupt shadow bits of `kvm_vcpu_events.interrupt.shadow`.
const SHADOW_MOV_SS: u8 = 1;
const SHADOW_STI: u8 = 2;

/// The MSRs janus saves and restores through KVM_GET/SET_MSRS, in this order.
pub const MSR_INDICES: [u32; 11] = [
    0x0000_0174, // IA32_SYSENTER_CS
    0x0000_0175, // IA32_SYSENTER_ESP
    0x0000_0176, // IA32_SYSENTER_EIP
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
    0x0000_0010, // TSC
    0x0000_0277, // IA32_PAT
];

pub(crate) fn seg_from_kvm(k: &kvm_segment) -> Segment {
    Segment {
        selector: k.selector,
        base: k.base,
        limit: k.limit,
        typ: k.type_,
        s: k.s != 0,
        dpl: k.dpl,
        present: k.present != 0,
        avl: k.avl != 0,
        l: k.l != 0,
        db: k.db != 0,
        g: k.g != 0,
        unusable: k.unusable != 0,
    }
}

pub(crate) fn seg_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.typ,
        present: u8::from(s.present),
        dpl: s.dpl,
        db: u8::from(s.db),
        s: u8::from(s.s),
        l: u8::from(s.l),
        g: u8::from(s.g),
        avl: u8::from(s.avl),
        unusable: u8::from(s.unusable),
        padding: 0,
    }
}

fn dt_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

/// Fills the general registers from `kvm_regs`.
pub(crate) fn regs_into(state: &mut CpuState, r: &kvm_regs) {
    state.gpr = [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ];
    state.rip = r.rip;
    state.rflags = r.rflags;
}

/// Builds `kvm_regs` from the state.
pub(crate) fn regs_from(state: &CpuState) -> kvm_regs {
    let g = &state.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: state.rip,
        rflags: state.rflags,
    }
}

/// Fills segments, tables and control registers from `kvm_sregs`.
pub(crate) fn sregs_into(state: &mut CpuState, s: &kvm_sregs) {
    state.cs = seg_from_kvm(&s.cs);
    state.ds = seg_from_kvm(&s.ds);
    state.es = seg_from_kvm(&s.es);
    state.fs = seg_from_kvm(&s.fs);
    state.gs = seg_from_kvm(&s.gs);
    state.ss = seg_from_kvm(&s.ss);
    state.ldt = seg_from_kvm(&s.ldt);
    state.tr = seg_from_kvm(&s.tr);
    state.gdt = DescriptorTable {
        base: s.gdt.base,
        limit: s.gdt.limit,
    };
    state.idt = DescriptorTable {
        base: s.idt.base,
        limit: s.idt.limit,
    };
    state.cr0 = s.cr0;
    state.cr2 = s.cr2;
    state.cr3 = s.cr3;
    state.cr4 = s.cr4;
    state.cr8 = s.cr8;
    state.efer = s.efer;
    state.apic_base = s.apic_base;
}

/// Builds `kvm_sregs` from the state, keeping `base`'s interrupt bitmap (pending external
/// interrupts are carried by the events, not here).
pub(crate) fn sregs_from(state: &CpuState, base: &kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cs: seg_to_kvm(&state.cs),
        ds: seg_to_kvm(&state.ds),
        es: seg_to_kvm(&state.es),
        fs: seg_to_kvm(&state.fs),
        gs: seg_to_kvm(&state.gs),
        ss: seg_to_kvm(&state.ss),
        tr: seg_to_kvm(&state.tr),
        ldt: seg_to_kvm(&state.ldt),
        gdt: dt_to_kvm(&state.gdt),
        idt: dt_to_kvm(&state.idt),
        cr0: state.cr0,
        cr2: state.cr2,
        cr3: state.cr3,
        cr4: state.cr4,
        cr8: state.cr8,
        efer: state.efer,
        apic_base: state.apic_base,
        interrupt_bitmap: base.interrupt_bitmap,
    }
}

/// Fills the saved MSRs from KVM_GET_MSRS entries (in [`MSR_INDICES`] order, possibly fewer).
pub(crate) fn msrs_into(state: &mut CpuState, entries: &[kvm_msr_entry]) {
    for e in entries {
        let v = e.data;
        match e.index {
            0x174 => state.sysenter_cs = v,
            0x175 => state.sysenter_esp = v,
            0x176 => state.sysenter_eip = v,
            0xc000_0081 => state.star = v,
            0xc000_0082 => state.lstar = v,
            0xc000_0083 => state.cstar = v,
            0xc000_0084 => state.sfmask = v,
            0xc000_0102 => state.kernel_gs_base = v,
            0xc000_0103 => state.tsc_aux = v,
            0x10 => state.tsc = v,
            0x277 => state.pat = v,
            _ => {}
        }
    }
}

/// KVM_SET_MSRS entries for the saved MSRs, restricted to `supported` indices.
pub(crate) fn msrs_from(state: &CpuState, supported: &[u32]) -> Vec<kvm_msr_entry> {
    MSR_INDICES
        .iter()
        .filter(|i| supported.contains(i))
        .map(|&index| {
            let data = match index {
                0x174 => state.sysenter_cs,
                0x175 => state.sysenter_esp,
                0x176 => state.sysenter_eip,
                0xc000_0081 => state.star,
                0xc000_0082 => state.lstar,
                0xc000_0083 => state.cstar,
                0xc000_0084 => state.sfmask,
                0xc000_0102 => state.kernel_gs_base,
                0xc000_0103 => state.tsc_aux,
                0x277 => state.pat,
                _ => state.tsc,
            };
            kvm_msr_entry {
                index,
                data,
                ..Default::default()
            }
        })
        .collect()
}

/// Fills the debug registers from `kvm_debugregs` (KVM_GET_DEBUGREGS).
pub(crate) fn debugregs_into(state: &mut CpuState, d: &kvm_debugregs) {
    state.debug = DebugRegs {
        dr: d.db,
        dr6: d.dr6,
        dr7: d.dr7,
    };
}

/// Builds `kvm_debugregs` (KVM_SET_DEBUGREGS) from the state.
pub(crate) fn debugregs_from(state: &CpuState) -> kvm_debugregs {
    kvm_debugregs {
        db: state.debug.dr,
        dr6: state.debug.dr6,
        dr7: state.debug.dr7,
        ..Default::default()
    }
}

/// Fills the event state from `kvm_vcpu_events`.
pub(crate) fn events_into(state: &mut CpuState, e: &kvm_vcpu_events) {
    state.events = Events {
        sti_shadow: e.interrupt.shadow & SHADOW_STI != 0,
        mov_ss_shadow: e.interrupt.shadow & SHADOW_MOV_SS != 0,
        nmi_pending: e.nmi.pending != 0,
        nmi_masked: e.nmi.masked != 0,
        exception: (e.exception.injected != 0 || e.exception.pending != 0).then_some(
            PendingException {
                vector: e.exception.nr,
                error_code: (e.exception.has_error_code != 0).then_some(e.exception.error_code),
            },
        ),
        interrupt: (e.interrupt.injected != 0).then_some(e.interrupt.nr),
    };
}

/// Builds `kvm_vcpu_events` from the state.
pub(crate) fn events_from(state: &CpuState) -> kvm_vcpu_events {
    let ev = &state.events;
    let mut e = kvm_vcpu_events::default();
    e.interrupt.shadow = if ev.sti_shadow { SHADOW_STI } else { 0 }
        | if ev.mov_ss_shadow { SHADOW_MOV_SS } else { 0 };
    if let Some(v) = ev.interrupt {
        e.interrupt.injected = 1;
        e.interrupt.nr = v;
    }
    e.nmi.pending = u8::from(ev.nmi_pending);
    e.nmi.masked = u8::from(ev.nmi_masked);
    if let Some(x) = ev.exception {
        e.exception.injected = 1;
        e.exception.nr = x.vector;
        e.exception.has_error_code = u8::from(x.error_code.is_some());
        e.exception.error_code = x.error_code.unwrap_or(0);
    }
    e.flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING;
    e
}

/// The bytes of an XSAVE area (`kvm_xsave.region` is an array of 32-bit words).
fn xsave_bytes(x: &kvm_xsave, at: usize, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let i = at + k;
        *b = x.region[i / 4].to_le_bytes()[i % 4];
    }
}

fn xsave_put(x: &mut kvm_xsave, at: usize, data: &[u8]) {
    for (k, &b) in data.iter().enumerate() {
        let i = at + k;
        let mut w = x.region[i / 4].to_le_bytes();
        w[i % 4] = b;
        x.region[i / 4] = u32::from_le_bytes(w);
    }
}

/// x87, SSE and AVX registers from KVM_GET_XSAVE's area (standard format): the legacy region
/// in FXSAVE64 form and YMM_Hi128 at 576, a component whose XSTATE_BV bit is clear being in its
/// initial configuration. (KVM_GET_FPU is not used: on kvm_pvm it reports MXCSR as 0 and its
/// XMM values are not the guest's, and it has no YMM.)
pub(crate) fn xsave_into(state: &mut CpuState, x: &kvm_xsave) {
    let mut a = [0u8; YMM_END];
    xsave_bytes(x, 0, &mut a);
    let u16_at = |i: usize| u16::from_le_bytes([a[i], a[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
    let u128_at = |i: usize| u128::from(u64_at(i)) | u128::from(u64_at(i + 8)) << 64;
    let bv = u64_at(512);
    let p = &mut state.fpu;
    if bv & 1 != 0 {
        p.fcw = u16_at(0);
        p.fsw = u16_at(2);
        p.ftw = a[4];
        p.fop = u16_at(6);
        p.fip = u64_at(8);
        p.fdp = u64_at(16);
        for (n, d) in p.st.iter_mut().enumerate() {
            *d = u128_at(32 + 16 * n) & ((1u128 << 80) - 1);
        }
    } else {
        (p.fcw, p.fsw, p.ftw, p.fop, p.fip, p.fdp) = (0x37f, 0, 0, 0, 0, 0);
        p.st = [0; 8];
    }
    p.mxcsr = u32_at(24);
    for (n, d) in p.xmm.iter_mut().enumerate() {
        *d = if bv & 2 != 0 {
            u128_at(160 + 16 * n)
        } else {
            0
        };
    }
    for (n, d) in p.ymm_hi.iter_mut().enumerate() {
        *d = if bv & 4 != 0 {
            u128_at(YMM_HI128 + 16 * n)
        } else {
            0
        };
    }
}

/// The standard-format offset of XSAVE's YMM_Hi128 component (CPUID.(0xD,2).EBX), and its end.
const YMM_HI128: usize = 576;
const YMM_END: usize = YMM_HI128 + 256;

/// KVM_SET_XSAVE's area: `base` (from KVM_GET_XSAVE, so that other components are kept) with
/// the x87 and SSE registers of `state`, both marked present in XSTATE_BV, and its YMM upper
/// halves (YMM_Hi128).
pub(crate) fn xsave_from(state: &CpuState, base: &kvm_xsave) -> kvm_xsave {
    let mut x = kvm_xsave {
        region: base.region,
        ..Default::default()
    };
    let p = &state.fpu;
    xsave_put(&mut x, 0, &p.fcw.to_le_bytes());
    xsave_put(&mut x, 2, &p.fsw.to_le_bytes());
    xsave_put(&mut x, 4, &[p.ftw, 0]);
    xsave_put(&mut x, 6, &p.fop.to_le_bytes());
    xsave_put(&mut x, 8, &p.fip.to_le_bytes());
    xsave_put(&mut x, 16, &p.fdp.to_le_bytes());
    xsave_put(&mut x, 24, &p.mxcsr.to_le_bytes());
    for (n, v) in p.st.iter().enumerate() {
        xsave_put(
            &mut x,
            32 + 16 * n,
            &(v & ((1u128 << 80) - 1)).to_le_bytes(),
        );
    }
    for (n, v) in p.xmm.iter().enumerate() {
        xsave_put(&mut x, 160 + 16 * n, &v.to_le_bytes());
    }
    // YMM_Hi128: present when any upper half is non-zero, else in its initial configuration
    // (so a guest without AVX in XCR0 is never handed the component).
    let mut bv = [0u8; 8];
    xsave_bytes(&x, 512, &mut bv);
    let mut bv = u64::from_le_bytes(bv) | 3;
    if p.ymm_hi.iter().any(|&v| v != 0) {
        for (n, v) in p.ymm_hi.iter().enumerate() {
            xsave_put(&mut x, YMM_HI128 + 16 * n, &v.to_le_bytes());
        }
        bv |= 4;
    } else {
        xsave_put(&mut x, YMM_HI128, &[0; 256]);
        bv &= !4;
    }
    xsave_put(&mut x, 512, &bv.to_le_bytes());
    x
}

/// XCR0 from KVM_GET_XCRS (unchanged if the list has no XCR0).
pub(crate) fn xcrs_into(state: &mut CpuState, x: &kvm_xcrs) {
    let n = (x.nr_xcrs as usize).min(x.xcrs.len());
    if let Some(e) = x.xcrs[..n].iter().find(|e| e.xcr == 0) {
        state.fpu.xcr0 = e.value;
    }
}

/// KVM_SET_XCRS's structure: XCR0 only.
pub(crate) fn xcrs_from(state: &CpuState) -> kvm_xcrs {
    let mut x = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    x.xcrs[0].xcr = 0;
    x.xcrs[0].value = state.fpu.xcr0;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CpuState {
        let mut s = CpuState::boot_sector();
        for (i, g) in s.gpr.iter_mut().enumerate() {
            *g = 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1);
        }
        s.rip = 0x1234;
        s.rflags = 0x246;
        s.cs.set_attributes(0xa09b);
        s.cs.base = 0;
        s.cs.limit = 0xffff_ffff;
        s.gdt = DescriptorTable {
            base: 0x5000,
            limit: 0x27,
        };
        s.cr0 = 0x8000_0011;
        s.cr3 = 0x1000;
        s.cr4 = 0x20;
        s.efer = 0x500;
        s.star = 1;
        s.lstar = 2;
        s.tsc_aux = 7;
        s.tsc = 99;
        s.events.sti_shadow = true;
        s.events.exception = Some(PendingException {
            vector: 14,
            error_code: Some(2),
        });
        s
    }

    #[test]
    fn debug_registers_round_trip() {
        let s = CpuState {
            debug: DebugRegs {
                dr: [1, 2, 3, 4],
                dr6: 0xffff_4ff1,
                dr7: 0x000d_0401,
            },
            ..Default::default()
        };
        let d = debugregs_from(&s);
        assert_eq!(
            (d.db, d.dr6, d.dr7),
            ([1, 2, 3, 4], 0xffff_4ff1, 0x000d_0401)
        );
        let mut t = CpuState::default();
        debugregs_into(&mut t, &d);
        assert_eq!(t.debug, s.debug);
    }

    #[test]
    fn regs_and_sregs_round_trip() {
        let s = sample();
        let mut back = CpuState::default();
        regs_into(&mut back, &regs_from(&s));
        sregs_into(&mut back, &sregs_from(&s, &kvm_sregs::default()));
        assert_eq!(back.gpr, s.gpr);
        assert_eq!(back.rip, s.rip);
        assert_eq!(back.cs, s.cs);
        assert_eq!(back.gdt, s.gdt);
        assert_eq!(
            (back.cr0, back.cr3, back.cr4, back.efer),
            (s.cr0, s.cr3, s.cr4, s.efer)
        );
    }

    #[test]
    fn msrs_and_events_round_trip() {
        let s = sample();
        let mut back = CpuState::default();
        msrs_into(&mut back, &msrs_from(&s, &MSR_INDICES));
        assert_eq!(
            (back.star, back.lstar, back.tsc_aux, back.tsc),
            (1, 2, 7, 99)
        );
        assert_eq!(back.pat, crate::state::PAT_DEFAULT);
        events_into(&mut back, &events_from(&s));
        assert_eq!(back.events, s.events);
    }

    fn sample_with_ymm() -> CpuState {
        let mut s = sample();
        s.fpu.ymm_hi = [u128::MAX; 16];
        s
    }

    #[test]
    fn fpu_and_xcr0_round_trip() {
        let mut s = sample();
        s.fpu.fcw = 0x27f;
        s.fpu.fsw = 0x3800;
        s.fpu.ftw = 0x80;
        s.fpu.fop = 0x1e9;
        s.fpu.fip = 0x40_1000;
        s.fpu.fdp = 0x60_0008;
        s.fpu.st[0] = 0x3fff_8000_0000_0000_0000;
        s.fpu.xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        s.fpu.ymm_hi[15] = 0xfedc_ba98_7654_3210_0123_4567_89ab_cdef;
        s.fpu.mxcsr = 0x9fc0;
        s.fpu.xcr0 = 7;
        let mut back = CpuState::default();
        xsave_into(&mut back, &xsave_from(&s, &kvm_xsave::default()));
        xcrs_into(&mut back, &xcrs_from(&s));
        assert_eq!(back.fpu, s.fpu);
        // XSTATE_BV clear: the initial configuration, whatever the area holds.
        let mut x = xsave_from(&s, &kvm_xsave::default());
        x.region[128] = 0;
        xsave_into(&mut back, &x);
        assert_eq!(
            (
                back.fpu.fcw,
                back.fpu.st[0],
                back.fpu.xmm[3],
                back.fpu.ymm_hi[15]
            ),
            (0x37f, 0, 0, 0)
        );
        // All upper halves zero: YMM_Hi128 goes in its initial configuration.
        s.fpu.ymm_hi[15] = 0;
        let x = xsave_from(&s, &xsave_from(&sample_with_ymm(), &kvm_xsave::default()));
        assert_eq!(x.region[128] & 4, 0);
        assert!(x.region[144..208].iter().all(|&w| w == 0));
        assert_eq!(back.fpu.mxcsr, 0x9fc0);
    }

    #[test]
    fn unsupported_msrs_are_not_set() {
        let s = sample();
        let e = msrs_from(&s, &[0xc000_0082]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].data, 2);
    }
}
