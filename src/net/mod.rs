//! Network backends: where a guest NIC's Ethernet frames go on the host. A [`NetBackend`] sends
//! and receives whole frames without blocking and gives a file descriptor to wait on, so a
//! device thread (never a vCPU) drives it. Two kinds: a TAP interface ([`tap`], needs root or
//! CAP_NET_ADMIN) and user-mode networking ([`user`], no privileges: a `passt` process does
//! DHCP, ARP and the TCP/UDP/ICMP translation to host sockets).

pub mod spec;
pub mod tap;
pub mod user;

use std::os::fd::RawFd;

pub use spec::{BackendSpec, HostFwd, NetdevSpec, Proto, UserSpec};

/// Why a network backend could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A `--netdev`/`--nic` argument that does not parse.
    #[error("--netdev '{arg}': {why}")]
    Spec {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        why: String,
    },
    /// /dev/net/tun could not be opened or the interface not attached.
    #[error("cannot open TAP interface '{ifname}': {source}{hint}")]
    TapOpen {
        /// The interface name.
        ifname: String,
        /// The failed system call's error.
        source: std::io::Error,
        /// A hint for the usual cause.
        hint: &'static str,
    },
    /// `passt` is not installed.
    #[error(
        "user networking needs the passt program (Debian package 'passt'), not found on PATH \
         (or set JANUS_PASST=/path/to/passt)"
    )]
    PasstMissing,
    /// `passt` could not be started or stopped at once.
    #[error("user networking: passt {0}")]
    Passt(String),
    /// The card could not be plugged in (no free PCI slot, no thread).
    #[error("--netdev id={0}: {1}")]
    Plug(String, String),
    /// The backend went away (TAP deleted, passt exited).
    #[error("{0}: backend closed")]
    Closed(String),
    /// A frame could not be sent or received.
    #[error("{label}: {source}")]
    Io {
        /// The backend's label.
        label: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A host-side network backend for one guest NIC.
pub trait NetBackend: Send + std::fmt::Debug {
    /// Sends one Ethernet frame (destination MAC first, no virtio header). A frame the host
    /// cannot take right now is dropped, as a full wire drops it.
    fn send(&mut self, frame: &[u8]) -> Result<(), NetError>;
    /// Receives one frame into `buf` without blocking: `Ok(None)` when none is waiting. A frame
    /// longer than `buf` is dropped.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError>;
    /// A descriptor that turns readable when [`NetBackend::recv`] may have a frame.
    fn fd(&self) -> RawFd;
    /// A short name for messages (`tap:tap0`, `user`).
    fn label(&self) -> &str;
}

/// Opens the backend that `spec` describes.
///
/// # Errors
/// [`NetError::TapOpen`] when the TAP cannot be attached, [`NetError::PasstMissing`] or
/// [`NetError::Passt`] when user networking cannot start.
pub fn open(spec: &NetdevSpec) -> Result<Box<dyn NetBackend>, NetError> {
    Ok(match &spec.backend {
        BackendSpec::Tap { ifname } => Box::new(tap::Tap::open(ifname)?),
        BackendSpec::User(user) => Box::new(user::UserNet::start(user)?),
    })
}

/// The largest frame a backend hands over (a 64 KiB IP packet plus its Ethernet header).
pub const MAX_FRAME: usize = 65_536 + 14;
