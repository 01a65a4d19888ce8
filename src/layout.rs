//! The PC memory map janus gives every guest.
//!
//! ```text
//! 0x0000_0000  RAM (with --bios, 0xC0000-0xFFFFF is shadow RAM holding a copy of the ROM's
//!              last 256 KiB, or all of a smaller ROM, ending at 1 MiB)
//! 0xC000_0000  MMIO hole: unassigned MMIO, IOAPIC 0xFEC0_0000, LAPIC 0xFEE0_0000,
//!              BIOS ROM ending at 0x1_0000_0000
//! 4 GiB        the rest of RAM, for guests larger than 3 GiB
//! ```
//!
//! A flat image is loaded at 0x7C00 and entered in real mode at 0000:7C00 (the guest test
//! protocol); a BIOS ROM is mapped so that it ends at 4 GiB and the vCPU starts at the reset
//! vector, exactly as a real CPU resets (both loaded by [`crate::loader::flat`]).

use janus_accel::{GuestMemory, MemoryError, RegionKind};

/// Where RAM below 4 GiB ends at most: the MMIO hole starts here.
pub const LOW_RAM_END_MAX: u64 = 0xc000_0000;
/// Where RAM above 4 GiB starts.
pub const HIGH_RAM_BASE: u64 = 1 << 32;
/// Where a flat image is loaded and entered.
pub const FLAT_LOAD_ADDR: u64 = 0x7c00;
/// How much of the BIOS ROM is copied to the shadow RAM just below 1 MiB: at most the whole
/// shadow area, 0xC0000-0xFFFFF (SeaBIOS's 256 KiB build has code below 0xE0000 that it would
/// copy there itself through a chipset's PAM registers).
pub const BIOS_ALIAS_MAX: u64 = 256 << 10;
/// The largest BIOS ROM janus maps (as large flash parts are).
pub const BIOS_MAX: u64 = 16 << 20;
/// The smallest guest memory janus accepts.
pub const MEM_MIN: u64 = 1 << 20;
/// The largest guest memory janus accepts.
pub const MEM_MAX: u64 = 1 << 40;

/// Errors of building the memory map and loading images; each is one line a user can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    /// `--mem` out of range or not page aligned.
    #[error("memory size {size:#x} is not supported: {why}")]
    BadMemSize {
        /// Requested size.
        size: u64,
        /// Why.
        why: &'static str,
    },
    /// The image does not fit where it must go.
    #[error(
        "image is {size} bytes but only {max} bytes of RAM are free above 0x7c00; it needs --mem \
         {} or more",
        mem_to_fit(FLAT_LOAD_ADDR + .size)
    )]
    ImageTooLarge {
        /// Image size.
        size: u64,
        /// Room available.
        max: u64,
    },
    /// An empty image.
    #[error("image is empty")]
    EmptyImage,
    /// A BIOS ROM of a size that cannot be mapped.
    #[error("BIOS image is {size} bytes; it must be a non-zero multiple of 4 KiB up to 16 MiB")]
    BadBiosSize {
        /// ROM size.
        size: u64,
    },
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// The smallest `--mem` (in whole MiB, as `--mem` writes it) whose RAM reaches `end`.
pub fn mem_to_fit(end: u64) -> String {
    format!("{}M", end.max(MEM_MIN).div_ceil(1 << 20))
}

/// The RAM sizes of a built machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// RAM bytes below 4 GiB (including the BIOS shadow below 1 MiB).
    pub low_ram: u64,
    /// RAM bytes from 4 GiB.
    pub high_ram: u64,
    /// BIOS ROM size, if any.
    pub bios: Option<u64>,
}

/// Builds guest memory of `mem` bytes, with room for a BIOS ROM of `bios_size` bytes.
///
/// # Errors
/// [`LoadError::BadMemSize`], [`LoadError::BadBiosSize`] or a mapping failure.
pub fn build_memory(mem: u64, bios_size: Option<u64>) -> Result<(GuestMemory, Layout), LoadError> {
    if mem < MEM_MIN {
        return Err(LoadError::BadMemSize {
            size: mem,
            why: "janus needs at least 1 MiB",
        });
    }
    if mem > MEM_MAX {
        return Err(LoadError::BadMemSize {
            size: mem,
            why: "janus supports at most 1 TiB",
        });
    }
    if mem % 4096 != 0 {
        return Err(LoadError::BadMemSize {
            size: mem,
            why: "it must be a multiple of 4 KiB",
        });
    }
    let low_ram = mem.min(LOW_RAM_END_MAX);
    let high_ram = mem - low_ram;
    let mut m = GuestMemory::new();
    match bios_size {
        None => m.add(0, low_ram, RegionKind::Ram)?,
        Some(size) => {
            if size == 0 || size % 4096 != 0 || size > BIOS_MAX {
                return Err(LoadError::BadBiosSize { size });
            }
            // The shadow below 1 MiB is plain RAM, filled from the ROM by the loader: shadow
            // RAM already enabled for reading and writing, as firmware's first step makes it
            // (janus's host bridge has no PAM registers to switch it).
            m.add(0, low_ram, RegionKind::Ram)?;
            m.add(HIGH_RAM_BASE - size, size, RegionKind::Rom)?;
        }
    }
    if high_ram > 0 {
        m.add(HIGH_RAM_BASE, high_ram, RegionKind::Ram)?;
    }
    Ok((
        m,
        Layout {
            low_ram,
            high_ram,
            bios: bios_size,
        },
    ))
}

/// Parses a memory size the way QEMU's `-m` does: a plain number is MiB; suffixes K, M, G, T
/// (case-insensitive, optional trailing B or iB).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_mem_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (lower, 1 << 20),
        _ => return Err(format!("'{s}' is not a memory size (try 64M or 2G)")),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a memory size (try 64M or 2G)"))?;
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("memory size '{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_like_qemu() {
        assert_eq!(parse_mem_size("64"), Ok(64 << 20));
        assert_eq!(parse_mem_size("64M"), Ok(64 << 20));
        assert_eq!(parse_mem_size("2g"), Ok(2 << 30));
        assert_eq!(parse_mem_size("512KiB"), Ok(512 << 10));
        assert!(parse_mem_size("lots").is_err());
        assert!(parse_mem_size("0").is_err());
        assert!(parse_mem_size("-1M").is_err());
        assert!(parse_mem_size("99999999999T").is_err());
    }

    #[test]
    fn small_guest_is_one_region() {
        let (m, l) = build_memory(64 << 20, None).unwrap();
        assert_eq!(m.regions().len(), 1);
        assert_eq!((l.low_ram, l.high_ram), (64 << 20, 0));
    }

    #[test]
    fn large_guest_gets_ram_above_4g_and_a_hole() {
        let (m, l) = build_memory(4 << 30, None).unwrap();
        assert_eq!(l.low_ram, LOW_RAM_END_MAX);
        assert_eq!(l.high_ram, (4 << 30) - LOW_RAM_END_MAX);
        assert!(m.region(0xd000_0000).is_none());
        assert!(m.region(HIGH_RAM_BASE).is_some());
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(
            build_memory(1000, None),
            Err(LoadError::BadMemSize { .. })
        ));
        assert!(matches!(
            build_memory(2 << 40, None),
            Err(LoadError::BadMemSize { .. })
        ));
        assert!(matches!(
            build_memory(16 << 20, Some(100)),
            Err(LoadError::BadBiosSize { .. })
        ));
        assert!(matches!(
            build_memory(16 << 20, Some(32 << 20)),
            Err(LoadError::BadBiosSize { .. })
        ));
    }
}
