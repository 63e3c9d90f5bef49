//! A `nats-server` of the bench's own, on free loopback ports with its store in a
//! temporary directory (the start logic of `tests/common/nats.rs`, without restarts or
//! clusters). A server on 127.0.0.1:4222 is never used.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One JetStream server, killed when dropped.
pub struct NatsServer {
    port: u16,
    child: Child,
    // Last, so the process is gone before its store is deleted.
    _dir: TempDir,
}

/// The `nats-server` binary: on `PATH`, else where Debian installs it.
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

impl NatsServer {
    /// Starts a server and waits until it accepts clients with JetStream on.
    pub fn start() -> Result<NatsServer, String> {
        let binary = binary().ok_or("nats-server not found (apt-get install nats-server)")?;
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        drop(listeners);
        let (port, monitor) = (ports[0], ports[1]);
        let dir = tempfile::Builder::new()
            .prefix("ormsync-bench-nats-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &monitor.to_string(),
            ])
            .arg("-js")
            .arg("-sd")
            .arg(dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let server = NatsServer {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.ready(monitor) {
            if Instant::now() > deadline {
                return Err("nats-server not ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Clients connect and `/healthz?js-enabled-only=true` answers 200.
    fn ready(&self, monitor: u16) -> bool {
        use std::io::{Read, Write};
        let connect = |port: u16| {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1),
            )
        };
        if connect(self.port).is_err() {
            return false;
        }
        let Ok(mut s) = connect(monitor) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /healthz?js-enabled-only=true HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.split_whitespace().nth(1) == Some("200")
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
