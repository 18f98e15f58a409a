//! A js-ipfs daemon for the overflow tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::clients::Curl;
use crate::process::{Proc, TempDir, eventually, free_port, log_file, run, wait_for_port};

/// The js-ipfs CLI: `TENFOLD_JSIPFS`, or where `tests/run.sh` installs it.
pub fn jsipfs() -> PathBuf {
    if let Some(path) = std::env::var_os("TENFOLD_JSIPFS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let path = Path::new(&home).join(".cache/tenfold/ipfs/node_modules/.bin/jsipfs");
    assert!(
        path.exists(),
        "{} is missing: tests/run.sh installs js-ipfs",
        path.display()
    );
    path
}

/// A real IPFS daemon (js-ipfs) on loopback ports, offline: no swarm, no
/// bootstrap peers, no discovery, no preload, so it dials nothing.
#[derive(Debug)]
pub struct Ipfs {
    pub proc: Proc,
    /// Its RPC API, e.g. `http://127.0.0.1:5001`.
    pub api: String,
    /// Its repository (blocks, pins).
    pub repo: PathBuf,
    _dir: TempDir,
}

impl Ipfs {
    /// Initialises a fresh repository and starts the daemon.
    pub fn start() -> Self {
        let dir = TempDir::new("ipfs");
        let repo = dir.path().join("repo");
        let init = run(Command::new(jsipfs())
            .args(["init", "--profile", "test"])
            .env("IPFS_PATH", &repo));
        assert!(
            init.status.success(),
            "jsipfs init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let config_path = repo.join("config");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).expect("read IPFS config"))
                .expect("IPFS config JSON");
        let [api, gateway, rpc] = [free_port(), free_port(), free_port()];
        let addresses = &mut config["Addresses"];
        addresses["API"] = format!("/ip4/127.0.0.1/tcp/{api}").into();
        addresses["Gateway"] = format!("/ip4/127.0.0.1/tcp/{gateway}").into();
        addresses["RPC"] = format!("/ip4/127.0.0.1/tcp/{rpc}").into();
        addresses["Swarm"] = serde_json::json!([]);
        addresses["Delegates"] = serde_json::json!([]);
        config["Bootstrap"] = serde_json::json!([]);
        config["Discovery"] = serde_json::json!({
            "MDNS": { "Enabled": false },
            "webRTCStar": { "Enabled": false },
        });
        std::fs::write(&config_path, config.to_string()).expect("write IPFS config");
        let child = Command::new(jsipfs())
            .args(["daemon", "--offline", "--enable-preload=false"])
            .env("IPFS_PATH", &repo)
            .stdout(log_file(dir.path(), "ipfs.log"))
            .stderr(log_file(dir.path(), "ipfs.err"))
            .spawn()
            .expect("spawn jsipfs daemon");
        let mut proc = Proc(child);
        wait_for_port(&format!("127.0.0.1:{api}"), &mut proc.0);
        let ipfs = Self {
            proc,
            api: format!("http://127.0.0.1:{api}"),
            repo,
            _dir: dir,
        };
        assert!(
            eventually(Duration::from_secs(60), || ipfs.call("version").is_some()),
            "the IPFS daemon does not answer"
        );
        ipfs
    }

    /// POSTs to `/api/v0/PATH` and parses the JSON answer, if it succeeded.
    pub fn call(&self, path: &str) -> Option<serde_json::Value> {
        let answer = Curl::new()
            .method("POST")
            .fetch(&format!("{}/api/v0/{path}", self.api));
        (answer.status == 200)
            .then(|| serde_json::from_str(&answer.body).ok())
            .flatten()
    }

    /// The content ids pinned recursively.
    pub fn pins(&self) -> Vec<String> {
        let answer = self.call("pin/ls?type=recursive").expect("pin/ls");
        answer["Keys"]
            .as_object()
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// The content ids of an `inspect` report's overflow placements.
pub fn overflow_cids(report: &serde_json::Value) -> Vec<String> {
    report["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .flat_map(|f| f["placements"].as_array().expect("placements").iter())
        .filter(|p| p["network"] == "overflow")
        .map(|p| {
            p["cid"]
                .as_str()
                .expect("overflow placement without cid")
                .to_owned()
        })
        .collect()
}
