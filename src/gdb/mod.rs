//! A gdbstub on every backend (`janus run --gdb tcp::PORT`, `-s`, `-S`): gdb's remote serial
//! protocol through the `gdbstub` crate, over the debugger seam of the backend contract
//! (breakpoints, single-step, `state`/`set_state`, guest-virtual memory).
//!
//! - [`hub`]: all-stop coordination with the vCPU threads, which own their vCPUs;
//! - [`target`]: the `gdbstub` target (one gdb thread per vCPU) and its event loop;
//! - [`regs`]: the `i386:x86-64` register description and its conversion to [`CpuState`].
//!
//! The stub listens on its own thread for the whole run, one debugger at a time: a debugger
//! that connects stops the machine; one that detaches leaves it running with its breakpoints
//! removed; one that just closes the connection (`disconnect`) leaves it stopped, so that the
//! next one (whose register description follows the guest's mode then) takes over there.
//!
//! [`CpuState`]: janus_accel::CpuState

pub mod hub;
pub mod regs;
pub mod target;

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gdbstub::stub::{DisconnectReason, GdbStub};

pub use hub::Hub;

use crate::control::StopReason;

/// QEMU's `-s`: `--gdb tcp::1234`.
pub const DEFAULT_SPEC: &str = "tcp::1234";

/// What is wrong with `--gdb`.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// The address is not `tcp::PORT` or `tcp:HOST:PORT`.
    #[error("--gdb {0:?}: expected tcp::PORT or tcp:HOST:PORT (e.g. tcp::1234)")]
    Syntax(String),
    /// The address cannot be listened on.
    #[error("--gdb: cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// `tcp::PORT` (localhost) or `tcp:HOST:PORT` as a host and port.
///
/// # Errors
/// [`GdbError::Syntax`].
pub fn parse_spec(spec: &str) -> Result<(String, u16), GdbError> {
    let bad = || GdbError::Syntax(spec.to_string());
    let rest = spec.strip_prefix("tcp:").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((host.to_string(), port))
}

/// The debugger's socket, bound before the machine is built (so that a port in use is one
/// error line up front), and whether the first instruction waits for it (`-S`).
#[derive(Clone, Debug)]
pub struct GdbConfig {
    listener: Arc<TcpListener>,
    /// The address as bound (the port resolved when 0 was asked).
    pub addr: String,
    /// Hold every vCPU before its first instruction until a debugger resumes it.
    pub wait: bool,
}

impl GdbConfig {
    /// Listens on `spec` ([`parse_spec`]).
    ///
    /// # Errors
    /// Bad syntax, or an address that cannot be bound (a port in use).
    pub fn listen(spec: &str, wait: bool) -> Result<Self, GdbError> {
        let (host, port) = parse_spec(spec)?;
        let want = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let listener = TcpListener::bind(&want).map_err(|source| GdbError::Listen {
            addr: want.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_or(want, |a| a.to_string());
        Ok(GdbConfig {
            listener: Arc::new(listener),
            addr,
            wait,
        })
    }
}

/// The running stub, as the machine's run sees it.
#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    connected: Arc<AtomicBool>,
}

impl Session {
    /// The hub the vCPU threads call.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Once the machine stopped: gives a connected gdb a moment to hear of it.
    pub fn finish(&self) {
        self.hub.wait_exit_reported(
            Duration::from_secs(2),
            self.connected.load(Ordering::SeqCst),
        );
    }
}

/// Starts the stub's thread for a machine of `hub.vcpus()` vCPUs on backend `backend`.
///
/// # Errors
/// The thread cannot be started.
pub fn start(config: &GdbConfig, hub: Arc<Hub>, backend: &str) -> std::io::Result<Session> {
    let connected = Arc::new(AtomicBool::new(false));
    let kvm = backend == janus_accel::AccelKind::Kvm.name();
    let listener = config.listener.clone();
    let (h, c) = (hub.clone(), connected.clone());
    std::thread::Builder::new()
        .name("gdbstub".into())
        .spawn(move || serve(&listener, &h, &c, kvm))?;
    Ok(Session { hub, connected })
}

/// Accepts debuggers one after the other until the machine stops.
fn serve(listener: &TcpListener, hub: &Arc<Hub>, connected: &AtomicBool, kvm: bool) {
    let control = hub.control().clone();
    for stream in listener.incoming() {
        if control.stopping() {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        connected.store(true, Ordering::SeqCst);
        let ended = session(stream, hub, kvm);
        connected.store(false, Ordering::SeqCst);
        if ended {
            hub.exit_reported();
            return;
        }
    }
}

/// One debugger's session; true when it ended with the machine (or killed it).
fn session(stream: TcpStream, hub: &Arc<Hub>, kvm: bool) -> bool {
    let control = hub.control().clone();
    // gdb expects a stopped target when it connects.
    hub.interrupt();
    loop {
        if control.stopping() {
            return true;
        }
        if hub.stops().recv_timeout(Duration::from_millis(50)).is_ok() {
            break;
        }
    }
    let Ok(conn) = target::Conn::new(stream) else {
        hub.release_all();
        return false;
    };
    let closer = conn.out_clone();
    let mut t = target::GdbTarget::new(hub.clone(), kvm);
    let result = GdbStub::new(conn).run_blocking::<target::EventLoop>(&mut t);
    let ended = match result {
        Ok(DisconnectReason::TargetExited(_)) | Ok(DisconnectReason::TargetTerminated(_)) => true,
        Ok(DisconnectReason::Kill) => {
            control.request_stop(StopReason::HostError("killed from gdb".into()));
            true
        }
        _ if control.stopping() => true,
        // gdb detached: the guest runs on without a debugger.
        Ok(DisconnectReason::Disconnect) => {
            t.detach();
            false
        }
        // The connection ended without a detach (gdb's `disconnect`, a crashed gdb): the guest
        // stays stopped for the next debugger, whose description follows the mode the guest
        // is in by then. Ctrl-C, a signal or --timeout still end the run.
        Err(_) => {
            t.clear_breakpoints();
            false
        }
    };
    if let Some(s) = closer {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_qemu_writes_them() {
        assert_eq!(parse_spec("tcp::1234").unwrap(), ("127.0.0.1".into(), 1234));
        assert_eq!(parse_spec("tcp:0.0.0.0:9").unwrap(), ("0.0.0.0".into(), 9));
        assert_eq!(parse_spec("tcp:[::1]:7").unwrap(), ("::1".into(), 7));
        for bad in [
            "1234",
            "tcp:1234",
            "tcp::",
            "tcp::99999",
            "udp::1",
            "tcp::x",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_in_use_is_refused() {
        let a = GdbConfig::listen("tcp::0", false).unwrap();
        let port = a.addr.rsplit_once(':').unwrap().1;
        let e = GdbConfig::listen(&format!("tcp::{port}"), false).unwrap_err();
        assert!(e.to_string().contains("cannot listen"), "{e}");
    }
}
