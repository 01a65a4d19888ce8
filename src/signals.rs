//! Ctrl-C handling: SIGINT sets a flag that the machine's main loop polls, so the guest is
//! stopped cleanly (vCPUs kicked, output flushed, stats printed) instead of the process dying.

use std::sync::atomic::{AtomicBool, Ordering};

static SIGINT_RECEIVED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    SIGINT_RECEIVED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT handler.
pub fn install_sigint_handler() {
    // SAFETY: `on_sigint` only stores to an atomic, which is async-signal-safe; installing a
    // handler with `signal` has no other precondition.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// Whether SIGINT arrived since the handler was installed.
pub fn sigint_received() -> bool {
    SIGINT_RECEIVED.load(Ordering::SeqCst)
}
