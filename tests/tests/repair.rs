//! Repair and the node lifecycle: a node lost for good and a node drained
//! by its operator leave every fragment back at 3 mainnet + 1 testnet
//! copies on the other nodes, on their disks, and every object readable
//! once only a minimum of nodes is left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::{
    Aws, Cluster, TempDir, assert_placements, eventually, node_status, sha256_file, write_file,
};

/// Puts `count` objects of 3 MB (ten fragments each) into a new bucket.
fn put_objects(aws: &Aws, tmp: &TempDir, bucket: &str, count: usize) -> Vec<PathBuf> {
    put_sized_objects(aws, tmp, bucket, &vec![3_000_000; count])
}

/// Like [`put_objects`], object `o{i}` of `sizes[i]` bytes.
fn put_sized_objects(aws: &Aws, tmp: &TempDir, bucket: &str, sizes: &[usize]) -> Vec<PathBuf> {
    aws.ok(&["s3", "mb", &format!("s3://{bucket}")]);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let file = tmp.path().join(format!("o{i}"));
            write_file(&file, size, false);
            aws.ok(&[
                "s3",
                "cp",
                "--quiet",
                file.to_str().unwrap(),
                &format!("s3://{bucket}/o{i}"),
            ]);
            file
        })
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Every object reads back whole.
fn read_objects(aws: &Aws, tmp: &TempDir, bucket: &str, files: &[PathBuf]) {
    for (i, file) in files.iter().enumerate() {
        let got = tmp.path().join(format!("got{i}"));
        aws.ok(&[
            "s3",
            "cp",
            "--quiet",
            &format!("s3://{bucket}/o{i}"),
            got.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(file), sha256_file(&got), "{bucket}/o{i}");
    }
}

/// Every fragment has 3 + 1 copies, none on `gone`; returns the replicas.
fn check_placements(cluster: &Cluster, bucket: &str, count: usize, gone: i64) -> usize {
    let mut replicas = 0;
    for i in 0..count {
        let report = cluster.inspect(bucket, &format!("o{i}"));
        assert_placements(&report, 3, 1);
        for f in report["fragments"].as_array().unwrap() {
            for p in f["placements"].as_array().unwrap() {
                assert_ne!(p["node"].as_i64(), Some(gone), "{bucket}/o{i}: {f}");
                replicas += 1;
            }
        }
    }
    replicas
}

/// Waits until `status` says no fragment is below target.
fn wait_repaired(cluster: &Cluster, within: Duration) {
    let mut last = serde_json::Value::Null;
    let repaired = eventually(within, || {
        last = cluster.walked_status();
        last["fragments_below_target"].as_u64() == Some(0)
    });
    assert!(repaired, "not repaired within {within:?}: {last}");
}

/// A mainnet node killed for good is lost after `node_lost_after`; repair
/// puts every fragment back to 3 + 1 on the others, for real on their
/// disks; then two more mainnet nodes and both testnet nodes die, and
/// every object still reads.
#[test]
fn a_lost_node_is_repaired_around() {
    let mut cluster = Cluster::build(5, 2, "1GiB")
        .durability("node_lost_after", "3s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("lost");
    let files = put_objects(&aws, &tmp, "lost", 6);
    let before = cluster.walked_status();
    assert_eq!(before["fragments_below_target"], 0, "{before}");
    assert_eq!(before["fragments_by_node_copies"]["4"], 60, "{before}");

    let lost = cluster.nodes[0].2;
    cluster.node(lost).proc.kill();
    assert!(
        eventually(Duration::from_secs(60), || node_status(
            &cluster.status(),
            lost
        )["state"]
            == "lost"),
        "the node was not marked lost: {}",
        cluster.status()
    );
    wait_repaired(&cluster, Duration::from_secs(120));
    let after = cluster.walked_status();
    assert_eq!(node_status(&after, lost)["replicas"], 0, "{after}");
    assert_eq!(after["fragments_by_node_copies"]["4"], 60, "{after}");
    let replicas = check_placements(&cluster, "lost", files.len(), lost);
    let on_disks: usize = cluster
        .nodes
        .iter()
        .filter(|(_, _, id)| *id != lost)
        .map(|(_, n, _)| n.replicas().len())
        .sum();
    assert_eq!(on_disks, replicas, "files on the live nodes' disks");
    assert!(cluster.gateway_log().contains("node lost"));

    let dead: Vec<i64> = [1, 2, 5, 6].iter().map(|&i| cluster.nodes[i].2).collect();
    for id in dead {
        cluster.node(id).proc.kill();
    }
    read_objects(&aws, &tmp, "lost", &files);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// `tenfold nodes drain` moves every replica off a node (it ends with no
/// file on its disk: neither object files nor the volumes of its small
/// replicas), `nodes remove` then succeeds (and is refused before), and
/// every object reads with the node gone.
#[test]
fn a_drained_node_ends_empty_and_can_be_removed() {
    let mut cluster = Cluster::start(5, 2, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("drain");
    // Large objects (a file per replica) and small ones (volume records).
    let sizes = [3_000_000, 40_000, 3_000_000, 40_000, 3_000_000, 40_000];
    let files = put_sized_objects(&aws, &tmp, "drain", &sizes);
    let drained = cluster.nodes[0].2;
    let id = drained.to_string();
    let refused = cluster.admin(&["nodes", "remove", &id]);
    assert!(!refused.status.success(), "a node holding data was removed");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("still holds"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = cluster.admin(&["nodes", "drain", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(Duration::from_secs(120), || cluster
            .node(drained)
            .replicas()
            .is_empty()),
        "the drained node still holds {} files",
        cluster.node(drained).replicas().len()
    );
    let data = cluster.node(drained).data.clone();
    let mut on_disk = Vec::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            on_disk = files_under(&data);
            on_disk.is_empty()
        }),
        "the drained node's disk still holds {on_disk:?}"
    );
    wait_repaired(&cluster, Duration::from_secs(60));
    let out = cluster.admin(&["nodes", "remove", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.node(drained).proc.kill();
    check_placements(&cluster, "drain", files.len(), drained);
    read_objects(&aws, &tmp, "drain", &files);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// A PUT the nodes can give only part of its target (two mainnet nodes for
/// three mainnet copies) is acknowledged above the write quorum, counted
/// below target and queued; once a third mainnet node joins, repair brings
/// every fragment to 3 + 1.
#[test]
fn a_put_placed_short_is_repaired_when_nodes_join() {
    let mut cluster = Cluster::start(2, 1, "1GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("short");
    let files = put_objects(&aws, &tmp, "short", 2);
    for i in 0..files.len() {
        let report = cluster.inspect("short", &format!("o{i}"));
        assert_eq!(assert_placements(&report, 2, 1), 10, "{report}");
    }
    let before = cluster.walked_status();
    assert_eq!(before["fragments_below_target"], 20, "{before}");
    assert_eq!(before["fragments_by_node_copies"]["3"], 20, "{before}");
    assert_eq!(before["repair_queue"], 20, "{before}");

    let node = tests::Node::start(cluster.dir.path(), "joined", "1GiB");
    let id = cluster.register_node(&node, "mainnet", "1GiB");
    cluster.nodes.push(("mainnet".to_owned(), node, id));
    wait_repaired(&cluster, Duration::from_secs(120));
    let after = cluster.walked_status();
    assert_eq!(after["fragments_by_node_copies"]["4"], 20, "{after}");
    assert_eq!(after["repair_queue"], 0, "{after}");
    check_placements(&cluster, "short", files.len(), -1);
    assert_eq!(
        cluster.node(id).replicas().len(),
        20,
        "the new node holds the missing copies"
    );
    read_objects(&aws, &tmp, "short", &files);
}

/// Flips 32 bytes in the middle of a file, in place.
fn corrupt(node: &tests::Node, replica: &tests::Replica) {
    let mid = usize::try_from(replica.size / 2).unwrap();
    let end = (mid + 32).min(usize::try_from(replica.size).unwrap());
    node.corrupt_replica(replica, mid..end);
}

/// The scrub reads every replica back: a node whose every file was
/// corrupted in place fails its audits, is disqualified and emptied by
/// repair; on another node two corrupted files and one deleted are found
/// and repaired while the node stays active. Every fragment ends at 3 + 1,
/// each node's audit record shows what was found, and every object reads
/// with only three nodes left.
#[test]
fn the_scrub_finds_lost_replicas_and_disqualifies_a_node_that_loses_them() {
    let mut cluster = Cluster::build(5, 2, "1GiB")
        .durability("scrub_every", "5s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("scrub");
    let files = put_objects(&aws, &tmp, "scrub", 6);
    let (liar, careless) = (cluster.nodes[0].2, cluster.nodes[1].2);
    let node = cluster.node(liar);
    for replica in node.replicas() {
        corrupt(node, &replica);
    }
    let node = cluster.node(careless);
    let some = node.replicas();
    corrupt(node, &some[0]);
    corrupt(node, &some[1]);
    node.remove_replica(&some[2]);

    let mut last = serde_json::Value::Null;
    let settled = eventually(Duration::from_secs(120), || {
        last = cluster.walked_status();
        node_status(&last, liar)["state"] == "disqualified"
            && node_status(&last, liar)["replicas"] == 0
            && node_status(&last, careless)["audit_failures"] == 3
            && last["fragments_below_target"] == 0
    });
    assert!(settled, "{last}");
    let careless_report = node_status(&last, careless);
    assert_eq!(careless_report["state"], "active", "{last}");
    assert!(careless_report["audits"].as_u64().unwrap() > 3, "{last}");
    // Its copies repaired back onto it are sound: not every audit fails.
    assert!(
        node_status(&last, liar)["audit_failures"].as_u64().unwrap() > 0,
        "{last}"
    );
    check_placements(&cluster, "scrub", files.len(), liar);
    assert!(cluster.gateway_log().contains("node disqualified"));
    // What the passes found is on record. Disqualifying takes a pass of at
    // least ten audits more than a quarter of which failed, so at least
    // three failures; how many more depends on timing (a pass that began
    // before the files were corrupted counts its sound audits too, and
    // copies repaired back onto the node pass).
    assert!(
        node_status(&last, liar)["audit_failures"].as_u64().unwrap() >= 3,
        "{last}"
    );
    for node in last["nodes"].as_array().unwrap() {
        assert!(node["scrub_passes"].as_u64().unwrap() > 0, "{last}");
        assert!(node["last_pass_end"].as_i64().is_some(), "{last}");
    }
    assert!(
        last["scrub"]["last_pass_audits"].as_u64().unwrap() > 0,
        "{last}"
    );
    // At least every replica the liar held was written again elsewhere.
    let repaired = &last["repaired"];
    assert!(repaired["copies"].as_u64().unwrap() >= 10, "{last}");
    assert!(
        repaired["bytes"].as_u64().unwrap() >= repaired["copies"].as_u64().unwrap() * 100_000,
        "{last}"
    );
    let text = cluster.admin(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("repaired so far:"), "{text}");
    assert!(text.contains("last passes:"), "{text}");

    let dead: Vec<i64> = [1, 2, 5, 6].iter().map(|&i| cluster.nodes[i].2).collect();
    for id in dead {
        cluster.node(id).proc.kill();
    }
    read_objects(&aws, &tmp, "scrub", &files);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// A small replica damaged on a node's disk (a byte flipped inside its
/// volume record, as bit rot would do): the node answers it as missing
/// rather than failing every read of it, so the scrub counts the failure,
/// forgets the replica and repairs the fragment back onto that node, and
/// the object reads whole.
#[test]
fn a_small_replica_damaged_in_its_volume_is_found_and_repaired() {
    let cluster = Cluster::build(3, 1, "1GiB")
        .durability("scrub_every", "5s")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("rot");
    let files = put_sized_objects(&aws, &tmp, "rot", &[40_000]);
    let (_, node, id) = &cluster.nodes[0];
    let replica = node.replicas().remove(0);
    let sound = node.replica_bytes(&replica);
    let mut damaged = 0;
    for volume in files_under(&node.data.join("volumes")) {
        if !volume.to_string_lossy().ends_with(".vol") {
            continue;
        }
        let bytes = std::fs::read(&volume).unwrap();
        if let Some(at) = bytes.windows(sound.len()).position(|w| w == sound) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&volume)
                .unwrap();
            let flipped = [bytes[at + sound.len() / 2] ^ 0x10];
            std::os::unix::fs::FileExt::write_all_at(
                &file,
                &flipped,
                (at + sound.len() / 2) as u64,
            )
            .unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "the replica's record was not found in a volume");

    let mut last = serde_json::Value::Null;
    let repaired = eventually(Duration::from_secs(90), || {
        last = cluster.walked_status();
        node_status(&last, *id)["audit_failures"].as_u64() >= Some(1)
            && last["fragments_below_target"] == 0
            && node.replicas().iter().any(|r| r.key == replica.key)
    });
    assert!(repaired, "{last}");
    assert_eq!(node.replica_bytes(&replica), sound, "the repaired copy");
    assert!(
        cluster
            .gateway_log()
            .contains("audit: replica lost, forgotten and queued for repair")
    );
    read_objects(&aws, &tmp, "rot", &files);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// Spot audits, with the scrub's passes off: replicas a node discarded are
/// found by audits of random replicas, counted in its record, forgotten and
/// repaired; a sound node's spot audits all pass.
#[test]
fn spot_audits_find_what_a_node_discarded() {
    let mut cluster = Cluster::build(4, 1, "1GiB")
        .durability("spot_audit_every", "300ms")
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("spot");
    let files = put_objects(&aws, &tmp, "spot", 2);
    let (careless, sound) = (cluster.nodes[0].2, cluster.nodes[4].2);
    let node = cluster.node(careless);
    let discarded = node.replicas();
    assert!(discarded.len() >= 5, "{} replicas", discarded.len());
    for replica in &discarded {
        node.remove_replica(replica);
    }
    let mut last = serde_json::Value::Null;
    let found = eventually(Duration::from_secs(90), || {
        last = cluster.status();
        node_status(&last, careless)["audit_failures"].as_u64() >= Some(3)
            && node_status(&last, sound)["audits"].as_u64() >= Some(3)
            && last["repaired"]["copies"].as_u64() >= Some(3)
    });
    assert!(found, "{last}");
    assert_eq!(node_status(&last, sound)["audit_failures"], 0, "{last}");
    assert_eq!(
        node_status(&last, sound)["scrub_passes"],
        0,
        "the scrub ran: {last}"
    );
    assert!(cluster.gateway_log().contains("replica lost"));
    wait_repaired(&cluster, Duration::from_secs(60));
    read_objects(&aws, &tmp, "spot", &files);
}
