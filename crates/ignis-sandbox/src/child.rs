//! What runs in the forked child between `fork` and `exec`: only async-signal-safe system
//! calls on data prepared by the parent, no allocation.
//!
//! ```text
//!  server ──fork──► C1 (the pid tokio waits on)
//!                    setsid · parent-death signal · join cgroup
//!                    [user ns] · unshare(mount, ipc, uts, pid, [net])
//!                    ──fork──► C2 = pid 1 of the new PID namespace
//!                    │          parent-death signal · build root · hostname · loopback up
//!                    │          [listeners on 127.0.0.1:ports sent to the server]
//!                    │          fd 3 · rlimits · drop caps and uid · no_new_privs · seccomp
//!                    │          exec the runtime
//!                    └ closes every fd, waits for C2, exits as C2 did
//! ```
//!
//! Killing C1's process group kills C1 and C2; C2 dying ends every process of its PID namespace.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::rootfs::{self, RootPlan};
use crate::seccomp::{self, Filters};

/// Namespaces to enter.
#[derive(Debug, Clone)]
pub(crate) struct NsPlan {
    /// unshare flags (without CLONE_NEWUSER).
    pub flags: libc::c_int,
    /// Map the caller's uid/gid to root in a new user namespace first (non-root hosts).
    pub userns: Option<UserNsPlan>,
    /// The root filesystem to build, if filesystem isolation is on.
    pub root: Option<RootPlan>,
    /// Bring loopback up (in a new network namespace).
    pub lo_up: bool,
    /// Bind a TCP listener at 127.0.0.1:port for each of these ports in the new network
    /// namespace and send them, in order, to the server over the channel, which then closes
    /// at exec instead of becoming fd 3 — unless `keep_channel`.
    pub listen_ports: Vec<u16>,
    /// With `listen_ports`: the channel still becomes fd 3 after the listeners went over it.
    pub keep_channel: bool,
}

/// Contents of the id maps of a new user namespace.
#[derive(Debug, Clone)]
pub(crate) struct UserNsPlan {
    pub uid_map: CString,
    pub gid_map: CString,
}

/// Everything the child does, prepared by the parent.
#[derive(Debug, Clone)]
pub(crate) struct ChildPlan {
    pub server_pid: libc::pid_t,
    pub channel_fd: Option<RawFd>,
    pub cgroup_fds: Vec<RawFd>,
    pub data_limit: Option<u64>,
    pub namespaces: Option<NsPlan>,
    pub drop_to: Option<(libc::uid_t, libc::gid_t)>,
    pub seccomp: Option<Arc<Filters>>,
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

unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `struct ifreq` with the flags member, as SIOCGIFFLAGS/SIOCSIFFLAGS use it.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

unsafe fn loopback_up() -> std::io::Result<()> {
    // SAFETY: ioctl on a socket we own with a correctly sized ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        let mut req = IfreqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        let r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            let r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
            libc::close(fd);
            return check(r);
        }
        libc::close(fd);
        check(r)
    }
}

/// Binds a listening TCP socket at 127.0.0.1:`port` (in the instance's network namespace) and
/// sends it to the server over `channel` (`SCM_RIGHTS`), keeping no copy: only the server
/// accepts on it, the instance's programs connect to it.
unsafe fn send_loopback_listener(port: u16, channel: RawFd) -> std::io::Result<()> {
    // SAFETY: socket calls on descriptors we own with correctly sized, live structures.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        let sent = (|| {
            let one: libc::c_int = 1;
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                },
                sin_zero: [0; 8],
            };
            check(libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))?;
            check(libc::listen(fd, 64))?;
            let mut byte = [0u8; 1];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            // u64 elements: aligned for cmsghdr, and 32 bytes ≥ CMSG_SPACE(4).
            let mut control = [0u64; 4];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
            if libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })();
        libc::close(fd);
        sent
    }
}

/// Empties the effective, permitted and inheritable capability sets.
unsafe fn drop_all_capabilities() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a header and two data structs of the v3 layout.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } as libc::c_int)
}

/// Sets close-on-exec on every descriptor from `first` up.
unsafe fn mark_cloexec_from(first: RawFd) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range/fcntl on our own descriptor table.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            u32::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            for fd in first..4096 {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// C1 after the second fork: hold nothing open, wait for the instance, exit as it did.
unsafe fn supervise(child: libc::pid_t) -> ! {
    // SAFETY: raw system calls; this process never returns to Rust code after this.
    unsafe {
        // close_range(0, ~0, 0): the pipes and the channel must see EOF when C2 dies.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(child, &mut status, 0);
            if r == child {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(127)
    }
}

/// Runs in the child between fork and exec.
///
/// # Safety
/// Only to be called from `pre_exec`.
pub(crate) unsafe fn run(plan: &ChildPlan) -> std::io::Result<()> {
    // SAFETY: async-signal-safe system calls on our own process and data owned by `plan`.
    unsafe {
        check(libc::setsid())?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        // The server may already be gone: then die now rather than linger.
        if libc::getppid() != plan.server_pid {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        for fd in &plan.cgroup_fds {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(ns) = &plan.namespaces {
            if let Some(u) = &ns.userns {
                check(libc::unshare(libc::CLONE_NEWUSER))?;
                write_file(c"/proc/self/setgroups", b"deny")?;
                write_file(c"/proc/self/uid_map", u.uid_map.as_bytes())?;
                write_file(c"/proc/self/gid_map", u.gid_map.as_bytes())?;
            }
            check(libc::unshare(ns.flags))?;
            let pid = libc::fork();
            check(pid)?;
            if pid > 0 {
                supervise(pid);
            }
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            if let Some(root) = &ns.root {
                rootfs::build(root)?;
            }
            check(libc::sethostname(c"ignis".as_ptr(), 5))?;
            if ns.lo_up {
                loopback_up()?;
            }
            if let Some(channel) = plan.channel_fd {
                for &port in &ns.listen_ports {
                    send_loopback_listener(port, channel)?;
                }
            }
        }
        let listener_only = plan
            .namespaces
            .as_ref()
            .is_some_and(|ns| !ns.listen_ports.is_empty() && !ns.keep_channel);
        if let Some(fd) = plan.channel_fd.filter(|_| !listener_only) {
            if fd == crate::CHANNEL_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            } else {
                check(libc::dup2(fd, crate::CHANNEL_FD))?;
            }
        }
    }
    set_rlimit(libc::RLIMIT_CORE, 0)?;
    set_rlimit(libc::RLIMIT_NOFILE, 1024)?;
    if let Some(bytes) = plan.data_limit {
        set_rlimit(libc::RLIMIT_DATA, bytes)?;
    }
    // SAFETY: as above.
    unsafe {
        if plan.namespaces.is_some() || plan.drop_to.is_some() {
            for cap in 0..64 {
                // EINVAL for capabilities this kernel does not have: fine.
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
        }
        if let Some((uid, gid)) = plan.drop_to {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
            // Changing uid clears the parent-death signal: set it again, and make sure the
            // parent did not go in between.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            if plan.namespaces.is_none() && libc::getppid() != plan.server_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        // No capability is left in any set, also as root of a user namespace.
        if plan.namespaces.is_some() || plan.drop_to.is_some() {
            drop_all_capabilities()?;
        }
        // Descriptors the server inherited without close-on-exec must not reach the function:
        // everything above the channel closes at exec.
        mark_cloexec_from(crate::CHANNEL_FD + 1);
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        if let Some(filters) = &plan.seccomp {
            seccomp::install(filters)?;
        }
    }
    Ok(())
}
