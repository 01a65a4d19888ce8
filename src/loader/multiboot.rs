//! The multiboot v1 loader (the Multiboot Specification 0.6.96): the header's a.out-kludge
//! address fields when flag 16 is set, else the ELF program headers (physical addresses, the
//! entry translated from virtual to physical as GRUB does).
//!
//! The boot data is one block in the lowest free RAM from 0x1000:
//!
//! ```text
//! +0x00  GDT: 0x08 flat 32-bit code, 0x10 flat data
//! +0x20  multiboot_info: mem_lower/mem_upper, cmdline, mods, mmap, boot_loader_name
//! +0x98  the memory map: entries of 24 bytes, each starting with its size (20)
//! then   one module entry (the initrd), the command line, "initrd", "janus"
//! ```
//!
//! The initrd (module 0) goes page-aligned in the lowest free RAM after the kernel. Entry:
//! 32-bit protected mode, flat CS (0x08) and data segments (0x10), paging and interrupts off,
//! EAX = 0x2BADB002, EBX = `multiboot_info`. The header's video-mode request (flag 2) is
//! ignored, as QEMU does; janus has no framebuffer to describe.

use super::bytes::{put, slice, u32_at};
use super::e820::{lower_upper_kib, memory_map};
use super::elf::{Elf, is_elf};
use super::entry::{FLAT32_CS, FLAT32_DS, FLAT32_GDT, gdt_bytes, protected_mode};
use super::place::{Chunk, check_chunks, place_boot_data, place_initrd, write_chunks};
use super::{BootInfo, BootRequest, CMDLINE_MAX, KernelError, KernelFormat};

/// The header magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// How far into the file the header may be.
pub const SEARCH_LIMIT: usize = 8192;
/// Header flag: the a.out-kludge address fields are valid.
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Header flags janus honours or ignores (page-aligned modules, memory info, video mode).
const FLAGS_KNOWN: u32 = 0x7;

/// `multiboot_info.flags`: mem_lower/mem_upper.
pub const INFO_MEMORY: u32 = 1 << 0;
/// `multiboot_info.flags`: cmdline.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// `multiboot_info.flags`: mods_count/mods_addr.
pub const INFO_MODS: u32 = 1 << 3;
/// `multiboot_info.flags`: mmap_length/mmap_addr.
pub const INFO_MMAP: u32 = 1 << 6;
/// `multiboot_info.flags`: boot_loader_name.
pub const INFO_LOADER_NAME: u32 = 1 << 9;

/// Offset of `multiboot_info` in the boot data block.
pub(crate) const INFO: usize = 0x20;
const INFO_SIZE: usize = 0x78;
/// Offset of the memory map in the boot data block.
pub(crate) const MMAP: usize = INFO + INFO_SIZE;
const MMAP_ENTRY: usize = 24;
const FORMAT: &str = "multiboot kernel";

/// A multiboot header found in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// File offset of the magic.
    offset: usize,
    flags: u32,
}

fn corrupt(why: &'static str) -> KernelError {
    KernelError::Corrupt {
        format: FORMAT,
        why,
    }
}

/// The first valid multiboot header (magic, flags, checksum summing to 0) at a 4-byte aligned
/// offset of the first 8 KiB.
///
/// # Errors
/// A magic whose checksum is wrong when no valid header follows; a header whose a.out-kludge
/// fields run past the file.
pub(crate) fn find_header(k: &[u8]) -> Result<Option<Header>, KernelError> {
    let mut bad_checksum = false;
    let limit = k.len().min(SEARCH_LIMIT);
    for offset in (0..limit.saturating_sub(11)).step_by(4) {
        if u32_at(k, offset) != Some(HEADER_MAGIC) {
            continue;
        }
        let (Some(flags), Some(sum)) = (u32_at(k, offset + 4), u32_at(k, offset + 8)) else {
            continue;
        };
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(sum) != 0 {
            bad_checksum = true;
            continue;
        }
        if flags & FLAG_AOUT_KLUDGE != 0 && k.len() < offset + 32 {
            return Err(KernelError::Truncated {
                format: FORMAT,
                what: "the multiboot header's address fields",
                need: offset as u64 + 32,
                have: k.len() as u64,
            });
        }
        return Ok(Some(Header { offset, flags }));
    }
    if bad_checksum {
        return Err(corrupt("the multiboot header's checksum is wrong"));
    }
    Ok(None)
}

/// The pieces to load and the physical entry point, from the a.out-kludge fields.
fn aout_chunks<'a>(k: &'a [u8], h: &Header) -> Result<(Vec<Chunk<'a>>, u64), KernelError> {
    // In bounds: `find_header` checked that the five fields are in the file.
    let field = |i: usize| u64::from(u32_at(k, h.offset + 12 + 4 * i).unwrap_or(0));
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0), field(1), field(2), field(3), field(4));
    let before_header = header_addr
        .checked_sub(load_addr)
        .ok_or(corrupt("load_addr is above header_addr"))?;
    let file_off = (h.offset as u64).checked_sub(before_header).ok_or(corrupt(
        "header_addr - load_addr is larger than the header's file offset",
    ))?;
    let load_len = if load_end == 0 {
        k.len() as u64 - file_off
    } else {
        load_end
            .checked_sub(load_addr)
            .ok_or(corrupt("load_end_addr is below load_addr"))?
    };
    let data = slice(k, file_off, load_len).ok_or(KernelError::Truncated {
        format: FORMAT,
        what: "the image up to load_end_addr",
        need: file_off + load_len,
        have: k.len() as u64,
    })?;
    let memsz = if bss_end == 0 {
        load_len
    } else {
        bss_end
            .checked_sub(load_addr)
            .filter(|&m| m >= load_len)
            .ok_or(corrupt("bss_end_addr is below load_end_addr"))?
    };
    if memsz == 0 {
        return Err(corrupt("the a.out-kludge fields load nothing"));
    }
    let chunk = Chunk {
        addr: load_addr,
        data,
        memsz,
    };
    if !chunk.contains(entry) {
        return Err(corrupt("entry_addr is outside the loaded image"));
    }
    Ok((vec![chunk], entry))
}

/// The pieces to load and the physical entry point, from the ELF program headers.
fn elf_chunks(k: &[u8]) -> Result<(Vec<Chunk<'_>>, u64), KernelError> {
    let elf = Elf::parse(k)?;
    let segments = elf.load_segments()?;
    // A virtual entry point inside a segment becomes the physical address it is loaded at.
    let entry = segments
        .iter()
        .find(|(ph, _)| (ph.vaddr..ph.vaddr.saturating_add(ph.memsz)).contains(&elf.entry))
        .map_or(elf.entry, |(ph, _)| elf.entry - ph.vaddr + ph.paddr);
    let chunks: Vec<Chunk<'_>> = segments
        .into_iter()
        .map(|(ph, data)| Chunk {
            addr: ph.paddr,
            data,
            memsz: ph.memsz,
        })
        .collect();
    if !chunks.iter().any(|c| c.contains(entry)) {
        return Err(corrupt(
            "the ELF entry point is outside every PT_LOAD segment",
        ));
    }
    Ok((chunks, entry))
}

/// Loads a multiboot kernel whose header `find_header` returned.
pub(super) fn load(boot: &BootRequest<'_>, k: &[u8], h: &Header) -> Result<BootInfo, KernelError> {
    if h.flags & 0xffff & !FLAGS_KNOWN != 0 {
        return Err(KernelError::Unsupported {
            format: FORMAT,
            why: "its header requires a feature janus does not provide (flag bits 3-15)",
        });
    }
    boot.check_cmdline(CMDLINE_MAX)?;
    let aout = h.flags & FLAG_AOUT_KLUDGE != 0;
    let (chunks, entry) = if aout {
        aout_chunks(k, h)?
    } else if is_elf(k) {
        elf_chunks(k)?
    } else {
        return Err(KernelError::Unsupported {
            format: FORMAT,
            why: "not an ELF file, and its header has no a.out-kludge address fields (flag 16)",
        });
    };
    let (mut placer, span) = check_chunks(boot, &chunks)?;

    let map = memory_map(boot.layout);
    let module_off = MMAP + map.len() * MMAP_ENTRY;
    let cmdline_off = module_off + 16;
    let initrd_name_off = cmdline_off + boot.cmdline.len() + 1;
    let loader_name_off = initrd_name_off + b"initrd\0".len();
    let size = loader_name_off + b"janus\0".len();
    let base = place_boot_data(boot, &mut placer, "multiboot information", size as u64)?;
    let initrd = match boot.initrd {
        Some(rd) => Some((
            place_initrd(boot, &mut placer, rd.len() as u64, span.end, true)?,
            rd,
        )),
        None => None,
    };

    // Every check passed: write.
    let addr = |off: usize| base + off as u64;
    let mut b = vec![0u8; size];
    let gdt = gdt_bytes(&FLAT32_GDT);
    b[..gdt.len()].copy_from_slice(&gdt);
    let (lower, upper) = lower_upper_kib(boot.layout);
    let flags = INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MMAP | INFO_LOADER_NAME;
    put::<4>(&mut b, INFO, flags.into());
    put::<4>(&mut b, INFO + 4, lower);
    put::<4>(&mut b, INFO + 8, upper.min(u32::MAX.into()));
    put::<4>(&mut b, INFO + 16, addr(cmdline_off));
    put::<4>(&mut b, INFO + 24, addr(module_off)); // mods_addr
    put::<4>(&mut b, INFO + 44, (map.len() * MMAP_ENTRY) as u64); // mmap_length
    put::<4>(&mut b, INFO + 48, addr(MMAP));
    put::<4>(&mut b, INFO + 64, addr(loader_name_off));
    for (i, e) in map.iter().enumerate() {
        let off = MMAP + i * MMAP_ENTRY;
        put::<4>(&mut b, off, (MMAP_ENTRY - 4) as u64);
        put::<8>(&mut b, off + 4, e.addr);
        put::<8>(&mut b, off + 12, e.size);
        put::<4>(&mut b, off + 20, e.kind as u64);
    }
    if let Some((start, rd)) = initrd {
        put::<4>(&mut b, INFO + 20, 1); // mods_count
        put::<4>(&mut b, module_off, start);
        put::<4>(&mut b, module_off + 4, start + rd.len() as u64);
        put::<4>(&mut b, module_off + 8, addr(initrd_name_off));
    }
    b[cmdline_off..cmdline_off + boot.cmdline.len()].copy_from_slice(boot.cmdline.as_bytes());
    b[initrd_name_off..initrd_name_off + 6].copy_from_slice(b"initrd");
    b[loader_name_off..loader_name_off + 5].copy_from_slice(b"janus");

    let mem = boot.mem;
    write_chunks(mem, &chunks)?;
    mem.write(base, &b)?;
    if let Some((start, rd)) = initrd {
        mem.write(start, rd)?;
    }
    let mut state = protected_mode(base, &FLAT32_GDT, FLAT32_CS, FLAT32_DS, entry);
    state.gpr[janus_accel::Reg::Rax as usize] = BOOTLOADER_MAGIC.into();
    state.gpr[janus_accel::Reg::Rbx as usize] = addr(INFO);
    Ok(BootInfo {
        state,
        format: KernelFormat::Multiboot { elf: !aout },
        entry,
        kernel: span,
        initrd: initrd.map(|(a, rd)| a..a + rd.len() as u64),
        info_addr: addr(INFO),
        cmdline_addr: addr(cmdline_off),
        cmdline_len: boot.cmdline.len(),
    })
}
