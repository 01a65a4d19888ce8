//! Port-I/O and MMIO buses: ranges of addresses routed to devices.
//!
//! A bus is a `BTreeMap` from a range's base to its device; adding a range that overlaps an
//! existing one is refused with both ranges named. Accesses that hit no device read as all ones
//! and drop writes, and are counted: a guest's bad access is never an error on the host side.
//!
//! Lock order: a bus holds each device behind its own `Mutex`; a device's `read`/`write` must not
//! call back into a bus, so two device locks are never held at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A device on a bus. `offset` is relative to the base of the range it was added at; `vcpu` is
/// the index of the accessing vCPU.
pub trait BusDevice: Send {
    /// A short name for logs and errors, e.g. "uart0".
    fn label(&self) -> &str;
    /// A read of `data.len()` bytes at `offset`.
    fn read(&mut self, vcpu: usize, offset: u64, data: &mut [u8]);
    /// A write of `data.len()` bytes at `offset`.
    fn write(&mut self, vcpu: usize, offset: u64, data: &[u8]);
}

/// A device shared between a bus and whoever else holds it (the machine, tests).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors of bus set-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error(
        "{bus} range {base:#x}+{len:#x} for {label} overlaps {other_base:#x}+{other_len:#x} of {other_label}"
    )]
    Overlap {
        /// "pio" or "mmio".
        bus: &'static str,
        /// New range's base.
        base: u64,
        /// New range's length.
        len: u64,
        /// New device's label.
        label: String,
        /// Existing range's base.
        other_base: u64,
        /// Existing range's length.
        other_len: u64,
        /// Existing device's label.
        other_label: String,
    },
    /// A range of length zero or one that wraps around.
    #[error("{bus} range {base:#x}+{len:#x} for {label} is empty or wraps around")]
    BadRange {
        /// "pio" or "mmio".
        bus: &'static str,
        /// Base.
        base: u64,
        /// Length.
        len: u64,
        /// Device label.
        label: String,
    },
}

struct Entry {
    len: u64,
    label: String,
    device: SharedDevice,
}

/// Counters of accesses that hit no device.
#[derive(Debug, Default)]
pub struct UnassignedCounters {
    /// Reads of unassigned addresses (answered with all ones).
    pub reads: AtomicU64,
    /// Writes to unassigned addresses (dropped).
    pub writes: AtomicU64,
}

/// A bus: port I/O or MMIO.
pub struct Bus {
    name: &'static str,
    ranges: BTreeMap<u64, Entry>,
    unassigned: UnassignedCounters,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_map();
        for (base, e) in &self.ranges {
            l.entry(&format_args!("{base:#x}+{:#x}", e.len), &e.label);
        }
        l.finish()
    }
}

impl Bus {
    /// An empty bus; `name` ("pio" or "mmio") appears in errors.
    pub fn new(name: &'static str) -> Self {
        Bus {
            name,
            ranges: BTreeMap::new(),
            unassigned: UnassignedCounters::default(),
        }
    }

    /// Adds `device` over `[base, base + len)`.
    ///
    /// # Errors
    /// [`BusError::Overlap`] naming both ranges, or [`BusError::BadRange`].
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let label = device
            .lock()
            .map(|d| d.label().to_string())
            .unwrap_or_default();
        let end = match base.checked_add(len) {
            Some(e) if len > 0 => e,
            _ => {
                return Err(BusError::BadRange {
                    bus: self.name,
                    base,
                    len,
                    label,
                });
            }
        };
        // The nearest range starting at or below the new end - 1 is the only candidate that can
        // overlap from below; any range starting inside the new one overlaps too.
        if let Some((&obase, o)) = self.ranges.range(..end).next_back()
            && obase + o.len > base
        {
            return Err(BusError::Overlap {
                bus: self.name,
                base,
                len,
                label,
                other_base: obase,
                other_len: o.len,
                other_label: o.label.clone(),
            });
        }
        self.ranges.insert(base, Entry { len, label, device });
        Ok(())
    }

    /// The device holding `addr`, and `addr`'s offset inside its range.
    fn find(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        (addr - base < e.len).then_some((&e.device, addr - base))
    }

    /// Reads `data.len()` bytes at `addr`; unassigned addresses read as all ones.
    pub fn read(&self, vcpu: usize, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((dev, off)) => match dev.lock() {
                Ok(mut d) => d.read(vcpu, off, data),
                Err(p) => p.into_inner().read(vcpu, off, data),
            },
            None => {
                self.unassigned.reads.fetch_add(1, Ordering::Relaxed);
                data.fill(0xff);
            }
        }
    }

    /// Writes `data` at `addr`; writes to unassigned addresses are dropped.
    pub fn write(&self, vcpu: usize, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((dev, off)) => match dev.lock() {
                Ok(mut d) => d.write(vcpu, off, data),
                Err(p) => p.into_inner().write(vcpu, off, data),
            },
            None => {
                self.unassigned.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counters of accesses that hit no device.
    pub fn unassigned(&self) -> (u64, u64) {
        (
            self.unassigned.reads.load(Ordering::Relaxed),
            self.unassigned.writes.load(Ordering::Relaxed),
        )
    }

    /// The labels and ranges on this bus, for `janus info` and tests.
    pub fn ranges(&self) -> Vec<(u64, u64, String)> {
        self.ranges
            .iter()
            .map(|(b, e)| (*b, e.len, e.label.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo {
        name: &'static str,
        last: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Echo {
        fn label(&self) -> &str {
            self.name
        }
        fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
            self.last.push((offset, data.to_vec()));
        }
    }

    fn echo(name: &'static str) -> Arc<Mutex<Echo>> {
        Arc::new(Mutex::new(Echo { name, last: vec![] }))
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let mut bus = Bus::new("pio");
        let a = echo("a");
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        let mut b = [0u8; 1];
        bus.read(0, 0x3fd, &mut b);
        assert_eq!(b, [5]);
        bus.write(0, 0x3f8, &[0x41]);
        assert_eq!(a.lock().unwrap().last, vec![(0, vec![0x41])]);
    }

    #[test]
    fn unassigned_reads_all_ones_and_counts() {
        let mut bus = Bus::new("pio");
        bus.insert(0x3f8, 8, echo("a")).unwrap();
        let mut b = [0u8; 4];
        bus.read(0, 0x400, &mut b);
        assert_eq!(b, [0xff; 4]);
        bus.read(0, 0x3f7, &mut b[..1]);
        bus.write(0, 0x3f7, &[1]);
        assert_eq!(bus.unassigned(), (2, 1));
    }

    #[test]
    fn overlaps_are_refused_naming_both_ranges() {
        let mut bus = Bus::new("mmio");
        bus.insert(0x1000, 0x100, echo("first")).unwrap();
        for (base, len) in [(0x1000, 1), (0x10ff, 1), (0xf00, 0x101), (0xf00, 0x1000)] {
            let e = bus.insert(base, len, echo("second")).unwrap_err();
            assert_eq!(
                e,
                BusError::Overlap {
                    bus: "mmio",
                    base,
                    len,
                    label: "second".into(),
                    other_base: 0x1000,
                    other_len: 0x100,
                    other_label: "first".into()
                }
            );
        }
        // Adjacent ranges are fine.
        bus.insert(0x1100, 0x10, echo("after")).unwrap();
        bus.insert(0xff0, 0x10, echo("before")).unwrap();
        assert!(matches!(
            bus.insert(5, 0, echo("empty")),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, echo("wrap")),
            Err(BusError::BadRange { .. })
        ));
    }
}
