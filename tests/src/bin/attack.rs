//! The hostile-load harness: attacks a gateway and one of its nodes while
//! a legitimate client (the `aws` CLI) keeps putting and getting 10 MiB
//! objects, and reports what each side saw. Loopback only; it stops by
//! itself.
//!
//! In turn: anonymous form POSTs of a large file at the gateway and at a
//! node at once; idle connections, half HTTP/1 (nothing sent) and half h2c
//! (the preface and SETTINGS, then nothing); share-link zip readers that
//! read one byte a second; a node whose `/health` answer never ends. Then
//! the gateway's memory, file descriptors and threads are compared with
//! their level before, and every object the client wrote is read back.
//!
//! ```sh
//! cargo build --release --bins && target/release/attack --json attack.json
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::{Aws, Cluster, TempDir, eventually, sha256_file, write_file};

/// What to attack with, and how hard.
#[derive(Debug, clap::Parser)]
#[command(about = "Hostile clients against a gateway and a node while a real client works")]
struct Args {
    /// Idle connections held at once, half HTTP/1 and half h2c.
    #[arg(long, default_value_t = 2000)]
    conns: usize,
    /// Anonymous form POSTs sent at once to the gateway, and as many to a
    /// node.
    #[arg(long, default_value_t = 20)]
    posts: usize,
    /// Size in MiB each form POST announces and tries to send.
    #[arg(long, default_value_t = 1024)]
    post_mib: usize,
    /// Share-link zip readers that read one byte a second.
    #[arg(long, default_value_t = 50)]
    readers: usize,
    /// The gateway's `client_timeout` (idle connections, stalled readers).
    #[arg(long, default_value_t = 5)]
    timeout_s: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<String>,
    /// Small numbers (for CI: the harness cannot rot). Overrides the
    /// counts above; the memory bounds are not judged.
    #[arg(long)]
    smoke: bool,
}

/// How much more memory than before an attack may leave the gateway or a
/// node holding at its peak, or the gateway holding once it is over (the
/// issue's bound).
const RSS_RISE_BOUND_MIB: f64 = 64.0;

/// How many more descriptors, and runtime tasks, than before the attacks
/// the gateway may hold once they are over and its idle connections have
/// closed: a leak would scale with the attacks' thousands.
const LEFT_OPEN_BOUND: usize = 32;

/// The legitimate client's object size.
const LEGIT_MIB: usize = 10;

/// A process's memory, descriptors, threads and (for the gateway) the
/// tasks alive in its runtime at one moment.
#[derive(Debug, Clone, Copy)]
struct Gauge {
    rss_mib: f64,
    fds: usize,
    threads: u64,
    tasks: Option<u64>,
}

fn gauge(pid: u32, cluster: Option<&Cluster>) -> Gauge {
    Gauge {
        rss_mib: tests::proc_status_mib(pid, "VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
        threads: tests::proc_status_kib(pid, "Threads:").unwrap_or(0),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        tasks: cluster
            .and_then(|c| c.metric("tenfold_runtime_alive_tasks"))
            .map(|v| v as u64),
    }
}

/// One operation of the legitimate client.
#[derive(Debug, Clone)]
struct Op {
    phase: String,
    op: &'static str,
    seconds: f64,
    ok: bool,
}

/// The legitimate client: PUTs and GETs of 10 MiB objects with the `aws`
/// CLI, each GET checked against what was put, until told to stop.
struct Legit {
    phase: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
    thread: Option<std::thread::JoinHandle<Vec<(String, String)>>>,
}

impl Legit {
    fn start(aws: Aws, dir: PathBuf) -> Self {
        let phase = Arc::new(Mutex::new("before".to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let sources: Vec<(PathBuf, String)> = (0..3)
            .map(|i| {
                let path = dir.join(format!("legit-{i}"));
                write_file(&path, LEGIT_MIB << 20, false);
                let sum = sha256_file(&path);
                (path, sum)
            })
            .collect();
        let thread = {
            let (phase, stop, ops) = (phase.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut written = Vec::new();
                let got = dir.join("legit-got");
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (source, sum) = &sources[i % sources.len()];
                    let key = format!("legit/{i}");
                    let url = format!("s3://attack/{key}");
                    let timed = |op: &'static str, args: &[&str]| {
                        let started = Instant::now();
                        let ok = aws.run(args).status.success();
                        let seconds = started.elapsed().as_secs_f64();
                        let phase = phase.lock().unwrap().clone();
                        ops.lock().unwrap().push(Op {
                            phase,
                            op,
                            seconds,
                            ok,
                        });
                        ok
                    };
                    if timed("PUT", &["s3", "cp", source.to_str().unwrap(), &url]) {
                        written.push((key, sum.clone()));
                        let fetched = timed("GET", &["s3", "cp", &url, got.to_str().unwrap()]);
                        if fetched && sha256_file(&got) != *sum {
                            let phase = phase.lock().unwrap().clone();
                            ops.lock().unwrap().push(Op {
                                phase,
                                op: "GET (wrong bytes)",
                                seconds: 0.0,
                                ok: false,
                            });
                        }
                    }
                    i += 1;
                }
                written
            })
        };
        Self {
            phase,
            stop,
            ops,
            thread: Some(thread),
        }
    }

    fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap() = phase.to_owned();
    }

    /// Waits until the client has done `n` more operations.
    fn wait_ops(&self, n: usize) {
        let start = self.ops.lock().unwrap().len();
        assert!(
            eventually(Duration::from_secs(300), || self.ops.lock().unwrap().len()
                >= start + n),
            "the legitimate client stalled"
        );
    }

    /// Stops the client: the keys it wrote, with their SHA-256.
    fn stop(&mut self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }

    /// Median seconds, operations and failures of `op` during `phase`.
    fn figures(&self, phase: &str, op: &str) -> (f64, usize, usize) {
        let ops = self.ops.lock().unwrap();
        let mut secs: Vec<f64> = ops
            .iter()
            .filter(|o| o.phase == phase && o.op == op && o.ok)
            .map(|o| o.seconds)
            .collect();
        let failed = ops
            .iter()
            .filter(|o| o.phase == phase && o.op.starts_with(op) && !o.ok)
            .count();
        secs.sort_by(f64::total_cmp);
        let median = secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN);
        (median, secs.len(), failed)
    }
}

/// An anonymous form POST to `addr` `path` announcing `len` bytes of file:
/// seconds until the answer's status line (or until the connection was
/// closed without one), that line, and the bytes sent meanwhile.
fn anonymous_post(addr: &str, path: &str, len: u64) -> (f64, String, u64) {
    let boundary = "tenfold-attack";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nhostile\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() as u64 + len + tail.len() as u64;
    let mut conn = TcpStream::connect(addr).expect("connect");
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {total}\r\n\r\n{head}"
    )
    .expect("send the form's head");
    let started = Instant::now();
    let mut writer = conn.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let chunk = vec![0u8; 256 << 10];
        let mut sent = 0u64;
        while sent < len {
            let n = chunk
                .len()
                .min(usize::try_from(len - sent).unwrap_or(usize::MAX));
            if writer.write_all(&chunk[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        sent
    });
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    conn.shutdown(Shutdown::Both).ok();
    let sent = sender.join().unwrap();
    let line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("(closed without an answer)")
        .to_owned();
    (seconds, line, sent)
}

/// When the server closed each of `conns` (seconds after its own `opened`
/// instant), or `None` for those still open at `deadline`: all are watched
/// at once, a quarter of a second apart, whatever they send meanwhile
/// dropped.
fn close_times(conns: &mut [TcpStream], opened: &[Instant], deadline: Instant) -> Vec<Option<f64>> {
    let mut closed = vec![None; conns.len()];
    let mut buf = [0u8; 16 << 10];
    for conn in conns.iter() {
        conn.set_nonblocking(true).unwrap();
    }
    while Instant::now() < deadline && closed.iter().any(Option::is_none) {
        for ((conn, closed), start) in conns.iter_mut().zip(closed.iter_mut()).zip(opened) {
            while closed.is_none() {
                match conn.read(&mut buf) {
                    Ok(0) => *closed = Some(start.elapsed().as_secs_f64()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => *closed = Some(start.elapsed().as_secs_f64()),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    closed
}

/// A share-link zip reader that reads one byte a second for `slow`, then
/// everything left as fast as it can: whether it got less than `size`
/// bytes (the gateway dropped it), and the bytes it got.
fn slow_zip_reader(addr: &str, path: &str, slow: Duration, size: u64) -> (bool, u64) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut got = 0u64;
    let mut byte = [0u8; 1];
    let until = Instant::now() + slow;
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while Instant::now() < until {
        match conn.read(&mut byte) {
            Ok(0) | Err(_) => return (true, got),
            Ok(n) => got += n as u64,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    got += rest.len() as u64;
    (got < size, got)
}

/// A "node" whose `/health` answer never ends: a chunked body of `{`s, for
/// as long as the gateway reads. Serves until `stop`.
fn endless_health_node(stop: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let stop = stop.clone();
            std::thread::spawn(move || {
                conn.set_nonblocking(false).ok();
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request);
                let chunk = format!("4000\r\n{}\r\n", "{".repeat(0x4000));
                if conn
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                while !stop.load(Ordering::SeqCst) && conn.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    port
}

/// The gateway's `tenfold_storage_node_up` for the node named `name`.
fn node_up(admin: &str, name: &str) -> Option<bool> {
    let metrics = tests::Curl::new().fetch(&format!("{admin}/metrics")).body;
    let needle = format!("node=\"{name}\"");
    metrics
        .lines()
        .find(|l| l.starts_with("tenfold_storage_node_up") && l.contains(&needle))
        .map(|l| l.trim_end().ends_with(" 1"))
}

fn main() {
    let mut args = <Args as clap::Parser>::parse();
    if args.smoke {
        args.conns = 100;
        args.posts = 4;
        args.post_mib = 64;
        args.readers = 5;
        args.timeout_s = 2;
    }
    let timeout = Duration::from_secs(args.timeout_s);
    let cluster = Cluster::build(3, 1, "100GiB")
        .config("client_timeout", &format!("{}s", args.timeout_s))
        .start();
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://attack"]);
    let tmp = TempDir::new("attack");
    let addr = cluster.endpoint.trim_start_matches("http://").to_owned();
    let gw = cluster.gateway.0.id();
    let (node_addr, node_pid) = {
        let node = &cluster.nodes[0].1;
        (node.addr.clone(), node.proc.0.id())
    };

    // What the zip readers will read: four objects under a shared prefix.
    let zip_part = if args.smoke { 2 } else { 16 };
    let part = tmp.path().join("zip-part");
    write_file(&part, zip_part << 20, false);
    for i in 0..4 {
        aws.ok(&[
            "s3",
            "cp",
            part.to_str().unwrap(),
            &format!("s3://attack/zip/{i}"),
        ]);
    }
    let share = cluster.share_link(&["attack", "zip/"]);
    let zip_path = format!(
        "{}/zip",
        &share[share.find("/_share/").expect("a share URL")..]
    );
    let zip_size = 4 * (zip_part << 20) as u64;

    let mut legit = Legit::start(aws.clone(), tmp.path().to_owned());
    legit.wait_ops(6);
    let before = gauge(gw, Some(&cluster));
    let node_before = gauge(node_pid, None);
    let mut rows = Vec::new();
    println!(
        "gateway before: RSS {:.0} MiB, {} fds, {} threads, {:?} tasks; node RSS {:.0} MiB",
        before.rss_mib, before.fds, before.threads, before.tasks, node_before.rss_mib
    );

    // 1. Anonymous form POSTs of a large file, at the gateway and a node.
    legit.set_phase("posts");
    tests::reset_peak_rss(gw);
    tests::reset_peak_rss(node_pid);
    let len = (args.post_mib as u64) << 20;
    // Rounds of them, for as long as the client takes to do two operations.
    let ops_before = legit.ops.lock().unwrap().len();
    let mut posts: Vec<(f64, String, u64)> = Vec::new();
    let mut rounds = 0;
    while rounds == 0 || legit.ops.lock().unwrap().len() < ops_before + 2 {
        let round: Vec<_> = (0..args.posts * 2)
            .map(|i| {
                let target = if i % 2 == 0 {
                    addr.clone()
                } else {
                    node_addr.clone()
                };
                std::thread::spawn(move || anonymous_post(&target, "/attack", len))
            })
            .collect();
        posts.extend(round.into_iter().map(|t| t.join().unwrap()));
        rounds += 1;
    }
    let gw_peak = tests::proc_status_mib(gw, "VmHWM:");
    let node_peak = tests::proc_status_mib(node_pid, "VmHWM:");
    let slowest = posts.iter().map(|p| p.0).fold(0.0, f64::max);
    let most_sent = posts.iter().map(|p| p.2).max().unwrap_or(0);
    // The status lines, with how many got each: 403 for an unsigned form;
    // 503 SlowDown once a client address exceeds the anonymous rate.
    let mut answers = std::collections::BTreeMap::<&str, usize>::new();
    for post in &posts {
        *answers.entry(post.1.as_str()).or_default() += 1;
    }
    println!(
        "{rounds} rounds of {} anonymous {} MiB form POSTs at the gateway and {} at a node at once: slowest answer {slowest:.2} s, at most {:.1} MiB sent; peak RSS gateway {gw_peak:.0} MiB (+{:.0}), node {node_peak:.0} MiB (+{:.0})",
        args.posts,
        args.post_mib,
        args.posts,
        most_sent as f64 / f64::from(1 << 20),
        gw_peak - before.rss_mib,
        node_peak - node_before.rss_mib
    );
    println!("  answers: {answers:?}");
    assert!(
        answers
            .keys()
            .all(|a| a.starts_with("HTTP/1.1 4") || a.starts_with("HTTP/1.1 503")),
        "a form POST was not refused: {answers:?}"
    );
    rows.push(serde_json::json!({
        "attack": "anonymous form POSTs", "rounds": rounds, "gateway_posts": args.posts, "node_posts": args.posts,
        "announced_mib": args.post_mib, "slowest_answer_s": slowest,
        "most_sent_mib": most_sent as f64 / f64::from(1 << 20),
        "gateway_peak_rss_rise_mib": gw_peak - before.rss_mib,
        "node_peak_rss_rise_mib": node_peak - node_before.rss_mib,
        "answers": answers,
    }));
    let posts_rise = (gw_peak - before.rss_mib).max(node_peak - node_before.rss_mib);

    // 2. Idle connections, half HTTP/1 and half h2c.
    legit.set_phase("idle connections");
    tests::reset_peak_rss(gw);
    let opening = Instant::now();
    let (mut conns, opened): (Vec<TcpStream>, Vec<Instant>) = (0..args.conns)
        .map(|i| {
            let mut conn = TcpStream::connect(&addr).expect("connect");
            if i % 2 == 1 {
                conn.write_all(tests::H2C_PREFACE).unwrap();
            }
            (conn, Instant::now())
        })
        .unzip();
    let opening = opening.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let during = gauge(gw, Some(&cluster));
    legit.wait_ops(2);
    let deadline = Instant::now() + timeout * 3 + Duration::from_secs(15);
    let closed_at = close_times(&mut conns, &opened, deadline);
    let still_open = closed_at.iter().filter(|t| t.is_none()).count();
    let mut times: Vec<f64> = closed_at.into_iter().flatten().collect();
    times.sort_by(f64::total_cmp);
    let (median_close, all_closed) = (
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        times.last().copied().unwrap_or(f64::NAN),
    );
    drop(conns);
    let idle_peak = tests::proc_status_mib(gw, "VmHWM:");
    println!(
        "{} idle connections (half HTTP/1, half h2c, opened in {opening:.1} s): {still_open} still open; each closed by the server {median_close:.1} s (median) and at most {all_closed:.1} s after it opened (timeout {} s, then 5 s to close); gateway {} fds and {:?} tasks while they were open, peak RSS {idle_peak:.0} MiB",
        args.conns, args.timeout_s, during.fds, during.tasks
    );
    assert_eq!(still_open, 0, "idle connections outlived the timeouts");
    rows.push(serde_json::json!({
        "attack": "idle connections", "connections": args.conns, "timeout_s": args.timeout_s,
        "opening_s": opening, "median_closed_after_s": median_close, "all_closed_after_s": all_closed,
        "gateway_fds_during": during.fds,
        "gateway_peak_rss_mib": idle_peak,
    }));

    // 3. Share-link zip readers that read one byte a second.
    legit.set_phase("slow readers");
    tests::reset_peak_rss(gw);
    let dropped_before = cluster
        .gateway_log()
        .matches("dropped a connection that moved nothing")
        .count();
    let slow = timeout * 2 + Duration::from_secs(8);
    let readers: Vec<_> = (0..args.readers)
        .map(|_| {
            let (addr, path) = (addr.clone(), zip_path.clone());
            std::thread::spawn(move || slow_zip_reader(&addr, &path, slow, zip_size))
        })
        .collect();
    let readers: Vec<(bool, u64)> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let readers_peak = tests::proc_status_mib(gw, "VmHWM:");
    let cut = readers.iter().filter(|r| r.0).count();
    let logged = cluster
        .gateway_log()
        .matches("dropped a connection that moved nothing")
        .count()
        - dropped_before;
    std::thread::sleep(Duration::from_secs(1));
    let after_readers = gauge(gw, None);
    println!(
        "{} share-link zip readers at 1 byte/s ({} MiB zip): {cut} cut off ({logged} logged by the gateway); peak RSS {readers_peak:.0} MiB (+{:.0}), {:.0} MiB once they were gone",
        args.readers,
        zip_size >> 20,
        readers_peak - before.rss_mib,
        after_readers.rss_mib
    );
    assert_eq!(
        cut, args.readers,
        "slow readers were not cut off: {readers:?}"
    );
    rows.push(serde_json::json!({
        "attack": "slow zip readers", "readers": args.readers, "zip_mib": zip_size >> 20,
        "cut_off": cut, "logged": logged, "gateway_peak_rss_rise_mib": readers_peak - before.rss_mib,
        "gateway_rss_after_mib": after_readers.rss_mib,
    }));

    // 4. A node whose /health answer never ends.
    legit.set_phase("endless health");
    tests::reset_peak_rss(gw);
    let stop = Arc::new(AtomicBool::new(false));
    let port = endless_health_node(stop.clone());
    let id = cluster.register_endpoint(
        &format!("http://127.0.0.1:{port}"),
        "mainnet",
        "1TiB",
        "endless",
        "endless-secret-key",
    );
    let name = cluster.status()["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
        .and_then(|n| n["name"].as_str().map(str::to_owned))
        .expect("the registered node's name");
    let registered = Instant::now();
    let down = eventually(Duration::from_secs(60), || {
        node_up(&cluster.admin_endpoint, &name) == Some(false)
    });
    let marked_down = registered.elapsed().as_secs_f64();
    // A few more probes of it.
    legit.wait_ops(2);
    stop.store(true, Ordering::SeqCst);
    let health_peak = tests::proc_status_mib(gw, "VmHWM:");
    println!(
        "a node answering /health without end: marked down after {marked_down:.1} s; gateway peak RSS {health_peak:.0} MiB (+{:.0})",
        health_peak - before.rss_mib
    );
    assert!(down, "the endless node was never marked down");
    rows.push(serde_json::json!({
        "attack": "endless /health", "marked_down_after_s": marked_down,
        "gateway_peak_rss_rise_mib": health_peak - before.rss_mib,
    }));

    // Afterwards.
    legit.set_phase("after");
    std::thread::sleep(timeout + Duration::from_secs(2));
    legit.wait_ops(4);
    let written = legit.stop();
    // Idle blocking-pool threads end after 10 s; idle connections to the
    // nodes close within 40 s (the pool's timer evicts them after 20 s idle,
    // checking every 20 s), and with them their tasks. Only a leak outlasts
    // that.
    std::thread::sleep(Duration::from_secs(12));
    let settled = |g: &Gauge| {
        g.fds <= before.fds + LEFT_OPEN_BOUND
            && g.tasks
                .zip(before.tasks)
                .is_none_or(|(a, b)| a <= b + LEFT_OPEN_BOUND as u64)
    };
    eventually(Duration::from_secs(30), || {
        settled(&gauge(gw, Some(&cluster)))
    });
    let after = gauge(gw, Some(&cluster));
    let node_after = gauge(node_pid, None);
    let got = tmp.path().join("check");
    let lost: Vec<&str> = written
        .iter()
        .filter(|(key, sum)| {
            !aws.run(&[
                "s3",
                "cp",
                &format!("s3://attack/{key}"),
                got.to_str().unwrap(),
            ])
            .status
            .success()
                || sha256_file(&got) != *sum
        })
        .map(|(key, _)| key.as_str())
        .collect();
    println!(
        "gateway after: RSS {:.0} MiB ({:+.0}), {} fds ({:+}), {} threads ({:+}), {:?} tasks ({:?} before); node RSS {:.0} MiB ({:+.0}); {} objects written by the client, {} lost or changed",
        after.rss_mib,
        after.rss_mib - before.rss_mib,
        after.fds,
        after.fds as i64 - before.fds as i64,
        after.threads,
        after.threads as i64 - before.threads as i64,
        after.tasks,
        before.tasks,
        node_after.rss_mib,
        node_after.rss_mib - node_before.rss_mib,
        written.len(),
        lost.len()
    );
    println!(
        "legitimate client (aws s3 cp of {LEGIT_MIB} MiB), median seconds / operations / failures:"
    );
    for phase in [
        "before",
        "posts",
        "idle connections",
        "slow readers",
        "endless health",
        "after",
    ] {
        let (put, puts, put_failed) = legit.figures(phase, "PUT");
        let (get, gets, get_failed) = legit.figures(phase, "GET");
        println!(
            "  {phase:<17} PUT {put:.2} s ({puts}, {put_failed} failed)  GET {get:.2} s ({gets}, {get_failed} failed)"
        );
        rows.push(serde_json::json!({
            "legit_client_phase": phase,
            "put_median_s": put, "puts": puts, "put_failures": put_failed,
            "get_median_s": get, "gets": gets, "get_failures": get_failed,
        }));
    }
    rows.push(serde_json::json!({
        "gateway_before": {"rss_mib": before.rss_mib, "fds": before.fds, "threads": before.threads, "tasks": before.tasks},
        "gateway_after": {"rss_mib": after.rss_mib, "fds": after.fds, "threads": after.threads, "tasks": after.tasks},
        "node_rss_before_mib": node_before.rss_mib, "node_rss_after_mib": node_after.rss_mib,
        "objects_written": written.len(), "objects_lost": lost,
    }));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).expect("write JSON");
    }
    assert!(lost.is_empty(), "objects lost or changed: {lost:?}");
    let failures: usize = [
        "posts",
        "idle connections",
        "slow readers",
        "endless health",
        "after",
    ]
    .iter()
    .map(|p| legit.figures(p, "PUT").2 + legit.figures(p, "GET").2)
    .sum();
    assert_eq!(failures, 0, "the legitimate client saw failures");
    assert!(
        after.fds <= before.fds + LEFT_OPEN_BOUND,
        "descriptors left open: {} before, {} after",
        before.fds,
        after.fds
    );
    let (tasks_before, tasks_after) = (before.tasks.expect("tasks"), after.tasks.expect("tasks"));
    assert!(
        tasks_after <= tasks_before + LEFT_OPEN_BOUND as u64,
        "tasks left alive: {tasks_before} before, {tasks_after} after"
    );
    if !args.smoke {
        assert!(
            posts_rise < RSS_RISE_BOUND_MIB,
            "the form POSTs raised a peak RSS by {posts_rise:.0} MiB"
        );
        // The allocator gives freed memory back (see the servers' mains).
        assert!(
            after.rss_mib < before.rss_mib + RSS_RISE_BOUND_MIB,
            "the gateway kept {:.0} MiB more than before the attack",
            after.rss_mib - before.rss_mib
        );
    }
}
