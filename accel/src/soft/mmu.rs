//! The soft MMU: segmentation checks, page-table walks (32-bit with PSE, PAE, 4-level) with A/D
//! bits and #PF error codes, a direct-mapped soft TLB per access kind holding host pointers for
//! RAM pages, and the physical access path that sends everything outside RAM to MMIO.

use crate::exit::ExitReasonKind;
use crate::state::bits;

use super::cpu::{Ctx, Fault, R, gp, seg, ss_fault, vec};

/// TLB entries per access kind.
const TLB_SIZE: usize = 512;
const PAGE_MASK: u64 = !0xfff;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Address bits of paging-structure entries at and above MAXPHYADDR (as CPUID 0x80000008
/// reports it, the host's): reserved, a #PF with the RSVD bit when set in a present entry.
fn reserved_high() -> u64 {
    static MASK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        let bits = (std::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff).clamp(36, 52);
        ADDR_MASK & !((1u64 << bits) - 1)
    })
}

/// The kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acc {
    /// Data read.
    R = 0,
    /// Data write.
    W = 1,
    /// Instruction fetch.
    X = 2,
}

/// One TLB entry: a linear page mapped to a physical page, with the host address of the page
/// when it is plain RAM (0 when accesses must take the slow path: MMIO, ROM writes, code pages).
#[derive(Clone, Copy, Debug, Default)]
pub struct TlbEntry {
    /// Linear page | 1 (valid) | user << 1.
    pub tag: u64,
    /// Host address of the page, or 0.
    pub host: usize,
    /// Physical page address.
    pub phys: u64,
    /// A global page (survives CR3 writes).
    pub global: bool,
}

/// The soft TLB: one direct-mapped array per access kind.
#[derive(Debug)]
pub struct Tlb {
    e: Vec<TlbEntry>,
    /// Bumped on every flush, so that caches keyed by linear address know to revalidate.
    pub epoch: u64,
    /// Bumped on the flushes that may drop global entries (all but a CR3 write's): between
    /// two of these, a cache keyed by linear address may keep what it holds for global pages.
    pub global_epoch: u64,
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

impl Tlb {
    /// An empty TLB.
    pub fn new() -> Self {
        Tlb {
            e: vec![TlbEntry::default(); 3 * TLB_SIZE],
            epoch: 0,
            global_epoch: 0,
        }
    }

    /// Drops every entry (or every non-global one).
    pub fn flush(&mut self, keep_global: bool) {
        self.epoch += 1;
        if !keep_global {
            self.global_epoch += 1;
        }
        for e in &mut self.e {
            if !(keep_global && e.global) {
                e.tag = 0;
            }
        }
    }

    /// Drops the entries of one linear page (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        self.epoch += 1;
        self.global_epoch += 1;
        let i = ((lin >> 12) as usize) & (TLB_SIZE - 1);
        for k in 0..3 {
            let e = &mut self.e[k * TLB_SIZE + i];
            if e.tag & PAGE_MASK == lin & PAGE_MASK {
                e.tag = 0;
            }
        }
    }

    /// The entry for `lin` if the TLB holds one, with no page walk (and none of its side
    /// effects: accessed bits, CR2).
    pub fn peek(&self, lin: u64, acc: Acc, user: bool) -> Option<TlbEntry> {
        let e = self.e[Self::slot(acc, lin)];
        (e.tag == tag(lin, user)).then_some(e)
    }

    /// Sends future writes to a physical page through the slow path (it now holds code).
    pub fn protect_phys(&mut self, phys_page: u64) {
        for e in &mut self.e[TLB_SIZE..2 * TLB_SIZE] {
            if e.phys == phys_page {
                e.host = 0;
            }
        }
    }

    #[inline]
    fn slot(acc: Acc, lin: u64) -> usize {
        acc as usize * TLB_SIZE + (((lin >> 12) as usize) & (TLB_SIZE - 1))
    }
}

#[inline]
fn tag(lin: u64, user: bool) -> u64 {
    (lin & PAGE_MASK) | 1 | (u64::from(user) << 1)
}

/// Reads `sz` bytes from a host address.
#[inline]
fn host_read(p: usize, sz: u8) -> u64 {
    let p = p as *const u8;
    match sz {
        1 => {
            // SAFETY: `p` comes from `GuestMemory::host_ptr` for a whole page that the core's
            // `GuestMemory` clone keeps mapped, and the access stays inside that page;
            // unaligned reads are used because guest addresses have any alignment.
            u64::from(unsafe { p.read() })
        }
        // SAFETY: as above.
        2 => u64::from(unsafe { p.cast::<u16>().read_unaligned() }),
        // SAFETY: as above.
        4 => u64::from(unsafe { p.cast::<u32>().read_unaligned() }),
        // SAFETY: as above.
        _ => unsafe { p.cast::<u64>().read_unaligned() },
    }
}

/// Writes `sz` bytes to a host address.
#[inline]
fn host_write(p: usize, sz: u8, v: u64) {
    let p = p as *mut u8;
    match sz {
        1 => {
            // SAFETY: as in `host_read`; the TLB only stores a host address for writes when the
            // page is writable RAM.
            unsafe { p.write(v as u8) }
        }
        // SAFETY: as above.
        2 => unsafe { p.cast::<u16>().write_unaligned(v as u16) },
        // SAFETY: as above.
        4 => unsafe { p.cast::<u32>().write_unaligned(v as u32) },
        // SAFETY: as above.
        _ => unsafe { p.cast::<u64>().write_unaligned(v) },
    }
}

/// Fills `count` elements of `sz` bytes at host address `p` with the low `sz` bytes of `v`
/// (REP STOS on RAM).
pub fn host_fill(p: usize, count: usize, sz: u8, v: u64) {
    let p = p as *mut u8;
    let sz = usize::from(sz);
    if sz == 1 {
        // SAFETY: `p` is the host address of a RAM page taken from a write TLB entry (writable
        // RAM, not holding translated code); the caller keeps `count` bytes inside that page,
        // and the core's `GuestMemory` clone keeps it mapped.
        unsafe { p.write_bytes(v as u8, count) };
        return;
    }
    let b = v.to_le_bytes();
    for k in 0..count {
        let at = p.wrapping_add(k * sz);
        // SAFETY: as above: `count * sz` bytes from `p` lie in one RAM page, so `at..at + sz`
        // does too.
        unsafe { at.copy_from_nonoverlapping(b.as_ptr(), sz) };
    }
}

/// An atomic read-modify-write of the naturally aligned `sz`-byte value at host address `p`:
/// `f` maps the old value to the new one (None: leave it), retried with compare-and-swap until
/// no other thread wrote in between. Returns the old value.
pub fn host_cas(p: usize, sz: u8, f: &mut dyn FnMut(u64) -> Option<u64>) -> u64 {
    use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering::SeqCst};
    assert!(p % usize::from(sz) == 0, "host_cas needs natural alignment");
    macro_rules! cas {
        ($a:ty, $t:ty) => {{
            // SAFETY: `p` is the host address of RAM inside one page (a write TLB entry's page
            // plus an offset the caller keeps within it), naturally aligned (asserted above),
            // and kept mapped by the core's `GuestMemory` clone for the whole call. Other vCPU
            // threads access guest RAM only through raw pointers or these atomics.
            let a = unsafe { <$a>::from_ptr(p as *mut $t) };
            let mut old = a.load(SeqCst);
            loop {
                let Some(new) = f(u64::from(old)) else {
                    return u64::from(old);
                };
                match a.compare_exchange_weak(old, new as $t, SeqCst, SeqCst) {
                    Ok(_) => return u64::from(old),
                    Err(cur) => old = cur,
                }
            }
        }};
    }
    match sz {
        1 => cas!(AtomicU8, u8),
        2 => cas!(AtomicU16, u16),
        4 => cas!(AtomicU32, u32),
        _ => cas!(AtomicU64, u64),
    }
}

/// Copies `len` bytes between host addresses of guest RAM that do not overlap (REP MOVS on
/// RAM).
pub fn host_copy(dst: usize, src: usize, len: usize) {
    debug_assert!(dst + len <= src || src + len <= dst);
    // SAFETY: both ranges come from TLB entries of RAM pages (the destination writable and free
    // of translated code), each stays inside its page, the caller checked they do not overlap,
    // and the core's `GuestMemory` clone keeps both mapped.
    unsafe { (dst as *mut u8).copy_from_nonoverlapping(src as *const u8, len) };
}

impl Ctx<'_> {
    /// Reads physical memory (RAM, ROM or MMIO).
    pub fn phys_read(&mut self, pa: u64, sz: u8) -> u64 {
        if let Some(p) = self.c.mem.host_ptr(pa, usize::from(sz), false) {
            return host_read(p as usize, sz);
        }
        let mut b = [0u8; 8];
        self.io
            .mmio_read(self.c.index, pa, &mut b[..usize::from(sz)]);
        self.c.counters.bump(ExitReasonKind::MmioRead);
        u64::from_le_bytes(b)
    }

    /// `sz` bytes at `pa` were (or are about to be) written: translated code there is dropped
    /// and the running block ends after this instruction.
    pub fn code_written(&mut self, pa: u64, sz: u8) {
        self.bytes_written(pa, u64::from(sz));
    }

    /// `len` bytes at `pa`, inside one page, were (or are about to be) written: this vCPU's
    /// blocks whose code they overlap are dropped and the running block ends after this
    /// instruction; other vCPUs
    /// that translated code from the page are told (`xmc`).
    fn bytes_written(&mut self, pa: u64, len: u64) {
        if self.c.cache.invalidate_range(pa, len) {
            self.c.smc = true;
        }
        if let Some((x, i)) = &self.c.cache.xmc {
            x.written(*i, pa, len);
        }
    }

    /// The host address of `sz` bytes of writable RAM at `pa`, if that is what is there.
    pub fn ram_ptr(&self, pa: u64, sz: u8) -> Option<usize> {
        self.c
            .mem
            .host_ptr(pa, usize::from(sz), true)
            .map(|p| p as usize)
    }

    /// Writes physical memory, invalidating translated code it overwrites.
    pub fn phys_write(&mut self, pa: u64, sz: u8, v: u64) {
        self.code_written(pa, sz);
        if let Some(p) = self.c.mem.host_ptr(pa, usize::from(sz), true) {
            host_write(p as usize, sz, v);
            return;
        }
        let b = v.to_le_bytes();
        self.io.mmio_write(self.c.index, pa, &b[..usize::from(sz)]);
        self.c.counters.bump(ExitReasonKind::MmioWrite);
    }

    fn pt_read(&mut self, pa: u64, sz: u8) -> u64 {
        self.c.mem.read_le(pa, usize::from(sz)).unwrap_or(0)
    }

    fn pt_write(&mut self, pa: u64, sz: u8, v: u64) {
        let _ = self.c.mem.write_le(pa, usize::from(sz), v);
    }

    /// Translates a linear address through the TLB, walking the page tables on a miss.
    #[inline]
    pub fn translate(&mut self, lin: u64, acc: Acc, user: bool) -> R<TlbEntry> {
        let i = Tlb::slot(acc, lin);
        let e = self.c.tlb.e[i];
        if e.tag == tag(lin, user) {
            return Ok(e);
        }
        self.fill(lin, acc, user)
    }

    #[cold]
    fn fill(&mut self, lin: u64, acc: Acc, user: bool) -> R<TlbEntry> {
        self.c.tlb_misses += 1;
        let (phys, global, cacheable) = self.walk(lin, acc, user)?;
        let phys = phys & PAGE_MASK;
        let writable = acc == Acc::W;
        let host = match self.c.mem.host_ptr(phys, 4096, writable) {
            Some(p) if !(writable && self.c.cache.page_has_code(phys)) => p as usize,
            _ => 0,
        };
        let e = TlbEntry {
            tag: tag(lin, user),
            host,
            phys,
            global,
        };
        if cacheable {
            self.c.tlb.e[Tlb::slot(acc, lin)] = e;
        }
        Ok(e)
    }

    fn page_fault(&mut self, lin: u64, acc: Acc, user: bool, present: bool, rsvd: bool) -> Fault {
        let mut code = u32::from(present);
        if acc == Acc::W {
            code |= 2;
        }
        if user {
            code |= 4;
        }
        if rsvd {
            code |= 8;
        }
        if acc == Acc::X
            && (self.c.s.efer & bits::EFER_NXE != 0 || self.c.s.cr4 & bits::CR4_SMEP != 0)
        {
            code |= 16;
        }
        self.c.s.cr2 = lin;
        Fault::Exc {
            vector: vec::PF,
            code: Some(code),
        }
    }

    /// Walks the page tables for `lin`: the physical address, whether the page is global and
    /// whether the TLB may keep the translation (not a supervisor access to a user page under
    /// SMAP, whose outcome depends on EFLAGS.AC).
    pub fn walk(&mut self, lin: u64, acc: Acc, user: bool) -> R<(u64, bool, bool)> {
        let s = &self.c.s;
        if s.cr0 & bits::CR0_PG == 0 {
            return Ok((lin & 0xffff_ffff, false, true));
        }
        let wp = s.cr0 & bits::CR0_WP != 0;
        let nxe = s.efer & bits::EFER_NXE != 0;
        let pge = s.cr4 & bits::CR4_PGE != 0;
        let cr3 = s.cr3;
        // (entry address, entry) of each level, for A/D updates.
        let mut path: [(u64, u64, u8); 5] = [(0, 0, 0); 5];
        let mut n = 0;
        let mut allow_w = true;
        let mut allow_u = true;
        let mut nx = false;
        let (phys, last);
        if s.efer & bits::EFER_LMA != 0 || s.cr4 & bits::CR4_PAE != 0 {
            let long = s.efer & bits::EFER_LMA != 0;
            let (mut table, mut level) = if long {
                let levels = if s.cr4 & bits::CR4_LA57 != 0 { 5 } else { 4 };
                (cr3 & ADDR_MASK, levels)
            } else {
                // PAE: the PDPTE, which has no R/W, U/S or NX bits.
                let a = (cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
                let e = self.pt_read(a, 8);
                if e & 1 == 0 {
                    return Err(self.page_fault(lin, acc, user, false, false));
                }
                (e & ADDR_MASK, 2u32)
            };
            loop {
                let shift = 12 + 9 * (level - 1);
                let a = table + ((lin >> shift) & 0x1ff) * 8;
                let e = self.pt_read(a, 8);
                if e & 1 == 0 {
                    return Err(self.page_fault(lin, acc, user, false, false));
                }
                let ps = e & 0x80 != 0;
                // PS is reserved in a PML4E and a PML5E; a PS=1 PDE or PDPTE maps a 2 MiB or
                // 1 GiB page whose address bits below the page size (all but bit 12, PAT) are
                // reserved.
                let large_rsvd = match level {
                    2 | 3 if ps => ((1u64 << shift) - 1) & !0x1fff,
                    4 | 5 if ps => 0x80,
                    _ => 0,
                };
                if (e >> 63 != 0 && !nxe) || e & (reserved_high() | large_rsvd) != 0 {
                    return Err(self.page_fault(lin, acc, user, true, true));
                }
                allow_w &= e & 2 != 0;
                allow_u &= e & 4 != 0;
                nx |= e >> 63 != 0;
                path[n] = (a, e, 8);
                n += 1;
                let leaf = level == 1 || (e & 0x80 != 0 && level <= 3);
                if leaf {
                    let off_mask = (1u64 << shift) - 1;
                    phys = (e & ADDR_MASK & !off_mask) | (lin & off_mask);
                    last = e;
                    break;
                }
                table = e & ADDR_MASK;
                level -= 1;
            }
        } else {
            let a = (cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4;
            let e = self.pt_read(a, 4);
            if e & 1 == 0 {
                return Err(self.page_fault(lin, acc, user, false, false));
            }
            allow_w &= e & 2 != 0;
            allow_u &= e & 4 != 0;
            path[n] = (a, e, 4);
            n += 1;
            if e & 0x80 != 0 && self.c.s.cr4 & bits::CR4_PSE != 0 {
                // A 4 MiB page: bit 21 and the PSE-36 address bits 20:13 at and above
                // MAXPHYADDR are reserved.
                if e & (1 << 21 | (reserved_high() >> 19) & 0x1f_e000) != 0 {
                    return Err(self.page_fault(lin, acc, user, true, true));
                }
                let hi = ((e >> 13) & 0xff) << 32;
                phys = (e & 0xffc0_0000) | hi | (lin & 0x3f_ffff);
                last = e;
            } else {
                let a = (e & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
                let e = self.pt_read(a, 4);
                if e & 1 == 0 {
                    return Err(self.page_fault(lin, acc, user, false, false));
                }
                allow_w &= e & 2 != 0;
                allow_u &= e & 4 != 0;
                path[n] = (a, e, 4);
                n += 1;
                phys = (e & 0xffff_f000) | (lin & 0xfff);
                last = e;
            }
        }
        let cr4 = self.c.s.cr4;
        let smap = cr4 & bits::CR4_SMAP != 0 && !user && allow_u && acc != Acc::X;
        let denied = (user && !allow_u)
            || (acc == Acc::W && !allow_w && (user || wp))
            || (acc == Acc::X && nx && nxe)
            // SMEP: no supervisor fetch from a user page.
            || (acc == Acc::X && !user && allow_u && cr4 & bits::CR4_SMEP != 0)
            // SMAP: implicit supervisor accesses always, explicit ones unless EFLAGS.AC.
            || (smap && (self.c.implicit || self.c.s.rflags & crate::state::rflags::AC == 0));
        if denied {
            return Err(self.page_fault(lin, acc, user, true, false));
        }
        // Protection keys: data accesses to user pages in 4-level paging (bits 62:59 of the
        // leaf entry select two PKRU bits, access-disable and write-disable).
        if allow_u
            && acc != Acc::X
            && cr4 & bits::CR4_PKE != 0
            && self.c.s.efer & bits::EFER_LMA != 0
        {
            let pkru = self.c.s.pkru >> (2 * ((last >> 59) & 0xf));
            if pkru & 1 != 0 || (acc == Acc::W && pkru & 2 != 0 && (user || wp)) {
                let f = self.page_fault(lin, acc, user, true, false);
                return Err(match f {
                    Fault::Exc { vector, code } => Fault::Exc {
                        vector,
                        code: code.map(|c| c | 0x20),
                    },
                    f => f,
                });
            }
        }
        for (i, &(a, e, sz)) in path[..n].iter().enumerate() {
            let mut ne = e | 0x20;
            if i == n - 1 && acc == Acc::W {
                ne |= 0x40;
            }
            if ne != e {
                self.pt_write(a, sz, ne);
            }
        }
        Ok((phys, pge && last & 0x100 != 0, !smap))
    }

    /// Records the data breakpoints an access hits (out of line: the inlined access paths
    /// only test whether DR7 enables any).
    #[cold]
    #[inline(never)]
    fn note_data(&mut self, lin: u64, sz: u8, write: bool) {
        self.c.dbg_hits |= super::debug::data_hits(&self.c.s, lin, sz, write);
    }

    /// Reads `sz` bytes at a linear address.
    #[inline]
    pub fn read_lin(&mut self, lin: u64, sz: u8, acc: Acc, user: bool) -> R<u64> {
        if super::debug::armed(&self.c.s) && acc != Acc::X {
            self.note_data(lin, sz, false);
        }
        if (lin & 0xfff) + u64::from(sz) <= 0x1000 {
            let e = self.translate(lin, acc, user)?;
            if e.host != 0 {
                return Ok(host_read(e.host + (lin & 0xfff) as usize, sz));
            }
            return Ok(self.phys_read(e.phys | (lin & 0xfff), sz));
        }
        self.read_split(lin, sz, acc, user)
    }

    /// An access that crosses a page boundary: both pages are translated first (so a fault
    /// on either leaves memory untouched), then it is split at the boundary into two accesses,
    /// as KVM does, so a device sees the same accesses on every backend.
    #[cold]
    fn read_split(&mut self, lin: u64, sz: u8, acc: Acc, user: bool) -> R<u64> {
        let (pa1, pa2, n1) = self.split(lin, sz, acc, user)?;
        let mut b = [0u8; 8];
        self.phys_read_bytes(pa1, &mut b[..n1]);
        self.phys_read_bytes(pa2, &mut b[n1..usize::from(sz)]);
        Ok(u64::from_le_bytes(b))
    }

    /// The physical addresses of both parts of a page-crossing access and the length of the
    /// first.
    fn split(&mut self, lin: u64, sz: u8, acc: Acc, user: bool) -> R<(u64, u64, usize)> {
        let wrap = self.lin_mask();
        let second = (lin & PAGE_MASK).wrapping_add(0x1000) & wrap;
        let e1 = self.translate(lin, acc, user)?;
        let e2 = self.translate(second, acc, user)?;
        let n1 = (0x1000 - (lin & 0xfff)) as usize;
        debug_assert!(n1 < usize::from(sz));
        Ok((e1.phys | (lin & 0xfff), e2.phys, n1))
    }

    /// Reads physical bytes that lie in one page (RAM, ROM or one MMIO access).
    fn phys_read_bytes(&mut self, pa: u64, out: &mut [u8]) {
        if self.c.mem.read(pa, out).is_ok() {
            return;
        }
        self.io.mmio_read(self.c.index, pa, out);
        self.c.counters.bump(ExitReasonKind::MmioRead);
    }

    /// Writes physical bytes that lie in one page, invalidating translated code they overwrite.
    fn phys_write_bytes(&mut self, pa: u64, data: &[u8]) {
        self.bytes_written(pa, data.len() as u64);
        if self.c.mem.write(pa, data).is_ok() {
            return;
        }
        self.io.mmio_write(self.c.index, pa, data);
        self.c.counters.bump(ExitReasonKind::MmioWrite);
    }

    /// Writes `sz` bytes at a linear address.
    #[inline]
    pub fn write_lin(&mut self, lin: u64, sz: u8, v: u64, user: bool) -> R<()> {
        if super::debug::armed(&self.c.s) {
            self.note_data(lin, sz, true);
        }
        if (lin & 0xfff) + u64::from(sz) <= 0x1000 {
            let e = self.translate(lin, Acc::W, user)?;
            if e.host != 0 {
                host_write(e.host + (lin & 0xfff) as usize, sz, v);
                return Ok(());
            }
            self.phys_write(e.phys | (lin & 0xfff), sz, v);
            return Ok(());
        }
        self.write_split(lin, sz, v, user)
    }

    #[cold]
    fn write_split(&mut self, lin: u64, sz: u8, v: u64, user: bool) -> R<()> {
        let (pa1, pa2, n1) = self.split(lin, sz, Acc::W, user)?;
        let b = v.to_le_bytes();
        self.phys_write_bytes(pa1, &b[..n1]);
        self.phys_write_bytes(pa2, &b[n1..usize::from(sz)]);
        Ok(())
    }

    /// Checks a write is possible (both pages of a split access) without writing.
    pub fn probe_write(&mut self, lin: u64, sz: u8, user: bool) -> R<()> {
        self.translate(lin, Acc::W, user)?;
        let end = lin.wrapping_add(u64::from(sz) - 1) & self.lin_mask();
        if end & PAGE_MASK != lin & PAGE_MASK {
            self.translate(end, Acc::W, user)?;
        }
        Ok(())
    }

    /// Mask of linear addresses: 64 bits in long mode, 32 otherwise.
    #[inline]
    pub fn lin_mask(&self) -> u64 {
        if self.c.s.efer & bits::EFER_LMA != 0 {
            u64::MAX
        } else {
            0xffff_ffff
        }
    }

    /// Applies segment `sg` to offset `off` for an access of `sz` bytes: the linear address,
    /// or #GP/#SS(0) on a limit, type or canonical violation.
    #[inline]
    pub fn seg_addr(&self, sg: u8, off: u64, sz: u8, write: bool) -> R<u64> {
        let c = &*self.c;
        if c.long64() {
            let lin = match sg {
                seg::FS => c.s.fs.base.wrapping_add(off),
                seg::GS => c.s.gs.base.wrapping_add(off),
                _ => off,
            };
            let end = lin.wrapping_add(u64::from(sz) - 1);
            if !canonical_in(lin, c.s.cr4) || !canonical_in(end, c.s.cr4) {
                return Err(if sg == seg::SS { ss_fault(0) } else { gp(0) });
            }
            return Ok(lin);
        }
        self.seg_addr_legacy(sg, off, sz, write)
    }

    /// `seg_addr` outside 64-bit mode: limits, attributes and the 32-bit wrap.
    fn seg_addr_legacy(&self, sg: u8, off: u64, sz: u8, write: bool) -> R<u64> {
        let c = &*self.c;
        let s = c.seg(sg);
        let fault = || if sg == seg::SS { ss_fault(0) } else { gp(0) };
        if c.pe() && c.s.rflags & crate::state::rflags::VM == 0 {
            if s.unusable {
                return Err(fault());
            }
            let code = s.typ & 8 != 0;
            if write && (code || s.typ & 2 == 0) {
                return Err(fault());
            }
            if !write && code && s.typ & 2 == 0 && sg != seg::CS {
                return Err(fault());
            }
        }
        let last = off.wrapping_add(u64::from(sz) - 1);
        let limit = u64::from(s.limit);
        if s.typ & 0xc == 0x4 {
            // Expand-down data segment.
            let top = if s.db { 0xffff_ffff } else { 0xffff };
            if off <= limit || last > top || last < off {
                return Err(fault());
            }
        } else if last > limit || last < off {
            return Err(fault());
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Reads `sz` bytes at `sg:off`.
    #[inline]
    pub fn read(&mut self, sg: u8, off: u64, sz: u8) -> R<u64> {
        let lin = self.seg_addr(sg, off, sz, false)?;
        let user = self.c.cpl() == 3;
        self.read_lin(lin, sz, Acc::R, user)
    }

    /// Writes `sz` bytes at `sg:off`.
    #[inline]
    pub fn write(&mut self, sg: u8, off: u64, sz: u8, v: u64) -> R<()> {
        let lin = self.seg_addr(sg, off, sz, true)?;
        let user = self.c.cpl() == 3;
        self.write_lin(lin, sz, v, user)
    }

    /// Supervisor read at a linear address (descriptor tables, TSS, IDT).
    pub fn sys_read(&mut self, lin: u64, sz: u8) -> R<u64> {
        let lin = lin & self.lin_mask();
        self.c.implicit = true;
        let r = self.read_lin(lin, sz, Acc::R, false);
        self.c.implicit = false;
        r
    }

    /// Supervisor write at a linear address.
    pub fn sys_write(&mut self, lin: u64, sz: u8, v: u64) -> R<()> {
        let lin = lin & self.lin_mask();
        self.c.implicit = true;
        let r = self.write_lin(lin, sz, v, false);
        self.c.implicit = false;
        r
    }
}

impl Ctx<'_> {
    /// The error code of a page fault raised by the instruction at RIP, corrected for a
    /// read-modify-write operand: the CPU reads it with write intent, so a fault on the read
    /// reports a write (bit 1) just as the write would. Faults are rare: the instruction is
    /// decoded again here rather than marking every read-modify-write load in the IR.
    pub fn rmw_page_fault(&mut self, code: Option<u32>) -> Option<u32> {
        let Some(c) = code else {
            return code;
        };
        if c & (2 | 16) != 0 {
            return code;
        }
        let cr2 = self.c.s.cr2;
        let bits = self.c.s.code_bitness();
        let f = self.fetch_decode(self.c.s.rip, bits);
        self.c.s.cr2 = cr2;
        match f {
            Ok(f) if is_rmw(&f.insn) => Some(c | 2),
            _ => code,
        }
    }
}

/// Whether the instruction reads and writes its memory operand (ADD [m], r; INC [m]; BTS [m];
/// XCHG; CMPXCHG...).
fn is_rmw(i: &iced_x86::Instruction) -> bool {
    use iced_x86::OpAccess;
    i.op0_kind() == iced_x86::OpKind::Memory
        && matches!(
            iced_x86::InstructionInfoFactory::new().info(i).op0_access(),
            OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
}

/// Whether a 64-bit address is canonical under `cr4`: 57-bit with CR4.LA57, else 48-bit.
#[inline]
pub fn canonical_in(a: u64, cr4: u64) -> bool {
    let shift = if cr4 & bits::CR4_LA57 != 0 { 7 } else { 16 };
    ((a as i64) << shift >> shift) as u64 == a
}
