//! The Debian kernels that tests/linux/fetch-assets.sh downloads, when they are there: the
//! bzImage must load through the 64-bit entry and the vmlinux through PVH (or be refused with
//! the "no PVH note" error if the kernel was built without CONFIG_PVH). Skipped otherwise:
//! unit tests never need the network.

use super::*;

fn asset(name: &str) -> Option<Vec<u8>> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/linux/assets")
        .join(name);
    std::fs::read(p).ok()
}

#[test]
fn debian_kernels_load_when_fetched() {
    let (Some(vmlinuz), Some(vmlinux)) = (asset("vmlinuz"), asset("vmlinux")) else {
        eprintln!("skipped: run tests/linux/fetch-assets.sh to fetch the Debian kernel");
        return;
    };
    let initrd = asset("initramfs.cpio.gz");
    let (m, l) = guest(512);
    let b = load_kernel(&m, &l, &vmlinuz, initrd.as_deref(), "console=ttyS0", None).unwrap();
    eprintln!("vmlinuz: {b}");
    assert!(
        matches!(b.format, KernelFormat::BzImage { entry64: true, .. }),
        "{b}"
    );

    let (m, l) = guest(512);
    match load_kernel(&m, &l, &vmlinux, initrd.as_deref(), "console=ttyS0", None) {
        Ok(b) => {
            eprintln!("vmlinux: {b}");
            assert_eq!(b.format, KernelFormat::Pvh { elf64: true });
        }
        Err(e) => {
            eprintln!("vmlinux: {e}");
            assert_eq!(e, KernelError::NoElfEntry);
        }
    }
}
