//! Downloads: hedged reads around slow, lying and dead nodes, share links
//! and zip archives of a prefix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::{Cluster, Curl, TempDir, run, sha256_file, sigv4_args, write_file};

/// Starts `tenfold share create` against the cluster and returns the URL.
fn share(cluster: &Cluster, bucket: &str, prefix: &str, expires: &str) -> String {
    cluster.share_link(&[bucket, prefix, "--expires", expires])
}

/// `curl` a URL into `dest`; returns the HTTP status.
fn curl_to(url: &str, dest: &Path, extra: &[&str]) -> u16 {
    Curl::new().args(extra).save(url, dest)
}

/// Checks a zip with `unzip -t` and compares every entry's SHA-256 with
/// the file of the same relative path under `src`, using Python's zipfile.
fn assert_zip_matches(zip: &Path, src: &Path, expected_entries: usize) {
    let out = run(Command::new("unzip").args(["-t", zip.to_str().unwrap()]));
    assert!(
        out.status.success(),
        "unzip -t: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"
import hashlib, os, sys, zipfile
zip_path, src = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    assert z.testzip() is None, "bad CRC"
    names = z.namelist()
    for name in names:
        h = hashlib.sha256()
        with z.open(name) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        with open(os.path.join(src, name), "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        assert h.hexdigest() == want, name
    print(len(names))
"#;
    let out = run(Command::new("python3").args([
        "-c",
        script,
        zip.to_str().unwrap(),
        src.to_str().unwrap(),
    ]));
    assert!(
        out.status.success(),
        "zipfile check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(count, expected_entries, "entries in the zip");
}

#[test]
fn a_transfer_round_trips_through_a_share_link() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("share");
    let src = tmp.path().join("transfer");
    let files: &[(&str, usize, bool)] = &[
        ("empty.txt", 0, false),
        ("tiny.txt", 1, false),
        ("photos/été ☀/naïve.jpg", 300_000, false),
        ("photos/日本語.bin", 9 << 20, false),
        ("docs/report (final).txt", 2 << 20, true),
        ("docs/a&b <c>.txt", 5000, true),
    ];
    for (name, len, compressible) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_file(&path, *len, *compressible);
    }
    aws.ok(&["s3", "mb", "s3://shares"]);
    aws.ok(&[
        "s3",
        "sync",
        src.to_str().unwrap(),
        "s3://shares/transfers/t1/",
    ]);
    // An object beside the prefix must not leak into the archive.
    aws.ok(&[
        "s3",
        "cp",
        src.join("tiny.txt").to_str().unwrap(),
        "s3://shares/transfers/t2/x",
    ]);

    let url = share(&cluster, "shares", "transfers/t1/", "1h");
    assert!(
        url.starts_with(&format!("{}/_share/", cluster.endpoint)),
        "{url}"
    );
    let page = tmp.path().join("page.html");
    assert_eq!(curl_to(&url, &page, &[]), 200);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("6 files"), "{html}");
    assert!(html.contains("photos/été ☀/naïve.jpg"), "{html}");
    assert!(
        html.contains("docs/a&amp;b &lt;c&gt;.txt"),
        "names are escaped: {html}"
    );
    assert!(html.contains(&format!(
        "{}/zip",
        url.trim_start_matches(&cluster.endpoint)
    )));
    assert!(!html.contains("t2/x"));

    let zip = tmp.path().join("t1.zip");
    assert_eq!(curl_to(&format!("{url}/zip"), &zip, &[]), 200);
    assert_zip_matches(&zip, &src, files.len());

    // The same archive for an authenticated S3 user, signed by curl.
    let signed = tmp.path().join("signed.zip");
    let status = curl_to(
        &format!(
            "{}/shares?prefix=transfers%2Ft1%2Fphotos%2F&x-tenfold-zip=1",
            cluster.endpoint
        ),
        &signed,
        &sigv4_args(tests::ACCESS_KEY, tests::SECRET_KEY)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&std::fs::read(&signed).unwrap())
    );
    assert_zip_matches(&signed, &src.join("photos"), 2);
    // Unsigned, the same request is refused.
    let refused = tmp.path().join("refused");
    assert_eq!(
        curl_to(
            &format!(
                "{}/shares?prefix=transfers%2F&x-tenfold-zip=1",
                cluster.endpoint
            ),
            &refused,
            &[]
        ),
        403
    );

    // Forged, malformed, expired and revoked links open nothing.
    let body = tmp.path().join("body");
    let forged = format!("{}/_share/{}", cluster.endpoint, "A".repeat(43));
    assert_eq!(curl_to(&forged, &body, &[]), 404);
    assert_eq!(curl_to(&format!("{forged}/zip"), &body, &[]), 404);
    assert_eq!(
        curl_to(
            &format!("{}/_share/..%2F..%2Fetc", cluster.endpoint),
            &body,
            &[]
        ),
        404
    );
    let expiring = share(&cluster, "shares", "transfers/t1/", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(curl_to(&format!("{expiring}/zip"), &body, &[]), 403);
    let text = std::fs::read_to_string(&body).unwrap();
    assert!(
        text.contains("expired") && !text.contains("naïve"),
        "{text}"
    );
    let revoked = share(&cluster, "shares", "transfers/t1/", "1h");
    let out = cluster.admin(&["share", "revoke", &revoked]);
    assert!(out.status.success());
    assert_eq!(curl_to(&revoked, &body, &[]), 403);
    // The first link still works.
    assert_eq!(curl_to(&url, &body, &[]), 200);
}

#[test]
fn a_lying_node_is_demoted_and_reads_stay_correct() {
    // Every node but mainnet-0 answers 250 ms late, so the liar ranks first
    // (its recorded latencies stay below that even on a loaded machine) and
    // is read before it is found out.
    let cluster = Cluster::build(3, 1, "1GiB")
        .node_args(|network, i| {
            if network == "mainnet" && i == 0 {
                Vec::new()
            } else {
                vec!["--test-delay".into(), "250ms".into()]
            }
        })
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("liar");
    aws.ok(&["s3", "mb", "s3://liar"]);
    let src = tmp.path().join("src");
    write_file(&src, 3 << 20, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://liar/obj"]);
    // mainnet-0 now answers every fragment with wrong bytes.
    let liar = &cluster.nodes[0].1;
    let replicas = liar.replicas();
    assert_eq!(
        replicas.len(),
        10,
        "every fragment has a replica on each mainnet node"
    );
    for replica in &replicas {
        liar.corrupt_replica(replica, 40..80);
    }
    // Every GET is correct, and the liar is found out: its lie passes a
    // length check, fails the frames' AEAD tags, and the MD5-checked second
    // read names it. It ranks first (the others answer 250 ms late), so a
    // few GETs are plenty; a loaded machine may need more than one.
    let mut rounds = 0;
    while !cluster.gateway_log().contains("demoted") {
        assert!(rounds < 20, "the lying node was never found out");
        let dst = tmp.path().join("first");
        aws.ok(&["s3", "cp", "s3://liar/obj", dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst));
        rounds += 1;
    }
    assert!(
        cluster.gateway_log().contains("segment did not decode"),
        "the lie was not caught by the frames' tags"
    );
    // Demoted, it is asked only when every other replica fails: however
    // slow the others are, further GETs never reach it.
    let before = liar.objects_read();
    for round in 0..3 {
        let dst = tmp.path().join(format!("dst{round}"));
        aws.ok(&["s3", "cp", "s3://liar/obj", dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst), "round {round}");
    }
    let after = liar.objects_read();
    assert_eq!(
        after - before,
        0,
        "a demoted node was still read {} times for 30 fragment reads",
        after - before
    );
    assert!(
        !cluster
            .gateway_log()
            .contains("every other replica failed: asking a demoted node"),
        "a demoted node was asked as a last resort while the others answered"
    );
}

#[test]
fn two_of_three_mainnet_replicas_down_still_read() {
    let mut cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("twodown");
    aws.ok(&["s3", "mb", "s3://twodown"]);
    let src = tmp.path().join("src");
    write_file(&src, 5 << 20, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://twodown/obj"]);
    cluster.nodes[0].1.proc.kill();
    cluster.nodes[1].1.proc.kill();
    for round in 0..2 {
        let dst = tmp.path().join(format!("dst{round}"));
        aws.ok(&["s3", "cp", "s3://twodown/obj", dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst), "round {round}");
    }
    // And with the last mainnet replica gone too, the testnet copy serves.
    cluster.nodes[2].1.proc.kill();
    let dst = tmp.path().join("testnet-only");
    aws.ok(&["s3", "cp", "s3://twodown/obj", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
}

#[test]
fn reads_are_hedged_around_a_slow_node() {
    // mainnet-0 answers every request 1.5 s late; the three other replicas
    // are prompt, so reads that try it first are hedged to another one.
    let cluster = Cluster::build(3, 1, "1GiB")
        .node_args(|network, i| {
            if network == "mainnet" && i == 0 {
                vec!["--test-delay".into(), "1500ms".into()]
            } else {
                Vec::new()
            }
        })
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("slow");
    aws.ok(&["s3", "mb", "s3://slow"]);
    let src = tmp.path().join("src");
    write_file(&src, 3 << 20, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://slow/obj"]);
    for round in 0..3 {
        let dst = tmp.path().join(format!("dst{round}"));
        aws.ok(&["s3", "cp", "s3://slow/obj", dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst), "round {round}");
    }
    let slow = &cluster.nodes[0].1;
    // Every fragment has a replica there, but the node is ranked last once
    // its latency is known: it serves few of the 30 fragment reads.
    assert!(
        slow.objects_read() < 10,
        "slow node read {} times",
        slow.objects_read()
    );
}

/// A large transfer's share page comes in pages of 500 files, each file
/// downloadable by itself, and a link to one object shows that object.
#[test]
fn share_pages_paginate_and_offer_each_file() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://paged"]);
    let tmp = TempDir::new("paged");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..620 {
        std::fs::write(src.join(format!("f{i:04}.txt")), format!("file {i}\n")).unwrap();
    }
    aws.ok(&[
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        src.to_str().unwrap(),
        "s3://paged/many/",
    ]);
    let url = share(&cluster, "paged", "many/", "1h");
    let first = Curl::new().fetch(&url);
    assert_eq!(first.status, 200);
    assert!(first.body.contains("620 files"), "{}", first.body);
    assert_eq!(first.body.matches("/file/").count(), 500);
    assert!(first.body.contains("f0499.txt") && !first.body.contains("f0500.txt"));
    let next = first
        .body
        .split("href=\"")
        .filter_map(|r| r.split_once('"').map(|(h, _)| h.replace("&amp;", "&")))
        .find(|h| h.contains("?after="))
        .expect("a next page link");
    let second = Curl::new().fetch(&format!("{}{next}", cluster.endpoint));
    assert_eq!(second.status, 200);
    assert_eq!(second.body.matches("/file/").count(), 120);
    assert!(second.body.contains("f0500.txt") && second.body.contains("f0619.txt"));
    assert!(!second.body.contains("?after="), "no page after the last");
    // One file by itself, with its name.
    let one = Curl::new()
        .args(&["-i"])
        .fetch(&format!("{url}/file/f0042.txt"));
    assert_eq!(one.status, 200);
    assert!(one.body.ends_with("file 42\n"), "{one:?}");
    assert!(
        one.body
            .to_ascii_lowercase()
            .contains("filename=\"f0042.txt\""),
        "{one:?}"
    );
    assert_eq!(Curl::new().fetch(&format!("{url}/file/absent")).status, 404);
    // A link to one object shows that object, and downloads it.
    let single = share(&cluster, "paged", "many/f0007.txt", "1h");
    let page = Curl::new().fetch(&single);
    assert!(
        page.body.contains("1 file") && page.body.contains("f0007.txt"),
        "{}",
        page.body
    );
    let got = tmp.path().join("single");
    assert_eq!(curl_to(&format!("{single}/file/"), &got, &[]), 200);
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "file 7\n");
}
