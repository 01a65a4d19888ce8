//! The JIT's runtime context: the block of state that generated code addresses through a pinned
//! register (r14) beside the core (r15). It holds what compiled code reads on its fast paths: a
//! mirror of the soft TLB laid out for an inline lookup, a direct-mapped jump cache for indirect
//! branches, and per-segment base and limit caches; plus what the slow-path shims need (the I/O
//! handler, the fault being reported, the helper call sites).

use std::sync::Arc;

use iced_x86::Instruction;

use super::super::cpu::{Core, Ctx, Fault};
use super::super::ir::{Block, HelperFn};
use super::super::mmu::Acc;
use super::super::translate;

/// Entries of each TLB mirror (a power of two): 32 MiB of 4 KiB pages.
pub const TLB_ENTRIES: usize = 8192;
/// log2 of the size of a TLB mirror entry.
pub const TLB_SHIFT: u8 = 5;
/// Entries of the jump cache (a power of two).
pub const JC_ENTRIES: usize = 1024;
/// log2 of the size of a jump cache entry.
pub const JC_SHIFT: u8 = 5;
/// A tag that never matches: real tags are a linear page | a generation below 0xfff.
pub const NO_TAG: u64 = u64::MAX;
/// The last TLB generation before the mirror is cleared for real.
const LAST_GEN: u64 = 0xffe;
/// The runtime key when the dispatcher must decide what runs next.
pub const NO_KEY: u64 = u64::MAX;
/// Spill slots for temporaries.
pub const SPILLS: usize = 256;

/// One TLB mirror entry: the linear page | generation for reads and for writes (`NO_TAG` when
/// that access must take the slow path) and `host page - linear page`, so that `addend +
/// linear` is the host address. Entries of older generations are stale: a flush just moves to
/// the next generation.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlbEntry {
    /// Linear page readable through `addend`.
    pub read: u64,
    /// Linear page writable through `addend`.
    pub write: u64,
    /// Host address minus linear address.
    pub addend: u64,
    /// Physical page (for write protection of new code pages).
    pub phys: u64,
}

const EMPTY_TLB: TlbEntry = TlbEntry {
    read: NO_TAG,
    write: NO_TAG,
    addend: 0,
    phys: u64::MAX,
};

/// `n` empty TLB mirror entries in zeroed pages from the allocator, resident only as entries
/// fill (the mirror is 512 KiB): an all-zero entry is empty, since every tag carries a
/// generation of at least 1.
fn zeroed_tlb(n: usize) -> Box<[TlbEntry]> {
    let layout = std::alloc::Layout::array::<TlbEntry>(n).expect("TLB mirror size");
    // SAFETY: the layout is not zero-sized.
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<TlbEntry>();
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `p` is a fresh allocation of `layout`, which Box frees with the same layout;
    // every field of `TlbEntry` is a u64, for which all-zero bytes are a valid value, so it
    // holds `n` initialised entries.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) }
}

/// One jump cache entry: compiled code for a linear address under a key.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct JcEntry {
    /// Linear address of the block.
    pub lin: u64,
    /// Its key (mode bits | CPL << 8).
    pub key: u64,
    /// Host address of its code.
    pub code: u64,
    /// Padding to a power of two.
    pub pad: u64,
}

const EMPTY_JC: JcEntry = JcEntry {
    lin: 1,
    key: NO_KEY,
    code: 0,
    pad: 0,
};

/// A helper call site of compiled code: the helper and the instruction it runs on.
#[derive(Debug)]
pub struct CallSite {
    /// The helper.
    pub f: HelperFn,
    /// The block holding the instruction (kept alive as long as the code).
    pub block: Arc<Block>,
    /// The instruction's index in the block.
    pub n: u16,
}

impl CallSite {
    /// The instruction the helper runs on.
    pub fn insn(&self) -> &Instruction {
        &self.block.insns[usize::from(self.n)]
    }
}

/// The runtime context of compiled code (addressed by r14).
#[repr(C)]
#[derive(Debug)]
pub struct Rt {
    /// Address of the attention flag (an `AtomicBool`).
    pub attention: usize,
    /// The runtime key after helper calls, or `NO_KEY` to go back to the dispatcher.
    pub cur_key: u64,
    /// Save area for host registers around calls.
    pub save: [u64; 16],
    /// Segment bases, in encoding order.
    pub seg_base: [u64; 6],
    /// The TLB generation (1..=0xffe), or'ed into read tags.
    pub tlb_gen: u64,
    /// The generation of write tags (bumped also when a page becomes a code page).
    pub tlb_wgen: u64,
    /// Bit `seg`: reads through that segment are not flat (base 0, 4 GiB, readable); bit
    /// `8 + seg`: the same for writes. Code compiled for flat segments checks it on entry.
    pub nonflat: u64,
    /// Per segment, 1 + the highest offset a read may end at (0: reads take the slow path).
    pub seg_rlim: [u64; 6],
    /// The same for writes.
    pub seg_wlim: [u64; 6],
    /// Spill slots for temporaries.
    pub spill: [u64; SPILLS],
    /// Address of `tlb` (generated code keeps it in r12).
    pub tlb_base: usize,
    /// TLB mirrors: supervisor entries, then user entries.
    pub tlb: Box<[TlbEntry]>,
    /// Jump cache.
    pub jc: [JcEntry; JC_ENTRIES],
    /// Address of the core during a run (0 otherwise).
    pub core: usize,
    /// Address of a `&dyn IoHandler` on the stack of the running `Jit::run` (0 otherwise).
    pub io: usize,
    /// The fault that the last failing shim reported.
    pub fault: Option<Fault>,
    /// Helper call sites, indexed by the code.
    pub calls: Vec<CallSite>,
    /// TLB and cache generations the mirror and the jump cache were built under.
    pub seen: (u64, u64),
    /// Slow-path memory accesses (statistics).
    pub slow: u64,
    /// Deterministic time: compiled code returns to the dispatcher at the first block entry
    /// where the instruction count reached this (checked only by code compiled with
    /// `Gen::icount`).
    pub icount_limit: u64,
    /// What the segment caches, `nonflat` and `mode` were computed from (`refresh` recomputes
    /// them only when it changed).
    seg_seen: Option<SegInputs>,
    /// The runtime key when no event is pending.
    mode: u64,
}

/// The state the segment caches depend on: the six segment registers, CR0, EFER and
/// RFLAGS.VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegInputs {
    segs: [crate::state::Segment; 6],
    cr0: u64,
    efer: u64,
    vm: u64,
}

impl Rt {
    /// A boxed, empty context.
    pub fn new() -> Box<Rt> {
        let mut rt = Box::new(Rt {
            attention: 0,
            cur_key: NO_KEY,
            save: [0; 16],
            tlb_gen: 1,
            tlb_wgen: 1,
            nonflat: u64::MAX,
            seg_base: [0; 6],
            seg_rlim: [0; 6],
            seg_wlim: [0; 6],
            spill: [0; SPILLS],
            tlb_base: 0,
            tlb: zeroed_tlb(2 * TLB_ENTRIES),
            jc: [EMPTY_JC; JC_ENTRIES],
            core: 0,
            io: 0,
            fault: None,
            calls: Vec::new(),
            seen: (u64::MAX, u64::MAX),
            slow: 0,
            icount_limit: u64::MAX,
            seg_seen: None,
            mode: NO_KEY,
        });
        rt.tlb_base = rt.tlb.as_ptr() as usize;
        rt
    }

    /// Empties the TLB mirrors.
    pub fn flush_tlb(&mut self) {
        self.tlb_gen += 1;
        self.flush_writes();
    }

    /// Sends every write through the slow path until the mirror is refilled.
    fn flush_writes(&mut self) {
        self.tlb_wgen += 1;
        if self.tlb_gen > LAST_GEN || self.tlb_wgen > LAST_GEN {
            self.tlb_gen = 1;
            self.tlb_wgen = 1;
            self.tlb.fill(EMPTY_TLB);
        }
    }

    /// Empties the jump cache.
    pub fn flush_jc(&mut self) {
        self.jc.fill(EMPTY_JC);
    }

    /// Sends writes to a physical page through the slow path (it now holds translated code):
    /// all fast writes are dropped, which costs one slow write per page written afterwards.
    pub fn protect_phys(&mut self, _page: u64) {
        self.flush_writes();
    }

    /// Index of a linear address in the jump cache.
    #[inline]
    pub fn jc_index(lin: u64) -> usize {
        ((lin ^ (lin >> 12)) as usize) & (JC_ENTRIES - 1)
    }

    /// Remembers compiled code for an indirect branch target.
    pub fn jc_put(&mut self, lin: u64, key: u64, code: u64) {
        self.jc[Self::jc_index(lin)] = JcEntry {
            lin,
            key,
            code,
            pad: 0,
        };
    }

    /// Brings the caches in line with the core: flushes the mirror and the jump cache when the
    /// TLB or the translation cache changed, reloads the segment caches and the runtime key.
    pub fn refresh(&mut self, ctx: &Ctx) {
        let seen = (ctx.c.tlb.epoch, ctx.c.cache.epoch);
        if seen != self.seen {
            if seen.0 != self.seen.0 {
                self.flush_tlb();
            }
            self.flush_jc();
            self.seen = seen;
        }
        let c = &*ctx.c;
        let inputs = SegInputs {
            segs: [c.s.es, c.s.cs, c.s.ss, c.s.ds, c.s.fs, c.s.gs],
            cr0: c.s.cr0,
            efer: c.s.efer,
            vm: c.s.rflags & crate::state::rflags::VM,
        };
        if self.seg_seen != Some(inputs) {
            self.seg_seen = Some(inputs);
            self.refresh_segs(ctx);
        }
        let ev = &ctx.c.s.events;
        self.cur_key = if ev.sti_shadow
            || ev.mov_ss_shadow
            || ev.interrupt.is_some()
            || ev.exception.is_some()
        {
            NO_KEY
        } else {
            self.mode
        };
    }

    /// Recomputes the segment caches, `nonflat` and the mode part of the runtime key.
    fn refresh_segs(&mut self, ctx: &Ctx) {
        for sg in 0..6u8 {
            let s = ctx.c.seg(sg);
            let i = usize::from(sg);
            self.seg_base[i] = s.base;
            let expand_down = s.typ & 0xc == 0x4;
            let lim = if expand_down {
                0
            } else {
                u64::from(s.limit) + 1
            };
            self.seg_rlim[i] = if ctx.seg_addr(sg, 0, 1, false).is_ok() {
                lim
            } else {
                0
            };
            self.seg_wlim[i] = if ctx.seg_addr(sg, 0, 1, true).is_ok() {
                lim
            } else {
                0
            };
        }
        self.nonflat = 0;
        for i in 0..6 {
            let flat = |lim: u64| self.seg_base[i] == 0 && lim == 1 << 32;
            if !flat(self.seg_rlim[i]) {
                self.nonflat |= 1 << i;
            }
            if !flat(self.seg_wlim[i]) {
                self.nonflat |= 1 << (8 + i);
            }
        }
        self.mode = u64::from(translate::mode_key(ctx.c, false) | u32::from(ctx.c.cpl()) << 8);
    }

    /// Fills the mirror for an access that missed it, after the core's translation succeeded.
    pub fn fill(&mut self, c: &Core, lin: u64, acc: Acc, user: bool, host: usize, phys: u64) {
        if host == 0 {
            return;
        }
        let page = lin & !0xfff;
        let (rtag, wtag) = (page | self.tlb_gen, page | self.tlb_wgen);
        let i = usize::from(user) * TLB_ENTRIES + (((lin >> 12) as usize) & (TLB_ENTRIES - 1));
        let e = &mut self.tlb[i];
        let addend = (host as u64).wrapping_sub(page);
        if e.addend != addend || e.phys != phys || (e.read != rtag && e.write != wtag) {
            *e = EMPTY_TLB;
        }
        e.addend = addend;
        e.phys = phys;
        match acc {
            Acc::W => {
                if !c.cache.page_has_code(phys) {
                    e.write = wtag;
                }
            }
            _ => e.read = rtag,
        }
    }
}
