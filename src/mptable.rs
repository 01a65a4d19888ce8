//! The Intel MultiProcessor Specification 1.4 tables: the MP floating pointer structure and the
//! MP configuration table (processors, the ISA bus, the IOAPIC, the ISA interrupts and the local
//! interrupts), for guests that predate ACPI or boot with `acpi=off`. Placed with the ACPI tables
//! by [`crate::acpi::build_firmware_tables`].
//!
//! Interrupt routing matches the MADT: ISA IRQ n on IOAPIC pin n, except IRQ 0 on pin 2 (the
//! 8259's cascade input IRQ 2 is not routed) and the ExtINT entry of pin 0; LINT0 is ExtINT and
//! LINT1 NMI on every processor.

use crate::acpi::checksum;
use crate::board::PciLayout;
use crate::devices::ioapic::IOAPIC_BASE;
use crate::devices::lapic::APIC_DEFAULT_BASE;

/// MP specification revision 1.4.
const SPEC_REV: u8 = 4;
/// The local APIC version processors report (an integrated xAPIC).
const LAPIC_VERSION: u8 = 0x14;
/// The IOAPIC version (its version register's low byte).
const IOAPIC_VERSION: u8 = 0x20;
/// The ISA bus's id.
const ISA_BUS: u8 = 0;

/// The 16-byte MP floating pointer structure naming the configuration table at `table`.
pub fn floating_pointer(table: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(b"_MP_");
    b[4..8].copy_from_slice(&(table as u32).to_le_bytes());
    b[8] = 1; // length in 16-byte paragraphs
    b[9] = SPEC_REV;
    // Feature byte 1 = 0: a configuration table exists; byte 2 bit 7 (IMCRP) = 0: virtual
    // wire mode, no IMCR.
    b[10] = checksum(&b);
    b
}

/// The PCI bus's id in the MP table (ids are the table's own; Linux maps the first PCI bus
/// entry to PCI bus 0).
const PCI_BUS: u8 = 1;
/// I/O interrupt flags of a PCI INTx: active low (bits 1:0 = 3), level-triggered (bits 3:2 = 3).
const PCI_INT_FLAGS: u16 = 0x000f;

/// The MP configuration table for `nr_vcpus` processors (APIC ids 0..n, the first the BSP),
/// the IOAPIC with id `ioapic_id` and, with `pci`, the PCI bus with each slot's INTA-INTD on
/// the IOAPIC pins the DSDT's `_PRT` names (it holds no pointers, so it may be placed
/// anywhere).
pub fn config_table(nr_vcpus: usize, ioapic_id: u8, pci: Option<&PciLayout>) -> Vec<u8> {
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    // CPUID signature and features a processor entry reports: family 6, and FPU and APIC.
    let signature: u32 = 0x600;
    let features: u32 = 1 | 1 << 9;
    for i in 0..nr_vcpus {
        let flags = 1 | if i == 0 { 2 } else { 0 }; // enabled, bootstrap processor
        entries.extend_from_slice(&[0, i as u8, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&signature.to_le_bytes());
        entries.extend_from_slice(&features.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, ISA_BUS]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    if pci.is_some() {
        entries.extend_from_slice(&[1, PCI_BUS]);
        entries.extend_from_slice(b"PCI   ");
        count += 1;
    }
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    count += 1;
    // I/O interrupt assignments: type (0 INT, 3 ExtINT), flags (0: conforms to the bus), source
    // bus and IRQ, destination IOAPIC and pin.
    let mut io_int = |kind: u8, irq: u8, pin: u8| {
        entries.extend_from_slice(&[3, kind, 0, 0, ISA_BUS, irq, ioapic_id, pin]);
        count += 1;
    };
    io_int(3, 0, 0);
    for irq in 0..16u8 {
        match irq {
            0 => io_int(0, 0, 2),
            2 => {}
            n => io_int(0, n, n),
        }
    }
    // PCI: source IRQ = slot << 2 | pin (0 = INTA), on the swizzled GSI's pin.
    if let Some(p) = pci {
        for slot in 0..crate::pci::NR_SLOTS {
            for pin in 0..4usize {
                let gsi = p.intx_gsis[(slot + pin) % p.intx_gsis.len()];
                entries.push(3);
                entries.push(0);
                entries.extend_from_slice(&PCI_INT_FLAGS.to_le_bytes());
                entries.extend_from_slice(&[
                    PCI_BUS,
                    (slot << 2 | pin) as u8,
                    ioapic_id,
                    gsi as u8,
                ]);
                count += 1;
            }
        }
    }
    // Local interrupt assignments: ExtINT on LINT0, NMI on LINT1, every local APIC (0xff).
    for (kind, lint) in [(3u8, 0u8), (1, 1)] {
        entries.extend_from_slice(&[4, kind, 0, 0, ISA_BUS, 0, 0xff, lint]);
        count += 1;
    }

    let mut t = Vec::with_capacity(44 + entries.len());
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    t.push(SPEC_REV);
    t.push(0); // checksum
    t.extend_from_slice(b"JANUS   ");
    t.extend_from_slice(b"JANUS VM    ");
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    t.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&(APIC_DEFAULT_BASE as u32).to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    t.push(0); // extended table checksum
    t.push(0);
    t.extend_from_slice(&entries);
    t[7] = checksum(&t);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::sums_to_zero;

    /// With PCI: a PCI bus entry and 128 level-triggered, active-low interrupt entries, slot s
    /// pin p on GSI intx_gsis[(s + p) % 4], as in the _PRT.
    #[test]
    fn pci_interrupts_are_listed_as_the_prt_routes_them() {
        let (_, layout) = crate::layout::build_memory(64 << 20, None).unwrap();
        let pci = PciLayout::allocate(&mut crate::board::Resources::new(&layout)).unwrap();
        let t = config_table(2, 2, Some(&pci));
        assert!(sums_to_zero(&t));
        assert_eq!(usize::from(u16::from_le_bytes([t[4], t[5]])), t.len());
        let count = u16::from_le_bytes([t[34], t[35]]);
        let (mut buses, mut pci_ints) = (Vec::new(), Vec::new());
        let mut o = 44;
        for _ in 0..count {
            match t[o] {
                0 => o += 20,
                1 => {
                    buses.push((t[o + 1], t[o + 2..o + 8].to_vec()));
                    o += 8;
                }
                3 if t[o + 4] == PCI_BUS => {
                    assert_eq!(u16::from_le_bytes([t[o + 2], t[o + 3]]), 0x0f);
                    assert_eq!(t[o + 6], 2, "the IOAPIC's id");
                    pci_ints.push((t[o + 5], t[o + 7]));
                    o += 8;
                }
                _ => o += 8,
            }
        }
        assert_eq!(o, t.len());
        assert_eq!(
            buses,
            vec![(0, b"ISA   ".to_vec()), (1, b"PCI   ".to_vec())]
        );
        assert_eq!(pci_ints.len(), 128);
        // Slot 1 INTB (1 << 2 | 1) on the third GSI, slot 3 INTB on the first.
        assert!(pci_ints.contains(&(5, pci.intx_gsis[2] as u8)));
        assert!(pci_ints.contains(&(13, pci.intx_gsis[0] as u8)));
    }

    #[test]
    fn floating_pointer_checks_out() {
        let f = floating_pointer(0xf0400);
        assert!(sums_to_zero(&f));
        assert_eq!(&f[0..4], b"_MP_");
        assert_eq!(u32::from_le_bytes(f[4..8].try_into().unwrap()), 0xf0400);
        assert_eq!((f[8], f[9]), (1, 4));
    }

    #[test]
    fn config_table_parses_back() {
        for n in [1usize, 3, 255] {
            let t = config_table(n, n as u8, None);
            assert!(sums_to_zero(&t));
            assert_eq!(&t[0..4], b"PCMP");
            assert_eq!(usize::from(u16::from_le_bytes([t[4], t[5]])), t.len());
            let count = u16::from_le_bytes([t[34], t[35]]);
            let (mut cpus, mut bsp, mut ioapic, mut ints, mut lints) = (0, 0, 0, Vec::new(), 0);
            let mut o = 44;
            for _ in 0..count {
                match t[o] {
                    0 => {
                        assert_eq!(t[o + 1], cpus as u8);
                        assert_eq!(t[o + 3] & 1, 1);
                        bsp += usize::from(t[o + 3] & 2 != 0);
                        cpus += 1;
                        o += 20;
                    }
                    1 => {
                        assert_eq!(&t[o + 2..o + 8], b"ISA   ");
                        o += 8;
                    }
                    2 => {
                        assert_eq!(t[o + 1], n as u8);
                        assert_eq!(
                            u64::from(u32::from_le_bytes(t[o + 4..o + 8].try_into().unwrap())),
                            IOAPIC_BASE
                        );
                        ioapic += 1;
                        o += 8;
                    }
                    3 => {
                        ints.push((t[o + 1], t[o + 5], t[o + 7]));
                        o += 8;
                    }
                    4 => {
                        lints += 1;
                        o += 8;
                    }
                    ty => panic!("entry type {ty}"),
                }
            }
            assert_eq!(o, t.len());
            assert_eq!((cpus, bsp, ioapic, lints), (n, 1, 1, 2));
            assert!(ints.contains(&(0, 0, 2)), "IRQ 0 on pin 2");
            assert!(ints.contains(&(3, 0, 0)), "ExtINT on pin 0");
            assert!(ints.contains(&(0, 4, 4)));
            assert!(!ints.iter().any(|&(k, irq, _)| k == 0 && irq == 2));
        }
    }
}
