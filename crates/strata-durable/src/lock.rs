//! Taking a `std::sync` lock under Strata's crash policy: a poisoned lock is never recovered.
//!
//! A lock is poisoned when a thread panicked while holding it, so what it guards may be
//! half-updated. The broker is built with `panic = "abort"`: the panic that poisons a lock has
//! already ended the process, and recovery on restart (logs, metadata, coordinators rebuilt
//! from disk) restores a known state. So poison can only be seen where panics unwind — in
//! tests — and there it must fail loudly too, never hand out the half-updated value.
//!
//! This lives in `strata-durable` because it is the one leaf crate every crate that takes
//! such locks (`strata-meta`, `strata-log`, `strata-tier`, `strata-quorum`, `strata-server`)
//! can depend on; it knows nothing of what the locks guard.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What every poisoned-lock panic says, so that a log search finds them all.
pub const POISONED: &str =
    "lock poisoned by an earlier panic; the state it guards may be half-updated";

/// `Mutex::lock` that panics on a poisoned lock (see the module docs). `#[track_caller]`
/// makes the panic name the call site, not this module.
pub trait LockExt<T: ?Sized> {
    /// Locks, panicking if an earlier panic poisoned the lock.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    #[track_caller]
    fn locked(&self) -> MutexGuard<'_, T> {
        match self.lock() {
            Ok(guard) => guard,
            Err(_) => panic!("{POISONED}"),
        }
    }
}

/// [`LockExt`] for the two sides of a `RwLock`.
pub trait RwLockExt<T: ?Sized> {
    /// Read-locks, panicking if an earlier panic poisoned the lock.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// Write-locks, panicking if an earlier panic poisoned the lock.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    #[track_caller]
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        match self.read() {
            Ok(guard) => guard,
            Err(_) => panic!("{POISONED}"),
        }
    }

    #[track_caller]
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        match self.write() {
            Ok(guard) => guard,
            Err(_) => panic!("{POISONED}"),
        }
    }
}

/// `Mutex::into_inner` under the same policy, for a lock being taken apart.
#[track_caller]
pub fn mutex_into_inner<T>(mutex: Mutex<T>) -> T {
    match mutex.into_inner() {
        Ok(value) => value,
        Err(_) => panic!("{POISONED}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Poisons `lock` the way a failed assertion would: a panic while the guard is held.
    fn poison<L: Sync>(lock: &L, hold: impl Fn(&L) + Sync) {
        std::thread::scope(|s| {
            let _ = s.spawn(|| hold(lock)).join();
        });
    }

    fn panic_message(result: std::thread::Result<()>) -> String {
        let payload = result.expect_err("a poisoned lock must panic");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn healthy_locks_lock() {
        let m = Mutex::new(1);
        *m.locked() += 1;
        assert_eq!(*m.locked(), 2);
        let rw = RwLock::new(1);
        *rw.write_locked() += 1;
        assert_eq!(*rw.read_locked(), 2);
        assert_eq!(mutex_into_inner(m), 2);
    }

    #[test]
    fn a_poisoned_mutex_panics_instead_of_handing_out_its_value() {
        let m = Mutex::new(0);
        poison(&m, |m| {
            let _guard = m.locked();
            panic!("invariant broken mid-update");
        });
        assert!(m.is_poisoned());
        let message = panic_message(catch_unwind(AssertUnwindSafe(|| {
            drop(m.locked());
        })));
        assert!(message.contains(POISONED), "{message}");
        let message = panic_message(catch_unwind(AssertUnwindSafe(|| {
            let _ = mutex_into_inner(m);
        })));
        assert!(message.contains(POISONED), "{message}");
    }

    #[test]
    fn a_poisoned_rwlock_panics_on_both_sides() {
        let rw = RwLock::new(0);
        poison(&rw, |rw| {
            let _guard = rw.write_locked();
            panic!("invariant broken mid-update");
        });
        for result in [
            catch_unwind(AssertUnwindSafe(|| drop(rw.read_locked()))),
            catch_unwind(AssertUnwindSafe(|| drop(rw.write_locked()))),
        ] {
            let message = panic_message(result);
            assert!(message.contains(POISONED), "{message}");
        }
    }
}
