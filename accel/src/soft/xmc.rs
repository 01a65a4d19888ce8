//! Cross-modifying code: one vCPU writes bytes that another vCPU has translated.
//!
//! Every vCPU has its own translation cache, and a write only checks the writer's own cache
//! for the code it overwrites. With more than one vCPU the caches share an [`Xmc`]:
//!
//! - **Owners.** For each page of guest RAM, the vCPUs that hold blocks translated from it (bit
//!   `i` for vCPU `i`; vCPUs 15 and up share bit 15, which they then never clear).
//! - **Protect.** When a page first becomes code for any vCPU, every other vCPU is told to send
//!   its writes to that page through the slow path (its TLB may hold a fast write entry), and
//!   the TLB fills of every vCPU consult the owners from then on.
//! - **Invalidate.** A slow-path write to a page that other vCPUs own tells each of them which
//!   bytes were written; one whose code overlaps them drops the page's blocks.
//!
//! - **Devices.** A device that writes guest RAM ([`crate::GuestMemory::write_dma`]) is a
//!   writer that is no vCPU ([`DEVICE`]): every vCPU that owns the page is told, as for another
//!   vCPU's store. That is why every software accelerator has an [`Xmc`], one vCPU or many.
//!
//! "This page now holds code" reaches the TLB and the JIT through one notifier,
//! [`Core::code_page`], whether this vCPU translated from the page or another vCPU did (its
//! [`Mail::Protect`]).
//!
//! Messages go to a mailbox and the receiver is kicked: it leaves compiled code at its next
//! block entry and reads its mail before it runs another block, so it sees a write no later
//! than an interrupt (an IPI, say) that the writer raises after it. That is what x86 promises
//! for cross-modifying code, where the executing CPU must serialise, and what Linux's
//! `text_poke_bp` relies on: it writes an INT3, IPIs every CPU, and a CPU that took the INT3
//! after it was removed backs up to run the instruction again, which must then be the new one.
//!
//! A write in the few instructions between another vCPU making a page code and the writer
//! reading its protect message (the rest of the writer's current block) is not seen; QEMU's
//! TCG has the same window between a TLB check and the store it guards.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use super::cpu::Core;
use crate::kick::Kicker;
use crate::memory::DmaObserver;

const PAGE: u64 = 4096;
/// vCPUs from this index on share its owner bit.
const SHARED_BIT: usize = 15;
/// The writer index of a device (DMA): no vCPU, so every owner of the page is told.
pub const DEVICE: usize = usize::MAX;
/// Messages a mailbox keeps before they collapse into [`Mail::Overflow`].
const MAILBOX_LIMIT: usize = 1024;

/// A message for one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mail {
    /// The physical page became code on another vCPU: writes to it must take the slow path.
    Protect(u64),
    /// Another vCPU wrote `len` bytes at physical address `pa`.
    Written {
        /// The first byte written.
        pa: u64,
        /// How many bytes.
        len: u64,
    },
    /// More mail came than a mailbox keeps (its vCPU did not read it: it waits for a start-up
    /// IPI, or its thread is not scheduled): drop every block and every fast write entry.
    Overflow,
}

#[derive(Debug, Default)]
struct Mailbox {
    has_mail: AtomicBool,
    mail: Mutex<Vec<Mail>>,
    kicker: Mutex<Option<Kicker>>,
}

/// What the vCPUs of one machine share about the code they translated.
#[derive(Debug)]
pub struct Xmc {
    owners: Box<[AtomicU16]>,
    boxes: Box<[Mailbox]>,
}

impl Xmc {
    /// Shared state for `nr_vcpus` vCPUs over guest RAM that ends below `ram_end`.
    pub fn new(nr_vcpus: usize, ram_end: u64) -> Self {
        let pages = usize::try_from(ram_end.div_ceil(PAGE)).unwrap_or(0);
        Xmc {
            owners: (0..pages).map(|_| AtomicU16::new(0)).collect(),
            boxes: (0..nr_vcpus).map(|_| Mailbox::default()).collect(),
        }
    }

    /// Registers the kicker of vCPU `index`, through which it is told of mail.
    pub fn register(&self, index: usize, kicker: Kicker) {
        if let Some(b) = self.boxes.get(index) {
            *b.kicker.lock().unwrap_or_else(|p| p.into_inner()) = Some(kicker);
        }
    }

    fn bit(index: usize) -> u16 {
        1 << index.min(SHARED_BIT)
    }

    fn owner(&self, page: u64) -> Option<&AtomicU16> {
        self.owners.get(usize::try_from(page / PAGE).ok()?)
    }

    /// vCPU `index` now holds blocks translated from `page`. The first vCPU to do so tells the
    /// others to protect the page.
    pub fn mark(&self, index: usize, page: u64) {
        let Some(o) = self.owner(page) else {
            return;
        };
        let before = o.fetch_or(Self::bit(index), Ordering::SeqCst);
        if before == 0 {
            self.send_all_but(index, Mail::Protect(page));
        }
    }

    /// vCPU `index` dropped its blocks of `page`.
    pub fn unmark(&self, index: usize, page: u64) {
        if index >= SHARED_BIT {
            return;
        }
        if let Some(o) = self.owner(page) {
            o.fetch_and(!Self::bit(index), Ordering::SeqCst);
        }
    }

    /// Whether any vCPU holds blocks translated from `page`.
    #[inline]
    pub fn is_code(&self, page: u64) -> bool {
        self.owner(page)
            .is_some_and(|o| o.load(Ordering::SeqCst) != 0)
    }

    /// vCPU `index` (or a [`DEVICE`]) wrote `len` bytes at `pa` (one page): the other vCPUs that
    /// hold code there are told.
    pub fn written(&self, index: usize, pa: u64, len: u64) {
        let Some(o) = self.owner(pa & !(PAGE - 1)) else {
            return;
        };
        let others = o.load(Ordering::SeqCst) & !(Self::bit(index) & !Self::bit(SHARED_BIT));
        if others == 0 {
            return;
        }
        for (i, _) in self.boxes.iter().enumerate() {
            if i != index && others & Self::bit(i) != 0 {
                self.send(i, Mail::Written { pa, len });
            }
        }
    }

    fn send_all_but(&self, index: usize, m: Mail) {
        for i in 0..self.boxes.len() {
            if i != index {
                self.send(i, m);
            }
        }
    }

    fn send(&self, i: usize, m: Mail) {
        let b = &self.boxes[i];
        {
            let mut q = b.mail.lock().unwrap_or_else(|p| p.into_inner());
            if q.first() == Some(&Mail::Overflow) {
                // Everything goes already.
            } else if q.len() >= MAILBOX_LIMIT {
                q.clear();
                q.push(Mail::Overflow);
            } else {
                q.push(m);
            }
        }
        b.has_mail.store(true, Ordering::SeqCst);
        if let Some(k) = &*b.kicker.lock().unwrap_or_else(|p| p.into_inner()) {
            k.kick();
        }
    }

    /// Whether vCPU `index` has mail (one load: checked at every block boundary).
    #[inline]
    pub fn has_mail(&self, index: usize) -> bool {
        self.boxes
            .get(index)
            .is_some_and(|b| b.has_mail.load(Ordering::Acquire))
    }

    /// Takes vCPU `index`'s mail.
    pub fn take_mail(&self, index: usize) -> Vec<Mail> {
        let Some(b) = self.boxes.get(index) else {
            return Vec::new();
        };
        b.has_mail.store(false, Ordering::SeqCst);
        std::mem::take(&mut *b.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl DmaObserver for Xmc {
    fn written(&self, addr: u64, len: u64) {
        Xmc::written(self, DEVICE, addr, len);
    }
}

impl Core {
    /// The one notifier of "physical page `page` now holds code", whether this vCPU translated
    /// from it ([`super::cache::Cache::insert`]'s new pages) or another vCPU did
    /// ([`Mail::Protect`]): this vCPU's writes to it take the slow path from now on, in the
    /// TLB and in compiled code.
    pub fn code_page(&mut self, page: u64) {
        self.tlb.protect_phys(page);
        if let Some(j) = &mut self.cache.jit {
            j.new_code.push(page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_owner_protects_the_page_on_the_others() {
        let x = Xmc::new(3, 16 * PAGE);
        let kickers: Vec<Kicker> = (0..3).map(|_| Kicker::new()).collect();
        for (i, k) in kickers.iter().enumerate() {
            x.register(i, k.clone());
        }
        x.mark(1, 2 * PAGE);
        assert!(x.is_code(2 * PAGE));
        assert!(!x.is_code(3 * PAGE));
        assert!(!x.has_mail(1));
        assert!(kickers[0].pending() && kickers[2].pending() && !kickers[1].pending());
        assert_eq!(x.take_mail(0), vec![Mail::Protect(2 * PAGE)]);
        assert!(!x.has_mail(0));
        // A second owner sends nothing: the page is protected everywhere already.
        x.mark(2, 2 * PAGE);
        assert!(x.take_mail(0).is_empty());
        assert_eq!(x.take_mail(2), vec![Mail::Protect(2 * PAGE)]);
    }

    #[test]
    fn writes_reach_the_other_owners_only() {
        let x = Xmc::new(3, 16 * PAGE);
        x.mark(0, PAGE);
        x.mark(1, PAGE);
        x.take_mail(0);
        x.take_mail(1);
        x.take_mail(2);
        x.written(0, PAGE + 8, 4);
        assert!(!x.has_mail(0));
        assert!(!x.has_mail(2));
        assert_eq!(
            x.take_mail(1),
            vec![Mail::Written {
                pa: PAGE + 8,
                len: 4
            }]
        );
        x.unmark(1, PAGE);
        x.written(0, PAGE, 1);
        assert!(!x.has_mail(1));
        x.unmark(0, PAGE);
        assert!(!x.is_code(PAGE));
        // Outside RAM: nothing is tracked.
        x.mark(0, 64 * PAGE);
        assert!(!x.is_code(64 * PAGE));
    }

    #[test]
    fn a_mailbox_nobody_reads_stays_small() {
        let x = Xmc::new(2, (4 * MAILBOX_LIMIT as u64) * PAGE);
        for p in 0..(3 * MAILBOX_LIMIT as u64) {
            x.mark(0, p * PAGE);
        }
        assert_eq!(x.take_mail(1), vec![Mail::Overflow]);
        x.mark(0, 4000 * PAGE);
        assert_eq!(x.take_mail(1), vec![Mail::Protect(4000 * PAGE)]);
    }

    #[test]
    fn vcpus_past_the_last_bit_share_it_and_keep_it() {
        let x = Xmc::new(20, 4 * PAGE);
        x.mark(16, 0);
        x.mark(17, 0);
        for i in 0..20 {
            x.take_mail(i);
        }
        x.written(16, 0, 1);
        assert!(x.has_mail(17) && x.has_mail(15) && !x.has_mail(16) && !x.has_mail(3));
        x.unmark(17, 0);
        assert!(x.is_code(0));
    }

    #[test]
    fn a_device_write_reaches_every_owner() {
        let x = Xmc::new(3, 4 * PAGE);
        x.mark(0, PAGE);
        x.mark(2, PAGE);
        for i in 0..3 {
            x.take_mail(i);
        }
        DmaObserver::written(&x, PAGE + 1, 2);
        let w = vec![Mail::Written {
            pa: PAGE + 1,
            len: 2,
        }];
        assert_eq!(x.take_mail(0), w);
        assert_eq!(x.take_mail(2), w);
        assert!(!x.has_mail(1));
    }
}
