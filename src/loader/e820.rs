//! The guest's physical memory map as the firmware would report it (BIOS e820), built from the
//! [`Layout`]; every loader passes it on in its own encoding.

use crate::layout::{HIGH_RAM_BASE, LOW_RAM_END_MAX, Layout};

/// Where conventional memory ends: the top 1 KiB below 640 KiB is the EBDA by convention, then
/// the VGA window and the BIOS area up to 1 MiB.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of extended memory.
pub const HIMEM_START: u64 = 0x10_0000;

/// The type of an e820 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM (type 1).
    Ram = 1,
    /// Reserved: not RAM the OS may use (type 2).
    Reserved = 2,
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Kind,
}

/// The ECAM (MMCONFIG) window at the start of the MMIO hole (bus 0: 1 MiB): reserved, as
/// Linux wants MMCONFIG in e820 before it trusts the MCFG table.
pub const ECAM_RESERVED: (u64, u64) = (LOW_RAM_END_MAX, LOW_RAM_END_MAX + (1 << 20));
/// The IOAPIC's registers.
pub const IOAPIC_RESERVED: (u64, u64) = (0xfec0_0000, 0xfec0_1000);
/// The local APICs' registers.
pub const LAPIC_RESERVED: (u64, u64) = (0xfee0_0000, 0xfee0_1000);

/// The memory map of a machine with `layout`, sorted by address: RAM 0-0x9FC00, reserved
/// 0x9FC00-1 MiB (EBDA, VGA, BIOS area; the BIOS shadow when there is one), RAM from 1 MiB to
/// the end of low RAM; in the MMIO hole only what is really there is reserved (the ECAM window,
/// the IOAPIC, the LAPIC, a BIOS ROM ending at 4 GiB), so that the OS may place PCI BARs in
/// the host bridge's 32-bit window; RAM above 4 GiB when the guest has more than 3 GiB.
pub fn memory_map(layout: &Layout) -> Vec<E820Entry> {
    let entry = |addr, end: u64, kind| E820Entry {
        addr,
        size: end - addr,
        kind,
    };
    let mut map = vec![
        entry(0, EBDA_START.min(layout.low_ram), E820Kind::Ram),
        entry(EBDA_START, HIMEM_START, E820Kind::Reserved),
    ];
    if layout.low_ram > HIMEM_START {
        map.push(entry(HIMEM_START, layout.low_ram, E820Kind::Ram));
    }
    for (start, end) in [ECAM_RESERVED, IOAPIC_RESERVED, LAPIC_RESERVED] {
        map.push(entry(start, end, E820Kind::Reserved));
    }
    if let Some(size) = layout
        .bios
        .filter(|&s| s > 0 && s <= HIGH_RAM_BASE - LAPIC_RESERVED.1)
    {
        map.push(entry(
            HIGH_RAM_BASE - size,
            HIGH_RAM_BASE,
            E820Kind::Reserved,
        ));
    }
    if layout.high_ram > 0 {
        map.push(entry(
            HIGH_RAM_BASE,
            HIGH_RAM_BASE + layout.high_ram,
            E820Kind::Ram,
        ));
    }
    map
}

/// Usable RAM below 1 MiB and from 1 MiB to the first hole, in KiB: what multiboot's
/// mem_lower/mem_upper and Linux's alt_mem_k report.
pub(crate) fn lower_upper_kib(layout: &Layout) -> (u64, u64) {
    let lower = EBDA_START.min(layout.low_ram) >> 10;
    let upper = layout.low_ram.saturating_sub(HIMEM_START) >> 10;
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_low_ram_and_the_holes() {
        let l = Layout {
            low_ram: 64 << 20,
            high_ram: 0,
            bios: None,
        };
        let map = memory_map(&l);
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820Kind::Ram
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x60400,
                    kind: E820Kind::Reserved
                },
                E820Entry {
                    addr: 1 << 20,
                    size: (64 << 20) - (1 << 20),
                    kind: E820Kind::Ram
                },
                E820Entry {
                    addr: 0xc000_0000,
                    size: 0x10_0000,
                    kind: E820Kind::Reserved
                },
                E820Entry {
                    addr: 0xfec0_0000,
                    size: 0x1000,
                    kind: E820Kind::Reserved
                },
                E820Entry {
                    addr: 0xfee0_0000,
                    size: 0x1000,
                    kind: E820Kind::Reserved
                },
            ]
        );
        assert_eq!(lower_upper_kib(&l), (639, 63 * 1024));
    }

    #[test]
    fn large_guest_has_ram_above_4g() {
        let l = Layout {
            low_ram: LOW_RAM_END_MAX,
            high_ram: 1 << 30,
            bios: None,
        };
        let map = memory_map(&l);
        assert_eq!(map.len(), 7);
        assert_eq!(
            map[6],
            E820Entry {
                addr: 1 << 32,
                size: 1 << 30,
                kind: E820Kind::Ram
            }
        );
        // The PCI 32-bit window (0xd000_0000 up) is not reserved.
        assert!(
            map.iter()
                .all(|e| e.addr + e.size <= 0xd000_0000 || e.addr >= 0xf000_0000)
        );
        // Sorted and non-overlapping.
        assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr));
    }
}
