//! The admin commands against a running cluster: `tenfold nodes` and
//! `tenfold inspect`, and a `tenfold dev` restart that keeps everything.

use std::process::{Command, Stdio};

use tests::{
    Aws, Cluster, Node, Proc, TempDir, bin, free_port, run, sha256_file, wait_for_port, write_file,
};

fn tenfold(args: &[&str]) -> std::process::Output {
    run(Command::new(bin("tenfold")).args(args))
}

#[test]
fn nodes_list_add_and_remove() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let out = tenfold(&["nodes", "list", "--json", "--index-url", &cluster.index_url]);
    assert!(out.status.success());
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    assert_eq!(
        nodes.iter().filter(|n| n["network"] == "testnet").count(),
        1
    );
    assert!(
        nodes
            .iter()
            .all(|n| n["capacity"] == 2u64 << 30 && n["stored"] == 0)
    );
    // The table gives sizes in human units (raw bytes stay for --json).
    let out = tenfold(&["nodes", "list", "--index-url", &cluster.index_url]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.matches("2.0 GiB").count(), 4, "{table}");

    // Without the master key (to seal the node's secret): refused.
    let (_, first, _) = &cluster.nodes[0];
    let key_file = cluster.dir.path().join("master.key").display().to_string();
    let out = tenfold(&[
        "nodes",
        "add",
        "--index-url",
        &cluster.index_url,
        "--endpoint",
        "http://127.0.0.1:1",
        "--network",
        "mainnet",
        "--capacity",
        "1GiB",
        "--access-key",
        "a",
        "--secret-key",
        "b",
        "--name",
        "keyless",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("master key"), "{err}");

    // The same name twice is refused.
    let out = tenfold(&[
        "nodes",
        "add",
        "--master-key-file",
        &key_file,
        "--index-url",
        &cluster.index_url,
        "--endpoint",
        &first.endpoint(),
        "--network",
        "mainnet",
        "--capacity",
        "1GiB",
        "--access-key",
        "a",
        "--secret-key",
        "b",
    ]);
    assert!(
        !out.status.success(),
        "a duplicate registration was accepted"
    );
    let out = tenfold(&[
        "nodes",
        "add",
        "--master-key-file",
        &key_file,
        "--index-url",
        &cluster.index_url,
        "--endpoint",
        "http://127.0.0.1:1",
        "--network",
        "moonnet",
        "--capacity",
        "1GiB",
        "--access-key",
        "a",
        "--secret-key",
        "b",
    ]);
    assert!(!out.status.success(), "an unknown network was accepted");

    // A node holding fragments cannot be removed; an empty one can.
    let aws = cluster.aws();
    let tmp = TempDir::new("admin");
    aws.ok(&["s3", "mb", "s3://adm"]);
    let src = tmp.path().join("src");
    write_file(&src, 1 << 20, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://adm/o"]);
    let holder = cluster.nodes[0].2.to_string();
    let out = tenfold(&[
        "nodes",
        "remove",
        &holder,
        "--index-url",
        &cluster.index_url,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still holds"));
    let extra = Node::start(cluster.dir.path(), "extra", "1GiB");
    let extra_id = cluster.register_node(&extra, "testnet", "1GiB");
    let out = tenfold(&[
        "nodes",
        "remove",
        &extra_id.to_string(),
        "--index-url",
        &cluster.index_url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tenfold(&["nodes", "list", "--json", "--index-url", &cluster.index_url]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 4);
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["stored"].as_u64().unwrap() > 0)
    );

    let out = tenfold(&[
        "inspect",
        "adm",
        "missing",
        "--json",
        "--index-url",
        &cluster.index_url,
    ]);
    assert!(!out.status.success());
}

fn start_dev(data: &std::path::Path, addr: &str) -> Proc {
    let child = Command::new(bin("tenfold"))
        .args(["dev", "--data", data.to_str().unwrap(), "--listen", addr])
        .env_remove("TENFOLD_ACCESS_KEY")
        .env_remove("TENFOLD_SECRET_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    wait_for_port(addr, &mut proc.0);
    proc
}

#[test]
fn dev_restart_keeps_objects() {
    let tmp = TempDir::new("restart");
    let data = tmp.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let aws = Aws::new(&format!("http://{addr}"), "tenfold", "tenfold-secret");
    let src = tmp.path().join("src");
    write_file(&src, 2 << 20, false);
    {
        let _dev = start_dev(&data, &addr);
        aws.ok(&["s3", "mb", "s3://keep"]);
        aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://keep/o"]);
    }
    let _dev = start_dev(&data, &addr);
    let dst = tmp.path().join("dst");
    aws.ok(&["s3", "cp", "s3://keep/o", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
    let out = tenfold(&["nodes", "list", "--json", "--data", data.to_str().unwrap()]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        nodes.as_array().unwrap().len(),
        6,
        "a restart registers no new nodes"
    );
}

/// Per node, the bytes stored and replicas held are counters kept by the
/// commits and deletions (folded on each registry refresh), not sums over
/// every placement: after writes, an overwrite and a delete they match the
/// replicas `inspect` shows, before and after the gateway folds them.
#[test]
fn node_usage_counters_follow_writes_and_deletes() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://usage"]);
    let tmp = TempDir::new("usage");
    for (key, size) in [("a", 300 << 10), ("b", 3 << 20), ("c", 20 << 10)] {
        let file = tmp.path().join(key);
        write_file(&file, size, false);
        aws.ok(&[
            "s3",
            "cp",
            file.to_str().unwrap(),
            &format!("s3://usage/{key}"),
        ]);
    }
    let file = tmp.path().join("a2");
    write_file(&file, 700 << 10, false);
    aws.ok(&["s3", "cp", file.to_str().unwrap(), "s3://usage/a"]);
    aws.ok(&["s3", "rm", "s3://usage/b"]);
    let mut expected = std::collections::BTreeMap::<i64, (u64, u64)>::new();
    for key in ["a", "c"] {
        for f in cluster.inspect("usage", key)["fragments"]
            .as_array()
            .unwrap()
        {
            for p in f["placements"].as_array().unwrap() {
                let at = expected.entry(p["node"].as_i64().unwrap()).or_default();
                at.0 += f["size"].as_u64().unwrap();
                at.1 += 1;
            }
        }
    }
    let counted = || {
        let out = tenfold(&["nodes", "list", "--json", "--index-url", &cluster.index_url]);
        let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let id = n["id"].as_i64().unwrap();
                (
                    id,
                    (
                        n["stored"].as_u64().unwrap(),
                        n["replicas"].as_u64().unwrap(),
                    ),
                )
            })
            .filter(|(_, usage)| *usage != (0, 0))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(counted(), expected, "right after the writes");
    // The gateway refreshes every second, folding the log each time.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(counted(), expected, "once folded");
}
