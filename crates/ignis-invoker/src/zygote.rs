//! The python zygote (SOCK): one warmed python process — bootstrap and common standard library
//! modules imported — that forks new python instances into sandboxes, so that refilling stem
//! cells during a burst costs a fork and a sandbox set-up instead of an interpreter start.
//!
//! ```text
//!  refill: sandbox.spawn_holder() ──► namespaces + root + cgroup around `sleep` (PID 1)
//!          zygote.fork(entry) ─FORK + fds─► python zygote ─fork─► helper: setns into them
//!                                                                   └─fork─► instance (drops
//!                                                     privileges, seccomp, runs the bootstrap)
//!          ◄─ {"id", "pid"} ── READY on the instance's channel: an ordinary stem cell
//! ```
//!
//! The zygote runs as root outside any sandbox and only ever runs Ignis's own code; user code
//! is imported by the bootstrap at INIT, after the instance has entered its sandbox and
//! dropped every privilege. It is the instances' subreaper: it reaps them and posts their exit
//! status, which the invoker reads from an [`ExitBoard`] (they are not the server's children).
//! Control messages are JSON over a SOCK_SEQPACKET pair; descriptors travel as SCM_RIGHTS.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use ignis_sandbox::{Entry, ExitBoard};
use tokio::sync::oneshot;

/// After this many forks that failed in a row the zygote is no longer used.
const MAX_FAILURES: u64 = 3;

type Reply = Result<i32, String>;

struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    board: Arc<ExitBoard>,
    broken: AtomicBool,
}

/// A running python zygote.
pub(crate) struct Zygote {
    sock: OwnedFd,
    shared: Arc<Shared>,
    next: AtomicU64,
    forks: AtomicU64,
    failures: AtomicU64,
    child: Mutex<std::process::Child>,
}

impl Zygote {
    /// Starts `python script boot_path` with the control socket on fd 3 and waits until it is
    /// ready (its imports done).
    pub fn start(python: &Path, script: &Path, boot_path: &Path) -> std::io::Result<Arc<Zygote>> {
        let (ours, theirs) = seqpacket_pair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = std::process::Command::new(python);
        cmd.arg("-u")
            .arg("-B")
            .arg(script)
            .arg(boot_path)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: dup2/fcntl are async-signal-safe and only touch descriptors we own.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        set_recv_timeout(&ours, Some(Duration::from_secs(20)))?;
        let first = recv(&ours)?;
        let hello: serde_json::Value = serde_json::from_slice(&first)
            .map_err(|e| std::io::Error::other(format!("zygote said {first:?}: {e}")))?;
        if hello["ready"] != true {
            return Err(std::io::Error::other(format!("zygote said {hello}")));
        }
        set_recv_timeout(&ours, None)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            board: Arc::new(ExitBoard::default()),
            broken: AtomicBool::new(false),
        });
        let reader = ours.try_clone()?;
        let for_reader = shared.clone();
        std::thread::Builder::new()
            .name("ignis-zygote".into())
            .spawn(move || read_loop(reader, for_reader))?;
        Ok(Arc::new(Zygote {
            sock: ours,
            shared,
            next: AtomicU64::new(1),
            forks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            child: Mutex::new(child),
        }))
    }

    /// Where the exit statuses of its instances are posted.
    pub fn board(&self) -> &Arc<ExitBoard> {
        &self.shared.board
    }

    /// Whether it is worth asking: alive and not failing.
    pub fn usable(&self) -> bool {
        !self.shared.broken.load(Ordering::Relaxed)
            && self.failures.load(Ordering::Relaxed) < MAX_FAILURES
    }

    /// Instances it has forked.
    pub fn forks(&self) -> u64 {
        self.forks.load(Ordering::Relaxed)
    }

    /// Notes how a fork ended (a fork whose instance never became ready counts as failed).
    pub fn record(&self, ok: bool) {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
        } else if self.failures.fetch_add(1, Ordering::Relaxed) + 1 == MAX_FAILURES {
            tracing::warn!("the python zygote failed {MAX_FAILURES} times in a row; not using it");
        }
    }

    /// Forks an instance into the sandbox `entry` describes; returns its host pid.
    pub async fn fork(&self, entry: Entry, env: &[(OsString, OsString)]) -> Reply {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let b64 = base64::engine::general_purpose::STANDARD;
        let env: serde_json::Map<String, serde_json::Value> = env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned().into(),
                )
            })
            .collect();
        let msg = serde_json::json!({
            "id": id,
            "ns_pid": entry.ns_pid,
            "namespaces": entry.namespaces,
            "drop_to": entry.drop_to,
            "seccomp": entry.seccomp.iter().map(|p| b64.encode(p)).collect::<Vec<_>>(),
            "seccomp_nr": libc::SYS_seccomp,
            "env": env,
        });
        let fds: Vec<RawFd> = entry
            .stdio
            .iter()
            .chain(&entry.cgroup_join)
            .map(|f| f.as_raw_fd())
            .collect();
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().unwrap().insert(id, tx);
        let sent = send_with_fds(&self.sock, msg.to_string().as_bytes(), &fds);
        drop(entry); // our copies of the descriptors: the zygote has its own now
        if let Err(e) = sent {
            self.shared.pending.lock().unwrap().remove(&id);
            return Err(format!("cannot reach the zygote: {e}"));
        }
        let reply = match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("the zygote ended".into()),
            Err(_) => {
                self.shared.pending.lock().unwrap().remove(&id);
                Err("the zygote did not answer in time".into())
            }
        };
        if reply.is_ok() {
            self.forks.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Reads the zygote's messages: answers to forks and exits of its instances.
fn read_loop(sock: OwnedFd, shared: Arc<Shared>) {
    while let Ok(msg) = recv(&sock) {
        if msg.is_empty() {
            break;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg) else {
            tracing::warn!("the zygote sent {:?}", String::from_utf8_lossy(&msg));
            continue;
        };
        if let (Some(pid), Some(status)) = (v["exit"].as_i64(), v["status"].as_i64()) {
            shared.board.post(pid as i32, status as i32);
            continue;
        }
        let Some(id) = v["id"].as_u64() else { continue };
        let reply = match v["pid"].as_i64() {
            Some(pid) => Ok(pid as i32),
            None => Err(v["error"].as_str().unwrap_or("unknown error").to_string()),
        };
        if let Some(tx) = shared.pending.lock().unwrap().remove(&id) {
            let _ = tx.send(reply);
        }
    }
    shared.broken.store(true, Ordering::Relaxed);
    shared.pending.lock().unwrap().clear(); // waiters see "the zygote ended"
}

fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array we own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_recv_timeout(sock: &OwnedFd, limit: Option<Duration>) -> std::io::Result<()> {
    let d = limit.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads a timeval we own, of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One message (empty at end of stream).
fn recv(sock: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into the buffer we own.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends one message with descriptors attached (SCM_RIGHTS).
fn send_with_fds(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(fd_bytes as u32) as usize,
            libc::CMSG_LEN(fd_bytes as u32) as usize,
        )
    };
    let mut control = vec![0u64; space.div_ceil(8)]; // u64s: aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below points at memory that lives
    // until sendmsg returns, and the control buffer is large enough for one cmsghdr with the
    // descriptors (CMSG_SPACE).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
