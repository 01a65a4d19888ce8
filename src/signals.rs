//! Stop signals: SIGINT, SIGTERM and SIGHUP set a flag that the machine's main loop polls, so
//! the guest is stopped cleanly (vCPUs kicked, output flushed, the stop report and stats printed,
//! the terminal restored) instead of the process dying.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first stop signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signals that stop the machine.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_stop_signal(sig: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install_stop_handlers() {
    for sig in STOP_SIGNALS {
        // SAFETY: `on_stop_signal` only does an atomic compare-exchange, which is
        // async-signal-safe; installing a handler with `signal` has no other precondition.
        unsafe {
            libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The first stop signal received since the handlers were installed, if any.
pub fn received() -> Option<libc::c_int> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The conventional name of a stop signal ("SIGTERM").
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE (output to a closed pipe)",
        _ => "a signal",
    }
}
