//! Standard output for results: a reader that went away (`piazza ... | head`) ends the program
//! quietly with success, as it does for the classic Unix tools, instead of a panic.

use std::io::Write;

/// Writes one line (see `outln!`).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{args}").and_then(|()| stdout.flush());
    if let Err(error) = written {
        closed(error);
    }
}

/// Writes text without a newline and flushes it (streamed output).
pub fn text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        closed(error);
    }
}

/// Standard output failed: a closed pipe exits 0 silently, anything else exits 1 with one line.
fn closed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to standard output: {error}");
    std::process::exit(1);
}
