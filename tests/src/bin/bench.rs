//! Throughput benchmark: large-object PUT and GET through a Tenfold gateway
//! (4 mainnet + 2 testnet `tenfold-node`s) against the same bytes PUT and
//! GET directly on one `tenfold-node`, with the same client (`aws s3api`),
//! in the same run, so the ratio holds on a noisy machine.
//!
//! `cargo build --release --bins && target/release/bench [--size 256MiB] [--runs 3] [--json FILE]`
//! (`--smoke` runs tiny sizes once, for CI).

use std::path::Path;
use std::time::Instant;

use tests::{Aws, Cluster, Node, TempDir, write_file};

struct Args {
    size: usize,
    runs: usize,
    json: Option<String>,
    /// Size in MiB of a file sent up and down with `aws s3 cp` (multipart)
    /// while the gateway's peak memory is watched; 0 to skip.
    cp_mib: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        size: 256 << 20,
        runs: 3,
        json: None,
        cp_mib: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => {
                let v = it.next().expect("--size needs a value");
                let v = v.trim_end_matches("MiB");
                args.size = v.parse::<usize>().expect("--size in MiB") << 20;
            }
            "--runs" => {
                args.runs = it
                    .next()
                    .expect("--runs needs a value")
                    .parse()
                    .expect("--runs N")
            }
            "--json" => args.json = Some(it.next().expect("--json needs a file")),
            "--cp-mib" => {
                args.cp_mib = it
                    .next()
                    .expect("--cp-mib needs a value")
                    .parse()
                    .expect("--cp-mib N")
            }
            "--smoke" => {
                args.size = 1 << 20;
                args.runs = 1;
                args.cp_mib = 8;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Seconds taken by one `aws` call that must succeed.
fn timed(aws: &Aws, args: &[&str]) -> f64 {
    let t = Instant::now();
    aws.ok(args);
    t.elapsed().as_secs_f64()
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
        let secs = timed(
            aws,
            &[
                "s3api",
                "get-object",
                "--bucket",
                bucket,
                "--key",
                "bench",
                "/dev/null",
            ],
        );
        get.push(mib / secs);
    }
    (stats(put), stats(get))
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args = parse_args();
    let cluster = Cluster::start(4, 2, "100GiB");
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
        "{:<14} {:<4} {:>26} {:>26} {:>8}",
        "data", "op", "gateway", "direct node", "ratio"
    );
    for (label, compressible) in [("random", false), ("compressible", true)] {
        let file = tmp.path().join(label);
        write_file(&file, args.size, compressible);
        let (gput, gget) = measure(&gw, "bench", &file, args.size, args.runs);
        let (dput, dget) = measure(&node, "bench", &file, args.size, args.runs);
        for (op, g, d) in [("PUT", gput, dput), ("GET", gget, dget)] {
            let ratio = g.median / d.median;
            println!(
                "{label:<14} {op:<4} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {ratio:>8.2}",
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
        let before = peak_rss_mib(cluster.gateway.0.id());
        let up = timed(&gw, &["s3", "cp", file.to_str().unwrap(), "s3://bench/cp"]);
        let down = timed(&gw, &["s3", "cp", "s3://bench/cp", "/dev/null"]);
        let peak = peak_rss_mib(cluster.gateway.0.id());
        println!(
            "aws s3 cp of {} MiB: up {:.1} MiB/s, down {:.1} MiB/s; gateway peak RSS {peak:.0} MiB (before: {before:.0} MiB)",
            args.cp_mib,
            mib / up,
            mib / down
        );
        rows.push(serde_json::json!({
            "data": "random", "op": "aws s3 cp up+down", "size_bytes": args.cp_mib << 20,
            "up_mib_s": mib / up, "down_mib_s": mib / down, "gateway_peak_rss_mib": peak,
        }));
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()).expect("write JSON");
    }
}
