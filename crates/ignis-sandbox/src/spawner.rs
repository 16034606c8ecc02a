//! Threads that fork instances. `Command::spawn` blocks until the child has exec'd, which in a
//! full sandbox takes milliseconds (namespaces, mounts, cgroup); doing it on an async worker
//! would stall every request scheduled there. The threads live as long as the process, which
//! also matters for the parent-death signal: it is tied to the thread that forked.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

/// A command, the runtime whose process driver will reap it, and where to answer.
type Job = (
    tokio::process::Command,
    tokio::runtime::Handle,
    oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

/// How many forks may be under way at once.
const THREADS: usize = 2;

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

fn start() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..THREADS {
        let rx = rx.clone();
        let started = std::thread::Builder::new()
            .name(format!("ignis-spawner-{i}"))
            .spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((mut cmd, handle, reply)) = job else {
                        return;
                    };
                    // The child registers with the caller's runtime, which reaps it.
                    let _guard = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start a spawner thread");
        }
    }
    tx
}

/// Spawns `cmd` on a spawner thread.
pub(crate) async fn spawn(cmd: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let tx = SPAWNER.get_or_init(start);
    let (reply, wait) = oneshot::channel();
    tx.send((cmd, tokio::runtime::Handle::current(), reply))
        .map_err(|_| std::io::Error::other("the spawner threads are gone"))?;
    wait.await
        .map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
}
