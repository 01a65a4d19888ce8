//! Guest physical memory: anonymous memmap2 mappings for RAM and ROM regions.
//!
//! KVM registers each region's host address as a memory slot; the software backend reads and
//! writes the same bytes directly. Every guest physical address outside a region is MMIO and goes
//! to the [`crate::IoHandler`]. This is one of the few modules with `unsafe`: the mappings are
//! shared with KVM and with every vCPU thread, so access goes through raw pointers.

use std::sync::{Arc, Mutex, Weak};

use memmap2::{MmapMut, MmapOptions};

/// What a region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Read/write RAM.
    Ram,
    /// Read-only memory (firmware): guest writes are dropped or go to the MMIO bus.
    Rom,
}

/// Errors of guest-memory set-up and host-side access.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// The anonymous mapping could not be made.
    #[error("cannot map {size:#x} bytes of guest memory: {reason}")]
    Map {
        /// Requested size.
        size: u64,
        /// The OS error.
        reason: String,
    },
    /// Two regions overlap.
    #[error(
        "guest memory region {base:#x}+{size:#x} overlaps region {other_base:#x}+{other_size:#x}"
    )]
    Overlap {
        /// New region's base.
        base: u64,
        /// New region's size.
        size: u64,
        /// Existing region's base.
        other_base: u64,
        /// Existing region's size.
        other_size: u64,
    },
    /// A region of size zero, not page aligned, or past the physical address space.
    #[error("bad guest memory region {base:#x}+{size:#x}: {why}")]
    BadRegion {
        /// Base.
        base: u64,
        /// Size.
        size: u64,
        /// Why.
        why: &'static str,
    },
    /// A host access that is not wholly inside one region.
    #[error("guest physical range {addr:#x}+{len:#x} is not backed by memory")]
    OutOfRange {
        /// Start address.
        addr: u64,
        /// Length.
        len: u64,
    },
}

/// One contiguous region of guest physical memory.
#[derive(Debug, Clone)]
pub struct Region {
    base: u64,
    size: u64,
    kind: RegionKind,
    map: Arc<Mapping>,
    /// Offset of this region's first byte inside `map` (non-zero for aliases).
    offset: usize,
}

/// An anonymous mapping; its pointer is stable for its lifetime.
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
    _map: MmapMut,
}

// SAFETY: the mapping is plain anonymous memory owned by this struct; the raw pointer is only a
// cached address of it. Concurrent guest accesses from several vCPUs are the guest's own races,
// exactly as on hardware, and never touch Rust-owned data.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; shared references only hand out copies through raw-pointer copies.
unsafe impl Sync for Mapping {}

impl Region {
    /// Guest physical base address.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// RAM or ROM.
    pub fn kind(&self) -> RegionKind {
        self.kind
    }
    /// The host address of the region's first byte (what KVM registers as the slot).
    pub fn host_addr(&self) -> u64 {
        // `offset` is inside the mapping by construction (`GuestMemory::add_alias` checks).
        self.map.ptr.wrapping_add(self.offset) as u64
    }
    /// Whether `addr` lies in this region.
    #[inline]
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }
}

/// Told of every device write into guest RAM ([`GuestMemory::write_dma`]): a backend that
/// keeps code translated from guest memory drops what the write overwrote, on every vCPU, as it
/// does for a guest store.
pub trait DmaObserver: Send + Sync {
    /// `len` bytes at guest physical `addr` (inside one page) were written by a device.
    fn written(&self, addr: u64, len: u64);
}

/// The observers of device writes, shared by every clone of a [`GuestMemory`]; held weakly, so
/// an observer goes when its backend does.
#[derive(Clone, Default)]
struct Observers(Arc<Mutex<Vec<Weak<dyn DmaObserver>>>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |v| v.len());
        write!(f, "{n} DMA observers")
    }
}

/// The guest's physical memory: a sorted list of non-overlapping regions.
#[derive(Debug, Clone, Default)]
pub struct GuestMemory {
    regions: Vec<Region>,
    observers: Observers,
}

const PAGE: u64 = 4096;

impl GuestMemory {
    /// Empty memory; add regions with [`GuestMemory::add`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a region of fresh zeroed memory at `base`.
    ///
    /// # Errors
    /// [`MemoryError::BadRegion`] for a zero, unaligned or too large region,
    /// [`MemoryError::Overlap`] if it overlaps an existing one, [`MemoryError::Map`] if the host
    /// refuses the mapping.
    pub fn add(&mut self, base: u64, size: u64, kind: RegionKind) -> Result<(), MemoryError> {
        self.check_new(base, size)?;
        let len = usize::try_from(size).map_err(|_| MemoryError::BadRegion {
            base,
            size,
            why: "larger than the host address space",
        })?;
        let mut map = MmapOptions::new()
            .len(len)
            .map_anon()
            .map_err(|e| MemoryError::Map {
                size,
                reason: e.to_string(),
            })?;
        let ptr = map.as_mut_ptr();
        self.insert(Region {
            base,
            size,
            kind,
            map: Arc::new(Mapping {
                ptr,
                len,
                _map: map,
            }),
            offset: 0,
        });
        Ok(())
    }

    /// Makes the last `size` bytes of the region at `of_base` visible also at `base` (the BIOS
    /// alias below 1 MiB). Both views share the same bytes.
    ///
    /// # Errors
    /// As [`GuestMemory::add`]; [`MemoryError::OutOfRange`] if `of_base` is no region's base or
    /// the region is smaller than `size`.
    pub fn add_alias(&mut self, base: u64, size: u64, of_base: u64) -> Result<(), MemoryError> {
        self.check_new(base, size)?;
        let src = self
            .regions
            .iter()
            .find(|r| r.base == of_base && r.size >= size)
            .ok_or(MemoryError::OutOfRange {
                addr: of_base,
                len: size,
            })?
            .clone();
        let offset = src.offset + (src.size - size) as usize;
        debug_assert!(offset + size as usize <= src.map.len);
        self.insert(Region {
            base,
            size,
            kind: src.kind,
            map: src.map,
            offset,
        });
        Ok(())
    }

    fn check_new(&self, base: u64, size: u64) -> Result<(), MemoryError> {
        if size == 0 || base % PAGE != 0 || size % PAGE != 0 {
            return Err(MemoryError::BadRegion {
                base,
                size,
                why: "regions must be non-empty and page aligned",
            });
        }
        if base.checked_add(size).is_none_or(|end| end > 1 << 52) {
            return Err(MemoryError::BadRegion {
                base,
                size,
                why: "beyond the 52-bit physical address space",
            });
        }
        if let Some(o) = self
            .regions
            .iter()
            .find(|r| base < r.base + r.size && r.base < base + size)
        {
            return Err(MemoryError::Overlap {
                base,
                size,
                other_base: o.base,
                other_size: o.size,
            });
        }
        Ok(())
    }

    fn insert(&mut self, r: Region) {
        let pos = self.regions.partition_point(|x| x.base < r.base);
        self.regions.insert(pos, r);
    }

    /// The regions, sorted by base.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Total bytes of RAM (aliases and ROM excluded).
    pub fn ram_size(&self) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.kind == RegionKind::Ram)
            .map(|r| r.size)
            .sum()
    }

    /// The region holding `addr`, if any.
    #[inline]
    pub fn region(&self, addr: u64) -> Option<&Region> {
        self.regions.iter().find(|r| r.contains(addr))
    }

    /// A host pointer to `len` bytes at `addr`, if they lie wholly in one region. `writable`
    /// refuses ROM. The pointer stays valid as long as this `GuestMemory` (or a clone) lives.
    #[inline]
    pub fn host_ptr(&self, addr: u64, len: usize, writable: bool) -> Option<*mut u8> {
        let r = self.region(addr)?;
        if writable && r.kind == RegionKind::Rom {
            return None;
        }
        let off = addr - r.base;
        if off.checked_add(len as u64)? > r.size {
            return None;
        }
        Some(r.map.ptr.wrapping_add(r.offset + off as usize))
    }

    /// Copies guest bytes at `addr` into `buf`.
    ///
    /// # Errors
    /// [`MemoryError::OutOfRange`] if the range is not wholly inside one region.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let p = self
            .host_ptr(addr, buf.len(), false)
            .ok_or(MemoryError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })?;
        // SAFETY: `host_ptr` checked that `buf.len()` bytes from `p` lie inside a live mapping,
        // and `buf` is a distinct Rust-owned buffer, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into guest RAM at `addr` (ROM refuses).
    ///
    /// # Errors
    /// [`MemoryError::OutOfRange`] if the range is not wholly inside one RAM region.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let p = self
            .host_ptr(addr, data.len(), true)
            .ok_or(MemoryError::OutOfRange {
                addr,
                len: data.len() as u64,
            })?;
        // SAFETY: `host_ptr` checked the destination range lies inside a live writable mapping;
        // `data` is Rust-owned and cannot overlap guest memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// A device (DMA) writes `data` into guest RAM at `addr`: the bytes land as
    /// [`GuestMemory::write`] puts them, and every [`DmaObserver`] is told, page by page, so
    /// that code translated from them is dropped on every vCPU exactly as for a guest store.
    ///
    /// # Errors
    /// As [`GuestMemory::write`]; nothing is written then.
    pub fn write_dma(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.write(addr, data)?;
        let observers: Vec<Arc<dyn DmaObserver>> = {
            let mut v = self.observers.0.lock().unwrap_or_else(|p| p.into_inner());
            v.retain(|o| o.strong_count() > 0);
            v.iter().filter_map(Weak::upgrade).collect()
        };
        if observers.is_empty() {
            return Ok(());
        }
        let end = addr + data.len() as u64;
        let mut at = addr;
        while at < end {
            let len = ((at | (PAGE - 1)) + 1).min(end) - at;
            for o in &observers {
                o.written(at, len);
            }
            at += len;
        }
        Ok(())
    }

    /// Adds an observer of device writes (a backend that translates guest code registers one).
    /// It is held weakly: it stops being told once the caller drops it.
    pub fn observe_dma(&self, observer: Weak<dyn DmaObserver>) {
        let mut v = self.observers.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|o| o.strong_count() > 0);
        v.push(observer);
    }

    /// Copies `data` into guest memory at `addr`, ROM included: for loaders only.
    ///
    /// # Errors
    /// [`MemoryError::OutOfRange`] if the range is not wholly inside one region.
    pub fn load(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        let p = self
            .host_ptr(addr, data.len(), false)
            .ok_or(MemoryError::OutOfRange {
                addr,
                len: data.len() as u64,
            })?;
        // SAFETY: as in `write`; writing ROM from the host side is what a loader does.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Reads a little-endian value of up to 8 bytes.
    ///
    /// # Errors
    /// As [`GuestMemory::read`].
    pub fn read_le(&self, addr: u64, len: usize) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b[..len.min(8)])?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes the low `len` bytes of `val` little-endian.
    ///
    /// # Errors
    /// As [`GuestMemory::write`].
    pub fn write_le(&self, addr: u64, len: usize, val: u64) -> Result<(), MemoryError> {
        self.write(addr, &val.to_le_bytes()[..len.min(8)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_round_trip() {
        let mut m = GuestMemory::new();
        m.add(0, 0x10000, RegionKind::Ram).unwrap();
        m.write(0x7c00, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 3];
        m.read(0x7c00, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        m.write_le(0x100, 4, 0xdead_beef).unwrap();
        assert_eq!(m.read_le(0x100, 4).unwrap(), 0xdead_beef);
    }

    #[test]
    fn overlap_is_refused_with_both_ranges() {
        let mut m = GuestMemory::new();
        m.add(0, 0x10000, RegionKind::Ram).unwrap();
        let e = m.add(0x8000, 0x10000, RegionKind::Ram).unwrap_err();
        assert_eq!(
            e,
            MemoryError::Overlap {
                base: 0x8000,
                size: 0x10000,
                other_base: 0,
                other_size: 0x10000
            }
        );
    }

    #[test]
    fn accesses_outside_regions_and_across_ends_fail() {
        let mut m = GuestMemory::new();
        m.add(0, 0x1000, RegionKind::Ram).unwrap();
        assert!(m.write(0xfff, &[0, 0]).is_err());
        assert!(m.read(0x2000, &mut [0]).is_err());
        assert!(m.add(0x1001, 0x1000, RegionKind::Ram).is_err());
        assert!(m.add(0x3000, 0, RegionKind::Ram).is_err());
    }

    #[test]
    fn dma_writes_tell_the_observers_page_by_page() {
        #[derive(Default)]
        struct Log(Mutex<Vec<(u64, u64)>>);
        impl DmaObserver for Log {
            fn written(&self, addr: u64, len: u64) {
                self.0.lock().unwrap().push((addr, len));
            }
        }
        let mut m = GuestMemory::new();
        m.add(0, 4 * PAGE, RegionKind::Ram).unwrap();
        let log = Arc::new(Log::default());
        let weak: Weak<dyn DmaObserver> = Arc::downgrade(&(log.clone() as Arc<dyn DmaObserver>));
        // A clone made later shares the observers.
        m.clone().observe_dma(weak);
        m.write_dma(PAGE - 2, &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(m.read_le(PAGE - 2, 5).unwrap(), 0x05_0403_0201);
        assert_eq!(*log.0.lock().unwrap(), vec![(PAGE - 2, 2), (PAGE, 3)]);
        // A refused write tells nobody; a dropped observer is not told.
        assert!(m.write_dma(4 * PAGE - 1, &[0, 0]).is_err());
        assert_eq!(log.0.lock().unwrap().len(), 2);
        drop(log);
        m.write_dma(0, &[9]).unwrap();
    }

    #[test]
    fn rom_refuses_guest_writes_but_loads_and_aliases() {
        let mut m = GuestMemory::new();
        m.add(0xffff_0000, 0x10000, RegionKind::Rom).unwrap();
        m.add_alias(0xf0000, 0x10000, 0xffff_0000).unwrap();
        m.load(0xffff_fff0, &[0xea]).unwrap();
        assert!(m.write(0xffff_fff0, &[0]).is_err());
        assert_eq!(m.read_le(0xffff0, 1).unwrap(), 0xea);
        assert_eq!(m.ram_size(), 0);
    }
}
