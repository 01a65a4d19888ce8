//! The Bochs/QEMU debug console (port 0xe9): bytes written are printed; a read returns 0xe9 so
//! guests can detect it.

use std::io::Write;

use crate::bus::BusDevice;
use crate::sink::Sink;

/// The debug console.
pub struct DebugCon {
    out: Sink,
}

impl std::fmt::Debug for DebugCon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DebugCon")
    }
}

impl DebugCon {
    /// A debug console writing to `out`.
    pub fn new(out: Sink) -> Self {
        DebugCon { out }
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

impl BusDevice for DebugCon {
    fn label(&self) -> &str {
        "debugcon"
    }
    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xe9);
    }
    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        let _ = self.out.write_all(&data[..1]);
        if data[0] == b'\n' {
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_its_port_number() {
        let mut d = DebugCon::new(Box::new(std::io::sink()));
        let mut b = [0u8; 2];
        d.read(0, 0, &mut b);
        assert_eq!(b, [0xe9, 0xe9]);
        d.write(0, 0, b"x");
    }
}
