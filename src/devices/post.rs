//! The POST diagnostic port (0x80 by default, `--post-port`): firmware writes progress codes
//! here; it keeps the last one, counts writes, and can log every code (`--post file:PATH`).
//! Guests also use it as a cheap I/O delay.

use std::io::Write;

use crate::bus::BusDevice;
use crate::sink::Sink;

/// The POST port.
#[derive(Default)]
pub struct Post {
    /// The last code written.
    pub last: u8,
    /// Writes so far.
    pub writes: u64,
    /// Where every code is logged, one `0xNN` line each.
    log: Option<Sink>,
}

impl std::fmt::Debug for Post {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Post")
            .field("last", &self.last)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

impl Post {
    /// A POST port that logs every code to `log`.
    pub fn with_log(log: Sink) -> Self {
        Post {
            log: Some(log),
            ..Post::default()
        }
    }

    /// The last code written, if any was.
    pub fn last_code(&self) -> Option<u8> {
        (self.writes > 0).then_some(self.last)
    }

    /// Writes out what the log holds.
    pub fn flush(&mut self) {
        if let Some(l) = &mut self.log {
            let _ = l.flush();
        }
    }
}

impl BusDevice for Post {
    fn label(&self) -> &str {
        "post"
    }
    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        data.fill(self.last);
    }
    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        self.last = data[0];
        self.writes += 1;
        if let Some(l) = &mut self.log {
            let _ = writeln!(l, "0x{:02x}", data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn keeps_last_code() {
        let mut p = Post::default();
        assert_eq!(p.last_code(), None);
        p.write(0, 0, &[0x55]);
        p.write(0, 0, &[0xaa]);
        let mut b = [0];
        p.read(0, 0, &mut b);
        assert_eq!((b[0], p.writes, p.last_code()), (0xaa, 2, Some(0xaa)));
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_every_code() {
        let out = Shared::default();
        let mut p = Post::with_log(Box::new(out.clone()));
        p.write(0, 0, &[0x01]);
        p.write(0, 0, &[0xfe]);
        assert_eq!(&*out.0.lock().unwrap(), b"0x01\n0xfe\n");
    }
}
