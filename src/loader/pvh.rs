//! The PVH loader: an ELF kernel with a Xen `XEN_ELFNOTE_PHYS32_ENTRY` note (a Linux vmlinux
//! built with `CONFIG_PVH`), entered in 32-bit protected mode as Xen's PVH ABI says
//! (xen/include/public/arch-x86/hvm/start_info.h, docs/misc/pvh.pandoc).
//!
//! `PT_LOAD` segments go at their physical addresses (`p_paddr`). The boot data is one block in
//! the lowest free RAM from 0x1000:
//!
//! ```text
//! +0x00  GDT: 0x08 flat 32-bit code, 0x10 flat data
//! +0x20  hvm_start_info (version 1)
//! +0x60  hvm_modlist_entry for the initrd
//! +0x80  hvm_memmap_table_entry[] (the e820 map)
//! then   the command line
//! ```
//!
//! The initrd goes page-aligned as high as RAM below 4 GiB allows. Entry: CS/DS/ES/SS flat,
//! CR0 = PE, CR4 = 0, paging and interrupts off, EBX = `hvm_start_info`.

use super::bytes::put;
use super::e820::memory_map;
use super::elf::Elf;
use super::entry::{FLAT32_CS, FLAT32_DS, FLAT32_GDT, gdt_bytes, protected_mode};
use super::place::{Chunk, check_chunks, place_boot_data, place_initrd, write_chunks};
use super::{BootInfo, BootRequest, CMDLINE_MAX, KernelError, KernelFormat};

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Offset of `hvm_start_info` in the boot data block.
pub(crate) const START_INFO: usize = 0x20;
/// Offset of the module list in the boot data block.
pub(crate) const MODLIST: usize = 0x60;
/// Offset of the memory map in the boot data block.
pub(crate) const MEMMAP: usize = 0x80;
const MEMMAP_ENTRY: usize = 24;

/// Loads an ELF kernel through its PVH entry point `entry`.
pub(super) fn load(
    boot: &BootRequest<'_>,
    elf: &Elf<'_>,
    entry: u64,
) -> Result<BootInfo, KernelError> {
    boot.check_cmdline(CMDLINE_MAX)?;
    let chunks: Vec<Chunk<'_>> = elf
        .load_segments()?
        .into_iter()
        .map(|(ph, data)| Chunk {
            addr: ph.paddr,
            data,
            memsz: ph.memsz,
        })
        .collect();
    let (mut placer, span) = check_chunks(boot, &chunks)?;
    if !chunks.iter().any(|c| c.contains(entry)) {
        return Err(KernelError::Corrupt {
            format: "PVH kernel",
            why: "the PVH entry point is outside every PT_LOAD segment",
        });
    }
    let map = memory_map(boot.layout);
    let cmdline_off = MEMMAP + map.len() * MEMMAP_ENTRY;
    let size = cmdline_off + boot.cmdline.len() + 1;
    let base = place_boot_data(boot, &mut placer, "PVH start info", size as u64)?;
    let initrd = match boot.initrd {
        Some(rd) => Some((
            place_initrd(boot, &mut placer, rd.len() as u64, span.end, false)?,
            rd,
        )),
        None => None,
    };

    // Every check passed: write.
    let mut b = vec![0u8; size];
    let gdt = gdt_bytes(&FLAT32_GDT);
    b[..gdt.len()].copy_from_slice(&gdt);
    let si = START_INFO;
    put::<4>(&mut b, si, START_INFO_MAGIC.into());
    put::<4>(&mut b, si + 4, 1); // version
    put::<8>(&mut b, si + 24, base + cmdline_off as u64); // cmdline_paddr
    put::<8>(&mut b, si + 32, boot.rsdp.unwrap_or(0)); // rsdp_paddr
    put::<8>(&mut b, si + 40, base + MEMMAP as u64); // memmap_paddr
    put::<4>(&mut b, si + 48, map.len() as u64); // memmap_entries
    if let Some((addr, rd)) = initrd {
        put::<4>(&mut b, si + 12, 1); // nr_modules
        put::<8>(&mut b, si + 16, base + MODLIST as u64); // modlist_paddr
        put::<8>(&mut b, MODLIST, addr);
        put::<8>(&mut b, MODLIST + 8, rd.len() as u64);
    }
    for (i, e) in map.iter().enumerate() {
        let off = MEMMAP + i * MEMMAP_ENTRY;
        put::<8>(&mut b, off, e.addr);
        put::<8>(&mut b, off + 8, e.size);
        put::<4>(&mut b, off + 16, e.kind as u64);
    }
    b[cmdline_off..cmdline_off + boot.cmdline.len()].copy_from_slice(boot.cmdline.as_bytes());

    let mem = boot.mem;
    write_chunks(mem, &chunks)?;
    mem.write(base, &b)?;
    if let Some((addr, rd)) = initrd {
        mem.write(addr, rd)?;
    }
    let mut state = protected_mode(base, &FLAT32_GDT, FLAT32_CS, FLAT32_DS, entry);
    state.gpr[janus_accel::Reg::Rbx as usize] = base + START_INFO as u64;
    Ok(BootInfo {
        state,
        format: KernelFormat::Pvh { elf64: elf.elf64 },
        entry,
        kernel: span,
        initrd: initrd.map(|(a, rd)| a..a + rd.len() as u64),
        info_addr: base + START_INFO as u64,
        cmdline_addr: base + cmdline_off as u64,
        cmdline_len: boot.cmdline.len(),
    })
}
