//! The `gdbstub` target: gdb's requests turned into jobs for the parked vCPUs ([`Hub`]), one
//! gdb thread per vCPU (thread id = vCPU index + 1), and the event loop that waits for either a
//! stop or a byte from gdb (Ctrl-C).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, select};
use gdbstub::common::{Signal, Tid};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use janus_accel::debug::MAX_HW_BREAKPOINTS;
use janus_accel::{Breakpoint, BreakpointKind};

use super::hub::{Hub, Resume, Stop, StopWhy};
use super::regs::{GdbRegs, X86_64Janus, description, mode_advice};

/// The connection to gdb: writes go to the socket (buffered until gdbstub flushes), reads come
/// from a reader thread, so that the event loop can wait for a byte and a stop at once.
#[derive(Debug)]
pub struct Conn {
    out: TcpStream,
    buf: Vec<u8>,
    rx: Receiver<Option<u8>>,
    peeked: Option<u8>,
}

impl Conn {
    /// Wraps an accepted connection and starts its reader thread.
    ///
    /// # Errors
    /// The socket cannot be duplicated or the thread cannot start.
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        let _ = stream.set_nodelay(true);
        // A debugger that stops reading must not block the stub forever.
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut input = stream.try_clone()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("gdb-reader".into())
            .spawn(move || {
                let mut b = [0u8; 4096];
                loop {
                    match Read::read(&mut input, &mut b) {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(None);
                            return;
                        }
                        Ok(n) => {
                            if b[..n].iter().any(|&x| tx.send(Some(x)).is_err()) {
                                return;
                            }
                        }
                    }
                }
            })?;
        Ok(Conn {
            out: stream,
            buf: Vec::new(),
            rx,
            peeked: None,
        })
    }

    /// A second handle on the socket, to close it (which also ends the reader thread) once
    /// the session is over.
    pub fn out_clone(&self) -> Option<TcpStream> {
        self.out.try_clone().ok()
    }

    fn gone() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "gdb closed the connection",
        )
    }
}

impl Connection for Conn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.buf.push(byte);
        Ok(())
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        let r = Write::write_all(&mut self.out, &self.buf);
        self.buf.clear();
        r?;
        Write::flush(&mut self.out)
    }
}

impl ConnectionExt for Conn {
    fn read(&mut self) -> Result<u8, Self::Error> {
        if let Some(b) = self.peeked.take() {
            return Ok(b);
        }
        match self.rx.recv() {
            Ok(Some(b)) => Ok(b),
            _ => Err(Self::gone()),
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        if self.peeked.is_none() {
            match self.rx.try_recv() {
                Ok(Some(b)) => self.peeked = Some(b),
                Ok(None) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(Self::gone());
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
        }
        Ok(self.peeked)
    }
}

/// The machine as gdb debugs it.
#[derive(Debug)]
pub struct GdbTarget {
    hub: Arc<Hub>,
    /// The backend is KVM (software breakpoints become hardware ones while DR0-DR3 last).
    kvm: bool,
    /// gdb's software (Z0) and hardware (Z1) breakpoints, by linear address.
    sw: Vec<u64>,
    hw: Vec<u64>,
    /// The resume actions gdb gave since the last resume, by vCPU.
    actions: Vec<Option<Resume>>,
    /// gdb's scheduler locking: vCPUs without an action stay parked.
    locked: bool,
    /// The vCPU of the last stop (for `monitor` commands).
    current: usize,
    /// The target description of this session: for the mode vCPU 0 was in when gdb connected
    /// ([`description`]); `narrow` when it has the 32-bit registers.
    xml: String,
    narrow: bool,
}

fn tid(vcpu: usize) -> Tid {
    NonZeroUsize::new(vcpu + 1).unwrap_or(NonZeroUsize::MIN)
}

fn vcpu_of(tid: Tid) -> usize {
    tid.get() - 1
}

impl GdbTarget {
    /// A target over the machine's vCPUs; `kvm` when the backend is KVM.
    pub fn new(hub: Arc<Hub>, kvm: bool) -> Self {
        let nr = hub.vcpus();
        let bits = hub
            .with_vcpu(0, |v| v.state().map(|s| s.code_bitness()))
            .and_then(Result::ok)
            .unwrap_or(64);
        GdbTarget {
            xml: description(bits),
            narrow: bits != 64,
            hub,
            kvm,
            sw: Vec::new(),
            hw: Vec::new(),
            actions: vec![None; nr],
            locked: false,
            current: 0,
        }
    }

    /// The breakpoint set every vCPU gets. On KVM a software breakpoint is an INT3 written
    /// into memory by each vCPU (and on kvm_pvm the instruction emulator, which runs ring-0
    /// and real-mode code, takes it as the guest's own #BP): gdb's software breakpoints use
    /// the debug-address registers there while they last, and INT3 only beyond, on one vCPU.
    fn breakpoint_set(&self) -> Result<Vec<Breakpoint>, &'static str> {
        let mut set: Vec<Breakpoint> = self
            .hw
            .iter()
            .map(|&addr| Breakpoint {
                addr,
                kind: BreakpointKind::Hardware,
            })
            .collect();
        for &addr in &self.sw {
            let hw_free = set
                .iter()
                .filter(|b| b.kind == BreakpointKind::Hardware)
                .count()
                < MAX_HW_BREAKPOINTS;
            let kind = if self.kvm && hw_free {
                BreakpointKind::Hardware
            } else if self.kvm && self.hub.vcpus() > 1 {
                return Err("more than 4 breakpoints on KVM with several vCPUs");
            } else {
                BreakpointKind::Software
            };
            set.push(Breakpoint { addr, kind });
        }
        Ok(set)
    }

    /// Hands the breakpoint set to every vCPU.
    fn apply_breakpoints(&mut self) -> Result<(), String> {
        let set = self.breakpoint_set()?;
        for i in 0..self.hub.vcpus() {
            let set = set.clone();
            match self.hub.with_vcpu(i, move |v| v.set_breakpoints(&set)) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(format!("vCPU {i}: {e}")),
                None => return Err(format!("vCPU {i} does not answer")),
            }
        }
        Ok(())
    }

    /// The stop reason gdb is told for `stop`.
    fn stop_reason(&mut self, stop: Stop) -> MultiThreadStopReason<u64> {
        self.current = stop.vcpu;
        let t = tid(stop.vcpu);
        match stop.why {
            StopWhy::Interrupted => MultiThreadStopReason::SignalWithThread {
                tid: t,
                signal: Signal::SIGINT,
            },
            StopWhy::Step => MultiThreadStopReason::SignalWithThread {
                tid: t,
                signal: Signal::SIGTRAP,
            },
            StopWhy::Breakpoint(addr) if self.hw.contains(&addr) && !self.sw.contains(&addr) => {
                MultiThreadStopReason::HwBreak(t)
            }
            StopWhy::Breakpoint(_) => MultiThreadStopReason::SwBreak(t),
        }
    }

    /// The debugger leaves: breakpoints off, every vCPU released.
    pub fn detach(&mut self) {
        self.clear_breakpoints();
        self.hub.release_all();
    }

    /// Removes every breakpoint from every vCPU.
    pub fn clear_breakpoints(&mut self) {
        self.sw.clear();
        self.hw.clear();
        let _ = self.apply_breakpoints();
    }

    fn exit_status(&self) -> u8 {
        self.hub
            .control()
            .reason()
            .map_or(0, |r| r.exit_status() as u8)
    }
}

fn nonfatal<T>(_: impl std::fmt::Display) -> TargetResult<T, GdbTarget> {
    Err(TargetError::NonFatal)
}

impl Target for GdbTarget {
    type Arch = X86_64Janus;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

impl TargetDescriptionXmlOverride for GdbTarget {
    fn target_description_xml(
        &self,
        _annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let xml = self.xml.as_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
        let n = length.min(buf.len()).min(xml.len() - start);
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}

impl MultiThreadBase for GdbTarget {
    fn read_registers(&mut self, regs: &mut GdbRegs, tid: Tid) -> TargetResult<(), Self> {
        match self.hub.with_vcpu(vcpu_of(tid), |v| v.state()) {
            Some(Ok(s)) => {
                *regs = GdbRegs::from_state(&s);
                regs.narrow = self.narrow;
                Ok(())
            }
            Some(Err(e)) => nonfatal(e),
            None => nonfatal("no answer"),
        }
    }

    fn write_registers(&mut self, regs: &GdbRegs, tid: Tid) -> TargetResult<(), Self> {
        let regs = regs.clone();
        let r = self.hub.with_vcpu(vcpu_of(tid), move |v| {
            let mut s = v.state()?;
            regs.apply(&mut s);
            v.set_state(&s)
        });
        match r {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => nonfatal(e),
            None => nonfatal("no answer"),
        }
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let len = data.len();
        let r = self.hub.with_vcpu(vcpu_of(tid), move |v| {
            let mut buf = vec![0u8; len];
            v.read_virt(start, &mut buf).map(|n| {
                buf.truncate(n);
                buf
            })
        });
        match r {
            Some(Ok(buf)) if !buf.is_empty() => {
                data[..buf.len()].copy_from_slice(&buf);
                Ok(buf.len())
            }
            Some(Ok(_)) => nonfatal("not mapped"),
            Some(Err(e)) => nonfatal(e),
            None => nonfatal("no answer"),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        let data = data.to_vec();
        let len = data.len();
        match self
            .hub
            .with_vcpu(vcpu_of(tid), move |v| v.write_virt(start, &data))
        {
            Some(Ok(n)) if n == len => Ok(()),
            Some(Ok(_)) => nonfatal("not mapped"),
            Some(Err(e)) => nonfatal(e),
            None => nonfatal("no answer"),
        }
    }

    fn list_active_threads(&mut self, each: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        (0..self.hub.vcpus()).for_each(|i| each(tid(i)));
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for GdbTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        let default = if self.locked {
            Resume::Stay
        } else {
            Resume::Continue
        };
        let actions: Vec<Resume> = self.actions.iter().map(|a| a.unwrap_or(default)).collect();
        self.hub.resume(&actions);
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.actions.iter_mut().for_each(|a| *a = None);
        self.locked = false;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        if let Some(a) = self.actions.get_mut(vcpu_of(tid)) {
            *a = Some(Resume::Continue);
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSingleStep for GdbTarget {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        if let Some(a) = self.actions.get_mut(vcpu_of(tid)) {
            *a = Some(Resume::Step);
        }
        Ok(())
    }
}

impl MultiThreadSchedulerLocking for GdbTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        self.locked = true;
        Ok(())
    }
}

impl Breakpoints for GdbTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

/// Adds `addr` to `list` and applies the set; takes it back out if a vCPU refuses.
fn add_breakpoint(t: &mut GdbTarget, hw: bool, addr: u64) -> TargetResult<bool, GdbTarget> {
    let list = if hw { &mut t.hw } else { &mut t.sw };
    if list.contains(&addr) {
        return Ok(true);
    }
    list.push(addr);
    if t.apply_breakpoints().is_ok() {
        return Ok(true);
    }
    let list = if hw { &mut t.hw } else { &mut t.sw };
    list.retain(|&a| a != addr);
    let _ = t.apply_breakpoints();
    Ok(false)
}

fn remove_breakpoint(t: &mut GdbTarget, hw: bool, addr: u64) -> TargetResult<bool, GdbTarget> {
    let list = if hw { &mut t.hw } else { &mut t.sw };
    let before = list.len();
    list.retain(|&a| a != addr);
    if list.len() == before {
        return Ok(false);
    }
    Ok(t.apply_breakpoints().is_ok())
}

impl SwBreakpoint for GdbTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        add_breakpoint(self, false, addr)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        remove_breakpoint(self, false, addr)
    }
}

impl HwBreakpoint for GdbTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.hw.len() >= MAX_HW_BREAKPOINTS {
            return Ok(false);
        }
        add_breakpoint(self, true, addr)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        remove_breakpoint(self, true, addr)
    }
}

const MONITOR_HELP: &str = "janus monitor commands:\n  \
     mode   the current vCPU's execution mode and the `set architecture` that disassembles it\n  \
     state  the current vCPU's whole state (segment bases and limits, GDTR, IDTR, CRs, EFER)\n";

impl MonitorCmd for GdbTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(cmd);
        let state = || self.hub.with_vcpu(self.current, |v| v.state());
        match cmd.trim() {
            "mode" => match state() {
                Some(Ok(s)) => {
                    let (mode, arch) = mode_advice(&s);
                    gdbstub::outputln!(
                        out,
                        "vCPU {}: {mode} mode, cs:rip {:04x}:{:x}, linear {:#x}; gdb: set architecture {arch}",
                        self.current,
                        s.cs.selector,
                        s.rip,
                        s.linear_rip()
                    );
                }
                _ => gdbstub::outputln!(out, "vCPU {} does not answer", self.current),
            },
            "state" => match state() {
                Some(Ok(s)) => gdbstub::outputln!(out, "{s}"),
                _ => gdbstub::outputln!(out, "vCPU {} does not answer", self.current),
            },
            _ => gdbstub::output!(out, "{MONITOR_HELP}"),
        }
        Ok(())
    }
}

/// The blocking event loop of one gdb session.
#[derive(Debug)]
pub enum EventLoop {}

/// How often a running machine is checked for having stopped on its own.
const POLL: Duration = Duration::from_millis(50);

impl BlockingEventLoop for EventLoop {
    type Target = GdbTarget;
    type Connection = Conn;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut GdbTarget,
        conn: &mut Conn,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<String, std::io::Error>> {
        if let Some(b) = conn.peeked.take() {
            return Ok(Event::IncomingData(b));
        }
        let stops = target.hub.stops().clone();
        loop {
            select! {
                recv(conn.rx) -> b => return match b {
                    Ok(Some(b)) => Ok(Event::IncomingData(b)),
                    _ => Err(WaitForStopReasonError::Connection(Conn::gone())),
                },
                recv(stops) -> s => if let Ok(s) = s {
                    return Ok(Event::TargetStopped(target.stop_reason(s)));
                },
                default(POLL) => {
                    if target.hub.control().stopping() {
                        return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(
                            target.exit_status(),
                        )));
                    }
                }
            }
        }
    }

    fn on_interrupt(target: &mut GdbTarget) -> Result<Option<Self::StopReason>, String> {
        target.hub.interrupt();
        Ok(None)
    }
}
