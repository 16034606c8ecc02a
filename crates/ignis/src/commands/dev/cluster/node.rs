//! One node of `ignis dev cluster`: an `ignis serve` child, its output and its banner.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Interrupted, START_TIMEOUT, Signals};

/// What a node does: `ignis serve --role gateway` or `--role invoker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Gateway,
    Invoker,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Invoker => "invoker",
        }
    }
}

/// What a node's banner told.
pub(super) enum Banner {
    Listening(String),
    CliConfig(String),
}

/// One `ignis serve` child.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) role: Role,
    pub(super) data_dir: PathBuf,
    pub(super) log: PathBuf,
    pub(super) child: Child,
    pub(super) banner: mpsc::Receiver<Banner>,
    pub(super) url: Option<String>,
    pub(super) cli_config: Option<String>,
    /// How it ended, once it has.
    pub(super) exited: Option<ExitStatus>,
}

impl Node {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has ended (and notes how, the first time).
    pub(super) fn ended(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_some()
    }

    /// Reads what its banner said so far.
    pub(super) fn read_banner(&mut self) {
        while let Ok(line) = self.banner.try_recv() {
            match line {
                Banner::Listening(url) => self.url = Some(url),
                Banner::CliConfig(path) => self.cli_config = Some(path),
            }
        }
    }
}

/// How every node is started.
pub(super) struct Launch<'a> {
    pub(super) exe: &'a Path,
    pub(super) nats_urls: &'a str,
    pub(super) replicas: usize,
    pub(super) base: &'a Path,
}

/// Starts `ignis serve` for one node; `cli_config`: whether it may write the CLI config.
pub(super) fn spawn_node(
    l: &Launch,
    name: &str,
    role: Role,
    cli_config: bool,
) -> anyhow::Result<Node> {
    let data_dir = l.base.join(name);
    let log_path = l.base.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = Command::new(l.exe);
    cmd.arg("serve")
        .args(["--cluster", l.nats_urls])
        .args(["--role", role.as_str()])
        .args(["--node-name", name])
        .arg("--cluster-replicas")
        .arg(l.replicas.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", "127.0.0.1:0"]);
    if !cli_config {
        cmd.arg("--no-cli-config");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        .process_group(0);
    // SAFETY: the hook makes one system call (prctl, async-signal-safe) and allocates nothing.
    unsafe {
        cmd.pre_exec(stop_with_parent);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} serve", l.exe.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("dev-{name}"))
        .spawn(move || copy_output(stdout, log, tx))
        .context("cannot start a thread")?;
    Ok(Node {
        name: name.to_string(),
        role,
        data_dir,
        log: log_path,
        child,
        banner: rx,
        url: None,
        cli_config: None,
        exited: None,
    })
}

/// In the child, before exec: SIGTERM (a graceful stop) when this process dies, even killed.
/// The signal follows the thread that forked: the main thread, which lives until the end.
fn stop_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies a node's stdout into its log, telling what its banner says on the way.
pub(super) fn copy_output(stdout: ChildStdout, mut log: File, banner: mpsc::Sender<Banner>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(url) = line.split("listening on ").nth(1) {
            let _ = banner.send(Banner::Listening(url.trim().to_string()));
        } else if let Some(rest) = line.trim_start().strip_prefix("CLI config written to ")
            && let Some((path, _)) = rest.split_once(": `")
        {
            let _ = banner.send(Banner::CliConfig(path.to_string()));
        }
        let _ = writeln!(log, "{line}");
    }
}

/// Waits until `node` says where it listens.
pub(super) fn wait_listening(node: &mut Node, signals: &Signals) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match node.banner.recv_timeout(Duration::from_millis(100)) {
            Ok(Banner::Listening(url)) => {
                node.url = Some(url);
                return Ok(());
            }
            Ok(Banner::CliConfig(path)) => node.cli_config = Some(path),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Its output is closed: it is ending.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100))
            }
        }
        if node.ended() {
            anyhow::bail!(
                "{} exited before it listened ({}); the end of its log ({}):\n{}",
                node.name,
                node.exited.expect("ended"),
                node.log.display(),
                tail(&node.log, 12)
            );
        }
        if signals.received() > 0 {
            return Err(Interrupted.into());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} did not listen within {} s (see {})",
                node.name,
                START_TIMEOUT.as_secs(),
                node.log.display()
            );
        }
    }
}

/// The last `n` lines of a file, indented.
pub(super) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_are_read_from_the_output() {
        let (tx, rx) = mpsc::channel();
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("n.log")).unwrap();
        let mut child = Command::new("printf")
            .arg(
                "joining the cluster\nIgnis 0.1.0 listening on http://127.0.0.1:4711\n  \
                 CLI config written to /x/cli.toml: `ignis fn list` works from here\n",
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        copy_output(child.stdout.take().unwrap(), log, tx);
        child.wait().unwrap();
        let got: Vec<String> = rx
            .try_iter()
            .map(|b| match b {
                Banner::Listening(u) => format!("url {u}"),
                Banner::CliConfig(p) => format!("cli {p}"),
            })
            .collect();
        assert_eq!(got, ["url http://127.0.0.1:4711", "cli /x/cli.toml"]);
        let logged = std::fs::read_to_string(dir.path().join("n.log")).unwrap();
        assert_eq!(logged.lines().count(), 3);
        assert!(tail(&dir.path().join("n.log"), 1).contains("CLI config"));
    }
}
