//! What an operator watches: the admin listener's Prometheus metrics,
//! scraped by a real Prometheus server during a workload with a stalled
//! and a killed node; readiness that follows the index; the metrics token;
//! JSON logs that carry each request's id.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{
    Cluster, Curl, Postgres, Proc, TempDir, bin, eventually, free_port, run, wait_for_port,
    write_file,
};

/// A Prometheus server scraping `targets` (host:port) every second, with
/// its data in `dir`.
struct Prometheus {
    _proc: Proc,
    endpoint: String,
}

impl Prometheus {
    fn start(dir: &std::path::Path, targets: &[&str]) -> Self {
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tenfold\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn prometheus (Debian's prometheus package)");
        let mut proc = Proc(child);
        wait_for_port(&addr, &mut proc.0);
        Self {
            _proc: proc,
            endpoint: format!("http://{addr}"),
        }
    }

    /// The value of an instant PromQL query that yields one series
    /// (`None` when it yields none).
    fn value(&self, query: &str) -> Option<f64> {
        let out = run(Command::new("curl").args([
            "-s",
            "--get",
            "--data-urlencode",
            &format!("query={query}"),
            &format!("{}/api/v1/query", self.endpoint),
        ]));
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let result = answer["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` yields a value that `holds`.
    fn until(&self, query: &str, holds: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        let ok = eventually(Duration::from_secs(30), || {
            last = self.value(query);
            last.is_some_and(&holds)
        });
        assert!(ok, "{query}: {last:?}");
        last.unwrap()
    }
}

#[test]
fn prometheus_sees_requests_bytes_nodes_and_queues_move() {
    // The testnet node answers 50 ms late: reads rank it last.
    let mut cluster = Cluster::build(4, 1, "1GiB")
        .node_args(|network, _| {
            if network == "testnet" {
                vec!["--test-delay".into(), "50ms".into()]
            } else {
                Vec::new()
            }
        })
        .start();
    let tmp = TempDir::new("prometheus");
    let admin = cluster
        .admin_endpoint
        .trim_start_matches("http://")
        .to_owned();
    // The gateway, and a node (its /metrics beside /health).
    let node = cluster.nodes[3].1.addr.clone();
    let prometheus = Prometheus::start(tmp.path(), &[&admin, &node]);
    prometheus.until("sum(up{job=\"tenfold\"})", |v| v == 2.0);
    prometheus.until("sum(tenfold_storage_node_up)", |v| v == 5.0);

    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://watched"]);
    let file = tmp.path().join("f");
    write_file(&file, 100 << 10, false);
    for i in 0..10 {
        aws.ok(&[
            "s3",
            "cp",
            file.to_str().unwrap(),
            &format!("s3://watched/o{i}"),
        ]);
    }
    // Three of the four mainnet nodes stop answering (their processes are
    // stopped, their sockets stay open) while the objects are read all at
    // once: a read that asks one of them first, before its silence is
    // known, is hedged to another replica (the fourth, or the testnet's).
    // (Presigned first, so that the reads start the moment it stops, well
    // before a probe finds it silent.)
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
    let urls: Vec<String> = (0..10)
        .map(|i| {
            let config =
                aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600))
                    .unwrap();
            rt.block_on(
                client
                    .get_object()
                    .bucket("watched")
                    .key(format!("o{i}"))
                    .presigned(config),
            )
            .unwrap()
            .uri()
            .to_owned()
        })
        .collect();
    let stalled: Vec<String> = cluster.nodes[..3]
        .iter()
        .map(|(_, node, _)| node.proc.0.id().to_string())
        .collect();
    run(Command::new("kill").arg("-STOP").args(&stalled));
    let reads: Vec<_> = urls
        .iter()
        .map(|url| {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for read in reads {
        let out = read.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    run(Command::new("kill").arg("-CONT").args(&stalled));
    // Another is killed for good.
    let killed = cluster.nodes[1].1.addr.clone();
    cluster.nodes[1].1.proc.kill();

    let puts = prometheus.until(
        "sum(tenfold_s3_requests_total{operation=\"PutObject\",status=\"2xx\"})",
        |v| v >= 10.0,
    );
    assert!(puts < 20.0, "{puts} PUTs counted for 10");
    prometheus.until(
        "sum(tenfold_s3_requests_total{operation=\"GetObject\",status=\"2xx\"})",
        |v| v >= 10.0,
    );
    prometheus.until("tenfold_s3_received_bytes_total", |v| v >= 10.0 * 102_400.0);
    prometheus.until("tenfold_s3_sent_bytes_total", |v| v >= 10.0 * 102_400.0);
    prometheus.until(
        "sum(tenfold_s3_request_duration_seconds_count{operation=\"PutObject\"})",
        |v| v >= 10.0,
    );
    prometheus.until("sum(tenfold_storage_node_reads_total)", |v| v >= 10.0);
    prometheus.until("sum(tenfold_storage_node_hedged_reads_total)", |v| v >= 1.0);
    // Each node has its batch counters (these serial uploads send none:
    // the balancer's unit tests count them).
    prometheus.until("count(tenfold_storage_node_write_batches_total)", |v| {
        v == 5.0
    });
    prometheus.until("count(tenfold_storage_node_batched_replicas_total)", |v| {
        v == 5.0
    });
    prometheus.until("count(tenfold_storage_node_up == 0)", |v| v == 1.0);
    prometheus.until("sum(tenfold_storage_node_up)", |v| v == 4.0);
    prometheus.until("tenfold_index_up", |v| v == 1.0);
    // The node's own figures: its writes, their fsyncs, its space.
    // (It holds one of the replicas of most of the fragments.)
    let writes = prometheus.until(
        "sum(tenfold_node_http_requests_total{method=\"PUT\",status=\"2xx\"})",
        |v| v >= 5.0,
    );
    // Every object written was fsynced (the bucket's creation is a PUT too).
    prometheus.until("tenfold_node_fsync_duration_seconds_count", |v| {
        v >= writes - 1.0
    });
    prometheus.until("tenfold_node_used_bytes", |v| v > 0.0);
    prometheus.until("tenfold_node_received_bytes_total", |v| v > 0.0);
    prometheus.until("tenfold_fragments_by_node_copies{copies=\"4\"}", |v| {
        v >= 10.0
    });
    assert!(prometheus.value("tenfold_garbage_queue_replicas").is_some());
    assert!(
        !cluster.gateway_log().contains("panicked"),
        "{killed} killed"
    );
}

#[test]
fn metrics_parse_and_follow_prometheus_naming() {
    let cluster = Cluster::build(3, 1, "1GiB")
        .config("metrics_token", "scrape-secret")
        .start();
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://named"]);
    let tmp = TempDir::new("metrics-text");
    let file = tmp.path().join("object");
    write_file(&file, 10_000, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://named/object"]);
    aws.ok(&["s3", "cp", "s3://named/object", "/dev/null"]);
    // The redundancy gauges have series once a walk over the segments has
    // ended (the dashboard plots them): scraped after one.
    cluster.walked_status();
    let url = format!("{}/metrics", cluster.admin_endpoint);
    assert_eq!(Curl::new().fetch(&url).status, 401);
    assert_eq!(
        Curl::new()
            .header("Authorization: Bearer wrong")
            .fetch(&url)
            .status,
        401
    );
    let text = Curl::new()
        .header("Authorization: Bearer scrape-secret")
        .fetch(&url);
    assert_eq!(text.status, 200);
    let file = tmp.path().join("metrics.txt");
    std::fs::write(&file, &text.body).unwrap();
    // Prometheus's own Python parser; counters end in _total, units are
    // spelled out (_seconds, _bytes).
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = [f for f in text_string_to_metric_families(open(sys.argv[1]).read()) if f.name.startswith("tenfold_")]
assert len(fams) >= 20, [f.name for f in fams]
for f in fams:
    for s in f.samples:
        if f.type == "counter":
            assert s.name.endswith(("_total", "_created")), s.name
        assert not s.name.endswith(("_ms", "_milliseconds", "_kb")), s.name
    if "duration" in f.name:
        assert f.name.endswith("_seconds") and f.type == "histogram", f.name
# The bucket, the object and the node sightings were index writes.
writes = [s.value for f in fams if f.name == "tenfold_index_write_duration_seconds"
          for s in f.samples if s.name.endswith("_count")]
assert writes and writes[0] >= 2, writes
assert any(f.name == "tenfold_index_write_retries" for f in fams)
# The GET before the scrape read the object from the index (and its layout
# with it: the object is in one segment).
reads = {s.labels["query"]: s.value for f in fams if f.name == "tenfold_index_read_duration_seconds"
         for s in f.samples if s.name.endswith("_count")}
assert reads.get("object", 0) >= 1 and reads.get("nodes", 0) >= 1, reads
print(len(fams))
"#;
    let out = run(Command::new("python3").args(["-c", script]).arg(&file));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text.body
    );
    let health = Curl::new().fetch(&format!("{}/health", cluster.admin_endpoint));
    assert_eq!(health.status, 200);

    // Every series the Grafana dashboard plots is one a gateway or a node
    // exports.
    let node = Curl::new()
        .fetch(&format!("http://{}/metrics", cluster.nodes[0].1.addr))
        .body;
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ops/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut plotted = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("tenfold_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    text.body.contains(&format!("\n{name}")) || node.contains(&format!("\n{name}")),
                    "the dashboard plots {name}, which nothing exports"
                );
                plotted += 1;
            }
        }
    }
    assert!(plotted >= 20, "{plotted}");
}

#[test]
fn ready_follows_the_index_and_the_nodes() {
    let status = |url: &str| Curl::new().fetch(url).status;
    // The index stops answering: unready, alive all the same.
    let pg = Postgres::start();
    let cluster = Cluster::build(3, 1, "1GiB")
        .index_url(&pg.create_database("ready"))
        .start();
    let ready = format!("{}/ready", cluster.admin_endpoint);
    let health = format!("{}/health", cluster.admin_endpoint);
    assert!(eventually(Duration::from_secs(10), || status(&ready) == 200));
    pg.stop();
    assert!(
        eventually(Duration::from_secs(20), || status(&ready) == 503),
        "still ready with the index stopped"
    );
    let why = Curl::new().fetch(&ready).body;
    assert!(why.contains("index"), "{why}");
    assert_eq!(status(&health), 200, "alive all the same");
    pg.resume();
    assert!(
        eventually(Duration::from_secs(30), || status(&ready) == 200),
        "not ready again once the index answers: {}\n{}",
        Curl::new().fetch(&ready).body,
        cluster.gateway_log()
    );
    drop(cluster);

    // With one of the three mainnet nodes gone, a PUT cannot be placed.
    let mut cluster = Cluster::start(3, 1, "1GiB");
    let ready = format!("{}/ready", cluster.admin_endpoint);
    assert!(eventually(Duration::from_secs(10), || status(&ready) == 200));
    cluster.nodes[0].1.proc.kill();
    assert!(
        eventually(Duration::from_secs(20), || status(&ready) == 503),
        "ready with too few nodes"
    );
    let why = Curl::new().fetch(&ready).body;
    assert!(why.contains("mainnet"), "{why}");
}

#[test]
fn json_logs_are_lines_with_each_requests_id() {
    let tmp = TempDir::new("json-logs");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("stderr");
    let child = Command::new(bin("tenfold"))
        .args([
            "dev",
            "--log-format",
            "json",
            "--admin-listen",
            "off",
            "--data",
            tmp.path().join("data").to_str().unwrap(),
            "--listen",
            &addr,
        ])
        .env("TENFOLD_ACCESS_KEY", "json-key")
        .env("TENFOLD_SECRET_KEY", "json-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    wait_for_port(&addr, &mut proc.0);
    let answer = Curl::new()
        .args(&["-i"])
        .signed("json-key", "json-secret")
        .fetch(&format!("http://{addr}/"));
    assert_eq!(answer.status, 200, "{answer:?}");
    let id = answer
        .body
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-amz-request-id: ")
                .map(|v| v.trim().to_uppercase())
        })
        .unwrap_or_else(|| panic!("no request id: {answer:?}"));
    let mut found = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&log).unwrap();
            found = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
                })
                .find(|v| {
                    v["span"]["id"].as_str() == Some(id.as_str())
                        && v["fields"]["message"] == "answered"
                });
            found.is_some()
        }),
        "no log line of request {id}"
    );
    let line = found.unwrap();
    assert_eq!(line["fields"]["operation"], "ListBuckets", "{line}");
    assert_eq!(line["fields"]["key"], "json-key", "{line}");
    assert_eq!(line["fields"]["status"], 200, "{line}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a log file");
}
