//! virtio-net (virtio 1.2, 5.1): one receive and one transmit queue over a [`NetBackend`]
//! (TAP or user-mode networking), with VIRTIO_NET_F_MAC, STATUS, MRG_RXBUF and CSUM.
//!
//! Everything runs on the device's thread ([`super::Worker`]): a transmit notification sends
//! the guest's frames to the backend; a small waiter thread sleeps in epoll on the backend's
//! descriptor (one-shot) and wakes the device's thread, which moves frames into the receive
//! queue until the backend is empty (then re-arms the waiter) or the guest's buffers run out
//! (then the guest's refill notification resumes it). No vCPU ever waits on the network.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Chain, DeviceContext, Queue, QueueError, VirtioDevice, id, worker::Waker};
use crate::net::{MAX_FRAME, NetBackend, NetError};

/// Feature bits (5.1.3).
pub mod features {
    /// The device completes partial checksums of transmitted frames.
    pub const CSUM: u64 = 1 << 0;
    /// The config space has the MAC address.
    pub const MAC: u64 = 1 << 5;
    /// The driver may merge receive buffers (`num_buffers`).
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// The config space has the link status.
    pub const STATUS: u64 = 1 << 16;
}

/// `struct virtio_net_hdr` with `num_buffers` (always there with VERSION_1).
const HDR_LEN: usize = 12;
/// `flags`: the frame's checksum is partial, from `csum_start`, stored at `csum_offset`.
const HDR_F_NEEDS_CSUM: u8 = 1;
/// Queue sizes (receive, transmit).
const QUEUE_SIZE: u16 = 256;
/// Frames moved per wake-up before the thread looks at its other messages (transmit).
const RX_BATCH: usize = 256;
const RX: usize = 0;
const TX: usize = 1;

/// Counters (read by tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NetCounters {
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Frames handed to the guest.
    pub rx_frames: u64,
    /// Guest frames dropped (a bad chain, a bad size).
    pub tx_dropped: u64,
    /// Backend frames dropped (no room in the guest's buffers for them).
    pub rx_dropped: u64,
}

/// The thread that waits for the backend's descriptor to turn readable.
#[derive(Debug)]
struct RxWaiter {
    epoll: Arc<Epoll>,
    stop: EventFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

const EV_BACKEND: u64 = 0;
const EV_STOP: u64 = 1;

impl RxWaiter {
    fn start(fd: RawFd, waker: Waker, label: &str) -> std::io::Result<RxWaiter> {
        let epoll = Arc::new(Epoll::new()?);
        let stop = EventFd::new(EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, EV_STOP),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN | EventSet::ONE_SHOT, EV_BACKEND),
        )?;
        let ep = epoll.clone();
        let thread = std::thread::Builder::new()
            .name(format!("net-rx-{label}"))
            .spawn(move || {
                let mut events = [EpollEvent::default(); 2];
                loop {
                    let n = match ep.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    for e in &events[..n] {
                        if e.data() == EV_STOP {
                            return;
                        }
                        waker.wake();
                    }
                }
            })?;
        Ok(RxWaiter {
            epoll,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits for the backend again (after the device found it empty).
    fn rearm(&self, fd: RawFd) {
        let _ = self.epoll.ctl(
            ControlOperation::Modify,
            fd,
            EpollEvent::new(EventSet::IN | EventSet::ONE_SHOT, EV_BACKEND),
        );
    }
}

impl Drop for RxWaiter {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A virtio network card.
#[derive(Debug)]
pub struct Net {
    label: String,
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    waiter: Option<RxWaiter>,
    /// Room for a header, then the frame taken from the backend that waits for receive
    /// buffers (`rx_len` bytes).
    rx_buf: Vec<u8>,
    rx_len: Option<usize>,
    /// Receive chains taken but not used yet (a merged frame that did not fit).
    spare: std::collections::VecDeque<Chain>,
    tx_buf: Vec<u8>,
    /// The backend failed (reported once); frames are dropped from then on.
    dead: bool,
    /// Counters.
    pub counters: NetCounters,
}

impl Net {
    /// A card with address `mac` on `backend`.
    pub fn new(id: &str, mac: [u8; 6], backend: Box<dyn NetBackend>) -> Net {
        Net {
            label: format!("net-{id}"),
            mac,
            backend,
            waiter: None,
            rx_buf: vec![0; HDR_LEN + MAX_FRAME],
            rx_len: None,
            spare: Default::default(),
            tx_buf: vec![0; HDR_LEN + MAX_FRAME],
            dead: false,
            counters: NetCounters::default(),
        }
    }

    fn fail(&mut self, e: &crate::net::NetError) {
        if !self.dead {
            crate::ewriteln!(
                "janus: {}: {e}; its frames are dropped from now on",
                self.label
            );
            self.dead = true;
        }
    }

    /// Sends every frame of the transmit queue.
    fn transmit(&mut self, ctx: &DeviceContext, q: &mut Queue) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = q.pop(&ctx.mem)? {
            let len = chain.readable_len();
            let n = if chain.bad.is_some() || len > (HDR_LEN + MAX_FRAME) as u64 {
                0
            } else {
                chain.read_at(&ctx.mem, 0, &mut self.tx_buf[..len as usize])
            };
            if n <= HDR_LEN {
                self.counters.tx_dropped += 1;
            } else {
                let (hdr, frame) = self.tx_buf[..n].split_at_mut(HDR_LEN);
                if ctx.features & features::CSUM != 0 && hdr[0] & HDR_F_NEEDS_CSUM != 0 {
                    let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
                    let offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
                    complete_checksum(frame, start, offset);
                }
                if !self.dead {
                    match self.backend.send(frame) {
                        Ok(()) => self.counters.tx_frames += 1,
                        Err(e) => self.fail(&e),
                    }
                }
            }
            q.add_used(&ctx.mem, chain.head, 0);
            used = true;
        }
        Ok(used)
    }

    /// Moves frames from the backend into the receive queue.
    fn receive(&mut self, ctx: &DeviceContext, q: &mut Queue) -> Result<bool, QueueError> {
        let mut used = false;
        for _ in 0..RX_BATCH {
            if self.rx_len.is_none() {
                if self.dead {
                    return Ok(used);
                }
                match self.backend.recv(&mut self.rx_buf[HDR_LEN..]) {
                    Ok(Some(n)) => self.rx_len = Some(n),
                    Ok(None) => {
                        if let Some(w) = &self.waiter {
                            w.rearm(self.backend.fd());
                        }
                        return Ok(used);
                    }
                    Err(e) => {
                        self.fail(&e);
                        return Ok(used);
                    }
                }
            }
            if !self.place(ctx, q)? {
                // No buffers: the guest's refill notification brings us back.
                return Ok(used);
            }
            self.rx_len = None;
            used = true;
        }
        // More may wait: come back after the messages queued meanwhile (transmit).
        ctx.waker.wake();
        Ok(used)
    }

    fn next_chain(
        &mut self,
        ctx: &DeviceContext,
        q: &mut Queue,
    ) -> Result<Option<Chain>, QueueError> {
        if let Some(c) = self.spare.pop_front() {
            return Ok(Some(c));
        }
        q.pop(&ctx.mem)
    }

    /// Writes the waiting frame (after its header) into receive buffers: several with
    /// MRG_RXBUF, else one that holds it all. False when the guest has not given enough.
    fn place(&mut self, ctx: &DeviceContext, q: &mut Queue) -> Result<bool, QueueError> {
        let Some(len) = self.rx_len else {
            return Ok(true);
        };
        let merge = ctx.features & features::MRG_RXBUF != 0;
        let total = HDR_LEN + len;
        let mut chains = Vec::new();
        let mut room = 0u64;
        while room < total as u64 {
            let Some(c) = self.next_chain(ctx, q)? else {
                // Keep what was taken for the next try.
                for c in chains.into_iter().rev() {
                    self.spare.push_front(c);
                }
                return Ok(false);
            };
            let w = c.writable_len();
            if c.bad.is_some() || w == 0 {
                q.add_used(&ctx.mem, c.head, 0);
                continue;
            }
            if !merge && w < total as u64 {
                // Too small for the frame (buffers sized for a smaller MTU): the frame is lost.
                self.counters.rx_dropped += 1;
                self.spare.push_front(c);
                self.rx_len = None;
                return Ok(true);
            }
            room += w;
            chains.push(c);
            if room < total as u64 && chains.len() >= usize::from(q.size()) {
                // More buffers than the queue holds (a driver giving tiny ones): the frame is
                // lost and the buffers kept for the next.
                self.counters.rx_dropped += 1;
                for c in chains.into_iter().rev() {
                    self.spare.push_front(c);
                }
                self.rx_len = None;
                return Ok(true);
            }
        }
        // The header goes in front of the frame: flags, gso_type, hdr_len, gso_size,
        // csum_start, csum_offset all 0, then num_buffers.
        let data = &mut self.rx_buf[..total];
        data[..HDR_LEN].fill(0);
        data[10..12].copy_from_slice(&(chains.len() as u16).to_le_bytes());
        let mut used = Vec::with_capacity(chains.len());
        let mut at = 0usize;
        for c in &chains {
            let end = total.min(at + usize::try_from(c.writable_len()).unwrap_or(usize::MAX));
            let n = c.write_at(&ctx.mem, 0, &data[at..end]);
            at = end;
            used.push((c.head, n as u32));
        }
        // All entries appear at once: the driver reads num_buffers entries in one go.
        q.add_used_many(&ctx.mem, &used);
        self.counters.rx_frames += 1;
        Ok(true)
    }
}

/// Opens `spec`'s backend and plugs a virtio-net PCI function on it into `pci` (card `index`
/// gets QEMU's default MAC for that position unless `mac=` was given).
///
/// # Errors
/// The backend cannot be opened ([`NetError`]), the device's thread not started, or no PCI
/// slot is free.
pub fn plug(
    pci: &std::sync::Mutex<crate::pci::PciRoot>,
    mem: &janus_accel::GuestMemory,
    spec: &crate::net::NetdevSpec,
    index: usize,
) -> Result<(), NetError> {
    let backend = crate::net::open(spec)?;
    let net = Net::new(&spec.id, spec.mac_or_default(index), backend);
    let function = super::pci::VirtioPci::new(Box::new(net), mem.clone())
        .map_err(|e| NetError::Plug(spec.id.clone(), e.to_string()))?;
    let mut root = pci
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    root.add(function.shared())
        .map_err(|e| NetError::Plug(spec.id.clone(), e.to_string()))?;
    Ok(())
}

/// Completes a partial checksum: the ones' complement sum of `frame[start..]` (which includes
/// the pseudo-header sum the driver left in the field) stored at `start + offset`.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) {
    let Some(field) = start.checked_add(offset) else {
        return;
    };
    if field + 2 > frame.len() || start >= frame.len() {
        return;
    }
    let mut sum = 0u64;
    let mut words = frame[start..].chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        sum += u64::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[field..field + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

impl VirtioDevice for Net {
    fn label(&self) -> &str {
        &self.label
    }
    fn device_type(&self) -> u32 {
        id::NET
    }
    fn features(&self) -> u64 {
        features::MAC | features::STATUS | features::MRG_RXBUF | features::CSUM
    }
    fn queue_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn config(&self) -> Vec<u8> {
        // mac[6], status (LINK_UP), max_virtqueue_pairs.
        let mut c = self.mac.to_vec();
        c.extend_from_slice(&1u16.to_le_bytes());
        c.extend_from_slice(&1u16.to_le_bytes());
        c
    }
    fn activate(&mut self, ctx: &DeviceContext) {
        match RxWaiter::start(self.backend.fd(), ctx.waker.clone(), &self.label) {
            Ok(w) => self.waiter = Some(w),
            Err(e) => crate::ewriteln!("janus: {}: cannot wait for frames: {e}", self.label),
        }
    }
    fn notify(
        &mut self,
        ctx: &DeviceContext,
        index: usize,
        queue: &mut Queue,
    ) -> Result<bool, QueueError> {
        match index {
            RX => self.receive(ctx, queue),
            TX => self.transmit(ctx, queue),
            _ => Ok(false),
        }
    }
    fn poll(
        &mut self,
        ctx: &DeviceContext,
        queues: &mut [Option<Queue>],
    ) -> Result<Vec<usize>, QueueError> {
        let Some(Some(q)) = queues.get_mut(RX) else {
            return Ok(Vec::new());
        };
        Ok(if self.receive(ctx, q)? {
            vec![RX]
        } else {
            Vec::new()
        })
    }
    fn reset(&mut self) {
        self.waiter = None;
        self.spare.clear();
        self.rx_len = None;
    }
}

#[cfg(test)]
mod tests;
