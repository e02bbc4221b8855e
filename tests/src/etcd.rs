//! A real etcd server for tests: Debian's etcd-server on free loopback ports, with its own data
//! directory, stopped when dropped. A missing `etcd` binary fails the test with an install hint.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, restartable) etcd server.
#[derive(Debug)]
pub struct Etcd {
    /// `127.0.0.1:PORT` clients use.
    pub client_addr: String,
    peer_addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start(tag: &str) -> Etcd {
        let data_dir =
            std::env::temp_dir().join(format!("rmicro-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut etcd = Etcd {
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir,
            child: None,
        };
        etcd.resume();
        etcd
    }

    /// Starts an etcd on a chosen client address that is not running yet (see [`Etcd::resume`]).
    pub fn planned(tag: &str) -> Etcd {
        let data_dir =
            std::env::temp_dir().join(format!("rmicro-etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        Etcd {
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir,
            child: None,
        }
    }

    /// (Re)starts the server on the same ports and data directory, and waits until it answers.
    pub fn resume(&mut self) {
        let client_url = format!("http://{}", self.client_addr);
        let peer_url = format!("http://{}", self.peer_addr);
        let log = std::fs::File::create(self.data_dir.with_extension("log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = Command::new("etcd")
            .args(["--name", "rmicro-test", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("rmicro-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start etcd ({e}); install it: apt-get install etcd-server (scripts/test.sh does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.etcdctl(&["endpoint", "health"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "etcd on {} did not become healthy within 20 s",
            self.client_addr
        );
    }

    /// Stops the server (SIGKILL, like a crash; the data directory stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` against this server, returning its stdout.
    ///
    /// # Errors
    ///
    /// Its stderr, when it fails.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.client_addr,
                "--dial-timeout",
                "1s",
                "--command-timeout",
                "2s",
            ])
            .args(args)
            .output()
            .map_err(|e| {
                format!("could not run etcdctl ({e}); install it: apt-get install etcd-client")
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every key under `prefix` with its value.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self
            .etcdctl(&["get", "--prefix", prefix])
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(self.data_dir.with_extension("log"));
    }
}
