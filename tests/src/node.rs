//! One `tenfold-node` process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::clients::Curl;
use crate::process::{Proc, bin, free_port, log_file, wait_for_port};

/// One `tenfold-node` process.
#[derive(Debug)]
pub struct Node {
    pub proc: Proc,
    pub addr: String,
    /// `https` when started with `--tls-cert`.
    pub scheme: &'static str,
    pub data: PathBuf,
    pub access_key: String,
    pub secret_key: String,
}

impl Node {
    /// Starts a node under `dir` with the given capacity (e.g. `1GiB`).
    pub fn start(dir: &Path, name: &str, capacity: &str) -> Self {
        Self::start_with(dir, name, capacity, &[])
    }

    /// Like [`Node::start`], with extra command-line arguments.
    pub fn start_with(dir: &Path, name: &str, capacity: &str, extra: &[String]) -> Self {
        let data = dir.join(name);
        let addr = format!("127.0.0.1:{}", free_port());
        let access_key = format!("{name}-key");
        let secret_key = format!("{name}-secret");
        let child = Command::new(bin("tenfold-node"))
            .args([
                "--data",
                data.to_str().unwrap(),
                "--listen",
                &addr,
                "--capacity",
                capacity,
            ])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("{name}.log")))
            .spawn()
            .expect("spawn tenfold-node");
        let mut proc = Proc(child);
        wait_for_port(&addr, &mut proc.0);
        Self {
            proc,
            addr,
            scheme: if extra.iter().any(|a| a == "--tls-cert") {
                "https"
            } else {
                "http"
            },
            data,
            access_key,
            secret_key,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The node's `/health` report (its certificate is not checked here).
    pub fn health(&self) -> serde_json::Value {
        let answer = Curl::new()
            .args(&["-k"])
            .fetch(&format!("{}/health", self.endpoint()));
        assert_eq!(answer.status, 200, "GET /health: {}", answer.body);
        serde_json::from_str(&answer.body).expect("health JSON")
    }

    /// Objects the node has opened for reading since it started.
    pub fn objects_read(&self) -> u64 {
        self.health()["objects_read"]
            .as_u64()
            .expect("objects_read")
    }

    /// Files holding fragments on this node, with the object key each holds
    /// (a node names a file by the hex of its key, cut into folders).
    pub fn object_keys(&self) -> Vec<(PathBuf, String)> {
        let root = self.data.join("buckets");
        self.object_files()
            .into_iter()
            .filter_map(|file| {
                let rel = file.strip_prefix(&root).ok()?;
                // The first component is the bucket.
                let hex: String = rel
                    .iter()
                    .skip(1)
                    .map(|c| c.to_string_lossy().trim_end_matches(".obj").to_owned())
                    .collect();
                let key = String::from_utf8(hex::decode(hex).ok()?).ok()?;
                Some((file, key))
            })
            .collect()
    }

    /// Files holding fragments on this node.
    pub fn object_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "obj") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data.join("buckets"), &mut out);
        out
    }
}
