//! Where an adapter's work runs when it does not fit a task of the actor runtime: a call
//! that blocks (an fsync in the measurement mode) runs in place while the runtime hands its
//! other tasks to another thread; a client that needs a runtime of its own (Redis, Vault)
//! gets an [`OwnedRuntime`], which tasks await and plain threads wait on.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

/// How much longer than its own bound a plain thread waits for a task's answer (a busy
/// runtime).
const GRACE: Duration = Duration::from_millis(100);

/// An adapter's tokio runtime (one worker thread), shut down without blocking when dropped
/// (dropping a runtime the usual way panics inside another runtime).
pub(crate) struct OwnedRuntime {
    pub(crate) handle: Handle,
    runtime: Option<Runtime>,
}

impl OwnedRuntime {
    /// A runtime whose thread is called `name`.
    pub(crate) fn new(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Runs `task` on this runtime and waits for its output on the calling (plain) thread;
    /// `None` if it took longer than `limit`.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        run_on(&self.handle, limit, task)
    }
}

/// [`OwnedRuntime::run`] on the runtime of `handle`.
pub(crate) fn run_on<T: Send + 'static>(
    handle: &Handle,
    limit: Duration,
    task: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (sender, receiver) = mpsc::sync_channel(1);
    handle.spawn(async move {
        if let Ok(output) = tokio::time::timeout(limit, task).await {
            let _ = sender.send(output);
        }
    });
    // The task drops the sender when it times out, which ends this wait at once.
    receiver.recv_timeout(limit + GRACE).ok()
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `work`, which blocks, from a task: through `tokio::task::block_in_place` on a
/// multi-threaded runtime, directly elsewhere (a current-thread runtime in a test, or no
/// runtime at all).
pub(crate) fn run<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Waits on the calling thread for `future`, which must not need a runtime's reactor or
/// timers: for the answer of a port whose adapter is ready at once or blocks itself (a secret
/// source) where no task can wait — at a node's start, in a plugin's host call.
pub(crate) fn wait<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
