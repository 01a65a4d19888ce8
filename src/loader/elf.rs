//! A minimal ELF reader for kernels: the file header, the program headers and the notes, with
//! every offset and size checked against the file so that no input can make it panic.

use super::KernelError;
use super::bytes::{slice, u16_at, u32_at, u64_at};

const FORMAT: &str = "ELF";
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
/// Xen's note carrying the 32-bit physical PVH entry point.
pub(crate) const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Whether `b` starts with the ELF magic.
pub(crate) fn is_elf(b: &[u8]) -> bool {
    b.starts_with(b"\x7fELF")
}

/// One program header, widened to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProgramHeader {
    pub(crate) typ: u32,
    pub(crate) offset: u64,
    pub(crate) vaddr: u64,
    pub(crate) paddr: u64,
    pub(crate) filesz: u64,
    pub(crate) memsz: u64,
    pub(crate) align: u64,
}

/// A parsed ELF file: its class, entry and program headers (the bytes stay borrowed).
#[derive(Debug)]
pub(crate) struct Elf<'a> {
    pub(crate) file: &'a [u8],
    pub(crate) elf64: bool,
    pub(crate) entry: u64,
    pub(crate) phdrs: Vec<ProgramHeader>,
}

fn truncated(what: &'static str, need: u64, have: usize) -> KernelError {
    KernelError::Truncated {
        format: FORMAT,
        what,
        need,
        have: have as u64,
    }
}

fn corrupt(why: &'static str) -> KernelError {
    KernelError::Corrupt {
        format: FORMAT,
        why,
    }
}

fn unsupported(why: &'static str) -> KernelError {
    KernelError::Unsupported {
        format: FORMAT,
        why,
    }
}

impl<'a> Elf<'a> {
    /// Parses the file header and the program headers of a little-endian x86 executable.
    pub(crate) fn parse(file: &'a [u8]) -> Result<Self, KernelError> {
        let len = file.len();
        if len < 0x34 {
            return Err(truncated("the ELF header", 0x34, len));
        }
        let elf64 = match file[4] {
            1 => false,
            2 => true,
            _ => return Err(corrupt("EI_CLASS is neither ELF32 nor ELF64")),
        };
        if file[5] != 1 {
            return Err(unsupported("big-endian or unknown data encoding"));
        }
        let ehsize = if elf64 { 0x40 } else { 0x34 };
        if len < ehsize {
            return Err(truncated("the ELF64 header", ehsize as u64, len));
        }
        let field = |o32: usize, o64: usize| -> u64 {
            // In bounds: both offsets are inside the header checked above.
            if elf64 {
                u64_at(file, o64).unwrap_or(0)
            } else {
                u64::from(u32_at(file, o32).unwrap_or(0))
            }
        };
        let half =
            |o32: usize, o64: usize| u16_at(file, if elf64 { o64 } else { o32 }).unwrap_or(0);
        if half(0x10, 0x10) != ET_EXEC {
            return Err(unsupported("not an executable (e_type is not ET_EXEC)"));
        }
        if !matches!(half(0x12, 0x12), EM_386 | EM_X86_64) {
            return Err(unsupported("not an x86 executable (e_machine)"));
        }
        let entry = field(0x18, 0x18);
        let phoff = field(0x1c, 0x20);
        let phentsize = half(0x2a, 0x36);
        let phnum = half(0x2c, 0x38);
        let min_entsize = if elf64 { 56 } else { 32 };
        if phnum == 0xffff {
            return Err(unsupported("more than 65534 program headers (PN_XNUM)"));
        }
        if phnum > 0 && phentsize < min_entsize {
            return Err(corrupt("e_phentsize is smaller than a program header"));
        }
        let table_len = u64::from(phnum) * u64::from(phentsize);
        let table = slice(file, phoff, table_len).ok_or_else(|| {
            truncated(
                "the program header table",
                phoff.saturating_add(table_len),
                len,
            )
        })?;
        let phdrs = table
            .chunks_exact(usize::from(phentsize.max(1)))
            .take(usize::from(phnum))
            .map(|ph| Self::program_header(ph, elf64))
            .collect();
        Ok(Elf {
            file,
            elf64,
            entry,
            phdrs,
        })
    }

    fn program_header(ph: &[u8], elf64: bool) -> ProgramHeader {
        // `ph` is at least 32 (ELF32) or 56 (ELF64) bytes long, as checked in `parse`.
        let w32 = |o| u64::from(u32_at(ph, o).unwrap_or(0));
        let w64 = |o| u64_at(ph, o).unwrap_or(0);
        if elf64 {
            ProgramHeader {
                typ: w32(0) as u32,
                offset: w64(8),
                vaddr: w64(16),
                paddr: w64(24),
                filesz: w64(32),
                memsz: w64(40),
                align: w64(48),
            }
        } else {
            ProgramHeader {
                typ: w32(0) as u32,
                offset: w32(4),
                vaddr: w32(8),
                paddr: w32(12),
                filesz: w32(16),
                memsz: w32(20),
                align: w32(28),
            }
        }
    }

    /// The loadable segments that occupy memory, each with its file bytes, checked for sizes
    /// that run past the file or wrap around.
    pub(crate) fn load_segments(&self) -> Result<Vec<(ProgramHeader, &'a [u8])>, KernelError> {
        let mut out = Vec::new();
        for ph in self
            .phdrs
            .iter()
            .filter(|p| p.typ == PT_LOAD && p.memsz > 0)
        {
            if ph.filesz > ph.memsz {
                return Err(corrupt("a PT_LOAD segment has p_filesz > p_memsz"));
            }
            if ph.paddr.checked_add(ph.memsz).is_none() {
                return Err(corrupt("a PT_LOAD segment wraps around the address space"));
            }
            let data = slice(self.file, ph.offset, ph.filesz).ok_or_else(|| {
                truncated(
                    "a PT_LOAD segment",
                    ph.offset.saturating_add(ph.filesz),
                    self.file.len(),
                )
            })?;
            out.push((*ph, data));
        }
        if out.is_empty() {
            return Err(corrupt("no PT_LOAD segment"));
        }
        Ok(out)
    }

    /// The physical PVH entry point from the `Xen` note of type 18, if there is one.
    pub(crate) fn pvh_entry(&self) -> Result<Option<u64>, KernelError> {
        for ph in self.phdrs.iter().filter(|p| p.typ == PT_NOTE) {
            let notes = slice(self.file, ph.offset, ph.filesz).ok_or_else(|| {
                truncated(
                    "a PT_NOTE segment",
                    ph.offset.saturating_add(ph.filesz),
                    self.file.len(),
                )
            })?;
            let align = if ph.align == 8 { 8 } else { 4 };
            for note in Notes::new(notes, align) {
                let (name, typ, desc) = note?;
                if name == b"Xen" && typ == XEN_ELFNOTE_PHYS32_ENTRY {
                    let entry = match desc.len() {
                        4 => u64::from(u32_at(desc, 0).unwrap_or(0)),
                        8 => u64_at(desc, 0).unwrap_or(0),
                        _ => return Err(corrupt("the PVH entry note is neither 4 nor 8 bytes")),
                    };
                    if entry >= 1 << 32 {
                        return Err(corrupt("the PVH entry point is above 4 GiB"));
                    }
                    return Ok(Some(entry));
                }
            }
        }
        Ok(None)
    }
}

/// Iterates over the notes of a note segment: (name without its NUL, type, descriptor).
struct Notes<'a> {
    data: &'a [u8],
    pos: usize,
    align: usize,
    failed: bool,
}

impl<'a> Notes<'a> {
    fn new(data: &'a [u8], align: usize) -> Self {
        Notes {
            data,
            pos: 0,
            align,
            failed: false,
        }
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<(&'a [u8], u32, &'a [u8]), KernelError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed
            || self
                .pos
                .checked_add(12)
                .is_none_or(|end| end > self.data.len())
        {
            return None;
        }
        let d = self.data;
        let p = self.pos;
        let (namesz, descsz, typ) = (u32_at(d, p)?, u32_at(d, p + 4)?, u32_at(d, p + 8)?);
        let pad = |n: u32| (u64::from(n) + self.align as u64 - 1) & !(self.align as u64 - 1);
        let name_at = p as u64 + 12;
        let desc_at = name_at + pad(namesz);
        let next = desc_at + pad(descsz);
        let (Some(name), Some(desc)) = (
            slice(d, name_at, u64::from(namesz)),
            slice(d, desc_at, u64::from(descsz)),
        ) else {
            self.failed = true;
            return Some(Err(corrupt("an ELF note runs past the end of its segment")));
        };
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        self.pos = usize::try_from(next).unwrap_or(usize::MAX);
        Some(Ok((name, typ, desc)))
    }
}
