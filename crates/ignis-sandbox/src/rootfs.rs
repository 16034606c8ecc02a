//! The root filesystem an instance sees, as a plan of mount operations made in the server
//! (where allocating and inspecting the host is allowed) and carried out in the forked child
//! (where only async-signal-safe system calls are).
//!
//! ```text
//!  /            tmpfs, read-only once built
//!  ├── usr, lib…  host runtime files, bind-mounted read-only (symlinks like /bin → usr/bin kept)
//!  ├── etc/…      a few host files (ld.so.cache, ssl, resolv.conf, passwd…), read-only
//!  ├── code       the function's code, read-only
//!  ├── ignis      the runtime bootstraps, read-only
//!  ├── tmp        private tmpfs of bounded size, the only writable place
//!  ├── dev        tmpfs with null, zero, full, random, urandom bound from the host
//!  └── proc       proc of the instance's own PID namespace
//! ```
//!
//! The data directory, other functions' code, the config and keys are simply not in this tree.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the code appears inside the sandbox.
pub const CODE_DIR: &str = "/code";
/// Where the runtime bootstraps appear inside the sandbox.
pub const RUNTIME_DIR: &str = "/ignis";

/// Host files under /etc that programs commonly need.
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
];

/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One step of building the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// mkdir (parents are earlier ops).
    Mkdir(CString),
    /// Create an empty file (a bind target).
    Touch(CString),
    /// symlink(target, link).
    Symlink {
        /// What the link points at.
        target: CString,
        /// The link.
        link: CString,
    },
    /// Bind-mount, read-only unless `writable`.
    Bind {
        /// Host path.
        src: CString,
        /// Path under the new root.
        dst: CString,
        /// Leave it writable.
        writable: bool,
    },
    /// Mount a tmpfs with options (e.g. `size=512m,mode=1777`).
    Tmpfs {
        /// Path under the new root.
        dst: CString,
        /// Mount options.
        opts: CString,
    },
}

/// The whole plan for one instance.
#[derive(Debug, Clone)]
pub struct RootPlan {
    /// Mount point of the new root on the host (an empty directory).
    pub root: CString,
    /// Steps, in order.
    pub ops: Vec<Op>,
    /// `<root>/.old`, where the old root goes during pivot_root.
    pub old: CString,
    /// Working directory inside.
    pub cwd: CString,
}

fn c(p: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).expect("paths have no NUL bytes")
}

/// The host paths shown read-only by default: the system's runtime files.
pub fn default_runtime_paths() -> Vec<PathBuf> {
    ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

struct Builder {
    root: PathBuf,
    ops: Vec<Op>,
    made: std::collections::HashSet<PathBuf>,
    /// Paths bound from the host: whatever is below them is already visible (and read-only).
    bound: Vec<PathBuf>,
}

impl Builder {
    fn inside(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    fn mkdir_p(&mut self, p: &Path) {
        let mut cur = PathBuf::from("/");
        for comp in p.strip_prefix("/").unwrap_or(p).components() {
            cur.push(comp);
            if self.made.insert(cur.clone()) {
                let inside = self.inside(&cur);
                self.ops.push(Op::Mkdir(c(&inside)));
            }
        }
    }

    /// Shows host path `src` at `dst` inside: a symlink is copied as a symlink, a directory or
    /// file is bind-mounted.
    fn expose(&mut self, src: &Path, dst: &Path, writable: bool) {
        let Ok(meta) = src.symlink_metadata() else {
            return;
        };
        if self.made.contains(dst) || self.bound.iter().any(|b| dst.starts_with(b)) {
            return;
        }
        if let Some(parent) = dst.parent() {
            self.mkdir_p(parent);
        }
        if meta.file_type().is_symlink()
            && let Ok(target) = std::fs::read_link(src)
        {
            self.made.insert(dst.to_path_buf());
            let link = self.inside(dst);
            self.ops.push(Op::Symlink {
                target: c(&target),
                link: c(&link),
            });
            // A link to an absolute path elsewhere needs that path too.
            if target.is_absolute() {
                self.expose(&target.clone(), &target, writable);
            }
            return;
        }
        let inside = self.inside(dst);
        self.bound.push(dst.to_path_buf());
        if meta.is_dir() {
            self.mkdir_p(dst);
        } else {
            self.made.insert(dst.to_path_buf());
            self.ops.push(Op::Touch(c(&inside)));
        }
        self.ops.push(Op::Bind {
            src: c(src),
            dst: c(&inside),
            writable,
        });
    }
}

/// The part of a root that is the same for every instance: runtime files and /etc. Computed
/// once (it inspects the host) and cloned per instance.
#[derive(Debug, Clone)]
pub struct BaseRoot {
    root: PathBuf,
    ops: Vec<Op>,
    made: std::collections::HashSet<PathBuf>,
    bound: Vec<PathBuf>,
}

impl BaseRoot {
    /// Plans the shared part of every instance's root, mounted at `root` on the host.
    pub fn new(root: &Path, runtime_paths: &[PathBuf]) -> Self {
        let mut b = Builder {
            root: root.to_path_buf(),
            ops: Vec::new(),
            made: Default::default(),
            bound: Vec::new(),
        };
        for p in runtime_paths {
            b.expose(p, p, false);
        }
        for f in ETC_FILES {
            b.expose(Path::new(f), Path::new(f), false);
        }
        BaseRoot {
            root: b.root,
            ops: b.ops,
            made: b.made,
            bound: b.bound,
        }
    }

    /// The whole plan of one instance.
    pub fn plan(
        &self,
        code_dir: Option<&Path>,
        runtime_dir: Option<&Path>,
        tmp_mb: u32,
    ) -> RootPlan {
        let mut b = Builder {
            root: self.root.clone(),
            ops: self.ops.clone(),
            made: self.made.clone(),
            bound: self.bound.clone(),
        };
        if let Some(code) = code_dir {
            b.expose(code, Path::new(CODE_DIR), false);
        } else {
            b.mkdir_p(Path::new(CODE_DIR));
        }
        if let Some(rt) = runtime_dir {
            b.expose(rt, Path::new(RUNTIME_DIR), false);
        }
        b.mkdir_p(Path::new("/tmp"));
        b.ops.push(Op::Tmpfs {
            dst: c(b.inside(Path::new("/tmp"))),
            opts: c(format!("size={tmp_mb}m,mode=1777")),
        });
        b.mkdir_p(Path::new("/dev"));
        b.ops.push(Op::Tmpfs {
            dst: c(b.inside(Path::new("/dev"))),
            opts: c("size=64k,mode=755"),
        });
        for d in DEVICES {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                let inside = b.inside(&host);
                b.ops.push(Op::Touch(c(&inside)));
                b.ops.push(Op::Bind {
                    src: c(&host),
                    dst: c(&inside),
                    writable: true,
                });
            }
        }
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            b.ops.push(Op::Symlink {
                target: c(target),
                link: c(b.inside(Path::new(link))),
            });
        }
        b.mkdir_p(Path::new("/proc"));
        b.mkdir_p(Path::new("/.old"));
        RootPlan {
            root: c(&self.root),
            old: c(self.root.join(".old")),
            ops: b.ops,
            cwd: c(CODE_DIR),
        }
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const NULL: *const libc::c_char = std::ptr::null();

/// Carries out a plan. Runs in the child, inside a new mount namespace (and PID namespace, for
/// /proc). Only system calls: no allocation.
///
/// # Safety
/// Must be called in a forked child that owns a private mount namespace.
pub(crate) unsafe fn build(plan: &RootPlan) -> std::io::Result<()> {
    // SAFETY: every pointer is a NUL-terminated string owned by `plan`, alive for the call.
    unsafe {
        check(libc::mount(
            NULL,
            c"/".as_ptr(),
            NULL,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            plan.root.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"size=1m,mode=755".as_ptr().cast(),
        ))?;
        for op in &plan.ops {
            match op {
                Op::Mkdir(p) => {
                    if libc::mkdir(p.as_ptr(), 0o755) < 0
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Op::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    check(fd)?;
                    libc::close(fd);
                }
                Op::Symlink { target, link } => {
                    check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
                }
                Op::Bind { src, dst, writable } => {
                    check(libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        NULL,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
                    if !writable {
                        flags |= libc::MS_RDONLY;
                    }
                    // Keep flags the kernel may have locked on the source mount.
                    let mut st: libc::statvfs = std::mem::zeroed();
                    if libc::statvfs(dst.as_ptr(), &mut st) == 0 {
                        if st.f_flag & libc::ST_NODEV != 0 {
                            flags |= libc::MS_NODEV;
                        }
                        if st.f_flag & libc::ST_NOEXEC != 0 {
                            flags |= libc::MS_NOEXEC;
                        }
                    }
                    check(libc::mount(
                        NULL,
                        dst.as_ptr(),
                        NULL,
                        flags,
                        std::ptr::null(),
                    ))?;
                }
                Op::Tmpfs { dst, opts } => {
                    check(libc::mount(
                        c"tmpfs".as_ptr(),
                        dst.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        opts.as_ptr().cast(),
                    ))?;
                }
            }
        }
        check(
            libc::syscall(libc::SYS_pivot_root, plan.root.as_ptr(), plan.old.as_ptr())
                as libc::c_int,
        )?;
        check(libc::chdir(c"/".as_ptr()))?;
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
        check(libc::umount2(c"/.old".as_ptr(), libc::MNT_DETACH))?;
        check(libc::rmdir(c"/.old".as_ptr()))?;
        check(libc::mount(
            NULL,
            c"/".as_ptr(),
            NULL,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ))?;
        check(libc::chdir(plan.cwd.as_ptr()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(c: &CString) -> &str {
        c.to_str().unwrap()
    }

    #[test]
    fn plan_exposes_runtime_code_and_a_private_tmp() {
        let host = tempfile::tempdir().unwrap();
        let usr = host.path().join("usr");
        std::fs::create_dir_all(usr.join("bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", host.path().join("bin")).unwrap();
        let code = host.path().join("code-abc");
        std::fs::create_dir_all(&code).unwrap();
        let base = BaseRoot::new(
            Path::new("/newroot"),
            &[usr.clone(), host.path().join("bin")],
        );
        let p = base.plan(Some(&code), None, 64);
        let binds: Vec<(&str, &str, bool)> = p
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Bind { src, dst, writable } => Some((s(src), s(dst), *writable)),
                _ => None,
            })
            .collect();
        let usr_inside = format!("/newroot{}", usr.display());
        assert!(
            binds.contains(&(usr.to_str().unwrap(), usr_inside.as_str(), false)),
            "{binds:?}"
        );
        assert!(binds.contains(&(code.to_str().unwrap(), "/newroot/code", false)));
        assert!(
            binds
                .iter()
                .any(|(_, d, w)| *d == "/newroot/dev/null" && *w)
        );
        // Nothing writable from the host but device nodes.
        assert!(
            binds
                .iter()
                .filter(|(_, _, w)| *w)
                .all(|(s, _, _)| s.starts_with("/dev/"))
        );
        // The symlink is kept as a symlink.
        assert!(
            p.ops
                .iter()
                .any(|o| matches!(o, Op::Symlink { target, .. } if s(target) == "usr/bin"))
        );
        // /tmp is a bounded tmpfs.
        assert!(p.ops.iter().any(|o| matches!(o, Op::Tmpfs { dst, opts } if s(dst) == "/newroot/tmp" && s(opts) == "size=64m,mode=1777")));
        // Directories are made before they are used.
        let first_mkdir_code = p
            .ops
            .iter()
            .position(|o| matches!(o, Op::Mkdir(d) if s(d) == "/newroot/code"))
            .unwrap();
        let bind_code = p
            .ops
            .iter()
            .position(|o| matches!(o, Op::Bind { dst, .. } if s(dst) == "/newroot/code"))
            .unwrap();
        assert!(first_mkdir_code < bind_code);
        assert_eq!(s(&p.cwd), "/code");
        // A path below a bound directory is not made again (it would be read-only).
        assert!(
            !p.ops
                .iter()
                .any(|o| matches!(o, Op::Mkdir(d) if s(d).starts_with(&format!("{usr_inside}/"))))
        );
        // The host's data is not in the plan.
        assert!(!binds.iter().any(|(s, _, _)| s.contains("ignis.db")));
    }
}
