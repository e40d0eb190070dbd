//! The last word of Strata's crash policy: a panic is an invariant broken, and the process
//! ends (`panic = "abort"` in the workspace's profiles) rather than running on with whatever a
//! half-finished operation left. Recovery on restart is what makes this safe: acknowledged
//! records, metadata and coordinator state are all recovered from disk.
//!
//! The hook writes the panic through `tracing::error!`, so that it is in the broker's log in
//! the log's format next to what led up to it, then hands over to Rust's default hook (the
//! `thread '...' panicked at` line on stderr, and a backtrace under `RUST_BACKTRACE=1`), after
//! which the process aborts: the operator sees this line and an exit by SIGABRT (status 134
//! from a shell).

use std::panic::PanicHookInfo;

/// The `target` of the log line, to search or filter for (`RUST_LOG=strata::panic=error`).
pub const TARGET: &str = "strata::panic";

/// Installs the hook; call once, first thing in `main` after the log is set up.
pub fn install() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log(info);
        default_hook(info);
    }));
}

/// Logs one panic: its message, where it happened and on which thread.
fn log(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let (message, location) = describe(info);
    tracing::error!(
        target: TARGET,
        thread = thread.name().unwrap_or("<unnamed>"),
        location = %location,
        "panic, aborting (an invariant is broken; state is recovered from disk on restart): {message}"
    );
}

/// The panic's message (a `panic!` with a format string or a plain `&str`; anything else,
/// e.g. `std::panic::panic_any` with another type, has none to show) and `file:line:column`.
fn describe<'a>(info: &'a PanicHookInfo<'_>) -> (&'a str, String) {
    let message = info
        .payload_as_str()
        .unwrap_or("(a panic payload that is not a string)");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "unknown location".to_string());
    (message, location)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Tests unwind (cargo ignores `panic = "abort"` for the test harness), so a panic can be
    /// caught here and the hook's log line read back.
    #[test]
    fn a_panic_is_logged_with_its_message_and_location_before_the_default_hook() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let previous = std::panic::take_hook();
        super::install();
        let result = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| panic!("offset went back at line {}", line!()))
        });
        // Put back the harness's hook before asserting, so a failure below reports normally.
        drop(std::panic::take_hook());
        std::panic::set_hook(previous);
        let payload = result.expect_err("the closure panics");
        // `line!()` is a literal, so the message may be folded into a `&'static str`.
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .expect("a panic message");
        let line = message.rsplit(' ').next().unwrap();
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("ERROR"), "{logged}");
        assert!(logged.contains(super::TARGET), "{logged}");
        assert!(logged.contains(message), "{logged}");
        assert!(
            logged.contains(&format!("crates/strata/src/panic_hook.rs:{line}:")),
            "{logged}"
        );
        assert!(logged.contains("thread="), "{logged}");
    }
}
