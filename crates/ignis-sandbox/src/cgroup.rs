//! Per-instance cgroups on cgroup v1 (one directory per controller: memory, pids, cpu) or v2
//! (one directory in the unified hierarchy), under a parent named `ignis`.
//!
//! An instance's cgroup holds its memory limit (reaching it OOM-kills the instance, which the
//! invoker reports as `oom`), a pids limit (a fork bomb stops there) and a CPU weight
//! proportional to memory (Lambda's ~1 vCPU per 1769 MB, as a share, not a cap). The child joins
//! its cgroup itself, before it forks or execs anything, by writing `0` to `cgroup.procs` through
//! descriptors opened here. Cgroups are removed by a cleaner thread once their processes are gone.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Which cgroup version the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// One directory per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Creates and removes instance cgroups.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    /// v1: memory, pids, cpu parents; v2: the one parent.
    parents: Vec<PathBuf>,
    cleaner: mpsc::Sender<Vec<PathBuf>>,
}

/// Limits of one instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory limit in MiB.
    pub memory_mb: u32,
    /// Most processes and threads.
    pub pids_max: u32,
    /// Start with the smallest CPU share (a stem cell warming up must not slow down instances
    /// serving requests); `set_memory` gives the proportional share later.
    pub background: bool,
}

/// One instance's cgroup. Removed (after killing what is left in it) when dropped.
#[derive(Debug)]
pub struct InstanceCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
    /// Open `cgroup.procs` files the child writes `0` into to join; closed after spawn.
    pub(crate) join_fds: Vec<OwnedFd>,
    cleaner: mpsc::Sender<Vec<PathBuf>>,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    fs::write(path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Cgroups {
    /// Finds a writable cgroup hierarchy and makes the `ignis` parent; `None` if there is none
    /// (not root, read-only cgroupfs, controllers missing).
    pub fn detect(root: &Path, parent_name: &str) -> Option<Cgroups> {
        // Each server has its own parent, `ignis/<pid>.<n>`, so that servers sharing a host (tests,
        // several data dirs) never touch each other's instances.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let own = format!("{}.{seq}", std::process::id());
        let (version, tops) = if root.join("cgroup.controllers").exists() {
            let top = root.join(parent_name);
            let setup = || -> std::io::Result<()> {
                fs::create_dir_all(top.join(&own))?;
                // Controllers must be enabled for children at every level.
                let _ = write(&root.join("cgroup.subtree_control"), "+memory +pids +cpu");
                write(&top.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                write(
                    &top.join(&own).join("cgroup.subtree_control"),
                    "+memory +pids +cpu",
                )
            };
            if let Err(e) = setup() {
                tracing::info!(error = %e, "cgroup v2 hierarchy is not usable");
                return None;
            }
            (Version::V2, vec![top])
        } else {
            let mut tops = Vec::new();
            for ctrl in ["memory", "pids", "cpu"] {
                let dir = root.join(ctrl);
                if !dir.join("cgroup.procs").exists() {
                    tracing::info!(controller = ctrl, "cgroup v1 controller missing");
                    return None;
                }
                let top = dir.join(parent_name);
                if let Err(e) = fs::create_dir_all(top.join(&own)) {
                    tracing::info!(error = %e, "cgroup v1 hierarchy is not writable");
                    return None;
                }
                tops.push(top);
            }
            (Version::V1, tops)
        };
        let parents: Vec<PathBuf> = tops.iter().map(|t| t.join(&own)).collect();
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("ignis-cgroup-cleaner".into())
            .spawn(move || cleaner(rx));
        if spawned.is_err() {
            return None;
        }
        // Servers that died (kill -9) leave their cgroups behind: remove those of pids that no
        // longer exist, instances first, then the server's parent.
        for top in &tops {
            let Ok(entries) = fs::read_dir(top) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(Ok(pid)) = name.split('.').next().map(str::parse::<i32>) else {
                    continue;
                };
                // SAFETY: signal 0 only checks that the process exists.
                let alive = unsafe { libc::kill(pid, 0) } == 0
                    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
                if alive {
                    continue;
                }
                let mut stale: Vec<PathBuf> = fs::read_dir(e.path())
                    .map(|d| {
                        d.flatten()
                            .filter(|c| c.path().is_dir())
                            .map(|c| c.path())
                            .collect()
                    })
                    .unwrap_or_default();
                stale.push(e.path());
                let _ = tx.send(stale);
            }
        }
        Some(Cgroups {
            version,
            parents,
            cleaner: tx,
        })
    }

    /// The host's cgroup version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Number of instance cgroups that exist now (for leak checks).
    pub fn live_count(&self) -> usize {
        fs::read_dir(&self.parents[0])
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    }

    /// Makes the cgroup of a new instance with its limits.
    pub fn create(&self, name: &str, limits: Limits) -> std::io::Result<InstanceCgroup> {
        let bytes = limits.memory_mb as u64 * 1024 * 1024;
        // A CPU share proportional to memory: 1769 MB is one full share.
        let mut dirs = Vec::new();
        let mut cg = InstanceCgroup {
            version: self.version,
            dirs: Vec::new(),
            join_fds: Vec::new(),
            cleaner: self.cleaner.clone(),
        };
        for parent in &self.parents {
            let dir = parent.join(name);
            fs::create_dir(&dir)?;
            dirs.push(dir);
        }
        cg.dirs = dirs.clone();
        match self.version {
            Version::V2 => {
                let d = &dirs[0];
                write(&d.join("memory.max"), &bytes.to_string())?;
                let _ = write(&d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &limits.pids_max.to_string())?;
                let weight = if limits.background {
                    1
                } else {
                    (limits.memory_mb as u64 * 100 / 1769).clamp(1, 10_000)
                };
                let _ = write(&d.join("cpu.weight"), &weight.to_string());
            }
            Version::V1 => {
                let (mem, pids, cpu) = (&dirs[0], &dirs[1], &dirs[2]);
                write(&mem.join("memory.limit_in_bytes"), &bytes.to_string())?;
                let _ = write(&mem.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
                write(&pids.join("pids.max"), &limits.pids_max.to_string())?;
                let shares = if limits.background {
                    2
                } else {
                    (limits.memory_mb as u64 * 1024 / 1769).max(2)
                };
                let _ = write(&cpu.join("cpu.shares"), &shares.to_string());
            }
        }
        for d in &dirs {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))?;
            cg.join_fds.push(OwnedFd::from(f));
        }
        Ok(cg)
    }
}

impl InstanceCgroup {
    /// Changes the memory limit (and the CPU share that follows it) of a running instance.
    pub fn set_memory(&self, memory_mb: u32) -> std::io::Result<()> {
        let bytes = (memory_mb as u64 * 1024 * 1024).to_string();
        match self.version {
            Version::V2 => {
                write(&self.dirs[0].join("memory.max"), &bytes)?;
                let weight = (memory_mb as u64 * 100 / 1769).clamp(1, 10_000);
                let _ = write(&self.dirs[0].join("cpu.weight"), &weight.to_string());
            }
            Version::V1 => {
                let mem = &self.dirs[0];
                // memsw must stay >= the limit: lower the limit first, raise memsw first.
                let limit = mem.join("memory.limit_in_bytes");
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if write(&limit, &bytes).is_err() {
                    let _ = write(&memsw, &bytes);
                    write(&limit, &bytes)?;
                }
                let _ = write(&memsw, &bytes);
                let shares = (memory_mb as u64 * 1024 / 1769).max(2);
                let _ = write(&self.dirs[2].join("cpu.shares"), &shares.to_string());
            }
        }
        Ok(())
    }

    /// Opens the `cgroup.procs` files again, for a process that joins later.
    pub(crate) fn open_join(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))?;
                Ok(OwnedFd::from(f))
            })
            .collect()
    }

    /// Descriptors the child writes `0` into to join.
    pub(crate) fn raw_join_fds(&self) -> Vec<RawFd> {
        self.join_fds.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Whether the kernel OOM-killed a process of this instance.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.version {
            Version::V2 => (self.dirs[0].join("memory.events"), "oom_kill"),
            Version::V1 => (self.dirs[0].join("memory.oom_control"), "oom_kill"),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // The server's own parent goes once its instances are gone (the cleaner retries).
        let _ = self.cleaner.send(self.parents.clone());
    }
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        let _ = self.cleaner.send(std::mem::take(&mut self.dirs));
    }
}

/// Kills what is left in dropped cgroups and removes them, retrying while they are busy.
fn cleaner(rx: mpsc::Receiver<Vec<PathBuf>>) {
    let mut pending: Vec<(PathBuf, u32)> = Vec::new();
    loop {
        let msg = if pending.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        if let Some(dirs) = msg {
            pending.extend(dirs.into_iter().map(|d| (d, 0)));
        }
        pending.retain_mut(|(dir, tries)| {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            match fs::remove_dir(dir.as_path()) {
                Ok(()) => false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    *tries += 1;
                    if *tries == 500 {
                        tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove cgroup; still trying");
                    }
                    true
                }
            }
        });
    }
}
