//! Throughput benchmark: large-object PUT and GET through a Tenfold gateway
//! (4 mainnet + 2 testnet `tenfold-node`s) against the same bytes PUT and
//! GET directly on one `tenfold-node`, with the same client (`aws s3api`),
//! in the same run, so the ratio holds on a noisy machine.
//!
//! Then GET latency (p50/p99 of small-object GETs over one keep-alive
//! connection) on a 3 + 1 cluster with every node healthy and with one node
//! answering 100 ms late, and the gateway's peak memory while a 1 GiB
//! transfer is zipped through a share link.
//!
//! `cargo build --release --bins && target/release/bench [--size 256MiB] [--runs 3] [--json FILE]`
//! (`--smoke` runs tiny sizes once, for CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tests::{Aws, Cluster, Node, TempDir, bin, run, write_file};

struct Args {
    size: usize,
    runs: usize,
    json: Option<String>,
    /// Size in MiB of a file sent up and down with `aws s3 cp` (multipart)
    /// while the gateway's peak memory is watched; 0 to skip.
    cp_mib: usize,
    /// GETs timed for each latency figure; 0 to skip.
    latency_gets: usize,
    /// Size in MiB of the transfer zipped through a share link; 0 to skip.
    zip_mib: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        size: 256 << 20,
        runs: 3,
        json: None,
        cp_mib: 1024,
        latency_gets: 300,
        zip_mib: 1024,
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
            "--latency-gets" => {
                args.latency_gets = it
                    .next()
                    .expect("--latency-gets needs a value")
                    .parse()
                    .expect("--latency-gets N")
            }
            "--zip-mib" => {
                args.zip_mib = it
                    .next()
                    .expect("--zip-mib needs a value")
                    .parse()
                    .expect("--zip-mib N")
            }
            "--smoke" => {
                args.size = 1 << 20;
                args.runs = 1;
                args.cp_mib = 8;
                args.latency_gets = 20;
                args.zip_mib = 8;
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
    proc_status_mib(pid, "VmHWM:")
}

/// A memory figure of `/proc/PID/status` (`VmHWM:`, `VmRSS:`), in MiB.
fn proc_status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
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
    let cluster = Cluster::start_with_node_args(3, 1, "10GiB", "", "", &|network, i| match delay {
        Some(d) if network == "mainnet" && i == 0 => vec!["--test-delay".into(), d.into()],
        _ => Vec::new(),
    });
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
    let out = run(Command::new(bin("tenfold")).args([
        "share",
        "create",
        "bench",
        "transfer/",
        "--index-url",
        &cluster.index_url,
        "--public-url",
        &cluster.endpoint,
    ]));
    assert!(out.status.success(), "share create failed");
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let pid = cluster.gateway.0.id();
    // Reset the peak-RSS mark so the figure is the zip's alone.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").ok();
    let before = proc_status_mib(pid, "VmRSS:");
    let t = Instant::now();
    let out = run(Command::new("curl").args(["-sf", "-o", "/dev/null", &format!("{url}/zip")]));
    assert!(out.status.success(), "zip download failed");
    let secs = t.elapsed().as_secs_f64();
    (before, peak_rss_mib(pid), mib as f64 / secs)
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
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()).expect("write JSON");
    }
}
