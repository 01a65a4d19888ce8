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

/// Standard output as a terminal wants it: every write reaches the terminal at once. Rust's
/// `stdout()` holds a line until its newline, which would hide a shell's prompt (`/ # `) until
/// the user typed blind.
struct Console;

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        let n = out.write(buf)?;
        out.flush()?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
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
