//! The time a store write stamps on what it creates.
//!
//! A replica of the cluster store applies the same log on every node; what it stamps must be the
//! same everywhere, so the applier sets the time the log entry carries for the duration of one
//! apply ([`with_clock`]).

use std::cell::Cell;

thread_local! {
    static FIXED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `f` with [`now_ms`] answering `ms` on this thread.
pub fn with_clock<T>(ms: u64, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<u64>);
    impl Drop for Reset {
        fn drop(&mut self) {
            FIXED.set(self.0);
        }
    }
    let _reset = Reset(FIXED.replace(Some(ms)));
    f()
}

/// Milliseconds since the epoch, or the time [`with_clock`] fixed.
pub(crate) fn now_ms() -> u64 {
    FIXED.get().unwrap_or_else(ignis_core::now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_holds_only_inside() {
        assert_eq!(with_clock(42, now_ms), 42);
        assert_eq!(with_clock(1, || with_clock(2, now_ms)), 2);
        assert!(now_ms() > 42);
    }
}
