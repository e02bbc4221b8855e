//! A real etcd server for tests: Debian's etcd-server on free loopback ports, with its own data
//! directory, stopped when dropped. A missing `etcd` binary fails the test with an install hint.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, restartable) etcd server.
#[derive(Debug)]
pub struct Etcd {
    /// `127.0.0.1:PORT` clients use.
    pub client_addr: String,
    peer_addr: String,
    /// The member's name, and `--initial-cluster` (every member's `name=peer URL`).
    name: String,
    initial_cluster: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start(tag: &str) -> Etcd {
        let mut etcd = Etcd::planned(tag);
        etcd.resume();
        etcd
    }

    /// Starts an etcd on a chosen client address that is not running yet (see [`Etcd::resume`]).
    pub fn planned(tag: &str) -> Etcd {
        let peer_addr = format!("127.0.0.1:{}", crate::free_port());
        Etcd::member(
            tag,
            "rmicro-test",
            peer_addr.clone(),
            format!("rmicro-test=http://{peer_addr}"),
        )
    }

    /// One member of a cluster, not running yet.
    fn member(tag: &str, name: &str, peer_addr: String, initial_cluster: String) -> Etcd {
        let data_dir =
            std::env::temp_dir().join(format!("rmicro-etcd-{tag}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        Etcd {
            client_addr: format!("127.0.0.1:{}", crate::free_port()),
            peer_addr,
            name: name.to_string(),
            initial_cluster,
            data_dir,
            child: None,
        }
    }

    /// (Re)starts the server on the same ports and data directory, and waits until it answers.
    pub fn resume(&mut self) {
        self.spawn();
        self.wait_healthy();
    }

    /// Starts the process, without waiting.
    fn spawn(&mut self) {
        let client_url = format!("http://{}", self.client_addr);
        let peer_url = format!("http://{}", self.peer_addr);
        let log = std::fs::File::create(self.data_dir.with_extension("log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = Command::new("etcd")
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start etcd ({e}); install it: apt-get install etcd-server (scripts/test.sh does)")
            });
        self.child = Some(child);
    }

    /// Waits until the server answers (a linearizable read: a member of a cluster answers once
    /// the cluster has a leader).
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.etcdctl(&["endpoint", "health"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // What etcd said is in its log, which is removed with the server: quoted here.
        let exited = self
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
            .map_or_else(String::new, |status| format!(" (it exited: {status})"));
        let log = std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        panic!(
            "etcd on {} (peers on {}) did not become healthy within 20 s{exited}; the end of its \
             log:\n{}",
            self.client_addr,
            self.peer_addr,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// Stops the server (SIGKILL, like a crash; the data directory stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and removes its data: resumed, it is a new, empty cluster (as an etcd
    /// replaced or restored from nothing).
    pub fn wipe(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Freezes the server (SIGSTOP), as a stalled etcd (a long disk sync, a paused VM): its
    /// connections stay open and nothing answers until [`Etcd::unpause`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn unpause(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("etcd is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} etcd");
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

    /// Puts every `(key, value)` pair, in transactions of at most 128 puts (etcd's default
    /// limit per transaction) through `etcdctl txn`: one process per 128 keys, not per key.
    ///
    /// # Panics
    ///
    /// When etcdctl cannot be run or a transaction fails.
    pub fn put_many(&self, pairs: &[(String, String)]) {
        use std::io::Write;
        for chunk in pairs.chunks(128) {
            // No comparisons, the puts as the success branch, no failure branch. Keys and
            // values are Go-quoted (JSON string escapes are a subset for ASCII).
            let mut script = String::from("\n");
            for (key, value) in chunk {
                let quote = |s: &str| serde_json::Value::from(s).to_string();
                script.push_str(&format!("put {} {}\n", quote(key), quote(value)));
            }
            script.push_str("\n\n");
            let mut child = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &self.client_addr,
                    "--command-timeout",
                    "10s",
                    "txn",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("could not run etcdctl ({e}); install it: apt-get install etcd-client")
                });
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "etcdctl txn: {}",
                String::from_utf8_lossy(&out.stderr)
            );
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

/// An etcd cluster of several members on loopback, each its own process (and killed when
/// dropped), for what a single server cannot show: a member that loses its leader.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members; each one's `client_addr` reaches that member only.
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one answers.
    pub fn start(tag: &str, size: usize) -> EtcdCluster {
        let peers: Vec<String> = (0..size)
            .map(|_| format!("127.0.0.1:{}", crate::free_port()))
            .collect();
        let initial_cluster = peers
            .iter()
            .enumerate()
            .map(|(i, peer)| format!("m{i}=http://{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = peers
            .into_iter()
            .enumerate()
            .map(|(i, peer)| Etcd::member(tag, &format!("m{i}"), peer, initial_cluster.clone()))
            .collect();
        for member in &mut members {
            member.spawn();
        }
        for member in &mut members {
            member.wait_healthy();
        }
        EtcdCluster { members }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(self.data_dir.with_extension("log"));
    }
}

/// Certificates for a TLS etcd: a CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, made with the `openssl` command.
#[derive(Debug)]
pub struct TestCerts {
    /// The directory holding `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`.
    pub dir: PathBuf,
}

impl TestCerts {
    /// Makes the certificates (1-day validity) in a fresh directory.
    pub fn new(tag: &str) -> TestCerts {
        let dir = std::env::temp_dir().join(format!("rmicro-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| {
                    panic!("could not run openssl ({e}); install it: apt-get install openssl")
                });
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=rmicro-test-ca",
        ]);
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={name}")]);
            run(&["x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &format!("{name}.pem"), "-days", "1", "-extfile", &format!("{name}.ext")]);
        }
        TestCerts { dir }
    }

    /// The contents of one of the files.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An etcd that serves clients over TLS and requires client certificates.
#[derive(Debug)]
pub struct TlsEtcd {
    /// `127.0.0.1:PORT` clients use (with TLS).
    pub client_addr: String,
    child: Child,
    data_dir: PathBuf,
}

impl TlsEtcd {
    /// Starts it with `certs` and waits until it answers.
    pub fn start(tag: &str, certs: &TestCerts) -> TlsEtcd {
        let data_dir =
            std::env::temp_dir().join(format!("rmicro-etcd-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let client_addr = format!("127.0.0.1:{}", crate::free_port());
        let peer = format!("http://127.0.0.1:{}", crate::free_port());
        let url = format!("https://{client_addr}");
        let p = |n: &str| certs.dir.join(n).display().to_string();
        let child = Command::new("etcd")
            .args(["--name", "rmicro-tls", "--data-dir"])
            .arg(&data_dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("rmicro-tls={peer}")])
            .args([
                "--cert-file",
                &p("server.pem"),
                "--key-file",
                &p("server.key"),
            ])
            .args(["--trusted-ca-file", &p("ca.pem"), "--client-cert-auth"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start etcd ({e}); install it: apt-get install etcd-server")
            });
        let etcd = TlsEtcd {
            client_addr,
            child,
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &url,
                    "--cacert",
                    &p("ca.pem"),
                    "--cert",
                    &p("client.pem"),
                    "--key",
                    &p("client.key"),
                ])
                .args(["--dial-timeout", "1s", "endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "TLS etcd on {} did not become healthy within 20 s",
            etcd.client_addr
        );
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
