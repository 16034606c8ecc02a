//! Running `nats-server` with what Ignis needs (JetStream, `max_payload` of 16 MiB), alone or as
//! a cluster of several on loopback: for `ignis dev cluster` and for tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server`, from PATH or /usr/sbin (where Debian puts it).
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// `nats-server` for a test: `None` (after saying so on stderr) when it is not installed,
/// unless `IGNIS_REQUIRE_NATS=1`, which makes its absence a failure.
pub fn binary_for_test() -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        assert!(
            std::env::var("IGNIS_REQUIRE_NATS").as_deref() != Ok("1"),
            "IGNIS_REQUIRE_NATS=1 but nats-server is not installed (apt-get install nats-server)"
        );
        eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

/// A `nats-server` child with JetStream; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its name in the cluster.
    pub name: String,
    conf: PathBuf,
    bin: PathBuf,
}

/// Where one server of a cluster listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Clients.
    pub client: u16,
    /// Other servers of the cluster (routes); 0 for a server alone.
    pub cluster: u16,
}

impl NatsServer {
    /// Writes the configuration of server `name` under `dir` (JetStream data in
    /// `dir/<name>`) and starts it; `peers` are the route ports of the other servers of its
    /// cluster. Returns once it accepts clients.
    pub fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        ports: Ports,
        peers: &[u16],
    ) -> std::io::Result<NatsServer> {
        let store = dir.join(name);
        std::fs::create_dir_all(&store)?;
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{}\nmax_payload: 16MB\n\
             jetstream {{\n  store_dir: {:?}\n}}\n",
            ports.client,
            store.display().to_string(),
        );
        if ports.cluster != 0 {
            let routes: Vec<String> = peers
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: ignis\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                ports.cluster,
                routes.join(", ")
            ));
        }
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf)?;
        let mut server = NatsServer {
            child: None,
            port: ports.client,
            name: name.to_string(),
            conf: path,
            bin: bin.to_path_buf(),
        };
        server.restart()?;
        Ok(server)
    }

    /// Starts it again (after [`NatsServer::kill`]) with the same configuration and data.
    pub fn restart(&mut self) -> std::io::Result<()> {
        let log = std::fs::File::create(self.conf.with_extension("log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal reaches only the program that
            // started it (`ignis dev cluster`, a test), which stops it after the nodes.
            .process_group(0)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "nats-server {} did not listen on {} (see {})",
                    self.name,
                    self.port,
                    self.conf.with_extension("log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Starts `n` servers clustered with each other on free loopback ports, data under `dir`.
pub fn start_cluster(bin: &Path, dir: &Path, n: usize) -> std::io::Result<Vec<NatsServer>> {
    let ports: Vec<Ports> = (0..n)
        .map(|_| Ports {
            client: free_port(),
            cluster: if n > 1 { free_port() } else { 0 },
        })
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let peers: Vec<u16> = ports
                .iter()
                .filter(|q| q.cluster != p.cluster)
                .map(|q| q.cluster)
                .collect();
            NatsServer::start(bin, dir, &format!("n{}", i + 1), *p, &peers)
        })
        .collect()
}
