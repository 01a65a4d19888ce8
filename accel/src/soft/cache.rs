//! The translation cache: blocks keyed by (physical address, mode bits), a direct-mapped front
//! for fast lookup, and per-page records of translated bytes (64-byte chunks) so that a guest
//! write into translated code invalidates that page's blocks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::ir::Block;
use super::xmc::Xmc;

/// A hasher for the integer keys of janus's own maps (physical pages, block addresses): a
/// multiply-rotate step per word and a final mix, so that page-aligned keys spread over the low
/// bits that pick a bucket. The maps are looked up on every block dispatch and slow-path write,
/// where the default SipHash was a tenth of a Linux boot's host instructions; their keys come
/// from janus, not from a party that could choose colliding ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 32)).wrapping_mul(0xff51_afd7_ed55_8ccd) ^ (h >> 29)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.add(u64::from(x));
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.add(u64::from(x));
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

const FAST: usize = 4096;

#[derive(Debug, Default)]
struct PageInfo {
    /// Bit i: bytes [64 i, 64 i + 64) of the page hold translated code.
    mask: u64,
    /// Keys of the blocks translated from this page (a block whose last instruction spills over
    /// into the next page is listed under both).
    keys: Vec<(u64, u32)>,
}

/// What one cached block costs besides its own vectors ([`Block::heap_bytes`]): its entry in
/// the map, its key in each page's list, the `Arc` header, the JIT's record of it and the
/// allocator's rounding.
const BLOCK_OVERHEAD: usize = 256;

/// Default budget of one vCPU's translated blocks (IR), when none is set.
pub const DEFAULT_BUDGET: usize = 96 << 20;

/// Translated blocks of one vCPU.
#[derive(Debug)]
pub struct Cache {
    map: FastMap<(u64, u32), Arc<Block>>,
    pages: FastMap<u64, PageInfo>,
    fast: Vec<Option<Arc<Block>>>,
    /// Estimated bytes of the cached blocks.
    bytes: usize,
    /// At most this many bytes of blocks are kept: past it, [`Cache::full`] says so and the run
    /// loop flushes every block at the next block boundary.
    budget: usize,
    /// Times the cache was flushed because it was full.
    pub flushes: u64,
    /// Bumped whenever blocks are dropped.
    pub epoch: u64,
    /// JIT hook: what changed since the JIT last looked (recorded only when set).
    pub jit: Option<JitEvents>,
    /// With more than one vCPU: the code pages of every vCPU, and this vCPU's index.
    pub xmc: Option<(Arc<Xmc>, usize)>,
}

// ---- JIT hook (soft/jit/) ----
/// Changes of the cache that compiled code must follow: recorded while `Cache::jit` is set,
/// drained by the JIT before it runs code.
#[derive(Debug, Default)]
pub struct JitEvents {
    /// Blocks dropped, by (physical page, block address): a write overlapped their code (their
    /// compiled code must be unchained).
    pub dropped_blocks: Vec<(u64, usize)>,
    /// Physical pages that became code pages (writes to them must take the slow path): filled
    /// by [`super::cpu::Core::code_page`] alone.
    pub new_code: Vec<u64>,
    /// Every block was dropped.
    pub cleared: bool,
}
// ---- end of JIT hook ----

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn fast_index(phys: u64, mode: u32) -> usize {
    ((phys ^ (phys >> 12) ^ u64::from(mode).wrapping_mul(0x9e37)) as usize) & (FAST - 1)
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Cache {
            map: FastMap::default(),
            pages: FastMap::default(),
            fast: vec![None; FAST],
            bytes: 0,
            budget: DEFAULT_BUDGET,
            flushes: 0,
            epoch: 0,
            jit: None,
            xmc: None,
        }
    }

    /// Drops every block.
    pub fn clear(&mut self) {
        self.epoch += 1;
        if let Some((x, i)) = &self.xmc {
            for &page in self.pages.keys() {
                x.unmark(*i, page);
            }
        }
        // Dropped, not cleared: a cleared map keeps its table, as large as it ever grew.
        self.map = FastMap::default();
        self.pages = FastMap::default();
        self.bytes = 0;
        self.fast.iter_mut().for_each(|f| *f = None);
        if let Some(j) = &mut self.jit {
            j.cleared = true;
        }
    }

    /// Sets the budget of the cached blocks, in bytes.
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// Whether the blocks take more than the budget (the run loop then flushes the cache).
    #[inline]
    pub fn full(&self) -> bool {
        self.bytes > self.budget
    }

    /// Estimated bytes of the cached blocks.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The block for (phys, mode) translated at `rip`, if any.
    #[inline]
    pub fn get(&mut self, phys: u64, mode: u32, rip: u64) -> Option<Arc<Block>> {
        let i = fast_index(phys, mode);
        if let Some(b) = &self.fast[i] {
            if b.phys == phys && b.mode == mode && b.rip == rip {
                return Some(b.clone());
            }
        }
        let b = self.map.get(&(phys, mode))?;
        if b.rip != rip {
            return None;
        }
        self.fast[i] = Some(b.clone());
        Some(b.clone())
    }

    /// Adds a block (its `code` lists the (page, mask) pairs it was translated from). Returns the
    /// pages that became code pages, for [`super::cpu::Core::code_page`] to announce.
    pub fn insert(&mut self, b: Arc<Block>) -> Vec<u64> {
        let key = (b.phys, b.mode);
        let mut new_pages = Vec::new();
        for &(page, mask) in &b.code {
            let info = self.pages.entry(page).or_default();
            if info.mask == 0 {
                new_pages.push(page);
                if let Some((x, i)) = &self.xmc {
                    x.mark(*i, page);
                }
            }
            info.mask |= mask;
            // Every page the block was translated from drops it when written (a block whose
            // last instruction spills over is listed under both pages).
            info.keys.push(key);
        }
        self.fast[fast_index(b.phys, b.mode)] = Some(b.clone());
        self.bytes += b.heap_bytes() + BLOCK_OVERHEAD;
        if let Some(old) = self.map.insert(key, b) {
            self.bytes = self.bytes.saturating_sub(old.heap_bytes() + BLOCK_OVERHEAD);
        }
        new_pages
    }

    /// Whether a physical page holds translated code, this vCPU's or another's.
    pub fn page_has_code(&self, page: u64) -> bool {
        self.pages.get(&page).is_some_and(|i| i.mask != 0)
            || self.xmc.as_ref().is_some_and(|(x, _)| x.is_code(page))
    }

    /// Drops the blocks whose code overlaps the `len` bytes at `pa` (inside one page), and only
    /// those: a write next to code (a patched call site, data beside a function) leaves the
    /// page's other blocks alone. Returns whether any block was dropped.
    pub fn invalidate_range(&mut self, pa: u64, len: u64) -> bool {
        if self.pages.is_empty() {
            return false;
        }
        let page = pa & !0xfff;
        let Some(info) = self.pages.get_mut(&page) else {
            return false;
        };
        let first = (pa & 0xfff) / 64;
        let last = ((pa + len.max(1) - 1).min(page + 0xfff) & 0xfff) / 64;
        let written = (first..=last).fold(0u64, |m, c| m | 1 << c);
        if info.mask & written == 0 {
            return false;
        }
        let mut keep = Vec::with_capacity(info.keys.len());
        let mut mask = 0;
        let mut dropped = false;
        for key in std::mem::take(&mut info.keys) {
            // A key whose block went with another page (it spilled over) is stale: forget it.
            let Some(b) = self.map.get(&key) else {
                continue;
            };
            let m = b
                .code
                .iter()
                .filter(|&&(p, _)| p == page)
                .fold(0, |a, &(_, m)| a | m);
            if m & written == 0 {
                mask |= m;
                keep.push(key);
                continue;
            }
            dropped = true;
            if let Some(b) = self.map.remove(&key) {
                self.bytes = self.bytes.saturating_sub(b.heap_bytes() + BLOCK_OVERHEAD);
                let i = fast_index(key.0, key.1);
                if self.fast[i].as_ref().is_some_and(|f| Arc::ptr_eq(f, &b)) {
                    self.fast[i] = None;
                }
                if let Some(j) = &mut self.jit {
                    j.dropped_blocks.push((page, Arc::as_ptr(&b) as usize));
                }
            }
        }
        if dropped {
            self.epoch += 1;
        }
        if keep.is_empty() {
            self.pages.remove(&page);
            if let Some((x, i)) = &self.xmc {
                x.unmark(*i, page);
            }
        } else if let Some(info) = self.pages.get_mut(&page) {
            info.keys = keep;
            info.mask = mask;
        }
        dropped
    }
}

const JMP: usize = 1024;

#[derive(Debug, Clone)]
struct JmpEntry {
    block: Arc<Block>,
    lin: u64,
    key: u32,
    epoch: u64,
}

/// A direct-mapped cache from the linear address of a block to the block, valid while neither
/// the TLB nor the translation cache changed (their generations): it skips the TLB lookup, the
/// hash lookup and the reference count of the block on the hot path.
#[derive(Debug)]
pub struct JmpCache {
    e: Vec<Option<JmpEntry>>,
}

impl JmpCache {
    /// Forgets every block (after a flush: entries would keep the flushed blocks alive).
    pub fn clear(&mut self) {
        self.e.iter_mut().for_each(|e| *e = None);
    }
}

impl Default for JmpCache {
    fn default() -> Self {
        JmpCache { e: vec![None; JMP] }
    }
}

impl JmpCache {
    #[inline]
    fn index(lin: u64) -> usize {
        ((lin ^ (lin >> 10)) as usize) & (JMP - 1)
    }

    /// The block for (linear address, key) if still valid for generation `epoch`.
    #[inline]
    pub fn get(&self, lin: u64, key: u32, epoch: u64) -> Option<&Arc<Block>> {
        match &self.e[Self::index(lin)] {
            Some(e) if e.lin == lin && e.key == key && e.epoch == epoch => Some(&e.block),
            _ => None,
        }
    }

    /// Remembers a block.
    pub fn put(&mut self, lin: u64, key: u32, epoch: u64, block: Arc<Block>) {
        self.e[Self::index(lin)] = Some(JmpEntry {
            block,
            lin,
            key,
            epoch,
        });
    }
}
