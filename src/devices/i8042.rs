//! The i8042 keyboard controller (ports 0x60 and 0x64), enough for firmware and kernels to probe
//! it and to reset the machine with command 0xFE (pulse the reset line); and the PS/2 system
//! control port A (0x92), whose bit 0 also resets and bit 1 gates A20.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::control::{Control, StopReason};

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;

/// The controller's state, shared by its two ports.
#[derive(Debug)]
pub struct I8042 {
    control: Arc<Control>,
    out: VecDeque<u8>,
    config: u8,
    /// The command waiting for a data byte on port 0x60.
    pending: Option<u8>,
    last_was_cmd: bool,
    output_port: u8,
}

impl I8042 {
    /// A controller that resets the machine through `control`.
    pub fn new(control: Arc<Control>) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(I8042 {
            control,
            out: VecDeque::new(),
            config: 0x45,
            pending: None,
            last_was_cmd: false,
            output_port: 0x03,
        }))
    }

    fn status(&self) -> u8 {
        let obf = if self.out.is_empty() { 0 } else { STATUS_OBF };
        obf | STATUS_SYS | if self.last_was_cmd { STATUS_CMD } else { 0 }
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_cmd = true;
        match cmd {
            0x20 => self.out.push_back(self.config),
            0x60 | 0xd1 | 0xd2 | 0xd3 | 0xd4 => self.pending = Some(cmd),
            0xa7 | 0xa8 | 0xad | 0xae => {} // disable/enable ports
            0xa9 | 0xab => self.out.push_back(0x00), // port tests pass
            0xaa => self.out.push_back(0x55), // self-test passed
            0xd0 => self.out.push_back(self.output_port),
            0xfe => self
                .control
                .request_stop(StopReason::Reset("i8042 reset command 0xFE")),
            // Other pulse-output-line commands: only bit 0 (reset) matters.
            0xf0..=0xff if cmd & 1 == 0 => {
                self.control
                    .request_stop(StopReason::Reset("i8042 pulse of the reset line"));
            }
            _ => {}
        }
    }

    fn data_write(&mut self, v: u8) {
        self.last_was_cmd = false;
        match self.pending.take() {
            Some(0x60) => self.config = v,
            Some(0xd1) => {
                self.output_port = v;
                if v & 1 == 0 {
                    self.control
                        .request_stop(StopReason::Reset("i8042 output port reset bit"));
                }
            }
            Some(0xd2) | Some(0xd3) => self.out.push_back(v), // echo as if from a device
            _ => self.out.push_back(0xfe),                    // no keyboard attached: "resend"
        }
    }
}

/// One of the controller's ports, as a bus device.
#[derive(Debug)]
pub struct I8042Port {
    dev: Arc<Mutex<I8042>>,
    command_port: bool,
}

impl I8042Port {
    /// The data port (0x60).
    pub fn data(dev: Arc<Mutex<I8042>>) -> Self {
        I8042Port {
            dev,
            command_port: false,
        }
    }
    /// The status/command port (0x64).
    pub fn command(dev: Arc<Mutex<I8042>>) -> Self {
        I8042Port {
            dev,
            command_port: true,
        }
    }
}

impl BusDevice for I8042Port {
    fn label(&self) -> &str {
        if self.command_port {
            "i8042-cmd"
        } else {
            "i8042-data"
        }
    }
    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        let mut d = self.dev.lock().unwrap_or_else(|p| p.into_inner());
        let v = if self.command_port {
            d.status()
        } else {
            d.out.pop_front().unwrap_or(0)
        };
        data.fill(0);
        data[0] = v;
    }
    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        let mut d = self.dev.lock().unwrap_or_else(|p| p.into_inner());
        if self.command_port {
            d.command(data[0]);
        } else {
            d.data_write(data[0]);
        }
    }
}

/// System control port A (0x92): bit 0 = fast reset, bit 1 = A20 gate (always on in janus).
#[derive(Debug)]
pub struct Port92 {
    control: Arc<Control>,
    value: u8,
}

impl Port92 {
    /// The port, resetting through `control`.
    pub fn new(control: Arc<Control>) -> Self {
        Port92 {
            control,
            value: 0x02,
        }
    }
}

impl BusDevice for Port92 {
    fn label(&self) -> &str {
        "port92"
    }
    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.value;
    }
    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        self.value = data[0] & 0x02 | 0x02;
        if data[0] & 1 != 0 {
            self.control
                .request_stop(StopReason::Reset("port 0x92 fast reset"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<Control>, I8042Port, I8042Port) {
        let c = Arc::new(Control::new());
        let d = I8042::new(c.clone());
        (c, I8042Port::data(d.clone()), I8042Port::command(d))
    }

    fn rd(p: &mut I8042Port) -> u8 {
        let mut b = [0];
        p.read(0, 0, &mut b);
        b[0]
    }

    #[test]
    fn self_test_and_config_byte() {
        let (c, mut data, mut cmd) = setup();
        cmd.write(0, 0, &[0xaa]);
        assert_eq!(rd(&mut cmd) & STATUS_OBF, STATUS_OBF);
        assert_eq!(rd(&mut data), 0x55);
        cmd.write(0, 0, &[0x60]);
        data.write(0, 0, &[0x47]);
        cmd.write(0, 0, &[0x20]);
        assert_eq!(rd(&mut data), 0x47);
        assert!(!c.stopping());
    }

    #[test]
    fn command_fe_resets() {
        let (c, _, mut cmd) = setup();
        cmd.write(0, 0, &[0xfe]);
        assert!(matches!(c.reason(), Some(StopReason::Reset(_))));
    }

    #[test]
    fn output_port_reset_bit_resets() {
        let (c, mut data, mut cmd) = setup();
        cmd.write(0, 0, &[0xd1]);
        data.write(0, 0, &[0x02]);
        assert!(matches!(c.reason(), Some(StopReason::Reset(_))));
    }

    #[test]
    fn port92_reset_and_a20() {
        let c = Arc::new(Control::new());
        let mut p = Port92::new(c.clone());
        let mut b = [0];
        p.read(0, 0, &mut b);
        assert_eq!(b[0] & 2, 2);
        p.write(0, 0, &[0x02]);
        assert!(!c.stopping());
        p.write(0, 0, &[0x03]);
        assert!(c.stopping());
    }
}
