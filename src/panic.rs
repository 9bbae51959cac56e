//! Panics contained inside the library stay silent.
//!
//! The runtime turns a panic it catches (tract on a malformed graph, a bug behind the C
//! boundary) into an [`Error`](crate::Error). The process's panic hook would still print
//! the message (and a backtrace with `RUST_BACKTRACE=1`) to stderr first, and a library
//! must not write to stderr. So the first [`catch`] installs, once per process, a hook
//! that stays silent while the panicking thread is inside a [`catch`] and calls the hook
//! it replaced otherwise: panics elsewhere in the host print exactly as before. (A host
//! that installs its own hook later replaces ours; its hook then decides.)

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch`] scopes this thread is inside.
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

fn install_quiet_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = QUIET.try_with(|q| q.get() > 0).unwrap_or(false);
            if !quiet {
                previous(info);
            }
        }));
    });
}

/// Run `f`; a panic inside it comes back as `Err(its message)`, printed nowhere.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_quiet_hook();
    QUIET.with(|q| q.set(q.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get() - 1));
    r.map_err(message)
}

fn message(p: Box<dyn Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// In a child process (it owns the process-wide hook): a panic inside `catch` prints
    /// nothing, even with RUST_BACKTRACE=1; a panic outside still reaches the hook that
    /// was there before.
    #[test]
    fn caught_panics_print_nothing_and_others_still_do() {
        if std::env::var("PROMISE_PANIC_CHILD").is_ok() {
            let r = super::catch(|| -> u32 { panic!("inside-catch-7431") });
            assert_eq!(r.unwrap_err(), "inside-catch-7431");
            let outside = std::thread::spawn(|| panic!("outside-catch-7431")).join();
            assert!(outside.is_err());
            return;
        }
        if std::env::var_os("PROMISE_EMULATED").is_some() {
            // .ci/arm.sh runs this binary under qemu-user without binfmt_misc: the child
            // process this test needs cannot start there (the host run covers it)
            println!("skipped: a child process cannot start under user-mode emulation");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic::tests::caught_panics_print_nothing_and_others_still_do",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PROMISE_PANIC_CHILD", "1")
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            !err.contains("inside-catch-7431"),
            "a contained panic printed: {err}"
        );
        assert!(
            err.contains("outside-catch-7431"),
            "the previous hook was lost: {err}"
        );
    }
}
