//! Launches function instances as contained process trees. Only this crate calls `fork`/`exec`
//! set-up code (`pre_exec`), `setrlimit`, `prctl` and `kill`.
//!
//! Today an instance is a process in its own session and process group, killed as a group, that
//! dies with the server (`PR_SET_PDEATHSIG`), cannot gain privileges (`no_new_privs`), and runs
//! under rlimits (open files, no core dumps, data size for runtimes that tolerate it).
//! [`Protections`] reports exactly that, so that `ignis serve` can print what is on and off.
//! Namespaces, cgroups and seccomp are not applied yet and are reported as off.
#![warn(missing_docs)]

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::Stdio;

use serde::Serialize;
use tokio::net::unix::pipe;

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
    /// PID, mount, IPC, UTS namespaces.
    pub namespaces: bool,
    /// Network isolation.
    pub network_isolation: bool,
    /// cgroup memory/cpu/pids limits.
    pub cgroups: bool,
    /// seccomp syscall filter.
    pub seccomp: bool,
    /// Runs as an unprivileged uid.
    pub unprivileged_user: bool,
}

impl Protections {
    /// Lines saying what is on and off, for the start banner.
    pub fn describe(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("process group (killed as a whole)", self.process_group),
            ("dies with the server", self.die_with_server),
            ("no_new_privs", self.no_new_privs),
            ("rlimits (files, core dumps, data size)", self.rlimits),
            ("pid/mount/ipc/uts namespaces", self.namespaces),
            ("network isolation", self.network_isolation),
            ("cgroup limits (memory, cpu, pids)", self.cgroups),
            ("seccomp filter", self.seccomp),
            ("unprivileged uid", self.unprivileged_user),
        ]
    }
}

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A pipe, socket or the process itself could not be created.
    #[error("cannot start instance: {0}")]
    Spawn(#[from] std::io::Error),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its whole environment (nothing is inherited from the server).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Limit of the data segment (heap) in bytes, where the runtime tolerates one.
    pub data_limit_bytes: Option<u64>,
    /// Whether to give the instance a protocol channel at fd 3.
    pub channel: bool,
    /// Whether to give the instance a stdin pipe (else /dev/null).
    pub stdin: bool,
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
}

impl Drop for SandboxedProcess {
    fn drop(&mut self) {
        // An instance never outlives its handle. tokio reaps the zombie.
        self.kill();
    }
}

/// Starts instances with the protections this host allows.
#[derive(Debug, Clone)]
pub struct Sandbox {
    protections: Protections,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Detects what the host allows.
    pub fn new() -> Self {
        Sandbox {
            protections: Protections {
                process_group: true,
                die_with_server: true,
                no_new_privs: true,
                rlimits: true,
                namespaces: false,
                network_isolation: false,
                cgroups: false,
                seccomp: false,
                unprivileged_user: false,
            },
        }
    }

    /// What instances are protected by.
    pub fn protections(&self) -> &Protections {
        &self.protections
    }

    /// Starts a process. Must be called from an async task on a runtime worker thread (the
    /// parent-death signal is tied to the thread that forks, and worker threads live as long as
    /// the server).
    pub fn spawn(&self, spec: &ProcessSpec) -> Result<SandboxedProcess, SandboxError> {
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let (parent_end, child_end) = if spec.channel {
            let (a, b) = StdUnixStream::pair()?;
            (Some(a), Some(OwnedFd::from(b)))
        } else {
            (None, None)
        };

        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::from(stdout_w))
            .stderr(Stdio::from(stderr_w))
            .kill_on_drop(true);

        let child_fd = child_end.as_ref().map(|fd| fd.as_raw_fd());
        let data_limit = spec.data_limit_bytes;
        let server_pid = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (setsid, prctl, setrlimit, dup2, fcntl), no allocation.
        unsafe {
            cmd.pre_exec(move || child_setup(server_pid, child_fd, data_limit));
        }
        let mut child = cmd.spawn()?;
        drop(child_end);
        let pid = child.id().map(|p| p as i32).unwrap_or(-1);
        let channel = match parent_end {
            Some(s) => {
                s.set_nonblocking(true)?;
                Some(tokio::net::UnixStream::from_std(s)?)
            }
            None => None,
        };
        Ok(SandboxedProcess {
            stdin: child.stdin.take(),
            child,
            pid,
            channel,
            stdout: pipe::Receiver::from_owned_fd(stdout_r)?,
            stderr: pipe::Receiver::from_owned_fd(stderr_r)?,
        })
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

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass.
    check(unsafe { libc::setrlimit(resource, &lim) })
}

/// Runs in the child between fork and exec.
fn child_setup(
    server_pid: libc::pid_t,
    channel_fd: Option<RawFd>,
    data_limit: Option<u64>,
) -> std::io::Result<()> {
    // SAFETY: plain system calls on our own process, no memory is shared or allocated.
    unsafe {
        check(libc::setsid())?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        // The server may already be gone: then die now rather than linger.
        if libc::getppid() != server_pid {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        if let Some(fd) = channel_fd {
            if fd == CHANNEL_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            } else {
                check(libc::dup2(fd, CHANNEL_FD))?;
            }
        }
    }
    set_rlimit(libc::RLIMIT_CORE, 0)?;
    set_rlimit(libc::RLIMIT_NOFILE, 1024)?;
    if let Some(bytes) = data_limit {
        set_rlimit(libc::RLIMIT_DATA, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn spec(script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            data_limit_bytes: None,
            channel: true,
            stdin: false,
        }
    }

    #[tokio::test]
    async fn runs_with_channel_and_pipes() {
        let sb = Sandbox::new();
        let mut p = sb
            .spawn(&spec("echo out; echo err >&2; echo chan >&3; ulimit -n"))
            .unwrap();
        let status = p.child.wait().await.unwrap();
        assert!(status.success());
        let mut out = String::new();
        let mut buf = vec![0u8; 1024];
        let n = p.stdout.read(&mut buf).await.unwrap();
        out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        assert_eq!(out, "out\n1024\n");
        let n = p.stderr.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"err\n");
        let n = p.channel.as_mut().unwrap().read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"chan\n");
    }

    #[tokio::test]
    async fn kill_takes_the_whole_group() {
        let sb = Sandbox::new();
        let mut p = sb.spawn(&spec("sleep 30 & echo $!; sleep 30")).unwrap();
        let mut buf = vec![0u8; 64];
        let n = p.stdout.read(&mut buf).await.unwrap();
        let grandchild: u32 = std::str::from_utf8(&buf[..n])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        p.kill();
        assert!(!p.child.wait().await.unwrap().success());
        // The background grandchild dies too (it may linger as a zombie until reaped).
        let mut gone = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            if stat.map_or(true, |s| s.contains(") Z")) {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(gone, "grandchild {grandchild} survived the kill");
    }

    #[tokio::test]
    async fn environment_is_not_inherited() {
        let sb = Sandbox::new();
        let mut s = spec("echo \"[$HOME]\"");
        s.channel = false;
        let mut p = sb.spawn(&s).unwrap();
        p.child.wait().await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = p.stdout.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"[]\n");
    }
}
