//! One `tenfold-node` process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::clients::Curl;
use crate::process::{Proc, bin, free_port, wait_for_port};

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
    /// Its command line, to start it again.
    args: Vec<String>,
    log: PathBuf,
}

/// Starts `tenfold-node ARGS`, logging to `log` (appended), and waits for
/// it to listen on `addr`.
fn spawn_node(args: &[String], log: &Path, addr: &str) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("node log");
    let child = Command::new(bin("tenfold-node"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn tenfold-node");
    let mut proc = Proc(child);
    wait_for_port(addr, &mut proc.0);
    proc
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
        let mut args: Vec<String> = [
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &addr,
            "--capacity",
            capacity,
            "--access-key",
            &format!("{name}-key"),
            "--secret-key",
            &format!("{name}-secret"),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.extend(extra.iter().cloned());
        let log = dir.join(format!("{name}.log"));
        let proc = spawn_node(&args, &log, &addr);
        Self {
            proc,
            scheme: if extra.iter().any(|a| a == "--tls-cert") {
                "https"
            } else {
                "http"
            },
            access_key: format!("{name}-key"),
            secret_key: format!("{name}-secret"),
            addr,
            data,
            args,
            log,
        }
    }

    /// Kills the node if it runs (SIGKILL: no chance to finish anything)
    /// and starts it again on the same folder, address and keys.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn_node(&self.args, &self.log, &self.addr);
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

    /// The objects this node holds (every bucket, every key), listed
    /// through its S3 API, as the gateway sees them.
    pub fn replicas(&self) -> Vec<Replica> {
        let answer = self.request("GET", "/");
        assert_eq!(answer.status, 200, "ListBuckets: {}", answer.body);
        let mut out = Vec::new();
        for bucket in xml_values(&answer.body, "Name") {
            let mut after = String::new();
            loop {
                let mut query = "?list-type=2".to_owned();
                if !after.is_empty() {
                    query = format!("{query}&start-after={}", percent_encode(&after, false));
                }
                let answer = self.request("GET", &format!("/{bucket}{query}"));
                assert_eq!(answer.status, 200, "ListObjectsV2: {}", answer.body);
                for item in answer.body.split("<Contents>").skip(1) {
                    let key = xml_values(item, "Key").pop().expect("Key");
                    let size = xml_values(item, "Size").pop().expect("Size");
                    after.clone_from(&key);
                    out.push(Replica {
                        bucket: bucket.clone(),
                        key,
                        size: size.parse().expect("Size"),
                    });
                }
                if !answer.body.contains("<IsTruncated>true</IsTruncated>") {
                    break;
                }
            }
        }
        out
    }

    /// The bytes the node holds for `replica`.
    pub fn replica_bytes(&self, replica: &Replica) -> Vec<u8> {
        let dest = self
            .data
            .with_extension(format!("get-{:x}", rand::random::<u64>()));
        let status = self
            .curl("GET")
            .header(EMPTY_BODY_SHA256)
            .save(&self.object_url(replica), &dest);
        assert_eq!(status, 200, "GET {}", replica.key);
        let bytes = std::fs::read(&dest).unwrap();
        let _ = std::fs::remove_file(&dest);
        bytes
    }

    /// Makes the node hold `bytes` for `replica` (a PUT to the node itself):
    /// a node that lies, or lost what it was given.
    pub fn put_replica(&self, replica: &Replica, bytes: &[u8]) {
        let src = self
            .data
            .with_extension(format!("put-{:x}", rand::random::<u64>()));
        std::fs::write(&src, bytes).unwrap();
        let answer = self
            .curl("PUT")
            .args(&["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-T"])
            .args(&[src.to_str().unwrap()])
            .fetch(&self.object_url(replica));
        let _ = std::fs::remove_file(&src);
        assert_eq!(answer.status, 200, "PUT {}: {}", replica.key, answer.body);
    }

    /// Flips the bits of bytes `range` of what the node holds for
    /// `replica`.
    pub fn corrupt_replica(&self, replica: &Replica, range: std::ops::Range<usize>) {
        let mut bytes = self.replica_bytes(replica);
        for b in &mut bytes[range] {
            *b ^= 0xff;
        }
        self.put_replica(replica, &bytes);
    }

    /// Removes `replica` from the node, as a node that lost it.
    pub fn remove_replica(&self, replica: &Replica) {
        let answer = self.request("DELETE", &self.object_path(replica));
        assert_eq!(
            answer.status, 204,
            "DELETE {}: {}",
            replica.key, answer.body
        );
    }

    fn object_path(&self, replica: &Replica) -> String {
        format!("/{}/{}", replica.bucket, percent_encode(&replica.key, true))
    }

    fn object_url(&self, replica: &Replica) -> String {
        format!("{}{}", self.endpoint(), self.object_path(replica))
    }

    /// A curl request to this node, signed with its key (its certificate
    /// not checked).
    fn curl(&self, method: &str) -> Curl {
        Curl::new()
            .method(method)
            .args(&["-k", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .args(&[&format!("{}:{}", self.access_key, self.secret_key)])
    }

    /// A signed request with no body.
    fn request(&self, method: &str, path: &str) -> crate::clients::Answer {
        self.curl(method)
            .header(EMPTY_BODY_SHA256)
            .fetch(&format!("{}{path}", self.endpoint()))
    }
}

/// The SigV4 payload header of a request without a body.
const EMPTY_BODY_SHA256: &str =
    "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One object a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub bucket: String,
    pub key: String,
    pub size: u64,
}

/// The text of every `<tag>` element in `xml`, unescaped.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v))
        .map(|v| {
            v.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .collect()
}

/// `text` percent-encoded as SigV4 wants it: in a query, or in a path
/// (where `/` stays).
fn percent_encode(text: &str, in_path: bool) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b'/' if in_path => "/".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
