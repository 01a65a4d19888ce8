//! Link options for the janus binary.

fn main() {
    // Relative relocations packed as DT_RELR: the position-independent executable's 13,000
    // R_X86_64_RELATIVE entries (24 bytes each, 310 KiB the dynamic loader read at every
    // start) become a 3 KiB bitmap, and janus stays a PIE (address-space layout
    // randomisation). GNU ld 2.38 and later also record a GLIBC_ABI_DT_RELR version
    // dependency, so a loader older than glibc 2.36 refuses the binary by name instead of
    // misrelocating it; older linkers ignore the option with a warning.
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
