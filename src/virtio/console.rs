//! virtio-console (virtio 1.2, 5.3) with one port and no multiport control queue: Linux makes
//! it hvc0. What the guest transmits goes to janus's console (standard output, line by line as
//! the UART's does); the receive queue's buffers are held, as no input is fed to it yet.

use std::io::Write;

use super::{DeviceContext, Queue, QueueError, VirtioDevice, id};
use crate::sink::{Sink, SinkSpec};

/// The queues' size.
const QUEUE_SIZE: u16 = 64;
/// receiveq0 and transmitq0.
const RX: usize = 0;
const TX: usize = 1;
/// Most bytes taken from one transmit chain.
const MAX_CHUNK: u64 = 64 << 10;

/// The console device.
pub struct Console {
    out: Sink,
    /// Bytes the guest transmitted.
    pub tx_bytes: u64,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("tx_bytes", &self.tx_bytes)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console writing to `out`.
    pub fn new(out: Sink) -> Self {
        Console { out, tx_bytes: 0 }
    }

    /// A console on janus's standard output.
    pub fn stdout() -> Self {
        Console::new(
            SinkSpec::Stdio
                .open()
                .unwrap_or_else(|_| Box::new(std::io::sink())),
        )
    }
}

impl VirtioDevice for Console {
    fn label(&self) -> &str {
        "console"
    }
    fn device_type(&self) -> u32 {
        id::CONSOLE
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn config(&self) -> Vec<u8> {
        // cols, rows, max_nr_ports, emerg_wr: unused without their features.
        vec![0; 12]
    }
    fn notify(
        &mut self,
        ctx: &DeviceContext,
        index: usize,
        queue: &mut Queue,
    ) -> Result<bool, QueueError> {
        if index == RX {
            // Receive buffers wait for input.
            return Ok(false);
        }
        debug_assert_eq!(index, TX);
        let used = queue.serve_batch(&ctx.mem, |chain| {
            if chain.bad.is_none() {
                let mut buf = vec![0u8; chain.readable_len().min(MAX_CHUNK) as usize];
                let n = chain.read_at(&ctx.mem, 0, &mut buf);
                let _ = self.out.write_all(&buf[..n]);
                self.tx_bytes += n as u64;
            }
            0
        })?;
        let _ = self.out.flush();
        Ok(used)
    }
}
