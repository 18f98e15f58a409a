//! Durability: what a commit releases is removed only when nobody reads it
//! any more, removals go on while a node is down, and replicas nothing
//! names are swept without touching writes in progress.

use std::process::Command;
use std::time::Duration;

use tests::{
    ACCESS_KEY, Cluster, SECRET_KEY, TempDir, eventually, run, sha256_file, unsigned_payload,
    write_file,
};

/// A slow GET that started before its object was overwritten, and one that
/// started before it was deleted, both return the old bytes whole; the old
/// replicas leave the nodes once the reads are done. The grace period is
/// zero here, so only the gateway's read leases keep them.
#[test]
fn a_read_in_progress_finishes_on_the_bytes_it_started_on() {
    let cluster = Cluster::build(3, 1, "1GiB").gc_delay("0s").start();
    let aws = cluster.aws();
    let tmp = TempDir::new("readlease");
    aws.ok(&["s3", "mb", "s3://lease"]);
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    // Larger than what the gateway reads ahead and the sockets buffer
    // (a few segments of 8 MiB), so most of it is fetched after the commit.
    write_file(&old, 64 << 20, false);
    // Small, so the overwrite commits at once.
    write_file(&new, 1 << 20, false);
    for op in ["overwrite", "delete"] {
        let target = format!("s3://lease/{op}");
        let before = cluster.stored_replicas();
        aws.ok(&["s3", "cp", old.to_str().unwrap(), &target]);
        let url = aws.ok(&["s3", "presign", &target]).trim().to_owned();
        let got = tmp.path().join(format!("got-{op}"));
        // 64 MiB at 6 MiB/s: the GET takes about eleven seconds.
        let reader = {
            let got = got.clone();
            std::thread::spawn(move || {
                run(Command::new("curl")
                    .args(["-s", "--limit-rate", "6M", "-o"])
                    .arg(&got)
                    .arg(&url))
            })
        };
        std::thread::sleep(Duration::from_secs(2));
        if op == "overwrite" {
            aws.ok(&["s3", "cp", new.to_str().unwrap(), &target]);
        } else {
            aws.ok(&["s3", "rm", &target]);
        }
        let out = reader.join().unwrap();
        assert!(out.status.success(), "{op}: curl failed");
        assert_eq!(
            sha256_file(&old),
            sha256_file(&got),
            "{op}: the GET did not return the old object whole ({} bytes)",
            std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0)
        );
        // Released once the read is over: an overwrite leaves the new
        // object's replicas only, a delete none of the object's.
        let left = if op == "overwrite" {
            before + cluster.replicas_of("lease", op)
        } else {
            before
        };
        assert!(
            eventually(Duration::from_secs(60), || cluster.stored_replicas()
                == left),
            "{op}: {} replica files on the nodes, expected {left}",
            cluster.stored_replicas()
        );
    }
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// With a node stopped, the removals queued for it are retried on their
/// own while every other node is emptied: more of them than one pass of
/// the collector takes, so they cannot hold the rest back.
#[test]
fn deletions_go_on_while_a_node_is_down() {
    let mut cluster = Cluster::start(4, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("gcdown");
    let dir = tmp.path().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..800 {
        write_file(&dir.join(format!("f{i}")), 1024, false);
    }
    aws.ok(&["s3", "mb", "s3://gcdown"]);
    aws.ok(&[
        "s3",
        "cp",
        "--quiet",
        "--recursive",
        dir.to_str().unwrap(),
        "s3://gcdown/many/",
    ]);
    let stopped = cluster.nodes[0].2;
    let on_stopped = cluster.node(stopped).replicas().len();
    assert!(
        on_stopped > 512,
        "the stopped node holds {on_stopped} replicas, not more than a pass takes"
    );
    cluster.node(stopped).proc.kill();
    aws.ok(&["s3", "rm", "--quiet", "--recursive", "s3://gcdown/many/"]);
    let others = || {
        cluster
            .nodes
            .iter()
            .filter(|(_, _, id)| *id != stopped)
            .map(|(_, node, _)| node.replicas().len())
            .sum::<usize>()
    };
    assert!(
        eventually(Duration::from_secs(120), || others() == 0),
        "{} replica files left on the running nodes",
        others()
    );
    // The stopped node's replicas wait in the queue for it to come back.
    let status = cluster.admin(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["garbage"].as_i64().unwrap() >= i64::try_from(on_stopped).unwrap(),
        "{status}"
    );
}

/// PUTs `file` at `path` (`BUCKET/KEY`) with curl at 2 MiB/s, in a thread;
/// its output says how the upload ended (`-f`: an HTTP error fails).
fn upload_at_2_mib_s(
    cluster: &Cluster,
    file: &std::path::Path,
    path: &str,
) -> std::thread::JoinHandle<std::process::Output> {
    let args = unsigned_payload(ACCESS_KEY, SECRET_KEY);
    let (file, url) = (file.to_owned(), format!("{}/{path}", cluster.endpoint));
    std::thread::spawn(move || {
        run(Command::new("curl")
            .args(args)
            .args(["--limit-rate", "2M", "-T"])
            .arg(&file)
            .arg(url))
    })
}

/// Node replicas every listed object's placements name.
fn named_replicas(cluster: &Cluster, bucket: &str, keys: &[&str]) -> usize {
    keys.iter().map(|k| cluster.replicas_of(bucket, k)).sum()
}

/// The orphan sweep: the replicas of an upload whose gateway was killed,
/// and a fragment-shaped file no index row names, leave the nodes after
/// `orphan_grace`; a file of any other shape stays; and an upload that
/// takes many grace periods keeps every replica it wrote (its write is
/// known, here and through its heartbeat), so it reads back whole.
#[test]
fn orphans_are_swept_and_writes_in_progress_are_not() {
    let mut cluster = Cluster::build(3, 1, "1GiB")
        .durability("orphan_grace", "2s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("orphans");
    aws.ok(&["s3", "mb", "s3://orphans"]);
    let keep = tmp.path().join("keep");
    write_file(&keep, 3_000_000, false);
    aws.ok(&["s3", "cp", keep.to_str().unwrap(), "s3://orphans/keep"]);

    // Two files put on a node directly: one shaped like a fragment, one not.
    let (_, node, _) = &cluster.nodes[0];
    let stray = tmp.path().join("stray");
    write_file(&stray, 1000, false);
    for key in ["0123456789abcdef0123456789abcdef/0/3", "notes/readme.txt"] {
        let out = run(Command::new("curl")
            .args(unsigned_payload(&node.access_key, &node.secret_key))
            .arg("-T")
            .arg(&stray)
            .arg(format!("{}/tenfold/{key}", node.endpoint())));
        assert!(out.status.success(), "PUT {key} on the node failed");
    }

    // A slow upload: 24 MiB at 1.5 MiB/s, so its first segment's replicas
    // sit unnamed on the nodes for many grace periods before it commits.
    let slow = tmp.path().join("slow");
    write_file(&slow, 24 << 20, false);
    let uploader = {
        let args = unsigned_payload(ACCESS_KEY, SECRET_KEY);
        let (slow, url) = (slow.clone(), format!("{}/orphans/slow", cluster.endpoint));
        std::thread::spawn(move || {
            run(Command::new("curl")
                .args(args)
                .args(["--limit-rate", "1536K", "-T"])
                .arg(&slow)
                .arg(url))
        })
    };
    assert!(
        uploader.join().unwrap().status.success(),
        "the slow PUT failed"
    );
    let got = tmp.path().join("slow.got");
    aws.ok(&["s3", "cp", "s3://orphans/slow", got.to_str().unwrap()]);
    assert_eq!(
        sha256_file(&slow),
        sha256_file(&got),
        "the slow upload lost replicas"
    );

    // An upload cut short by killing its gateway once part of it is stored.
    let big = tmp.path().join("big");
    write_file(&big, 64 << 20, false);
    let before = cluster.stored_replicas();
    // One PUT (the CLI would go multipart, and its parts are named).
    let cut = {
        let args = unsigned_payload(ACCESS_KEY, SECRET_KEY);
        let (big, url) = (big.clone(), format!("{}/orphans/big", cluster.endpoint));
        std::thread::spawn(move || {
            run(Command::new("curl")
                .args(args)
                .args(["--limit-rate", "4M", "-T"])
                .arg(&big)
                .arg(url))
        })
    };
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas()
            >= before + 80),
        "the upload stored no replicas"
    );
    cluster
        .restart_gateway(|config| config)
        .expect("gateway restarts");
    let _ = cut.join();
    assert!(
        aws.run(&[
            "s3api",
            "head-object",
            "--bucket",
            "orphans",
            "--key",
            "big"
        ])
        .status
        .code()
            != Some(0),
        "the cut upload is visible"
    );
    // What is left: the replicas the index names, and the foreign file.
    let want = named_replicas(&cluster, "orphans", &["keep", "slow"]) + 1;
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas()
            == want),
        "the nodes hold {} files; the index names {} and one foreign file was put",
        cluster.stored_replicas(),
        want - 1
    );
    let node = &cluster.nodes[0].1;
    assert!(
        node.replicas().iter().any(|r| r.key == "notes/readme.txt"),
        "the foreign file was removed"
    );
    for (key, src) in [("keep", &keep), ("slow", &slow)] {
        let got = tmp.path().join(format!("{key}.after"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://orphans/{key}"),
            got.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(src), sha256_file(&got), "{key} after the sweep");
    }
    assert!(cluster.gateway_log().contains("orphan replicas removed"));
    // `tenfold status` counts them: the cut upload's 80 or more, and the
    // fragment-shaped file nothing named.
    let mut swept = 0;
    assert!(
        eventually(Duration::from_secs(20), || {
            swept = cluster.status()["swept_orphans"].as_u64().unwrap_or(0);
            swept >= 81
        }),
        "status counts {swept} swept orphans"
    );
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// SIGTERM stops the gateway the way an orchestrator expects: it takes no
/// new connection, finishes the upload in progress (which is committed and
/// answered 200), then exits by itself, successfully.
#[test]
fn sigterm_lets_the_uploads_in_progress_finish() {
    let mut cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("sigterm");
    aws.ok(&["s3", "mb", "s3://term"]);
    // 12 MiB at 2 MiB/s: about six seconds.
    let file = tmp.path().join("f");
    write_file(&file, 12 << 20, false);
    let uploader = upload_at_2_mib_s(&cluster, &file, "term/f");
    std::thread::sleep(Duration::from_secs(2));
    let pid = cluster.gateway.0.id().to_string();
    assert!(
        run(Command::new("kill").args(["-TERM", &pid]))
            .status
            .success()
    );
    let addr = cluster.endpoint.trim_start_matches("http://").to_owned();
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            &addr
        )
        .is_err()),
        "the gateway still accepts connections after SIGTERM"
    );
    let upload = uploader.join().unwrap();
    assert!(
        upload.status.success(),
        "the upload in progress failed: {}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let exited = eventually(Duration::from_secs(30), || {
        matches!(cluster.gateway.0.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the gateway did not exit after its last request");
    let status = cluster.gateway.0.wait().unwrap();
    assert!(status.success(), "the gateway exited with {status}");
    let log = cluster.gateway_log();
    assert!(log.contains("every connection finished"), "{log}");
    cluster
        .restart_gateway(|config| config)
        .expect("gateway restarts");
    let got = tmp.path().join("got");
    aws.ok(&["s3", "cp", "s3://term/f", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&file), sha256_file(&got));
}

/// SIGTERM during five concurrent uploads: the three that can finish
/// within `shutdown_grace` answer 200 and read back after a restart; the
/// two that cannot are cut off, leave no object, and once the orphan sweep
/// has run the nodes hold exactly the files the index names.
#[test]
fn sigterm_during_five_uploads_keeps_the_finished_ones_and_nothing_else() {
    let mut cluster = Cluster::build(3, 1, "1GiB")
        .config("shutdown_grace", "6s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("sigterm5");
    aws.ok(&["s3", "mb", "s3://term"]);
    // At 2 MiB/s: 4 MiB takes two seconds, 40 MiB twenty.
    let sizes = [4 << 20, 4 << 20, 4 << 20, 40 << 20, 40 << 20];
    let files: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let file = tmp.path().join(format!("f{i}"));
            write_file(&file, size, false);
            file
        })
        .collect();
    let uploads: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, file)| upload_at_2_mib_s(&cluster, file, &format!("term/f{i}")))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let pid = cluster.gateway.0.id().to_string();
    assert!(
        run(Command::new("kill").args(["-TERM", &pid]))
            .status
            .success()
    );
    let answered: Vec<bool> = uploads
        .into_iter()
        .map(|u| u.join().unwrap().status.success())
        .collect();
    assert_eq!(answered, [true, true, true, false, false]);
    let exited = eventually(Duration::from_secs(30), || {
        matches!(cluster.gateway.0.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the gateway did not exit after its grace");
    assert!(cluster.gateway_log().contains("cut off"));

    cluster
        .restart_gateway(|config| config)
        .expect("gateway restarts");
    for (i, file) in files.iter().enumerate().take(3) {
        let got = tmp.path().join(format!("got{i}"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://term/f{i}"),
            got.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(file), sha256_file(&got), "f{i}");
    }
    let listed = aws.ok(&["s3", "ls", "s3://term/"]);
    assert!(
        !listed.contains("f3") && !listed.contains("f4"),
        "a cut-off upload is visible: {listed}"
    );
    let named = named_replicas(&cluster, "term", &["f0", "f1", "f2"]);
    assert!(
        eventually(Duration::from_secs(90), || cluster.stored_replicas()
            == named),
        "the nodes hold {} files, the index names {named}",
        cluster.stored_replicas()
    );
}
