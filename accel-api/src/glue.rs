//! The plugin side of the boundary: the panic guard every call into a backend runs under, and the
//! holder the interfaces' adapters are implemented on. Used by [`crate::export_plugin!`] and the
//! interface declarations; not an API.

use std::{
    cell::Cell,
    ops::{Deref, DerefMut},
    panic::{catch_unwind, AssertUnwindSafe},
};

use abi_stable::std_types::{RErr, RResult};

use crate::{
    abi::records::ProbeRecord,
    config::ProbeInfo,
    error::{AccelError, ErrorKind, Result},
};

thread_local! {
    /// Where the last panic on this thread happened, for the error the guard makes of it.
    static PANIC_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Replaces the plugin's panic hook (a cdylib has its own copy of std, so this is the plugin's
/// alone): a panic is logged at debug level, and its location is kept for the error that the
/// boundary returns, instead of being printed on stderr.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        log::debug!("panic at {}: {}", at.as_deref().unwrap_or("?"), panic_message(info.payload()));
        let leaked: Option<&'static str> = at.map(|s| &*Box::leak(s.into_boxed_str()));
        PANIC_AT.with(|p| p.set(leaked));
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

fn panic_error(op: &str, payload: &(dyn std::any::Any + Send)) -> AccelError {
    let at = PANIC_AT.with(|p| p.take()).map(|a| format!(" at {a}")).unwrap_or_default();
    AccelError::new(ErrorKind::PANIC, format!("{op}: the plugin panicked{at}: {}", panic_message(payload)))
}

/// Runs `f`, turning a panic into an [`ErrorKind::PANIC`] error that names `op`.
pub fn guard<T>(op: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, AccelError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RErr(panic_error(op, payload.as_ref())),
    }
}

/// Runs `f` whose answer cannot fail; if it panics, the answer is `fallback` of the error that
/// names `op`.
pub fn guard_or<T>(op: &str, f: impl FnOnce() -> T, fallback: impl FnOnce(AccelError) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => {
            let error = panic_error(op, payload.as_ref());
            log::debug!("{error}");
            fallback(error)
        }
    }
}

/// Runs a probe function, turning a panic into an "unavailable" answer.
pub fn guarded_probe(probe: fn() -> ProbeInfo) -> ProbeRecord {
    let info = catch_unwind(probe).unwrap_or_else(|payload| {
        ProbeInfo::unavailable(panic_error("probe", payload.as_ref()).message.to_string())
    });
    ProbeRecord::from(&info)
}

/// The probe of a plugin that cannot run here, logged under the plugin's own module path.
pub fn unavailable(plugin: &str, reason: String) -> ProbeInfo {
    log::debug!(target: plugin, "probe: {reason}");
    ProbeInfo::unavailable(reason)
}

/// A backend object (or a holder of one) behind the ABI: the interfaces' adapters implement the
/// ABI traits on it, with every call guarded.
pub struct Guarded<H>(pub H);

/// A backend's own value, held by [`Guarded`] as a pointer would be.
pub struct Own<T>(pub T);

impl<T> Deref for Own<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Own<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_an_error() {
        let r: RResult<u32, AccelError> = guard("run", || panic!("boom {}", 7));
        let e = r.into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::PANIC);
        assert!(e.message.starts_with("run: the plugin panicked"), "{e}");
        assert!(e.message.ends_with(": boom 7"), "{e}");
    }

    #[test]
    fn guard_passes_results_through() {
        assert_eq!(guard("x", || Ok(5)).into_result(), Ok(5));
        let e = AccelError::invalid("no");
        assert_eq!(guard::<()>("x", || Err(e.clone())).into_result(), Err(e));
    }

    #[test]
    fn a_panicking_probe_reads_as_unavailable() {
        fn bad() -> ProbeInfo {
            panic!("no device")
        }
        let info = ProbeInfo::from(&guarded_probe(bad));
        assert!(!info.available);
        assert!(info.reason.contains("no device"));
    }
}
