//! `nats-server` processes started by the tests themselves, one server or a JetStream
//! cluster, each on free loopback ports with its own store in a temporary directory, so
//! tests run in parallel and a test can kill and restart a server. A server already
//! running on 127.0.0.1:4222 (a system service) is never used.
//!
//! Everything here blocks the calling thread while it waits (at most [`READY_TIMEOUT`]):
//! call it from a `multi_thread` tokio test, or through `spawn_blocking`, when tasks must
//! keep running meanwhile.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to be ready, and a cluster to elect a meta leader. An
/// election alone takes 4 to 9 s on 2.9 (its Raft election timeout) after the leader dies.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(50);

/// The `nats-server` binary: on `PATH`, else where Debian installs it (`/usr/sbin`, which is
/// not on every user's `PATH`).
fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|f| f.is_file())
}

/// The binary, or `None` after saying the test skipped; panics instead under
/// `ORMSYNC_REQUIRE_SERVERS`, as the database tests do.
fn binary_or_skip() -> Option<PathBuf> {
    let found = binary();
    if found.is_none() {
        if super::servers_required() {
            panic!(
                "nats-server not found (install it: apt-get install nats-server); \
                 ORMSYNC_REQUIRE_SERVERS is set, so this fails"
            );
        }
        eprintln!("skipped: nats-server not found");
    }
    found
}

/// `n` distinct free loopback ports. The listeners are held until all are taken so no
/// port comes twice; the server binds them a moment later (a small, accepted race).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// GET `path` on 127.0.0.1:`port` over HTTP/1.0 (the server closes the connection after
/// answering, so reading to the end is the whole answer): the status code and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// Polls `ready` until it holds or [`READY_TIMEOUT`] passes; `Err` on the timeout.
fn poll_until(mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready() {
        if Instant::now() > deadline {
            return Err(());
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// The last `n` lines of a log file, to show with a failure.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `nats-server` with JetStream, killed when dropped. Its ports and store directory
/// stay the same across [`kill`](Self::kill) and [`restart`](Self::restart), as a real
/// server's would.
pub struct NatsServer {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    port: u16,
    monitor_port: u16,
    log: PathBuf,
    child: Option<Child>,
    // Last, so the process is gone (Drop) before its store is deleted.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a single server and waits until it is ready; `None` (the test skips) when
    /// `nats-server` is not installed.
    pub fn start() -> Option<NatsServer> {
        let binary = binary_or_skip()?;
        let [port, monitor_port] = free_ports(2)[..] else {
            unreachable!()
        };
        let mut server = NatsServer::new(binary, "single".into(), port, monitor_port, &[]);
        server.launch();
        server.wait_ready();
        Some(server)
    }

    /// A server not yet launched, listening on `port` (clients) and `monitor_port` (HTTP),
    /// with `extra` arguments (cluster flags).
    fn new(
        binary: PathBuf,
        name: String,
        port: u16,
        monitor_port: u16,
        extra: &[String],
    ) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("ormsync-nats-")
            .tempdir()
            .expect("temporary directory");
        let store = dir.path().join("store");
        let mut args: Vec<String> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor_port.to_string(),
            "-n".into(),
            name.clone(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
        ];
        args.extend_from_slice(extra);
        NatsServer {
            log: dir.path().join("server.log"),
            name,
            binary,
            args,
            port,
            monitor_port,
            child: None,
            dir,
        }
    }

    /// Spawns the process, its output appended to the log so a restart keeps the history.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let err = log.try_clone().expect("clone the log handle");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// The server's process id while it runs (a bench reads its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's name (`-n`), which the cluster's `/jsz` reports as the meta leader.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file holding the server's output, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The store directory given to `-sd`, kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the process has been started and not killed (nor died on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// GET `path` (such as `/jsz` or `/varz`) on the monitoring port: the status code and
    /// the body, or `None` when the server does not answer.
    pub fn monitor(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.monitor_port, path)
    }

    /// Whether the server accepts clients and its JetStream is enabled. In a cluster that
    /// says nothing of the meta group: see [`NatsCluster::wait_for_meta_leader`].
    pub fn is_ready(&self) -> bool {
        let client = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&client, Duration::from_secs(1)).is_ok()
            && matches!(
                self.monitor("/healthz?js-enabled-only=true"),
                Some((200, _))
            )
    }

    /// Whether `/healthz` answers 200: in a cluster, the server is in contact with the meta
    /// leader and caught up with it, and so are the streams and consumers it holds.
    pub fn is_healthy(&self) -> bool {
        matches!(self.monitor("/healthz"), Some((200, _)))
    }

    /// The meta leader's name as this server sees it (`meta_cluster.leader` of `/jsz`);
    /// `None` for a single server, or while the cluster has no leader. A follower keeps
    /// naming a dead leader for seconds, until a new one is elected.
    pub fn meta_leader(&self) -> Option<String> {
        let (200, body) = self.monitor("/jsz")? else {
            return None;
        };
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_string())
    }

    /// Waits until [`is_ready`](Self::is_ready); panics with the end of the log after
    /// [`READY_TIMEOUT`], or at once if the process exits.
    pub fn wait_ready(&mut self) {
        let mut exited = None;
        let ready = poll_until(|| {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            self.is_ready()
        });
        if let Some(status) = exited {
            self.child = None;
            self.fail(&format!("exited ({status}) while starting"));
        }
        if ready.is_err() {
            self.fail(&format!("not ready within {READY_TIMEOUT:?}"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "nats-server {} ({}) {what}; log {}:\n{}",
            self.name,
            self.url(),
            self.log.display(),
            tail(&self.log, 30)
        )
    }

    /// Kills the process with SIGKILL (a crash: nothing flushed, no goodbye to the
    /// cluster) and waits for it to exit. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same ports with the same
    /// store, and waits until it is ready. A cluster node is then not yet caught up with
    /// the others: [`NatsCluster::wait_for_meta_leader`] waits for that.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_ready();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of `nats-server`s on loopback, every node routed to every other,
/// to test a client through the loss and return of a node.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes (`n0`, `n1`, …) forming one cluster and waits until every node is
    /// ready and the cluster is settled ([`wait_for_meta_leader`](Self::wait_for_meta_leader));
    /// `None` (the test skips) when `nats-server` is not installed.
    pub fn start(n: usize) -> Option<NatsCluster> {
        assert!(n >= 1, "a cluster needs a node");
        let binary = binary_or_skip()?;
        let ports = free_ports(3 * n);
        let (client, rest) = ports.split_at(n);
        let (cluster, monitor) = rest.split_at(n);
        let cluster_name = format!("ormsync-{}-{}", std::process::id(), client[0]);
        let nodes = (0..n)
            .map(|i| {
                let routes: Vec<String> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| format!("nats://127.0.0.1:{}", cluster[j]))
                    .collect();
                let extra = [
                    "--cluster".to_string(),
                    format!("nats://127.0.0.1:{}", cluster[i]),
                    "--cluster_name".to_string(),
                    cluster_name.clone(),
                    "--routes".to_string(),
                    routes.join(","),
                ];
                NatsServer::new(
                    binary.clone(),
                    format!("n{i}"),
                    client[i],
                    monitor[i],
                    &extra,
                )
            })
            .collect();
        let mut cluster = NatsCluster { nodes };
        // All launched before any is waited on, so that they boot side by side.
        for node in &mut cluster.nodes {
            node.launch();
        }
        for node in &mut cluster.nodes {
            node.wait_ready();
        }
        cluster.wait_for_meta_leader();
        Some(cluster)
    }

    /// The client URLs of every node, comma-joined, for a client that takes several and
    /// moves to another when one dies.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`, to [`kill`](NatsServer::kill) and [`restart`](NatsServer::restart) it.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the meta leader, when every running node names the same running
    /// node. A follower's view alone is not enough: it names the dead leader for seconds.
    pub fn meta_leader(&mut self) -> Option<usize> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        let mut agreed: Option<String> = None;
        for &i in &running {
            let leader = self.nodes[i].meta_leader()?;
            if agreed.as_ref().is_some_and(|a| *a != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        let agreed = agreed?;
        running
            .into_iter()
            .find(|&i| self.nodes[i].name() == agreed)
    }

    /// Waits until the running nodes agree on a meta leader among them and every one is
    /// [healthy](NatsServer::is_healthy) (after a kill of the leader, a new election:
    /// 4 to 9 s on 2.9), and returns the leader's index; panics with the end of every log
    /// after [`READY_TIMEOUT`].
    pub fn wait_for_meta_leader(&mut self) -> usize {
        let mut leader = None;
        if poll_until(|| {
            leader = self.meta_leader();
            leader.is_some()
                && self
                    .nodes
                    .iter_mut()
                    .all(|n| !n.is_running() || n.is_healthy())
        })
        .is_err()
        {
            let logs: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "--- {} (sees leader {:?}, healthy {}), log {}:\n{}",
                        n.name(),
                        n.meta_leader(),
                        n.is_healthy(),
                        n.log_path().display(),
                        tail(n.log_path(), 15)
                    )
                })
                .collect();
            panic!(
                "no meta leader agreed on within {READY_TIMEOUT:?}\n{}",
                logs.join("\n")
            );
        }
        leader.expect("a leader")
    }
}
