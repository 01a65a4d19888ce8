//! Helpers shared by the loaders: bounds-checked little-endian field access, a first-fit placer
//! for boot data, RAM range checks and zero fill.

use janus_accel::{GuestMemory, MemoryError, RegionKind};

/// `len` bytes at `off`, if the slice has them.
pub(crate) fn slice(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    b.get(start..end)
}

fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// The byte at `off`.
pub(crate) fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// The little-endian u16 at `off`.
pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_le_bytes)
}

/// The little-endian u32 at `off`.
pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_le_bytes)
}

/// The little-endian u64 at `off`.
pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    array(b, off).map(u64::from_le_bytes)
}

/// Writes `val` little-endian into the first `N` bytes at `off` of a buffer the caller sized.
pub(crate) fn put<const N: usize>(b: &mut [u8], off: usize, val: u64) {
    b[off..off + N].copy_from_slice(&val.to_le_bytes()[..N]);
}

/// Rounds `v` up to a multiple of the power of two `align`, if that does not overflow.
pub(crate) fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Whether `[start, end)` lies wholly inside one RAM region.
pub(crate) fn in_ram(mem: &GuestMemory, start: u64, end: u64) -> bool {
    match mem.region(start) {
        Some(r) => r.kind() == RegionKind::Ram && end <= r.base() + r.size() && start <= end,
        None => false,
    }
}

/// Writes `len` zero bytes at `addr`.
pub(crate) fn fill_zero(mem: &GuestMemory, addr: u64, len: u64) -> Result<(), MemoryError> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        mem.write(addr + done, &ZEROS[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// Free-space bookkeeping for placing boot data and initrds around what is already taken.
#[derive(Debug, Default)]
pub(crate) struct Placer {
    used: Vec<(u64, u64)>,
}

impl Placer {
    /// Marks `[start, end)` as taken.
    pub(crate) fn reserve(&mut self, start: u64, end: u64) {
        if start < end {
            self.used.push((start, end));
        }
    }

    fn is_free(&self, start: u64, end: u64) -> bool {
        self.used.iter().all(|&(s, e)| end <= s || start >= e)
    }

    /// The lowest `align`-aligned start of `size` free bytes inside `[lo, hi)`.
    pub(crate) fn lowest(&self, size: u64, align: u64, lo: u64, hi: u64) -> Option<u64> {
        // The best start is `lo` or just after something taken, rounded up.
        std::iter::once(lo)
            .chain(self.used.iter().map(|&(_, e)| e))
            .filter(|&c| c >= lo)
            .filter_map(|c| align_up(c, align))
            .filter(|&s| s.checked_add(size).is_some_and(|e| e <= hi) && self.is_free(s, s + size))
            .min()
    }

    /// The highest `align`-aligned start of `size` free bytes inside `[lo, hi)`.
    pub(crate) fn highest(&self, size: u64, align: u64, lo: u64, hi: u64) -> Option<u64> {
        // The best end is `hi` or just below something taken; the start is rounded down.
        std::iter::once(hi)
            .chain(self.used.iter().map(|&(s, _)| s))
            .filter(|&c| c <= hi)
            .filter_map(|c| c.checked_sub(size))
            .map(|s| s & !(align - 1))
            .filter(|&s| s >= lo && self.is_free(s, s + size))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_reads_fail_instead_of_panicking() {
        let b = [1, 2, 3, 4, 5];
        assert_eq!(u16_at(&b, 3), Some(0x0504));
        assert_eq!(u16_at(&b, 4), None);
        assert_eq!(u32_at(&b, usize::MAX), None);
        assert_eq!(u64_at(&b, 0), None);
        assert_eq!(slice(&b, 2, 3), Some(&b[2..]));
        assert_eq!(slice(&b, 2, 4), None);
        assert_eq!(slice(&b, u64::MAX, 2), None);
    }

    #[test]
    fn placer_finds_the_lowest_and_highest_gaps() {
        let mut p = Placer::default();
        p.reserve(0x1000, 0x3000);
        p.reserve(0x5000, 0x6000);
        assert_eq!(p.lowest(0x1000, 0x1000, 0, 0x10000), Some(0));
        assert_eq!(p.lowest(0x1800, 0x1000, 0x800, 0x10000), Some(0x3000));
        assert_eq!(p.lowest(0x3000, 0x1000, 0, 0x10000), Some(0x6000));
        assert_eq!(p.highest(0x2000, 0x1000, 0, 0x10000), Some(0xe000));
        assert_eq!(p.highest(0x2000, 0x1000, 0, 0x5800), Some(0x3000));
        assert_eq!(p.highest(0x1000, 0x1000, 0x6000, 0x6fff), None);
        assert_eq!(p.lowest(u64::MAX, 1, 0, u64::MAX), None);
    }
}
