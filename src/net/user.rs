//! User-mode networking through `passt` (Debian package `passt`): janus starts one passt per
//! NIC with one end of a socket pair as its descriptor 0 (`--fd 0`) and exchanges frames with it
//! in QEMU's stream format, each frame preceded by its length (4 bytes, big-endian). passt
//! answers ARP and DHCP itself, maps connections to the gateway onto the host's loopback, and
//! turns guest TCP/UDP/ICMP into ordinary host sockets, so no privilege is needed; `hostfwd`
//! becomes its `--tcp-ports`/`--udp-ports`.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{MAX_FRAME, NetBackend, NetError, Proto, UserSpec};

/// A running passt and the socket to it.
#[derive(Debug)]
pub struct UserNet {
    sock: UnixStream,
    child: Child,
    /// Bytes read from passt; `rx[start..end]` is not handed out yet.
    rx: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Where passt is: `$JANUS_PASST`, else `passt` on PATH.
fn passt_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("JANUS_PASST") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("passt"))
        .find(|p| p.is_file())
}

/// passt's command line for `spec`.
fn passt_args(spec: &UserSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "--foreground",
        "--quiet",
        "--ipv4-only",
        "--one-off",
        "--fd",
        "0",
        "--netmask",
        "24",
    ]
    .map(String::from)
    .to_vec();
    let ip = |a: &str, v: std::net::Ipv4Addr| [a.to_string(), v.to_string()];
    args.extend(ip("--address", spec.guest));
    args.extend(ip("--gateway", spec.gateway));
    args.extend(ip("--dns-forward", spec.dns));
    args.extend(ip("--dns", spec.dns));
    for f in &spec.hostfwd {
        let addr = f.host_addr.map(|a| format!("{a}/")).unwrap_or_default();
        let flag = if f.proto == Proto::Tcp {
            "--tcp-ports"
        } else {
            "--udp-ports"
        };
        args.push(flag.into());
        args.push(format!("{addr}{}:{}", f.host_port, f.guest_port));
    }
    args
}

impl UserNet {
    /// Starts passt for `spec`.
    ///
    /// # Errors
    /// [`NetError::PasstMissing`] when passt is not installed, [`NetError::Passt`] when it does
    /// not start or exits at once (a hostfwd port already in use, no network interface...).
    pub fn start(spec: &UserSpec) -> Result<UserNet, NetError> {
        let path = passt_path().ok_or(NetError::PasstMissing)?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| NetError::Passt(format!("socket pair: {e}")))?;
        let mut child = Command::new(&path)
            .args(passt_args(spec))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => NetError::PasstMissing,
                _ => NetError::Passt(format!("{}: {e}", path.display())),
            })?;
        // passt checks its options and binds the forwarded ports within milliseconds; one that
        // fails exits with a status (its reason went to syslog).
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(5));
            if let Ok(Some(status)) = child.try_wait() {
                let ports = spec
                    .hostfwd
                    .iter()
                    .map(|f| f.host_port.to_string())
                    .collect::<Vec<_>>();
                return Err(NetError::Passt(format!(
                    "exited at once ({status}): a hostfwd port in use ({}) or no usable host interface?",
                    if ports.is_empty() {
                        "none".into()
                    } else {
                        ports.join(", ")
                    }
                )));
            }
        }
        ours.set_nonblocking(true)
            .map_err(|e| NetError::Passt(format!("socket: {e}")))?;
        Ok(UserNet {
            sock: ours,
            child,
            rx: vec![0; 4 * (MAX_FRAME + 4)].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// Waits (at most 1 s) until passt can take more bytes.
    fn wait_writable(&self) -> std::io::Result<bool> {
        let ep = Epoll::new()?;
        ep.ctl(
            ControlOperation::Add,
            self.sock.as_raw_fd(),
            EpollEvent::new(EventSet::OUT, 0),
        )?;
        let mut ev = [EpollEvent::default()];
        Ok(ep.wait(1000, &mut ev)? > 0)
    }

    fn io_err(&self, source: std::io::Error) -> NetError {
        NetError::Io {
            label: "user".into(),
            source,
        }
    }
}

impl NetBackend for UserNet {
    fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes();
        let mut msg = Vec::with_capacity(4 + frame.len());
        msg.extend_from_slice(&len);
        msg.extend_from_slice(frame);
        let mut done = 0;
        // A frame is sent whole or the stream would lose its framing: wait while passt is busy.
        while done < msg.len() {
            match self.sock.write(&msg[done..]) {
                Ok(0) => return Err(NetError::Closed("user (passt)".into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !self.wait_writable().map_err(|e| self.io_err(e))? {
                        return Err(NetError::Closed("user (passt not reading)".into()));
                    }
                }
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        loop {
            let pending = &self.rx[self.start..self.end];
            if pending.len() >= 4 {
                let len =
                    u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
                if len > MAX_FRAME {
                    return Err(NetError::Passt(format!(
                        "sent a frame of {len} bytes: stream out of step"
                    )));
                }
                if pending.len() >= 4 + len {
                    let at = self.start + 4;
                    self.start = at + len;
                    if len <= buf.len() {
                        buf[..len].copy_from_slice(&self.rx[at..at + len]);
                        return Ok(Some(len));
                    }
                    continue; // Too long for the guest's buffer: dropped.
                }
            }
            // Room for at least one whole frame after `end`, then read what passt has.
            if self.rx.len() - self.end < MAX_FRAME + 4 {
                self.rx.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.sock.read(&mut self.rx[self.end..]) {
                Ok(0) => return Err(NetError::Closed("user (passt exited)".into())),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn label(&self) -> &str {
        "user"
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests;
