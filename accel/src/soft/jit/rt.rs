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
pub const JC_ENTRIES: usize = 4096;
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
    /// 1 when the block's page is mapped global (the entry survives CR3 writes), else 0 (also
    /// pads the entry to a power of two).
    pub global: u64,
}

const EMPTY_JC: JcEntry = JcEntry {
    lin: 1,
    key: NO_KEY,
    code: 0,
    global: 0,
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
    /// The helper cannot change segments, control registers, EFER, RFLAGS.VM or the pending
    /// events (`slow::keeps_mode`), so the runtime caches need no refresh after it.
    pub keeps_mode: bool,
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
    /// TLB, global TLB and cache generations the mirror and the jump cache were built under.
    pub seen: (u64, u64, u64),
    /// Jump cache entries filled for non-global pages since the last flush (`None`: too many
    /// to list, scan them all).
    jc_local: Option<Vec<u32>>,
    /// Bit `i`: mirror entry `i` maps a global page (kept across CR3 writes).
    globals: Box<[u64; 2 * TLB_ENTRIES / 64]>,
    /// Slow-path memory accesses (statistics).
    pub slow: u64,
    /// Deterministic time: compiled code returns to the dispatcher at the first block entry
    /// where the instruction count reached this (checked only by code compiled with
    /// `Gen::icount`).
    pub icount_limit: u64,
    /// What the segment caches, `nonflat` and `mode` were computed from (`refresh` recomputes
    /// them only when it changed).
    seg_seen: SegInputs,
    /// The runtime key when no event is pending.
    mode: u64,
}

/// The state the segment caches, `nonflat` and the mode depend on, packed for a quick
/// comparison (`refresh` runs after every helper call): per segment its base, and its limit,
/// type, unusable, D/B and L bits (for CS also the selector's RPL, the CPL); then CR0, EFER and
/// RFLAGS.VM.
type SegInputs = [u64; 15];

fn seg_inputs(c: &Core) -> SegInputs {
    let s = &c.s;
    let word = |g: &crate::state::Segment| {
        u64::from(g.limit)
            | u64::from(g.typ & 0xf) << 32
            | u64::from(g.unusable) << 36
            | u64::from(g.db) << 37
            | u64::from(g.l) << 38
    };
    [
        s.es.base,
        s.cs.base,
        s.ss.base,
        s.ds.base,
        s.fs.base,
        s.gs.base,
        word(&s.es),
        word(&s.cs) | u64::from(s.cs.selector & 3) << 40,
        word(&s.ss),
        word(&s.ds),
        word(&s.fs),
        word(&s.gs),
        s.cr0,
        s.efer,
        s.rflags & crate::state::rflags::VM,
    ]
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
            seen: (u64::MAX, u64::MAX, u64::MAX),
            globals: Box::new([0; 2 * TLB_ENTRIES / 64]),
            jc_local: Some(Vec::new()),
            slow: 0,
            icount_limit: u64::MAX,
            seg_seen: [u64::MAX; 15],
            mode: NO_KEY,
        });
        rt.tlb_base = rt.tlb.as_ptr() as usize;
        rt
    }

    /// Empties the TLB mirrors.
    pub fn flush_tlb(&mut self) {
        self.tlb_gen += 1;
        self.flush_writes();
        self.globals.fill(0);
    }

    /// Empties the TLB mirrors but for global pages, as a CR3 write does.
    fn flush_tlb_nonglobal(&mut self) {
        let (rgen, wgen) = (self.tlb_gen, self.tlb_wgen);
        self.tlb_gen += 1;
        self.flush_writes();
        if self.tlb_gen == 1 {
            // The generations wrapped and the mirror was cleared for real.
            self.globals.fill(0);
            return;
        }
        for (w, bits) in self.globals.iter().enumerate() {
            let mut bits = *bits;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let e = &mut self.tlb[i];
                if e.read & 0xfff == rgen {
                    e.read = e.read & !0xfff | self.tlb_gen;
                }
                if e.write & 0xfff == wgen {
                    e.write = e.write & !0xfff | self.tlb_wgen;
                }
            }
        }
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
        self.jc_local = Some(Vec::new());
    }

    /// Empties the jump cache but for blocks in global pages.
    fn flush_jc_nonglobal(&mut self) {
        match &mut self.jc_local {
            Some(list) => {
                for &i in list.iter() {
                    let e = &mut self.jc[i as usize];
                    if e.global == 0 {
                        *e = EMPTY_JC;
                    }
                }
                list.clear();
            }
            None => {
                for e in self.jc.iter_mut() {
                    if e.global == 0 {
                        *e = EMPTY_JC;
                    }
                }
                self.jc_local = Some(Vec::new());
            }
        }
    }

    /// Drops the jump cache entries that lead to code at these addresses.
    pub fn jc_drop(&mut self, code: &[u64]) {
        if code.is_empty() {
            return;
        }
        for e in self.jc.iter_mut() {
            if e.code != 0 && code.contains(&e.code) {
                *e = EMPTY_JC;
            }
        }
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

    /// Remembers compiled code for an indirect branch target (`global`: its page is mapped
    /// global).
    pub fn jc_put(&mut self, lin: u64, key: u64, code: u64, global: bool) {
        let i = Self::jc_index(lin);
        if !global && let Some(list) = &mut self.jc_local {
            if list.len() < JC_ENTRIES {
                list.push(i as u32);
            } else {
                self.jc_local = None;
            }
        }
        self.jc[i] = JcEntry {
            lin,
            key,
            code,
            global: u64::from(global),
        };
    }

    /// Brings the caches in line with the core: flushes the mirror and the jump cache when the
    /// TLB or the translation cache changed, reloads the segment caches and the runtime key.
    pub fn refresh(&mut self, ctx: &Ctx) {
        let seen = (ctx.c.tlb.epoch, ctx.c.tlb.global_epoch, ctx.c.cache.epoch);
        if seen != self.seen {
            if seen.1 != self.seen.1 {
                self.flush_tlb();
                self.flush_jc();
            } else if seen.0 != self.seen.0 {
                // A CR3 write: global pages (the kernel's) keep their entries.
                self.flush_tlb_nonglobal();
                self.flush_jc_nonglobal();
            }
            // Dropped blocks leave the jump cache in `Jit::catch_up` (`jc_drop`).
            self.seen = seen;
        }
        let inputs = seg_inputs(ctx.c);
        // Branch-free (an array `!=` calls memcmp, a tenth of every helper call's cost).
        let changed = inputs
            .iter()
            .zip(&self.seg_seen)
            .fold(0, |d, (a, b)| d | (a ^ b));
        if changed != 0 {
            self.seg_seen = inputs;
            self.refresh_segs(ctx);
        }
        let ev = &ctx.c.s.events;
        self.cur_key = if ev.sti_shadow
            || ev.mov_ss_shadow
            || ev.interrupt.is_some()
            || ev.exception.is_some()
            || (ev.nmi_pending && !ev.nmi_masked)
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
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        c: &Core,
        lin: u64,
        acc: Acc,
        user: bool,
        host: usize,
        phys: u64,
        global: bool,
    ) {
        if host == 0 {
            return;
        }
        let page = lin & !0xfff;
        let (rtag, wtag) = (page | self.tlb_gen, page | self.tlb_wgen);
        let i = usize::from(user) * TLB_ENTRIES + (((lin >> 12) as usize) & (TLB_ENTRIES - 1));
        let bit = 1u64 << (i % 64);
        if global {
            self.globals[i / 64] |= bit;
        } else {
            self.globals[i / 64] &= !bit;
        }
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
