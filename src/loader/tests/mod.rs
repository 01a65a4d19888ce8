//! Loader tests: each loader against synthetic images (entry state, boot structures and memory
//! map in guest memory, every error path), a fuzzer over random and corrupted images, and the
//! Debian kernels of tests/linux/assets when they have been fetched.

mod assets;
mod bzimage;
mod fuzz;
mod images;
mod multiboot;
mod pvh;

use janus_accel::GuestMemory;

use super::*;
use crate::layout::{Layout, build_memory};

/// A guest of `mib` MiB without BIOS.
fn guest(mib: u64) -> (GuestMemory, Layout) {
    build_memory(mib << 20, None).unwrap()
}

/// Reads `len` bytes at `addr` as a little-endian number.
fn rd(mem: &GuestMemory, addr: u64, len: usize) -> u64 {
    mem.read_le(addr, len).unwrap()
}

/// Reads the zero-terminated string at `addr`.
fn cstr(mem: &GuestMemory, addr: u64) -> String {
    let mut s = Vec::new();
    let mut a = addr;
    loop {
        let b = rd(mem, a, 1) as u8;
        if b == 0 {
            return String::from_utf8(s).unwrap();
        }
        s.push(b);
        a += 1;
    }
}

/// Reads `len` bytes at `addr`.
fn bytes(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    mem.read(addr, &mut v).unwrap();
    v
}

/// The e820 map of a 64 MiB guest, as (addr, size, type).
const MAP_64M: [(u64, u64, u32); 6] = [
    (0, 0x9fc00, 1),
    (0x9fc00, 0x60400, 2),
    (0x10_0000, (64 << 20) - 0x10_0000, 1),
    (0xc000_0000, 0x10_0000, 2),
    (0xfec0_0000, 0x1000, 2),
    (0xfee0_0000, 0x1000, 2),
];

fn load(mem: &GuestMemory, l: &Layout, k: &[u8]) -> Result<BootInfo, KernelError> {
    load_kernel(mem, l, k, None, "", None)
}

#[test]
fn empty_and_unknown_kernels_are_refused() {
    let (m, l) = guest(64);
    assert_eq!(load(&m, &l, &[]), Err(KernelError::Empty));
    assert_eq!(load(&m, &l, &[0x90; 4096]), Err(KernelError::UnknownFormat));
    assert_eq!(load(&m, &l, b"MZ"), Err(KernelError::UnknownFormat));
    // A multiboot header past the first 8 KiB does not count.
    let mut k = vec![0u8; 8192];
    k.extend(images::mb_header(0x10003));
    k.extend([0u8; 64]);
    assert_eq!(load(&m, &l, &k), Err(KernelError::UnknownFormat));
}

#[test]
fn arguments_are_checked_for_every_format() {
    let (m, l) = guest(64);
    for k in [
        images::bzimage(),
        images::pvh_elf(true),
        images::multiboot_aout(),
    ] {
        assert_eq!(
            load_kernel(&m, &l, &k, Some(&[]), "", None),
            Err(KernelError::EmptyInitrd)
        );
        assert_eq!(
            load_kernel(&m, &l, &k, None, "a\0b", None),
            Err(KernelError::CmdlineNul)
        );
        let long = "x".repeat(CMDLINE_MAX + 1);
        assert!(matches!(
            load_kernel(&m, &l, &k, None, &long, None),
            Err(KernelError::CmdlineTooLong { .. })
        ));
    }
}

#[test]
fn an_elf_without_pvh_note_or_multiboot_header_is_refused() {
    let (m, l) = guest(64);
    let k = images::elf(
        true,
        0x100_0000,
        &[images::Seg::load(
            0x100_0000,
            0x100_0000,
            vec![0xf4; 16],
            16,
        )],
    );
    assert_eq!(load(&m, &l, &k), Err(KernelError::NoElfEntry));
    assert!(
        KernelError::NoElfEntry.to_string().contains("CONFIG_PVH"),
        "the message says how to get a PVH kernel"
    );
}

#[test]
fn pvh_wins_over_multiboot_in_an_elf_with_both() {
    let (m, l) = guest(64);
    let mut text = images::mb_header(0x3);
    text.resize(0x100, 0xf4);
    let k = images::elf(
        true,
        0x100_0000,
        &[
            images::Seg::load(0x100_0000, 0x100_0000, text, 0x100),
            images::Seg::notes(images::note("Xen", 18, &0x100_0010u64.to_le_bytes())),
        ],
    );
    let b = load(&m, &l, &k).unwrap();
    assert_eq!(b.format, KernelFormat::Pvh { elf64: true });
    assert_eq!(b.entry, 0x100_0010);
}

#[test]
fn boot_info_describes_itself_in_one_line() {
    let (m, l) = guest(64);
    let b = load_kernel(
        &m,
        &l,
        &images::bzimage(),
        Some(&[1; 100]),
        "console=ttyS0",
        None,
    )
    .unwrap();
    let s = b.to_string();
    assert_eq!(
        s,
        "bzImage (boot protocol 2.15), 64-bit entry 0x1000200; kernel 0x1000000-0x1800000; \
         boot_params 0x7000; cmdline 0x20000 (13 bytes); initrd 0x3fff000-0x3fff064"
    );
    let b = load(&m, &l, &images::multiboot_aout()).unwrap();
    assert!(
        b.to_string().starts_with(
            "multiboot (a.out kludge), 32-bit entry 0x200100; kernel 0x200000-0x203000"
        ),
        "{b}"
    );
    let b = load(&m, &l, &images::pvh_elf(false)).unwrap();
    assert!(
        b.to_string()
            .starts_with("PVH ELF32, 32-bit entry 0x1000040"),
        "{b}"
    );
    assert!(b.to_string().ends_with("; no initrd"), "{b}");
}

#[test]
fn errors_are_single_lines() {
    let errors = [
        KernelError::UnknownFormat,
        KernelError::ProtocolTooOld { version: 0x0204 },
        KernelError::InitrdTooLarge {
            size: 1,
            start: 2,
            limit: 3,
            why: "w",
        },
        KernelError::KernelTooLarge {
            start: 1,
            end: 2,
            ram_end: 3,
        },
    ];
    for e in errors {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    assert_eq!(
        KernelError::ProtocolTooOld { version: 0x0204 }.to_string(),
        "Linux boot protocol 2.04 is too old; janus needs 2.06 or later (Linux 2.6.22+)"
    );
}

/// The RSDP address the machine hands the loaders lands in the field the format has for it:
/// `boot_params.acpi_rsdp_addr` from boot protocol 2.14 on, `hvm_start_info.rsdp_paddr`;
/// multiboot has none.
#[test]
fn kernels_learn_where_the_rsdp_is() {
    use super::bzimage::hdr;
    use images::{bzimage, multiboot_elf, pvh_elf, set};
    let rsdp = Some(0xf_0000);
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &bzimage(), None, "", rsdp).unwrap();
    assert_eq!(rd(&m, b.info_addr + 0x70, 8), 0xf_0000);
    let mut old = bzimage();
    set::<2>(&mut old, hdr::VERSION, 0x020d);
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &old, None, "", rsdp).unwrap();
    assert_eq!(
        rd(&m, b.info_addr + 0x70, 8),
        0,
        "no such field before 2.14"
    );
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &pvh_elf(true), None, "", rsdp).unwrap();
    assert_eq!(rd(&m, b.info_addr + 0x20, 8), 0xf_0000);
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &pvh_elf(true), None, "", None).unwrap();
    assert_eq!(rd(&m, b.info_addr + 0x20, 8), 0, "no tables, no RSDP");
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &multiboot_elf(), None, "", rsdp).unwrap();
    let low = bytes(&m, 0, 0x10_0000);
    assert!(
        !low.windows(8).any(|w| w == 0xf_0000u64.to_le_bytes()),
        "multiboot has no RSDP field"
    );
    assert_eq!(b.format, KernelFormat::Multiboot { elf: true });
}
