//! Writing a command's results to standard output without panicking: `println!` panics when whoever reads
//! the output has closed it (`smart-taskd list | head -1`); [`outln!`] and [`out!`] return a
//! [`StdoutError`] instead, which the CLI turns into a quiet exit 0 for a closed pipe.

/// A write to standard output that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct StdoutError(#[source] pub std::io::Error);

impl StdoutError {
    /// Whoever read the output closed it: not a failure of the command.
    pub fn closed(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// `print!` that returns a [`StdoutError`] with `?` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!($($arg)*))
            .map_err($crate::output::StdoutError)?
    };
}

/// `println!` that returns a [`StdoutError`] with `?` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!("{}\n", format_args!($($arg)*)))
            .map_err($crate::output::StdoutError)?
    };
}

pub(crate) use {out, outln};
