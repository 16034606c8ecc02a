//! Starts a real `ignis serve` on a free port with a temporary data directory, and talks to it
//! over HTTP (a small blocking client, so tests can also send malformed requests) and through
//! the `ignis` CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ignis");

/// A running server. Killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub addr: String,
    pub key: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// The server's log (stderr), kept only by [`Server::start_logging`].
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Counts this server among those running, unless its test runs [`alone`].
    _running: Option<Running>,
}

/// Servers of the tests running now, and whether a test runs alone (a measurement that other
/// tests' load would falsify).
struct Servers {
    running: usize,
    alone: bool,
}

static SERVERS: Mutex<Servers> = Mutex::new(Servers {
    running: 0,
    alone: false,
});
static SERVERS_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    static ALONE_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn servers() -> std::sync::MutexGuard<'static, Servers> {
    SERVERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// One running server, counted while it lives.
struct Running;

impl Running {
    /// Waits while a test runs alone (not this one), then counts a server.
    fn start() -> Option<Running> {
        if ALONE_HERE.with(|a| a.get()) {
            return None;
        }
        let mut s = servers();
        while s.alone {
            s = SERVERS_CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.running += 1;
        Some(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        servers().running -= 1;
        SERVERS_CHANGED.notify_all();
    }
}

/// While the returned guard lives, this test's servers are the only ones: it waits until no other
/// test has a server, and other tests wait to start theirs until it is dropped.
pub fn alone() -> Alone {
    let mut s = servers();
    while s.running > 0 || s.alone {
        s = SERVERS_CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.alone = true;
    ALONE_HERE.with(|a| a.set(true));
    Alone
}

/// See [`alone`].
pub struct Alone;

/// Counts servers started some other way (by `ignis dev cluster`) among those running while
/// it lives, so that a test running [`alone`] waits for them.
pub struct Counted {
    _running: Option<Running>,
}

/// See [`Counted`].
pub fn counted() -> Counted {
    Counted {
        _running: Running::start(),
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE_HERE.with(|a| a.set(false));
        servers().alone = false;
        SERVERS_CHANGED.notify_all();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text()))
            .to_string()
    }
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::launch(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data directory (a restart).
    pub fn launch(dir: &Path, extra: &[&str]) -> Server {
        Self::launch_on(dir, "127.0.0.1:0", extra)
    }

    pub fn launch_on(dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Self::launch_env(dir, listen, extra, &[])
    }

    /// Starts a server with extra environment variables, in a fresh temporary directory.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::launch_env(&dir, "127.0.0.1:0", extra, env);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server whose log (at `filter`, an `IGNIS_LOG` value) is kept in `stderr`.
    pub fn start_logging(extra: &[&str], filter: &str) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::launch_full(&dir, "127.0.0.1:0", extra, &[("IGNIS_LOG", filter)], true);
        s._tmp = Some(tmp);
        s
    }

    /// The server's log so far (with [`Server::start_logging`]).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn launch_env(dir: &Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch_full(dir, listen, extra, env, false)
    }

    fn launch_full(
        dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        keep_log: bool,
    ) -> Server {
        let running = Running::start();
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", listen])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .env("IGNIS_CONFIG", dir.join("cli.toml"))
            .env("HOME", dir)
            .env_remove("IGNIS_URL")
            .env_remove("IGNIS_KEY")
            .env("IGNIS_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if keep_log {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("start ignis serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("ignis serve did not print its address");
        let key = std::fs::read_to_string(dir.join("data/admin.key"))
            .expect("admin.key")
            .trim()
            .to_string();
        let addr = url.trim_start_matches("http://").to_string();
        Server {
            child: Some(child),
            url,
            addr,
            key,
            dir: dir.to_path_buf(),
            _tmp: None,
            stdout: lines,
            stderr: log,
            _running: running,
        }
    }

    /// A server started elsewhere (not stopped when dropped).
    pub fn attach(addr: &str, key: &str, dir: &Path) -> Server {
        Server {
            child: None,
            url: format!("http://{addr}"),
            addr: addr.to_string(),
            key: key.to_string(),
            dir: dir.to_path_buf(),
            _tmp: None,
            stdout: Arc::default(),
            stderr: Arc::default(),
            _running: None,
        }
    }

    /// Takes the temporary directory out, so that it outlives this server (for restarts).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Waits (up to 5 s) until the server printed `needle`; returns everything printed.
    pub fn wait_stdout(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stdout_text();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Waits for a server that was signalled elsewhere to exit.
    pub fn stop_wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Resp {
        self.raw_request(
            method,
            path,
            &[("authorization", &format!("Bearer {}", self.key))],
            content_type,
            body,
        )
    }

    pub fn raw_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Resp {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(ct) = content_type {
            req.push_str(&format!("content-type: {ct}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        // The server may answer (e.g. 413) before reading the whole body.
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        if let Err(e) = s.read_to_end(&mut raw)
            && raw.is_empty()
        {
            panic!("{method} {path}: no response: {e}");
        }
        parse_response(&raw)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, b"")
    }

    pub fn invoke(&self, name: &str, body: &str) -> Resp {
        self.request(
            "POST",
            &format!("/v1/namespaces/default/functions/{name}/invoke"),
            Some("application/json"),
            body.as_bytes(),
        )
    }

    /// Deploys a single file through the raw API.
    pub fn deploy_file(&self, name: &str, query: &str, filename: &str, code: &str) -> Resp {
        self.request(
            "PUT",
            &format!("/v1/namespaces/default/functions/{name}?{query}&filename={filename}"),
            Some("application/octet-stream"),
            code.as_bytes(),
        )
    }

    /// Runs the CLI against this server (credentials through the environment).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("IGNIS_URL", &self.url)
            .env("IGNIS_KEY", &self.key)
            .env("IGNIS_CONFIG", self.dir.join("no-such-cli.toml"))
            .env("HOME", &self.dir)
            .output()
            .expect("run ignis")
    }

    /// Runs the CLI with no credentials but the config file `ignis serve` wrote.
    pub fn cli_with_config(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env_remove("IGNIS_URL")
            .env_remove("IGNIS_KEY")
            .env("IGNIS_CONFIG", self.dir.join("cli.toml"))
            .env("HOME", &self.dir)
            .output()
            .expect("run ignis")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..pos])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

/// Writes files into a fresh directory and returns it.
pub fn code_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = d.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if name.ends_with(".sh") || !name.contains('.') {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    d
}

/// Waits (up to `secs`) until the activation `id` is recorded, and returns it.
pub fn wait_activation(s: &Server, id: &str, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = s.get(&format!("/v1/namespaces/default/activations/{id}"));
        if r.status == 200 {
            return r.json();
        }
        assert!(Instant::now() < deadline, "activation {id} never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts a CLI run succeeded and returns its stdout.
/// The string `field` of every object of a JSON array.
pub fn names_in(list: &serde_json::Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_string())
        .collect()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads one HTTP/1.1 request from `stream`, answers `200` with no body and closes: returns
/// the request's body (`None` if it was cut short). For tests' tiny HTTP sinks.
pub fn answer_one_request(stream: TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream);
    let mut len = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let _ = reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    Some(body)
}

/// A field of `/proc/<pid>/status` counted in kB (`VmRSS`, `VmHWM`, …), in KiB.
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Makes trigger `trigger` and a rule `rule` from it to `function` in the default namespace,
/// fires it with `payload` and returns the activation the rule caused, once it has ended.
pub fn fire_through_rule(
    s: &Server,
    trigger: &str,
    rule: &str,
    function: &str,
    payload: &str,
) -> serde_json::Value {
    let put = |path: &str, body: &str| {
        s.request(
            "PUT",
            &format!("/v1/namespaces/default{path}"),
            Some("application/json"),
            body.as_bytes(),
        )
    };
    assert_eq!(put(&format!("/triggers/{trigger}"), "{}").status, 201);
    let body = format!(r#"{{"trigger":"{trigger}","function":"{function}"}}"#);
    assert_eq!(put(&format!("/rules/{rule}"), &body).status, 201);
    let r = s.request(
        "POST",
        &format!("/v1/namespaces/default/triggers/{trigger}/fire"),
        Some("application/json"),
        payload.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["activations"][0]["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_activation(s, &id, 20)
}

/// The scheduled times a trigger fired for, oldest first.
pub fn scheduled_times(s: &Server, trigger: &str) -> Vec<u64> {
    let f = s
        .get(&format!(
            "/v1/namespaces/default/triggers/{trigger}/firings?limit=1000"
        ))
        .json();
    let mut t: Vec<u64> = f["firings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["scheduled_ms"].as_u64().unwrap())
        .collect();
    t.sort();
    t
}
