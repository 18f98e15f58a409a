//! The index's tests: its transactions and migrations, on SQLite, or on
//! PostgreSQL when `TENFOLD_TEST_PG` names a server.

use std::collections::HashMap;

use super::*;
use crate::integrity::Checksums;
use tenfold_balancer::{Placement, Replica};

/// The data id of test object `key` (one letter): the shape every
/// data id has.
fn data_id_of(key: &str) -> String {
    format!("{:0>32}", hex::encode(key))
}

pub(super) fn one_fragment_object(key: &str, cid: &str) -> (ObjectRow, StoredData) {
    let data_id = data_id_of(key);
    let data = StoredData {
        data_id: data_id.clone(),
        size: 1,
        md5: [0; 16],
        checksums: Checksums::default(),
        key: None,
        segments: vec![SegmentRow {
            data_id,
            seq: 0,
            plain_offset: 0,
            plain_size: 1,
            frames: None,
            key: None,
            fragments: vec![FragmentRow {
                index: 0,
                size: 1,
                md5: [0; 16],
                placements: vec![Placement::Overflow { cid: cid.into() }],
            }],
        }],
        short: Vec::new(),
    };
    let object = ObjectRow {
        id: format!("object-{key}"),
        bucket: "b".into(),
        key: key.into(),
        size: 1,
        etag: "e".into(),
        checksums: Checksums::default(),
        content_type: None,
        metadata: HashMap::new(),
        headers: ObjectHeaders::default(),
        last_modified: 0,
        parts_count: None,
        tags: Vec::new(),
    };
    (object, data)
}

/// A write placed short of the policy is queued for repair in its
/// commit; a repair's new copy is recorded once however often the
/// record is repeated, and counted once; a node's audits make its last
/// pass's findings when the pass ends; discarding the data drops its
/// queue entry.
#[tokio::test]
async fn short_writes_repairs_and_audit_passes_are_recorded() {
    use crate::crypto::MasterKey;
    use tenfold_balancer::{Network, ReplicaPolicy};
    let dir = std::env::temp_dir().join(format!("tenfold-index-short-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyring = Keyring::new(
        MasterKey::parse(&MasterKey::generate()).unwrap(),
        Vec::new(),
    );
    let index = Index::open(&test_index_url(&dir).await)
        .await
        .unwrap()
        .with_keyring(keyring);
    index.create_bucket("b", &Owner::Admin).await.unwrap();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let node = NewNode {
            name: name.into(),
            endpoint: format!("http://{name}"),
            network: Network::Mainnet,
            capacity: 1 << 30,
            access_key: "k".into(),
            secret_key: "s".into(),
            bucket: "tenfold".into(),
        };
        nodes.push(index.add_node(&node).await.unwrap());
    }
    let on = |node_id| Placement::Node {
        node_id,
        network: Network::Mainnet,
    };
    for (key, short) in [("x", vec![(0, 0)]), ("y", Vec::new())] {
        let (object, mut data) = one_fragment_object(key, "unused");
        data.segments[0].fragments[0].placements = vec![on(nodes[0])];
        data.short = short;
        index
            .commit_object(&object, &data, &WriteCondition::Always)
            .await
            .unwrap();
    }
    let queued = index.repair_candidates(10).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let x = data_id_of("x");
    assert_eq!(queued[0].id(), (x.as_str(), 0, 0));

    let policy = ReplicaPolicy::default();
    for _ in 0..2 {
        let kept = index
            .record_repair((&x, 0, 0), &[on(nodes[1])], None, policy)
            .await
            .unwrap();
        assert!(kept);
    }
    let now = index
        .repair_candidate((&x, 0, 0), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.copies.len(), 2, "{now:?}");
    assert_eq!(index.counters().await.unwrap().repaired.copies, 1);

    // An audit pass's findings become the node's last pass at its end.
    let policy_of_audits = AuditPolicy {
        min_audits: 10,
        max_failure_share: 0.25,
    };
    index
        .record_audits(nodes[0], 3, 2, false, policy_of_audits)
        .await
        .unwrap();
    let during = index.node_records().await.unwrap()[&nodes[0]];
    assert_eq!((during.pass_audits, during.pass_failures), (5, 2));
    assert_eq!(during.last_pass_end, None);
    index
        .record_audits(nodes[0], 1, 0, true, policy_of_audits)
        .await
        .unwrap();
    let after = index.node_records().await.unwrap()[&nodes[0]];
    assert_eq!((after.pass_audits, after.pass_failures), (0, 0));
    assert_eq!((after.last_pass_audits, after.last_pass_failures), (6, 2));
    assert!(after.last_pass_end.is_some());
    assert_eq!((after.audits, after.audit_failures), (6, 2));
    // The commits' and the repair's usage reached the nodes' counters.
    let records = index.node_records().await.unwrap();
    assert_eq!((after.replicas, records[&nodes[1]].replicas), (2, 1));

    // A probe round: a lost node that answers is active again, and is
    // reported once.
    assert!(index.mark_lost(nodes[1], now_ms() + 1).await.unwrap());
    assert_eq!(index.record_seen(&nodes).await.unwrap(), vec![nodes[1]]);
    assert!(index.record_seen(&nodes).await.unwrap().is_empty());
    let records = index.node_records().await.unwrap();
    assert!(nodes.iter().all(|n| records[n].last_seen.is_some()));
    assert!(
        index
            .nodes()
            .await
            .unwrap()
            .iter()
            .all(|n| n.state == tenfold_balancer::NodeState::Active)
    );

    assert!(index.delete_object("b", "x").await.unwrap());
    assert!(index.repair_candidates(10).await.unwrap().is_empty());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM repairs")
        .fetch_one(&mut index.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(left, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Content addressing gives identical fragments one content id: it is
/// in use until the last fragment that has it goes, and every deletion
/// queues it (the collector unpins only when it is no longer in use).
#[tokio::test]
async fn a_content_id_is_in_use_while_any_fragment_has_it() {
    let dir = std::env::temp_dir().join(format!("tenfold-index-cid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let index = Index::open(&crate::data_dir::DataDir::new(&dir).index_url())
        .await
        .unwrap();
    index.create_bucket("b", &Owner::Admin).await.unwrap();
    for key in ["x", "y"] {
        let (object, data) = one_fragment_object(key, "shared-cid");
        index
            .commit_object(&object, &data, &WriteCondition::Always)
            .await
            .unwrap();
    }
    assert!(index.cid_in_use("shared-cid").await.unwrap());
    assert_eq!(index.overflow_usage().await.unwrap(), (2, 2));

    assert!(index.delete_object("b", "x").await.unwrap());
    assert!(index.cid_in_use("shared-cid").await.unwrap());
    let queued = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].replica.placement.cid(), Some("shared-cid"));

    assert!(index.delete_object("b", "y").await.unwrap());
    assert!(!index.cid_in_use("shared-cid").await.unwrap());
    assert_eq!(index.overflow_usage().await.unwrap(), (0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The garbage queue hands out only what is due (released before the
/// grace period's start, not claimed, not backing off), oldest first,
/// and each entry comes back on its own schedule.
#[tokio::test]
async fn garbage_is_claimed_when_due_and_retried_on_its_own() {
    let dir = std::env::temp_dir().join(format!("tenfold-index-gc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let index = Index::open(&test_index_url(&dir).await).await.unwrap();
    let replica = |node_id, key: &str| Replica {
        key: key.to_owned(),
        placement: Placement::Node {
            node_id,
            network: tenfold_balancer::Network::Mainnet,
        },
    };
    let queued: Vec<Replica> = (0..4)
        .map(|i| replica(1 + i % 2, &format!("d{i}/0/0")))
        .collect();
    index.add_garbage(&queued).await.unwrap();
    // Within the grace period nothing is due.
    assert!(
        index
            .claim_garbage(now_ms() - 60_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Then every entry, oldest first, claimed once.
    let first = index.claim_garbage(now_ms(), 60_000, 3).await.unwrap();
    let keys: Vec<&str> = first.iter().map(|q| q.replica.key.as_str()).collect();
    assert_eq!(keys, ["d0/0/0", "d1/0/0", "d2/0/0"]);
    let rest = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
    assert_eq!(rest.len(), 1, "claimed entries were handed out again");
    // A failure puts one back with a back-off, and counts the attempt.
    let failed = |id, at| GarbageRetry {
        id,
        at,
        failure: Some("node down".into()),
    };
    let later = [
        failed(first[0].id, now_ms() + 60_000),
        failed(first[1].id, now_ms() - 1),
    ];
    index.settle_garbage(&[first[2].id], &later).await.unwrap();
    let again = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (first[1].id, 1));
    assert_eq!(index.garbage_len().await.unwrap(), 3);
    // Many replicas at once (more than one statement's rows), nodes' and
    // overflow's, each queued whole.
    let many: Vec<Replica> = (0..300)
        .map(|i| match i % 3 {
            0 => Replica {
                key: format!("m{i}"),
                placement: Placement::Overflow {
                    cid: format!("cid{i}"),
                },
            },
            _ => replica(1 + i % 2, &format!("m{i}")),
        })
        .collect();
    index.add_garbage(&many).await.unwrap();
    let claimed = index.claim_garbage(now_ms(), 60_000, 1000).await.unwrap();
    let queued = |r: &Replica| {
        let node = r.placement.node_id();
        (
            node,
            node.map(|_| r.key.clone()),
            r.placement.cid().map(str::to_owned),
        )
    };
    let mut got: Vec<_> = claimed.iter().map(|q| queued(&q.replica)).collect();
    let mut want: Vec<_> = many.iter().map(queued).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    // Their removals recorded together (more than one statement's ids);
    // one held back for a read is not a failed attempt.
    let removed: Vec<i64> = claimed.iter().map(|q| q.id).collect();
    let held = GarbageRetry {
        id: again[0].id,
        at: now_ms() - 1,
        failure: None,
    };
    index.settle_garbage(&removed, &[held]).await.unwrap();
    assert_eq!(index.garbage_len().await.unwrap(), 3);
    let back = index.claim_garbage(now_ms(), 60_000, 10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].id, back[0].attempts), (first[1].id, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A test index's URL: a fresh database on the Postgres server at
/// `TENFOLD_TEST_PG` when it is set (the test script's Postgres pass),
/// else SQLite in `dir`.
async fn test_index_url(dir: &std::path::Path) -> String {
    match std::env::var("TENFOLD_TEST_PG") {
        Ok(server) => {
            sqlx::any::install_default_drivers();
            let server = server.trim_end_matches('/');
            let name = format!("u{:016x}", rand::random::<u64>());
            let admin = AnyPool::connect(&format!("{server}/postgres"))
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            format!("{server}/{name}")
        }
        Err(_) => crate::data_dir::DataDir::new(dir).index_url(),
    }
}

/// A fresh test index (see [`test_index_url`]) in a folder named after
/// `tag`, with bucket `b`; the folder is the caller's to remove.
pub(super) async fn index_with_bucket_b(tag: &str) -> (std::path::PathBuf, Index) {
    let dir = std::env::temp_dir().join(format!("tenfold-index-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let index = Index::open(&test_index_url(&dir).await).await.unwrap();
    index.create_bucket("b", &Owner::Admin).await.unwrap();
    (dir, index)
}

/// An index written before ETags were stored as bytes (migration 24)
/// moves forward with every ETag as it was: single PUTs' and multipart
/// objects' as their MD5's 16 bytes, any other as its text.
#[tokio::test]
async fn an_index_of_hex_etags_moves_to_etag_bytes() {
    let dir = std::env::temp_dir().join(format!("tenfold-index-v23-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = test_index_url(&dir).await;
    let md5 = "0123456789abcdef0123456789abcdef";
    let objects = [
        ("single", md5.to_owned(), None),
        ("multipart", format!("{md5}-12"), Some(12)),
        ("odd", "e".to_owned(), None),
        ("sixteen", "sixteen-bytes-16".to_owned(), None),
        ("mismatched", format!("{md5}-3"), Some(4)),
    ];
    {
        let index = Index::open_at(&url, Some(23)).await.unwrap();
        sqlx::query("INSERT INTO buckets (name, created_at) VALUES ('b', 0)")
            .execute(&mut index.reader().await.unwrap())
            .await
            .unwrap();
        for (n, (key, etag, parts)) in objects.iter().enumerate() {
            sqlx::query(
                "INSERT INTO objects (id, bucket, key, size, etag, checksums, last_modified, parts_count) \
                 VALUES ($1, 'b', $2, 1, $3, '{}', 0, $4)",
            )
            .bind(vec![u8::try_from(n).unwrap(); 16])
            .bind(*key)
            .bind(etag)
            .bind(parts.map(i64::from))
            .execute(&mut index.reader().await.unwrap())
            .await
            .unwrap();
        }
    }
    let index = Index::open(&url).await.unwrap();
    for (key, etag, _) in &objects {
        let object = index.get_object("b", key).await.unwrap().unwrap();
        assert_eq!(&object.etag, etag, "{key}");
        let stored: Vec<u8> = sqlx::query_scalar("SELECT etag FROM objects WHERE key = $1")
            .bind(*key)
            .fetch_one(&mut index.reader().await.unwrap())
            .await
            .unwrap();
        let digest = matches!(*key, "single" | "multipart");
        assert_eq!(stored.len() == 16, digest, "{key}: {stored:?}");
    }
    // Written after, read back alike; a conditional write sees the ETag.
    let mut row = index.get_object("b", "multipart").await.unwrap().unwrap();
    row.key = "later".into();
    row.id = "00112233445566778899aabbccddeeff".into();
    let data = StoredData {
        data_id: row.id.clone(),
        size: 1,
        md5: [0; 16],
        checksums: Checksums::default(),
        key: None,
        segments: Vec::new(),
        short: Vec::new(),
    };
    index
        .commit_object(&row, &data, &WriteCondition::Always)
        .await
        .unwrap();
    let later = index.get_object("b", "later").await.unwrap().unwrap();
    assert_eq!(later.etag, format!("{md5}-12"));
    let data = StoredData {
        data_id: "ffeeddccbbaa99887766554433221100".into(),
        ..data
    };
    index
        .commit_object(
            &row,
            &data,
            &WriteCondition::IfMatch(format!("\"{md5}-12\"")),
        )
        .await
        .unwrap();
    let refused = index
        .commit_object(&row, &data, &WriteCondition::IfMatch(format!("\"{md5}\"")))
        .await;
    assert!(
        matches!(refused, Err(GatewayError::PreconditionFailed)),
        "{refused:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An index written before segments and objects were packed (migrations
/// 19 and 20) moves
/// forward whole: layout, keys, overflow pins, the repair queue and
/// writes in flight, and what a deletion then queues and frees.
#[tokio::test]
async fn an_index_of_placement_rows_moves_to_packed_segments() {
    let dir = std::env::temp_dir().join(format!("tenfold-index-v18-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = test_index_url(&dir).await;
    // The schema as migration 18 left it.
    let engine = Engine::of_url(&url).unwrap();
    {
        let index = Index::open_at(&url, Some(18)).await.unwrap();
        assert_eq!(index.engine(), engine);
        let (d, o) = (
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        );
        let (m, p1, p2) = (
            "aaaa0000000000000000000000000000",
            "bbbb0000000000000000000000000000",
            "cccc0000000000000000000000000000",
        );
        let (md5a, md5b) = (hex::encode([0xaa; 16]), hex::encode([0xbb; 16]));
        let wrapped = hex::encode([7u8; 60]);
        for sql in [
            "INSERT INTO nodes (id, name, endpoint, network, capacity, access_key, secret_key, bucket, created_at) \
             VALUES (1, 'n1', 'http://n1', 'mainnet', 100, 'k', 's', 'tenfold', 0), \
                    (2, 'n2', 'http://n2', 'testnet', 100, 'k', 's', 'tenfold', 0)".to_owned(),
            "INSERT INTO buckets (name, created_at) VALUES ('b', 0)".to_owned(),
            format!("INSERT INTO objects (id, bucket, key, size, etag, metadata, headers, checksums, last_modified) \
                     VALUES ('{o}', 'b', 'k', 10, 'e', '{{}}', '{{}}', '{{}}', 0)"),
            format!("INSERT INTO object_parts (object_id, part_number, data_id, plain_offset, size, etag) \
                     VALUES ('{o}', 1, '{d}', 0, 10, 'e')"),
            format!("INSERT INTO segments (data_id, seq, plain_offset, plain_size, fragment_count, frames) \
                     VALUES ('{d}', 0, 0, 10, 2, NULL)"),
            format!("INSERT INTO data_keys (data_id, key_id, wrapped) VALUES ('{d}', 'k1', '{wrapped}')"),
            format!("INSERT INTO fragments (data_id, seq, idx, size, md5) \
                     VALUES ('{d}', 0, 0, 5, '{md5a}'), ('{d}', 0, 1, 6, '{md5b}')"),
            format!("INSERT INTO placements (data_id, seq, idx, network, node_id, cid, size) \
                     VALUES ('{d}', 0, 0, 'mainnet', 1, NULL, 5), ('{d}', 0, 0, 'testnet', 2, NULL, 5), \
                            ('{d}', 0, 1, 'overflow', NULL, 'Qmcid', 6)"),
            format!("INSERT INTO repairs (data_id, seq, idx, queued) VALUES ('{d}', 0, 1, 1)"),
            // A multipart object of two parts.
            format!("INSERT INTO objects (id, bucket, key, size, etag, metadata, headers, checksums, last_modified, parts_count, tags) \
                     VALUES ('{m}', 'b', 'mp', 10, 'e-2', '{{\"a\":\"1\"}}', '{{}}', '{{}}', 0, 2, '[]')"),
            format!("INSERT INTO object_parts (object_id, part_number, data_id, plain_offset, size, etag) \
                     VALUES ('{m}', 1, '{p1}', 0, 5, 'e1'), ('{m}', 2, '{p2}', 5, 5, 'e2')"),
            format!("INSERT INTO segments (data_id, seq, plain_offset, plain_size, fragment_count, frames) \
                     VALUES ('{p1}', 0, 0, 5, 1, NULL), ('{p2}', 0, 0, 5, 1, '{{\"plain\":64,\"ends\":[9]}}')"),
            format!("INSERT INTO fragments (data_id, seq, idx, size, md5) \
                     VALUES ('{p1}', 0, 0, 9, '{md5a}'), ('{p2}', 0, 0, 9, '{md5b}')"),
            "INSERT INTO writes_in_flight (data_id, heartbeat) \
             VALUES ('00000000000000000000000000000001', 5)".to_owned(),
        ] {
            sqlx::query(&sql).execute(&mut index.reader().await.unwrap()).await.unwrap();
        }
        index.fold_node_usage().await.unwrap();
    }
    let index = Index::open(&url).await.unwrap();
    let d = "0123456789abcdef0123456789abcdef";
    // A single PUT's object id is now its data's.
    let object = index.get_object("b", "k").await.unwrap().unwrap();
    assert_eq!((object.id.as_str(), object.parts_count), (d, None));
    assert!(object.metadata.is_empty() && object.tags.is_empty());
    let layout = index.layout(&object.id, 0..10).await.unwrap();
    assert_eq!(layout.len(), 1);
    let s = &layout[0];
    assert_eq!((s.data_id.as_str(), s.seq, s.plain_size), (d, 0, 10));
    let key = s.key.as_ref().unwrap();
    assert_eq!(
        (key.key_id.as_str(), key.wrapped.as_slice()),
        ("k1", &[7u8; 60][..])
    );
    assert_eq!(s.fragments.len(), 2);
    assert_eq!((s.fragments[0].size, s.fragments[0].md5), (5, [0xaa; 16]));
    assert_eq!(
        s.fragments[0].placements,
        [
            Placement::Node {
                node_id: 1,
                network: tenfold_balancer::Network::Mainnet
            },
            Placement::Node {
                node_id: 2,
                network: tenfold_balancer::Network::Testnet
            },
        ]
    );
    assert_eq!((s.fragments[1].size, s.fragments[1].md5), (6, [0xbb; 16]));
    assert_eq!(
        s.fragments[1].placements,
        [Placement::Overflow {
            cid: "Qmcid".into()
        }]
    );
    assert_eq!(index.master_key_ids().await.unwrap(), ["k1"]);
    assert_eq!(index.overflow_usage().await.unwrap(), (1, 6));
    assert!(index.cid_in_use("Qmcid").await.unwrap());
    let queued: Vec<_> = index
        .repair_candidates(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.seq, c.index))
        .collect();
    assert_eq!(queued, [(0, 1)]);
    let named = index.named_on_node(1, (d, d), 0).await.unwrap();
    assert_eq!(named.keys.len(), 1, "{:?}", named.keys);
    let writing = index
        .named_on_node(
            1,
            (
                "00000000000000000000000000000000",
                "00000000000000000000000000000002",
            ),
            0,
        )
        .await
        .unwrap()
        .writing;
    assert!(writing.contains("00000000000000000000000000000001"));
    let multipart = index.get_object("b", "mp").await.unwrap().unwrap();
    assert_eq!(multipart.id, "aaaa0000000000000000000000000000");
    assert_eq!(multipart.metadata["a"], "1");
    let parts = index.layout(&multipart.id, 0..10).await.unwrap();
    let offsets: Vec<(String, u64)> = parts
        .iter()
        .map(|s| (s.data_id.clone(), s.plain_offset))
        .collect();
    assert_eq!(
        offsets,
        [
            ("bbbb0000000000000000000000000000".to_owned(), 0),
            ("cccc0000000000000000000000000000".to_owned(), 5)
        ]
    );
    assert_eq!(parts[1].frames.as_ref().unwrap().ends, [9]);
    assert_eq!(
        index.part_range(&multipart.id, 2).await.unwrap(),
        Some((5, 5))
    );
    assert_eq!(
        index
            .object_parts(&multipart.id, 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // The usage the triggers counted, then what a deletion frees.
    assert_eq!(index.node_records().await.unwrap()[&1].replicas, 1);
    assert!(index.delete_object("b", "k").await.unwrap());
    index.fold_node_usage().await.unwrap();
    let records = index.node_records().await.unwrap();
    assert_eq!((records[&1].replicas, records[&2].replicas), (0, 0));
    assert_eq!(index.garbage_len().await.unwrap(), 3);
    assert_eq!(index.overflow_usage().await.unwrap(), (0, 0));
    assert!(index.repair_candidates(10).await.unwrap().is_empty());
    assert!(index.delete_object("b", "mp").await.unwrap());
    assert!(
        index
            .object_parts(&multipart.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !index
            .data_committed("bbbb0000000000000000000000000000")
            .await
            .unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn multi_row_inserts_number_every_placeholder() {
    assert_eq!(
        insert_rows_sql("t", &["a", "b", "c"], 2),
        "INSERT INTO t (a, b, c) VALUES ($1, $2, $3), ($4, $5, $6)"
    );
    assert_eq!(
        insert_rows_sql("t", &["a"], 1),
        "INSERT INTO t (a) VALUES ($1)"
    );
}

#[tokio::test]
async fn an_index_migrated_by_a_newer_binary_is_refused() {
    let dir = std::env::temp_dir().join(format!("tenfold-index-newer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = crate::data_dir::DataDir::new(&dir).index_url();
    let index = Index::open(&url).await.unwrap();
    sqlx::query(NEWER_MIGRATION)
        .execute(&mut index.reader().await.unwrap())
        .await
        .unwrap();
    let err = Index::open(&url).await.unwrap_err().to_string();
    assert!(err.contains("newer than this binary"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A migration this binary does not know, as a newer one would record.
const NEWER_MIGRATION: &str = "INSERT INTO _sqlx_migrations \
    (version, description, success, checksum, execution_time) \
    VALUES (99990101000000, 'from a newer tenfold', TRUE, x'00', 0)";

/// Commits that arrive together share transactions (SQLite's group
/// commit), and each is still judged on its own: all land, a conditional
/// write that loses to another in the same batch is refused and leaves
/// nothing, and a commit to a missing bucket fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_that_arrive_together_share_a_transaction_and_keep_their_answers() {
    let (dir, index) = index_with_bucket_b("group").await;
    let commits = (0..72).map(|i| {
        let index = index.clone();
        async move {
            // Keys k0..k31 once each; then k0..k31 again, only if absent;
            // then k0..k7 again, replacing what is there (a key written
            // twice in one batch: the second must find the first).
            let key = format!("k{}", i % 32);
            let (mut object, mut data) = one_fragment_object(&key, "unused");
            data.data_id = format!("{i:032x}");
            data.segments[0].data_id.clone_from(&data.data_id);
            if i == 63 {
                object.bucket = "missing".into();
            }
            let condition = if (32..64).contains(&i) {
                WriteCondition::IfAbsent
            } else {
                WriteCondition::Always
            };
            (i, index.commit_object(&object, &data, &condition).await)
        }
    });
    let answers = futures::future::join_all(commits).await;
    let mut landed = 0;
    for (i, answer) in answers {
        match (i, answer) {
            (0..32, Ok(())) => landed += 1,
            (64.., Ok(())) => {}
            (63, Err(GatewayError::NoSuchBucket(_))) => {}
            // Its first writer may commit before or after it.
            (32..63, Ok(()) | Err(GatewayError::PreconditionFailed)) => {}
            (i, answer) => panic!("commit {i}: {answer:?}"),
        }
    }
    assert_eq!(landed, 32);
    assert_eq!(
        index.list_objects("b", "", "", 1000).await.unwrap().len(),
        32
    );
    // The replaced objects' data went to garbage; what is left is one
    // fragment per key.
    let mut segments = 0;
    for object in index.list_objects("b", "", "", 1000).await.unwrap() {
        segments += index.layout(&object.id, 0..1).await.unwrap().len();
    }
    assert_eq!(segments, 32);
    if index.engine() == Engine::Sqlite {
        let batches = index.stats.commit_batch_objects.get_sample_count();
        assert!(
            batches < 72,
            "{batches} transactions for 72 commits: none were grouped"
        );
        // Every commit went through a batch, the refused ones too: no
        // batch failed and fell back to commits one by one.
        let total = index.stats.commit_batch_objects.get_sample_sum();
        assert!((total - 72.0).abs() < 0.5, "{total} commits in batches");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A queued row that binds fewer or more values than its columns would
/// shift every later value of the query onto the wrong column: the queue
/// refuses to run, and nothing of it reaches the database.
#[tokio::test]
async fn a_queued_row_short_of_its_columns_is_refused() {
    let (dir, index) = index_with_bucket_b("writes").await;
    let mut turn = index.write_turn().await;
    let mut tx = turn.begin().await.unwrap();
    let mut writes = super::writes::Writes::new(index.engine());
    let (object, _) = one_fragment_object("k", "unused");
    Index::queue_object(&mut writes, &object);
    writes.rows("INSERT INTO t (a, b, c)", 3, "", &[1i64], |row, v| {
        row.bind(*v).bind(*v);
    });
    let err = writes.run(&mut tx).await.unwrap_err().to_string();
    assert!(err.contains("2 values for 3 columns"), "{err}");
    tx.commit().await.unwrap();
    assert!(
        index
            .list_objects("b", "", "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The rows of object `key` in bucket `b`, queued for a transaction.
fn queued_object(index: &Index, key: &str) -> super::writes::Writes {
    let mut writes = super::writes::Writes::new(index.engine());
    let (object, data) = one_fragment_object(key, "unused");
    Index::queue_object(&mut writes, &object);
    Index::queue_data(&mut writes, &data, &mut super::nodes::NodeUsage::default());
    writes
}

/// Commits object `kept` in bucket `b`, and checks that it is the only
/// object there: what a transaction that did not end left nothing behind.
async fn assert_next_write_commits_alone(index: &Index) {
    let (object, data) = one_fragment_object("kept", "unused");
    index
        .commit_object(&object, &data, &WriteCondition::Always)
        .await
        .unwrap();
    let keys: Vec<String> = index
        .list_objects("b", "", "", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["kept"]);
}

/// A write transaction dropped before it ends (its future cancelled)
/// leaves nothing behind: its rows are gone, and the next write runs and
/// commits on its own (on SQLite on a new connection, as closing the old
/// one rolled the transaction back).
#[tokio::test]
async fn a_transaction_dropped_before_it_ends_changes_nothing() {
    let (dir, index) = index_with_bucket_b("dropped").await;
    {
        let mut turn = index.write_turn().await;
        let mut tx = turn.begin().await.unwrap();
        queued_object(&index, "dropped").run(&mut tx).await.unwrap();
    }
    assert_next_write_commits_alone(&index).await;
    index.create_bucket("c", &Owner::Admin).await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Statements sent with the `COMMIT` (on SQLite in the same trip as it)
/// that fail leave nothing of their transaction behind, and the next write
/// runs and commits.
#[tokio::test]
async fn statements_sent_with_the_commit_that_fail_change_nothing() {
    let (dir, index) = index_with_bucket_b("at-commit").await;
    {
        let mut turn = index.write_turn().await;
        let mut tx = turn.begin().await.unwrap();
        let mut writes = queued_object(&index, "failed");
        writes.rows("INSERT INTO no_such_table (a)", 1, "", &[1i64], |row, v| {
            row.bind(*v);
        });
        // Postgres runs them at once, SQLite with the COMMIT.
        let committed = match tx.commit_with(writes).await {
            Ok(()) => tx.commit().await.map_err(GatewayError::from),
            Err(e) => Err(e),
        };
        let err = committed.unwrap_err().to_string();
        assert!(err.contains("no_such_table"), "{err}");
    }
    assert_next_write_commits_alone(&index).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A commit in a transaction of its own, as a failed group commit falls
/// back to, finds its bucket and the object at its key. On SQLite its key
/// lookup is the query that opens the transaction.
#[tokio::test]
async fn a_commit_alone_finds_its_bucket_and_the_object_at_its_key() {
    let (dir, index) = index_with_bucket_b("alone").await;
    let (object, data) = one_fragment_object("k", "first");
    index
        .commit_object_alone(&object, &data, &WriteCondition::Always)
        .await
        .unwrap();
    let (again, again_data) = one_fragment_object("k2", "second");
    let again = ObjectRow {
        key: "k".into(),
        ..again
    };
    let refused = index
        .commit_object_alone(&again, &again_data, &WriteCondition::IfAbsent)
        .await;
    assert!(
        matches!(refused, Err(GatewayError::PreconditionFailed)),
        "{refused:?}"
    );
    let elsewhere = ObjectRow {
        bucket: "missing".into(),
        ..again
    };
    let refused = index
        .commit_object_alone(&elsewhere, &again_data, &WriteCondition::Always)
        .await;
    assert!(
        matches!(refused, Err(GatewayError::NoSuchBucket(ref b)) if b == "missing"),
        "{refused:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A transaction whose last statements turn out to be none commits, both
/// when a query has opened it and when none has.
#[tokio::test]
async fn a_commit_with_nothing_queued_commits() {
    let (dir, index) = index_with_bucket_b("empty-commit").await;
    for opened in [true, false] {
        let mut turn = index.write_turn().await;
        let mut tx = turn.begin().await.unwrap();
        if opened {
            Index::bucket_occupant_in(&mut tx, "b", "k").await.unwrap();
        }
        tx.commit_with(super::writes::Writes::new(index.engine()))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_next_write_commits_alone(&index).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// On SQLite, a write that cannot take the write lock within the busy
/// timeout (another process holds it) fails once, rather than waiting the
/// timeout again in each of its retries; once the lock is free, writes go
/// on.
#[tokio::test]
async fn a_write_that_finds_sqlite_locked_past_the_busy_timeout_fails_once() {
    if std::env::var_os("TENFOLD_TEST_PG").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tenfold-index-locked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = test_index_url(&dir).await;
    let index = Index::open(&url).await.unwrap();
    let mut other = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    let started = std::time::Instant::now();
    let refused = index.create_bucket("b", &Owner::Admin).await;
    let waited = started.elapsed();
    assert!(refused.is_err(), "a write went through a held lock");
    assert!(
        waited < Duration::from_secs(25),
        "the write waited {waited:?}: it ran again after the busy timeout"
    );
    other.execute("ROLLBACK").await.unwrap();
    index.create_bucket("b", &Owner::Admin).await.unwrap();
    assert_eq!(index.stats.write_retries.get(), 0);
    std::fs::remove_dir_all(&dir).ok();
}
