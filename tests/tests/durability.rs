//! Durability: what a commit releases is removed only when nobody reads it
//! any more, and removals go on while a node is down.

use std::process::Command;
use std::time::Duration;

use tests::{Cluster, TempDir, eventually, run, sha256_file, write_file};

/// Node replicas of an object, as the index records them.
fn replicas_of(cluster: &Cluster, bucket: &str, key: &str) -> usize {
    cluster.inspect(bucket, key)["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["placements"].as_array().unwrap().len())
        .sum()
}

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
        let before = cluster.fragment_files();
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
            before + replicas_of(&cluster, "lease", op)
        } else {
            before
        };
        assert!(
            eventually(Duration::from_secs(60), || cluster.fragment_files() == left),
            "{op}: {} replica files on the nodes, expected {left}",
            cluster.fragment_files()
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
    let on_stopped = cluster.node(stopped).object_files().len();
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
            .map(|(_, node, _)| node.object_files().len())
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
