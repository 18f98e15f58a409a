//! A throwaway PostgreSQL server.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;

/// A throwaway PostgreSQL server on a free loopback port, with its data in
/// a temporary folder, run by `tests/postgres.sh` (the script the test
/// command's Postgres pass uses); stopped and removed on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    url: String,
}

impl Postgres {
    fn script(action: &str, dir: &Path) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres.sh");
        let out = run(Command::new("bash").arg(script).arg(action).arg(dir));
        assert!(
            out.status.success(),
            "postgres.sh {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Initialises and starts a server.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("tenfold-pg-{:016x}", rand::random::<u64>()));
        let url = Self::script("start", &dir);
        Self { dir, url }
    }

    /// Stops the server at once (clients see their connections drop).
    pub fn stop(&self) {
        Self::script("halt", &self.dir);
    }

    /// Starts the server again, on the same port.
    pub fn resume(&self) {
        Self::script("resume", &self.dir);
    }

    /// The server's main process (`postmaster.pid`; its backends are its
    /// children), if it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""));
        format!("{}/{name}", self.url)
    }

    /// Runs SQL as the superuser; returns its output (unaligned).
    pub fn sql(&self, database: &str, statement: &str) -> String {
        let out = run(Command::new("psql")
            .arg(format!("{}/{database}", self.url))
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(statement));
        assert!(
            out.status.success(),
            "{statement}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        Self::script("stop", &self.dir);
    }
}
