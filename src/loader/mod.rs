//! Kernel loaders: a Linux bzImage, an ELF vmlinux with a Xen PVH entry note, or a multiboot v1
//! kernel, placed in guest memory with its initrd, command line and boot information, and the
//! vCPU state to enter it with.
//!
//! # API
//!
//! [`load_kernel`] detects the format, loads the kernel and returns a [`BootInfo`]: the entry
//! [`CpuState`] for the boot vCPU plus what went where, printable as one line for `--stats` and
//! logs. Every failure is one [`KernelError`] whose message a user can act on; no byte sequence
//! makes a loader panic. Nothing is written to guest memory until every check has passed.
//!
//! ```no_run
//! # use janus::{layout, loader};
//! let (mem, lay) = layout::build_memory(256 << 20, None)?;
//! let kernel = std::fs::read("vmlinuz")?;
//! let boot = loader::load_kernel(&mem, &lay, &kernel, None, "console=ttyS0", None)?;
//! println!("{boot}"); // bzImage (boot protocol 2.15), 64-bit entry 0x1000200, ...
//! // vcpu.set_state(&boot.state)
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Formats, in the order they are detected
//!
//! 1. **bzImage** (`"HdrS"` at 0x202; Linux boot protocol 2.06 or later, Documentation/arch/x86/
//!    boot.rst): the protected-mode kernel at `pref_address` (1 MiB before protocol 2.10) with
//!    `init_size` bytes of room, `boot_params` at [`bzimage::ZERO_PAGE`], the command line at
//!    [`bzimage::CMDLINE`], the initrd page-aligned as high as `initrd_addr_max` and RAM allow.
//!    Entered at the 64-bit entry (load address + 0x200) in long mode when `xloadflags` has
//!    `XLF_KERNEL_64`, else at the 32-bit entry in flat protected mode; `__BOOT_CS` = 0x10,
//!    `__BOOT_DS` = 0x18, RSI = `boot_params`, interrupts off; identity page tables for 4 GiB.
//! 2. **PVH** (an ELF32 or ELF64 with the note `Xen`/`XEN_ELFNOTE_PHYS32_ENTRY` (18), as a Linux
//!    vmlinux built with `CONFIG_PVH`): `PT_LOAD` segments at their physical addresses,
//!    `hvm_start_info` version 1 with the memory map, the command line and the initrd as
//!    module 0; entered at the note's address in 32-bit protected mode, paging off, EBX =
//!    `hvm_start_info`.
//! 3. **Multiboot v1** (magic 0x1BADB002 with a valid checksum, 4-byte aligned in the first
//!    8 KiB): the a.out-kludge address fields when header flag 16 is set, else the ELF program
//!    headers; `multiboot_info` with memory sizes, the memory map, the command line, the initrd
//!    as one module named `initrd` and the loader name `janus`; entered in 32-bit protected
//!    mode with EAX = 0x2BADB002, EBX = `multiboot_info`.
//!
//! The PVH and multiboot boot data (a small GDT, the info structure, memory map and strings)
//! go in the lowest free part of RAM from 0x1000 that no kernel segment uses, so kernels
//! linked low (even at 0x7C00) keep their addresses. The memory map of every format is
//! [`memory_map`]: RAM 0-0x9FC00, reserved 0x9FC00-1 MiB, RAM from 1 MiB, in the MMIO hole
//! only the ECAM window, IOAPIC, LAPIC and BIOS ROM reserved, RAM above 4 GiB.

mod bytes;
pub mod bzimage;
mod e820;
mod elf;
mod entry;
mod error;
pub mod flat;
pub mod identify;
pub mod multiboot;
mod place;
pub mod pvh;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

use janus_accel::{CpuState, GuestMemory};

use crate::layout::Layout;

pub use e820::{E820Entry, E820Kind, memory_map};
pub use error::KernelError;

/// The longest command line janus passes to any kernel (a bzImage may accept less).
pub const CMDLINE_MAX: usize = 0xffff;

/// What [`load_kernel`] loaded, where, and how to enter it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The state to start the boot vCPU in.
    pub state: CpuState,
    /// The format that was detected.
    pub format: KernelFormat,
    /// The physical entry point.
    pub entry: u64,
    /// Physical addresses the kernel occupies (from its lowest to its highest loaded byte,
    /// including zeroed bss and, for a bzImage, the whole `init_size`).
    pub kernel: Range<u64>,
    /// Where the initrd was placed.
    pub initrd: Option<Range<u64>>,
    /// The boot information structure: `boot_params`, `hvm_start_info` or `multiboot_info`.
    pub info_addr: u64,
    /// Where the zero-terminated command line is.
    pub cmdline_addr: u64,
    /// Length of the command line in bytes (without the terminating zero).
    pub cmdline_len: usize,
}

/// The kernel formats janus boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A Linux bzImage.
    BzImage {
        /// The boot protocol version, e.g. 0x020f for 2.15.
        protocol: u16,
        /// Entered at the 64-bit entry point (else the 32-bit one).
        entry64: bool,
    },
    /// An ELF kernel entered through its Xen PVH note.
    Pvh {
        /// ELF64 (else ELF32).
        elf64: bool,
    },
    /// A multiboot v1 kernel.
    Multiboot {
        /// Loaded by its ELF program headers (else by the header's a.out-kludge fields).
        elf: bool,
    },
}

impl fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KernelFormat::BzImage { protocol, entry64 } => write!(
                f,
                "bzImage (boot protocol {}.{:02}), {}-bit entry",
                protocol >> 8,
                protocol & 0xff,
                if entry64 { 64 } else { 32 }
            ),
            KernelFormat::Pvh { elf64 } => {
                write!(f, "PVH ELF{}, 32-bit entry", if elf64 { 64 } else { 32 })
            }
            KernelFormat::Multiboot { elf } => write!(
                f,
                "multiboot ({}), 32-bit entry",
                if elf { "ELF" } else { "a.out kludge" }
            ),
        }
    }
}

impl fmt::Display for BootInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = match self.format {
            KernelFormat::BzImage { .. } => "boot_params",
            KernelFormat::Pvh { .. } => "hvm_start_info",
            KernelFormat::Multiboot { .. } => "multiboot_info",
        };
        write!(
            f,
            "{} {:#x}; kernel {:#x}-{:#x}; {info} {:#x}; cmdline {:#x} ({} bytes)",
            self.format,
            self.entry,
            self.kernel.start,
            self.kernel.end,
            self.info_addr,
            self.cmdline_addr,
            self.cmdline_len
        )?;
        match &self.initrd {
            Some(r) => write!(f, "; initrd {:#x}-{:#x}", r.start, r.end),
            None => write!(f, "; no initrd"),
        }
    }
}

/// Detects the format of `kernel`, loads it with `initrd` and `cmdline` into `mem` (laid out as
/// `layout` says) and returns the state to enter it with. `rsdp`, the ACPI tables' root, goes to
/// the kernel where its format has a field for it: `boot_params.acpi_rsdp_addr` (boot protocol
/// 2.14 and later) and `hvm_start_info.rsdp_paddr`; a multiboot kernel scans the BIOS area.
///
/// Detection: a bzImage by `"HdrS"` at offset 0x202; an ELF (`\x7fELF`) with a PVH note is
/// booted through PVH, an ELF without one through its multiboot header if it has one; anything
/// else with a multiboot header is a multiboot kernel.
///
/// # Errors
/// A [`KernelError`] naming the first problem found: an empty, truncated or corrupt kernel, an
/// unknown format, a boot protocol older than 2.06, a kernel that does not fit in RAM or cannot
/// be relocated, an initrd that does not fit, or a command line that is too long.
pub fn load_kernel(
    mem: &GuestMemory,
    layout: &Layout,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    rsdp: Option<u64>,
) -> Result<BootInfo, KernelError> {
    if kernel.is_empty() {
        return Err(KernelError::Empty);
    }
    if initrd.is_some_and(<[u8]>::is_empty) {
        return Err(KernelError::EmptyInitrd);
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(KernelError::CmdlineNul);
    }
    let boot = BootRequest {
        mem,
        layout,
        initrd,
        cmdline,
        rsdp,
    };
    if bzimage::is_bzimage(kernel) {
        return bzimage::load(&boot, kernel);
    }
    if elf::is_elf(kernel) {
        let image = elf::Elf::parse(kernel)?;
        if let Some(entry) = image.pvh_entry()? {
            return pvh::load(&boot, &image, entry);
        }
        return match multiboot::find_header(kernel)? {
            Some(header) => multiboot::load(&boot, kernel, &header),
            None => Err(KernelError::NoElfEntry),
        };
    }
    match multiboot::find_header(kernel)? {
        Some(header) => multiboot::load(&boot, kernel, &header),
        None => Err(KernelError::UnknownFormat),
    }
}

/// The command line a kernel is given, as GRUB and QEMU build it: a multiboot kernel's starts
/// with the kernel's path (programs read their argv[0] from it), then `append`; a Linux kernel
/// gets `append` alone.
pub fn boot_cmdline(kernel: &[u8], path: &str, append: &str) -> String {
    let pvh = elf::is_elf(kernel)
        && elf::Elf::parse(kernel).is_ok_and(|e| e.pvh_entry().is_ok_and(|p| p.is_some()));
    let multiboot = !bzimage::is_bzimage(kernel)
        && !pvh
        && multiboot::find_header(kernel).is_ok_and(|h| h.is_some());
    match (multiboot, append.is_empty()) {
        (false, _) => append.to_string(),
        (true, true) => path.to_string(),
        (true, false) => format!("{path} {append}"),
    }
}

/// What every loader is given besides the kernel.
struct BootRequest<'a> {
    mem: &'a GuestMemory,
    layout: &'a Layout,
    initrd: Option<&'a [u8]>,
    cmdline: &'a str,
    /// Where the ACPI RSDP is, for the formats that can say so (`None`: no ACPI tables).
    rsdp: Option<u64>,
}

impl BootRequest<'_> {
    /// Refuses a command line longer than `max` bytes (and [`CMDLINE_MAX`]).
    fn check_cmdline(&self, max: usize) -> Result<(), KernelError> {
        let max = max.min(CMDLINE_MAX);
        if self.cmdline.len() > max {
            return Err(KernelError::CmdlineTooLong {
                len: self.cmdline.len(),
                max,
            });
        }
        Ok(())
    }

    /// Where RAM below 4 GiB ends.
    fn low_ram_end(&self) -> u64 {
        self.layout.low_ram
    }
}
