//! Where device output goes: stdout, nowhere, or a file (`--serial`, `--debugcon`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::control::StopReason;

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

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Stdio => write!(f, "stdout"),
            SinkSpec::None => write!(f, "none"),
            SinkSpec::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// The first failed write of guest output, for the machine to stop on: guest output must not
/// be lost without a word.
#[derive(Debug, Default)]
pub struct OutputWatch {
    failure: Mutex<Option<StopReason>>,
}

impl OutputWatch {
    /// Why the run must stop, once a watched output failed: a closed pipe stops it as SIGPIPE
    /// would ([`StopReason::Signal`], status 141), any other error with
    /// [`StopReason::OutputFailed`] (status 74).
    pub fn failure(&self) -> Option<StopReason> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, what: &str, spec: &SinkSpec, e: &std::io::Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(if e.kind() == std::io::ErrorKind::BrokenPipe {
                StopReason::Signal(libc::SIGPIPE)
            } else {
                StopReason::OutputFailed(format!("cannot write {what} output to {spec}: {e}"))
            });
        }
    }
}

/// An output whose first write or flush error is recorded in an [`OutputWatch`]; after it,
/// output is discarded (the machine is stopping).
struct Watched {
    inner: Sink,
    what: &'static str,
    spec: SinkSpec,
    watch: Arc<OutputWatch>,
    failed: bool,
}

impl Watched {
    fn check<T>(&mut self, r: std::io::Result<T>, ok: T) -> std::io::Result<T> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.watch.record(self.what, &self.spec, &e);
                self.failed = true;
                Ok(ok)
            }
            r => r,
        }
    }
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.check(r, buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.failed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.check(r, ())
    }
}

impl SinkSpec {
    /// Opens the output as [`SinkSpec::open`] does, with its errors recorded in `watch` under
    /// the name `what` ("serial").
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn open_watched(
        &self,
        what: &'static str,
        watch: &Arc<OutputWatch>,
    ) -> std::io::Result<Sink> {
        Ok(Box::new(Watched {
            inner: self.open()?,
            what,
            spec: self.clone(),
            watch: watch.clone(),
            failed: false,
        }))
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

    #[test]
    fn a_failed_write_is_recorded_once_and_output_then_discarded() {
        let watch = Arc::new(OutputWatch::default());
        let full = SinkSpec::File("/dev/full".into());
        let mut out = full.open_watched("serial", &watch).unwrap();
        assert!(watch.failure().is_none());
        out.write_all(b"hello\n").unwrap();
        out.flush().unwrap();
        let Some(StopReason::OutputFailed(m)) = watch.failure() else {
            panic!("{:?}", watch.failure());
        };
        assert!(m.contains("serial output to file:/dev/full"), "{m}");
        out.write_all(b"more").unwrap();
    }
}
