//! Panics inside generation (prost-build assumes valid input; any bug of ours) become errors,
//! without the panic hook's message on standard error first.
//!
//! A build script that uses rmicro-build runs in the user's build, where a `thread 'main'
//! panicked at …` block before rmicro's own error only confuses. The hook installed here stays
//! silent for panics on a thread that is inside [`catch`] and hands every other panic to the hook
//! that was there before, so panics elsewhere in the process still show.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside [`catch`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, returning the message of a panic inside it as an error; that panic prints nothing.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CATCHING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_values_pass_through() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> () { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
        assert_eq!(catch(|| -> () { panic!("static") }), Err("static".into()));
        // Nested: the inner catch restores the outer state.
        assert_eq!(
            catch(|| catch(|| -> () { panic!("in") })),
            Ok(Err("in".into()))
        );
        assert!(!CATCHING.with(Cell::get));
    }
}
