//! virtio-rng (virtio 1.2, 5.4): one queue; the device fills each device-writable buffer with
//! bytes from the host's getrandom(2). Linux's virtio_rng feeds them to /dev/hwrng.

use super::{Chain, DeviceContext, Queue, QueueError, VirtioDevice, id};

/// The queue's size.
const QUEUE_SIZE: u16 = 64;
/// At most this many bytes per request (a hostile chain may claim gigabytes).
const MAX_REQUEST: u64 = 64 << 10;

/// The entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    /// Bytes handed to the guest.
    pub bytes: u64,
}

/// Fills `buf` from getrandom(2).
pub fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes; getrandom writes at
        // most that many.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl Rng {
    fn serve(&mut self, ctx: &DeviceContext, chain: &Chain) -> u32 {
        if chain.bad.is_some() {
            return 0;
        }
        let len = chain.writable_len().min(MAX_REQUEST) as usize;
        let mut buf = vec![0u8; len];
        if getrandom(&mut buf).is_err() {
            return 0;
        }
        let n = chain.write_at(&ctx.mem, 0, &buf);
        self.bytes += n as u64;
        n as u32
    }
}

impl VirtioDevice for Rng {
    fn label(&self) -> &str {
        "rng"
    }
    fn device_type(&self) -> u32 {
        id::RNG
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn config(&self) -> Vec<u8> {
        Vec::new()
    }
    fn notify(
        &mut self,
        ctx: &DeviceContext,
        _index: usize,
        queue: &mut Queue,
    ) -> Result<bool, QueueError> {
        queue.serve_batch(&ctx.mem, |chain| self.serve(ctx, chain))
    }
}
