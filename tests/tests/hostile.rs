//! Hostile clients at the connection level: connections left idle, readers
//! that stop reading, and signatures S3 no longer takes. The gateway frees
//! what they hold within its client timeout and keeps serving everyone
//! else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{Cluster, Curl, TempDir, run, sha256_file, write_file};

/// Whether the server closed `conn` (end of stream or reset) before
/// `deadline`, reading and dropping whatever it sent meanwhile.
fn closed_before(conn: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// 100 idle HTTP/1 keep-alive connections (after one request each) and 100
/// idle h2c connections (preface, then nothing) are all closed by the
/// server within its 2 s client timeout and the close grace; a real client
/// works meanwhile, and after them.
#[test]
fn idle_connections_are_closed() {
    let cluster = Cluster::build(3, 1, "1GiB")
        .config("client_timeout", "2s")
        .start();
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://idle"]);
    let addr = cluster.endpoint.trim_start_matches("http://").to_owned();
    let mut conns = Vec::new();
    for i in 0..200 {
        let mut conn = TcpStream::connect(&addr).unwrap();
        if i % 2 == 0 {
            write!(conn, "GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        } else {
            conn.write_all(tests::H2C_PREFACE).unwrap();
        }
        conns.push(conn);
    }
    let tmp = TempDir::new("idle");
    let file = tmp.path().join("f");
    write_file(&file, 100_000, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://idle/f"]);
    // 2 s idle, checked every half second, then 5 s for a graceful close.
    let deadline = Instant::now() + Duration::from_secs(20);
    let open: Vec<usize> = conns
        .iter_mut()
        .enumerate()
        .filter_map(|(i, conn)| (!closed_before(conn, deadline)).then_some(i))
        .collect();
    assert!(
        open.is_empty(),
        "still open after 20 s: {open:?} (even: HTTP/1, odd: h2c)"
    );
    let got = tmp.path().join("got");
    aws.ok(&["s3", "cp", "s3://idle/f", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&file), sha256_file(&got));
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// A GET whose client reads a few bytes of a 64 MiB object and then stops:
/// once nothing has moved for the client timeout, the gateway drops the
/// connection (and the segments it had decoded for it) instead of waiting
/// forever; the object stays whole for the next reader.
#[test]
fn a_reader_that_stops_reading_is_dropped() {
    let cluster = Cluster::build(3, 1, "1GiB")
        .config("client_timeout", "2s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("stalled");
    aws.ok(&["s3", "mb", "s3://stalled"]);
    let file = tmp.path().join("big");
    let size = 64usize << 20;
    write_file(&file, size, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://stalled/big"]);
    let url = aws
        .ok(&["s3", "presign", "s3://stalled/big"])
        .trim()
        .to_owned();
    let addr = cluster.endpoint.trim_start_matches("http://").to_owned();
    let path = &url[url.find(&addr).unwrap() + addr.len()..];
    let mut conn = TcpStream::connect(&addr).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut head = [0u8; 4096];
    let n = conn.read(&mut head).unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // Stop reading for well over the timeout and its grace.
    std::thread::sleep(Duration::from_secs(12));
    let mut rest = Vec::new();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let ended = conn.read_to_end(&mut rest);
    assert!(
        n + rest.len() < size,
        "the whole object came after a 12 s stall ({ended:?}): the reader was not dropped"
    );
    assert!(
        cluster
            .gateway_log()
            .contains("dropped a connection that moved nothing"),
        "the gateway did not say it dropped the stalled connection"
    );
    let got = tmp.path().join("got");
    aws.ok(&["s3", "cp", "s3://stalled/big", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&file), sha256_file(&got));
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// Twenty GETs of a 64 MiB object whose clients read a few bytes and then
/// stop: the decoded segments they leave unsent count in the gateway's
/// 48 MiB download budget (`tenfold_download_budget_in_use_bytes` never
/// shows more), so they hold tens of MiB, not ~20 x 32 MiB, until the
/// client timeout drops them; afterwards the budget is all free, and a
/// reader that reads gets the whole object.
#[test]
fn stalled_readers_hold_no_more_than_the_download_budget() {
    let cluster = Cluster::build(3, 1, "2GiB")
        .config("client_timeout", "6s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("budget");
    aws.ok(&["s3", "mb", "s3://budget"]);
    let file = tmp.path().join("big");
    write_file(&file, 64 << 20, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://budget/big"]);
    let url = aws
        .ok(&["s3", "presign", "s3://budget/big"])
        .trim()
        .to_owned();
    let addr = cluster.endpoint.trim_start_matches("http://").to_owned();
    let path = url[url.find(&addr).unwrap() + addr.len()..].to_owned();
    let in_use = || {
        cluster
            .metric("tenfold_download_budget_in_use_bytes")
            .expect("the download budget gauge")
    };
    let pid = cluster.gateway.0.id();
    let rss = || tests::proc_status_kib(pid, "VmRSS:").unwrap_or(0) >> 10;
    let before = rss();
    let mut readers: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut conn = TcpStream::connect(&addr).unwrap();
            write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            conn
        })
        .collect();
    let mut head = [0u8; 4096];
    for conn in &mut readers {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let n = conn.read(&mut head).unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    }
    // Stalled, within the timeout: what they hold, sampled.
    let mut most_in_use = 0.0f64;
    let mut most_rss = 0;
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        most_in_use = most_in_use.max(in_use());
        most_rss = most_rss.max(rss());
    }
    eprintln!(
        "gateway RSS {before} MiB before, up to {most_rss} MiB with 20 stalled readers; budget in use up to {most_in_use} bytes"
    );
    assert!(most_in_use <= f64::from(48u32 << 20), "{most_in_use}");
    assert!(
        most_rss < before + 200,
        "20 stalled readers raised the gateway's RSS from {before} to {most_rss} MiB"
    );
    // Dropped after the timeout: the budget is free again.
    assert!(
        tests::eventually(Duration::from_secs(40), || in_use() == 0.0),
        "budget still in use after the stalled readers were dropped: {}",
        in_use()
    );
    drop(readers);
    let got = tmp.path().join("got");
    aws.ok(&["s3", "cp", "s3://budget/big", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&file), sha256_file(&got));
}

/// S3's presign rules: at most seven days, for SigV4 URLs (`X-Amz-Expires`)
/// and for the SigV2 ones boto3 still makes by default (`Expires`); SigV2
/// `Authorization` headers are refused, on the gateway and a node alike.
#[test]
fn presigned_urls_last_seven_days_at_most_and_sigv2_headers_are_refused() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://presign"]);
    let tmp = TempDir::new("presign");
    let file = tmp.path().join("f");
    write_file(&file, 1000, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://presign/f"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
    let week = rt
        .block_on(
            client.get_object().bucket("presign").key("f").presigned(
                aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(604_800))
                    .unwrap(),
            ),
        )
        .unwrap()
        .uri()
        .to_owned();
    assert!(week.contains("X-Amz-Expires=604800"), "{week}");
    assert_eq!(Curl::new().fetch(&week).status, 200);
    // One second more (the signature no longer matches, but the rule is
    // checked first, as S3 does).
    let answer = Curl::new().fetch(&week.replace("X-Amz-Expires=604800", "X-Amz-Expires=604801"));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body.contains("AuthorizationQueryParametersError"),
        "{answer:?}"
    );

    // boto3's default presign (and the aws CLI's) is SigV2.
    let boto3 = |expires: u32| {
        let out = run(Command::new("python3").args([
            "-c",
            &format!(
                "import boto3; c = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='{}', aws_secret_access_key='{}'); \
                 print(c.generate_presigned_url('get_object', Params={{'Bucket': 'presign', 'Key': 'f'}}, ExpiresIn={expires}))",
                cluster.endpoint,
                tests::ACCESS_KEY,
                tests::SECRET_KEY
            ),
        ]));
        assert!(out.status.success(), "boto3 presign failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let v2 = boto3(3600);
    assert!(v2.contains("AWSAccessKeyId="), "{v2}");
    assert_eq!(Curl::new().fetch(&v2).status, 200);
    let answer = Curl::new().fetch(&boto3(30 * 86_400));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body.contains("AuthorizationQueryParametersError"),
        "{answer:?}"
    );

    let node = &cluster.nodes[0].1;
    for url in [
        format!("{}/presign/f", cluster.endpoint),
        format!("{}/tenfold", node.endpoint()),
    ] {
        let answer = Curl::new()
            .header("Authorization: AWS someone:c2lnbmF0dXJl")
            .fetch(&url);
        assert_eq!(answer.status, 400, "{url}: {answer:?}");
        assert!(
            answer.body.contains("<Code>InvalidRequest</Code>"),
            "{url}: {answer:?}"
        );
    }
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// The routes anyone can reach without a signature (here a share link's)
/// are rate-limited per client address: past the burst, `503 SlowDown`
/// with `Retry-After`, while signed S3 requests go on; the bucket refills.
#[test]
fn anonymous_routes_are_rate_limited_per_address() {
    let cluster = Cluster::build(3, 1, "1GiB")
        .config("anonymous_rate", "5")
        .start();
    let url = format!("{}/_share/not-a-token", cluster.endpoint);
    // One curl process, one connection: 100 requests as fast as they go,
    // each answer's head and body, then its status.
    let mut args: Vec<String> = vec!["-s".into(), "-i".into()];
    for _ in 0..100 {
        args.extend(["-w".into(), "\nCODE %{http_code}\n".into(), url.clone()]);
    }
    let out = run(Command::new("curl").args(&args));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("CODE "))
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), 100, "{codes:?}");
    let refused = codes.iter().filter(|c| *c == "503").count();
    let answered = codes.iter().filter(|c| *c == "404").count();
    assert_eq!(refused + answered, 100, "{codes:?}");
    // A burst of 25 (five times the rate), then about five a second.
    assert!(
        (25..60).contains(&answered),
        "{answered} answered of 100: {codes:?}"
    );
    assert!(codes[..25].iter().all(|c| c == "404"), "{codes:?}");
    assert!(text.contains("<Code>SlowDown</Code>"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    // Signed requests are not held back.
    cluster.aws().ok(&["s3", "ls"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(Curl::new().fetch(&url).status, 404, "the bucket refills");
}
