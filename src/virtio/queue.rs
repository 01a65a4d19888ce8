//! Split virtqueues (virtio 1.2, 2.7): the descriptor table, the driver ("available") ring and
//! the device ("used") ring in guest RAM, read and written by the device side.
//!
//! Everything here is guest-controlled and checked before use: the queue size (a power of two,
//! at most the device's maximum), the rings' placement (wholly in RAM), every descriptor's
//! buffer (wholly in one RAM region), chain length (at most the queue size, or the indirect
//! table's entry count: a looping chain ends there), indirect tables (one level, a multiple of
//! 16 bytes, in RAM) and the driver's index (at most a queue's worth ahead). A broken ring is a
//! [`QueueError`], for which the device marks itself NEEDS_RESET; a broken buffer only fails
//! its request ([`Chain::bad`]). Every write into guest RAM goes through
//! [`GuestMemory::write_dma`], so translated code on those pages is dropped.
//!
//! Event index (`VIRTIO_F_RING_EVENT_IDX`): the device publishes `avail_event` after taking
//! requests and interrupts only when the driver's `used_event` was crossed.

use std::sync::atomic::{Ordering, fence};

use janus_accel::GuestMemory;

/// Descriptor flag: the chain continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// Driver ring flag: do not interrupt (without event index).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Bytes per descriptor.
const DESC_SIZE: u64 = 16;
/// The largest queue size the spec allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// How a queue's ring is broken (the device then needs a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The size is zero, not a power of two, or above the device's maximum.
    #[error("queue size {0} is invalid")]
    Size(u16),
    /// A ring lies (partly) outside RAM.
    #[error("{what} ring at {addr:#x} is outside RAM")]
    Ring {
        /// Which ring.
        what: &'static str,
        /// Its guest address.
        addr: u64,
    },
    /// The driver's index moved more than a queue's worth ahead of the device's.
    #[error("driver index {idx} is {ahead} entries ahead (queue size {size})")]
    AvailIndex {
        /// The driver ring's index.
        idx: u16,
        /// How far ahead of the device.
        ahead: u16,
        /// The queue's size.
        size: u16,
    },
    /// A head index out of the table.
    #[error("descriptor head {0} is out of the table")]
    Head(u16),
}

/// Where the driver put one queue and how large it is (the transport's registers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    /// The size the driver chose.
    pub size: u16,
    /// The device's maximum size.
    pub max_size: u16,
    /// The driver enabled the queue.
    pub ready: bool,
    /// The descriptor table's guest address.
    pub desc: u64,
    /// The driver ring's guest address.
    pub avail: u64,
    /// The device ring's guest address.
    pub used: u64,
    /// Its MSI-X vector (PCI), or 0xFFFF for none.
    pub vector: u16,
}

/// One buffer of a chain: guest address, length, device-writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest physical address (checked: wholly in one RAM region).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (else reads it).
    pub write: bool,
}

/// A descriptor chain the driver made available: its head (to return in the used ring) and its
/// buffers, device-readable ones first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// The head descriptor's index.
    pub head: u16,
    /// The buffers in chain order.
    pub buffers: Vec<Buffer>,
    /// Why the chain is unusable (a buffer outside RAM, a loop, a readable buffer after a
    /// writable one, a bad indirect table): the device fails the request.
    pub bad: Option<&'static str>,
}

impl Chain {
    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.buffers
            .iter()
            .filter(|b| !b.write)
            .map(|b| u64::from(b.len))
            .sum()
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.buffers
            .iter()
            .filter(|b| b.write)
            .map(|b| u64::from(b.len))
            .sum()
    }

    /// Copies up to `out.len()` readable bytes starting `skip` bytes into the readable part;
    /// returns how many were copied.
    pub fn read_at(&self, mem: &GuestMemory, skip: u64, out: &mut [u8]) -> usize {
        self.copy(false, skip, out.len(), |addr, range| {
            mem.read(addr, &mut out[range]).is_ok()
        })
    }

    /// Writes `data` into the writable buffers starting `skip` bytes into them; returns how
    /// many bytes landed.
    pub fn write_at(&self, mem: &GuestMemory, skip: u64, data: &[u8]) -> usize {
        self.copy(true, skip, data.len(), |addr, range| {
            mem.write_dma(addr, &data[range]).is_ok()
        })
    }

    /// Walks the readable (or writable) buffers from `skip` bytes in for up to `total` bytes,
    /// calling `part` with each piece's guest address and its range in the caller's bytes;
    /// stops at the first piece `part` cannot move. Returns the bytes moved.
    fn copy(
        &self,
        write: bool,
        mut skip: u64,
        total: usize,
        mut part: impl FnMut(u64, std::ops::Range<usize>) -> bool,
    ) -> usize {
        let mut done = 0;
        for b in self.buffers.iter().filter(|b| b.write == write) {
            if done == total {
                break;
            }
            let len = u64::from(b.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(total - done);
            if !part(b.addr + skip, done..done + n) {
                break;
            }
            done += n;
            skip = 0;
        }
        done
    }
}

/// A split virtqueue as the device runs it.
#[derive(Debug, Clone)]
pub struct Queue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// The next driver-ring entry the device takes.
    next_avail: u16,
    /// The device ring's index (entries returned).
    next_used: u16,
    /// The device ring's index at the last interrupt decision.
    signalled_used: u16,
    event_idx: bool,
    /// The MSI-X vector (PCI).
    pub vector: u16,
}

/// Whether `len` bytes at `addr` lie wholly in one RAM region.
fn in_ram(mem: &GuestMemory, addr: u64, len: u64) -> bool {
    len == 0 && mem.region(addr).is_some()
        || usize::try_from(len).is_ok_and(|l| mem.host_ptr(addr, l, true).is_some())
}

impl Queue {
    /// Checks the driver's placement of a queue and takes it over from index 0.
    ///
    /// # Errors
    /// A size that is not a power of two up to the maximum, or a ring outside RAM.
    pub fn new(mem: &GuestMemory, c: &QueueConfig, event_idx: bool) -> Result<Self, QueueError> {
        let s = c.size;
        if s == 0 || !s.is_power_of_two() || s > c.max_size || s > MAX_QUEUE_SIZE {
            return Err(QueueError::Size(s));
        }
        let n = u64::from(s);
        for (what, addr, len, align) in [
            ("descriptor", c.desc, DESC_SIZE * n, 16),
            ("driver", c.avail, 6 + 2 * n, 2),
            ("device", c.used, 6 + 8 * n, 4),
        ] {
            if addr % align != 0 || !in_ram(mem, addr, len) {
                return Err(QueueError::Ring { what, addr });
            }
        }
        Ok(Queue {
            size: s,
            desc: c.desc,
            avail: c.avail,
            used: c.used,
            next_avail: 0,
            next_used: 0,
            signalled_used: 0,
            event_idx,
            vector: c.vector,
        })
    }

    /// The queue's size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Whether the driver has made chains available that the device has not taken.
    pub fn has_available(&self, mem: &GuestMemory) -> bool {
        self.avail_idx(mem) != self.next_avail
    }

    fn avail_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_le(self.avail + 2, 2).unwrap_or(0) as u16
    }

    /// Takes the next chain the driver made available, if any.
    ///
    /// # Errors
    /// A broken ring (the driver index too far ahead, a head outside the table).
    pub fn pop(&mut self, mem: &GuestMemory) -> Result<Option<Chain>, QueueError> {
        let mut idx = self.avail_idx(mem);
        if idx == self.next_avail {
            if !self.event_idx {
                return Ok(None);
            }
            // Ask to be notified at the next entry, then look again: the driver may have added
            // one before it saw the new avail_event.
            self.set_avail_event(mem);
            fence(Ordering::SeqCst);
            idx = self.avail_idx(mem);
            if idx == self.next_avail {
                return Ok(None);
            }
        }
        let ahead = idx.wrapping_sub(self.next_avail);
        if ahead > self.size {
            return Err(QueueError::AvailIndex {
                idx,
                ahead,
                size: self.size,
            });
        }
        // The ring entries are read after the index (the driver wrote them before it).
        fence(Ordering::Acquire);
        let slot = u64::from(self.next_avail % self.size);
        let head = mem.read_le(self.avail + 4 + 2 * slot, 2).unwrap_or(0) as u16;
        if head >= self.size {
            return Err(QueueError::Head(head));
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.event_idx {
            self.set_avail_event(mem);
        }
        Ok(Some(self.walk(mem, head)))
    }

    fn set_avail_event(&self, mem: &GuestMemory) {
        let at = self.used + 4 + 8 * u64::from(self.size);
        let _ = mem.write_dma(at, &self.next_avail.to_le_bytes());
    }

    /// Follows the chain from `head`, through one indirect table at most.
    fn walk(&self, mem: &GuestMemory, head: u16) -> Chain {
        let mut chain = Chain {
            head,
            ..Chain::default()
        };
        // (table base, entries) of the table being walked.
        let (mut table, mut entries) = (self.desc, u64::from(self.size));
        let mut index = u64::from(head);
        let mut indirect = false;
        let mut seen = 0u64;
        loop {
            if index >= entries {
                chain.bad = Some("next index out of the table");
                return chain;
            }
            seen += 1;
            if seen > entries {
                chain.bad = Some("chain longer than its table (a loop)");
                return chain;
            }
            let mut d = [0u8; 16];
            if mem.read(table + DESC_SIZE * index, &mut d).is_err() {
                chain.bad = Some("descriptor outside RAM");
                return chain;
            }
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            if flags & DESC_F_INDIRECT != 0 {
                if indirect || flags & DESC_F_NEXT != 0 {
                    chain.bad = Some("nested or chained indirect table");
                    return chain;
                }
                let n = u64::from(len) / DESC_SIZE;
                if len == 0 || u64::from(len) % DESC_SIZE != 0 || !in_ram(mem, addr, len.into()) {
                    chain.bad = Some("bad indirect table");
                    return chain;
                }
                indirect = true;
                (table, entries, index, seen) = (addr, n, 0, 0);
                continue;
            }
            let write = flags & DESC_F_WRITE != 0;
            if !in_ram(mem, addr, len.into()) {
                chain.bad = Some("buffer outside RAM");
            } else if !write && chain.buffers.last().is_some_and(|b| b.write) {
                chain.bad = Some("readable buffer after a writable one");
            }
            chain.buffers.push(Buffer { addr, len, write });
            if chain.bad.is_some() || flags & DESC_F_NEXT == 0 {
                return chain;
            }
            index = u64::from(next);
        }
    }

    /// Serves the chains the driver offered, at most a queue's worth per call (the device
    /// thread comes back for the rest after its other messages, a reset among them, so a driver
    /// that keeps adding cannot hold it here): `serve` answers each with the bytes it wrote,
    /// and the chain goes to the used ring. Returns whether any did.
    ///
    /// # Errors
    /// The ring itself is broken (see [`Queue::pop`]).
    pub fn serve_batch(
        &mut self,
        mem: &GuestMemory,
        mut serve: impl FnMut(&Chain) -> u32,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        for _ in 0..self.size {
            let Some(chain) = self.pop(mem)? else {
                break;
            };
            let len = serve(&chain);
            self.add_used(mem, chain.head, len);
            used = true;
        }
        Ok(used)
    }

    /// Returns chain `head` to the driver with `len` bytes written into it.
    pub fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) {
        let slot = u64::from(self.next_used % self.size);
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        let _ = mem.write_dma(self.used + 4 + 8 * slot, &e);
        self.next_used = self.next_used.wrapping_add(1);
        // The entry is visible before the index that publishes it.
        fence(Ordering::Release);
        let _ = mem.write_dma(self.used + 2, &self.next_used.to_le_bytes());
    }

    /// Returns several chains (head, bytes written) with one update of the device ring's
    /// index, so the driver sees them all at once (virtio-net's merged receive buffers).
    pub fn add_used_many(&mut self, mem: &GuestMemory, used: &[(u16, u32)]) {
        for &(head, len) in used {
            let slot = u64::from(self.next_used % self.size);
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            e[4..].copy_from_slice(&len.to_le_bytes());
            let _ = mem.write_dma(self.used + 4 + 8 * slot, &e);
            self.next_used = self.next_used.wrapping_add(1);
        }
        // The entries are visible before the index that publishes them.
        fence(Ordering::Release);
        let _ = mem.write_dma(self.used + 2, &self.next_used.to_le_bytes());
    }

    /// Whether the driver wants an interrupt for the entries returned since the last call
    /// (event index: `used_event` crossed; else unless it set NO_INTERRUPT).
    pub fn needs_interrupt(&mut self, mem: &GuestMemory) -> bool {
        fence(Ordering::SeqCst);
        let (old, new) = (self.signalled_used, self.next_used);
        self.signalled_used = new;
        if old == new {
            return false;
        }
        if self.event_idx {
            let at = self.avail + 4 + 2 * u64::from(self.size);
            let event = mem.read_le(at, 2).unwrap_or(0) as u16;
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            mem.read_le(self.avail, 2).unwrap_or(0) as u16 & AVAIL_F_NO_INTERRUPT == 0
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use janus_accel::RegionKind;

    pub(crate) const DESC: u64 = 0x1000;
    pub(crate) const AVAIL: u64 = 0x2000;
    pub(crate) const USED: u64 = 0x3000;

    pub(crate) fn mem() -> GuestMemory {
        let mut m = GuestMemory::new();
        m.add(0, 0x10_0000, RegionKind::Ram).unwrap();
        m
    }

    pub(crate) fn config(size: u16) -> QueueConfig {
        QueueConfig {
            size,
            max_size: 256,
            ready: true,
            desc: DESC,
            avail: AVAIL,
            used: USED,
            vector: 0,
        }
    }

    pub(crate) fn desc(
        m: &GuestMemory,
        table: u64,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = table + 16 * u64::from(i);
        m.write_le(at, 8, addr).unwrap();
        m.write_le(at + 8, 4, len.into()).unwrap();
        m.write_le(at + 12, 2, flags.into()).unwrap();
        m.write_le(at + 14, 2, next.into()).unwrap();
    }

    /// Makes `heads` available after the entries already there.
    pub(crate) fn offer(m: &GuestMemory, size: u16, heads: &[u16]) {
        let mut idx = m.read_le(AVAIL + 2, 2).unwrap() as u16;
        for &h in heads {
            m.write_le(AVAIL + 4 + 2 * u64::from(idx % size), 2, h.into())
                .unwrap();
            idx = idx.wrapping_add(1);
        }
        m.write_le(AVAIL + 2, 2, idx.into()).unwrap();
    }

    #[test]
    fn chains_direct_and_indirect_are_walked_and_returned() {
        let m = mem();
        let mut q = Queue::new(&m, &config(8), false).unwrap();
        assert_eq!(q.pop(&m).unwrap(), None);
        // Head 3: readable 16 bytes -> writable 512 -> writable 1.
        desc(&m, DESC, 3, 0x8000, 16, DESC_F_NEXT, 5);
        desc(&m, DESC, 5, 0x9000, 512, DESC_F_NEXT | DESC_F_WRITE, 0);
        desc(&m, DESC, 0, 0xa000, 1, DESC_F_WRITE, 0);
        // Head 1: an indirect table of two.
        desc(&m, DESC, 1, 0xb000, 32, DESC_F_INDIRECT, 0);
        desc(&m, 0xb000, 0, 0xc000, 8, DESC_F_NEXT, 1);
        desc(&m, 0xb000, 1, 0xd000, 4, DESC_F_WRITE, 0);
        offer(&m, 8, &[3, 1]);
        let c = q.pop(&m).unwrap().unwrap();
        assert_eq!((c.head, c.bad, c.buffers.len()), (3, None, 3));
        assert_eq!((c.readable_len(), c.writable_len()), (16, 513));
        m.write(0x8000, b"0123456789abcdef").unwrap();
        let mut b = [0u8; 6];
        assert_eq!(c.read_at(&m, 10, &mut b), 6);
        assert_eq!(&b, b"abcdef");
        assert_eq!(c.write_at(&m, 511, b"xy"), 2);
        assert_eq!(m.read_le(0x9000 + 511, 1).unwrap(), u64::from(b'x'));
        assert_eq!(m.read_le(0xa000, 1).unwrap(), u64::from(b'y'));
        let c2 = q.pop(&m).unwrap().unwrap();
        assert_eq!((c2.head, c2.bad), (1, None));
        assert_eq!(
            c2.buffers[1],
            Buffer {
                addr: 0xd000,
                len: 4,
                write: true
            }
        );
        assert_eq!(q.pop(&m).unwrap(), None);
        q.add_used(&m, 3, 513);
        q.add_used(&m, 1, 4);
        assert_eq!(m.read_le(USED + 2, 2).unwrap(), 2);
        assert_eq!(m.read_le(USED + 4, 4).unwrap(), 3);
        assert_eq!(m.read_le(USED + 8, 4).unwrap(), 513);
        assert!(q.needs_interrupt(&m));
        assert!(!q.needs_interrupt(&m), "nothing new");
    }

    #[test]
    fn hostile_rings_and_chains_fail_without_hanging() {
        let m = mem();
        for bad in [0, 3, 512] {
            assert_eq!(
                Queue::new(&m, &config(bad), false).unwrap_err(),
                QueueError::Size(bad)
            );
        }
        let mut c = config(8);
        c.desc = 0x20_0000;
        assert!(matches!(
            Queue::new(&m, &c, false),
            Err(QueueError::Ring { .. })
        ));
        let mut q = Queue::new(&m, &config(8), false).unwrap();
        // A loop: 0 -> 1 -> 0.
        desc(&m, DESC, 0, 0x8000, 4, DESC_F_NEXT, 1);
        desc(&m, DESC, 1, 0x8000, 4, DESC_F_NEXT, 0);
        // Outside RAM.
        desc(&m, DESC, 2, 0x4000_0000, 4, 0, 0);
        // Overlapping buffers are fine (both read the same bytes).
        desc(&m, DESC, 3, 0x8000, 8, DESC_F_NEXT, 4);
        desc(&m, DESC, 4, 0x8004, 8, DESC_F_WRITE, 0);
        // next out of the table; an indirect table looping on itself; nested indirect.
        desc(&m, DESC, 5, 0x8000, 4, DESC_F_NEXT, 9);
        desc(&m, DESC, 6, 0xb000, 32, DESC_F_INDIRECT, 0);
        desc(&m, 0xb000, 0, 0x8000, 4, DESC_F_NEXT, 1);
        desc(&m, 0xb000, 1, 0x8000, 4, DESC_F_NEXT, 0);
        desc(&m, DESC, 7, 0xc000, 16, DESC_F_INDIRECT, 0);
        desc(&m, 0xc000, 0, 0xb000, 32, DESC_F_INDIRECT, 0);
        offer(&m, 8, &[0, 2, 3, 5, 6, 7]);
        let bad: Vec<Option<&str>> = (0..6).map(|_| q.pop(&m).unwrap().unwrap().bad).collect();
        assert_eq!(
            bad,
            [
                Some("chain longer than its table (a loop)"),
                Some("buffer outside RAM"),
                None,
                Some("next index out of the table"),
                Some("chain longer than its table (a loop)"),
                Some("nested or chained indirect table"),
            ]
        );
        // A head out of the table, the index far ahead: the ring is broken.
        offer(&m, 8, &[200]);
        assert_eq!(q.pop(&m).unwrap_err(), QueueError::Head(200));
        m.write_le(AVAIL + 2, 2, 100).unwrap();
        assert!(matches!(q.pop(&m), Err(QueueError::AvailIndex { .. })));
    }

    #[test]
    fn event_index_suppresses_interrupts_until_used_event() {
        let m = mem();
        let mut q = Queue::new(&m, &config(8), true).unwrap();
        for i in 0..4 {
            desc(&m, DESC, i, 0x8000, 4, DESC_F_WRITE, 0);
        }
        offer(&m, 8, &[0, 1, 2, 3]);
        // used_event = 2: interrupt once the third entry is used.
        m.write_le(AVAIL + 4 + 16, 2, 2).unwrap();
        let mut irqs = Vec::new();
        while let Some(c) = q.pop(&m).unwrap() {
            q.add_used(&m, c.head, 0);
            irqs.push(q.needs_interrupt(&m));
        }
        assert_eq!(irqs, [false, false, true, false]);
        // avail_event tells the driver the next entry the device wants to hear of.
        assert_eq!(m.read_le(USED + 4 + 64, 2).unwrap(), 4);
    }
}
