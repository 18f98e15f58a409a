//! A test cluster: `tenfold-node` processes registered in an index (SQLite,
//! or Postgres for `tests/run.sh`'s second pass) and a `tenfold serve`
//! gateway, with what tests ask of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{Aws, Curl};
use crate::node::Node;
use crate::process::{Proc, TempDir, bin, eventually, free_port, log_file, run, wait_for_port};
use crate::{ACCESS_KEY, SECRET_KEY};

/// A `tenfold serve` gateway with its own SQLite index and `tenfold-node`
/// processes registered in it.
#[derive(Debug)]
pub struct Cluster {
    pub dir: TempDir,
    pub gateway: Proc,
    pub endpoint: String,
    /// The gateway's admin listener: `/metrics`, `/health`, `/ready`.
    pub admin_endpoint: String,
    pub index_url: String,
    /// `(network, node, id in the index)`.
    pub nodes: Vec<(String, Node, i64)>,
}

/// Extra command-line arguments of the `i`th node of a network.
type NodeArgs<'a> = Box<dyn Fn(&str, usize) -> Vec<String> + 'a>;

/// How a test cluster is made: [`Cluster::build`], then its settings, then
/// [`ClusterBuilder::start`].
pub struct ClusterBuilder<'a> {
    mainnet: usize,
    testnet: usize,
    capacity: String,
    index_url: Option<String>,
    /// `key = value` lines of the config's top level, and of `[storage]`.
    top: Vec<String>,
    storage: Vec<String>,
    /// `[durability]` settings: `gc_delay` 1 s unless a test sets another,
    /// so that tests see released replicas leave the nodes promptly, and
    /// `orphan_grace` 10 s, so that the orphan sweep runs beside every
    /// test's writes (and any replica it took wrongly would show), and the
    /// scrub and spot audits off (their reads would count in the node reads
    /// some tests count; their own tests turn them on).
    durability: Vec<(String, String)>,
    tls: bool,
    node_args: NodeArgs<'a>,
}

/// `value` as a TOML value: numbers, booleans and arrays as they are,
/// anything else as a string.
fn toml_value(value: &str) -> String {
    let bare =
        value.parse::<f64>().is_ok() || matches!(value, "true" | "false") || value.starts_with('[');
    if bare {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

impl<'a> ClusterBuilder<'a> {
    /// A setting of the gateway's configuration, e.g.
    /// `.config("client_timeout", "2s")`.
    #[must_use]
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.tls |= key == "tls_cert";
        self.top.push(format!("{key} = {}", toml_value(value)));
        self
    }

    /// A setting of its storage policy, e.g. `.storage("mainnet_replicas", "1")`.
    #[must_use]
    pub fn storage(mut self, key: &str, value: &str) -> Self {
        self.storage.push(format!("{key} = {}", toml_value(value)));
        self
    }

    /// The grace period between a commit and the removal of what it
    /// released (1 s by default in tests).
    #[must_use]
    pub fn gc_delay(self, delay: &str) -> Self {
        self.durability("gc_delay", delay)
    }

    /// A setting of its `[durability]` section, e.g.
    /// `.durability("orphan_grace", "2s")`.
    #[must_use]
    pub fn durability(mut self, key: &str, value: &str) -> Self {
        self.durability.retain(|(k, _)| k != key);
        self.durability.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Extra command-line arguments of the `i`th node of `network`.
    #[must_use]
    pub fn node_args(mut self, args: impl Fn(&str, usize) -> Vec<String> + 'a) -> Self {
        self.node_args = Box::new(args);
        self
    }

    /// The index at `url` instead of a fresh one.
    #[must_use]
    pub fn index_url(mut self, url: &str) -> Self {
        self.index_url = Some(url.to_owned());
        self
    }

    /// Starts the nodes, registers them and starts the gateway.
    pub fn start(self) -> Cluster {
        let Self {
            mainnet,
            testnet,
            capacity,
            index_url,
            top,
            storage,
            durability,
            tls,
            node_args,
        } = self;
        let capacity = capacity.as_str();
        let (top, storage) = (top.join("\n"), storage.join("\n"));
        let durability: Vec<String> = durability
            .iter()
            .map(|(k, v)| format!("{k} = {}", toml_value(v)))
            .collect();
        let durability = durability.join("\n");
        let dir = TempDir::new("cluster");
        let index_url = index_url.unwrap_or_else(|| new_index_url(dir.path()));
        let port = free_port();
        let admin_port = free_port();
        let config = dir.path().join("tenfold.toml");
        let master_key = random_master_key();
        // The admin commands find it in the cluster's folder (see `Cluster::admin`).
        std::fs::write(dir.path().join("master.key"), &master_key).expect("write master key");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nindex_url = \"{index_url}\"\naccess_key = \"{ACCESS_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\nmaster_key = \"{}\"\nrefresh = \"1s\"\n{top}\n[storage]\n{storage}\n[durability]\n{durability}\n",
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
        let scheme = if tls { "https" } else { "http" };
        Cluster {
            dir,
            gateway,
            endpoint: format!("{scheme}://{addr}"),
            admin_endpoint: format!("http://127.0.0.1:{admin_port}"),
            index_url,
            nodes,
        }
    }
}

impl Cluster {
    /// Starts `mainnet` + `testnet` nodes of `capacity` and a gateway.
    pub fn start(mainnet: usize, testnet: usize, capacity: &str) -> Self {
        Self::build(mainnet, testnet, capacity).start()
    }

    /// A cluster of `mainnet` + `testnet` nodes of `capacity`, to set up
    /// further before it starts.
    pub fn build<'a>(mainnet: usize, testnet: usize, capacity: &str) -> ClusterBuilder<'a> {
        ClusterBuilder {
            mainnet,
            testnet,
            capacity: capacity.to_owned(),
            index_url: None,
            top: Vec::new(),
            storage: Vec::new(),
            durability: vec![
                ("gc_delay".into(), "1s".into()),
                ("orphan_grace".into(), "10s".into()),
                ("scrub_every".into(), "0s".into()),
                ("spot_audit_every".into(), "0s".into()),
            ],
            tls: false,
            node_args: Box::new(|_, _| Vec::new()),
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
        let master_key =
            std::fs::read_to_string(self.dir.path().join("master.key")).expect("master key");
        let mut serve = Command::new(bin("tenfold"));
        serve
            .args(["serve", "--index-url", &self.index_url])
            .env("TENFOLD_ACCESS_KEY", ACCESS_KEY)
            .env("TENFOLD_SECRET_KEY", SECRET_KEY)
            .env("TENFOLD_MASTER_KEY", master_key.trim());
        self.spawn_another(serve)
    }

    /// Like [`Cluster::another_gateway`], with this cluster's configuration
    /// file (its storage and durability settings), on its own ports.
    pub fn another_gateway_alike(&self) -> Gateway {
        let mut serve = Command::new(bin("tenfold"));
        serve.args(["serve", "--config", self.config_path().to_str().unwrap()]);
        self.spawn_another(serve)
    }

    fn spawn_another(&self, mut serve: Command) -> Gateway {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = format!("gateway-{}.log", addr.replace([':', '.'], "-"));
        let child = serve
            .args(["--listen", &addr])
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
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

    /// The gateway's and the nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        std::iter::once(self.gateway.0.id())
            .chain(self.nodes.iter().map(|(_, n, _)| n.proc.0.id()))
            .collect()
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

    /// `tenfold share create ARGS… --public-url ENDPOINT`: the link it
    /// prints.
    pub fn share_link(&self, args: &[&str]) -> String {
        let mut all = vec!["share", "create"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--public-url", &self.endpoint]);
        let out = self.admin(&all);
        assert!(
            out.status.success(),
            "share create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The value of an unlabelled metric `name` on the gateway's
    /// `/metrics`, if it is there.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let metrics = Curl::new()
            .fetch(&format!("{}/metrics", self.admin_endpoint))
            .body;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The sum of metric `name` over all its labels on the gateway's
    /// `/metrics` (0 when it has no series).
    pub fn metric_sum(&self, name: &str) -> f64 {
        metric_sum(
            Curl::new(),
            &format!("{}/metrics", self.admin_endpoint),
            name,
        )
    }

    /// The sum of metric `name` over all its labels on every node's
    /// `/metrics` (their certificates are not checked here).
    pub fn nodes_metric_sum(&self, name: &str) -> f64 {
        self.nodes
            .iter()
            .map(|(_, node, _)| {
                metric_sum(
                    Curl::new().args(&["-k"]),
                    &format!("{}/metrics", node.endpoint()),
                    name,
                )
            })
            .sum()
    }

    /// `tenfold status --json` of this cluster.
    pub fn status(&self) -> serde_json::Value {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `tenfold status --json`, or why it gave none (the command failed,
    /// or printed something that is not JSON).
    ///
    /// # Errors
    /// The command's error output, or the JSON error.
    pub fn try_status(&self) -> Result<serde_json::Value, String> {
        let out = self.admin(&["status", "--json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("status JSON: {e}"))
    }

    /// `tenfold status --json` once the gateway's walk over the segments
    /// (which the redundancy figures come from) has ended after now.
    pub fn walked_status(&self) -> serde_json::Value {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status();
            if status["redundancy_as_of"]
                .as_u64()
                .is_some_and(|t| u128::from(t) >= since)
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no walk ended within 60 s: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `tenfold inspect BUCKET KEY --json` against this cluster's index.
    pub fn inspect(&self, bucket: &str, key: &str) -> serde_json::Value {
        inspect(&["--index-url", &self.index_url], bucket, key)
    }

    /// Replicas on nodes and pins the index names for `bucket`/`key`.
    pub fn replicas_of(&self, bucket: &str, key: &str) -> usize {
        self.inspect(bucket, key)["fragments"]
            .as_array()
            .expect("fragments")
            .iter()
            .map(|f| f["placements"].as_array().expect("placements").len())
            .sum()
    }

    /// Replicas (objects) on all of this cluster's nodes, as they list them.
    pub fn stored_replicas(&self) -> usize {
        self.nodes.iter().map(|(_, n, _)| n.replicas().len()).sum()
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

/// The sum of metric `name` over all its labels at `url` (a Prometheus
/// text page, fetched with `curl`; 0 when it has no series).
fn metric_sum(curl: Curl, url: &str, name: &str) -> f64 {
    curl.fetch(url)
        .body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
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

/// Node `id`'s report in a `tenfold status --json`.
pub fn node_status(status: &serde_json::Value, id: i64) -> serde_json::Value {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
        .expect("the node is registered")
}
