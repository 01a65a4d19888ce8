//! The vCPU kick signal: a real-time signal whose handler sets `immediate_exit` in the
//! interrupted thread's `kvm_run`, so that a kick arriving just before KVM_RUN still makes it
//! return at once (KVM documents this pattern for KVM_CAP_IMMEDIATE_EXIT).

use std::cell::Cell;
use std::sync::Once;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

thread_local! {
    /// The `kvm_run` of the vCPU this thread is running, or null.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal number.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let p = KVM_RUN.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer was set by this same thread from its live vCPU's kvm_run mapping
        // and is cleared before that vCPU is dropped, so it points to a valid kvm_run.
        let field = unsafe { &raw mut (*p).immediate_exit };
        // SAFETY: `field` points into that live mapping; a volatile byte store is signal-safe.
        unsafe { field.write_volatile(1) };
    }
}

/// Installs the handler once per process.
pub(crate) fn install() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick).map_err(|e| e.to_string());
    });
    result
}

/// Records (or clears, with null) the `kvm_run` the calling thread is about to run.
pub(crate) fn set_current(run: *mut kvm_run) {
    KVM_RUN.with(|c| c.set(run));
}

/// The calling thread's id in the form [`signal_thread`] takes.
pub(crate) fn current_thread() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

/// Sends the kick signal to a thread recorded by a backend.
pub fn signal_thread(tid: u64) {
    // SAFETY: `tid` is a pthread_t recorded by a live vCPU thread (backends clear it before the
    // thread ends); pthread_kill with a valid handle and a handled signal has no other effect.
    unsafe {
        libc::pthread_kill(tid as libc::pthread_t, kick_signal());
    }
}
