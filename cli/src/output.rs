//! Writing to stdout without panicking when the reader goes away (`squall describe wc | head`):
//! `println!` panics on a closed pipe, [`out!`] returns the error, and `main` treats a broken
//! pipe as a clean exit.

use std::io::Write;

/// Writes one line to stdout, like `println!`, returning from the enclosing function (which must
/// return `anyhow::Result`) with the error if stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// Writes `args` and a newline to stdout.
pub(crate) fn line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args)?;
    stdout.write_all(b"\n")
}

/// Whether `error` comes from writing to a pipe whose reader has exited.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let error = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing");
        assert!(is_broken_pipe(&error));
        assert!(!is_broken_pipe(&anyhow::anyhow!("cannot reach Nimbus")));
    }
}
