//! The debugger seam of the backend contract: what the lockstep differ uses today and a gdbstub
//! will use: breakpoints (software and hardware), single-stepping
//! ([`crate::Vcpu::set_single_step`]), registers ([`crate::Vcpu::state`] and
//! [`crate::Vcpu::set_state`]) and guest-virtual memory ([`crate::Vcpu::read_virt`],
//! [`crate::Vcpu::write_virt`], through [`crate::walk`]).
//!
//! A breakpoint is a linear address. `run` ends with [`crate::Exit::Breakpoint`] before the
//! instruction there executes; a breakpoint at the address where `run` starts is not taken
//! (x86's RF flag), so calling `run` again resumes. A software breakpoint has no limit in
//! number (KVM writes an INT3 into guest memory for it, and reads of guest memory through a
//! debugger see that INT3); a hardware breakpoint uses one of the four debug-address registers
//! (KVM) and leaves memory alone. The software CPU checks both kinds at every instruction.

/// The kind of a breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakpointKind {
    /// An INT3 in guest memory (KVM), or an address check (software CPU).
    Software,
    /// A debug-address register DR0-DR3 (KVM), or an address check (software CPU).
    Hardware,
}

/// An execution breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Breakpoint {
    /// The linear address of the instruction.
    pub addr: u64,
    /// How it is set.
    pub kind: BreakpointKind,
}

/// Most hardware breakpoints at a time (DR0-DR3).
pub const MAX_HW_BREAKPOINTS: usize = 4;

/// Checks a breakpoint set against the limits every backend shares.
///
/// # Errors
/// [`crate::VcpuError::Unsupported`] for more than [`MAX_HW_BREAKPOINTS`] hardware ones.
pub fn check(bps: &[Breakpoint]) -> Result<(), crate::VcpuError> {
    let hw = bps
        .iter()
        .filter(|b| b.kind == BreakpointKind::Hardware)
        .count();
    if hw > MAX_HW_BREAKPOINTS {
        return Err(crate::VcpuError::Unsupported(format!(
            "{hw} hardware breakpoints asked, at most {MAX_HW_BREAKPOINTS} (DR0-DR3)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestMemory, RegionKind};
    use crate::registry::{AccelConfig, AccelKind, open};
    use crate::{CpuState, Exit, NoDevices};

    /// Real mode at 0x7c00: mov ax, 1 / inc ax / inc ax / hlt.
    const CODE: [u8; 6] = [0xb8, 0x01, 0x00, 0x40, 0x40, 0xf4];

    fn kinds() -> Vec<AccelKind> {
        let mut v = vec![AccelKind::Interp, AccelKind::Jit];
        if crate::kvm::probe(crate::kvm::DEFAULT_DEVICE.as_ref()).is_ok() {
            v.push(AccelKind::Kvm);
        } else if std::env::var_os("JANUS_REQUIRE_KVM").is_some() {
            panic!("JANUS_REQUIRE_KVM is set but KVM is unusable");
        }
        v
    }

    fn stops_and_resumes(kind: AccelKind, bp: BreakpointKind) {
        let mut mem = GuestMemory::new();
        mem.add(0, 1 << 20, RegionKind::Ram).unwrap();
        mem.load(0x7c00, &CODE).unwrap();
        let accel = open(kind, &AccelConfig::new(mem.clone(), 1)).unwrap();
        let mut v = accel.create_vcpu(0).unwrap();
        v.set_state(&CpuState::boot_sector()).unwrap();
        let at = |addr| Breakpoint { addr, kind: bp };
        v.set_breakpoints(&[at(0x7c04)]).unwrap();
        let what = format!("{kind} {bp:?}");
        assert_eq!(
            v.run(&NoDevices).unwrap(),
            Exit::Breakpoint(0x7c04),
            "{what}"
        );
        let s = v.state().unwrap();
        assert_eq!((s.rip, s.gpr[0] & 0xffff), (0x7c04, 2), "{what}");
        // Run again: the breakpoint where the run starts is not taken.
        assert_eq!(v.run(&NoDevices).unwrap(), Exit::Halt, "{what}");
        assert_eq!(v.state().unwrap().gpr[0] & 0xffff, 3, "{what}");
        // Guest-virtual memory (paging is off: linear is physical).
        let mut buf = [0u8; 3];
        assert_eq!(v.read_virt(0x7c00, &mut buf).unwrap(), 3);
        assert_eq!(buf, [0xb8, 0x01, 0x00], "{what}");
        v.set_breakpoints(&[]).unwrap();
        assert_eq!(
            mem.read_le(0x7c04, 1).unwrap(),
            0x40,
            "{what}: memory is as it was"
        );
        assert_eq!(v.write_virt(0x7c01, &[7]).unwrap(), 1);
        assert_eq!(mem.read_le(0x7c01, 1).unwrap(), 7);
    }

    #[test]
    fn every_backend_stops_at_a_breakpoint_and_resumes() {
        for kind in kinds() {
            for bp in [BreakpointKind::Hardware, BreakpointKind::Software] {
                // kvm_pvm's instruction emulator, which runs this real-mode code, delivers a
                // software breakpoint's INT3 to the guest (see kvm/debug.rs).
                if kind == AccelKind::Kvm
                    && bp == BreakpointKind::Software
                    && !crate::kvm::hardware_assisted()
                {
                    continue;
                }
                stops_and_resumes(kind, bp);
            }
        }
    }

    #[test]
    fn five_hardware_breakpoints_are_refused() {
        let bps: Vec<Breakpoint> = (0..5)
            .map(|i| Breakpoint {
                addr: i,
                kind: BreakpointKind::Hardware,
            })
            .collect();
        assert!(check(&bps).is_err());
        assert!(check(&bps[..4]).is_ok());
    }
}
