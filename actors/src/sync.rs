//! The one way the node takes its locks: a lock whose holder panicked is taken anyway
//! (every structure behind one is left consistent between statements, and a panic is
//! already reported by the supervision tree or the task that caught it), so no caller
//! repeats the `PoisonError` dance.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

/// Taking a [`Mutex`] whatever a panicked holder left.
pub trait Locked<T> {
    /// The guard.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Taking an [`RwLock`] whatever a panicked holder left.
pub trait RwLocked<T> {
    /// A read guard.
    fn reading(&self) -> RwLockReadGuard<'_, T>;
    /// The write guard.
    fn writing(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwLocked<T> for RwLock<T> {
    fn reading(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn writing(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waiting on a [`Condvar`] whatever a panicked holder left.
pub trait Waits {
    /// Waits for a notification.
    fn waiting<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
    /// Waits for a notification or `timeout`, whichever comes first.
    fn waiting_for<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T>;
}

impl Waits for Condvar {
    fn waiting<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    fn waiting_for<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
        match self.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}
