//! Faults, tested rather than assumed: dead nodes, corrupt replicas, full
//! nodes, and too few nodes, against a `tenfold serve` gateway and real
//! `tenfold-node` processes.

use std::time::Duration;

use tests::{Cluster, Node, TempDir, assert_placements, eventually, sha256_file, write_file};

fn placement_nodes(report: &serde_json::Value) -> Vec<i64> {
    let mut ids: Vec<i64> = report["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f["placements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["node"].as_i64().unwrap())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn dead_nodes_before_put_and_before_get() {
    let mut cluster = Cluster::start(4, 2, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("dead");
    aws.ok(&["s3", "mb", "s3://dead"]);
    let src = tmp.path().join("src");
    write_file(&src, 5 << 20, false);

    // One mainnet node dies before the PUT: the survivors take every replica.
    let killed = cluster.nodes[0].2;
    cluster.node(killed).proc.kill();
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://dead/obj"]);
    let report = cluster.inspect("dead", "obj");
    assert_eq!(assert_placements(&report, 3, 1), 10);
    assert!(
        !placement_nodes(&report).contains(&killed),
        "a replica was placed on the dead node: {report}"
    );

    // One more mainnet node dies: every fragment still has replicas left.
    let second = cluster.nodes[1].2;
    cluster.node(second).proc.kill();
    let dst = tmp.path().join("dst");
    aws.ok(&["s3", "cp", "s3://dead/obj", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
}

/// The write quorum (two copies by default): with only one node up, a PUT
/// is refused with a 503 the client may retry, and leaves nothing on the
/// node that took its replicas.
#[test]
fn nodes_unreachable_below_the_quorum_refuse_with_503() {
    let mut cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("quorum");
    aws.ok(&["s3", "mb", "s3://quorum"]);
    let src = tmp.path().join("src");
    write_file(&src, 2 << 20, false);
    let dead: Vec<i64> = [0, 1, 3].iter().map(|&i| cluster.nodes[i].2).collect();
    for id in &dead {
        cluster.node(*id).proc.kill();
    }
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "quorum",
        "--key",
        "k",
        "--body",
        src.to_str().unwrap(),
    ]);
    assert!(err.contains("ServiceUnavailable"), "{err}");
    let listed = aws.ok(&["s3", "ls", "s3://quorum"]);
    assert!(
        listed.trim().is_empty(),
        "a refused PUT is visible: {listed}"
    );
    let survivor = cluster.nodes[2].2;
    assert!(
        eventually(Duration::from_secs(30), || cluster
            .node(survivor)
            .replicas()
            .is_empty()),
        "a refused PUT left {} files on the node that was up",
        cluster.node(survivor).replicas().len()
    );
}

#[test]
fn corrupt_replicas_are_skipped() {
    const ROUNDS: usize = 40;
    // One mainnet and one testnet replica per fragment; even fragments are
    // corrupted on the mainnet node, odd ones on the testnet node. Whichever
    // node a read tries first, half the fragments meet a corrupt replica
    // first, and every fragment keeps one good one.
    let cluster = Cluster::build(1, 1, "1GiB")
        .storage("mainnet_replicas", "1")
        .storage("testnet_replicas", "1")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("corrupt");
    aws.ok(&["s3", "mb", "s3://corrupt"]);
    let src = tmp.path().join("src");
    write_file(&src, 3 << 20, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://corrupt/obj"]);
    let mut corrupted = 0;
    for (network, node, _) in &cluster.nodes {
        let parity = usize::from(network == "testnet");
        for replica in node.replicas() {
            let index: usize = replica.key.rsplit('/').next().unwrap().parse().unwrap();
            if index % 2 != parity {
                continue;
            }
            // Past the 24-byte fragment header, inside the payload.
            node.corrupt_replica(&replica, 30..60);
            corrupted += 1;
        }
    }
    assert_eq!(
        corrupted, 10,
        "one corrupt replica for each of the 10 fragments"
    );
    // A read hedged to the good replica may win before the corrupt one is
    // checked (its answer is then dropped), and on a loaded machine the
    // hedge fires often: read again until one was checked, at least twice,
    // every time whole and right. (8 rounds once saw none checked in CI.)
    for round in 0..ROUNDS {
        let dst = tmp.path().join(format!("dst{round}"));
        aws.ok(&["s3", "cp", "s3://corrupt/obj", dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst), "round {round}");
        if round >= 1 && cluster.gateway_log().contains("checksum mismatch") {
            break;
        }
    }
    let log = cluster.gateway_log();
    assert!(
        log.contains("checksum mismatch"),
        "no corrupt replica was ever read in {ROUNDS} GETs, the test proved nothing"
    );
}

#[test]
fn a_full_node_refuses_and_the_balancer_places_elsewhere() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("full");
    // A fourth mainnet node with room for a few fragments only.
    let tiny = Node::start(cluster.dir.path(), "tiny", "300KiB");
    let tiny_id = cluster.register_node(&tiny, "mainnet", "300KiB");
    cluster.wait_for_node(tiny_id);

    // Writing to the node directly: refused with a clear S3 error.
    let direct = tests::Aws::new(&tiny.endpoint(), &tiny.access_key, &tiny.secret_key);
    direct.ok(&["s3", "mb", "s3://direct"]);
    let big = tmp.path().join("big");
    write_file(&big, 400 << 10, false);
    let err = direct.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "direct",
        "--key",
        "k",
        "--body",
        big.to_str().unwrap(),
    ]);
    assert!(err.contains("InsufficientStorage"), "{err}");
    let listed = direct.ok(&["s3", "ls", "s3://direct"]);
    assert!(listed.trim().is_empty(), "a refused write left {listed}");

    aws.ok(&["s3", "mb", "s3://full"]);
    let mut sources = Vec::new();
    for i in 0..6 {
        let src = tmp.path().join(format!("src{i}"));
        write_file(&src, 2 << 20, false);
        aws.ok(&[
            "s3",
            "cp",
            src.to_str().unwrap(),
            &format!("s3://full/o{i}"),
        ]);
        sources.push(src);
    }
    let mut on_tiny = 0;
    for (i, src) in sources.iter().enumerate() {
        let report = cluster.inspect("full", &format!("o{i}"));
        assert_eq!(assert_placements(&report, 3, 1), 10);
        on_tiny += report["fragments"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["placements"].as_array().unwrap().iter())
            .filter(|p| p["node"] == tiny_id)
            .count();
        let dst = tmp.path().join(format!("dst{i}"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://full/o{i}"),
            dst.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(src), sha256_file(&dst));
    }
    // ~200 KiB fragments: the tiny node holds at most one of the 60.
    assert!(on_tiny <= 1, "{on_tiny} replicas on a 300 KiB node");
    let stored: u64 = tiny.replicas().iter().map(|r| r.size).sum();
    assert!(stored <= 300 << 10, "tiny node holds {stored} bytes");
}

#[test]
fn too_few_nodes_fails_cleanly_and_leaves_nothing_behind() {
    // Two mainnet nodes and a testnet one cannot give a fragment the four
    // copies this write quorum asks for.
    let cluster = Cluster::build(2, 1, "1GiB")
        .durability("min_copies", "4")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("few");
    aws.ok(&["s3", "mb", "s3://few"]);
    let src = tmp.path().join("src");
    write_file(&src, 2 << 20, false);
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "few",
        "--key",
        "k",
        "--body",
        src.to_str().unwrap(),
    ]);
    assert!(err.contains("InsufficientStorage"), "{err}");
    let listed = aws.ok(&["s3", "ls", "s3://few"]);
    assert!(
        listed.trim().is_empty(),
        "a failed PUT is visible: {listed}"
    );
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas() == 0),
        "{} orphan fragments",
        cluster.stored_replicas()
    );
}

#[test]
fn a_stalled_node_is_passed_over() {
    let cluster = Cluster::start(3, 1, "1GiB");
    // A "node" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let stalled = cluster.register_endpoint(&format!("http://{addr}"), "mainnet", "1GiB", "k", "s");
    cluster.wait_for_node(stalled);
    let aws = cluster.aws();
    let tmp = TempDir::new("stall");
    aws.ok(&["s3", "mb", "s3://stall"]);
    for i in 0..3 {
        let src = tmp.path().join(format!("src{i}"));
        // The first object's fragments (~117 KiB) are small enough to be
        // batched: those queued behind the stalled write must fail with it
        // and go elsewhere. The node is down for the next objects.
        write_file(&src, if i == 0 { 1 << 20 } else { 2 << 20 }, false);
        aws.ok(&[
            "s3",
            "cp",
            src.to_str().unwrap(),
            &format!("s3://stall/o{i}"),
        ]);
        let report = cluster.inspect("stall", &format!("o{i}"));
        // (Fragments are 128 KiB at least: 1 MiB makes nine.)
        assert_eq!(
            assert_placements(&report, 3, 1),
            if i == 0 { 9 } else { 10 }
        );
        assert!(
            !placement_nodes(&report).contains(&stalled),
            "a replica counted on the stalled node"
        );
        let dst = tmp.path().join(format!("dst{i}"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://stall/o{i}"),
            dst.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(&src), sha256_file(&dst));
    }
}
