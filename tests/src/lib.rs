//! The system-test harness: real `tenfold` and `tenfold-node` processes on
//! loopback ports, driven by the real `aws` CLI.
//!
//! The binaries must be built first (`cargo build --bins`, which the
//! README's test command does); they are found next to the test executable.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Access key the test gateways accept.
pub const ACCESS_KEY: &str = "test-access";
/// Secret key the test gateways accept.
pub const SECRET_KEY: &str = "test-secret";

/// The folder holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    path
}

/// A fresh temporary folder, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tenfold-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    /// Removes the folder, unless `TENFOLD_KEEP_TEST_DIRS` is set (to read
    /// the logs of a failed test).
    fn drop(&mut self) {
        if std::env::var_os("TENFOLD_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback port that was free a moment ago and that no other caller in
/// this test binary has been given.
///
/// Ports come from below the kernel's ephemeral range (32768 and up), so an
/// outgoing connection cannot take one before its server binds it, and from
/// a counter, so two servers started at once never get the same one (port 0
/// gives no such promise: two binds of it a moment apart may return the
/// same number). The starting point depends on the process id, so test
/// binaries run one after another start far apart.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = std::process::id().wrapping_mul(2_654_435_761) % COUNT;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("port below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    );
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_for_port(addr: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("process exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listening on {addr} after 30 s");
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process's peak resident memory so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("log file"))
}

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
        let out = run(Command::new("curl").args(["-sfk", &format!("{}/health", self.endpoint())]));
        assert!(out.status.success(), "GET /health failed");
        serde_json::from_slice(&out.stdout).expect("health JSON")
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

/// A `tenfold serve` gateway with its own SQLite index and `tenfold-node`
/// processes registered in it.
#[derive(Debug)]
pub struct Cluster {
    pub dir: TempDir,
    pub gateway: Proc,
    pub endpoint: String,
    pub index_url: String,
    /// `(network, node, id in the index)`.
    pub nodes: Vec<(String, Node, i64)>,
}

impl Cluster {
    /// Starts `mainnet` + `testnet` nodes of `capacity` and a gateway.
    pub fn start(mainnet: usize, testnet: usize, capacity: &str) -> Self {
        Self::start_with(mainnet, testnet, capacity, "", "")
    }

    /// Like [`Cluster::start`], with extra lines for the config's top level
    /// and its `[storage]` table.
    pub fn start_with(
        mainnet: usize,
        testnet: usize,
        capacity: &str,
        top: &str,
        storage: &str,
    ) -> Self {
        Self::start_with_node_args(mainnet, testnet, capacity, top, storage, &|_, _| Vec::new())
    }

    /// Like [`Cluster::start_with`], with extra arguments for some nodes:
    /// `node_args(network, i)` for the `i`th node of `network`.
    pub fn start_with_node_args(
        mainnet: usize,
        testnet: usize,
        capacity: &str,
        top: &str,
        storage: &str,
        node_args: &dyn Fn(&str, usize) -> Vec<String>,
    ) -> Self {
        Self::start_full(None, mainnet, testnet, capacity, top, storage, node_args)
    }

    /// Like [`Cluster::start`], on the index at `index_url`.
    pub fn start_on(index_url: &str, mainnet: usize, testnet: usize, capacity: &str) -> Self {
        Self::start_full(
            Some(index_url.to_owned()),
            mainnet,
            testnet,
            capacity,
            "",
            "",
            &|_, _| Vec::new(),
        )
    }

    fn start_full(
        index_url: Option<String>,
        mainnet: usize,
        testnet: usize,
        capacity: &str,
        top: &str,
        storage: &str,
        node_args: &dyn Fn(&str, usize) -> Vec<String>,
    ) -> Self {
        let dir = TempDir::new("cluster");
        let index_url = index_url.unwrap_or_else(|| new_index_url(dir.path()));
        let port = free_port();
        let config = dir.path().join("tenfold.toml");
        let master_key = random_master_key();
        // The admin commands find it in the cluster's folder (see `Cluster::admin`).
        std::fs::write(dir.path().join("master.key"), &master_key).expect("write master key");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nindex_url = \"{index_url}\"\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\nmaster_key = \"{}\"\nrefresh = \"1s\"\n{top}\n[storage]\n{storage}\n",
                master_key
            ),
        )
        .expect("write config");
        let mut cluster_nodes = Vec::new();
        for (network, count) in [("mainnet", mainnet), ("testnet", testnet)] {
            for i in 0..count {
                let node = Node::start_with(
                    dir.path(),
                    &format!("{network}-{i}"),
                    capacity,
                    &node_args(network, i),
                );
                cluster_nodes.push((network.to_owned(), node));
            }
        }
        let mut nodes = Vec::new();
        for (network, node) in cluster_nodes {
            let id = register_node_in(dir.path(), &index_url, &node, &network, capacity);
            nodes.push((network, node, id));
        }
        let mut gateway = spawn_gateway(dir.path());
        let addr = format!("127.0.0.1:{port}");
        wait_for_port(&addr, &mut gateway.0);
        let scheme = if top.contains("tls_cert") {
            "https"
        } else {
            "http"
        };
        Self {
            dir,
            gateway,
            endpoint: format!("{scheme}://{addr}"),
            index_url,
            nodes,
        }
    }

    /// Registers a node in this cluster's index; returns its id.
    pub fn register_node(&self, node: &Node, network: &str, capacity: &str) -> i64 {
        register_node_in(self.dir.path(), &self.index_url, node, network, capacity)
    }

    /// Registers any S3 endpoint as a node of this cluster; returns its id.
    pub fn register_endpoint(
        &self,
        endpoint: &str,
        network: &str,
        capacity: &str,
        key: &str,
        secret: &str,
    ) -> i64 {
        register_endpoint_in(
            self.dir.path(),
            &self.index_url,
            endpoint,
            network,
            capacity,
            key,
            secret,
        )
    }

    /// Starts another gateway on this cluster's index, the way an operator
    /// adds one: `tenfold serve --index-url … --listen …` with the
    /// credentials and master key in the environment.
    pub fn another_gateway(&self) -> Gateway {
        let addr = format!("127.0.0.1:{}", free_port());
        let master_key =
            std::fs::read_to_string(self.dir.path().join("master.key")).expect("master key");
        let log = format!("gateway-{}.log", addr.replace([':', '.'], "-"));
        let child = Command::new(bin("tenfold"))
            .args(["serve", "--index-url", &self.index_url, "--listen", &addr])
            .env("TENFOLD_ACCESS_KEY", ACCESS_KEY)
            .env("TENFOLD_SECRET_KEY", SECRET_KEY)
            .env("TENFOLD_MASTER_KEY", master_key.trim())
            .env("RUST_LOG", "info,tenfold=debug")
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), &log))
            .spawn()
            .expect("spawn tenfold serve");
        let mut proc = Proc(child);
        wait_for_port(&addr, &mut proc.0);
        Gateway {
            proc,
            endpoint: format!("http://{addr}"),
            log: self.dir.path().join(log),
        }
    }

    /// The gateway's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("tenfold.toml")
    }

    /// Stops the gateway, lets `edit` change its configuration, and starts
    /// it again. `Err` with its log when it exits instead of listening.
    pub fn restart_gateway(&mut self, edit: impl FnOnce(String) -> String) -> Result<(), String> {
        self.gateway.kill();
        let text = std::fs::read_to_string(self.config_path()).expect("read config");
        std::fs::write(self.config_path(), edit(text)).expect("write config");
        self.gateway = spawn_gateway(self.dir.path());
        let addr = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, a)| a)
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.gateway.0.try_wait() {
                return Err(self.gateway_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway neither listens nor exits");
    }

    pub fn aws(&self) -> Aws {
        Aws::new(&self.endpoint, ACCESS_KEY, SECRET_KEY)
    }

    /// Runs `tenfold ARGS --index-url … --master-key-file …` against this
    /// cluster's index.
    pub fn admin(&self, args: &[&str]) -> Output {
        let key_file = self.dir.path().join("master.key");
        run(Command::new(bin("tenfold"))
            .args(args)
            .arg("--index-url")
            .arg(&self.index_url)
            .arg("--master-key-file")
            .arg(key_file))
    }

    /// `tenfold inspect BUCKET KEY --json` against this cluster's index.
    pub fn inspect(&self, bucket: &str, key: &str) -> serde_json::Value {
        inspect(&["--index-url", &self.index_url], bucket, key)
    }

    /// Fragment files on all of this cluster's nodes.
    pub fn fragment_files(&self) -> usize {
        self.nodes
            .iter()
            .map(|(_, n, _)| n.object_files().len())
            .sum()
    }

    /// The node with this index id.
    pub fn node(&mut self, id: i64) -> &mut Node {
        &mut self
            .nodes
            .iter_mut()
            .find(|n| n.2 == id)
            .expect("node id")
            .1
    }

    /// The gateway's log so far (for assertion messages).
    pub fn gateway_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Waits until the gateway has taken node `id` into its registry (it
    /// re-reads the index every `refresh`).
    pub fn wait_for_node(&self, id: i64) {
        wait_for_registry(id, || self.gateway_log());
    }
}

/// Waits (60 s at most) until a gateway's log says node `id` joined its
/// registry.
fn wait_for_registry(id: i64, log: impl Fn() -> String) {
    let field = format!("node={id}");
    let joined = || {
        log().lines().any(|line| {
            line.contains("node joined the registry")
                && line.split_whitespace().any(|word| word == field)
        })
    };
    assert!(
        eventually(Duration::from_secs(60), joined),
        "the gateway did not take node {id} into its registry within 60 s"
    );
}

/// A gateway started beside a cluster's own (see
/// [`Cluster::another_gateway`]).
#[derive(Debug)]
pub struct Gateway {
    pub proc: Proc,
    pub endpoint: String,
    log: PathBuf,
}

impl Gateway {
    pub fn aws(&self) -> Aws {
        Aws::new(&self.endpoint, ACCESS_KEY, SECRET_KEY)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until this gateway has taken node `id` into its registry.
    pub fn wait_for_node(&self, id: i64) {
        wait_for_registry(id, || self.log());
    }
}

/// The index of a new test cluster: a fresh database on the Postgres
/// server at `TENFOLD_TEST_PG` (a server URL such as
/// `postgres://tenfold@127.0.0.1:5432`, set by `tests/run.sh` for its
/// Postgres pass), else SQLite in `dir`.
fn new_index_url(dir: &Path) -> String {
    match std::env::var("TENFOLD_TEST_PG") {
        Ok(server) => {
            let name = format!("t{:016x}", rand::random::<u64>());
            let out = run(Command::new("psql")
                .arg(format!("{}/postgres", server.trim_end_matches('/')))
                .args(["-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!("CREATE DATABASE {name}")));
            assert!(
                out.status.success(),
                "CREATE DATABASE on {server}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!("{}/{name}", server.trim_end_matches('/'))
        }
        Err(_) => format!("sqlite://{}", dir.join("index.db").display()),
    }
}

/// A fresh master key: 64 hex digits.
pub fn random_master_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Starts `tenfold serve` on `DIR/tenfold.toml`, logging to `DIR/gateway.log`.
fn spawn_gateway(dir: &Path) -> Proc {
    let child = Command::new(bin("tenfold"))
        .args([
            "serve",
            "--config",
            dir.join("tenfold.toml").to_str().unwrap(),
        ])
        .env_remove("TENFOLD_ACCESS_KEY")
        .env_remove("TENFOLD_SECRET_KEY")
        .env_remove("TENFOLD_MASTER_KEY")
        .env("RUST_LOG", "info,tenfold=debug,tenfold_balancer=debug")
        .stdout(Stdio::null())
        .stderr(log_file(dir, "gateway.log"))
        .spawn()
        .expect("spawn tenfold serve");
    Proc(child)
}

/// Registers a node with `tenfold nodes add` in the index of the cluster
/// in `dir`; returns its id.
fn register_node_in(
    dir: &Path,
    index_url: &str,
    node: &Node,
    network: &str,
    capacity: &str,
) -> i64 {
    register_endpoint_in(
        dir,
        index_url,
        &node.endpoint(),
        network,
        capacity,
        &node.access_key,
        &node.secret_key,
    )
}

/// Registers any S3 endpoint as a node; returns its id. (The test clusters
/// keep their master key in their folder.)
fn register_endpoint_in(
    dir: &Path,
    index_url: &str,
    endpoint: &str,
    network: &str,
    capacity: &str,
    key: &str,
    secret: &str,
) -> i64 {
    let out = run(Command::new(bin("tenfold")).args([
        "nodes",
        "add",
        "--master-key-file",
        dir.join("master.key").to_str().unwrap(),
        "--index-url",
        index_url,
        "--endpoint",
        endpoint,
        "--network",
        network,
        "--capacity",
        capacity,
        "--access-key",
        key,
        "--secret-key",
        secret,
    ]));
    assert!(
        out.status.success(),
        "nodes add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("node id")
}

/// curl arguments that sign a request with SigV4 (for an empty body).
pub fn sigv4_args(access_key: &str, secret_key: &str) -> Vec<String> {
    vec![
        "--aws-sigv4".into(),
        "aws:amz:us-east-1:s3".into(),
        "--user".into(),
        format!("{access_key}:{secret_key}"),
        "-H".into(),
        "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .into(),
    ]
}

/// `tenfold inspect` with the given index arguments, parsed.
pub fn inspect(index_args: &[&str], bucket: &str, key: &str) -> serde_json::Value {
    let out = run(Command::new(bin("tenfold"))
        .arg("inspect")
        .arg(bucket)
        .arg(key)
        .arg("--json")
        .args(index_args));
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect JSON")
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run command")
}

/// The `aws` CLI pointed at one endpoint with one set of credentials.
#[derive(Debug, Clone)]
pub struct Aws {
    program: String,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

impl Aws {
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        Self {
            program: "aws".into(),
            endpoint: endpoint.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// The same, with another `aws` executable (Debian's v2 is `/usr/bin/aws`).
    #[must_use]
    pub fn with_program(mut self, program: &str) -> Self {
        self.program = program.into();
        self
    }

    /// Runs `aws --endpoint-url E ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        run(Command::new(&self.program)
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_PAGER", "")
            // Plain-http endpoints: some clients choke on a CA bundle here.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE"))
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, asserts failure, and returns stderr (which names the S3 error).
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "aws {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs an `s3api` call that prints JSON, and parses it.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).expect("aws JSON output")
    }
}

/// Writes `len` bytes to `path`: random, or compressible text.
pub fn write_file(path: &Path, len: usize, compressible: bool) {
    let data: Vec<u8> = if compressible {
        b"Tenfold keeps ten fragments of everything. "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    } else {
        (0..len).map(|_| rand::random::<u8>()).collect()
    };
    std::fs::write(path, data).expect("write test file");
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

/// Checks an `inspect` report: every fragment has exactly `mainnet`
/// distinct mainnet nodes and `testnet` distinct testnet nodes. Returns the
/// number of fragments.
pub fn assert_placements(report: &serde_json::Value, mainnet: usize, testnet: usize) -> usize {
    let fragments = report["fragments"].as_array().expect("fragments");
    for f in fragments {
        let placements = f["placements"].as_array().expect("placements");
        for (network, want) in [("mainnet", mainnet), ("testnet", testnet)] {
            let mut nodes: Vec<i64> = placements
                .iter()
                .filter(|p| p["network"] == network)
                .map(|p| p["node"].as_i64().expect("node id"))
                .collect();
            let count = nodes.len();
            nodes.sort_unstable();
            nodes.dedup();
            assert_eq!(
                count, want,
                "fragment {f} should have {want} {network} replicas"
            );
            assert_eq!(
                nodes.len(),
                want,
                "fragment {f} has a repeated {network} node"
            );
        }
    }
    fragments.len()
}

/// An `aws-sdk-s3` client for `endpoint` (path style, plain HTTP, pooled
/// connections, checksums when the operation supports them).
pub fn sdk_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    sdk_client_at(endpoint, access_key, secret_key, None)
}

/// Like [`sdk_client`], signing with a clock set to `now` (to send requests
/// dated in the past or the future). Such a client does not retry: the SDK
/// would otherwise correct its clock from the refusal's `Date` and succeed.
pub fn sdk_client_at(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    now: Option<std::time::SystemTime>,
) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
    let mut config = aws_sdk_s3::Config::builder();
    if let Some(now) = now {
        config = config
            .time_source(aws_smithy_async::time::StaticTimeSource::new(now))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
    }
    let config = config
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tests",
        ))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

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
        let out = run(Command::new("curl").args([
            "-sf",
            "-X",
            "POST",
            &format!("{}/api/v0/{path}", self.api),
        ]));
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
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
