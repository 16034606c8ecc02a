//! Launches function instances as isolated process trees. Only this crate calls `unshare`,
//! `mount`, `pivot_root`, `setrlimit`, `prctl`, `seccomp` and `kill`.
//!
//! Each instance gets, where the host allows it: new PID, mount, IPC and UTS namespaces; a
//! network namespace with only loopback (unless the function asks for the host's network); a
//! root filesystem of read-only runtime files plus its code at `/code` and a private bounded
//! `/tmp` ([`rootfs`]); a cgroup with its memory limit, a pids limit and a CPU share
//! ([`cgroup`]); an unprivileged uid with every capability dropped; `no_new_privs`; and a
//! seccomp filter ([`seccomp`]). Whatever the host allows, an instance is its own session and
//! process group (killed as a whole) and dies with the server.
//!
//! At start the sandbox probes the host by starting a real sandboxed process, and reports in
//! [`Protections`] exactly what is on; `ignis serve` prints it.
#![warn(missing_docs)]

pub mod cgroup;
mod child;
pub mod rootfs;
pub mod seccomp;
mod spawner;

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::net::unix::pipe;

use cgroup::{Cgroups, InstanceCgroup};
use child::{ChildPlan, NsPlan, UserNsPlan};
use rootfs::BaseRoot;

/// File descriptor number at which an instance finds its protocol channel.
pub const CHANNEL_FD: RawFd = 3;

/// Which protections instances run under on this host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Protections {
    /// Own session and process group; the whole group is killed when the instance ends.
    pub process_group: bool,
    /// The instance is killed if the server dies.
    pub die_with_server: bool,
    /// `no_new_privs`: setuid binaries cannot raise privileges.
    pub no_new_privs: bool,
    /// rlimits: open files, core dumps, data size.
    pub rlimits: bool,
    /// PID, mount, IPC and UTS namespaces.
    pub namespaces: bool,
    /// A network namespace with only loopback for `network: none` functions.
    pub network_isolation: bool,
    /// A private root: read-only runtime files, the code at /code, a bounded /tmp.
    pub filesystem_isolation: bool,
    /// cgroup version used for memory, pids and CPU limits, if any.
    pub cgroups: Option<cgroup::Version>,
    /// seccomp syscall filter.
    pub seccomp: bool,
    /// Runs without privileges on the host: as an unprivileged uid, or as root of a user
    /// namespace mapped to the (unprivileged) server user.
    pub unprivileged_user: bool,
    /// Whether a user namespace is used (hosts where the server is not root).
    pub user_namespace: bool,
}

impl Protections {
    /// Lines saying what is on and off, for the start banner.
    pub fn describe(&self) -> Vec<(String, bool)> {
        vec![
            (
                "process group, killed as a whole".into(),
                self.process_group,
            ),
            ("dies with the server".into(), self.die_with_server),
            ("no_new_privs".into(), self.no_new_privs),
            ("rlimits (files, core dumps)".into(), self.rlimits),
            ("pid/mount/ipc/uts namespaces".into(), self.namespaces),
            (
                "network namespace (loopback only)".into(),
                self.network_isolation,
            ),
            (
                "private root filesystem, read-only, bounded /tmp".into(),
                self.filesystem_isolation,
            ),
            (
                match self.cgroups {
                    Some(cgroup::Version::V1) => "cgroup v1 limits (memory, pids, cpu)".into(),
                    Some(cgroup::Version::V2) => "cgroup v2 limits (memory, pids, cpu)".into(),
                    None => "cgroup limits (memory, pids, cpu)".into(),
                },
                self.cgroups.is_some(),
            ),
            ("seccomp filter".into(), self.seccomp),
            (
                if self.user_namespace {
                    "unprivileged (user namespace)".into()
                } else {
                    "unprivileged uid, no capabilities".into()
                },
                self.unprivileged_user,
            ),
        ]
    }

    /// Whether every isolation layer is on.
    pub fn complete(&self) -> bool {
        self.namespaces
            && self.network_isolation
            && self.filesystem_isolation
            && self.cgroups.is_some()
            && self.seccomp
            && self.unprivileged_user
    }

    /// Names of the layers that are off.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.namespaces {
            m.push("namespaces");
        }
        if !self.network_isolation {
            m.push("network isolation");
        }
        if !self.filesystem_isolation {
            m.push("filesystem isolation");
        }
        if self.cgroups.is_none() {
            m.push("cgroups");
        }
        if !self.seccomp {
            m.push("seccomp");
        }
        if !self.unprivileged_user {
            m.push("unprivileged user");
        }
        m
    }
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A pipe, socket, cgroup or the process itself could not be created.
    #[error("cannot start instance: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Use every isolation layer the host allows (`false`: only process-group containment).
    pub isolation: bool,
    /// An empty directory used as the mount point of instances' roots.
    pub root_dir: PathBuf,
    /// Host paths shown read-only inside (runtime files: /usr, interpreters' prefixes…).
    pub runtime_paths: Vec<PathBuf>,
    /// uid and gid instances run as when the server is root.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Most processes and threads in one instance.
    pub pids_max: u32,
    /// Where cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// Name of the parent cgroup of all instances.
    pub cgroup_parent: String,
}

impl SandboxConfig {
    /// Defaults with the given mount-point directory.
    pub fn new(root_dir: PathBuf) -> Self {
        SandboxConfig {
            isolation: true,
            root_dir,
            runtime_paths: rootfs::default_runtime_paths(),
            uid: 65534,
            gid: 65534,
            pids_max: 256,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "ignis".into(),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The executable, as a path valid inside the sandbox (see [`Sandbox::code_path`]).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its whole environment (nothing is inherited from the server).
    pub env: Vec<(OsString, OsString)>,
    /// Host directory with the function's code (shown at /code when isolated; the cwd).
    pub code_dir: PathBuf,
    /// Host directory with the runtime bootstraps (shown at /ignis when isolated).
    pub runtime_dir: Option<PathBuf>,
    /// Memory limit in MiB (cgroup).
    pub memory_mb: u32,
    /// Size of /tmp in MiB.
    pub tmp_mb: u32,
    /// Use the host's network instead of an isolated one.
    pub host_network: bool,
    /// Limit of the data segment (heap) in bytes, where the runtime tolerates one.
    pub data_limit_bytes: Option<u64>,
    /// Whether to give the instance a protocol channel at fd 3.
    pub channel: bool,
    /// Whether to give the instance a stdin pipe (else /dev/null).
    pub stdin: bool,
    /// Start with the smallest CPU share (stem cells warming up); see
    /// [`SandboxedProcess::set_memory_limit`].
    pub background: bool,
    /// TCP ports on which the instance finds listeners at 127.0.0.1 inside its own network
    /// namespace, accepted on by the server ([`SandboxedProcess::listeners`], in this order):
    /// how a server serves an instance with no network. Requires [`Sandbox::own_network`]
    /// when not empty. Without [`ProcessSpec::channel`] they go over the channel's socketpair
    /// (no fd 3); with it, the channel is fd 3 as usual.
    pub loopback_listeners: Vec<u16>,
}

/// A started instance process.
#[derive(Debug)]
pub struct SandboxedProcess {
    /// The process.
    pub child: tokio::process::Child,
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// Invoker's end of the protocol channel, if asked for.
    pub channel: Option<tokio::net::UnixStream>,
    /// Pipe to its stdin, if asked for.
    pub stdin: Option<tokio::process::ChildStdin>,
    /// Its stdout.
    pub stdout: pipe::Receiver,
    /// Its stderr.
    pub stderr: pipe::Receiver,
    /// For a holder that a zygote's fork entered: that process, whose exit is learnt from the
    /// zygote (it is not our child). `child` is then the holder.
    pub entered: Option<Entered>,
    /// The listeners of [`ProcessSpec::loopback_listeners`], in that order, bound inside the
    /// instance's network namespace.
    pub listeners: Vec<std::net::TcpListener>,
    cgroup: Option<InstanceCgroup>,
}

/// A process that entered a holder's sandbox (see [`Sandbox::spawn_holder`]).
#[derive(Debug)]
pub struct Entered {
    /// Its pid on the host.
    pub pid: i32,
    /// Where its exit status is posted.
    pub board: Arc<ExitBoard>,
}

/// Exit statuses of processes that are not the server's children, posted by whoever reaps
/// them (the zygote), by host pid.
#[derive(Debug, Default)]
pub struct ExitBoard {
    exits: std::sync::Mutex<std::collections::HashMap<i32, i32>>,
    posted: tokio::sync::Notify,
}

impl ExitBoard {
    /// Posts the raw wait status of `pid`.
    pub fn post(&self, pid: i32, raw_status: i32) {
        self.exits.lock().unwrap().insert(pid, raw_status);
        self.posted.notify_waiters();
    }

    /// The exit status of `pid`, if posted.
    pub fn get(&self, pid: i32) -> Option<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let raw = *self.exits.lock().unwrap().get(&pid)?;
        Some(std::process::ExitStatus::from_raw(raw))
    }

    /// Forgets `pid` (its process handle is gone).
    pub fn forget(&self, pid: i32) {
        self.exits.lock().unwrap().remove(&pid);
    }

    /// Waits until `pid`'s status is posted.
    async fn wait(&self, pid: i32) -> std::process::ExitStatus {
        loop {
            let posted = self.posted.notified();
            if let Some(s) = self.get(pid) {
                return s;
            }
            posted.await;
        }
    }
}

/// What a process from outside needs to enter a holder's sandbox: the namespaces of `ns_pid`,
/// the holder's cgroup, the instance's descriptors, and the steps the sandbox applies before
/// `exec` (rlimits, an unprivileged uid, no_new_privs, the seccomp filters).
#[derive(Debug)]
pub struct Entry {
    /// Host pid of the process whose namespaces to join (the holder inside them).
    pub ns_pid: i32,
    /// Namespaces to join, by their /proc/PID/ns names, in order.
    pub namespaces: Vec<&'static str>,
    /// The instance's end of its channel, stdout and stderr, to become fds 3, 1 and 2.
    pub stdio: [OwnedFd; 3],
    /// `cgroup.procs` files of the holder's cgroup, to write `0` into.
    pub cgroup_join: Vec<OwnedFd>,
    /// uid and gid to switch to.
    pub drop_to: Option<(u32, u32)>,
    /// The seccomp filters, as raw `sock_filter` arrays, in installation order.
    pub seccomp: Vec<Vec<u8>>,
}

impl SandboxedProcess {
    /// Kills the whole process group at once.
    pub fn kill(&self) {
        // SAFETY: killpg has no memory-safety preconditions; pid > 0 is our own child's group.
        if self.pid > 0 {
            unsafe {
                libc::killpg(self.pid, libc::SIGKILL);
            }
        }
    }

    /// Changes its memory limit (for a stem cell given to a function). Fails without cgroups.
    pub fn set_memory_limit(&self, memory_mb: u32) -> std::io::Result<()> {
        match &self.cgroup {
            Some(c) => c.set_memory(memory_mb),
            None => Err(std::io::Error::other("no cgroup to limit")),
        }
    }

    /// Whether the kernel killed it for exceeding its memory limit.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_killed())
    }

    /// Its exit status if it has ended (for an entered holder: the entered process's).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        match &self.entered {
            Some(e) => e.board.get(e.pid),
            None => self.child.try_wait().ok().flatten(),
        }
    }

    /// Waits up to `limit` for it to end (to report how); `None` if it did not.
    pub async fn wait_exit(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        match &self.entered {
            Some(e) => tokio::time::timeout(limit, e.board.wait(e.pid)).await.ok(),
            None => tokio::time::timeout(limit, self.child.wait())
                .await
                .ok()
                .and_then(Result::ok),
        }
    }
}

impl Drop for SandboxedProcess {
    fn drop(&mut self) {
        // An instance never outlives its handle. tokio reaps the zombie; the cgroup cleaner
        // removes the cgroup once it is empty. Killing a holder ends its PID namespace, and
        // with it the process that entered it.
        self.kill();
        if let Some(e) = &self.entered {
            e.board.forget(e.pid);
        }
    }
}

/// Starts instances with the protections this host allows.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    config: SandboxConfig,
    protections: Protections,
    base_root: Option<BaseRoot>,
    cgroups: Option<Cgroups>,
    seccomp: Option<Arc<seccomp::Filters>>,
    userns: Option<UserNsPlan>,
    next: AtomicU64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("protections", &self.inner.protections)
            .finish()
    }
}

fn basic_protections() -> Protections {
    Protections {
        process_group: true,
        die_with_server: true,
        no_new_privs: true,
        rlimits: true,
        namespaces: false,
        network_isolation: false,
        filesystem_isolation: false,
        cgroups: None,
        seccomp: false,
        unprivileged_user: false,
        user_namespace: false,
    }
}

impl Sandbox {
    /// Only process-group containment: no namespaces, cgroups or seccomp.
    pub fn unisolated() -> Self {
        Self::with(
            SandboxConfig {
                isolation: false,
                ..SandboxConfig::new(std::env::temp_dir())
            },
            basic_protections(),
            None,
            None,
            None,
            None,
        )
    }

    fn with(
        config: SandboxConfig,
        protections: Protections,
        base_root: Option<BaseRoot>,
        cgroups: Option<Cgroups>,
        seccomp: Option<Arc<seccomp::Filters>>,
        userns: Option<UserNsPlan>,
    ) -> Self {
        Sandbox {
            inner: Arc::new(Inner {
                config,
                protections,
                base_root,
                cgroups,
                seccomp,
                userns,
                next: AtomicU64::new(1),
            }),
        }
    }

    /// Detects and probes what the host allows, and keeps every layer that works.
    pub fn new(config: SandboxConfig) -> Self {
        if !config.isolation {
            return Self::with(config, basic_protections(), None, None, None, None);
        }
        // SAFETY: geteuid/getegid have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let root = euid == 0;
        let userns = (!root).then(|| UserNsPlan {
            uid_map: CString::new(format!("0 {euid} 1")).expect("no NUL"),
            gid_map: CString::new(format!("0 {egid} 1")).expect("no NUL"),
        });
        let _ = std::fs::create_dir_all(&config.root_dir);
        let cgroups = if root {
            Cgroups::detect(&config.cgroup_root, &config.cgroup_parent)
        } else {
            None
        };
        let seccomp = match seccomp::build() {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "seccomp filter unavailable");
                None
            }
        };
        let base_root = BaseRoot::new(&config.root_dir, &config.runtime_paths);
        let full = Protections {
            namespaces: true,
            network_isolation: true,
            filesystem_isolation: true,
            cgroups: cgroups.as_ref().map(|c| c.version()),
            seccomp: seccomp.is_some(),
            unprivileged_user: true,
            user_namespace: !root,
            ..basic_protections()
        };
        let candidate = Self::with(
            config.clone(),
            full,
            Some(base_root),
            cgroups,
            seccomp.clone(),
            userns,
        );
        match candidate.probe() {
            Ok(()) => return candidate,
            Err(e) => {
                tracing::warn!(error = %e, "namespaces are not usable on this host; running instances without them")
            }
        }
        // Without namespaces: keep what works on its own.
        let Inner {
            config, cgroups, ..
        } = match Arc::try_unwrap(candidate.inner) {
            Ok(inner) => inner,
            Err(_) => unreachable!("the candidate is not shared"),
        };
        // Without a private root the instance runs on the host's files, where an
        // unprivileged uid may not reach the interpreter or the code: keep the server's uid.
        let fallback = Protections {
            cgroups: cgroups.as_ref().map(|c| c.version()),
            seccomp: seccomp.is_some(),
            ..basic_protections()
        };
        let fallback = Self::with(config, fallback, None, cgroups, seccomp, None);
        if let Err(e) = fallback.probe() {
            tracing::warn!(error = %e, "sandbox probe failed; instances run with process containment only");
            return Self::unisolated();
        }
        fallback
    }

    /// Starts `/bin/true`-like work in a full sandbox and waits for it.
    fn probe(&self) -> std::io::Result<()> {
        let dir = std::env::temp_dir();
        let spec = ProcessSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "exit 0".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            code_dir: dir,
            runtime_dir: None,
            memory_mb: 64,
            tmp_mb: 1,
            host_network: false,
            data_limit_bytes: None,
            channel: false,
            stdin: false,
            background: false,
            loopback_listeners: Vec::new(),
        };
        let mut prepared = self.command(&spec)?;
        let status = prepared
            .cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("probe exited with {status}")))
        }
    }

    /// What instances are protected by.
    pub fn protections(&self) -> &Protections {
        &self.inner.protections
    }

    /// Number of instance cgroups that exist now (0 without cgroups).
    pub fn live_cgroups(&self) -> usize {
        self.inner.cgroups.as_ref().map_or(0, |c| c.live_count())
    }

    /// Whether an instance with (`host_network: false`) gets a network namespace of its own,
    /// where [`ProcessSpec::loopback_listeners`] can be used. Otherwise it shares the host's.
    pub fn own_network(&self, host_network: bool) -> bool {
        !host_network && self.inner.protections.network_isolation
    }

    /// The path at which an instance sees the code directory `host`.
    pub fn code_path(&self, host: &Path) -> PathBuf {
        if self.inner.protections.filesystem_isolation {
            PathBuf::from(rootfs::CODE_DIR)
        } else {
            host.to_path_buf()
        }
    }

    /// The path at which an instance sees `file` of the runtime directory `host_dir`.
    pub fn runtime_path(&self, host_dir: &Path, file: &str) -> PathBuf {
        if self.inner.protections.filesystem_isolation {
            Path::new(rootfs::RUNTIME_DIR).join(file)
        } else {
            host_dir.join(file)
        }
    }

    /// Builds the command for `spec`, with the descriptors and cgroup that must live until it is
    /// spawned (the cgroup for as long as the instance).
    fn command(&self, spec: &ProcessSpec) -> std::io::Result<Prepared> {
        let inner = &self.inner;
        let p = &inner.protections;
        let cgroup = match &inner.cgroups {
            Some(c) => {
                let n = inner.next.fetch_add(1, Ordering::Relaxed);
                Some(c.create(
                    &format!("i{n}"),
                    cgroup::Limits {
                        memory_mb: spec.memory_mb,
                        pids_max: inner.config.pids_max,
                        background: spec.background,
                    },
                )?)
            }
            None => None,
        };
        let listens = !spec.loopback_listeners.is_empty();
        if listens && !self.own_network(spec.host_network) {
            return Err(std::io::Error::other(
                "a loopback listener needs a network namespace of the instance's own",
            ));
        }
        let (parent_end, child_end) = if spec.channel || listens {
            let (a, b) = StdUnixStream::pair()?;
            (Some(a), Some(OwnedFd::from(b)))
        } else {
            (None, None)
        };
        let namespaces = p.namespaces.then(|| {
            let mut flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID;
            if !spec.host_network {
                flags |= libc::CLONE_NEWNET;
            }
            NsPlan {
                flags,
                userns: inner.userns.clone(),
                root: inner.base_root.as_ref().map(|b| {
                    b.plan(
                        Some(&spec.code_dir),
                        spec.runtime_dir.as_deref(),
                        spec.tmp_mb,
                    )
                }),
                lo_up: !spec.host_network,
                listen_ports: spec.loopback_listeners.clone(),
                keep_channel: spec.channel,
            }
        });
        let plan = ChildPlan {
            server_pid: std::process::id() as libc::pid_t,
            channel_fd: child_end.as_ref().map(|f| f.as_raw_fd()),
            cgroup_fds: cgroup
                .as_ref()
                .map(|c| c.raw_join_fds())
                .unwrap_or_default(),
            data_limit: spec.data_limit_bytes,
            namespaces,
            drop_to: (p.unprivileged_user && !p.user_namespace)
                .then_some((inner.config.uid, inner.config.gid)),
            seccomp: inner.seccomp.clone(),
        };
        let mut cmd = std::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.code_dir)
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        // SAFETY: `child::run` only makes async-signal-safe system calls on data the closure
        // owns; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || child::run(&plan));
        }
        Ok(Prepared {
            cmd,
            child_end,
            parent_end,
            cgroup,
        })
    }

    /// Starts a process. The fork and the whole set-up up to `exec` (a few milliseconds with
    /// full isolation) run on the sandbox's spawner threads, never on the caller's: async
    /// workers keep serving while instances start.
    pub async fn spawn(&self, spec: &ProcessSpec) -> Result<SandboxedProcess, SandboxError> {
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let Prepared {
            mut cmd,
            child_end,
            parent_end,
            mut cgroup,
        } = self.command(spec)?;
        cmd.stdout(Stdio::from(stdout_w))
            .stderr(Stdio::from(stderr_w));
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = spawner::spawn(cmd).await?;
        drop(child_end);
        if let Some(c) = cgroup.as_mut() {
            c.join_fds.clear();
        }
        let pid = child.id().map(|p| p as i32).unwrap_or(-1);
        let mut channel = match parent_end {
            Some(s) => {
                s.set_nonblocking(true)?;
                Some(tokio::net::UnixStream::from_std(s)?)
            }
            None => None,
        };
        let mut proc = SandboxedProcess {
            stdin: child.stdin.take(),
            child,
            pid,
            channel: None,
            stdout: pipe::Receiver::from_owned_fd(stdout_r)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_r)?,
            entered: None,
            listeners: Vec::new(),
            cgroup,
        };
        match channel.take() {
            Some(from_child) if !spec.loopback_listeners.is_empty() => {
                // The instance sends them, one message each, before its exec; it ends
                // (closing the channel) if it cannot. Dropping `proc` on failure kills it.
                let wait = std::time::Duration::from_secs(10);
                for _ in &spec.loopback_listeners {
                    let fd = tokio::time::timeout(wait, recv_fd(&from_child))
                        .await
                        .map_err(|_| {
                            std::io::Error::other("no listener from the instance in 10 s")
                        })??;
                    let listener = std::net::TcpListener::from(fd);
                    listener.set_nonblocking(true)?;
                    proc.listeners.push(listener);
                }
                if spec.channel {
                    proc.channel = Some(from_child);
                }
            }
            ch => proc.channel = ch,
        }
        Ok(proc)
    }

    /// Whether a process from outside can enter an instance's sandbox (a zygote's fork, see
    /// [`Sandbox::spawn_holder`]): the server is root, with namespaces, a private root and
    /// cgroups, and no user namespace (joining one would need more than root has).
    pub fn can_enter(&self) -> bool {
        let p = &self.inner.protections;
        p.namespaces
            && !p.user_namespace
            && p.filesystem_isolation
            && p.cgroups.is_some()
            && self.inner.userns.is_none()
    }

    /// Builds an instance's sandbox around a placeholder (`sleep`) instead of starting the
    /// runtime in it: a process from outside — a fork of a warmed interpreter — then enters it
    /// with the returned [`Entry`] and becomes the instance. The returned process reads that
    /// instance's stdout, stderr and channel; killing it (the holder is PID 1 of the
    /// namespace) ends the instance too. `spec`'s program is ignored.
    pub async fn spawn_holder(
        &self,
        spec: &ProcessSpec,
    ) -> Result<(SandboxedProcess, Entry), SandboxError> {
        if !self.can_enter() {
            return Err(SandboxError::Spawn(std::io::Error::other(
                "this sandbox cannot be entered from outside",
            )));
        }
        let holder = ProcessSpec {
            program: PathBuf::from("/bin/sleep"),
            args: vec!["infinity".into()],
            channel: false,
            stdin: false,
            ..spec.clone()
        };
        let mut p = self.spawn(&holder).await?;
        let ns_pid = namespace_init(p.pid)?;
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let (parent, child) = StdUnixStream::pair()?;
        parent.set_nonblocking(true)?;
        p.stdout = pipe::Receiver::from_owned_fd(stdout_r)?;
        p.stderr = pipe::Receiver::from_owned_fd(stderr_r)?;
        p.channel = Some(tokio::net::UnixStream::from_std(parent)?);
        let cgroup_join = match &p.cgroup {
            Some(c) => c.open_join()?,
            None => Vec::new(),
        };
        let mut namespaces = vec!["ipc", "uts"];
        if !spec.host_network {
            namespaces.push("net");
        }
        namespaces.extend(["pid", "mnt"]);
        let p_ = &self.inner.protections;
        let entry = Entry {
            ns_pid,
            namespaces,
            stdio: [OwnedFd::from(child), stdout_w, stderr_w],
            cgroup_join,
            drop_to: (p_.unprivileged_user && !p_.user_namespace)
                .then_some((self.inner.config.uid, self.inner.config.gid)),
            seccomp: self
                .inner
                .seccomp
                .as_ref()
                .map(|f| f.to_bytes())
                .unwrap_or_default(),
        };
        Ok((p, entry))
    }
}

/// The process a holder forked inside its namespaces (their PID 1), by host pid: the only
/// child of the supervisor `pid`.
fn namespace_init(pid: i32) -> std::io::Result<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    for _ in 0..200 {
        let text = std::fs::read_to_string(&path)?;
        if let Some(child) = text.split_whitespace().next().and_then(|c| c.parse().ok()) {
            return Ok(child);
        }
        std::thread::sleep(std::time::Duration::from_micros(250));
    }
    Err(std::io::Error::other(
        "the holder's namespace has no process",
    ))
}

/// A command ready to spawn and what must stay alive with it.
struct Prepared {
    cmd: std::process::Command,
    /// The instance's end of the channel: open until spawn, then closed in the server.
    child_end: Option<OwnedFd>,
    /// The invoker's end of the channel.
    parent_end: Option<StdUnixStream>,
    cgroup: Option<InstanceCgroup>,
}

/// Receives one descriptor sent with `SCM_RIGHTS`.
async fn recv_fd(stream: &tokio::net::UnixStream) -> std::io::Result<OwnedFd> {
    loop {
        stream.readable().await?;
        let got = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut control = [0u64; 4];
            // SAFETY: recvmsg into buffers we own, sized as the header says; the control data
            // is read only where the kernel says it put a descriptor.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&control) as _;
                let n = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                if cmsg.is_null()
                    || (*cmsg).cmsg_level != libc::SOL_SOCKET
                    || (*cmsg).cmsg_type != libc::SCM_RIGHTS
                {
                    return Err(std::io::Error::other(
                        "the instance ended without sending its listener",
                    ));
                }
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                Ok(OwnedFd::from_raw_fd(fd))
            }
        });
        match got {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests;
