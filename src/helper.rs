// SPDX-License-Identifier: MIT OR Apache-2.0
//! A second core for the streaming thread's own pixel work: one persistent thread that runs a borrowed job while
//! the caller runs another, like `std::thread::scope` with two closures but without spawning (and allocating) a
//! thread per frame. The detector letterbox uses it: while it runs, ONNX Runtime's pool threads sleep, so the
//! second core would otherwise idle.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// A borrowed job whose lifetime [`HelperThread::join`] erases and then guarantees: it waits for the helper to
/// finish with the job before returning or unwinding.
struct Job(*mut (dyn FnMut() + Send + 'static));

// SAFETY: the pointee is `Send`; `join` keeps it alive and touches it only after the helper has reported `Done`.
unsafe impl Send for Job {}

enum Slot {
    Idle,
    Posted(Job),
    Running,
    /// The job finished; with the panic's payload when it panicked.
    Done(Option<Box<dyn Any + Send>>),
    Quit,
}

struct Shared {
    slot: Mutex<Slot>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // No code runs user callbacks under this lock, so a poisoned lock still holds a consistent slot.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One helper thread; dropping it stops and joins the thread.
pub struct HelperThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HelperThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperThread").finish_non_exhaustive()
    }
}

/// Waits for the posted job on drop, so the job's borrows outlive its use even when the caller's half panics.
struct Wait<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Wait<'_> {
    /// Blocks until the helper is done and returns the job's panic payload, if it panicked.
    fn finish(&mut self) -> Option<Box<dyn Any + Send>> {
        if self.done {
            return None;
        }
        let mut s = self.shared.lock();
        loop {
            match &*s {
                Slot::Done(_) => {
                    self.done = true;
                    let Slot::Done(panic) = std::mem::replace(&mut *s, Slot::Idle) else { unreachable!() };
                    return panic;
                }
                Slot::Posted(_) | Slot::Running => s = self.shared.cv.wait(s).unwrap_or_else(PoisonError::into_inner),
                // Not reachable after a post: only `finish` takes `Done` back to `Idle`.
                Slot::Idle | Slot::Quit => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HelperThread {
    /// Starts the thread; `None` when the system refuses a new thread (callers then do all the work themselves).
    pub fn start(name: &str) -> Option<Self> {
        let shared = Arc::new(Shared { slot: Mutex::new(Slot::Idle), cv: Condvar::new() });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || serve(&s)).ok()?;
        Some(Self { shared, thread: Some(thread) })
    }

    /// Runs `theirs` on the helper thread and `mine` on this one, and returns when both are done. A panic in
    /// either half is raised here after both have finished.
    pub fn join<R>(&mut self, mine: impl FnOnce() -> R, theirs: &mut (dyn FnMut() + Send)) -> R {
        let ptr: *mut (dyn FnMut() + Send + '_) = theirs;
        // SAFETY: only the trait object's lifetime bound changes (same layout). `Wait` below blocks until the helper
        // reports `Done` before this function returns or unwinds, so the job is never used after its borrow ends,
        // and `&mut self` rules out a second job in flight.
        let job = Job(unsafe {
            std::mem::transmute::<*mut (dyn FnMut() + Send + '_), *mut (dyn FnMut() + Send + 'static)>(ptr)
        });
        {
            let mut s = self.shared.lock();
            debug_assert!(matches!(*s, Slot::Idle), "one job at a time");
            *s = Slot::Posted(job);
        }
        self.shared.cv.notify_all();
        let mut wait = Wait { shared: &self.shared, done: false };
        let r = mine();
        if let Some(panic) = wait.finish() {
            resume_unwind(panic);
        }
        r
    }
}

fn serve(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        match &*s {
            Slot::Posted(_) => {
                let Slot::Posted(job) = std::mem::replace(&mut *s, Slot::Running) else { unreachable!() };
                drop(s);
                // SAFETY: `join` keeps the closure alive and unaliased until it sees `Done` (see `Job`).
                let panic = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() })).err();
                s = shared.lock();
                *s = Slot::Done(panic);
                shared.cv.notify_all();
            }
            Slot::Quit => return,
            Slot::Idle | Slot::Running | Slot::Done(_) => s = shared.cv.wait(s).unwrap_or_else(PoisonError::into_inner),
        }
    }
}

impl Drop for HelperThread {
    fn drop(&mut self) {
        *self.shared.lock() = Slot::Quit;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_run_and_see_their_borrows() {
        let mut h = HelperThread::start("test-helper").expect("thread");
        let mut data = vec![0u32; 1000];
        for round in 1..=50u32 {
            let (a, b) = data.split_at_mut(500);
            let mut theirs = || b.iter_mut().for_each(|v| *v += round);
            let n = h.join(
                || {
                    a.iter_mut().for_each(|v| *v += round);
                    a.len()
                },
                &mut theirs,
            );
            assert_eq!(n, 500);
        }
        assert!(data.iter().all(|&v| v == (1..=50).sum::<u32>()));
    }

    #[test]
    fn a_panic_in_the_helper_reaches_the_caller_and_the_helper_keeps_working() {
        let mut h = HelperThread::start("test-helper").expect("thread");
        let r = catch_unwind(AssertUnwindSafe(|| h.join(|| 1, &mut || panic!("boom"))));
        let payload = r.expect_err("the helper's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"), "with its own message");
        let mut x = 0;
        assert_eq!(h.join(|| 2, &mut || x = 7), 2);
        assert_eq!(x, 7);
    }

    #[test]
    fn a_panic_in_the_callers_half_waits_for_the_helper() {
        let mut h = HelperThread::start("test-helper").expect("thread");
        let done = std::sync::atomic::AtomicBool::new(false);
        let r = catch_unwind(AssertUnwindSafe(|| {
            h.join(|| -> () { panic!("mine") }, &mut || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        }));
        assert!(r.is_err());
        // The unwinding caller waited for the helper's half before its borrows ended.
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
