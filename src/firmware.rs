//! What janus tells firmware about the machine, through fw_cfg ([`crate::devices::fw_cfg`]):
//! the RAM size and map, the vCPU count, the ACPI tables to install, the serial console, and
//! what to do when nothing boots. SeaBIOS reads all of it; Linux's `qemu_fw_cfg` driver and
//! test kernels read the CPU count.

use janus_accel::GuestMemory;

use crate::board::PciLayout;
use crate::devices::fw_cfg::{FwCfg, FwCfgError, key};
use crate::layout::{HIGH_RAM_BASE, Layout};

/// Where Debian's seabios package puts its ROMs, in the order janus looks: the 256 KiB build
/// (QEMU's default for its PC machines since QEMU 1.7, with all of SeaBIOS's drivers), then the
/// 128 KiB one (QEMU's for old machine types).
pub const SEABIOS_PATHS: [&str; 2] = [
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/seabios/bios.bin",
];

/// The first SeaBIOS ROM of [`SEABIOS_PATHS`] that exists.
pub fn find_seabios() -> Option<std::path::PathBuf> {
    SEABIOS_PATHS
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
        .map(std::path::Path::to_path_buf)
}

/// An e820 entry's type: usable RAM.
pub const E820_RAM: u32 = 1;
/// The serial port SeaBIOS mirrors its screen output to (`etc/sercon-port`): COM1.
pub const SERCON_PORT: u16 = crate::board::COM1_PORT;
/// How long SeaBIOS waits before it reboots when nothing boots (`etc/boot-fail-wait`, in ms):
/// 0, so that "No bootable device." is followed by a reset, which ends the run.
pub const BOOT_FAIL_WAIT_MS: u32 = 0;

/// The e820 map of RAM as `etc/e820` gives it: entries of address u64, length u64, type u32,
/// little-endian.
pub fn e820(layout: &Layout) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |base: u64, len: u64| {
        if len > 0 {
            out.extend_from_slice(&base.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&E820_RAM.to_le_bytes());
        }
    };
    entry(0, layout.low_ram);
    entry(HIGH_RAM_BASE, layout.high_ram);
    out
}

/// The fw_cfg device of a machine with RAM laid out as `layout`, `nr_vcpus` vCPUs and PCI as
/// `pci`.
///
/// # Errors
/// None in practice (the file names are fixed and short).
pub fn fw_cfg(
    memory: GuestMemory,
    layout: &Layout,
    nr_vcpus: usize,
    pci: PciLayout,
) -> Result<FwCfg, FwCfgError> {
    let mut f = FwCfg::new(memory);
    f.set_u64(key::RAM_SIZE, layout.low_ram + layout.high_ram);
    f.set_u16(key::NB_CPUS, nr_vcpus as u16);
    f.set_u16(key::MAX_CPUS, nr_vcpus as u16);
    f.set_u32(key::IRQ0_OVERRIDE, 1);
    f.set_u16(key::BOOT_DEVICE, u16::from(b'c'));
    // No NUMA: a node count of 0, then a zero per possible CPU.
    f.set(key::NUMA, vec![0; 8 * (1 + nr_vcpus)]);
    f.add_file("etc/e820", e820(layout))?;
    f.add_file("etc/sercon-port", SERCON_PORT.to_le_bytes().to_vec())?;
    f.add_file(
        "etc/boot-fail-wait",
        BOOT_FAIL_WAIT_MS.to_le_bytes().to_vec(),
    )?;
    f.add_file("etc/show-boot-menu", 0u16.to_le_bytes().to_vec())?;
    let t = crate::acpi::loader_tables(&crate::board::tables_config(nr_vcpus, Some(pci)));
    f.add_file(crate::acpi::LOADER_TABLES_FILE, t.tables)?;
    f.add_file(crate::acpi::LOADER_RSDP_FILE, t.rsdp)?;
    f.add_file(crate::acpi::LOADER_FILE, t.loader)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_lists_ram_below_and_above_4g() {
        let (_, l) = crate::layout::build_memory((3 << 30) + (1 << 30), None).unwrap();
        let e = e820(&l);
        assert_eq!(e.len(), 40);
        assert_eq!(
            u64::from_le_bytes(e[8..16].try_into().unwrap()),
            0xc000_0000
        );
        assert_eq!(u64::from_le_bytes(e[20..28].try_into().unwrap()), 1 << 32);
        assert_eq!(u64::from_le_bytes(e[28..36].try_into().unwrap()), 1 << 30);
        let (_, small) = crate::layout::build_memory(64 << 20, None).unwrap();
        assert_eq!(e820(&small).len(), 20);
    }

    #[test]
    fn fw_cfg_describes_the_machine() {
        let (m, l) = crate::layout::build_memory(64 << 20, None).unwrap();
        let mut r = crate::board::Resources::new(&l);
        let pci = PciLayout::allocate(&mut r).unwrap();
        let f = fw_cfg(m, &l, 3, pci).unwrap();
        assert_eq!(f.item(key::NB_CPUS), Some(&[3u8, 0][..]));
        assert_eq!(
            f.item(key::RAM_SIZE),
            Some(&(64u64 << 20).to_le_bytes()[..])
        );
        let sercon = f.file_key("etc/sercon-port").unwrap();
        assert_eq!(f.item(sercon), Some(&[0xf8u8, 3][..]));
        let loader = f.file_key("etc/table-loader").unwrap();
        assert_eq!(f.item(loader).unwrap().len() % 128, 0);
        assert!(f.file_key("etc/acpi/rsdp").is_some());
    }
}
