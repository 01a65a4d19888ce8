//! The JIT: compiles the software CPU's IR to x86-64 host code with dynasmrt.
//!
//! The run loop (`soft/mod.rs`) finds or translates the next block as it does for the
//! interpreter, then hands it to [`Jit::run`], which compiles it on first use and enters it.
//! Compiled code runs on from block to block without coming back: direct exits are chained (their
//! `jmp` patched to the next block once that exists and is in the same page, or anywhere while
//! paging is off), indirect exits look their target up in a jump cache, and each block checks
//! the attention flag on entry. Code returns to the run loop when it needs it: a miss, a fault, an
//! overwritten page, a helper that changed the mode. Blocks the generator cannot compile, blocks
//! that cross a page and single-stepping run in the interpreter, which stays the reference.
//!
//! Modules: `buffer` (code memory, entry, the `unsafe` shims), `rt` (the context generated code
//! sees), `codegen`/`ops`/`flags`/`mem`/`exits`/`inline_helpers` (code generation), `alloc`
//! (register allocation), `analysis` (liveness), `slow` (what the shims do).

// dynasm! converts every dynamic register operand with `.into()`, which clippy flags.
#![allow(clippy::useless_conversion)]

mod alloc;
mod analysis;
mod buffer;
mod codegen;
mod exits;
mod flags;
mod inline_helpers;
mod mem;
mod ops;
mod rt;
mod slow;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use super::cache::FastMap;
use super::cpu::Ctx;
use super::interp::{self, Outcome, TEMPS};
use super::ir::{Block, Op};
use crate::kick::Kicker;

use buffer::{CodeBuf, code};
use codegen::{ExitRec, Gen, Unsupported};
use rt::Rt;

/// Default size of the code cache.
pub const DEFAULT_CODE_CACHE: usize = 32 << 20;
/// A block is compiled on its eighth run: code that runs a few times (firmware, set-up, most of
/// a kernel's initialisation) is cheaper to interpret than to compile. Measured on a Debian PVH
/// boot to /init (user time, two runs each): 2 -> 2.45 s, 4 -> 2.29, 8 -> 2.23, 16 -> 2.33.
const HOT: u32 = 8;
/// A page whose compiled code was overwritten this many times runs in the interpreter (code
/// that rewrites itself all the time is cheaper to interpret than to recompile)...
const SMC_LIMIT: u32 = 8;
/// ... until its blocks have run this many times without the page being written (doubled each
/// time the page is demoted again). A kernel patches its own text at boot (alternatives, jump
/// labels, ftrace): Linux rewrote three pages holding hot code eight times each in its first
/// 130M instructions and never again, and demotion for good interpreted 880k block runs.
const SMC_QUIET: u32 = 256;

/// Overwrites of one physical page's code.
#[derive(Clone, Copy, Debug, Default)]
struct Smc {
    /// Times its compiled code was overwritten since it was last promoted.
    count: u32,
    /// Runs of its blocks since the page was last written, while demoted.
    quiet: u32,
    /// Times it was promoted back to compiled code.
    promoted: u32,
}

impl Smc {
    /// Whether the page's blocks run in the interpreter, counting one run of one of them.
    fn demoted(&mut self) -> bool {
        if self.count < SMC_LIMIT {
            return false;
        }
        self.quiet += 1;
        if self.quiet >= SMC_QUIET << self.promoted.min(12) {
            self.count = 0;
            self.quiet = 0;
            self.promoted += 1;
            return false;
        }
        true
    }
}

/// JIT counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks compiled.
    pub compiled: u64,
    /// Exits patched to jump straight to their next block.
    pub chained: u64,
    /// Compiled blocks dropped because their code was overwritten.
    pub invalidated: u64,
    /// Block runs in the interpreter (blocks the JIT does not compile, single steps).
    pub interpreted: u64,
    /// Blocks the generator refused (they run in the interpreter).
    pub refused: u64,
    /// Times the code cache was emptied because it was full (or every block was dropped).
    pub flushes: u64,
    /// Entries into compiled code from the run loop.
    pub entries: u64,
    /// Memory accesses that took the slow path.
    pub slow_accesses: u64,
    /// Bytes of code in the cache.
    pub code_bytes: u64,
}

/// What the JIT knows of one block.
#[derive(Debug)]
struct Entry {
    /// The block (blocks are keyed by address: holding it keeps the address from being reused).
    #[cfg_attr(not(test), allow(dead_code))]
    block: Arc<Block>,
    /// Host address of its code, or `None` when it runs in the interpreter.
    code: Option<usize>,
    /// Runs so far while not compiled.
    runs: u32,
    /// The generator refused it.
    refused: bool,
    /// Segment accesses its code assumes flat (`Rt::nonflat` bits).
    flat: u64,
    /// Compile it without assuming flat segments (they were not, once).
    no_flat: bool,
    /// Exits (ids) chained to it.
    incoming: Vec<usize>,
    /// Its own exits (ids).
    exits: std::ops::Range<usize>,
    /// Offsets of its code in the buffer.
    #[cfg_attr(not(test), allow(dead_code))]
    span: std::ops::Range<usize>,
}

impl Entry {
    fn new(b: &Arc<Block>, runs: u32) -> Entry {
        Entry {
            block: b.clone(),
            code: None,
            runs,
            refused: false,
            flat: 0,
            no_flat: false,
            incoming: Vec::new(),
            exits: 0..0,
            span: 0..0,
        }
    }
}

/// One chainable exit.
#[derive(Debug)]
struct Exit {
    rec: ExitRec,
    /// The block it belongs to (key in `Jit::blocks`), or `None` once that was dropped.
    src: Option<usize>,
    /// Key of the source block.
    key: u32,
    /// Whether it is patched.
    chained: bool,
}

/// The JIT of one vCPU.
#[derive(Debug)]
pub struct Jit {
    buf: CodeBuf,
    cap: usize,
    room: usize,
    rt: Box<Rt>,
    blocks: FastMap<usize, Entry>,
    by_page: FastMap<u64, Vec<usize>>,
    exits: Vec<Exit>,
    chain_from: Option<usize>,
    /// Invalidations of compiled code per physical page.
    smc_pages: FastMap<u64, Smc>,
    /// Runs before a block is compiled (tests compile on the first).
    hot: u32,
    /// `--perf-map` or `JANUS_JIT_PERFMAP=1`: /tmp/perf-PID.map, naming compiled blocks for
    /// `perf report`.
    perf_map: Option<std::fs::File>,
    /// `JANUS_JIT_RANGE=LO-HI` (hex RIPs): only blocks starting in [LO, HI) are compiled, the
    /// rest interpreted, to bisect a miscompiled block.
    range: Option<(u64, u64)>,
    temps: Box<[u64; TEMPS]>,
    stats: JitStats,
    /// Code is compiled for deterministic time (see [`Jit::set_icount_limit`]).
    icount: bool,
}

fn block_id(b: &Arc<Block>) -> usize {
    Arc::as_ptr(b) as usize
}

/// Host registers that keep a looping block's guest registers (not RAX and RCX, which exits
/// and shifts use).
const LOOP_REGS: [u8; 9] = [3, 5, 6, 7, 8, 9, 10, 11, 2];
/// At most this many guest registers are kept (the most used), leaving room for temporaries
/// and flags.
const LOOP_MAX: usize = 5;

/// For a block that jumps back to its own start: its guest registers and the host registers
/// that keep them across iterations.
fn loop_regs(b: &Block, _lin: u64) -> Option<Vec<(u8, u8)>> {
    let back = b.ops.iter().any(|op| match *op {
        Op::Goto { rip } => rip == b.rip,
        Op::Branch { taken, .. } | Op::BranchCc { taken, .. } => {
            (taken == b.rip) != (b.fall() == b.rip)
        }
        _ => false,
    });
    if !back {
        return None;
    }
    let mut uses = [0u32; 16];
    for op in &b.ops {
        match *op {
            Op::Get { r, .. } | Op::Set { r, .. } | Op::AluI { r, .. } | Op::Rot { r, .. } => {
                uses[usize::from(r & 15)] += 1
            }
            Op::AluR { r, s, .. } => {
                uses[usize::from(r & 15)] += 1;
                uses[usize::from(s & 15)] += 1;
            }
            Op::Call { n, .. } => match inline_helpers::Native::of(&b.insns[usize::from(n)]) {
                Some(inline_helpers::Native::Rot { r, .. }) => uses[usize::from(r)] += 1,
                Some(inline_helpers::Native::Imul { d, s, .. }) => {
                    uses[usize::from(d)] += 1;
                    uses[usize::from(s)] += 1;
                }
                None => return None,
            },
            _ => {}
        }
    }
    let mut regs: Vec<u8> = (0..16u8).filter(|&g| uses[usize::from(g)] > 0).collect();
    regs.sort_by_key(|&g| std::cmp::Reverse(uses[usize::from(g)]));
    regs.truncate(LOOP_MAX);
    regs.sort_unstable();
    Some(regs.into_iter().zip(LOOP_REGS).collect())
}

/// Why a block cannot be compiled (checked before any code is emitted).
fn check(b: &Block) -> Result<(), Unsupported> {
    let mut ended = false;
    for op in &b.ops {
        match *op {
            Op::Jump { .. }
            | Op::Goto { .. }
            | Op::Branch { .. }
            | Op::BranchCc { .. }
            | Op::End => ended = true,
            Op::AdcR { .. } => return Err(Unsupported("an interpreter-only op")),
            _ => {}
        }
    }
    if !ended {
        return Err(Unsupported("block without an exit"));
    }
    if b.ops.len() > 4096 {
        return Err(Unsupported("block too long"));
    }
    Ok(())
}

/// /tmp/perf-PID.map, where `perf report` finds the names of JIT code.
fn open_perf_map() -> Option<std::fs::File> {
    let path = format!("/tmp/perf-{}.map", std::process::id());
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()
}

impl Jit {
    /// A JIT with a code cache of `cap` bytes, polling `kicker` at block entry.
    pub fn new(kicker: &Kicker, cap: usize) -> std::io::Result<Jit> {
        Self::with_room(kicker, cap, buffer::BLOCK_ROOM)
    }

    /// Names every block compiled from now on in /tmp/perf-PID.map (`--perf-map`).
    pub fn enable_perf_map(&mut self) {
        if self.perf_map.is_none() {
            self.perf_map = open_perf_map();
        }
    }

    /// The same, flushing the cache when less than `room` bytes are free.
    pub fn with_room(kicker: &Kicker, cap: usize, room: usize) -> std::io::Result<Jit> {
        let mut rt = Rt::new();
        rt.attention = kicker.flag() as *const _ as usize;
        Ok(Jit {
            buf: CodeBuf::new(cap, room)?,
            cap,
            room,
            rt,
            blocks: FastMap::default(),
            by_page: FastMap::default(),
            exits: Vec::new(),
            chain_from: None,
            smc_pages: FastMap::default(),
            hot: if cfg!(test) { 1 } else { HOT },
            perf_map: std::env::var_os("JANUS_JIT_PERFMAP").and_then(|_| open_perf_map()),
            range: std::env::var("JANUS_JIT_RANGE").ok().and_then(|r| {
                let (lo, hi) = r.split_once('-')?;
                let hex = |x: &str| u64::from_str_radix(x.trim().trim_start_matches("0x"), 16).ok();
                Some((hex(lo)?, hex(hi)?))
            }),
            temps: Box::new([0; TEMPS]),
            stats: JitStats::default(),
            icount: false,
        })
    }

    /// Deterministic time: compiled code comes back to the dispatcher at the first block entry
    /// (or loop iteration) where the instruction count has reached `limit`, exactly where the
    /// interpreter, which comes back after every block, would see the deadline. The first call
    /// drops the code compiled without the check.
    pub fn set_icount_limit(&mut self, limit: u64) {
        if !self.icount {
            self.icount = true;
            self.flush(false);
        }
        self.rt.icount_limit = limit;
    }

    /// The counters.
    pub fn stats(&self) -> JitStats {
        let mut s = self.stats;
        s.slow_accesses = self.rt.slow;
        s.code_bytes = self.buf.used() as u64;
        s
    }

    /// Empties the code cache (`full`: because it was full, which the counters report).
    fn flush(&mut self, full: bool) {
        if let Ok(b) = CodeBuf::new(self.cap, self.room) {
            self.buf = b;
        }
        self.blocks.clear();
        self.by_page.clear();
        self.exits.clear();
        self.rt.calls.clear();
        self.rt.flush_jc();
        self.smc_pages.clear();
        self.chain_from = None;
        if full {
            self.stats.flushes += 1;
        }
    }

    /// Drops one block of a page (the translation cache dropped it: a write overlapped its
    /// code), unchaining every jump into it.
    /// Returns whether it had compiled code.
    fn drop_one(&mut self, page: u64, id: usize, gone: &mut Vec<u64>) -> bool {
        if let Some(ids) = self.by_page.get_mut(&page) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_page.remove(&page);
            }
        }
        self.drop_block(id, gone)
    }

    /// Forgets a block, unchaining every jump into it: whether it had compiled code (which is
    /// added to `gone`).
    fn drop_block(&mut self, id: usize, gone: &mut Vec<u64>) -> bool {
        let Some(e) = self.blocks.remove(&id) else {
            return false;
        };
        let mut had_code = false;
        if let Some(code) = e.code {
            self.stats.invalidated += 1;
            had_code = true;
            gone.push(code as u64);
        }
        for x in e.incoming {
            let ex = &mut self.exits[x];
            if ex.chained && ex.src.is_some() {
                let (at, stub) = (ex.rec.at, ex.rec.stub);
                ex.chained = false;
                let _ = self.buf.patch_jmp(at, self.buf_addr(stub));
            }
        }
        for x in e.exits {
            self.exits[x].src = None;
        }
        had_code
    }

    /// Self-modifying-code accounting of a page that lost blocks (`had_code`: compiled ones).
    fn count_smc(&mut self, page: u64, had_code: bool) {
        if had_code {
            let smc = self.smc_pages.entry(page).or_default();
            smc.count += 1;
            smc.quiet = 0;
        } else if let Some(smc) = self.smc_pages.get_mut(&page) {
            smc.quiet = 0;
        }
    }

    /// Forgets a block's code (unchaining jumps into it); it is compiled again without
    /// assuming flat segments.
    fn uncompile(&mut self, id: usize) {
        let Some(e) = self.blocks.get_mut(&id) else {
            return;
        };
        e.code = None;
        e.no_flat = true;
        e.flat = 0;
        let incoming = std::mem::take(&mut e.incoming);
        let own = e.exits.clone();
        for x in incoming {
            let ex = &mut self.exits[x];
            if ex.chained && ex.src.is_some() {
                let (at, stub) = (ex.rec.at, ex.rec.stub);
                ex.chained = false;
                let _ = self.buf.patch_jmp(at, self.buf_addr(stub));
            }
        }
        for x in own {
            self.exits[x].src = None;
        }
        self.rt.flush_jc();
    }

    fn buf_addr(&self, off: usize) -> usize {
        self.buf.addr(dynasmrt::AssemblyOffset(off))
    }

    /// Takes note of what happened to the translation cache since the last run.
    fn catch_up(&mut self, ctx: &mut Ctx) {
        let Some(ev) = ctx.c.cache.jit.as_mut() else {
            return;
        };
        if ev.cleared {
            ev.cleared = false;
            ev.dropped_blocks.clear();
            ev.new_code.clear();
            self.rt.flush_tlb();
            self.rt.flush_jc();
            if !self.blocks.is_empty() {
                self.flush(false);
            }
            return;
        }
        let blocks = std::mem::take(&mut ev.dropped_blocks);
        let new_code = std::mem::take(&mut ev.new_code);
        let mut gone = Vec::new();
        // One write's blocks come together: a page counts once per write for demotion.
        let mut page: Option<(u64, bool)> = None;
        for (p, id) in blocks {
            let had = self.drop_one(p, id, &mut gone);
            match &mut page {
                Some((q, h)) if *q == p => *h |= had,
                _ => {
                    if let Some((q, h)) = page.replace((p, had)) {
                        self.count_smc(q, h);
                    }
                }
            }
        }
        if let Some((q, h)) = page {
            self.count_smc(q, h);
        }
        self.rt.jc_drop(&gone);
        for p in new_code {
            self.rt.protect_phys(p);
        }
    }

    /// Compiles `b` (or records that it runs in the interpreter): its code's address and
    /// offsets.
    fn compile(
        &mut self,
        ctx: &Ctx,
        b: &Arc<Block>,
        lin: u64,
        key: u32,
        flat_ok: bool,
    ) -> Option<(usize, std::ops::Range<usize>, u64)> {
        if let Err(Unsupported(_)) = check(b) {
            self.stats.refused += 1;
            return None;
        }
        let exit_base = self.exits.len();
        let call_base = self.rt.calls.len();
        let mut asm = self.buf.assembler();
        let base = self.buf.used();
        let mut g = Gen {
            a: &mut asm,
            base,
            exit_done: self.buf.exit_done,
            exit: self.buf.exit,
            b,
            key,
            bits: ctx.c.s.code_bitness(),
            lin,
            r: alloc::Regs::default(),
            fk: codegen::Fk::Unknown,
            hf: false,
            n: 0,
            rip: b.rip,
            k: 0,
            risky: false,
            writes: false,
            calls_helpers: false,
            flat: 0,
            icount: self.icount,
            looping: None,
            an: analysis::Analysis::new(&b.ops),
            cold: Vec::new(),
            fault_labels: Vec::new(),
            exits: Vec::new(),
            exit_base,
            calls: Vec::new(),
            call_base,
        };
        for (k, op) in b.ops.iter().enumerate() {
            match *op {
                Op::Store { .. } if analysis::boundary_after(&b.ops, k).is_none() => {
                    g.writes = true
                }
                Op::Call { n, .. }
                    if inline_helpers::Native::of(&b.insns[usize::from(n)]).is_none() =>
                {
                    g.writes = true;
                    g.calls_helpers = true;
                }
                _ => {}
            }
        }
        // Accesses through segments that are flat now are compiled without limit checks or
        // base, in blocks that cannot change segments themselves (no helper calls).
        if g.bits != 64 && !g.calls_helpers && flat_ok {
            for op in &b.ops {
                let (seg, write) = match *op {
                    Op::Load { seg, .. } => (seg, false),
                    Op::Store { seg, .. } => (seg, true),
                    _ => continue,
                };
                let bit = 1u64 << (u32::from(seg) + if write { 8 } else { 0 });
                if self.rt.nonflat & bit == 0 {
                    g.flat |= bit;
                }
            }
        }
        let flat = g.flat;
        if !g.calls_helpers {
            g.looping = loop_regs(b, lin).map(|r| (r, g.a.new_dynamic_label()));
        }
        use dynasmrt::DynasmApi;
        let entry = base + g.a.offset().0;
        g.prologue();
        for (k, op) in b.ops.iter().enumerate() {
            g.k = k;
            if g.op(op).is_err() {
                // `check` rules these out before anything is emitted.
                unreachable!("op refused after the check");
            }
            if matches!(
                op,
                Op::Jump { .. }
                    | Op::Goto { .. }
                    | Op::Branch { .. }
                    | Op::BranchCc { .. }
                    | Op::End
            ) {
                break;
            }
        }
        g.epilogue();
        let (exits, calls) = (std::mem::take(&mut g.exits), std::mem::take(&mut g.calls));
        drop(g);
        if self.buf.append(asm).is_err() {
            self.stats.refused += 1;
            return None;
        }
        // Committed by `run` before the code is first entered.
        let id = block_id(b);
        for rec in exits {
            self.exits.push(Exit {
                rec,
                src: Some(id),
                key,
                chained: false,
            });
        }
        self.rt.calls.extend(calls);
        self.stats.compiled += 1;
        if let Some(f) = &mut self.perf_map {
            use std::io::Write;
            let _ = writeln!(
                f,
                "{:x} {:x} guest_{:x}_{:x}",
                self.buf.addr(dynasmrt::AssemblyOffset(entry)),
                self.buf.used() - entry,
                b.rip,
                b.phys
            );
        }
        Some((
            self.buf.addr(dynasmrt::AssemblyOffset(entry)),
            entry..self.buf.used(),
            flat,
        ))
    }

    /// Every block that ran compiled, by RIP: its IR, and its code's offset and bytes.
    #[cfg(test)]
    pub fn dump(&self) -> Vec<(u64, String, usize, Vec<u8>)> {
        let mut v: Vec<_> = self
            .blocks
            .values()
            .filter_map(|e| {
                let (off, bytes) = self.code_of(&e.block)?;
                Some((e.block.rip, e.block.to_string(), off, bytes))
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// The generated code of a block that ran compiled: its offset in the buffer and bytes.
    #[cfg(test)]
    pub fn code_of(&self, b: &Arc<Block>) -> Option<(usize, Vec<u8>)> {
        let e = self.blocks.get(&block_id(b))?;
        e.code?;
        let bytes = self.buf.bytes(e.span.clone());
        Some((e.span.start, bytes))
    }

    /// Patches the exit that just left compiled code to jump to block `to`, whose committed
    /// code is at `code`, when that is sound.
    fn chain(&mut self, ctx: &Ctx, exit: usize, to: usize, code: usize, b: &Arc<Block>, key: u32) {
        let Some(ex) = self.exits.get(exit) else {
            return;
        };
        if ex.chained || ex.src.is_none() || ex.key != key || ex.rec.target != b.rip {
            return;
        }
        let paging = ctx.c.s.cr0 & crate::state::bits::CR0_PG != 0;
        if ex.rec.cross_page && paging {
            return;
        }
        let at = ex.rec.at;
        let Some(e) = self.blocks.get_mut(&to) else {
            return;
        };
        if self.buf.patch_jmp(at, code).is_ok() {
            self.exits[exit].chained = true;
            e.incoming.push(exit);
            self.stats.chained += 1;
        }
    }

    /// Runs block `b` (whose first byte is at linear address `lin`, under `key`) and whatever
    /// compiled code it leads to. `cacheable` is false for blocks the translation cache does not
    /// keep (they run in the interpreter).
    pub fn run(
        &mut self,
        ctx: &mut Ctx,
        b: &Arc<Block>,
        lin: u64,
        key: u32,
        cacheable: bool,
    ) -> Outcome {
        self.catch_up(ctx);
        let chain_from = self.chain_from.take();
        if !cacheable {
            self.stats.interpreted += 1;
            return interp::run(ctx, b, &mut self.temps);
        }
        let id = block_id(b);
        let mut chain_from = chain_from;
        let page = b.phys & !0xfff;
        let e = self.blocks.entry(id).or_insert_with(|| {
            self.by_page.entry(page).or_default().push(id);
            Entry::new(b, 0)
        });
        let (code, flat) = match e.code {
            Some(code) => (code, e.flat),
            None => {
                e.runs += 1;
                let mut demoted = self.smc_pages.get_mut(&page).is_some_and(Smc::demoted)
                    || self
                        .range
                        .is_some_and(|(lo, hi)| !(lo..hi).contains(&b.rip));
                // Tests: JANUS_JIT_ONLY=RIP,... compiles only those blocks (to find a culprit).
                if cfg!(test) {
                    if let Ok(only) = std::env::var("JANUS_JIT_ONLY") {
                        demoted |= !only.split(',').any(|x| {
                            u64::from_str_radix(x.trim_start_matches("0x"), 16) == Ok(b.rip)
                        });
                    }
                }
                if e.refused || e.runs < self.hot || demoted {
                    self.stats.interpreted += 1;
                    return interp::run(ctx, b, &mut self.temps);
                }
                let flushes = self.stats.flushes;
                let mut flat_ok = !e.no_flat;
                if !self.buf.has_room() {
                    self.flush(true);
                    self.blocks.insert(id, Entry::new(b, self.hot));
                    self.by_page.entry(page).or_default().push(id);
                    flat_ok = true;
                }
                let first = self.exits.len();
                self.rt.refresh(ctx);
                let compiled = self.compile(ctx, b, lin, key, flat_ok);
                let n = self.exits.len();
                if self.stats.flushes != flushes {
                    chain_from = None;
                }
                let Some(e) = self.blocks.get_mut(&id) else {
                    self.stats.interpreted += 1;
                    return interp::run(ctx, b, &mut self.temps);
                };
                let Some((code, span, flat)) = compiled else {
                    e.refused = true;
                    self.stats.interpreted += 1;
                    return interp::run(ctx, b, &mut self.temps);
                };
                e.code = Some(code);
                e.exits = first..n;
                e.span = span;
                e.flat = flat;
                (code, flat)
            }
        };
        self.rt.refresh(ctx);
        if flat & self.rt.nonflat != 0 {
            // Compiled for flat segments that are not flat any more: recompile it without.
            self.uncompile(id);
            self.stats.interpreted += 1;
            return interp::run(ctx, b, &mut self.temps);
        }
        if let Some(x) = chain_from {
            self.chain(ctx, x, id, code, b, key);
        }
        // Whether the block's page is global: only from an entry the TLB holds (a page walk
        // here could set accessed bits, or CR2 if it failed).
        let user = ctx.c.cpl() == 3;
        let global = ctx
            .c
            .tlb
            .peek(lin, super::mmu::Acc::X, user)
            .is_some_and(|e| e.global);
        self.rt.jc_put(lin, u64::from(key), code as u64, global);
        self.stats.entries += 1;
        let r = self.buf.enter(&mut self.rt, ctx, code);
        match r & 0xff {
            code::CHAIN => {
                self.chain_from = Some((r >> 8) as usize);
                Outcome::Done(0)
            }
            code::FAULT => match self.rt.fault.take() {
                Some(f) => Outcome::Fault(0, f),
                None => Outcome::Done(0),
            },
            _ => Outcome::Done(0),
        }
    }
}

#[cfg(test)]
mod smc_tests {
    use super::{SMC_LIMIT, SMC_QUIET, Smc};

    #[test]
    fn a_rewritten_page_is_interpreted_until_it_stays_quiet() {
        let mut s = Smc::default();
        assert!(!s.demoted());
        s.count = SMC_LIMIT;
        // Demoted for SMC_QUIET runs, then compiled again.
        for _ in 1..SMC_QUIET {
            assert!(s.demoted());
        }
        assert!(!s.demoted());
        assert_eq!((s.count, s.promoted), (0, 1));
        // Rewritten again: twice as long.
        s.count = SMC_LIMIT;
        for _ in 1..2 * SMC_QUIET {
            assert!(s.demoted());
        }
        assert!(!s.demoted());
        // A write while demoted restarts the quiet period (count_smc sets quiet to 0).
        s.count = SMC_LIMIT;
        for _ in 0..10 {
            assert!(s.demoted());
        }
        s.quiet = 0;
        for _ in 1..4 * SMC_QUIET {
            assert!(s.demoted());
        }
        assert!(!s.demoted());
    }
}
