//! `tenfold dev` driven by the real `aws` CLI: round trips, listing,
//! deletes, overwrites, errors, and where the fragments end up.

use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{
    Aws, Proc, TempDir, assert_placements, bin, eventually, free_port, inspect, run, sha256_file,
    wait_for_port, write_file,
};

struct Dev {
    dir: TempDir,
    _proc: Proc,
    aws: Aws,
    endpoint: String,
}

impl Dev {
    fn start() -> Self {
        Self::start_with(TempDir::new("dev"), &[])
    }

    /// `tenfold dev` in `dir`, with `extra` arguments.
    fn start_with(dir: TempDir, extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin("tenfold"))
            .args([
                "dev",
                "--data",
                dir.path().join("data").to_str().unwrap(),
                "--listen",
                &addr,
                // Released replicas leave the nodes a second after the
                // commit, not ten minutes.
                "--gc-delay",
                "1s",
            ])
            .args(extra)
            .env("TENFOLD_ACCESS_KEY", "dev-key")
            .env("TENFOLD_SECRET_KEY", "dev-secret")
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("stdout")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr")).unwrap(),
            ))
            .spawn()
            .expect("spawn tenfold dev");
        let mut proc = Proc(child);
        wait_for_port(&addr, &mut proc.0);
        let endpoint = format!("http://{addr}");
        Dev {
            aws: Aws::new(&endpoint, "dev-key", "dev-secret"),
            _proc: proc,
            dir,
            endpoint,
        }
    }

    fn inspect(&self, bucket: &str, key: &str) -> serde_json::Value {
        inspect(
            &["--data", self.dir.path().join("data").to_str().unwrap()],
            bucket,
            key,
        )
    }

    /// Replicas on the nodes, once none awaits removal (`None` while some
    /// do), as `tenfold status` reports them.
    fn settled_replicas(&self) -> Option<u64> {
        let out = run(Command::new(bin("tenfold"))
            .args(["status", "--json", "--data"])
            .arg(self.dir.path().join("data")));
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        (status["garbage"] == 0).then(|| {
            status["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| n["replicas"].as_u64().expect("replicas"))
                .sum()
        })
    }
}

/// `tenfold dev --config FILE` follows the `[storage]` and `[durability]`
/// sections of a `tenfold serve` configuration (and ignores its addresses
/// and index); a bad value is refused.
#[test]
fn dev_follows_the_storage_and_durability_of_a_config_file() {
    let dir = TempDir::new("dev-config");
    let config = dir.path().join("tenfold.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nindex_url = \"sqlite:///nowhere/index.db\"\n\n\
         [storage]\nmainnet_replicas = 2\n\n[durability]\nmin_copies = 3\n",
    )
    .unwrap();
    let dev = Dev::start_with(dir, &["--config", config.to_str().unwrap()]);
    dev.aws.ok(&["s3", "mb", "s3://conf"]);
    let src = dev.dir.path().join("src");
    write_file(&src, 2 << 20, false);
    dev.aws
        .ok(&["s3", "cp", src.to_str().unwrap(), "s3://conf/obj"]);
    assert_eq!(assert_placements(&dev.inspect("conf", "obj"), 2, 1), 10);

    std::fs::write(&config, "[durability]\nmin_copies = 0\n").unwrap();
    let out = tests::run(Command::new(bin("tenfold")).args([
        "dev",
        "--data",
        dev.dir.path().join("other").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("min_copies"), "{err}");
}

#[test]
fn dev_prints_endpoint_and_credentials() {
    let dev = Dev::start();
    // The gateway's port opens before the nodes are up and the banner is
    // printed: wait for the banner (and the recorded endpoint) to appear.
    let stdout = dev.dir.path().join("stdout");
    let gateway_json = dev.dir.path().join("data").join("gateway.json");
    let ready = || {
        std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("secret key"))
            && gateway_json.exists()
    };
    assert!(
        eventually(Duration::from_secs(60), ready),
        "tenfold dev printed no banner"
    );
    let printed = std::fs::read_to_string(&stdout).unwrap();
    assert!(printed.contains(&dev.endpoint), "{printed}");
    assert!(
        printed.contains("dev-key") && printed.contains("dev-secret"),
        "{printed}"
    );
    let recorded =
        std::fs::read_to_string(dev.dir.path().join("data").join("gateway.json")).unwrap();
    assert!(recorded.contains(&dev.endpoint));
}

#[test]
fn round_trips_every_size_with_s3_cp() {
    let dev = Dev::start();
    let tmp = TempDir::new("files");
    dev.aws.ok(&["s3", "mb", "s3://sizes"]);
    for (i, size) in [0usize, 1, 1024, 1 << 20, 5 << 20].into_iter().enumerate() {
        let src = tmp.path().join(format!("src{i}"));
        write_file(&src, size, i % 2 == 0);
        let url = format!("s3://sizes/obj-{size}");
        dev.aws.ok(&["s3", "cp", src.to_str().unwrap(), &url]);
        let dst = tmp.path().join(format!("dst{i}"));
        dev.aws.ok(&["s3", "cp", &url, dst.to_str().unwrap()]);
        assert_eq!(sha256_file(&src), sha256_file(&dst), "size {size}");
        let head = dev.aws.json(&[
            "s3api",
            "head-object",
            "--bucket",
            "sizes",
            "--key",
            &format!("obj-{size}"),
        ]);
        assert_eq!(head["ContentLength"].as_u64(), Some(size as u64));
    }
}

#[test]
fn object_larger_than_a_segment_with_put_object_and_its_placements() {
    let dev = Dev::start();
    let tmp = TempDir::new("big");
    dev.aws.ok(&["s3", "mb", "s3://big"]);
    // Bigger than the 8 MiB segment: several segments of ten fragments.
    let src = tmp.path().join("src");
    write_file(&src, 20 << 20, false);
    let put = dev.aws.json(&[
        "s3api",
        "put-object",
        "--bucket",
        "big",
        "--key",
        "blob",
        "--body",
        src.to_str().unwrap(),
        "--content-type",
        "application/x-test",
        "--metadata",
        "owner=alice,purpose=test",
    ]);
    let md5 = hex::encode(<md5_digest::Md5 as md5_digest::Digest>::digest(
        std::fs::read(&src).unwrap(),
    ));
    assert_eq!(
        put["ETag"].as_str().unwrap().trim_matches('"'),
        md5,
        "ETag is the MD5 of a single PUT"
    );
    let dst = tmp.path().join("dst");
    let got = dev.aws.json(&[
        "s3api",
        "get-object",
        "--bucket",
        "big",
        "--key",
        "blob",
        dst.to_str().unwrap(),
    ]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
    assert_eq!(got["ContentType"], "application/x-test");
    assert_eq!(got["Metadata"]["owner"], "alice");
    assert_eq!(got["Metadata"]["purpose"], "test");

    let report = dev.inspect("big", "blob");
    assert_eq!(report["size"], 20 << 20);
    let fragments = assert_placements(&report, 3, 1);
    assert_eq!(fragments, 30, "three segments of ten fragments: {report}");
    let segments: std::collections::BTreeSet<u64> = report["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["segment"].as_u64().unwrap())
        .collect();
    assert_eq!(segments.len(), 3);
}

#[test]
fn ten_fragments_on_three_mainnet_and_one_testnet_node() {
    let dev = Dev::start();
    let tmp = TempDir::new("frag");
    dev.aws.ok(&["s3", "mb", "s3://frag"]);
    let src = tmp.path().join("src");
    write_file(&src, 5 << 20, false);
    dev.aws
        .ok(&["s3", "cp", src.to_str().unwrap(), "s3://frag/five"]);
    let report = dev.inspect("frag", "five");
    assert_eq!(assert_placements(&report, 3, 1), 10, "{report}");
    let mut seen = std::collections::BTreeSet::new();
    for f in report["fragments"].as_array().unwrap() {
        assert_eq!(f["segment"], 0);
        seen.insert(f["index"].as_u64().unwrap());
        for p in f["placements"].as_array().unwrap() {
            assert!(p["cid"].is_null());
        }
    }
    assert_eq!(seen.len(), 10);
    // Compressible data is stored compressed: far fewer bytes on the nodes.
    let text = tmp.path().join("text");
    write_file(&text, 4 << 20, true);
    dev.aws
        .ok(&["s3", "cp", text.to_str().unwrap(), "s3://frag/text"]);
    let report = dev.inspect("frag", "text");
    let stored: u64 = report["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert!(
        stored < (4 << 20) / 20,
        "compressible 4 MiB stored as {stored} bytes"
    );
    // A small object is not worth ten node round trips: 64 KiB of random
    // data is one fragment (under `min_fragment_size`), still replicated.
    let small = tmp.path().join("small");
    write_file(&small, 64 << 10, false);
    dev.aws
        .ok(&["s3", "cp", small.to_str().unwrap(), "s3://frag/small"]);
    let report = dev.inspect("frag", "small");
    assert_eq!(assert_placements(&report, 3, 1), 1, "{report}");
}

#[test]
fn list_with_prefix_and_delimiter_then_delete_and_overwrite() {
    let dev = Dev::start();
    let tmp = TempDir::new("list");
    dev.aws.ok(&["s3", "mb", "s3://list"]);
    let src = tmp.path().join("src");
    write_file(&src, 300_000, false);
    for key in ["a/1", "a/2", "a/b/3", "b/4", "top"] {
        dev.aws.ok(&[
            "s3",
            "cp",
            src.to_str().unwrap(),
            &format!("s3://list/{key}"),
        ]);
    }
    let top = dev.aws.json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "list",
        "--delimiter",
        "/",
    ]);
    let prefixes: Vec<&str> = top["CommonPrefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["a/", "b/"]);
    let keys: Vec<&str> = top["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["top"]);
    // An empty delimiter groups nothing and, as in S3, is not echoed.
    let flat = dev.aws.json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "list",
        "--delimiter",
        "",
    ]);
    assert_eq!(flat["Contents"].as_array().unwrap().len(), 5, "{flat}");
    assert!(flat.get("Delimiter").is_none(), "{flat}");
    let a = dev.aws.json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "list",
        "--prefix",
        "a/",
        "--delimiter",
        "/",
    ]);
    let keys: Vec<&str> = a["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    assert_eq!(a["CommonPrefixes"][0]["Prefix"], "a/b/");
    // Pages of two, followed by continuation tokens.
    let page = dev.aws.json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "list",
        "--max-items",
        "2",
        "--page-size",
        "2",
    ]);
    assert_eq!(page["Contents"].as_array().unwrap().len(), 2);
    let token = page["NextToken"].as_str().expect("next token");
    let rest = dev.aws.json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "list",
        "--starting-token",
        token,
    ]);
    let keys: Vec<&str> = rest["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/b/3", "b/4", "top"]);
    let listed = dev.aws.ok(&["s3", "ls", "s3://list/", "--recursive"]);
    assert_eq!(listed.lines().count(), 5, "{listed}");

    // Overwrite: new bytes come back, and the old fragments leave the nodes.
    let replicas_before = dev.settled_replicas().expect("nothing awaits removal");
    let other = tmp.path().join("other");
    write_file(&other, 300_000, false);
    dev.aws
        .ok(&["s3", "cp", other.to_str().unwrap(), "s3://list/top"]);
    let dst = tmp.path().join("dst");
    dev.aws
        .ok(&["s3", "cp", "s3://list/top", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&other), sha256_file(&dst));
    assert!(
        eventually(Duration::from_secs(60), || dev.settled_replicas()
            == Some(replicas_before)),
        "old fragments of the overwritten object stay on the nodes"
    );

    // Delete: gone from listings, reads and nodes.
    dev.aws.ok(&["s3", "rm", "s3://list/a/1"]);
    let err = dev
        .aws
        .fails(&["s3api", "head-object", "--bucket", "list", "--key", "a/1"]);
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");
    let err = dev.aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "list",
        "--key",
        "a/1",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchKey"), "{err}");
    assert!(
        eventually(Duration::from_secs(60), || dev
            .settled_replicas()
            .is_some_and(|n| n < replicas_before)),
        "deleted fragments stay on the nodes"
    );
    dev.aws.ok(&["s3", "rm", "s3://list/", "--recursive"]);
    assert!(
        eventually(Duration::from_secs(60), || dev.settled_replicas()
            == Some(0)),
        "fragments remain after deleting everything"
    );
    dev.aws.ok(&["s3", "rb", "s3://list"]);
}

#[test]
fn bad_requests_get_the_s3_error_clients_expect() {
    let dev = Dev::start();
    let tmp = TempDir::new("errors");
    let src = tmp.path().join("src");
    write_file(&src, 1000, false);
    let err = dev.aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "missing",
        "--key",
        "k",
        "--body",
        src.to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchBucket"), "{err}");
    let err = dev
        .aws
        .fails(&["s3api", "create-bucket", "--bucket", "Bad_Name"]);
    assert!(err.contains("InvalidBucketName"), "{err}");
    dev.aws.ok(&["s3", "mb", "s3://errs"]);
    let err = dev
        .aws
        .fails(&["s3api", "create-bucket", "--bucket", "errs"]);
    assert!(err.contains("BucketAlreadyOwnedByYou"), "{err}");
    let err = dev.aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "errs",
        "--key",
        "nope",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchKey"), "{err}");
    dev.aws
        .ok(&["s3", "cp", src.to_str().unwrap(), "s3://errs/k"]);
    let err = dev
        .aws
        .fails(&["s3api", "delete-bucket", "--bucket", "errs"]);
    assert!(err.contains("BucketNotEmpty"), "{err}");
    let wrong = Aws::new(&dev.endpoint, "dev-key", "not-the-secret");
    let err = wrong.fails(&["s3api", "list-buckets"]);
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    let stranger = Aws::new(&dev.endpoint, "nobody", "whatever");
    let err = stranger.fails(&["s3api", "list-buckets"]);
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    let err = dev.aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "errs",
        "--key",
        "k",
        "--range",
        "bytes=5000-6000",
        tmp.path().join("y").to_str().unwrap(),
    ]);
    assert!(err.contains("InvalidRange"), "{err}");
    // A wrong Content-MD5 is refused and stores nothing.
    let err = dev.aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "errs",
        "--key",
        "md5",
        "--body",
        src.to_str().unwrap(),
        "--content-md5",
        "AAAAAAAAAAAAAAAAAAAAAA==",
    ]);
    assert!(err.contains("BadDigest"), "{err}");
    let err = dev
        .aws
        .fails(&["s3api", "head-object", "--bucket", "errs", "--key", "md5"]);
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");
    // Ranges are served from the fragments.
    let part = tmp.path().join("part");
    dev.aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "errs",
        "--key",
        "k",
        "--range",
        "bytes=100-199",
        part.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&part).unwrap(),
        std::fs::read(&src).unwrap()[100..200]
    );
}
