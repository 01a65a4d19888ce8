//! janus's own messages, written without panicking: the standard library's `eprintln!` and
//! `println!` panic when the stream fails (stderr on a full disk, `2>/dev/full`, stdout into a
//! closed pipe), and a message must never take a run down with it. A message that cannot be
//! written is dropped.
//!
//! Every message of the library and the command line goes through these macros:
//! [`ewriteln!`](crate::ewriteln) and [`ewrite!`](crate::ewrite) for stderr,
//! [`owriteln!`](crate::owriteln) and [`owrite!`](crate::owrite) for stdout.

use std::fmt::Arguments;
use std::io::Write;

/// Writes `args` to stderr, then `end`, ignoring errors.
pub fn to_stderr(args: Arguments<'_>, end: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.write_all(end.as_bytes());
}

/// Writes `args` to stdout, then `end`, ignoring errors.
pub fn to_stdout(args: Arguments<'_>, end: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_fmt(args);
    let _ = o.write_all(end.as_bytes());
}

/// `eprintln!` that never panics: a line on stderr, dropped if it cannot be written.
#[macro_export]
macro_rules! ewriteln {
    () => { $crate::msg::to_stderr(format_args!(""), "\n") };
    ($($arg:tt)*) => { $crate::msg::to_stderr(format_args!($($arg)*), "\n") };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! ewrite {
    ($($arg:tt)*) => { $crate::msg::to_stderr(format_args!($($arg)*), "") };
}

/// `println!` that never panics: a line on stdout, dropped if it cannot be written.
#[macro_export]
macro_rules! owriteln {
    () => { $crate::msg::to_stdout(format_args!(""), "\n") };
    ($($arg:tt)*) => { $crate::msg::to_stdout(format_args!($($arg)*), "\n") };
}

/// `print!` that never panics.
#[macro_export]
macro_rules! owrite {
    ($($arg:tt)*) => { $crate::msg::to_stdout(format_args!($($arg)*), "") };
}
