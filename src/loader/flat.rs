//! The two images that are not kernels: a flat image loaded at 0x7C00 and entered in real mode
//! like a boot sector (the guest test protocol), and a BIOS ROM that ends at 4 GiB, entered at
//! the reset vector. The memory map they go into is [`crate::layout`]'s.

use janus_accel::{CpuState, GuestMemory, RegionKind};

use crate::layout::{BIOS_ALIAS_MAX, FLAT_LOAD_ADDR, HIGH_RAM_BASE, LoadError};

/// Loads a flat image at 0x7C00 and returns the boot-sector entry state.
///
/// # Errors
/// [`LoadError::EmptyImage`], or [`LoadError::ImageTooLarge`] if it runs past low RAM (or into
/// the BIOS alias).
pub fn load_flat(mem: &GuestMemory, image: &[u8]) -> Result<CpuState, LoadError> {
    if image.is_empty() {
        return Err(LoadError::EmptyImage);
    }
    let region_end = mem
        .region(FLAT_LOAD_ADDR)
        .filter(|r| r.kind() == RegionKind::Ram)
        .map(|r| r.base() + r.size())
        .unwrap_or(FLAT_LOAD_ADDR);
    let max = region_end - FLAT_LOAD_ADDR;
    if image.len() as u64 > max {
        return Err(LoadError::ImageTooLarge {
            size: image.len() as u64,
            max,
        });
    }
    mem.load(FLAT_LOAD_ADDR, image)?;
    Ok(CpuState::boot_sector())
}

/// Loads a BIOS ROM so that it ends at 4 GiB (memory must have been built with its size), copies
/// its last 256 KiB (or all of it) to the shadow RAM ending at 1 MiB, and returns the reset
/// state.
///
/// # Errors
/// [`LoadError::BadBiosSize`] if memory has no ROM of this size.
pub fn load_bios(mem: &GuestMemory, rom: &[u8]) -> Result<CpuState, LoadError> {
    let size = rom.len() as u64;
    let base = HIGH_RAM_BASE
        .checked_sub(size)
        .ok_or(LoadError::BadBiosSize { size })?;
    match mem.region(base) {
        Some(r) if r.kind() == RegionKind::Rom && r.base() == base => {}
        _ => return Err(LoadError::BadBiosSize { size }),
    }
    mem.load(base, rom)?;
    // The shadow below 1 MiB: a copy of the ROM's last 256 KiB (the real-mode entry points and
    // the 32-bit code).
    let shadow = size.min(BIOS_ALIAS_MAX) as usize;
    mem.load((1 << 20) - shadow as u64, &rom[rom.len() - shadow..])?;
    Ok(CpuState::reset(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::build_memory;

    #[test]
    fn bios_is_mapped_at_top_and_shadowed_below_1m() {
        let (m, _) = build_memory(16 << 20, Some(512 << 10)).unwrap();
        let mut rom = vec![0u8; 512 << 10];
        let n = rom.len();
        rom[n - 16] = 0xea;
        rom[n - 128 * 1024] = 0x11;
        rom[n - 256 * 1024] = 0x22;
        rom[n - 256 * 1024 - 1] = 0x33;
        let s = load_bios(&m, &rom).unwrap();
        assert_eq!(s.linear_rip(), 0xffff_fff0);
        assert_eq!(m.read_le(0xffff_fff0, 1).unwrap(), 0xea);
        assert_eq!(m.read_le(0xffff0, 1).unwrap(), 0xea);
        assert_eq!(m.read_le(0xe0000, 1).unwrap(), 0x11);
        // The last 256 KiB only: 0xC0000-0xFFFFF.
        assert_eq!(m.read_le(0xc0000, 1).unwrap(), 0x22);
        assert_eq!(m.read_le(0xbffff, 1).unwrap(), 0);
        // RAM continues above 1 MiB and below the shadow; the shadow is writable RAM (the
        // firmware keeps its variables there) and the ROM is not.
        m.write(0x100000, &[1]).unwrap();
        m.write(0xdffff, &[1]).unwrap();
        m.write(0xe0000, &[1]).unwrap();
        assert_eq!(
            m.read_le(0xffff_fff0 - (128 << 10) + 0x10, 1).unwrap(),
            0x11
        );
        assert!(m.write(0xffff_0000, &[1]).is_err(), "the ROM is read-only");
    }

    #[test]
    fn flat_image_loads_at_7c00_and_too_large_is_refused() {
        let (m, _) = build_memory(1 << 20, None).unwrap();
        let s = load_flat(&m, &[0xf4]).unwrap();
        assert_eq!(s.linear_rip(), 0x7c00);
        assert_eq!(m.read_le(0x7c00, 1).unwrap(), 0xf4);
        let big = vec![0u8; (1 << 20) - 0x7c00 + 1];
        assert_eq!(
            load_flat(&m, &big),
            Err(LoadError::ImageTooLarge {
                size: big.len() as u64,
                max: (1 << 20) - 0x7c00
            })
        );
        assert_eq!(load_flat(&m, &[]), Err(LoadError::EmptyImage));
        let e = load_flat(&m, &big).unwrap_err().to_string();
        assert!(e.ends_with("it needs --mem 2M or more"), "{e}");
        assert_eq!(crate::layout::mem_to_fit(96 << 20), "96M");
        assert_eq!(crate::layout::mem_to_fit((96 << 20) + 1), "97M");
    }
}
