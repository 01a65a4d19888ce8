//! The board's resource allocator: windows of MMIO space (below the 4 GiB hole and above RAM),
//! port I/O ranges and interrupt lines (GSIs) that devices ask for at set-up (PCI BARs and the
//! ECAM window, virtio-mmio windows, their interrupt lines).
//!
//! Each pool is one [`RangeAllocator`] over a fixed window: a request is either a fixed range
//! ([`RangeAllocator::reserve`], refused if it overlaps a range already handed out or leaves the
//! window) or a size and an alignment ([`RangeAllocator::allocate`], first fit from the bottom).
//! Running out is an [`AllocError`], never a panic: the guest or the user asked for too much.

use std::collections::BTreeMap;

/// Why a request could not be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    /// A size of zero, or an alignment that is not a power of two.
    #[error("{pool}: bad request for {label}: size {size:#x}, alignment {align:#x}")]
    BadRequest {
        /// The pool asked ("mmio32", "pio", ...).
        pool: &'static str,
        /// Who asked.
        label: String,
        /// The size asked for.
        size: u64,
        /// The alignment asked for.
        align: u64,
    },
    /// A fixed range that leaves the pool's window.
    #[error("{pool}: {base:#x}+{size:#x} for {label} is outside the window {start:#x}-{end:#x}")]
    OutsideWindow {
        /// The pool.
        pool: &'static str,
        /// Who asked.
        label: String,
        /// The range's base.
        base: u64,
        /// The range's size.
        size: u64,
        /// The window's first address.
        start: u64,
        /// One past the window's last address.
        end: u64,
    },
    /// A fixed range that overlaps one already handed out.
    #[error(
        "{pool}: {base:#x}+{size:#x} for {label} overlaps {other_base:#x}+{other_size:#x} of {other_label}"
    )]
    Overlap {
        /// The pool.
        pool: &'static str,
        /// Who asked.
        label: String,
        /// The range's base.
        base: u64,
        /// The range's size.
        size: u64,
        /// The range in the way.
        other_base: u64,
        /// Its size.
        other_size: u64,
        /// Its owner.
        other_label: String,
    },
    /// No free range of that size and alignment is left.
    #[error("{pool}: no room left for {label} ({size:#x} bytes aligned to {align:#x})")]
    Exhausted {
        /// The pool.
        pool: &'static str,
        /// Who asked.
        label: String,
        /// The size asked for.
        size: u64,
        /// The alignment asked for.
        align: u64,
    },
}

/// Hands out non-overlapping ranges of one window `[start, end)`.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    pool: &'static str,
    start: u64,
    end: u64,
    /// Ranges handed out: base -> (size, owner).
    used: BTreeMap<u64, (u64, String)>,
}

impl RangeAllocator {
    /// A pool named `pool` over `[start, end)`.
    pub fn new(pool: &'static str, start: u64, end: u64) -> Self {
        RangeAllocator {
            pool,
            start,
            end: end.max(start),
            used: BTreeMap::new(),
        }
    }

    /// The window's first address.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the window's last address.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The ranges handed out: (base, size, owner), in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, &str)> {
        self.used.iter().map(|(&b, (s, l))| (b, *s, l.as_str()))
    }

    fn bad(&self, label: &str, size: u64, align: u64) -> AllocError {
        AllocError::BadRequest {
            pool: self.pool,
            label: label.into(),
            size,
            align,
        }
    }

    /// The first range handed out that overlaps `[base, end)`.
    fn overlapping(&self, base: u64, end: u64) -> Option<(u64, u64, &str)> {
        let (&b, (s, l)) = self.used.range(..end).next_back()?;
        (b + s > base).then_some((b, *s, l.as_str()))
    }

    /// Hands out exactly `[base, base + size)` to `label`.
    ///
    /// # Errors
    /// [`AllocError::BadRequest`] for an empty range, [`AllocError::OutsideWindow`] for one
    /// that leaves the window, [`AllocError::Overlap`] for one that overlaps another.
    pub fn reserve(&mut self, base: u64, size: u64, label: &str) -> Result<u64, AllocError> {
        if size == 0 {
            return Err(self.bad(label, size, 1));
        }
        let end = base.checked_add(size);
        if base < self.start || end.is_none_or(|e| e > self.end) {
            return Err(AllocError::OutsideWindow {
                pool: self.pool,
                label: label.into(),
                base,
                size,
                start: self.start,
                end: self.end,
            });
        }
        let end = base + size;
        if let Some((ob, os, ol)) = self.overlapping(base, end) {
            return Err(AllocError::Overlap {
                pool: self.pool,
                label: label.into(),
                base,
                size,
                other_base: ob,
                other_size: os,
                other_label: ol.into(),
            });
        }
        self.used.insert(base, (size, label.into()));
        Ok(base)
    }

    /// Hands out the lowest free range of `size` bytes aligned to `align` (a power of two).
    ///
    /// # Errors
    /// [`AllocError::BadRequest`] for size 0 or a bad alignment, [`AllocError::Exhausted`] when
    /// no such range is free.
    pub fn allocate(&mut self, size: u64, align: u64, label: &str) -> Result<u64, AllocError> {
        if size == 0 || !align.is_power_of_two() {
            return Err(self.bad(label, size, align));
        }
        let align_up = |a: u64| a.checked_add(align - 1).map(|v| v & !(align - 1));
        let mut cursor = self.start;
        // Candidates: the window's start, then the end of each range handed out.
        let ends: Vec<u64> = self.used.iter().map(|(&b, (s, _))| b + s).collect();
        for next in std::iter::once(self.start).chain(ends) {
            cursor = cursor.max(next);
            let Some(base) = align_up(cursor) else { break };
            let Some(end) = base.checked_add(size) else {
                break;
            };
            if end > self.end {
                break;
            }
            if self.overlapping(base, end).is_none() {
                self.used.insert(base, (size, label.into()));
                return Ok(base);
            }
        }
        Err(AllocError::Exhausted {
            pool: self.pool,
            label: label.into(),
            size,
            align,
        })
    }

    /// Gives back the range that starts at `base` (a BAR the guest moves, a device removed).
    /// Returns whether there was one.
    pub fn free(&mut self, base: u64) -> bool {
        self.used.remove(&base).is_some()
    }
}

/// Every pool of a board.
#[derive(Debug, Clone)]
pub struct Resources {
    /// MMIO below 4 GiB (32-bit BARs, the ECAM window).
    pub mmio32: RangeAllocator,
    /// MMIO above RAM above 4 GiB (64-bit BARs).
    pub mmio64: RangeAllocator,
    /// Port I/O for devices (I/O BARs).
    pub pio: RangeAllocator,
    /// IOAPIC pins above the ISA ones (PCI INTx, virtio-mmio).
    pub gsi: RangeAllocator,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_and_never_overlap() {
        let mut a = RangeAllocator::new("mmio32", 0x1000, 0x10_0000);
        let x = a.allocate(0x100, 0x1000, "a").unwrap();
        assert_eq!(x, 0x1000);
        let y = a.allocate(0x2000, 0x2000, "b").unwrap();
        assert_eq!(y, 0x2000);
        let z = a.allocate(0x10, 0x10, "c").unwrap();
        assert_eq!(z, 0x1100, "first fit fills the gap after a");
        let mut all: Vec<_> = a.ranges().map(|(b, s, _)| (b, s)).collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
        for (b, s) in [(x, 0x100), (y, 0x2000), (z, 0x10)] {
            assert_eq!(b % s.min(0x1000), 0);
        }
    }

    #[test]
    fn overlapping_reservations_are_refused() {
        let mut a = RangeAllocator::new("pio", 0xc000, 0x1_0000);
        a.reserve(0xc100, 0x100, "bar0").unwrap();
        for (base, size) in [(0xc0ff, 2), (0xc1ff, 1), (0xc000, 0x1000), (0xc180, 8)] {
            assert!(
                matches!(
                    a.reserve(base, size, "x"),
                    Err(AllocError::Overlap {
                        other_base: 0xc100,
                        ..
                    })
                ),
                "{base:#x}+{size:#x}"
            );
        }
        a.reserve(0xc0f0, 0x10, "touching below").unwrap();
        a.reserve(0xc200, 0x10, "touching above").unwrap();
        assert!(matches!(
            a.reserve(0xbff0, 0x20, "x"),
            Err(AllocError::OutsideWindow { .. })
        ));
        assert!(matches!(
            a.reserve(u64::MAX, 2, "x"),
            Err(AllocError::OutsideWindow { .. })
        ));
        assert!(matches!(
            a.reserve(0xd000, 0, "x"),
            Err(AllocError::BadRequest { .. })
        ));
        // Allocation steps over reserved ranges (0xc0f0-0xc20f are taken) and uses the gaps.
        assert_eq!(a.allocate(0x100, 0x100, "y").unwrap(), 0xc300);
        assert_eq!(a.allocate(0xf0, 0x10, "z").unwrap(), 0xc000);
        assert_eq!(a.allocate(0x10, 0x10, "w").unwrap(), 0xc210);
    }

    #[test]
    fn exhaustion_and_bad_requests_are_errors() {
        let mut gsi = RangeAllocator::new("gsi", 16, 24);
        for want in 16..24 {
            assert_eq!(gsi.allocate(1, 1, "intx").unwrap(), want);
        }
        assert!(matches!(
            gsi.allocate(1, 1, "one too many"),
            Err(AllocError::Exhausted { .. })
        ));
        assert!(gsi.free(20));
        assert!(!gsi.free(20));
        assert_eq!(gsi.allocate(1, 1, "again").unwrap(), 20);
        let mut m = RangeAllocator::new("mmio64", 1 << 32, 1 << 33);
        assert!(matches!(
            m.allocate(1 << 33, 1, "huge"),
            Err(AllocError::Exhausted { .. })
        ));
        assert!(matches!(
            m.allocate(0x1000, 3, "odd"),
            Err(AllocError::BadRequest { .. })
        ));
        assert!(matches!(
            m.allocate(0, 1, "empty"),
            Err(AllocError::BadRequest { .. })
        ));
        // An alignment so large that rounding up wraps is exhaustion, not an overflow.
        let mut top = RangeAllocator::new("top", u64::MAX - 0xfff, u64::MAX);
        assert!(matches!(
            top.allocate(0x10, 1 << 63, "wrap"),
            Err(AllocError::Exhausted { .. })
        ));
        assert_eq!(top.allocate(0x10, 0x10, "fits").unwrap(), u64::MAX - 0xfff);
    }
}
