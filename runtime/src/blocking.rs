//! Where an adapter whose client blocks (a blocking HTTP client, an fsync) runs that client
//! from a port's asynchronous method: the actor runtime's thread hands its other tasks to
//! another thread for the time of the call, so no execution waits behind it.

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
