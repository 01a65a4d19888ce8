//! The debug-exit port (0xf4): a byte written there ends the machine with that byte as janus's
//! exit status (the guest test protocol). Wider writes use their low byte.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::control::{Control, StopReason};

/// The debug-exit device.
#[derive(Debug)]
pub struct DebugExit {
    control: Arc<Control>,
}

impl DebugExit {
    /// A debug-exit port that stops the machine through `control`.
    pub fn new(control: Arc<Control>) -> Self {
        DebugExit { control }
    }
}

impl BusDevice for DebugExit {
    fn label(&self) -> &str {
        "debug-exit"
    }
    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        if let Some(&b) = data.first() {
            self.control.request_stop(StopReason::GuestExit(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_stops_with_the_byte() {
        let c = Arc::new(Control::new());
        let mut d = DebugExit::new(c.clone());
        d.write(0, 0, &[0x2a, 0x01]);
        assert_eq!(c.reason(), Some(StopReason::GuestExit(0x2a)));
    }
}
