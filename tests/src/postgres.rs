//! A real PostgreSQL (Debian's `postgresql` package) for the tests: a fresh cluster in a
//! temporary directory on a free port, run as the `postgres` user when the tests run as
//! root (the server refuses to run as root), stopped when dropped. And a TCP proxy whose
//! traffic can be cut without closing its connections, as a network partition does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running cluster.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args`, as the `postgres` user when running as root.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Starts a cluster, or `None` when PostgreSQL is not installed (a failure under CI,
    /// which installs it: see [`crate::tool_installed`]).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL must be installed in CI (apt-get install postgresql)"
            );
            eprintln!("PostgreSQL not installed: skipping (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("fleet-pg-")
            .tempdir()
            .expect("a temporary directory");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown the cluster directory",
            );
        }
        let data = dir.path().join("data");
        let data_s = data.display().to_string();
        run(
            as_postgres(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data_s,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            "initdb",
        );
        let port = crate::upstream::free_port();
        let pg = Postgres {
            bin,
            data,
            port,
            dir,
        };
        pg.start_again();
        Some(pg)
    }

    /// Starts the server again after [`Postgres::stop`] (same data, same port).
    pub fn start_again(&self) {
        let dir = self.dir.path();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            dir.display()
        );
        let log = dir.join("server.log").display().to_string();
        let data = self.data.display().to_string();
        run(
            as_postgres(
                &self.bin.join("pg_ctl"),
                &[
                    "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "30", "start",
                ],
            ),
            "pg_ctl start",
        );
    }

    /// Stops the server at once (`immediate`: like a crash, every connection cut).
    pub fn stop(&self) {
        let data = self.data.display().to_string();
        run(
            as_postgres(
                &self.bin.join("pg_ctl"),
                &["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"],
            ),
            "pg_ctl stop",
        );
    }

    /// The connection URL (trust authentication on loopback).
    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// The URL through another port on 127.0.0.1 (a [`Cuttable`] proxy in front of it).
    pub fn url_via(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=2")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        )
        .output();
    }
}

/// A TCP proxy on 127.0.0.1 to `target`; [`Cuttable::cut`] stops all traffic both ways
/// while keeping every connection open (packets lost, not refused: a partition).
pub struct Cuttable {
    /// The proxy's port.
    pub port: u16,
    cut: Arc<AtomicBool>,
}

impl Cuttable {
    /// Starts the proxy on the current runtime.
    pub async fn start(target: u16) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, flag.clone()));
                tokio::spawn(pipe(sr, cw, flag.clone()));
            }
        });
        Cuttable { port, cut }
    }

    /// From now on nothing passes (and new connections hang too).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // Swallow this and everything after, keeping both sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
