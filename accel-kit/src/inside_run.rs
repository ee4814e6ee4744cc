//! Who is inside a vCPU's `run`, for a kicker to signal: what a backend records on entry under
//! its kick lock is undone by a guard, so that it goes when the run returns and also when it
//! unwinds. A kicker then never signals a thread that has left `run`, or that has ended and whose
//! id may name another thread.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A thread's stay inside `run`: made by the backend once it has recorded the thread in the
/// state under `lock`; [`Inside::leave`], or dropping it, undoes that with `forget`.
pub struct Inside<'a, T> {
    lock: &'a Mutex<T>,
    forget: fn(&mut T),
    left: bool,
}

/// The lock's state; it stays consistent even if a holder panicked (every change under it is a
/// single assignment).
fn locked<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a, T> Inside<'a, T> {
    /// A stay whose record in the state under `lock` `forget` undoes.
    pub fn new(lock: &'a Mutex<T>, forget: fn(&mut T)) -> Self {
        Self { lock, forget, left: false }
    }

    /// Leaves `run`: forgets the thread and returns the lock, still held, for what else the
    /// backend does on leaving.
    pub fn leave(mut self) -> MutexGuard<'a, T> {
        self.left = true;
        let mut state = locked(self.lock);
        (self.forget)(&mut state);
        state
    }
}

impl<T> Drop for Inside<'_, T> {
    /// A stay that ends without [`Inside::leave`] (a panic, an early return) forgets the thread
    /// too.
    fn drop(&mut self) {
        if !self.left {
            (self.forget)(&mut locked(self.lock));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kick's state: the thread inside `run`, by a stand-in id.
    struct Kick {
        thread: Option<u64>,
    }

    fn enter(lock: &Mutex<Kick>, id: u64) -> Inside<'_, Kick> {
        locked(lock).thread = Some(id);
        Inside::new(lock, |k| k.thread = None)
    }

    #[test]
    fn leaving_forgets_the_thread_and_keeps_the_lock() {
        let lock = Mutex::new(Kick { thread: None });
        let inside = enter(&lock, 7);
        assert_eq!(locked(&lock).thread, Some(7));
        let state = inside.leave();
        assert_eq!(state.thread, None);
        assert!(lock.try_lock().is_err(), "the lock is still held");
        drop(state);
        // A new stay is recorded again, and not undone by the old one.
        let _again = enter(&lock, 8);
        assert_eq!(locked(&lock).thread, Some(8));
    }

    #[test]
    fn a_run_that_unwinds_leaves_no_registered_thread() {
        let lock = Mutex::new(Kick { thread: None });
        let unwound = std::panic::catch_unwind(|| {
            let _inside = enter(&lock, 7);
            panic!("a fault between entering and leaving run");
        });
        assert!(unwound.is_err());
        assert_eq!(locked(&lock).thread, None, "a later kick would signal a thread that left run");
    }
}
