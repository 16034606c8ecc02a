//! Unit tests of the launcher: plain process containment always; full isolation as root.

use super::*;
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn spec(script: &str) -> ProcessSpec {
    ProcessSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        code_dir: std::env::temp_dir(),
        runtime_dir: None,
        memory_mb: 128,
        tmp_mb: 16,
        host_network: false,
        data_limit_bytes: None,
        channel: true,
        stdin: false,
        background: false,
        loopback_listeners: Vec::new(),
    }
}

async fn read_all(p: &mut pipe::Receiver) -> String {
    let mut out = Vec::new();
    let _ = p.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn runs_with_channel_and_pipes() {
    let sb = Sandbox::unisolated();
    let mut p = sb
        .spawn(&spec("echo out; echo err >&2; echo chan >&3; ulimit -n"))
        .await
        .unwrap();
    assert!(p.child.wait().await.unwrap().success());
    assert_eq!(read_all(&mut p.stdout).await, "out\n1024\n");
    assert_eq!(read_all(&mut p.stderr).await, "err\n");
    let mut buf = vec![0u8; 64];
    let n = p.channel.as_mut().unwrap().read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"chan\n");
}

#[tokio::test]
async fn kill_takes_the_whole_group() {
    let sb = Sandbox::unisolated();
    let mut p = sb
        .spawn(&spec("sleep 30 & echo $!; sleep 30"))
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let n = p.stdout.read(&mut buf).await.unwrap();
    let grandchild: u32 = std::str::from_utf8(&buf[..n])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    p.kill();
    assert!(!p.child.wait().await.unwrap().success());
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
    let sb = Sandbox::unisolated();
    let mut s = spec("echo \"[$HOME]\"");
    s.channel = false;
    let mut p = sb.spawn(&s).await.unwrap();
    p.child.wait().await.unwrap();
    assert_eq!(read_all(&mut p.stdout).await, "[]\n");
}

/// Full isolation needs root (or user namespaces); CI sets IGNIS_REQUIRE_SANDBOX=1 so that a
/// host without them fails here instead of skipping.
fn isolated() -> Option<Sandbox> {
    let dir = tempfile::tempdir().unwrap().keep();
    let sb = Sandbox::new(SandboxConfig::new(dir.join("root")));
    if sb.protections().namespaces {
        return Some(sb);
    }
    if std::env::var_os("IGNIS_REQUIRE_SANDBOX").is_some() {
        panic!(
            "IGNIS_REQUIRE_SANDBOX is set but namespaces are unavailable: {:?}",
            sb.protections()
        );
    }
    eprintln!("skipped: namespaces are not available on this host");
    None
}

#[tokio::test]
async fn isolated_instance_sees_only_itself() {
    let Some(sb) = isolated() else { return };
    let script = "echo pid=$$; ls /proc | grep -c '^[0-9]'; id -u; hostname; \
                  touch /x 2>/dev/null && echo rootwrite || echo rootro; \
                  touch /tmp/x && echo tmpwrite; ls /code >/dev/null && echo code; \
                  (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null; cat /sys/class/net/lo/operstate 2>/dev/null; echo done";
    let mut s = spec(script);
    s.channel = false;
    s.program = "/bin/bash".into();
    let mut p = sb.spawn(&s).await.unwrap();
    let status = p.child.wait().await.unwrap();
    let out = read_all(&mut p.stdout).await;
    let err = read_all(&mut p.stderr).await;
    assert!(status.success(), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    let procs: u32 = lines[1].parse().unwrap();
    assert!(procs <= 4, "sees only its own processes: {out}");
    let p_ = sb.protections();
    if p_.unprivileged_user && !p_.user_namespace {
        assert_eq!(lines[2], "65534");
    }
    assert_eq!(lines[3], "ignis");
    assert_eq!(lines[4], "rootro");
    assert_eq!(lines[5], "tmpwrite");
    assert_eq!(lines[6], "code");
    assert_eq!(*lines.last().unwrap(), "done");
}

#[tokio::test]
async fn isolated_cgroup_is_removed_after_exit() {
    let Some(sb) = isolated() else { return };
    if sb.protections().cgroups.is_none() {
        eprintln!("skipped: no cgroups");
        return;
    }
    let before = sb.live_cgroups();
    for _ in 0..5 {
        let mut s = spec("true");
        s.channel = false;
        let mut p = sb.spawn(&s).await.unwrap();
        p.child.wait().await.unwrap();
    }
    for _ in 0..200 {
        if sb.live_cgroups() <= before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("cgroups leaked: {} > {before}", sb.live_cgroups());
}

#[tokio::test]
async fn loopback_listener_serves_an_instance_without_network() {
    let Some(sb) = isolated() else { return };
    assert!(sb.own_network(false));
    // The instance connects to 127.0.0.1:9001 of its own network namespace and talks to
    // whoever accepts on the listener it was given: the server, outside that namespace.
    let mut s = spec(
        "exec 5<>/dev/tcp/127.0.0.1/9001 && echo ping >&5 && read reply <&5 && echo \"got $reply\"; \
         [ -e /proc/$$/fd/3 ] && echo 1 || echo 0",
    );
    s.program = "/bin/bash".into();
    s.loopback_listeners = vec![9001];
    s.channel = false;
    let mut p = sb.spawn(&s).await.unwrap();
    assert!(p.channel.is_none(), "the listener replaces the channel");
    assert_eq!(p.listeners.len(), 1);
    let listener = tokio::net::TcpListener::from_std(p.listeners.remove(0)).unwrap();
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the instance connects")
        .unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping\n");
    tokio::io::AsyncWriteExt::write_all(&mut conn, b"pong\n")
        .await
        .unwrap();
    let status = p.child.wait().await.unwrap();
    let out = read_all(&mut p.stdout).await;
    assert!(status.success(), "{out}{}", read_all(&mut p.stderr).await);
    assert_eq!(out, "got pong\n0\n", "no fd 3 and the reply came through");

    // With a channel asked for too, and two ports: both listeners, in order, and the channel
    // as fd 3.
    let mut both = spec(
        "exec 5<>/dev/tcp/127.0.0.1/9400 && echo second >&5; \
         [ -e /proc/$$/fd/3 ] && echo 1 || echo 0",
    );
    both.program = "/bin/bash".into();
    both.loopback_listeners = vec![9001, 9400];
    both.channel = true;
    let mut p = sb.spawn(&both).await.unwrap();
    assert!(p.channel.is_some() && p.listeners.len() == 2);
    let second = tokio::net::TcpListener::from_std(p.listeners.remove(1)).unwrap();
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), second.accept())
        .await
        .expect("the instance connects to its second listener")
        .unwrap();
    let mut buf = [0u8; 7];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"second\n");
    p.child.wait().await.unwrap();
    assert_eq!(read_all(&mut p.stdout).await, "1\n");

    // Where the instance shares the host's network there is nothing to bind it in.
    let mut host = spec("true");
    host.host_network = true;
    host.loopback_listeners = vec![9001];
    assert!(!sb.own_network(true));
    assert!(sb.spawn(&host).await.is_err());
}
