//! Recognising files that are not flat images: given as IMAGE, a bzImage, a vmlinux, an ELF
//! program, a CD or a disk image would run as garbage real-mode code, so the command line
//! refuses them with a sentence saying what the file is and what janus takes instead.

/// What `image` recognisably is, and what to do instead, when it is not a flat image.
pub fn foreign_image(image: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| image.get(off..off + magic.len()) == Some(magic);
    if at(0x202, b"HdrS") {
        return Some("a Linux bzImage: boot it with --kernel FILE (and --initrd, --append)");
    }
    if at(0, b"\x7fELF") {
        let e_type = image.get(16..18).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if image.windows(6).any(|w| w == b"Linux\0") && e_type == Some(2) {
            return Some("a Linux vmlinux (ELF): boot it with --kernel FILE");
        }
        return Some(if e_type == Some(2) {
            "an ELF executable: a kernel (a vmlinux with a PVH note, a multiboot ELF) boots with \
             --kernel FILE, and IMAGE is a flat binary entered at 0x7c00"
        } else {
            "an ELF program or library, not a machine image: IMAGE is a flat binary entered at \
             0x7c00 (a kernel boots with --kernel FILE)"
        });
    }
    if at(0x8001, b"CD001") {
        return Some(
            "an ISO 9660 CD image: boot it with --cdrom FILE (SeaBIOS boots El Torito CDs), \
             or the kernel on it with --kernel FILE (and --initrd)",
        );
    }
    if at(512, b"EFI PART") {
        return Some(
            "a GPT disk image: janus has no UEFI firmware to boot it; boot the kernel in it \
             with --kernel FILE (and --initrd)",
        );
    }
    // A boot sector is a fine IMAGE; a whole disk (past 1 MiB, with partitions) is not.
    let partitioned = (0..4).any(|i| {
        let e = 446 + 16 * i;
        image.get(e + 4).is_some_and(|&t| t != 0)
            && image.get(e + 8..e + 12).is_some_and(|l| l != [0; 4])
    });
    if image.len() > 1 << 20 && at(510, &[0x55, 0xaa]) && partitioned {
        return Some(
            "an MBR disk image: boot it with --drive file=FILE,if=ide (SeaBIOS boots it), or \
             the kernel in it with --kernel FILE (and --initrd)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(len: usize, at: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[at..at + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn recognises_what_is_not_a_flat_image() {
        let says = |img: &[u8], what: &str| {
            let s = foreign_image(img).unwrap_or_else(|| panic!("{what} not recognised"));
            assert!(s.contains(what), "{s}");
        };
        says(
            &with(0x400, 0x202, b"HdrS"),
            "bzImage: boot it with --kernel",
        );
        let mut vmlinux = with(0x100, 0, b"\x7fELF");
        vmlinux[16] = 2;
        vmlinux[0x80..0x86].copy_from_slice(b"Linux\0");
        says(&vmlinux, "vmlinux (ELF): boot it with --kernel");
        vmlinux[0x80] = b'X';
        says(&vmlinux, "an ELF executable");
        vmlinux[16] = 3;
        says(&vmlinux, "an ELF program or library");
        says(&with(0x9000, 0x8001, b"CD001"), "ISO 9660");
        says(&with(0x800, 512, b"EFI PART"), "GPT disk image");
        let mut mbr = with(2 << 20, 510, &[0x55, 0xaa]);
        mbr[446 + 4] = 0x83;
        mbr[446 + 8] = 0x08;
        says(&mbr, "MBR disk image");
    }

    #[test]
    fn boot_sectors_and_test_roms_are_flat_images() {
        let mut sector = with(512, 510, &[0x55, 0xaa]);
        sector[446 + 4] = 0x83;
        sector[446 + 8] = 0x08;
        assert_eq!(foreign_image(&sector), None);
        assert_eq!(foreign_image(&[0xf4]), None);
        let demo = include_bytes!("../../test-roms/demo.bin");
        assert_eq!(foreign_image(demo), None);
    }
}
