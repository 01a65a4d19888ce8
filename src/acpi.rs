//! The ACPI tables janus gives a guest, generated from the machine's configuration: RSDP, RSDT
//! and XSDT, FADT (with a FACS), a DSDT whose only object is `\_S5` (the power-off sleep type),
//! and the MADT (one local APIC per vCPU, the IOAPIC, the ISA interrupt source overrides and the
//! LINT1 NMI). Layouts follow ACPI 6.5, chapter 5.2.
//!
//! The tables sit in the BIOS area with the MP tables ([`crate::mptable`]), where an OS looks
//! for the RSDP (a 16-byte-aligned "RSD PTR " between 0xE0000 and 0xFFFFF): see
//! [`write_firmware_tables`]. The power-management registers the FADT names are the
//! [`crate::devices::acpi_pm`] device.
//!
//! Simplified: no SCI is ever raised (there are no events: no power button, no GPEs); the DSDT
//! describes no devices (an OS finds the PC devices at their legacy addresses); S5 is the only
//! sleep state.

use janus_accel::GuestMemory;

use crate::board::PciLayout;
use crate::devices::acpi_pm::{PM_TMR_PORT, PM1_CNT_SLP_TYP_S5, PM1A_CNT_PORT, PM1A_EVT_PORT};
use crate::devices::ioapic::IOAPIC_BASE;
use crate::devices::lapic::APIC_DEFAULT_BASE;
use crate::pci::{CONFIG_ADDRESS_PORT, CONFIG_PORTS_LEN};

/// Where janus puts its firmware tables: the start of the 64 KiB BIOS segment, where both the
/// RSDP search (0xE0000-0xFFFFF) and the MP floating pointer search (0xF0000-0xFFFFF) look.
pub const FIRMWARE_TABLES_BASE: u64 = 0xf_0000;
/// The most bytes the firmware tables take (255 vCPUs fit with room to spare).
pub const FIRMWARE_TABLES_MAX: u64 = 0x1_0000;
/// The OEM id in every table.
pub const OEM_ID: &[u8; 6] = b"JANUS ";
/// The OEM table id in every table.
pub const OEM_TABLE_ID: &[u8; 8] = b"JANUSVM ";
/// The SCI's ISA IRQ (level-triggered, active high, as on PIIX/ICH chipsets).
pub const SCI_IRQ: u8 = crate::board::SCI_IRQ;

/// Length of a system description table header.
pub const HEADER_LEN: usize = 36;

/// The byte that makes `bytes` sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// Whether `bytes` sum to zero (mod 256).
pub fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

/// A table under construction: the header is filled in by [`Table::finish`].
struct Table {
    bytes: Vec<u8>,
}

impl Table {
    fn new(signature: &[u8; 4], revision: u8) -> Self {
        let mut bytes = vec![0u8; HEADER_LEN];
        bytes[0..4].copy_from_slice(signature);
        bytes[8] = revision;
        bytes[10..16].copy_from_slice(OEM_ID);
        bytes[16..24].copy_from_slice(OEM_TABLE_ID);
        bytes[24..28].copy_from_slice(&1u32.to_le_bytes()); // OEM revision
        bytes[28..32].copy_from_slice(b"JNUS"); // creator id
        bytes[32..36].copy_from_slice(&1u32.to_le_bytes()); // creator revision
        Table { bytes }
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }
    /// A Generic Address Structure for `len` bytes of system I/O space at `port` (`len` 0: none).
    fn gas_io(&mut self, port: u16, len: u8) -> &mut Self {
        if len == 0 {
            return self.raw(&[0; 12]);
        }
        // Space 1 (system I/O), register bit width, bit offset 0, access size (1 byte .. 4 dword).
        let access = match len {
            1 => 1,
            2 => 2,
            _ => 3,
        };
        self.u8(1).u8(len * 8).u8(0).u8(access).u64(u64::from(port))
    }

    /// Sets the length and the checksum.
    fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[4..8].copy_from_slice(&len.to_le_bytes());
        self.bytes[9] = 0;
        self.bytes[9] = checksum(&self.bytes);
        self.bytes
    }
}

/// The AML of the DSDT: `Name (\_S5, Package (4) { SLP_TYP, SLP_TYP, 0, 0 })`, and the PCI
/// root bridge when there is one ([`pci_root_aml`]).
fn dsdt(pci: Option<&PciLayout>) -> Vec<u8> {
    let mut t = Table::new(b"DSDT", 2);
    t.raw(&[
        0x08,
        b'_',
        b'S',
        b'5',
        b'_', // NameOp "_S5_"
        0x12,
        0x08,
        0x04, // PackageOp, PkgLength 8, NumElements 4
        0x0a,
        PM1_CNT_SLP_TYP_S5, // BytePrefix SLP_TYPa
        0x0a,
        PM1_CNT_SLP_TYP_S5, // BytePrefix SLP_TYPb
        0x00,
        0x00, // Zero, Zero (reserved)
    ]);
    if let Some(p) = pci {
        t.raw(&pci_root_aml(p));
    }
    t.finish()
}

/// `\_SB.PCI0`, the PCI root bridge (a PCIe one: `_HID` PNP0A08, `_CID` PNP0A03) of segment 0,
/// bus 0: `_CRS` lists the bus number, the config ports, the I/O ranges (every port but the
/// config ports', so the legacy devices are below it) and the 32- and 64-bit memory windows;
/// `_PRT` routes INTA-INTD of each slot, swizzled (slot `s` pin `p` to line `(s + p) % 4`), with
/// no link device, level-triggered and active low: to the IOAPIC pins `intx_gsis` once the OS
/// has chosen the APIC model through `\_PIC` (kept in `\PICM`), else to the 8259 IRQs
/// `intx_pic_irqs`.
pub fn pci_root_aml(p: &PciLayout) -> Vec<u8> {
    use acpi_tables::Aml;
    use acpi_tables::aml::{self, AddressSpace, AddressSpaceCacheable, EISAName, Name, Package};
    let bus = AddressSpace::new_bus_number(0u16, 0u16);
    let cfg = aml::IO::new(
        CONFIG_ADDRESS_PORT,
        CONFIG_ADDRESS_PORT,
        1,
        CONFIG_PORTS_LEN as u8,
    );
    let io_low = AddressSpace::new_io(0u16, CONFIG_ADDRESS_PORT - 1, None);
    let io_high = AddressSpace::new_io(
        CONFIG_ADDRESS_PORT + CONFIG_PORTS_LEN as u16,
        0xffffu16,
        None,
    );
    let m32 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        p.mmio32.0 as u32,
        (p.mmio32.1 - 1) as u32,
        None,
    );
    let m64 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        p.mmio64.0,
        p.mmio64.1 - 1,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![&bus, &cfg, &io_low, &io_high, &m32, &m64]);
    // Package (4) { slot << 16 | 0xFFFF (any function), pin, source (none: a GSI), GSI },
    // for APIC mode (the IOAPIC pins) and for PIC mode (the 8259 IRQs).
    let table = |lines: &[u32; crate::board::PCI_INTX_LINES]| -> Vec<(u32, u8, u32)> {
        (0..crate::pci::NR_SLOTS as u32)
            .flat_map(|slot| {
                (0..4u8).map(move |pin| {
                    let line = lines[(slot as usize + usize::from(pin)) % lines.len()];
                    (slot << 16 | 0xffff, pin, line)
                })
            })
            .collect()
    };
    let (apic_entries, pic_entries) = (table(&p.intx_gsis), table(&p.intx_pic_irqs.map(u32::from)));
    let (apic_packages, pic_packages) = (prt_packages(&apic_entries), prt_packages(&pic_entries));
    let prta = Package::new(apic_packages.iter().map(|p| p as &dyn Aml).collect());
    let prtp = Package::new(pic_packages.iter().map(|p| p as &dyn Aml).collect());
    let (prta_path, prtp_path, picm) = (
        aml::Path::new("PRTA"),
        aml::Path::new("PRTP"),
        aml::Path::new("\\PICM"),
    );
    // Method (_PRT) { If (\PICM) { Return (PRTA) } Return (PRTP) }
    let ret_apic = aml::Return::new(&prta_path);
    let ret_pic = aml::Return::new(&prtp_path);
    let if_apic = aml::If::new(&picm, vec![&ret_apic]);
    let prt = aml::Method::new("_PRT".into(), 0, false, vec![&if_apic, &ret_pic]);
    let (hid, cid) = (EISAName::new("PNP0A08"), EISAName::new("PNP0A03"));
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_CID".into(), &cid),
        Name::new("_SEG".into(), &aml::ZERO),
        Name::new("_UID".into(), &aml::ZERO),
        Name::new("_BBN".into(), &aml::ZERO),
        Name::new("_CRS".into(), &crs),
        Name::new("PRTA".into(), &prta),
        Name::new("PRTP".into(), &prtp),
    ];
    let mut children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    children.push(&prt);
    let dev = aml::Device::new("\\_SB_.PCI0".into(), children);
    // \PICM: the interrupt model the OS chose through \_PIC (0 PIC, 1 APIC).
    let picm_name = Name::new("\\PICM".into(), &aml::ZERO);
    let store = aml::Store::new(&picm, &aml::Arg(0));
    let pic_method = aml::Method::new("\\_PIC".into(), 1, false, vec![&store]);
    let mut out = Vec::new();
    picm_name.to_aml_bytes(&mut out);
    pic_method.to_aml_bytes(&mut out);
    dev.to_aml_bytes(&mut out);
    out
}

/// The `_PRT` entries (address, pin, GSI) as AML packages.
fn prt_packages(entries: &[(u32, u8, u32)]) -> Vec<acpi_tables::aml::Package<'_>> {
    use acpi_tables::aml::{Package, ZERO};
    entries
        .iter()
        .map(|(addr, pin, gsi)| Package::new(vec![addr, pin, &ZERO, gsi]))
        .collect()
}

/// The MCFG: one ECAM allocation, segment 0, buses 0 to 0.
fn mcfg(ecam: u64) -> Vec<u8> {
    let mut t = Table::new(b"MCFG", 1);
    t.u64(0) // reserved
        .u64(ecam)
        .u16(0) // PCI segment group
        .u8(0) // start bus
        .u8(0) // end bus
        .u32(0); // reserved
    t.finish()
}

/// The FACS (64 bytes, no header checksum; it must be 64-byte aligned).
fn facs() -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[0..4].copy_from_slice(b"FACS");
    b[4..8].copy_from_slice(&64u32.to_le_bytes());
    b[32] = 2; // version
    b
}

/// The FADT (revision 6, 276 bytes) pointing at the FACS and DSDT.
fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut t = Table::new(b"FACP", 6);
    t.u32(facs as u32) // FIRMWARE_CTRL
        .u32(dsdt as u32) // DSDT
        .u8(0) // reserved (INT_MODEL in ACPI 1.0)
        .u8(0) // preferred PM profile: unspecified
        .u16(u16::from(SCI_IRQ))
        .u32(0) // SMI_CMD: none, the hardware is always in ACPI mode
        .u8(0) // ACPI_ENABLE
        .u8(0) // ACPI_DISABLE
        .u8(0) // S4BIOS_REQ
        .u8(0) // PSTATE_CNT
        .u32(u32::from(PM1A_EVT_PORT))
        .u32(0) // PM1b_EVT_BLK
        .u32(u32::from(PM1A_CNT_PORT))
        .u32(0) // PM1b_CNT_BLK
        .u32(0) // PM2_CNT_BLK
        .u32(u32::from(PM_TMR_PORT))
        .u32(0) // GPE0_BLK
        .u32(0) // GPE1_BLK
        .u8(4) // PM1_EVT_LEN
        .u8(2) // PM1_CNT_LEN
        .u8(0) // PM2_CNT_LEN
        .u8(4) // PM_TMR_LEN
        .u8(0) // GPE0_BLK_LEN
        .u8(0) // GPE1_BLK_LEN
        .u8(0) // GPE1_BASE
        .u8(0) // CST_CNT
        .u16(101) // P_LVL2_LAT: > 100, C2 not supported
        .u16(1001) // P_LVL3_LAT: > 1000, C3 not supported
        .u16(0) // FLUSH_SIZE
        .u16(0) // FLUSH_STRIDE
        .u8(0) // DUTY_OFFSET
        .u8(0) // DUTY_WIDTH
        .u8(0) // DAY_ALRM
        .u8(0) // MON_ALRM
        .u8(0x32) // CENTURY: the CMOS register holding it
        .u16(0x0003) // IAPC_BOOT_ARCH: LEGACY_DEVICES, 8042
        .u8(0)
        // Flags: WBINVD, PROC_C1, SLP_BUTTON (none), RTC_S4, RESET_REG_SUP (port 0x92 is not
        // the reset register, so off), TMR_VAL_EXT off (24-bit timer).
        .u32(1 | 1 << 2 | 1 << 5 | 1 << 7)
        .gas_io(0, 0) // RESET_REG
        .u8(0) // RESET_VALUE
        .u16(0) // ARM_BOOT_ARCH
        .u8(5) // FADT minor version: ACPI 6.5
        .u64(0) // X_FIRMWARE_CTRL: the FACS is below 4 GiB, FIRMWARE_CTRL says where
        .u64(dsdt) // X_DSDT
        .gas_io(PM1A_EVT_PORT, 4)
        .gas_io(0, 0) // X_PM1b_EVT_BLK
        .gas_io(PM1A_CNT_PORT, 2)
        .gas_io(0, 0) // X_PM1b_CNT_BLK
        .gas_io(0, 0) // X_PM2_CNT_BLK
        .gas_io(PM_TMR_PORT, 4)
        .gas_io(0, 0) // X_GPE0_BLK
        .gas_io(0, 0) // X_GPE1_BLK
        .gas_io(0, 0) // SLEEP_CONTROL_REG
        .gas_io(0, 0) // SLEEP_STATUS_REG
        .raw(b"JANUS\0\0\0"); // hypervisor vendor identity
    t.finish()
}

/// The MADT for `nr_vcpus` vCPUs (APIC ids 0..n, ACPI processor UIDs the same) and the IOAPIC
/// with APIC id `ioapic_id`.
fn madt(nr_vcpus: usize, ioapic_id: u8) -> Vec<u8> {
    let mut t = Table::new(b"APIC", 5);
    t.u32(APIC_DEFAULT_BASE as u32).u32(1); // local APIC address; PCAT_COMPAT (8259 pair present)
    for i in 0..nr_vcpus {
        // Processor Local APIC: UID, APIC id, flags (enabled).
        t.u8(0).u8(8).u8(i as u8).u8(i as u8).u32(1);
    }
    // I/O APIC: id, reserved, address, GSI base.
    t.u8(1)
        .u8(12)
        .u8(ioapic_id)
        .u8(0)
        .u32(IOAPIC_BASE as u32)
        .u32(0);
    // Interrupt source overrides: ISA IRQ 0 is GSI 2 (edge, high: "conforms to the bus");
    // the SCI is level-triggered, active high.
    t.u8(2).u8(10).u8(0).u8(0).u32(2).u16(0);
    t.u8(2)
        .u8(10)
        .u8(0)
        .u8(SCI_IRQ)
        .u32(u32::from(SCI_IRQ))
        .u16(0x000d);
    // Local APIC NMI: every processor (UID 0xff), LINT1, conforming.
    t.u8(4).u8(6).u8(0xff).u16(0).u8(1);
    t.finish()
}

/// A root table (RSDT with 32-bit or XSDT with 64-bit entries) listing `tables`.
fn root(signature: &[u8; 4], tables: &[u64], wide: bool) -> Vec<u8> {
    let mut t = Table::new(signature, 1);
    for &a in tables {
        if wide {
            t.u64(a);
        } else {
            t.u32(a as u32);
        }
    }
    t.finish()
}

/// The RSDP (revision 2, 36 bytes) with both checksums.
fn rsdp(rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(36);
    b.extend_from_slice(b"RSD PTR ");
    b.push(0); // checksum of the first 20 bytes
    b.extend_from_slice(OEM_ID);
    b.push(2); // revision: ACPI 2.0 and later
    b.extend_from_slice(&(rsdt as u32).to_le_bytes());
    b.extend_from_slice(&36u32.to_le_bytes());
    b.extend_from_slice(&xsdt.to_le_bytes());
    b.extend_from_slice(&[0; 4]); // extended checksum, reserved
    b[8] = checksum(&b[..20]);
    b[32] = checksum(&b);
    b
}

/// Everything the firmware tables are built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablesConfig {
    /// Number of vCPUs (APIC ids 0 to n-1).
    pub nr_vcpus: usize,
    /// The IOAPIC's APIC id.
    pub ioapic_id: u8,
    /// The PCI root bridge, if any: the DSDT describes it, the MCFG names its ECAM window.
    pub pci: Option<PciLayout>,
}

/// Where the tables went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablesInfo {
    /// The RSDP's physical address.
    pub rsdp: u64,
    /// The MP floating pointer structure's physical address.
    pub mp_floating: u64,
    /// One past the last byte written.
    pub end: u64,
}

/// Builds the ACPI and MP tables for a machine whose tables live at `base` (16-byte aligned):
/// returns the bytes to write at `base` and where the RSDP and MP floating pointer are.
pub fn build_firmware_tables(config: &TablesConfig, base: u64) -> (Vec<u8>, TablesInfo) {
    let mut blob = Vec::new();
    let align = |blob: &mut Vec<u8>, a: usize| {
        while blob.len() % a != 0 {
            blob.push(0);
        }
    };
    // The RSDP and the MP floating pointer first, at fixed places; the rest after them.
    blob.resize(0x40, 0);
    let place = |blob: &mut Vec<u8>, bytes: &[u8], a: usize| -> u64 {
        align(blob, a);
        let at = base + blob.len() as u64;
        blob.extend_from_slice(bytes);
        at
    };
    let facs_at = place(&mut blob, &facs(), 64);
    let dsdt_at = place(&mut blob, &dsdt(config.pci.as_ref()), 16);
    let fadt_at = place(&mut blob, &fadt(facs_at, dsdt_at), 16);
    let madt_at = place(&mut blob, &madt(config.nr_vcpus, config.ioapic_id), 16);
    let mut tables = vec![fadt_at, madt_at];
    if let Some(p) = &config.pci {
        tables.push(place(&mut blob, &mcfg(p.ecam), 16));
    }
    let rsdt_at = place(&mut blob, &root(b"RSDT", &tables, false), 16);
    let xsdt_at = place(&mut blob, &root(b"XSDT", &tables, true), 16);
    align(&mut blob, 16);
    let mp_table_at = base + blob.len() as u64;
    let mp = crate::mptable::config_table(config.nr_vcpus, config.ioapic_id, config.pci.as_ref());
    blob.extend_from_slice(&mp);
    let r = rsdp(rsdt_at, xsdt_at);
    blob[..r.len()].copy_from_slice(&r);
    let f = crate::mptable::floating_pointer(mp_table_at);
    blob[0x30..0x40].copy_from_slice(&f);
    let end = base + blob.len() as u64;
    (
        blob,
        TablesInfo {
            rsdp: base,
            mp_floating: base + 0x30,
            end,
        },
    )
}

/// janus's ACPI tables as firmware installs them through fw_cfg (QEMU's "linker/loader"
/// protocol): the tables in one file built as if at address 0, the RSDP in another, and the
/// commands (`etc/table-loader`) that tell the firmware to allocate both, add each file's
/// final address to the pointers between tables, and fix the checksums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderTables {
    /// `etc/acpi/tables`: FACS, DSDT, FADT, MADT, MCFG, RSDT, XSDT.
    pub tables: Vec<u8>,
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/table-loader`: 128-byte commands.
    pub loader: Vec<u8>,
}

/// The tables file's fw_cfg name.
pub const LOADER_TABLES_FILE: &str = "etc/acpi/tables";
/// The RSDP file's fw_cfg name.
pub const LOADER_RSDP_FILE: &str = "etc/acpi/rsdp";
/// The loader commands' fw_cfg name.
pub const LOADER_FILE: &str = "etc/table-loader";

/// Table-loader commands (QEMU's `hw/acpi/bios-linker-loader.c`), each 128 bytes.
mod loader_cmd {
    /// Allocate a file's copy: name[56], alignment u32, zone u8 (1 high memory, 2 F segment).
    pub const ALLOCATE: u32 = 1;
    /// Add a file's address to a pointer: dest[56], src[56], offset u32, size u8.
    pub const ADD_POINTER: u32 = 2;
    /// Fix a checksum: file[56], offset u32, start u32, length u32.
    pub const ADD_CHECKSUM: u32 = 3;
    /// Allocation zones.
    pub const ZONE_HIGH: u8 = 1;
    /// The F segment (where the RSDP must be found).
    pub const ZONE_FSEG: u8 = 2;
    /// One command's size.
    pub const LEN: usize = 128;
    /// A file name field's size.
    pub const NAME: usize = 56;
}

fn loader_name(b: &mut Vec<u8>, name: &str) {
    let mut n = [0u8; loader_cmd::NAME];
    n[..name.len()].copy_from_slice(name.as_bytes());
    b.extend_from_slice(&n);
}

fn loader_command(out: &mut Vec<u8>, command: u32, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&command.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(start + loader_cmd::LEN, 0);
}

/// Builds the tables of `config` for firmware to install (see [`LoaderTables`]).
pub fn loader_tables(config: &TablesConfig) -> LoaderTables {
    use loader_cmd::*;
    let mut blob = Vec::new();
    let place = |blob: &mut Vec<u8>, bytes: &[u8], a: usize| -> u64 {
        while blob.len() % a != 0 {
            blob.push(0);
        }
        let at = blob.len() as u64;
        blob.extend_from_slice(bytes);
        at
    };
    let facs_at = place(&mut blob, &facs(), 64);
    let dsdt_bytes = dsdt(config.pci.as_ref());
    let dsdt_at = place(&mut blob, &dsdt_bytes, 16);
    let fadt_bytes = fadt(facs_at, dsdt_at);
    let fadt_at = place(&mut blob, &fadt_bytes, 16);
    let madt_bytes = madt(config.nr_vcpus, config.ioapic_id);
    let madt_at = place(&mut blob, &madt_bytes, 16);
    let mut listed = vec![(fadt_at, fadt_bytes.len()), (madt_at, madt_bytes.len())];
    if let Some(p) = &config.pci {
        let m = mcfg(p.ecam);
        listed.push((place(&mut blob, &m, 16), m.len()));
    }
    let addrs: Vec<u64> = listed.iter().map(|t| t.0).collect();
    let rsdt = root(b"RSDT", &addrs, false);
    let rsdt_at = place(&mut blob, &rsdt, 16);
    let xsdt = root(b"XSDT", &addrs, true);
    let xsdt_at = place(&mut blob, &xsdt, 16);
    let rsdp_bytes = rsdp(rsdt_at, xsdt_at);

    let mut loader = Vec::new();
    let allocate = |out: &mut Vec<u8>, file: &str, align: u32, zone: u8| {
        let mut b = Vec::new();
        loader_name(&mut b, file);
        b.extend_from_slice(&align.to_le_bytes());
        b.push(zone);
        loader_command(out, ALLOCATE, &b);
    };
    let pointer = |out: &mut Vec<u8>, dest: &str, offset: u64, size: u8| {
        let mut b = Vec::new();
        loader_name(&mut b, dest);
        loader_name(&mut b, LOADER_TABLES_FILE);
        b.extend_from_slice(&(offset as u32).to_le_bytes());
        b.push(size);
        loader_command(out, ADD_POINTER, &b);
    };
    let checksum = |out: &mut Vec<u8>, file: &str, start: u64, len: usize, at: u64| {
        let mut b = Vec::new();
        loader_name(&mut b, file);
        b.extend_from_slice(&(at as u32).to_le_bytes());
        b.extend_from_slice(&(start as u32).to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        loader_command(out, ADD_CHECKSUM, &b);
    };
    allocate(&mut loader, LOADER_TABLES_FILE, 64, ZONE_HIGH);
    allocate(&mut loader, LOADER_RSDP_FILE, 16, ZONE_FSEG);
    // FADT: FIRMWARE_CTRL, DSDT, X_DSDT.
    pointer(&mut loader, LOADER_TABLES_FILE, fadt_at + 36, 4);
    pointer(&mut loader, LOADER_TABLES_FILE, fadt_at + 40, 4);
    pointer(&mut loader, LOADER_TABLES_FILE, fadt_at + 140, 8);
    for i in 0..addrs.len() as u64 {
        pointer(&mut loader, LOADER_TABLES_FILE, rsdt_at + 36 + 4 * i, 4);
        pointer(&mut loader, LOADER_TABLES_FILE, xsdt_at + 36 + 8 * i, 8);
    }
    pointer(&mut loader, LOADER_RSDP_FILE, 16, 4);
    pointer(&mut loader, LOADER_RSDP_FILE, 24, 8);
    let tables = [
        (dsdt_at, dsdt_bytes.len()),
        (rsdt_at, rsdt.len()),
        (xsdt_at, xsdt.len()),
    ];
    for &(at, len) in listed.iter().chain(tables.iter()) {
        checksum(&mut loader, LOADER_TABLES_FILE, at, len, at + 9);
    }
    checksum(&mut loader, LOADER_RSDP_FILE, 0, 20, 8);
    checksum(&mut loader, LOADER_RSDP_FILE, 0, 36, 32);
    LoaderTables {
        tables: blob,
        rsdp: rsdp_bytes,
        loader,
    }
}

/// Why the firmware tables were not written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TablesError {
    /// Their place is not writable RAM.
    #[error("the BIOS area at {0:#x} is not RAM")]
    NotRam(u64),
    /// The tables do not fit in the BIOS area.
    #[error("the firmware tables need {0} bytes, more than the BIOS area holds")]
    TooLarge(usize),
}

/// The ACPI and MP tables of a machine, built for [`FIRMWARE_TABLES_BASE`]: built before the
/// kernel loaders (which hand [`TablesInfo::rsdp`] to the kernel), written after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareTables {
    /// The bytes that go at [`FIRMWARE_TABLES_BASE`].
    pub bytes: Vec<u8>,
    /// Where the RSDP and MP floating pointer are.
    pub info: TablesInfo,
}

impl FirmwareTables {
    /// Builds the tables for `config`.
    pub fn build(config: &TablesConfig) -> Self {
        let (bytes, info) = build_firmware_tables(config, FIRMWARE_TABLES_BASE);
        FirmwareTables { bytes, info }
    }

    /// Whether the tables can go to `mem`: their place is RAM and they fit the BIOS area.
    ///
    /// # Errors
    /// [`TablesError`] when that place is not RAM or the tables do not fit.
    pub fn check(&self, mem: &GuestMemory) -> Result<(), TablesError> {
        let base = FIRMWARE_TABLES_BASE;
        if self.bytes.len() as u64 > FIRMWARE_TABLES_MAX {
            return Err(TablesError::TooLarge(self.bytes.len()));
        }
        match mem.region(base) {
            Some(r)
                if r.kind() == janus_accel::RegionKind::Ram
                    && r.base() + r.size() >= base + self.bytes.len() as u64 =>
            {
                Ok(())
            }
            _ => Err(TablesError::NotRam(base)),
        }
    }

    /// Writes the tables to `mem`.
    ///
    /// # Errors
    /// As [`FirmwareTables::check`].
    pub fn write(&self, mem: &GuestMemory) -> Result<(), TablesError> {
        self.check(mem)?;
        mem.write(FIRMWARE_TABLES_BASE, &self.bytes)
            .map_err(|_| TablesError::NotRam(FIRMWARE_TABLES_BASE))
    }
}

/// Writes the ACPI and MP tables for `config` at [`FIRMWARE_TABLES_BASE`].
///
/// # Errors
/// [`TablesError`] when that place is not RAM or the tables do not fit.
pub fn write_firmware_tables(
    mem: &GuestMemory,
    config: &TablesConfig,
) -> Result<TablesInfo, TablesError> {
    let t = FirmwareTables::build(config);
    t.write(mem)?;
    Ok(t.info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// The table at physical `addr` of a blob placed at `base`, checked: signature, length,
    /// checksum.
    fn table<'a>(blob: &'a [u8], base: u64, addr: u64, sig: &[u8; 4]) -> &'a [u8] {
        let o = (addr - base) as usize;
        assert_eq!(&blob[o..o + 4], sig);
        let len = u32_at(blob, o + 4) as usize;
        let t = &blob[o..o + len];
        assert!(sums_to_zero(t), "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&t[10..16], OEM_ID);
        t
    }

    fn find_rsdp(blob: &[u8], base: u64) -> u64 {
        (0..blob.len())
            .step_by(16)
            .find(|&o| &blob[o..o + 8] == b"RSD PTR ")
            .map(|o| base + o as u64)
            .expect("no RSDP")
    }

    /// Runs the table-loader's commands as firmware does, with the tables file at `base`;
    /// returns it and the RSDP file.
    fn run_loader(l: &LoaderTables, base: u64) -> (Vec<u8>, Vec<u8>) {
        let (mut tables, mut rsdp) = (l.tables.clone(), l.rsdp.clone());
        let name = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .trim_end_matches('\0')
                .to_string()
        };
        assert_eq!(l.loader.len() % 128, 0);
        for c in l.loader.chunks(128) {
            let file = name(&c[4..60]);
            let is_rsdp = file == LOADER_RSDP_FILE;
            match u32_at(c, 0) {
                1 => assert!(file == LOADER_TABLES_FILE || is_rsdp),
                2 => {
                    assert_eq!(name(&c[60..116]), LOADER_TABLES_FILE);
                    let (off, size) = (u32_at(c, 116) as usize, usize::from(c[120]));
                    let dest = if is_rsdp { &mut rsdp } else { &mut tables };
                    let mut v = [0u8; 8];
                    v[..size].copy_from_slice(&dest[off..off + size]);
                    let p = u64::from_le_bytes(v) + base;
                    dest[off..off + size].copy_from_slice(&p.to_le_bytes()[..size]);
                }
                3 => {
                    let (at, start, len) = (
                        u32_at(c, 60) as usize,
                        u32_at(c, 64) as usize,
                        u32_at(c, 68) as usize,
                    );
                    let dest = if is_rsdp { &mut rsdp } else { &mut tables };
                    let sum = dest[start..start + len]
                        .iter()
                        .fold(0u8, |a, &b| a.wrapping_add(b));
                    dest[at] = dest[at].wrapping_sub(sum);
                }
                other => panic!("unknown loader command {other}"),
            }
        }
        (tables, rsdp)
    }

    #[test]
    fn loader_tables_install_anywhere_with_valid_pointers_and_checksums() {
        let mut r =
            crate::board::Resources::new(&crate::layout::build_memory(64 << 20, None).unwrap().1);
        let pci = crate::board::PciLayout::allocate(&mut r).unwrap();
        let l = loader_tables(&TablesConfig {
            nr_vcpus: 2,
            ioapic_id: 2,
            pci: Some(pci),
        });
        let base = 0x3ffe_0000;
        let (t, rsdp) = run_loader(&l, base);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(sums_to_zero(&rsdp[..20]) && sums_to_zero(&rsdp[..36]));
        let rsdt = table(&t, base, u64::from(u32_at(&rsdp, 16)), b"RSDT");
        let xsdt = table(&t, base, u64_at(&rsdp, 24), b"XSDT");
        assert_eq!(rsdt.len(), 36 + 3 * 4);
        let fadt = table(&t, base, u64::from(u32_at(rsdt, 36)), b"FACP");
        assert_eq!(u64_at(xsdt, 36), u64::from(u32_at(rsdt, 36)));
        table(&t, base, u64::from(u32_at(rsdt, 40)), b"APIC");
        table(&t, base, u64_at(xsdt, 52), b"MCFG");
        let dsdt = u64::from(u32_at(fadt, 40));
        table(&t, base, dsdt, b"DSDT");
        assert_eq!(u64_at(fadt, 140), dsdt);
        let facs = u32_at(fadt, 36) as u64;
        assert_eq!(facs % 64, 0);
        assert_eq!(&t[(facs - base) as usize..][..4], b"FACS");
    }

    #[test]
    fn tables_parse_back_with_valid_checksums() {
        for n in [1usize, 2, 4, 255] {
            let base = FIRMWARE_TABLES_BASE;
            let (blob, info) = build_firmware_tables(
                &TablesConfig {
                    nr_vcpus: n,
                    ioapic_id: n as u8,
                    pci: None,
                },
                base,
            );
            assert!(
                blob.len() as u64 <= FIRMWARE_TABLES_MAX,
                "{n}: {}",
                blob.len()
            );
            let rsdp_at = find_rsdp(&blob, base);
            assert_eq!(rsdp_at, info.rsdp);
            let r = &blob[(rsdp_at - base) as usize..][..36];
            assert!(sums_to_zero(&r[..20]));
            assert!(sums_to_zero(r));
            assert_eq!(r[15], 2);
            let rsdt = table(&blob, base, u64::from(u32_at(r, 16)), b"RSDT");
            let xsdt = table(&blob, base, u64_at(r, 24), b"XSDT");
            let r_entries: Vec<u64> = rsdt[36..]
                .chunks(4)
                .map(|c| u64::from(u32_at(c, 0)))
                .collect();
            let x_entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
            assert_eq!(r_entries, x_entries);
            assert_eq!(r_entries.len(), 2);
            let fadt = table(&blob, base, r_entries[0], b"FACP");
            assert_eq!(fadt.len(), 276);
            assert_eq!(fadt[8], 6);
            assert_eq!(u16_at(fadt, 46), u16::from(SCI_IRQ));
            assert_eq!(u32_at(fadt, 64), u32::from(PM1A_CNT_PORT));
            assert_eq!(u32_at(fadt, 76), u32::from(PM_TMR_PORT));
            assert_eq!(fadt[89], 2);
            assert_eq!(u64_at(fadt, 140), u64::from(u32_at(fadt, 40)));
            // X_PM1a_CNT_BLK: system I/O, 16 bits, the same port.
            assert_eq!(fadt[172], 1);
            assert_eq!(fadt[173], 16);
            assert_eq!(u64_at(fadt, 176), u64::from(PM1A_CNT_PORT));
            let facs_at = u64::from(u32_at(fadt, 36));
            assert_eq!(facs_at % 64, 0);
            assert_eq!(&blob[(facs_at - base) as usize..][..4], b"FACS");
            let dsdt = table(&blob, base, u64::from(u32_at(fadt, 40)), b"DSDT");
            let s5 = dsdt.windows(4).position(|w| w == b"_S5_").expect("no _S5_");
            assert_eq!(dsdt[s5 - 1], 0x08);
            assert_eq!(dsdt[s5 + 4], 0x12);
            assert_eq!(
                usize::from(dsdt[s5 + 5]),
                dsdt.len() - (s5 + 5),
                "package length"
            );
            assert_eq!(&dsdt[s5 + 7..s5 + 9], &[0x0a, PM1_CNT_SLP_TYP_S5]);
            let madt = table(&blob, base, r_entries[1], b"APIC");
            assert_eq!(u64::from(u32_at(madt, 36)), APIC_DEFAULT_BASE);
            let (mut lapics, mut ioapics, mut overrides) = (Vec::new(), 0, Vec::new());
            let mut o = 44;
            while o < madt.len() {
                let (ty, len) = (madt[o], usize::from(madt[o + 1]));
                assert!(len >= 2 && o + len <= madt.len());
                match ty {
                    0 => {
                        assert_eq!(u32_at(madt, o + 4) & 1, 1);
                        lapics.push(madt[o + 3]);
                    }
                    1 => {
                        ioapics += 1;
                        assert_eq!(madt[o + 2], n as u8);
                        assert_eq!(u64::from(u32_at(madt, o + 4)), IOAPIC_BASE);
                    }
                    2 => overrides.push((madt[o + 3], u32_at(madt, o + 4))),
                    4 => assert_eq!(madt[o + 5], 1),
                    t => panic!("unexpected MADT entry {t}"),
                }
                o += len;
            }
            assert_eq!(o, madt.len());
            assert_eq!(lapics, (0..n as u8).collect::<Vec<_>>());
            assert_eq!(ioapics, 1);
            assert_eq!(overrides, vec![(0, 2), (SCI_IRQ, u32::from(SCI_IRQ))]);
            // The MP floating pointer is where info says.
            let f = (info.mp_floating - base) as usize;
            assert_eq!(&blob[f..f + 4], b"_MP_");
        }
    }

    #[test]
    fn tables_go_to_ram_only() {
        let (mem, _) = crate::layout::build_memory(16 << 20, None).unwrap();
        let cfg = TablesConfig {
            nr_vcpus: 2,
            ioapic_id: 2,
            pci: None,
        };
        let info = write_firmware_tables(&mem, &cfg).unwrap();
        assert_eq!(info.rsdp, FIRMWARE_TABLES_BASE);
        let mut sig = [0u8; 8];
        mem.read(info.rsdp, &mut sig).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        // Memory with no RAM at the BIOS area refuses them.
        let mut mem = janus_accel::GuestMemory::new();
        mem.add(0, 0xf_0000, janus_accel::RegionKind::Ram).unwrap();
        assert_eq!(
            write_firmware_tables(&mem, &cfg),
            Err(TablesError::NotRam(FIRMWARE_TABLES_BASE))
        );
    }

    /// With PCI: the MCFG names the ECAM window for bus 0, the DSDT holds `\_SB.PCI0` with
    /// its ids, `_CRS` and a `_PRT` of 32 slots x 4 pins swizzled over the INTx GSIs.
    #[test]
    fn pci_root_bridge_is_in_the_dsdt_and_the_mcfg() {
        let (_, layout) = crate::layout::build_memory(64 << 20, None).unwrap();
        let mut pools = crate::board::Resources::new(&layout);
        let pci = PciLayout::allocate(&mut pools).unwrap();
        let base = FIRMWARE_TABLES_BASE;
        let (blob, info) =
            build_firmware_tables(&crate::board::tables_config(255, Some(pci)), base);
        assert!(blob.len() as u64 <= FIRMWARE_TABLES_MAX);
        let r = &blob[(info.rsdp - base) as usize..][..36];
        let xsdt = table(&blob, base, u64_at(r, 24), b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(entries.len(), 3);
        let mcfg = table(&blob, base, entries[2], b"MCFG");
        assert_eq!(mcfg.len(), 60);
        assert_eq!(u64_at(mcfg, 44), pci.ecam);
        assert_eq!((u16_at(mcfg, 52), mcfg[54], mcfg[55]), (0, 0, 0));
        let fadt = table(&blob, base, entries[0], b"FACP");
        let dsdt = table(&blob, base, u64::from(u32_at(fadt, 40)), b"DSDT");
        // DeviceOp (ExtOpPrefix 0x82, a PkgLength of up to 4 bytes), then \_SB_.PCI0 as a root
        // dual name path. (iasl -d of this DSDT shows Device (\_SB.PCI0) with the _CRS and
        // _PRT below.)
        let at = dsdt
            .windows(10)
            .position(|w| w == b"\\\x2e_SB_PCI0")
            .expect("no \\_SB.PCI0");
        assert!(dsdt[at - 6..at].windows(2).any(|w| w == [0x5b, 0x82]));
        // EISAID("PNP0A08") and EISAID("PNP0A03") as DWordConsts.
        for id in [[0x41, 0xd0, 0x0a, 0x08], [0x41, 0xd0, 0x0a, 0x03]] {
            assert!(dsdt.windows(5).any(|w| w[0] == 0x0c && w[1..] == id));
        }
        for name in [
            b"_CRS", b"_PRT", b"_BBN", b"_SEG", b"PRTP", b"_PIC", b"PICM",
        ] {
            assert!(dsdt.windows(4).any(|w| w == name));
        }
        // PRTA (APIC mode): Package (0x80), its PkgLength two bytes long.
        let prt = dsdt.windows(4).position(|w| w == b"PRTA").unwrap();
        assert_eq!((dsdt[prt + 4], dsdt[prt + 7]), (0x12, 0x80));
        // Slot 1 INTB goes to the third GSI (1 + 1 = 2): Package (4) { 0x0001FFFF, One, Zero,
        // GSI }.
        let want = [
            0x12,
            0x0b,
            0x04,
            0x0c,
            0xff,
            0xff,
            0x01,
            0x00,
            0x01,
            0x00,
            0x0a,
            pci.intx_gsis[2] as u8,
        ];
        assert!(
            dsdt[prt..].windows(want.len()).any(|w| w == want),
            "slot 1 INTB -> GSI {}",
            pci.intx_gsis[2]
        );
        // The _CRS has the 64-bit window as a QWord memory descriptor.
        let mut qword = vec![0x8a, 0x2b, 0x00, 0x00];
        qword.extend_from_slice(&[0x0c, 0x01]);
        assert!(dsdt.windows(6).any(|w| w == qword));
        assert!(dsdt.windows(8).any(|w| w == pci.mmio64.0.to_le_bytes()));
    }

    #[test]
    fn checksum_makes_the_sum_zero() {
        let mut b = vec![1u8, 2, 250, 9];
        b.push(checksum(&b));
        assert!(sums_to_zero(&b));
    }
}
