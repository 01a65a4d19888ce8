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

/// QEMU's option ROM that boots a kernel from fw_cfg (package qemu-system-data); SeaBIOS runs
/// it from fw_cfg's `genroms/` like any option ROM.
pub const LINUXBOOT_ROM: &str = "/usr/share/qemu/linuxboot_dma.bin";
/// Where the option ROM puts a bzImage's setup part (real-mode code and header).
pub const SETUP_ADDR: u32 = 0x1_0000;
/// Where it puts the command line (the setup part's heap ends just below).
pub const CMDLINE_ADDR: u32 = 0x2_0000;
/// Where it puts the protected-mode kernel.
pub const KERNEL_ADDR: u32 = 0x10_0000;

/// Why a kernel cannot be booted by firmware.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareBootError {
    /// Not a bzImage of boot protocol 2.06 or later loaded high.
    #[error("--kernel with --bios needs a bzImage (boot protocol 2.06 or later)")]
    NotBzImage,
    /// The option ROM that boots it is missing.
    #[error("--kernel with --bios needs {LINUXBOOT_ROM} (Debian package qemu-system-data): {0}")]
    NoOptionRom(std::io::Error),
    /// fw_cfg refused an item.
    #[error(transparent)]
    FwCfg(#[from] FwCfgError),
}

/// Serves `kernel` (a bzImage), `initrd` and `cmdline` through fw_cfg for firmware to boot, as
/// QEMU does with `-kernel` and a BIOS: the setup part, patched as a boot loader patches it
/// (loader type, heap, command line and initrd addresses), the protected-mode part, the initrd
/// at the top of low RAM below the kernel's limit, the command line, and QEMU's linuxboot
/// option ROM, which SeaBIOS runs to load them and jump to the setup code.
///
/// # Errors
/// A kernel that is not a bzImage, or no option ROM.
pub fn add_linux_boot(
    f: &mut FwCfg,
    layout: &Layout,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<(), FirmwareBootError> {
    let u16_at = |o: usize| {
        kernel
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        kernel
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if kernel.get(0x202..0x206) != Some(b"HdrS".as_slice())
        || u16_at(0x206).is_none_or(|v| v < 0x206)
        || kernel.get(0x211).is_none_or(|f| f & 1 == 0)
    {
        return Err(FirmwareBootError::NotBzImage);
    }
    let setup_sects = match kernel[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let setup_size = (setup_sects + 1) * 512;
    if kernel.len() <= setup_size {
        return Err(FirmwareBootError::NotBzImage);
    }
    let rom = std::fs::read(LINUXBOOT_ROM).map_err(FirmwareBootError::NoOptionRom)?;
    let mut setup = kernel[..setup_size].to_vec();
    setup[0x210] = 0xb0; // type_of_loader: "undefined" boot loader
    setup[0x211] |= 0x80; // CAN_USE_HEAP
    setup[0x224..0x226]
        .copy_from_slice(&((CMDLINE_ADDR - SETUP_ADDR - 0x200) as u16).to_le_bytes());
    setup[0x228..0x22c].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
    if let Some(rd) = initrd {
        let max = u64::from(u32_at(0x22c).unwrap_or(0x37ff_ffff));
        let top = layout.low_ram.min(max + 1);
        let at = top.saturating_sub(rd.len() as u64) & !0xfff;
        setup[0x218..0x21c].copy_from_slice(&(at as u32).to_le_bytes());
        setup[0x21c..0x220].copy_from_slice(&(rd.len() as u32).to_le_bytes());
        f.set_u32(key::INITRD_ADDR, at as u32);
        f.set_u32(key::INITRD_SIZE, rd.len() as u32);
        f.set(key::INITRD_DATA, rd.to_vec());
    }
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    f.set_u32(key::CMDLINE_ADDR, CMDLINE_ADDR);
    f.set_u32(key::CMDLINE_SIZE, line.len() as u32);
    f.set(key::CMDLINE_DATA, line);
    f.set_u32(key::SETUP_ADDR, SETUP_ADDR);
    f.set_u32(key::SETUP_SIZE, setup.len() as u32);
    f.set(key::SETUP_DATA, setup);
    f.set_u32(key::KERNEL_ADDR, KERNEL_ADDR);
    f.set_u32(key::KERNEL_SIZE, (kernel.len() - setup_size) as u32);
    f.set(key::KERNEL_DATA, kernel[setup_size..].to_vec());
    f.add_file("genroms/linuxboot_dma.bin", rom)?;
    Ok(())
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
    fn firmware_boot_refuses_what_is_not_a_bzimage() {
        let (m, l) = crate::layout::build_memory(64 << 20, None).unwrap();
        let mut r = crate::board::Resources::new(&l);
        let mut f = fw_cfg(m, &l, 1, PciLayout::allocate(&mut r).unwrap()).unwrap();
        let mut k = vec![0u8; 4096];
        assert!(matches!(
            add_linux_boot(&mut f, &l, &k, None, ""),
            Err(FirmwareBootError::NotBzImage)
        ));
        // A header of protocol 2.06 that is not loaded high (a zImage).
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x206u16.to_le_bytes());
        assert!(matches!(
            add_linux_boot(&mut f, &l, &k, None, ""),
            Err(FirmwareBootError::NotBzImage)
        ));
        assert_eq!(f.item(key::KERNEL_SIZE), None);
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
