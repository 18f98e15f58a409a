//! Overflow to IPFS: nodes with tiny capacities fill up, later fragments go
//! to a real js-ipfs daemon, reads come back from it (also with every node
//! stopped), deletes unpin, and fragments return to the nodes once they
//! have room again.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tests::{
    Aws, Cluster, Ipfs, Node, TempDir, assert_placements, eventually, free_port, overflow_cids,
    sha256_file, write_file,
};

fn cluster_with_ipfs(capacity: &str, api: &str) -> Cluster {
    Cluster::build(3, 1, capacity)
        .config("ipfs_api", api)
        .start()
}

/// Node placements of an `inspect` report.
fn node_placements(report: &serde_json::Value) -> usize {
    report["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .flat_map(|f| f["placements"].as_array().expect("placements").iter())
        .filter(|p| p["network"] != "overflow")
        .count()
}

/// Downloads `key` and compares it with `src`.
fn assert_download(aws: &Aws, dir: &Path, bucket: &str, key: &str, src: &Path) {
    let dst = dir.join(format!("{key}.down"));
    aws.ok(&[
        "s3",
        "cp",
        &format!("s3://{bucket}/{key}"),
        dst.to_str().unwrap(),
    ]);
    assert_eq!(
        sha256_file(src),
        sha256_file(&dst),
        "{key} came back different"
    );
}

/// A Range GET of `key` compared with the same bytes of `src`.
fn assert_range(
    aws: &Aws,
    dir: &Path,
    bucket: &str,
    key: &str,
    src: &Path,
    first: usize,
    last: usize,
) {
    let dst = dir.join(format!("{key}.range"));
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        bucket,
        "--key",
        key,
        "--range",
        &format!("bytes={first}-{last}"),
        dst.to_str().unwrap(),
    ]);
    let want = &std::fs::read(src).unwrap()[first..=last];
    assert!(
        std::fs::read(&dst).unwrap() == want,
        "range {first}-{last} of {key} differs"
    );
}

/// Waits until none of `cids` is pinned any more.
fn eventually_unpinned<'a>(
    ipfs: &Ipfs,
    cids: impl IntoIterator<Item = &'a String> + Clone,
) -> bool {
    eventually(Duration::from_secs(60), || {
        let pins: HashSet<String> = ipfs.pins().into_iter().collect();
        cids.clone().into_iter().all(|c| !pins.contains(c))
    })
}

/// Waits until `key` has left the overflow store for a full 3 + 1 node
/// placement of its ten fragments, and its former content ids (`cids`) are
/// unpinned.
fn assert_returned_to_nodes<'a>(
    cluster: &Cluster,
    ipfs: &Ipfs,
    key: &str,
    cids: impl IntoIterator<Item = &'a String> + Clone,
) {
    assert!(
        eventually(Duration::from_secs(60), || overflow_cids(
            &cluster.inspect("ovf", key)
        )
        .is_empty()),
        "{key} never left the overflow store: {}",
        cluster.inspect("ovf", key)
    );
    assert_eq!(assert_placements(&cluster.inspect("ovf", key), 3, 1), 10);
    assert!(
        eventually_unpinned(ipfs, cids),
        "returned fragments are still pinned"
    );
}

#[test]
fn full_nodes_overflow_to_ipfs_and_reads_still_work() {
    let ipfs = Ipfs::start();
    let mut cluster = cluster_with_ipfs("1MiB", &ipfs.api);
    let aws = cluster.aws();
    let tmp = TempDir::new("overflow-read");
    aws.ok(&["s3", "mb", "s3://ovf"]);

    // Ten fragments of ~300 KiB: a 1 MiB node holds three of them.
    let x = tmp.path().join("x");
    write_file(&x, 3 << 20, false);
    aws.ok(&["s3", "cp", x.to_str().unwrap(), "s3://ovf/x"]);
    let report = cluster.inspect("ovf", "x");
    let x_cids = overflow_cids(&report);
    assert!(
        x_cids.len() >= 7,
        "most of x should have overflowed: {report}"
    );
    assert!(
        node_placements(&report) > 0,
        "the nodes took nothing: {report}"
    );
    assert_eq!(
        report["overflow"]["fragments"].as_u64(),
        Some(x_cids.len() as u64)
    );

    // The nodes are full now: every fragment of y goes to IPFS. (A node
    // that x's placements left with room for one more fragment may still
    // take one replica of y beside its overflow copy, so only the overflow
    // copies are counted; the reads below with every node stopped show they
    // are complete.)
    let y = tmp.path().join("y");
    write_file(&y, 3 << 20, false);
    aws.ok(&["s3", "cp", y.to_str().unwrap(), "s3://ovf/y"]);
    let report = cluster.inspect("ovf", "y");
    let y_cids = overflow_cids(&report);
    assert_eq!(y_cids.len(), 10, "{report}");

    // Repair may meanwhile bring one of x's fragments back to a node that
    // a garbage deletion left with room (and forget its pin), so the status
    // is compared with the copies the index names at the same moment.
    let mut status = serde_json::Value::Null;
    let (mut named_x, mut named_y) = (Vec::new(), Vec::new());
    let agreed = eventually(Duration::from_secs(30), || {
        status = cluster.status();
        named_x = overflow_cids(&cluster.inspect("ovf", "x"));
        named_y = overflow_cids(&cluster.inspect("ovf", "y"));
        status["overflow"]["fragments"].as_u64() == Some((named_x.len() + named_y.len()) as u64)
            && cluster.status()["overflow"] == status["overflow"]
    });
    assert!(
        agreed,
        "{status}\nthe index names {} overflow copies",
        named_x.len() + named_y.len()
    );
    assert_eq!(named_y, y_cids, "y's fragments have nowhere else to go");
    let pins: HashSet<String> = ipfs.pins().into_iter().collect();
    for cid in named_x.iter().chain(&named_y) {
        assert!(pins.contains(cid), "{cid} is not pinned");
    }
    assert!(
        status["overflow"]["bytes"].as_u64().unwrap() > 3 << 20,
        "{status}"
    );

    assert_download(&aws, tmp.path(), "ovf", "x", &x);
    assert_range(&aws, tmp.path(), "ovf", "x", &x, 1_000_000, 2_500_000);
    assert_download(&aws, tmp.path(), "ovf", "y", &y);

    // With every storage node stopped, what lives on IPFS still downloads.
    for (_, node, _) in &mut cluster.nodes {
        node.proc.kill();
    }
    assert_download(&aws, tmp.path(), "ovf", "y", &y);
    assert_range(&aws, tmp.path(), "ovf", "y", &y, 123, 2_000_000);
}

#[test]
fn deletes_unpin_and_freed_room_brings_fragments_back() {
    let ipfs = Ipfs::start();
    let cluster = cluster_with_ipfs("3MiB", &ipfs.api);
    let aws = cluster.aws();
    let tmp = TempDir::new("overflow-return");
    aws.ok(&["s3", "mb", "s3://ovf"]);

    let filler = tmp.path().join("filler");
    write_file(&filler, 5 << 19, false);
    aws.ok(&["s3", "cp", filler.to_str().unwrap(), "s3://ovf/filler"]);
    let report = cluster.inspect("ovf", "filler");
    assert!(
        overflow_cids(&report).is_empty(),
        "the filler overflowed: {report}\nrefusals: {}",
        refusals(&cluster)
    );

    let x = tmp.path().join("x");
    write_file(&x, 2 << 20, false);
    aws.ok(&["s3", "cp", x.to_str().unwrap(), "s3://ovf/x"]);
    let x_cids: HashSet<String> = overflow_cids(&cluster.inspect("ovf", "x"))
        .into_iter()
        .collect();
    assert!(!x_cids.is_empty(), "nothing overflowed");
    // The same bytes again: every object has its own data key, so its
    // fragments, and their content ids, share nothing with x's.
    aws.ok(&["s3", "cp", x.to_str().unwrap(), "s3://ovf/x2"]);
    let x2_cids: HashSet<String> = overflow_cids(&cluster.inspect("ovf", "x2"))
        .into_iter()
        .collect();
    assert!(!x2_cids.is_empty(), "x2 did not overflow");
    assert!(
        x_cids.is_disjoint(&x2_cids),
        "x: {x_cids:?}, x2: {x2_cids:?}"
    );

    // Deleting x2 unpins its content ids, and keeps those x still uses.
    // (The room x2's node replicas free may already let repair bring some
    // of x's fragments back to the nodes, releasing their pins: only the
    // content ids x names after the pins were listed must be among them.)
    aws.ok(&["s3", "rm", "s3://ovf/x2"]);
    assert!(
        eventually_unpinned(&ipfs, &x2_cids),
        "x2's content ids are still pinned"
    );
    let pins: HashSet<String> = ipfs.pins().into_iter().collect();
    let x_uses: HashSet<String> = overflow_cids(&cluster.inspect("ovf", "x"))
        .into_iter()
        .collect();
    assert!(
        x_uses.is_subset(&pins),
        "a content id x still uses was unpinned: {:?}",
        x_uses.difference(&pins).collect::<Vec<_>>()
    );
    if x_uses != x_cids {
        eprintln!(
            "{} of x's fragments came back to the nodes after x2's deletion",
            x_cids.len().saturating_sub(x_uses.len())
        );
    }
    assert_download(&aws, tmp.path(), "ovf", "x", &x);

    // Deleting the filler frees room: x's fragments move back to the nodes
    // and their content ids are unpinned.
    aws.ok(&["s3", "rm", "s3://ovf/filler"]);
    assert_returned_to_nodes(&cluster, &ipfs, "x", &x_cids);
    assert_eq!(cluster.status()["overflow"]["fragments"].as_u64(), Some(0));
    assert_download(&aws, tmp.path(), "ovf", "x", &x);
}

#[test]
fn added_nodes_take_overflowed_fragments_back() {
    let ipfs = Ipfs::start();
    let mut cluster = cluster_with_ipfs("1MiB", &ipfs.api);
    let aws = cluster.aws();
    let tmp = TempDir::new("overflow-nodes");
    aws.ok(&["s3", "mb", "s3://ovf"]);
    let x = tmp.path().join("x");
    write_file(&x, 3 << 20, false);
    aws.ok(&["s3", "cp", x.to_str().unwrap(), "s3://ovf/x"]);
    let cids = overflow_cids(&cluster.inspect("ovf", "x"));
    assert!(!cids.is_empty());

    for (network, name) in [
        ("mainnet", "big-0"),
        ("mainnet", "big-1"),
        ("mainnet", "big-2"),
        ("testnet", "big-3"),
    ] {
        let node = Node::start(cluster.dir.path(), name, "64MiB");
        let id = cluster.register_node(&node, network, "64MiB");
        cluster.nodes.push((network.to_owned(), node, id));
    }
    assert_returned_to_nodes(&cluster, &ipfs, "x", &cids);
    // Without IPFS, x reads from the nodes alone.
    drop(ipfs);
    assert_download(&aws, tmp.path(), "ovf", "x", &x);
}

/// The write quorum counts the overflow's pin as a copy: with only one
/// mainnet node up, a PUT is stored on it and pinned; once nodes are back,
/// repair brings every fragment to 3 + 1 on nodes and unpins it.
#[test]
fn with_nodes_down_the_pin_completes_the_quorum_until_repair() {
    let ipfs = Ipfs::start();
    let mut cluster = cluster_with_ipfs("64MiB", &ipfs.api);
    let aws = cluster.aws();
    let tmp = TempDir::new("overflow-quorum");
    aws.ok(&["s3", "mb", "s3://ovf"]);
    let dead: Vec<i64> = [0, 1, 3].iter().map(|&i| cluster.nodes[i].2).collect();
    for id in &dead {
        cluster.node(*id).proc.kill();
    }
    let x = tmp.path().join("x");
    write_file(&x, 3 << 20, false);
    aws.ok(&["s3", "cp", x.to_str().unwrap(), "s3://ovf/x"]);
    let report = cluster.inspect("ovf", "x");
    let cids = overflow_cids(&report);
    assert_eq!(cids.len(), 10, "every fragment pinned: {report}");
    assert_eq!(node_placements(&report), 10, "one node copy each: {report}");
    assert_download(&aws, tmp.path(), "ovf", "x", &x);

    for (network, name) in [
        ("mainnet", "back-0"),
        ("mainnet", "back-1"),
        ("testnet", "back-2"),
    ] {
        let node = Node::start(cluster.dir.path(), name, "64MiB");
        let id = cluster.register_node(&node, network, "64MiB");
        cluster.nodes.push((network.to_owned(), node, id));
    }
    assert_returned_to_nodes(&cluster, &ipfs, "x", &cids);
    assert_download(&aws, tmp.path(), "ovf", "x", &x);
}

#[test]
fn ipfs_down_while_nodes_are_full_fails_cleanly() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cluster = cluster_with_ipfs("1MiB", &dead);
    let aws = cluster.aws();
    let tmp = TempDir::new("overflow-down");
    aws.ok(&["s3", "mb", "s3://ovf"]);
    // A copy of every fragment on every node fills 60% of each: placed in
    // full. (Concurrent writes near the capacity were once refused for
    // room counted twice; the fragment placed short was then repaired in
    // the background and changed the counts compared below.)
    let small = tmp.path().join("small");
    write_file(&small, 600 << 10, false);
    aws.ok(&["s3", "cp", small.to_str().unwrap(), "s3://ovf/small"]);
    let report = cluster.inspect("ovf", "small");
    let fragments = report["fragments"].as_array().expect("fragments").len();
    assert_eq!(
        node_placements(&report),
        4 * fragments,
        "placed in full: {report}"
    );
    let files_before: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|(_, n, _)| n.replicas().len())
        .collect();

    let big = tmp.path().join("big");
    write_file(&big, 3 << 20, false);
    let err = aws.fails(&["s3", "cp", big.to_str().unwrap(), "s3://ovf/big"]);
    assert!(err.contains("InsufficientStorage"), "{err}");
    assert!(
        err.contains(&dead),
        "the error should name the IPFS API: {err}"
    );

    let listed = aws.ok(&["s3", "ls", "s3://ovf/"]);
    assert!(!listed.contains("big"), "{listed}");
    assert!(
        eventually(Duration::from_secs(60), || {
            let now: Vec<usize> = cluster
                .nodes
                .iter()
                .map(|(_, n, _)| n.replicas().len())
                .collect();
            now == files_before
        }),
        "the failed upload left fragments on the nodes"
    );
    assert_download(&aws, tmp.path(), "ovf", "small", &small);
}

/// Pins left by an upload whose gateway was killed mid-way are undone by
/// the orphan sweep once `orphan_grace` has passed, and `tenfold status`
/// counts them; the pins of stored objects stay, and so does a pin someone
/// else made on the same daemon (Tenfold undoes only the pins it recorded).
#[test]
fn orphan_pins_are_undone_and_foreign_pins_kept() {
    let ipfs = Ipfs::start();
    let mut cluster = Cluster::build(3, 1, "1MiB")
        .config("ipfs_api", &ipfs.api)
        .durability("orphan_grace", "3s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("orphan-pins");
    aws.ok(&["s3", "mb", "s3://ovf"]);
    let kept = tmp.path().join("kept");
    write_file(&kept, 3 << 20, false);
    aws.ok(&["s3", "cp", kept.to_str().unwrap(), "s3://ovf/kept"]);
    let stored: HashSet<String> = overflow_cids(&cluster.inspect("ovf", "kept"))
        .into_iter()
        .collect();
    assert!(!stored.is_empty(), "the full nodes sent nothing to IPFS");

    // Someone else's pin on the same daemon.
    let foreign_file = tmp.path().join("foreign");
    write_file(&foreign_file, 5000, false);
    let added = tests::run(
        std::process::Command::new("curl")
            .args(["-s", "-f", "-F"])
            .arg(format!("file=@{}", foreign_file.display()))
            .arg(format!("{}/api/v0/add?pin=true&cid-version=1", ipfs.api)),
    );
    let added: serde_json::Value = serde_json::from_slice(&added.stdout).expect("add answer");
    let foreign = added["Hash"].as_str().expect("a content id").to_owned();
    assert!(ipfs.pins().contains(&foreign));

    // An upload whose gateway is killed once some of it is pinned.
    let big = tmp.path().join("big");
    write_file(&big, 64 << 20, false);
    let cut = {
        let mut args = tests::unsigned_payload(tests::ACCESS_KEY, tests::SECRET_KEY);
        args.extend(["--limit-rate".into(), "4M".into(), "-T".into()]);
        let (big, url) = (big.clone(), format!("{}/ovf/big", cluster.endpoint));
        std::thread::spawn(move || {
            tests::run(
                std::process::Command::new("curl")
                    .args(args)
                    .arg(&big)
                    .arg(url),
            )
        })
    };
    // The daemon's own pins, the stored object's and the foreign one.
    let want: HashSet<String> = ipfs.pins().into_iter().collect();
    assert!(want.is_superset(&stored) && want.contains(&foreign));
    let known = want.len();
    assert!(
        eventually(Duration::from_secs(60), || ipfs.pins().len() >= known + 10),
        "the upload pinned nothing"
    );
    cluster
        .restart_gateway(|config| config)
        .expect("gateway restarts");
    let _ = cut.join();
    let orphans = ipfs.pins().len() - known;

    // Only those are left.
    assert!(
        eventually(Duration::from_secs(60), || ipfs
            .pins()
            .into_iter()
            .collect::<HashSet<_>>()
            == want),
        "pins left: {:?} (want {want:?})\n{}",
        ipfs.pins(),
        cluster.gateway_log()
    );
    assert_download(&aws, tmp.path(), "ovf", "kept", &kept);
    let status = cluster.status();
    assert!(
        status["swept_pins"].as_u64().unwrap_or(0) >= u64::try_from(orphans).unwrap(),
        "{orphans} orphan pins, status: {status}"
    );
}

/// The gateway's log lines about replicas nodes refused, for assertion
/// messages.
fn refusals(cluster: &Cluster) -> String {
    cluster
        .gateway_log()
        .lines()
        .filter(|l| l.contains("refused") || l.contains("WARN"))
        .collect::<Vec<_>>()
        .join("\n")
}
