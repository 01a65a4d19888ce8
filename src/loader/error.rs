//! The one error type of the kernel loaders: one variant per way a kernel, initrd or command
//! line can be refused, each a single line a user can act on.

use janus_accel::MemoryError;

/// Why a kernel could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// The kernel file is empty.
    #[error("kernel image is empty")]
    Empty,
    /// No known format was recognised.
    #[error(
        "unknown kernel format: no Linux bzImage header (\"HdrS\" at 0x202), not an ELF, and no \
         multiboot header in the first 8 KiB"
    )]
    UnknownFormat,
    /// An ELF file that says neither how to enter it through PVH nor through multiboot.
    #[error(
        "ELF kernel has neither a Xen PVH entry note (Linux: CONFIG_PVH=y) nor a multiboot \
         header; boot a Linux kernel as a bzImage instead"
    )]
    NoElfEntry,
    /// The file ends before a structure it declares.
    #[error("{format} is truncated: {what} needs {need} bytes but the file has {have}")]
    Truncated {
        /// The format being parsed ("bzImage", "ELF", "multiboot kernel").
        format: &'static str,
        /// The structure that runs past the end.
        what: &'static str,
        /// Bytes the file must have.
        need: u64,
        /// Bytes the file has.
        have: u64,
    },
    /// A header field holds an impossible value.
    #[error("{format} is corrupt: {why}")]
    Corrupt {
        /// The format being parsed.
        format: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A well-formed kernel that asks for something janus does not provide.
    #[error("{format} is not supported: {why}")]
    Unsupported {
        /// The format being parsed.
        format: &'static str,
        /// What janus cannot do.
        why: &'static str,
    },
    /// A bzImage older than boot protocol 2.06.
    #[error(
        "Linux boot protocol {}.{:02} is too old; janus needs 2.06 or later (Linux 2.6.22+)",
        version >> 8,
        version & 0xff
    )]
    ProtocolTooOld {
        /// The kernel's protocol version, e.g. 0x0205.
        version: u16,
    },
    /// A zImage (its kernel loads below 1 MiB).
    #[error("zImage kernels (LOADED_HIGH clear) are not supported; use a bzImage")]
    ZImage,
    /// A kernel that must be loaded at an address janus cannot give it.
    #[error("kernel is not relocatable and cannot be loaded at its fixed address {addr:#x}: {why}")]
    NotRelocatable {
        /// The kernel's required load address.
        addr: u64,
        /// Why that address is unusable.
        why: &'static str,
    },
    /// The kernel does not fit in guest RAM.
    #[error(
        "the kernel takes RAM at {start:#x}-{end:#x} but RAM below 4 GiB ends at \
         {ram_end:#x}; it needs --mem {} or more",
        crate::layout::mem_to_fit(*.end)
    )]
    KernelTooLarge {
        /// First byte the kernel needs.
        start: u64,
        /// End (exclusive) of what the kernel needs.
        end: u64,
        /// End of RAM below 4 GiB.
        ram_end: u64,
    },
    /// A kernel segment in the MMIO window or above 4 GiB.
    #[error(
        "kernel segment at {start:#x}-{end:#x} is outside RAM below 4 GiB (which is \
         0-{ram_end:#x})"
    )]
    SegmentOutsideRam {
        /// Segment start.
        start: u64,
        /// Segment end (exclusive).
        end: u64,
        /// End of RAM below 4 GiB.
        ram_end: u64,
    },
    /// The initrd is an empty file.
    #[error("initrd is empty")]
    EmptyInitrd,
    /// The initrd does not fit where it may go.
    #[error(
        "initrd of {size} bytes does not fit in free RAM between {start:#x} and {limit:#x} \
         ({why}); raise --mem or use a smaller initrd"
    )]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// Lowest address it may use.
        start: u64,
        /// Address it must end below.
        limit: u64,
        /// Where the limit comes from.
        why: &'static str,
    },
    /// The command line is longer than the kernel (or janus) accepts.
    #[error("command line is {len} bytes but this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Command line length.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// The command line holds a NUL byte, which would cut it short.
    #[error("command line contains a NUL byte")]
    CmdlineNul,
    /// No room is left in RAM for the loader's own boot data.
    #[error("no free RAM below 4 GiB for the {what} ({size} bytes); raise --mem")]
    NoRoom {
        /// What was being placed.
        what: &'static str,
        /// Its size.
        size: u64,
    },
    /// Writing guest memory failed (a bug: every range is checked first).
    #[error("cannot write the kernel into guest memory: {0}")]
    Memory(#[from] MemoryError),
}
