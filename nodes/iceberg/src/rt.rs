//! The runtime Iceberg work runs on.
//!
//! The `iceberg` crate does its local file I/O with blocking calls inside
//! async functions, and its SQL catalog's pool needs a tokio context: all
//! of it runs on a small runtime of its own, never on a stage's worker.
//! A stage's node waits for it on a plain channel (from its checkpoint,
//! which runs where blocking is allowed).

use std::future::Future;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rill-iceberg")
            .enable_all()
            .build()
            .expect("a runtime for Iceberg")
    })
}

/// Runs `fut` on the Iceberg runtime and waits for it.
pub(crate) fn block<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the Iceberg task ran to its end")
}

/// Spawns `fut` on the Iceberg runtime.
pub(crate) fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    runtime().spawn(fut);
}
