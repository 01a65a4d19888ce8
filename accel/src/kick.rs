//! Kicking a running vCPU out of guest code from another thread.
//!
//! A [`Kicker`] sets the vCPU's attention flag, which every backend checks before entering guest
//! code (the software backend at each block entry), and, for backends that sit inside a blocking
//! system call (KVM_RUN), sends a signal to the vCPU's thread. The KVM backend's signal handler
//! sets `immediate_exit`, so a kick that lands just before KVM_RUN is not lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A cloneable handle that asks one vCPU to stop running guest code soon.
#[derive(Clone, Debug, Default)]
pub struct Kicker {
    attention: Arc<AtomicBool>,
    /// pthread_t of the thread in `run`, or 0 when none needs a signal.
    thread: Arc<AtomicU64>,
}

impl Kicker {
    /// A new kicker with no attention requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests attention: the vCPU's `run` returns [`crate::Exit::Stopped`] soon.
    pub fn kick(&self) {
        self.attention.store(true, Ordering::SeqCst);
        let tid = self.thread.load(Ordering::SeqCst);
        if tid != 0 {
            crate::kvm::signal_thread(tid);
        }
    }

    /// Whether attention was requested.
    #[inline]
    pub fn pending(&self) -> bool {
        self.attention.load(Ordering::Relaxed)
    }

    /// Clears a request once the owner of the vCPU has served it.
    pub fn clear(&self) {
        self.attention.store(false, Ordering::SeqCst);
    }

    /// Records the thread that must be signalled (0 for none). Called by backends that block.
    pub(crate) fn set_thread(&self, tid: u64) {
        self.thread.store(tid, Ordering::SeqCst);
    }

    /// The raw flag, for backends that poll it at block entry.
    pub fn flag(&self) -> &AtomicBool {
        &self.attention
    }
}
