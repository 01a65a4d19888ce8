//! The POST diagnostic port (0x80): firmware writes progress codes here; it keeps the last one
//! and counts writes. Guests also use it as a cheap I/O delay.

use crate::bus::BusDevice;

/// The POST port.
#[derive(Debug, Default)]
pub struct Post {
    /// The last code written.
    pub last: u8,
    /// Writes so far.
    pub writes: u64,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_code() {
        let mut p = Post::default();
        p.write(0, 0, &[0x55]);
        p.write(0, 0, &[0xaa]);
        let mut b = [0];
        p.read(0, 0, &mut b);
        assert_eq!((b[0], p.writes), (0xaa, 2));
    }
}
