//! A third-party S3 server as a storage node: SeaweedFS registered with
//! `tenfold nodes add` beside `tenfold-node`s. The balancer relies on plain
//! S3 only, so objects round-trip with replicas on it.

use std::time::Duration;

use tests::{Cluster, SeaweedFs, TempDir, assert_placements, eventually, sha256_file, write_file};

#[test]
fn seaweedfs_node_holds_replicas() {
    // Two tenfold-node mainnet nodes; SeaweedFS is the third mainnet node,
    // so every fragment must have a replica on it.
    let cluster = Cluster::start(2, 1, "1GiB");
    let weed = SeaweedFs::start();
    let weed_id = cluster.register_endpoint(
        &weed.endpoint,
        "mainnet",
        "1GiB",
        weed.access_key,
        weed.secret_key,
    );
    cluster.wait_for_node(weed_id);

    let aws = cluster.aws();
    let tmp = TempDir::new("weedobj");
    aws.ok(&["s3", "mb", "s3://mixed"]);
    for (i, size) in [1usize << 20, 3 << 20].into_iter().enumerate() {
        let src = tmp.path().join(format!("src{i}"));
        write_file(&src, size, i == 1);
        aws.ok(&[
            "s3",
            "cp",
            src.to_str().unwrap(),
            &format!("s3://mixed/o{i}"),
        ]);
        let report = cluster.inspect("mixed", &format!("o{i}"));
        let fragments = assert_placements(&report, 3, 1);
        let on_weed = report["fragments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["placements"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["node"] == weed_id)
            })
            .count();
        assert_eq!(
            on_weed, fragments,
            "every fragment needs SeaweedFS as its third mainnet node"
        );
        let dst = tmp.path().join(format!("dst{i}"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://mixed/o{i}"),
            dst.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(&src), sha256_file(&dst));
    }

    // Small objects written together meet SeaweedFS busy: the balancer
    // offers it a batch, which it refuses, and sends each replica alone.
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    for i in 0..24 {
        write_file(&small.join(format!("s{i:02}")), 2000 + i * 700, false);
    }
    aws.ok(&[
        "s3",
        "cp",
        "--recursive",
        small.to_str().unwrap(),
        "s3://mixed/small/",
    ]);
    let back = tmp.path().join("back");
    aws.ok(&[
        "s3",
        "cp",
        "--recursive",
        "s3://mixed/small/",
        back.to_str().unwrap(),
    ]);
    for i in 0..24 {
        let name = format!("s{i:02}");
        assert_eq!(
            sha256_file(&small.join(&name)),
            sha256_file(&back.join(&name)),
            "{name}"
        );
        let report = cluster.inspect("mixed", &format!("small/{name}"));
        assert_placements(&report, 3, 1);
    }
    assert!(
        cluster.gateway_log().contains("takes no batches"),
        "SeaweedFS was never offered a batch"
    );

    // Deleted objects leave SeaweedFS too: the collector sends it each
    // pass's replicas in one DeleteObjects, and empties its queue.
    let on_weed = || {
        weed.aws()
            .ok(&[
                "s3api",
                "list-objects-v2",
                "--bucket",
                "tenfold",
                "--query",
                "length(Contents || `[]`)",
                "--output",
                "text",
            ])
            .trim()
            .to_owned()
    };
    assert_ne!(
        on_weed(),
        "0",
        "SeaweedFS holds replicas before the deletes"
    );
    aws.ok(&["s3", "rm", "--recursive", "s3://mixed/"]);
    assert!(
        eventually(Duration::from_secs(60), || cluster.status()["garbage"] == 0
            && on_weed() == "0"),
        "replicas left: {} on SeaweedFS, {} queued",
        on_weed(),
        cluster.status()["garbage"]
    );
    assert!(
        !cluster.gateway_log().contains("takes no DeleteObjects"),
        "SeaweedFS answers DeleteObjects"
    );
}
