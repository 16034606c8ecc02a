//! The escape suite: from inside a function, try to get out, see what is not ours, or take the
//! platform down. Needs root (namespaces, cgroups); elsewhere it says it skipped, and with
//! IGNIS_REQUIRE_SANDBOX=1 (as in CI) it fails instead.

use crate::harness::*;
use std::time::{Duration, Instant};

/// The server, if its sandbox has every layer on.
fn sandboxed_server(extra: &[&str]) -> Option<Server> {
    let s = Server::start_with(extra);
    let info = s.get("/v1/system/info").json();
    let p = &info["protections"];
    let complete = [
        "namespaces",
        "network_isolation",
        "filesystem_isolation",
        "seccomp",
        "unprivileged_user",
    ]
    .iter()
    .all(|k| p[*k] == true)
        && !p["cgroups"].is_null();
    if complete {
        return Some(s);
    }
    if std::env::var_os("IGNIS_REQUIRE_SANDBOX").is_some() {
        panic!("IGNIS_REQUIRE_SANDBOX is set but the sandbox is incomplete: {p}");
    }
    eprintln!("skipped: the sandbox is incomplete on this host ({p}); run as root on Linux");
    None
}

const PROBE: &str = r#"
import ctypes, errno, os, socket

libc = ctypes.CDLL(None, use_errno=True)

def denied(fn):
    try:
        fn()
        return False
    except OSError:
        return True

def syscall_fails(rc):
    return rc == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES, errno.ENOSYS)

def handler(event, context):
    r = {}
    pids = [p for p in os.listdir('/proc') if p.isdigit()]
    r['pids'] = len(pids)
    r['sees_server'] = str(event['server_pid']) in pids
    r['uid'] = os.getuid()
    with open('/proc/self/status') as f:
        r['cap_eff'] = [l.split()[1] for l in f if l.startswith('CapEff')][0]
    r['read_host_paths'] = [p for p in event['host_paths'] if not denied(lambda p=p: open(p, 'rb').read(1))]
    r['via_proc1_root'] = [p for p in event['host_paths'] if not denied(lambda p=p: open('/proc/1/root' + p, 'rb').read(1))]
    r['write_outside_tmp'] = [p for p in ['/x', '/code/x', '/usr/x', '/etc/x', '/proc/x']
                              if not denied(lambda p=p: open(p, 'w').write('x'))]
    r['tmp_writable'] = not denied(lambda: open('/tmp/ok', 'w').write('x'))
    def fill_tmp():
        with open('/tmp/big', 'wb') as f:
            for _ in range(64):
                f.write(b'\0' * (1024 * 1024))
                f.flush()
    r['tmp_bounded'] = denied(fill_tmp)
    os.remove('/tmp/big') if os.path.exists('/tmp/big') else None
    def connect(port):
        s = socket.create_connection(('127.0.0.1', port), timeout=1)
        s.close()
    r['reached_gateway'] = not denied(lambda: connect(event['gateway_port']))
    r['interfaces'] = sorted(name for _, name in socket.if_nameindex())
    r['mount'] = syscall_fails(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
    r['ptrace'] = syscall_fails(libc.ptrace(0, 0, None, None))
    r['init_module'] = syscall_fails(libc.syscall(175, None, 0, b''))
    r['finit_module'] = syscall_fails(libc.syscall(313, 0, b'', 0))
    r['unshare'] = syscall_fails(libc.unshare(0x10000000))
    r['setns'] = syscall_fails(libc.setns(0, 0))
    r['chroot'] = syscall_fails(libc.chroot(b'/tmp'))
    r['bpf'] = syscall_fails(libc.syscall(321, 0, None, 0))
    r['setuid0'] = denied(lambda: os.setuid(0))
    r['hostname'] = socket.gethostname()
    r['fds'] = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))
    r['fd_targets'] = sorted({os.readlink('/proc/self/fd/%d' % fd).split(':')[0] for fd in r['fds'] if os.path.exists('/proc/self/fd/%d' % fd)})
    r['proc1_cmdline'] = open('/proc/1/cmdline', 'rb').read().split(b'\0')[0].decode()
    return r
"#;

#[test]
fn escape_attempts_fail() {
    let Some(s) = sandboxed_server(&["--zygote", "false"]) else {
        return;
    };
    escape_suite(&s, "python");
}

/// A fully sandboxed server whose python zygote is up.
fn zygote_server() -> Option<Server> {
    let s = sandboxed_server(&[])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get("/v1/system/instances").json()["zygote"].is_null() {
        assert!(Instant::now() < deadline, "the python zygote did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(s)
}

/// The same suite against an instance forked from the python zygote into its sandbox (pid 1 is
/// then the sandbox's holder, `sleep`): it must be every bit as contained.
#[test]
fn escape_attempts_fail_from_a_zygote_fork() {
    let Some(s) = zygote_server() else {
        return;
    };
    escape_suite(&s, "/bin/sleep");
}

fn escape_suite(s: &Server, pid1: &str) {
    assert_eq!(
        s.deploy_file(
            "other",
            "runtime=python&handler=app.handler",
            "app.py",
            "SECRET = 1\ndef handler(e, c):\n    return 1\n"
        )
        .status,
        201
    );
    let other = s.get("/v1/namespaces/default/functions/other").json();
    let other_sha = other["code"]["sha256"].as_str().unwrap();
    let r = s.deploy_file(
        "probe",
        "runtime=python&handler=app.handler&tmp_mb=8",
        "app.py",
        PROBE,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let data = s.dir.join("data");
    let host_paths: Vec<String> = [
        data.join("ignis.db"),
        data.join("admin.key"),
        data.join("code")
            .join(format!("{other_sha}-app.py"))
            .join("app.py"),
        s.dir.join("cli.toml"),
        "/etc/shadow".into(),
        "/root/.bashrc".into(),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    let port: u16 = s.addr.rsplit(':').next().unwrap().parse().unwrap();
    let event =
        serde_json::json!({"host_paths": host_paths, "gateway_port": port, "server_pid": s.pid()});
    let r = s.invoke("probe", &event.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(
        v["pids"].as_u64().unwrap() <= 3,
        "sees only its own processes: {v}"
    );
    assert_eq!(v["sees_server"], false);
    assert_eq!(v["uid"], 65534);
    assert_eq!(v["cap_eff"], "0000000000000000");
    assert_eq!(v["read_host_paths"], serde_json::json!([]), "{v}");
    assert_eq!(v["via_proc1_root"], serde_json::json!([]), "{v}");
    assert_eq!(v["write_outside_tmp"], serde_json::json!([]), "{v}");
    assert_eq!(v["tmp_writable"], true);
    assert_eq!(v["tmp_bounded"], true, "an 8 MiB /tmp refuses 64 MiB");
    assert_eq!(v["reached_gateway"], false);
    assert_eq!(v["interfaces"], serde_json::json!(["lo"]));
    for k in [
        "mount",
        "ptrace",
        "init_module",
        "finit_module",
        "unshare",
        "setns",
        "chroot",
        "bpf",
        "setuid0",
    ] {
        assert_eq!(v[k], true, "{k} must be denied: {v}");
    }
    assert_eq!(v["hostname"], "ignis");
    // Only stdio, the channel and the descriptor listing /proc/self/fd: nothing the server
    // inherited or opened leaks in.
    let max_fd = v["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap())
        .max()
        .unwrap();
    assert!(max_fd <= 5, "descriptors leaked into the instance: {v}");
    assert!(
        v["proc1_cmdline"].as_str().unwrap().contains(pid1),
        "pid 1 should be {pid1}: {v}"
    );
}

/// An instance forked from the zygote reports its exit status and is OOM-killed by its own
/// cgroup like any other; an instance that ran into its limit takes nothing else down.
#[test]
fn zygote_forks_keep_limits_and_exit_statuses() {
    let Some(s) = zygote_server() else {
        return;
    };
    let code = "import os, sys\n\
                def handler(e, c):\n    \
                    if e.get('exit'):\n        \
                        print('leaving', file=sys.stderr, flush=True)\n        \
                        os._exit(e['exit'])\n    \
                    if e.get('hog'):\n        \
                        return len(bytearray(e['hog'] * 1024 * 1024))\n    \
                    return open('/proc/1/cmdline').read().split(chr(0))[0]\n";
    // tmp_mb other than the default: no stem cell fits, so the cold start forks the zygote.
    let r = s.deploy_file(
        "zf",
        "runtime=python&handler=app.handler&memory_mb=128&tmp_mb=16",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.invoke("zf", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        "/bin/sleep",
        "forked from the zygote into a holder"
    );
    let r = s.invoke("zf", r#"{"exit": 3}"#);
    let id = r.header("x-ignis-activation-id").unwrap();
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["status"], "crash", "{a}");
    let msg = a["error"]["message"].as_str().unwrap();
    assert!(msg.contains("status 3") && msg.contains("leaving"), "{msg}");
    let r = s.invoke("zf", r#"{"hog": 512}"#);
    let id = r.header("x-ignis-activation-id").unwrap();
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["status"], "oom", "{a}");
    assert_eq!(s.invoke("zf", r#"{"hog": 16}"#).status, 200);
}

#[test]
fn host_network_is_opt_in() {
    let Some(s) = sandboxed_server(&[]) else {
        return;
    };
    let code = "import socket\ndef handler(e, c):\n    s = socket.create_connection(('127.0.0.1', e['port']), timeout=2)\n    s.close()\n    return 'reached'\n";
    assert_eq!(
        s.deploy_file(
            "net",
            "runtime=python&handler=app.handler&network=host",
            "app.py",
            code
        )
        .status,
        201
    );
    let port: u16 = s.addr.rsplit(':').next().unwrap().parse().unwrap();
    let r = s.invoke("net", &format!(r#"{{"port": {port}}}"#));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), "reached");
    let r = s.deploy_file(
        "bad",
        "runtime=python&handler=app.handler&network=internet",
        "app.py",
        code,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "network");
}

fn host_processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if cmd.contains(needle) && !state.contains(") Z") {
            found.push(format!("{name}: {cmd}"));
        }
    }
    found
}

#[test]
fn no_process_outlives_its_instance() {
    let Some(s) = sandboxed_server(&[]) else {
        return;
    };
    // exec: a fresh process per invocation; a background child dies with it.
    let script = "#!/bin/sh\nsleep 31415 &\nsetsid sleep 31416 &\necho started\n";
    assert_eq!(
        s.deploy_file("bg", "runtime=exec", "bg.sh", script).status,
        201
    );
    let r = s.invoke("bg", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(host_processes_matching("sleep 3141"), Vec::<String>::new());
    // python: a warm instance may keep children while it lives, never after.
    let code = "import subprocess\ndef handler(e, c):\n    subprocess.Popen(['sleep', '27182'], start_new_session=True)\n    return 'spawned'\n";
    assert_eq!(
        s.deploy_file("pybg", "runtime=python&handler=app.handler", "app.py", code)
            .status,
        201
    );
    assert_eq!(s.invoke("pybg", "{}").status, 200);
    assert_eq!(
        s.request("DELETE", "/v1/namespaces/default/functions/pybg", None, b"")
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !host_processes_matching("sleep 27182").is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            host_processes_matching("sleep 27182")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Answers health checks and a small function while `during` runs; returns the slowest answer.
fn keeps_answering<T: Send>(s: &Server, during: impl FnOnce() -> T + Send) -> (T, Duration) {
    assert_eq!(
        s.deploy_file(
            "ping",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 'pong'\n"
        )
        .status,
        201
    );
    assert_eq!(s.invoke("ping", "{}").status, 200);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut worst = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                assert_eq!(s.get("/healthz").status, 200);
                let r = s.invoke("ping", "{}");
                assert_eq!(r.status, 200, "{}", r.text());
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            worst
        });
        let out = during();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, watcher.join().unwrap())
    })
}

#[test]
fn fork_bomb_memory_hog_and_flood_do_not_take_the_platform_down() {
    let Some(s) = sandboxed_server(&[]) else {
        return;
    };
    let bomb = "import os, time\ndef handler(e, c):\n    n = 0\n    while True:\n        try:\n            os.fork()\n            n += 1\n        except OSError:\n            time.sleep(0.01)\n";
    assert_eq!(
        s.deploy_file(
            "bomb",
            "runtime=python&handler=app.handler&timeout_ms=3000",
            "app.py",
            bomb
        )
        .status,
        201
    );
    let hog = "const bufs = []; exports.handler = async () => { while (true) bufs.push(Buffer.alloc(16 * 1024 * 1024, 1)); };";
    assert_eq!(
        s.deploy_file(
            "hog",
            "runtime=node&handler=index.handler&memory_mb=128&timeout_ms=20000",
            "index.js",
            hog
        )
        .status,
        201
    );
    let flood = "import sys\ndef handler(e, c):\n    chunk = b'x' * (1024 * 1024 - 1) + b'\\n'\n    for _ in range(1024):\n        sys.stdout.buffer.write(chunk)\n    return 'flooded'\n";
    assert_eq!(
        s.deploy_file(
            "flood",
            "runtime=python&handler=app.handler&timeout_ms=60000",
            "app.py",
            flood
        )
        .status,
        201
    );

    let ((bomb_r, hog_r, flood_r), worst) = keeps_answering(&s, || {
        let b = s.invoke("bomb", "{}");
        let h = s.invoke("hog", "{}");
        let f = s.invoke("flood", "{}");
        (b, h, f)
    });
    assert!(
        bomb_r.status == 504 || bomb_r.status == 502,
        "{}",
        bomb_r.text()
    );
    assert_eq!(hog_r.status, 502, "{}", hog_r.text());
    assert_eq!(hog_r.error_code(), "oom");
    assert_eq!(flood_r.status, 200, "{}", flood_r.text());
    let id = flood_r.header("x-ignis-activation-id").unwrap();
    let logs = s
        .get(&format!("/v1/namespaces/default/activations/{id}/logs"))
        .json();
    assert_eq!(logs["truncated"], true);
    assert!(
        worst < Duration::from_secs(5),
        "the platform stalled for {worst:?}"
    );
    assert!(host_processes_matching("app.py").is_empty());
}

#[test]
fn cpu_spinner_stops_at_the_deadline() {
    let Some(s) = sandboxed_server(&[]) else {
        return;
    };
    let spin = "def handler(e, c):\n    while True:\n        pass\n";
    assert_eq!(
        s.deploy_file(
            "spin",
            "runtime=python&handler=app.handler&timeout_ms=1000",
            "app.py",
            spin
        )
        .status,
        201
    );
    assert_eq!(
        s.deploy_file(
            "warm",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 1\n"
        )
        .status,
        201
    );
    let r = s.invoke("spin", "{}");
    assert_eq!(r.status, 504, "{}", r.text());
    let id = r.header("x-ignis-activation-id").unwrap();
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["status"], "timeout");
    let d = a["duration_ms"].as_u64().unwrap();
    assert!(
        (1000..=1100).contains(&d),
        "timed out at {d} ms, not 1000 ± 100"
    );
}

#[test]
fn two_hundred_concurrent_sandboxed_instances() {
    let Some(s) = sandboxed_server(&["--queue-per-function", "400"]) else {
        return;
    };
    let script = "#!/bin/sh\nsleep 1\necho \"{\\\"host\\\": \\\"$(hostname)\\\"}\"\n";
    assert_eq!(
        s.deploy_file(
            "wide",
            "runtime=exec&max_instances=200&memory_mb=64&tmp_mb=1",
            "wide.sh",
            script
        )
        .status,
        201
    );
    let (statuses, worst) = keeps_answering(&s, || {
        std::thread::scope(|scope| {
            let hs: Vec<_> = (0..200)
                .map(|_| scope.spawn(|| s.invoke("wide", "{}").status))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<u16>>()
        })
    });
    let ok = statuses.iter().filter(|c| **c == 200).count();
    assert_eq!(ok, 200, "{statuses:?}");
    assert!(
        worst < Duration::from_secs(5),
        "other functions stalled for {worst:?}"
    );
}

/// Counts instance cgroups of this server and zombie children of it.
fn leftovers(s: &Server) -> (usize, usize) {
    let pid = s.pid();
    let mut cgroups = 0;
    for top in ["/sys/fs/cgroup/memory/ignis", "/sys/fs/cgroup/ignis"] {
        let Ok(entries) = std::fs::read_dir(top) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{pid}."))
            {
                cgroups += std::fs::read_dir(e.path())
                    .map(|d| d.flatten().filter(|c| c.path().is_dir()).count())
                    .unwrap_or(0);
            }
        }
    }
    let mut zombies = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat"))
            && let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r)
        {
            let fields: Vec<&str> = rest.split(' ').collect();
            if fields[0] == "Z" && fields[1] == pid.to_string() {
                zombies += 1;
            }
        }
    }
    (cgroups, zombies)
}

#[test]
fn instances_die_with_a_killed_server() {
    let Some(mut s) = sandboxed_server(&[]) else {
        return;
    };
    // The instance is busy (it would not notice its channel closing) when the server dies.
    let code = "import subprocess, time\ndef handler(e, c):\n    subprocess.Popen(['sleep', '16180'], start_new_session=True)\n    time.sleep(60)\n";
    assert_eq!(
        s.deploy_file(
            "orphan",
            "runtime=python&handler=app.handler",
            "app.py",
            code
        )
        .status,
        201
    );
    let addr = s.addr.clone();
    let key = s.key.clone();
    let invocation = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::Write;
        let req = format!(
            "POST /v1/namespaces/default/functions/orphan/invoke HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        c.write_all(req.as_bytes()).unwrap();
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut sink);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_processes_matching("sleep 16180").is_empty() {
        assert!(Instant::now() < deadline, "the function did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill();
    let deadline = Instant::now() + Duration::from_secs(3);
    // The sleeper shares the instance's PID namespace: it is gone only if the instance is.
    while !host_processes_matching("sleep 16180").is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?} outlived the server",
            host_processes_matching("sleep 16180")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    invocation.join().unwrap();
}

#[test]
fn instance_lifecycles_leave_nothing_behind() {
    // Stem cells are live instances by design: without them, nothing should remain.
    let Some(s) = sandboxed_server(&["--keep-alive-secs", "1", "--stem-cells", "0"]) else {
        return;
    };
    let n: usize = std::env::var("IGNIS_LIFECYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    assert_eq!(
        s.deploy_file(
            "once",
            "runtime=exec&max_instances=8&memory_mb=64&tmp_mb=1",
            "once.sh",
            "#!/bin/sh\necho 1\n"
        )
        .status,
        201
    );
    assert_eq!(
        s.deploy_file(
            "crash",
            "runtime=python&handler=app.handler&max_instances=4",
            "app.py",
            "import os\ndef handler(e, c):\n    os._exit(1)\n"
        )
        .status,
        201
    );
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..n / 8 {
                    let (f, expect) = if (i + t) % 10 == 0 {
                        ("crash", 502)
                    } else {
                        ("once", 200)
                    };
                    let r = s.invoke(f, "{}");
                    assert_eq!(r.status, expect, "{}", r.text());
                }
            });
        }
    });
    // Idle instances are reclaimed after the 1 s keep-alive; then nothing may remain.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (cgroups, zombies) = leftovers(&s);
        if cgroups == 0 && zombies == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {cgroups} cgroups, {zombies} zombies"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn require_isolation_refuses_a_host_that_allows_less() {
    // As an unprivileged user the host allows no cgroups: --require-isolation must refuse.
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !setpriv.exists() {
        if std::env::var_os("IGNIS_REQUIRE_SANDBOX").is_some() {
            panic!("IGNIS_REQUIRE_SANDBOX is set but this test needs root and setpriv");
        }
        eprintln!("skipped: needs root and setpriv to run the server as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-cli-config",
            "--require-isolation",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--require-isolation") && err.contains("cgroups"),
        "{err}"
    );
}
