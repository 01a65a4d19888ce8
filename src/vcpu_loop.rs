//! The vCPU thread: a small state machine around the backend's `run`. What to do after each exit
//! is decided by [`handle_exit`], a pure function over the exit value, so every branch is tested
//! without /dev/kvm.

use std::sync::Arc;
use std::time::Duration;

use janus_accel::{CpuState, Exit, ExitCounters, IoHandler, SystemEventKind, Vcpu, rflags_if};

use crate::control::{Control, StopReason};
use crate::gdb::Hub;
use crate::machine::MachineIo;

/// What the vCPU thread does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the guest again.
    Continue,
    /// Sleep until an interrupt or a stop request arrives (HLT with interrupts enabled).
    WaitForInterrupt,
    /// Sleep until INIT, an NMI (unless `nmi_blocked`: an NMI handler runs until its IRET) or
    /// a stop request: HLT with interrupts disabled, which no ordinary interrupt can wake.
    WaitInterruptsOff {
        /// NMIs are blocked: only INIT wakes it.
        nmi_blocked: bool,
    },
    /// The machine is stopping for a reason already recorded: leave the loop.
    Leave,
    /// Stop the machine for this reason and leave the loop.
    Stop(StopReason),
}

/// Facts about the vCPU that some exits need, fetched only when asked for.
pub trait ExitContext {
    /// Whether a stop of the machine has been requested.
    fn stopping(&self) -> bool;
    /// RFLAGS.IF, CS selector, RIP and whether NMIs are blocked now (for HLT), or an error
    /// text.
    fn halt_state(&mut self) -> Result<HaltState, String>;
    /// Whether an NMI may still come to wake this vCPU (one is waiting, or a device line
    /// reaches it in NMI mode).
    fn nmi_may_come(&self) -> bool;
}

/// What HLT's exit needs to know of the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaltState {
    /// RFLAGS.IF.
    pub iflag: bool,
    /// CS selector.
    pub cs: u16,
    /// RIP.
    pub rip: u64,
    /// An NMI handler runs (NMIs blocked until IRET).
    pub nmi_blocked: bool,
}

/// Decides what follows an exit of vCPU `index`.
pub fn handle_exit(index: usize, exit: Exit, ctx: &mut dyn ExitContext) -> Action {
    match exit {
        Exit::SingleStep | Exit::Breakpoint(_) => Action::Continue,
        Exit::Stopped => {
            if ctx.stopping() {
                Action::Leave
            } else {
                Action::Continue
            }
        }
        Exit::Halt => {
            if ctx.stopping() {
                return Action::Leave;
            }
            match ctx.halt_state() {
                // Only the BSP ends the machine this way, and only if no NMI can wake it: an
                // AP parked with interrupts off still answers INIT and NMI.
                Ok(HaltState {
                    iflag: false,
                    cs,
                    rip,
                    nmi_blocked,
                }) if index == 0 && (nmi_blocked || !ctx.nmi_may_come()) => {
                    Action::Stop(StopReason::HaltedInterruptsOff {
                        vcpu: index,
                        cs,
                        rip,
                    })
                }
                Ok(HaltState {
                    iflag: false,
                    nmi_blocked,
                    ..
                }) => Action::WaitInterruptsOff { nmi_blocked },
                Ok(HaltState { iflag: true, .. }) => Action::WaitForInterrupt,
                Err(e) => Action::Stop(StopReason::HostError(e)),
            }
        }
        Exit::Shutdown(state) => Action::Stop(StopReason::TripleFault(state)),
        Exit::SystemEvent(kind) => Action::Stop(match kind {
            SystemEventKind::Reset => StopReason::Reset("platform reset event"),
            SystemEventKind::Shutdown => StopReason::PowerOff,
            SystemEventKind::Crash => StopReason::HostError("the guest reported a crash".into()),
            SystemEventKind::Other(n) => StopReason::HostError(format!("unknown system event {n}")),
        }),
        Exit::Failed(f) => Action::Stop(StopReason::VcpuFailed(f)),
    }
}

struct Ctx<'a, V: Vcpu> {
    vcpu: &'a mut V,
    control: &'a Control,
    io: &'a MachineIo,
}

impl<V: Vcpu> ExitContext for Ctx<'_, V> {
    fn stopping(&self) -> bool {
        self.control.stopping()
    }
    fn halt_state(&mut self) -> Result<HaltState, String> {
        let s = self.vcpu.state().map_err(|e| e.to_string())?;
        Ok(HaltState {
            iflag: rflags_if(s.rflags),
            cs: s.cs.selector,
            rip: s.rip,
            nmi_blocked: s.events.nmi_masked,
        })
    }
    fn nmi_may_come(&self) -> bool {
        self.io
            .platform
            .as_deref()
            .is_some_and(|p| p.nmi_may_come(self.vcpu.index()))
    }
}

/// What a vCPU was doing when the machine stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuPhase {
    /// An application processor still waiting for its start-up IPI.
    WaitingForStartup,
    /// Halted (HLT), waiting for an interrupt.
    Halted,
    /// Running guest code.
    Running,
}

/// Where a vCPU was when the machine stopped: printed when a run times out, so that a hung
/// guest names the code it was stuck in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuEnd {
    /// The vCPU.
    pub index: usize,
    /// What it was doing.
    pub phase: VcpuPhase,
    /// Its registers (`None` if the backend could not read them).
    pub state: Option<Box<CpuState>>,
    /// Its local APIC's state, when janus provides the interrupt controllers.
    pub lapic: Option<String>,
}

impl std::fmt::Display for VcpuEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            VcpuPhase::WaitingForStartup => "waiting for a start-up IPI",
            VcpuPhase::Halted => "halted",
            VcpuPhase::Running => "running",
        };
        write!(f, "vCPU {}: {phase}", self.index)?;
        if let (Some(s), false) = (&self.state, self.phase == VcpuPhase::WaitingForStartup) {
            write!(
                f,
                " at {:04x}:{:016x} ({}, rflags {:08x}, cr3 {:x}, rsp {:x})",
                s.cs.selector,
                s.rip,
                s.mode_name(),
                s.rflags,
                s.cr3,
                s.gpr[janus_accel::Reg::Rsp as usize]
            )?;
        }
        if let Some(l) = &self.lapic {
            write!(f, "; {l}")?;
        }
        Ok(())
    }
}

/// What a vCPU thread returns.
#[derive(Debug)]
pub struct VcpuReport {
    /// Its exit counters.
    pub counters: ExitCounters,
    /// Where it stopped.
    pub end: VcpuEnd,
}

fn report<V: Vcpu>(vcpu: &mut V, io: &MachineIo, phase: VcpuPhase) -> VcpuReport {
    let index = vcpu.index();
    VcpuReport {
        counters: vcpu.counters(),
        end: VcpuEnd {
            index,
            phase,
            state: vcpu.state().ok().map(Box::new),
            lapic: io.platform.as_ref().and_then(|p| p.lapic_summary(index)),
        },
    }
}

/// Loads `state` into the vCPU with its time-stamp counter kept: INIT and SIPI leave the TSC
/// running, so an AP's stays in step with the BSP's. False (and the machine stopping) if the
/// backend refused it.
fn set_state_keeping_tsc<V: Vcpu>(vcpu: &mut V, mut state: CpuState, control: &Control) -> bool {
    if let Ok(now) = vcpu.state() {
        state.tsc = now.tsc;
    }
    match vcpu.set_state(&state) {
        Ok(()) => true,
        Err(e) => {
            let i = vcpu.index();
            control.request_stop(StopReason::HostError(format!("vCPU {i}: {e}")));
            false
        }
    }
}

/// An application processor in wait-for-SIPI (at power-on, or after INIT): waits for a
/// start-up IPI and loads its state. False when the machine stops first (or the state could
/// not be loaded).
fn wait_for_startup<V: Vcpu>(
    vcpu: &mut V,
    io: &MachineIo,
    control: &Control,
    debug: Option<&Hub>,
) -> bool {
    let kicker = vcpu.kicker();
    let Some(platform) = io.platform.as_deref() else {
        while !control.wait_stopping(Duration::from_millis(100)) {}
        return false;
    };
    platform.set_idle(vcpu.index(), true);
    loop {
        if control.stopping() {
            return false;
        }
        // A debugger holds it: it parks here until resumed.
        if let Some(d) = debug {
            d.check(vcpu.index(), vcpu);
        }
        if let Some(v) = platform.take_sipi(vcpu.index()) {
            if !set_state_keeping_tsc(vcpu, CpuState::startup_ipi(v), control) {
                return false;
            }
            platform.set_idle(vcpu.index(), false);
            return true;
        }
        // A start-up IPI (or a stop request) kicks this vCPU, which wakes it.
        while !kicker.pending() && !control.stopping() {
            kicker.park(Duration::from_millis(10));
        }
        kicker.clear();
    }
}

/// Runs a vCPU until the machine stops. `started` is false for application processors, which
/// wait for INIT and a start-up IPI from the interrupt controllers (without janus's own
/// controllers, only for the machine to stop). Returns the vCPU's counters and where it stopped.
///
/// The vCPU is then freed on a detached thread: a software vCPU's translation cache can hold
/// gigabytes, and freeing them took more than a second after a `--timeout`, all of it before
/// the stop report and the exit. The process may now exit while it is still being freed.
/// With a debugger (`debug`), the vCPU parks where the debugger holds it ([`Hub::check`]) and
/// reports its breakpoints and steps ([`Hub::after_exit`]).
pub fn vcpu_thread<V: Vcpu + Send + 'static>(
    mut vcpu: V,
    io: Arc<MachineIo>,
    control: Arc<Control>,
    started: bool,
    debug: Option<Arc<Hub>>,
) -> VcpuReport {
    let r = run_vcpu(&mut vcpu, &io, &control, started, debug.as_deref());
    release(vcpu);
    r
}

/// Drops `v` on a thread of its own (or here, if no thread can be started).
fn release<V: Send + 'static>(v: V) {
    let _ = std::thread::Builder::new()
        .name("vcpu-free".into())
        .spawn(move || drop(v));
}

/// [`vcpu_thread`]'s loop.
fn run_vcpu<V: Vcpu>(
    vcpu: &mut V,
    io: &Arc<MachineIo>,
    control: &Arc<Control>,
    started: bool,
    debug: Option<&Hub>,
) -> VcpuReport {
    let kicker = vcpu.kicker();
    if !started && !wait_for_startup(vcpu, io, control, debug) {
        return report(vcpu, io, VcpuPhase::WaitingForStartup);
    }
    let index = vcpu.index();
    let mut phase;
    let mut counters_answered = 0;
    loop {
        phase = VcpuPhase::Running;
        // INIT resets a processor whatever it is doing: an AP waits for a start-up IPI again,
        // the BSP restarts at the reset vector.
        if let Some(p) = io.platform.as_deref()
            && p.init_pending(index)
            && let Some(ap) = p.take_init(index)
        {
            let restarted = if ap {
                wait_for_startup(vcpu, io, control, debug)
            } else {
                set_state_keeping_tsc(&mut *vcpu, CpuState::reset(true), control)
            };
            if !restarted {
                return report(vcpu, io, VcpuPhase::WaitingForStartup);
            }
        }
        // Ctrl-A s asked for the counters so far (it kicked this vCPU to get here).
        let wanted = control.counters_wanted();
        if wanted != counters_answered {
            control.publish_counters(index, wanted, vcpu.counters());
            counters_answered = wanted;
        }
        if let Some(d) = debug {
            d.check(index, &mut *vcpu);
        }
        let exit = match vcpu.run(io.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                control.request_stop(StopReason::HostError(format!("vCPU {index}: {e}")));
                break;
            }
        };
        if let Some(d) = debug {
            d.after_exit(index, &exit);
        }
        let action = handle_exit(
            index,
            exit,
            &mut Ctx {
                vcpu: &mut *vcpu,
                control,
                io,
            },
        );
        match action {
            Action::Continue => {
                if kicker.pending() && !control.stopping() {
                    kicker.clear();
                }
            }
            Action::WaitForInterrupt => {
                phase = VcpuPhase::Halted;
                // Sleep until an interrupt is raised for this vCPU (which kicks it) or the
                // machine stops; one may already be waiting from before the HLT. Under
                // deterministic time, once every vCPU waits, the clock jumps to the next timer
                // deadline instead of sleeping.
                let platform = io.platform.as_deref();
                if let Some(p) = platform {
                    p.set_idle(index, true);
                }
                // A guest that waits may have left a prompt without its newline.
                crate::sink::flush_console();
                loop {
                    // A recorded input may be due here (src/record.rs).
                    io.poll_journal(index);
                    if kicker.pending() || io.interrupt_pending(index) {
                        break;
                    }
                    if platform.is_some_and(|p| p.idle_jump()) {
                        continue;
                    }
                    if control.stopping() {
                        break;
                    }
                    // Whoever raises an interrupt for this vCPU, or stops the machine, kicks
                    // it, which ends the park at once. (Waiting on the stop condition variable
                    // instead woke a halted vCPU only every 10 ms: an IPI or a timer deadline
                    // was answered up to 10 ms late.)
                    kicker.park(Duration::from_millis(10));
                }
                if let Some(p) = platform {
                    p.set_idle(index, false);
                }
                if control.stopping() {
                    break;
                }
                kicker.clear();
            }
            Action::WaitInterruptsOff { nmi_blocked } => {
                phase = VcpuPhase::Halted;
                // Interrupts cannot wake it: sleep (kicks for them are cleared and ignored)
                // until INIT, an NMI it can take, a stop, or a request for the counters, which
                // the top of the loop answers.
                let platform = io.platform.as_deref();
                if let Some(p) = platform {
                    p.set_idle(index, true);
                }
                crate::sink::flush_console();
                loop {
                    io.poll_journal(index);
                    if control.stopping()
                        || platform
                            .is_some_and(|p| p.wakes_halted_with_interrupts_off(index, nmi_blocked))
                        || control.counters_wanted() != counters_answered
                        || debug.is_some_and(|d| d.holds(index))
                    {
                        break;
                    }
                    if platform.is_some_and(|p| p.idle_jump()) {
                        continue;
                    }
                    kicker.park(Duration::from_millis(10));
                    kicker.clear();
                }
                if let Some(p) = platform {
                    p.set_idle(index, false);
                }
                if control.stopping() {
                    break;
                }
            }
            Action::Leave => break,
            Action::Stop(reason) => {
                control.request_stop(reason);
                break;
            }
        }
    }
    report(vcpu, io, phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_accel::{CpuState, VcpuFailure};

    struct Fake {
        stopping: bool,
        halt: Result<HaltState, String>,
        nmi_may_come: bool,
    }

    impl ExitContext for Fake {
        fn stopping(&self) -> bool {
            self.stopping
        }
        fn halt_state(&mut self) -> Result<HaltState, String> {
            self.halt.clone()
        }
        fn nmi_may_come(&self) -> bool {
            self.nmi_may_come
        }
    }

    fn ctx(stopping: bool, iflag: bool) -> Fake {
        Fake {
            stopping,
            halt: Ok(HaltState {
                iflag,
                cs: 0x10,
                rip: 0x1234,
                nmi_blocked: false,
            }),
            nmi_may_come: false,
        }
    }

    #[test]
    fn halt_with_interrupts_off_stops_naming_the_place() {
        // An AP parked this way still answers INIT; the BSP cannot be woken.
        assert_eq!(
            handle_exit(1, Exit::Halt, &mut ctx(false, false)),
            Action::WaitInterruptsOff { nmi_blocked: false }
        );
        assert_eq!(
            handle_exit(0, Exit::Halt, &mut ctx(false, false)),
            Action::Stop(StopReason::HaltedInterruptsOff {
                vcpu: 0,
                cs: 0x10,
                rip: 0x1234
            })
        );
    }

    #[test]
    fn a_bsp_halted_with_interrupts_off_waits_for_an_nmi_that_can_come() {
        let mut c = ctx(false, false);
        c.nmi_may_come = true;
        assert_eq!(
            handle_exit(0, Exit::Halt, &mut c),
            Action::WaitInterruptsOff { nmi_blocked: false }
        );
        // Inside its NMI handler (NMIs blocked until IRET) nothing but INIT could wake it.
        if let Ok(h) = &mut c.halt {
            h.nmi_blocked = true;
        }
        assert!(matches!(
            handle_exit(0, Exit::Halt, &mut c),
            Action::Stop(StopReason::HaltedInterruptsOff { vcpu: 0, .. })
        ));
        assert_eq!(
            handle_exit(1, Exit::Halt, &mut c),
            Action::WaitInterruptsOff { nmi_blocked: true }
        );
    }

    #[test]
    fn halt_with_interrupts_on_waits() {
        assert_eq!(
            handle_exit(0, Exit::Halt, &mut ctx(false, true)),
            Action::WaitForInterrupt
        );
    }

    #[test]
    fn halt_after_a_stop_request_just_leaves() {
        // A guest that writes 0xf4 and then halts has exited, not halted.
        assert_eq!(
            handle_exit(0, Exit::Halt, &mut ctx(true, false)),
            Action::Leave
        );
    }

    #[test]
    fn halt_state_errors_become_host_errors() {
        let mut c = Fake {
            stopping: false,
            halt: Err("KVM_GET_REGS failed".into()),
            nmi_may_come: false,
        };
        assert!(matches!(
            handle_exit(0, Exit::Halt, &mut c),
            Action::Stop(StopReason::HostError(_))
        ));
    }

    #[test]
    fn stopped_leaves_only_when_stopping() {
        assert_eq!(
            handle_exit(0, Exit::Stopped, &mut ctx(true, true)),
            Action::Leave
        );
        assert_eq!(
            handle_exit(0, Exit::Stopped, &mut ctx(false, true)),
            Action::Continue
        );
        assert_eq!(
            handle_exit(0, Exit::SingleStep, &mut ctx(false, true)),
            Action::Continue
        );
    }

    #[test]
    fn shutdown_is_a_triple_fault_with_state() {
        let s = Box::new(CpuState::boot_sector());
        assert_eq!(
            handle_exit(0, Exit::Shutdown(s.clone()), &mut ctx(false, true)),
            Action::Stop(StopReason::TripleFault(s))
        );
    }

    #[test]
    fn system_events_map_to_reasons() {
        let c = &mut ctx(false, true);
        assert_eq!(
            handle_exit(0, Exit::SystemEvent(SystemEventKind::Shutdown), c),
            Action::Stop(StopReason::PowerOff)
        );
        assert!(matches!(
            handle_exit(0, Exit::SystemEvent(SystemEventKind::Reset), c),
            Action::Stop(StopReason::Reset(_))
        ));
        assert!(matches!(
            handle_exit(0, Exit::SystemEvent(SystemEventKind::Other(9)), c),
            Action::Stop(StopReason::HostError(_))
        ));
    }

    #[test]
    fn failures_stop_with_the_report() {
        let f = Box::new(VcpuFailure {
            what: "KVM internal error".into(),
            detail: "suberror 1".into(),
            insn_bytes: vec![0xcc],
            disassembly: Some("int3".into()),
            state: CpuState::default(),
        });
        assert_eq!(
            handle_exit(0, Exit::Failed(f.clone()), &mut ctx(false, true)),
            Action::Stop(StopReason::VcpuFailed(f))
        );
    }
}
