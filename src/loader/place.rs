//! Placement shared by the PVH and multiboot loaders: kernel pieces that must go at fixed
//! physical addresses, and the boot data and initrd that go around them.

use std::ops::Range;

use janus_accel::{GuestMemory, MemoryError};

use super::bytes::{Placer, fill_zero, in_ram};
use super::e820::{EBDA_START, HIMEM_START};
use super::{BootRequest, KernelError};
use crate::layout::LOW_RAM_END_MAX;

/// Boot data never goes below this (page 0 stays free, as firmware keeps it).
const BOOT_DATA_MIN: u64 = 0x1000;

/// A piece of the kernel: `data` at `addr`, zero-extended to `memsz` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk<'a> {
    pub(crate) addr: u64,
    pub(crate) data: &'a [u8],
    pub(crate) memsz: u64,
}

impl Chunk<'_> {
    fn end(&self) -> u64 {
        self.addr.saturating_add(self.memsz)
    }

    /// Whether `addr` is inside this piece.
    pub(crate) fn contains(&self, addr: u64) -> bool {
        (self.addr..self.end()).contains(&addr)
    }
}

/// Checks that every chunk lies in RAM below 4 GiB (32-bit entry code cannot reach more), and
/// returns a placer with them taken plus
/// the span from the lowest to the highest byte.
pub(crate) fn check_chunks(
    boot: &BootRequest<'_>,
    chunks: &[Chunk<'_>],
) -> Result<(Placer, Range<u64>), KernelError> {
    let ram_end = boot.low_ram_end();
    let mut placer = Placer::default();
    let (mut lo, mut hi) = (u64::MAX, 0);
    for c in chunks {
        let (start, end) = (c.addr, c.end());
        if end > ram_end || !in_ram(boot.mem, start, end) {
            return Err(if start < LOW_RAM_END_MAX && end <= LOW_RAM_END_MAX {
                KernelError::KernelTooLarge {
                    start,
                    end,
                    ram_end,
                }
            } else {
                KernelError::SegmentOutsideRam {
                    start,
                    end,
                    ram_end,
                }
            });
        }
        placer.reserve(start, end);
        (lo, hi) = (lo.min(start), hi.max(end));
    }
    Ok((placer, lo.min(hi)..hi))
}

/// Copies every chunk into guest memory and zeroes the rest of each.
pub(crate) fn write_chunks(mem: &GuestMemory, chunks: &[Chunk<'_>]) -> Result<(), MemoryError> {
    for c in chunks {
        mem.write(c.addr, c.data)?;
        let filesz = c.data.len() as u64;
        fill_zero(mem, c.addr + filesz, c.memsz.saturating_sub(filesz))?;
    }
    Ok(())
}

/// The lowest free 16-byte aligned place for `size` bytes of boot data, from 0x1000 up,
/// outside the EBDA/VGA/BIOS hole; it is then taken.
pub(crate) fn place_boot_data(
    boot: &BootRequest<'_>,
    placer: &mut Placer,
    what: &'static str,
    size: u64,
) -> Result<u64, KernelError> {
    placer.reserve(EBDA_START, HIMEM_START);
    let addr = placer
        .lowest(size, 16, BOOT_DATA_MIN, boot.low_ram_end())
        .ok_or(KernelError::NoRoom { what, size })?;
    placer.reserve(addr, addr + size);
    Ok(addr)
}

/// Places an initrd of `size` bytes page-aligned in free RAM from 1 MiB: as low as possible
/// from `from` on when `low` (a multiboot module after the kernel), else as high as possible.
pub(crate) fn place_initrd(
    boot: &BootRequest<'_>,
    placer: &mut Placer,
    size: u64,
    from: u64,
    low: bool,
) -> Result<u64, KernelError> {
    let ram_end = boot.low_ram_end();
    let found = if low {
        placer
            .lowest(size, 0x1000, from.max(HIMEM_START), ram_end)
            .or_else(|| placer.lowest(size, 0x1000, HIMEM_START, ram_end))
    } else {
        placer.highest(size, 0x1000, HIMEM_START, ram_end)
    };
    let addr = found.ok_or(KernelError::InitrdTooLarge {
        size,
        start: HIMEM_START,
        limit: ram_end,
        why: "the end of RAM below 4 GiB, less the kernel and boot data",
    })?;
    placer.reserve(addr, addr + size);
    Ok(addr)
}
