//! The Linux bzImage loader (x86 boot protocol 2.06+, Documentation/arch/x86/boot.rst).
//!
//! The setup code (the first `setup_sects + 1` sectors) is not run: janus acts as the 64-bit
//! (or, for kernels without `XLF_KERNEL_64`, the 32-bit) boot protocol loader. Low memory:
//!
//! ```text
//! 0x00500  GDT: 0x10 __BOOT_CS (64-bit or 32-bit flat code), 0x18 __BOOT_DS (flat data)
//! 0x07000  boot_params (the "zero page"): setup header copy, e820 table, memory sizes
//! 0x08ff0  initial stack pointer (the kernel sets up its own at once)
//! 0x09000  identity page tables for 4 GiB: PML4, PDPT, 4 page directories of 2 MiB pages
//! 0x20000  the command line
//! ```
//!
//! All of it is below 1 MiB, which Linux reserves during early boot. The protected-mode kernel
//! goes at `pref_address` (1 MiB before protocol 2.10) with `init_size` bytes of RAM, the
//! initrd page-aligned as high as `initrd_addr_max` and the end of RAM below 4 GiB allow.

use super::bytes::{align_up, in_ram, put, u8_at, u16_at, u32_at, u64_at};
use super::e820::{HIMEM_START, lower_upper_kib, memory_map};
use super::entry::{
    CODE32, CODE64, DATA, gdt_bytes, long_mode, protected_mode, write_identity_map,
};
use super::{BootInfo, BootRequest, KernelError, KernelFormat};

/// Where `boot_params` goes.
pub const ZERO_PAGE: u64 = 0x7000;
/// Where the command line goes.
pub const CMDLINE: u64 = 0x2_0000;
/// Where the boot GDT goes.
pub const GDT: u64 = 0x500;
/// Where the identity page tables go (six pages).
pub const PAGE_TABLES: u64 = 0x9000;
/// The initial stack pointer.
pub const STACK_TOP: u64 = 0x8ff0;

const FORMAT: &str = "bzImage";
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
const GDT64: [u64; 4] = [0, 0, CODE64, DATA];
const GDT32: [u64; 4] = [0, 0, CODE32, DATA];

/// Offsets of setup-header fields, the same in the image and in `boot_params`.
pub(crate) mod hdr {
    pub(crate) const SETUP_SECTS: usize = 0x1f1;
    pub(crate) const SYSSIZE: usize = 0x1f4;
    pub(crate) const BOOT_FLAG: usize = 0x1fe;
    pub(crate) const JUMP: usize = 0x200;
    pub(crate) const HEADER: usize = 0x202;
    pub(crate) const VERSION: usize = 0x206;
    pub(crate) const TYPE_OF_LOADER: usize = 0x210;
    pub(crate) const LOADFLAGS: usize = 0x211;
    pub(crate) const CODE32_START: usize = 0x214;
    pub(crate) const RAMDISK_IMAGE: usize = 0x218;
    pub(crate) const RAMDISK_SIZE: usize = 0x21c;
    pub(crate) const CMD_LINE_PTR: usize = 0x228;
    pub(crate) const INITRD_ADDR_MAX: usize = 0x22c;
    pub(crate) const KERNEL_ALIGNMENT: usize = 0x230;
    pub(crate) const RELOCATABLE_KERNEL: usize = 0x234;
    pub(crate) const XLOADFLAGS: usize = 0x236;
    pub(crate) const CMDLINE_SIZE: usize = 0x238;
    pub(crate) const PREF_ADDRESS: usize = 0x258;
    pub(crate) const INIT_SIZE: usize = 0x260;
}

/// Offsets of `boot_params` fields outside the setup header.
pub(crate) mod bp {
    pub(crate) const EXT_MEM_K: usize = 0x002;
    pub(crate) const ACPI_RSDP_ADDR: usize = 0x070;
    pub(crate) const ALT_MEM_K: usize = 0x1e0;
    pub(crate) const E820_ENTRIES: usize = 0x1e8;
    pub(crate) const HDR_END_MAX: usize = 0x290;
    pub(crate) const E820_TABLE: usize = 0x2d0;
    pub(crate) const E820_MAX: usize = 128;
    pub(crate) const SIZE: usize = 0x1000;
}

/// loadflags: the protected-mode kernel loads at 1 MiB (a bzImage).
const LOADED_HIGH: u8 = 1;
/// xloadflags: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1;

/// Whether `k` has the setup header magic.
pub(crate) fn is_bzimage(k: &[u8]) -> bool {
    k.get(hdr::HEADER..hdr::HEADER + 4) == Some(b"HdrS")
}

/// The setup-header facts the loader acts on.
#[derive(Debug)]
struct Header<'a> {
    image: &'a [u8],
    version: u16,
    header_end: usize,
    protected_mode: &'a [u8],
    relocatable: bool,
    kernel_alignment: u64,
    xloadflags: u16,
    pref_address: u64,
    init_size: u64,
    cmdline_size: u64,
    initrd_addr_max: u64,
}

fn truncated(what: &'static str, need: usize, have: usize) -> KernelError {
    KernelError::Truncated {
        format: FORMAT,
        what,
        need: need as u64,
        have: have as u64,
    }
}

fn corrupt(why: &'static str) -> KernelError {
    KernelError::Corrupt {
        format: FORMAT,
        why,
    }
}

impl<'a> Header<'a> {
    fn parse(k: &'a [u8]) -> Result<Self, KernelError> {
        let len = k.len();
        let version = u16_at(k, hdr::VERSION).ok_or(truncated("the setup header", 0x208, len))?;
        if version < 0x0206 {
            return Err(KernelError::ProtocolTooOld { version });
        }
        let setup_sects = match u8_at(k, hdr::SETUP_SECTS) {
            Some(0) | None => 4,
            Some(n) => usize::from(n),
        };
        let setup_size = (setup_sects + 1) * 512;
        if len <= setup_size {
            return Err(truncated("the setup code and kernel", setup_size + 1, len));
        }
        // The fields this protocol version defines must lie inside the header it declares.
        let header_end = 0x202 + usize::from(k[hdr::JUMP + 1]);
        let fields_end = if version >= 0x020a { 0x264 } else { 0x23c };
        if header_end < fields_end {
            return Err(corrupt(
                "the setup header is shorter than its protocol version needs",
            ));
        }
        // Everything below is inside the setup sectors (at least 0xa00 bytes), so in bounds.
        let word = |o| u64::from(u32_at(k, o).unwrap_or(0));
        if u16_at(k, hdr::BOOT_FLAG) != Some(0xaa55) {
            return Err(corrupt("boot_flag is not 0xAA55"));
        }
        let protected_mode = &k[setup_size..];
        let syssize = word(hdr::SYSSIZE) * 16;
        if syssize > protected_mode.len() as u64 {
            return Err(KernelError::Truncated {
                format: FORMAT,
                what: "the protected-mode kernel (syssize)",
                need: setup_size as u64 + syssize,
                have: len as u64,
            });
        }
        if u8_at(k, hdr::LOADFLAGS).unwrap_or(0) & LOADED_HIGH == 0 {
            return Err(KernelError::ZImage);
        }
        let relocatable = u8_at(k, hdr::RELOCATABLE_KERNEL).unwrap_or(0) != 0;
        let kernel_alignment = word(hdr::KERNEL_ALIGNMENT);
        if relocatable && !kernel_alignment.is_power_of_two() {
            return Err(corrupt("kernel_alignment is not a power of two"));
        }
        let xloadflags = if version >= 0x020c {
            u16_at(k, hdr::XLOADFLAGS).unwrap_or(0)
        } else {
            0
        };
        let (pref_address, init_size) = if version >= 0x020a {
            let init_size = word(hdr::INIT_SIZE);
            if init_size == 0 {
                return Err(corrupt("init_size is 0"));
            }
            (u64_at(k, hdr::PREF_ADDRESS).unwrap_or(0), init_size)
        } else {
            (HIMEM_START, protected_mode.len() as u64)
        };
        Ok(Header {
            image: k,
            version,
            header_end: header_end.min(bp::HDR_END_MAX),
            protected_mode,
            relocatable,
            kernel_alignment,
            xloadflags,
            pref_address,
            init_size,
            cmdline_size: word(hdr::CMDLINE_SIZE),
            initrd_addr_max: match word(hdr::INITRD_ADDR_MAX) {
                0 => 0x37ff_ffff,
                n => n,
            },
        })
    }

    /// Where the protected-mode kernel goes: `pref_address`, moved up to 1 MiB (aligned) when
    /// it is lower and the kernel is relocatable.
    fn load_address(&self) -> Result<u64, KernelError> {
        let mut addr = self.pref_address;
        if self.relocatable {
            addr = align_up(addr.max(HIMEM_START), self.kernel_alignment).ok_or(corrupt(
                "pref_address cannot be aligned to kernel_alignment",
            ))?;
        } else if addr < HIMEM_START {
            return Err(KernelError::NotRelocatable {
                addr,
                why: "it is below 1 MiB, where the boot data goes",
            });
        }
        Ok(addr)
    }
}

/// Loads a bzImage; see the module documentation.
pub(super) fn load(boot: &BootRequest<'_>, k: &[u8]) -> Result<BootInfo, KernelError> {
    let h = Header::parse(k)?;
    boot.check_cmdline(usize::try_from(h.cmdline_size).unwrap_or(usize::MAX))?;
    let ram_end = boot.low_ram_end();
    let load = h.load_address()?;
    let need = h.init_size.max(h.protected_mode.len() as u64);
    let end = load.saturating_add(need);
    // Below 4 GiB: the identity map covers no more (XLF_CAN_BE_LOADED_ABOVE_4G is not used).
    if end > ram_end || !in_ram(boot.mem, load, end) {
        return Err(KernelError::KernelTooLarge {
            start: load,
            end,
            ram_end,
        });
    }
    let initrd = match boot.initrd {
        None => None,
        Some(rd) => Some((place_initrd(&h, rd.len() as u64, end, ram_end)?, rd)),
    };

    // Every check passed: write.
    let mem = boot.mem;
    mem.write(load, h.protected_mode)?;
    let params = zero_page(&h, boot, load, initrd.map(|(a, rd)| (a, rd.len() as u64)));
    mem.write(ZERO_PAGE, &params)?;
    let mut cmdline = boot.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write(CMDLINE, &cmdline)?;
    if let Some((addr, rd)) = initrd {
        mem.write(addr, rd)?;
    }
    let entry64 = h.xloadflags & XLF_KERNEL_64 != 0;
    let (entry, mut state) = if entry64 {
        mem.write(GDT, &gdt_bytes(&GDT64))?;
        let cr3 = write_identity_map(mem, PAGE_TABLES)?;
        let rip = load + 0x200;
        (rip, long_mode(GDT, &GDT64, BOOT_CS, BOOT_DS, rip, cr3))
    } else {
        mem.write(GDT, &gdt_bytes(&GDT32))?;
        (load, protected_mode(GDT, &GDT32, BOOT_CS, BOOT_DS, load))
    };
    state.gpr[janus_accel::Reg::Rsi as usize] = ZERO_PAGE;
    state.gpr[janus_accel::Reg::Rsp as usize] = STACK_TOP;
    Ok(BootInfo {
        state,
        format: KernelFormat::BzImage {
            protocol: h.version,
            entry64,
        },
        entry,
        kernel: load..end,
        initrd: initrd.map(|(a, rd)| a..a + rd.len() as u64),
        info_addr: ZERO_PAGE,
        cmdline_addr: CMDLINE,
        cmdline_len: boot.cmdline.len(),
    })
}

/// The highest page-aligned place for `size` bytes above `kernel_end` that ends below both
/// `initrd_addr_max` and the end of RAM.
fn place_initrd(
    h: &Header<'_>,
    size: u64,
    kernel_end: u64,
    ram_end: u64,
) -> Result<u64, KernelError> {
    let addr_limit = h.initrd_addr_max.saturating_add(1);
    let (limit, why) = if addr_limit < ram_end {
        (addr_limit, "the kernel's initrd_addr_max")
    } else {
        (ram_end, "the end of RAM below 4 GiB")
    };
    let lowest = align_up(kernel_end, 0x1000).unwrap_or(u64::MAX);
    limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= lowest)
        .ok_or(KernelError::InitrdTooLarge {
            size,
            start: lowest,
            limit,
            why,
        })
}

/// `boot_params` as the 64-bit boot protocol wants it: zeroed, the image's setup header
/// copied in, the loader's fields, the memory sizes and the e820 table filled.
fn zero_page(
    h: &Header<'_>,
    boot: &BootRequest<'_>,
    load: u64,
    initrd: Option<(u64, u64)>,
) -> Vec<u8> {
    let mut p = vec![0u8; bp::SIZE];
    // The header is inside the setup sectors, so `header_end` is within the image.
    p[hdr::SETUP_SECTS..h.header_end].copy_from_slice(&h.image[hdr::SETUP_SECTS..h.header_end]);
    p[hdr::TYPE_OF_LOADER] = 0xff;
    put::<4>(&mut p, hdr::CODE32_START, load);
    put::<4>(&mut p, hdr::CMD_LINE_PTR, CMDLINE);
    if let Some((addr, size)) = initrd {
        put::<4>(&mut p, hdr::RAMDISK_IMAGE, addr);
        put::<4>(&mut p, hdr::RAMDISK_SIZE, size);
    }
    // acpi_rsdp_addr exists from boot protocol 2.14 on; older kernels scan the BIOS area.
    if let Some(rsdp) = boot.rsdp.filter(|_| h.version >= 0x020e) {
        put::<8>(&mut p, bp::ACPI_RSDP_ADDR, rsdp);
    }
    let (_, upper_kib) = lower_upper_kib(boot.layout);
    put::<2>(&mut p, bp::EXT_MEM_K, upper_kib.min(0xfc00));
    put::<4>(&mut p, bp::ALT_MEM_K, upper_kib.min(u64::from(u32::MAX)));
    let map = memory_map(boot.layout);
    for (i, e) in map.iter().take(bp::E820_MAX).enumerate() {
        let off = bp::E820_TABLE + i * 20;
        put::<8>(&mut p, off, e.addr);
        put::<8>(&mut p, off + 8, e.size);
        put::<4>(&mut p, off + 16, e.kind as u64);
    }
    p[bp::E820_ENTRIES] = map.len().min(bp::E820_MAX) as u8;
    p
}
