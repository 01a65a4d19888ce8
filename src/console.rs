//! The serial console on a terminal, as QEMU's `-serial mon:stdio`: the terminal in raw mode for
//! the run (so the guest's own echo, line editing and Ctrl-C work), restored on every way out,
//! and an escape prefix, Ctrl-A, for janus's own keys (x quits, h lists the keys, s prints the
//! statistics so far, Ctrl-A sends a Ctrl-A). When standard input is not a terminal, its bytes
//! go to the guest unchanged.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::control::{Control, StopReason};
use crate::devices::serial::InputQueue;

/// The escape key, Ctrl-A.
pub const ESCAPE: u8 = 0x01;

/// The escape keys, as Ctrl-A h prints them.
pub const HELP: &str = "janus console keys:
  Ctrl-A x       quit (stop the guest; exit status 0)
  Ctrl-A s       print the statistics so far
  Ctrl-A n       NMI button: pulse every vCPU's LINT1 (an NMI where it is in NMI mode)
  Ctrl-A h       print this help
  Ctrl-A Ctrl-A  send Ctrl-A to the guest
";

/// What a typed byte means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A byte for the guest.
    Guest(u8),
    /// Ctrl-A x: stop the machine.
    Quit,
    /// Ctrl-A h: list the keys.
    Help,
    /// Ctrl-A s: print the statistics so far.
    Stats,
    /// Ctrl-A n: the NMI button.
    Nmi,
    /// Nothing yet (the escape key itself) or an unknown escape (ignored, as QEMU does).
    None,
}

/// The escape-prefix state machine.
#[derive(Debug, Default)]
pub struct Escape {
    armed: bool,
}

impl Escape {
    /// Interprets the next typed byte.
    pub fn feed(&mut self, b: u8) -> Key {
        if !self.armed {
            if b == ESCAPE {
                self.armed = true;
                return Key::None;
            }
            return Key::Guest(b);
        }
        self.armed = false;
        match b {
            ESCAPE => Key::Guest(ESCAPE),
            b'x' | b'X' => Key::Quit,
            b'h' | b'H' | b'?' => Key::Help,
            b's' | b'S' => Key::Stats,
            b'n' | b'N' => Key::Nmi,
            _ => Key::None,
        }
    }
}

/// Whether standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor; any value is allowed.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// The terminal settings before raw mode, for [`restore_terminal`] (from a panic hook too).
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Raw mode on standard input for as long as this lives.
#[derive(Debug)]
pub struct RawTerminal(());

impl RawTerminal {
    /// Puts the terminal on standard input in raw mode: no echo, no line editing, no signals
    /// from Ctrl-C or Ctrl-Z, no flow control, bytes as typed. Output processing stays on, so
    /// janus's own lines end in CR LF as usual. `None` when stdin is not a terminal.
    pub fn enable() -> Option<RawTerminal> {
        if !stdin_is_terminal() {
            return None;
        }
        // SAFETY: termios is plain old data; tcgetattr fills it and fails harmlessly.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a valid pointer to a termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved);
        // SAFETY: a valid descriptor and termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &raw) } != 0 {
            SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
            return None;
        }
        Some(RawTerminal(()))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Puts the terminal back as it was before [`RawTerminal::enable`]; does nothing otherwise.
pub fn restore_terminal() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = saved {
        // SAFETY: a valid descriptor and the termios tcgetattr returned.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}

/// Restores the terminal before a panic's message is printed, so a panic in any thread leaves
/// a usable terminal.
pub fn restore_terminal_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

/// What the console's keys act on.
pub struct ConsoleHooks {
    /// The machine's stop handle (Ctrl-A x).
    pub control: Arc<Control>,
    /// The statistics so far (Ctrl-A s).
    pub stats: Box<dyn Fn() -> String + Send>,
    /// The NMI button (Ctrl-A n): false where janus's interrupt controllers are not in use.
    pub nmi: Box<dyn Fn() -> bool + Send>,
}

impl std::fmt::Debug for ConsoleHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHooks").finish_non_exhaustive()
    }
}

/// The most bytes of standard input janus holds for the guest (the UART's receive queue); the
/// reader waits for the guest to take some before it reads more.
pub const INPUT_LIMIT: usize = 4096;

/// Copies standard input into `input` (the UART's receive queue, or a recording's staging
/// queue), on a detached thread that ends at EOF, calling `arrived` after each batch (which
/// makes the UART take the bytes). On a terminal, Ctrl-A starts an escape (see [`HELP`]).
pub fn spawn_reader(input: InputQueue, arrived: Box<dyn Fn() + Send>, hooks: ConsoleHooks) {
    let escapes = stdin_is_terminal();
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            let mut escape = Escape::default();
            let mut bytes = Vec::with_capacity(buf.len());
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                bytes.clear();
                for &b in &buf[..n] {
                    let key = if escapes {
                        escape.feed(b)
                    } else {
                        Key::Guest(b)
                    };
                    match key {
                        Key::Guest(b) => bytes.push(b),
                        Key::None => {}
                        Key::Quit => hooks.control.request_stop(StopReason::ConsoleQuit),
                        Key::Help => crate::ewrite!("{HELP}"),
                        Key::Stats => crate::ewriteln!("{}", (hooks.stats)()),
                        Key::Nmi => {
                            if !(hooks.nmi)() {
                                crate::ewriteln!(
                                    "janus: no NMI button with KVM's in-kernel irqchip \
                                     (--irqchip kernel)"
                                );
                            }
                        }
                    }
                }
                if bytes.is_empty() {
                    continue;
                }
                // Back-pressure: stdin is read only as fast as the guest takes it. A terminal
                // keeps being read (so Ctrl-A x works while the guest ignores its input) and
                // drops what the guest has no room for, as a UART overruns.
                loop {
                    let mut q = input.lock().unwrap_or_else(|p| p.into_inner());
                    let room = INPUT_LIMIT.saturating_sub(q.len());
                    if room >= bytes.len() || escapes {
                        q.extend(&bytes[..room.min(bytes.len())]);
                        break;
                    }
                    drop(q);
                    if hooks.control.stopping() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                arrived();
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(typed: &[u8]) -> Vec<Key> {
        let mut e = Escape::default();
        typed
            .iter()
            .map(|&b| e.feed(b))
            .filter(|k| *k != Key::None)
            .collect()
    }

    #[test]
    fn escape_keys() {
        assert_eq!(
            keys(b"a\x03\x01x"),
            [Key::Guest(b'a'), Key::Guest(3), Key::Quit]
        );
        assert_eq!(keys(b"\x01\x01b"), [Key::Guest(1), Key::Guest(b'b')]);
        assert_eq!(keys(b"\x01h\x01s"), [Key::Help, Key::Stats]);
        assert_eq!(keys(b"\x01n"), [Key::Nmi]);
        // An unknown escape is dropped; the next byte is ordinary again.
        assert_eq!(keys(b"\x01qx"), [Key::Guest(b'x')]);
    }
}
