//! A value that lives on a thread of its own, driven by calls sent to that thread: for what is
//! bound to the thread that created it (a Hypervisor.framework vCPU), behind a handle any thread
//! may hold.
//!
//! The value is created on the thread, every call runs there in the order sent, and it is
//! dropped there when the [`ThreadProxy`] goes. A call that panics is an
//! [`ErrorKind::PANIC`] error naming the thread; the thread and its value live on.

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::mpsc,
    thread::{self, JoinHandle},
};

use accel_api::{AccelError, ErrorKind, Result};

/// A call sent to the thread.
type Job<T> = Box<dyn FnOnce(&mut T) + Send>;

/// The handle on a value of type `T` that lives on its own named thread.
pub struct ThreadProxy<T> {
    name: String,
    jobs: Option<mpsc::Sender<Job<T>>>,
    thread: Option<JoinHandle<()>>,
}

/// What a panic said, if it said it with a string.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "no message"
    }
}

fn panicked(name: &str, what: &str, payload: &(dyn Any + Send)) -> AccelError {
    AccelError::new(ErrorKind::PANIC, format!("{what} on thread {name} panicked: {}", panic_message(payload)))
}

/// Runs the calls sent to the thread until the handle goes; the value is dropped after.
fn serve<T>(name: &str, mut value: T, jobs: mpsc::Receiver<Job<T>>) {
    for job in jobs {
        // A call's own panic goes back to its caller; this catches those of posted calls.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(&mut value))) {
            log::error!("{}", panicked(name, "a posted call", &*payload));
        }
    }
}

impl<T: 'static> ThreadProxy<T> {
    /// Starts a thread named `name` and creates the value there with `make`. Returns once the
    /// value exists; `make`'s error (or panic) is returned, and the thread ended.
    pub fn spawn(name: impl Into<String>, make: impl FnOnce() -> Result<T> + Send + 'static) -> Result<Self> {
        let name = name.into();
        let (jobs, inbox) = mpsc::channel::<Job<T>>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let thread_name = name.clone();
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let made = catch_unwind(AssertUnwindSafe(make))
                    .unwrap_or_else(|payload| Err(panicked(&thread_name, "creating the value", &*payload)));
                match made {
                    Ok(value) => {
                        let _ = ready_tx.send(Ok(()));
                        serve(&thread_name, value, inbox);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| AccelError::from(e).context(format!("starting thread {name}")))?;
        let started = ready.recv().unwrap_or_else(|_| {
            Err(AccelError::bad_state(format!("thread {name} ended before it was ready")))
        });
        if let Err(e) = started {
            let _ = thread.join();
            return Err(e);
        }
        Ok(Self { name, jobs: Some(jobs), thread: Some(thread) })
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, job: Job<T>) -> Result<()> {
        let gone = || AccelError::bad_state(format!("thread {} is gone", self.name));
        self.jobs.as_ref().ok_or_else(gone)?.send(job).map_err(|_| gone())
    }

    /// Runs `f` on the value, on its thread, and waits for the answer. A panic in `f` is an
    /// [`ErrorKind::PANIC`] error; the thread goes on.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut T) -> R + Send + 'static) -> Result<R> {
        let (answer, answered) = mpsc::sync_channel(1);
        let name = self.name.clone();
        self.send(Box::new(move |value: &mut T| {
            let result = catch_unwind(AssertUnwindSafe(|| f(value)))
                .map_err(|payload| panicked(&name, "a call", &*payload));
            let _ = answer.send(result);
        }))?;
        answered
            .recv()
            .map_err(|_| AccelError::bad_state(format!("thread {} ended before it answered", self.name)))?
    }

    /// Sends `f` to run on the value, on its thread, without waiting. A panic in it is logged.
    pub fn post(&self, f: impl FnOnce(&mut T) + Send + 'static) -> Result<()> {
        self.send(Box::new(f))
    }
}

impl<T> Drop for ThreadProxy<T> {
    /// Ends the thread once it has run every call sent, dropping the value there, and waits for
    /// it.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("thread {} panicked while dropping its value", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        rc::Rc,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// A value that is not `Send`, as a thread-bound vCPU is not, and says where it was dropped.
    struct Bound {
        count: Rc<Cell<u32>>,
        dropped_on: Arc<Mutex<Option<String>>>,
    }

    impl Drop for Bound {
        fn drop(&mut self) {
            let here = thread::current().name().map(String::from);
            if let Ok(mut slot) = self.dropped_on.lock() {
                *slot = here;
            }
        }
    }

    fn bound(dropped_on: &Arc<Mutex<Option<String>>>) -> ThreadProxy<Bound> {
        let dropped_on = Arc::clone(dropped_on);
        ThreadProxy::spawn("proxy-test", move || Ok(Bound { count: Rc::new(Cell::new(0)), dropped_on }))
            .unwrap()
    }

    #[test]
    fn calls_run_in_order_on_the_value_s_thread() {
        let dropped_on = Arc::default();
        let proxy = bound(&dropped_on);
        assert_eq!(proxy.name(), "proxy-test");
        proxy.post(|b| b.count.set(b.count.get() + 1)).unwrap();
        proxy.post(|b| b.count.set(b.count.get() * 10)).unwrap();
        assert_eq!(proxy.call(|b| b.count.get()).unwrap(), 10);
        let thread = proxy.call(|_| thread::current().name().map(String::from)).unwrap();
        assert_eq!(thread.as_deref(), Some("proxy-test"));
    }

    #[test]
    fn a_panicking_call_is_an_error_and_the_thread_lives_on() {
        let dropped_on = Arc::default();
        let proxy = bound(&dropped_on);
        let e = proxy.call(|_| -> u32 { panic!("register 99 does not exist") }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PANIC);
        assert_eq!(e.message.as_str(), "a call on thread proxy-test panicked: register 99 does not exist");
        proxy.post(|_| panic!("posted")).unwrap();
        assert_eq!(proxy.call(|b| b.count.get() + 1).unwrap(), 1, "the value survived");
    }

    #[test]
    fn dropping_the_proxy_drops_the_value_on_its_thread() {
        let dropped_on = Arc::default();
        let proxy = bound(&dropped_on);
        proxy.post(|b| b.count.set(3)).unwrap();
        drop(proxy);
        assert_eq!(dropped_on.lock().unwrap().as_deref(), Some("proxy-test"));
    }

    #[test]
    fn a_value_that_cannot_be_made_is_the_error() {
        let made = ThreadProxy::<u32>::spawn("proxy-fails", || Err(AccelError::invalid("no such vCPU")));
        assert_eq!(made.err().map(|e| e.message.to_string()), Some("no such vCPU".into()));
        let made = ThreadProxy::<u32>::spawn("proxy-panics", || panic!("out of vCPUs"));
        let e = made.err().unwrap();
        assert_eq!(e.kind, ErrorKind::PANIC);
        assert!(e.message.contains("creating the value on thread proxy-panics panicked: out of vCPUs"));
    }

    #[test]
    fn a_call_after_the_thread_ended_is_a_clear_error() {
        let mut proxy = ThreadProxy::spawn("proxy-gone", || Ok(0u32)).unwrap();
        drop(proxy.jobs.take());
        if let Some(thread) = proxy.thread.take() {
            thread.join().unwrap();
        }
        let e = proxy.call(|v| *v).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::BAD_STATE, "thread proxy-gone is gone"));
        assert!(proxy.post(|_| ()).is_err());
    }
}
