//! The TAP backend: a Linux TAP interface (`/dev/net/tun`, IFF_TAP | IFF_NO_PI), one frame per
//! read and write. Attaching needs root or CAP_NET_ADMIN (or a TAP made beforehand and owned
//! by the user, `ip tuntap add ... user NAME`).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{NetBackend, NetError};

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, the flags, padding to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// An attached TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    label: String,
}

impl Tap {
    /// Attaches to (or creates) TAP interface `ifname`, non-blocking.
    ///
    /// # Errors
    /// [`NetError::TapOpen`] with the system's error and, for a permission error, the hint.
    pub fn open(ifname: &str) -> Result<Tap, NetError> {
        let fail = |source: std::io::Error| NetError::TapOpen {
            ifname: ifname.to_string(),
            hint: match source.kind() {
                ErrorKind::PermissionDenied => {
                    " (a TAP needs root or CAP_NET_ADMIN, or a TAP made with 'ip tuntap add NAME mode tap user YOU')"
                }
                ErrorKind::NotFound => " (no /dev/net/tun: load the tun module)",
                _ => "",
            },
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(fail)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..ifname.len().min(15)]
            .copy_from_slice(&ifname.as_bytes()[..ifname.len().min(15)]);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is (repr(C), 40
        // bytes, the name NUL-terminated); `file` is an open /dev/net/tun descriptor.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        Ok(Tap {
            file,
            label: format!("tap:{ifname}"),
        })
    }
}

impl NetBackend for Tap {
    fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        match self.file.write(frame) {
            Ok(_) => Ok(()),
            // The interface is down or its queue full: the frame is lost, as on a wire.
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock)
                    || e.raw_os_error() == Some(libc::EIO) =>
            {
                Ok(())
            }
            Err(source) => Err(NetError::Io {
                label: self.label.clone(),
                source,
            }),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        match self.file.read(buf) {
            Ok(0) => Err(NetError::Closed(self.label.clone())),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Ok(None)
            }
            Err(source) => Err(NetError::Io {
                label: self.label.clone(),
                source,
            }),
        }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn label(&self) -> &str {
        &self.label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_name_or_no_permission_is_one_line() {
        // A name with '/' is refused by the kernel (EINVAL) even for root; without root the
        // open itself fails with the hint. Either way: an error naming the interface.
        let e = Tap::open("bad/name").unwrap_err().to_string();
        assert!(
            e.starts_with("cannot open TAP interface 'bad/name': "),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
