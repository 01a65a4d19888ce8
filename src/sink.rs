//! Where device output goes: stdout, nowhere, or a file (`--serial`, `--debugcon`).

use std::io::Write;
use std::path::PathBuf;

/// A user's choice of output, parsed from `stdio`, `none` or `file:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// The process's standard output.
    Stdio,
    /// Discard.
    None,
    /// A file, created or truncated.
    File(PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdio" => Ok(SinkSpec::Stdio),
            "none" => Ok(SinkSpec::None),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(SinkSpec::File(PathBuf::from(p))),
                _ => Err(format!("'{s}' is not one of stdio, none, file:PATH")),
            },
        }
    }
}

/// An open output.
pub type Sink = Box<dyn Write + Send>;

/// Standard output as a terminal wants it: each line as it ends, and the rest of a line (a
/// shell's prompt, `/ # `) no later than the next [`flush_console`], which a vCPU calls when it
/// halts and the main thread every 50 ms. Guests write a byte at a time: a write system call
/// per byte was 18k calls and ~1% of a Linux boot's time.
struct Console;

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Rust's stdout is line-buffered: it writes through up to the last newline.
        std::io::stdout().lock().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Writes out what the console holds of an unfinished line.
pub fn flush_console() {
    let _ = std::io::stdout().flush();
}

impl SinkSpec {
    /// Opens the output.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn open(&self) -> std::io::Result<Sink> {
        Ok(match self {
            SinkSpec::Stdio => Box::new(Console),
            SinkSpec::None => Box::new(std::io::sink()),
            SinkSpec::File(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!("stdio".parse(), Ok(SinkSpec::Stdio));
        assert_eq!("none".parse(), Ok(SinkSpec::None));
        assert_eq!("file:/tmp/x".parse(), Ok(SinkSpec::File("/tmp/x".into())));
        assert!("file:".parse::<SinkSpec>().is_err());
        assert!("tty".parse::<SinkSpec>().is_err());
    }
}
