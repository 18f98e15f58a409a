//! Several gateways on one Postgres index: what one writes the other
//! reads, lists, overwrites and deletes; multipart uploads move between
//! them; node registrations are shared; concurrent writers of one key leave
//! one winner and no orphan fragment, conditional writers one winner per
//! ETag; an index outage answers 503 and
//! heals. Each test runs its own throwaway PostgreSQL server.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use tests::{
    Aws, Cluster, Node, Postgres, Proc, TempDir, assert_placements, bin, eventually, free_port,
    inspect, node_status, sdk_client, sha256_file, wait_for_port, write_file,
};

fn file_of(dir: &Path, name: &str, len: usize, seed: bool) -> String {
    let path = dir.join(name);
    write_file(&path, len, seed);
    path.to_str().unwrap().to_owned()
}

#[test]
fn two_gateways_share_one_index() {
    let pg = Postgres::start();
    let url = pg.create_database("shared");
    let mut cluster = Cluster::build(3, 1, "1GiB").index_url(&url).start();
    let second = cluster.another_gateway();
    let (a, b) = (cluster.aws(), second.aws());
    let tmp = TempDir::new("pg2");
    let one = file_of(tmp.path(), "one", 3 << 20, false);
    let two = file_of(tmp.path(), "two", 2 << 20, true);
    let back = tmp.path().join("back");
    let back_s = back.to_str().unwrap();

    // Written through one, read, listed, overwritten and deleted through
    // the other.
    a.ok(&["s3", "mb", "s3://shared"]);
    a.ok(&["s3", "cp", &one, "s3://shared/doc"]);
    assert!(b.ok(&["s3", "ls", "s3://shared/"]).contains("doc"));
    b.ok(&["s3", "cp", "s3://shared/doc", back_s]);
    assert_eq!(sha256_file(&back), sha256_file(Path::new(&one)));
    b.ok(&["s3", "cp", &two, "s3://shared/doc"]);
    a.ok(&["s3", "cp", "s3://shared/doc", back_s]);
    assert_eq!(sha256_file(&back), sha256_file(Path::new(&two)));
    assert_placements(&cluster.inspect("shared", "doc"), 3, 1);
    a.ok(&["s3", "rm", "s3://shared/doc"]);
    assert!(!b.ok(&["s3", "ls", "s3://shared/"]).contains("doc"));
    let err = b.fails(&["s3api", "head-object", "--bucket", "shared", "--key", "doc"]);
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");

    // A multipart upload started on one, continued on both, completed on
    // the other.
    let part1 = file_of(tmp.path(), "p1", 5 << 20, false);
    let part2 = file_of(tmp.path(), "p2", 1 << 20, false);
    let upload = a.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "shared",
        "--key",
        "mp",
    ]);
    let id = upload["UploadId"].as_str().unwrap();
    let mut parts = Vec::new();
    for (n, (aws, file)) in [(&a, &part1), (&b, &part2)].into_iter().enumerate() {
        let number = (n + 1).to_string();
        let out = aws.json(&[
            "s3api",
            "upload-part",
            "--bucket",
            "shared",
            "--key",
            "mp",
            "--upload-id",
            id,
            "--part-number",
            &number,
            "--body",
            file,
        ]);
        parts.push(format!(
            "{{\"PartNumber\":{number},\"ETag\":{}}}",
            out["ETag"]
        ));
    }
    let listed = b.json(&[
        "s3api",
        "list-parts",
        "--bucket",
        "shared",
        "--key",
        "mp",
        "--upload-id",
        id,
    ]);
    assert_eq!(listed["Parts"].as_array().map(Vec::len), Some(2));
    b.ok(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "shared",
        "--key",
        "mp",
        "--upload-id",
        id,
        "--multipart-upload",
        &format!("{{\"Parts\":[{}]}}", parts.join(",")),
    ]);
    a.ok(&["s3", "cp", "s3://shared/mp", back_s]);
    let mut whole = std::fs::read(&part1).unwrap();
    whole.extend(std::fs::read(&part2).unwrap());
    assert!(
        std::fs::read(&back).unwrap() == whole,
        "the parts, in order"
    );

    // Node registrations are shared: a node registered while both run is
    // used by the second gateway once a mainnet node is gone.
    let extra = Node::start(cluster.dir.path(), "extra", "1GiB");
    let extra_id = cluster.register_node(&extra, "mainnet", "1GiB");
    let first_id = cluster.nodes[0].2;
    cluster.node(first_id).proc.kill();
    second.wait_for_node(extra_id);
    b.ok(&["s3", "cp", &one, "s3://shared/after"]);
    let report = cluster.inspect("shared", "after");
    assert_placements(&report, 3, 1);
    let used: HashSet<i64> = report["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["placements"].as_array().unwrap().clone())
        .filter_map(|p| p["node"].as_i64())
        .collect();
    assert!(
        used.contains(&extra_id) && !used.contains(&first_id),
        "{used:?}"
    );
    // Usage recorded by either gateway is in the shared registry.
    let status = cluster.admin(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let stored: u64 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["stored"].as_u64())
        .sum();
    assert!(stored > 0, "{status}");

    // A bucket deleted through one gateway refuses a PUT through the other
    // at once, though the other found it a moment before (and skips its
    // look before the body for a while): the commit looks again.
    let (sa, sb) = (
        sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
        sdk_client(&second.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let put = |key: &'static str| {
            sa.put_object()
                .bucket("brief")
                .key(key)
                .body(ByteStream::from(vec![7u8; 100_000]))
                .send()
        };
        sb.create_bucket().bucket("brief").send().await.unwrap();
        put("first").await.unwrap();
        sb.delete_object()
            .bucket("brief")
            .key("first")
            .send()
            .await
            .unwrap();
        sb.delete_bucket().bucket("brief").send().await.unwrap();
        let refused = put("second").await.unwrap_err().into_service_error();
        assert_eq!(refused.meta().code(), Some("NoSuchBucket"), "{refused:?}");
        sb.create_bucket().bucket("brief").send().await.unwrap();
        let listed = sa.list_objects_v2().bucket("brief").send().await.unwrap();
        assert_eq!(listed.key_count(), Some(0), "{listed:?}");
    });
    assert!(!second.log().contains("panicked") && !cluster.gateway_log().contains("panicked"));
}

#[test]
fn concurrent_writers_of_one_key_leave_one_winner() {
    let pg = Postgres::start();
    let url = pg.create_database("race");
    let cluster = Cluster::build(3, 1, "2GiB").index_url(&url).start();
    let second = cluster.another_gateway();
    cluster.aws().ok(&["s3", "mb", "s3://race"]);
    let clients = [
        sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
        sdk_client(&second.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
    ];
    // 24 writers, each with its own bytes and length (so a listing tells
    // whose object it shows), half through each gateway; listers watch.
    let bodies: Vec<Vec<u8>> = (0..24)
        .map(|i| {
            let len = 200_000 + i * 1000;
            (0..len).map(|j| ((j * 31 + i * 7) % 251) as u8).collect()
        })
        .collect();
    let lengths: HashSet<i64> = bodies.iter().map(|b| b.len() as i64).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (puts, listings) = rt.block_on(async {
        let writes: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let client = clients[i % 2].clone();
                let body = body.clone();
                tokio::spawn(async move {
                    client
                        .put_object()
                        .bucket("race")
                        .key("contested")
                        .body(ByteStream::from(body))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))
                })
            })
            .collect();
        let listers = clients.clone();
        let watch = tokio::spawn(async move {
            let mut seen = Vec::new();
            for round in 0..40 {
                let out = listers[round % 2]
                    .list_objects_v2()
                    .bucket("race")
                    .send()
                    .await
                    .expect("list during writes");
                seen.extend(out.contents().iter().filter_map(|o| o.size()));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            seen
        });
        let mut puts = Vec::new();
        for write in writes {
            puts.push(write.await.expect("writer task"));
        }
        (puts, watch.await.expect("lister task"))
    });
    for put in &puts {
        assert!(
            put.is_ok(),
            "every writer succeeds (last one wins): {put:?}"
        );
    }
    // A listing only ever shows a whole object of one of the writers.
    for size in &listings {
        assert!(lengths.contains(size), "listed a size nobody wrote: {size}");
    }
    // Both gateways return the same winner, whole.
    let (first, other) = rt.block_on(async {
        let get = |c: &aws_sdk_s3::Client| {
            let c = c.clone();
            async move {
                let out = c
                    .get_object()
                    .bucket("race")
                    .key("contested")
                    .send()
                    .await
                    .unwrap();
                out.body.collect().await.unwrap().into_bytes().to_vec()
            }
        };
        (get(&clients[0]).await, get(&clients[1]).await)
    });
    assert!(first == other, "both gateways see the same object");
    assert!(bodies.contains(&first), "the object is one writer's bytes");
    let listed = cluster
        .aws()
        .json(&["s3api", "list-objects-v2", "--bucket", "race"]);
    assert_eq!(listed["Contents"].as_array().map(Vec::len), Some(1));

    // The losers' fragments are removed: the nodes end up holding exactly
    // the winner's replicas.
    let replicas = cluster.replicas_of("race", "contested");
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas()
            == replicas),
        "nodes hold {} files, the winner has {replicas} replicas",
        cluster.stored_replicas()
    );
}

/// S3's conditional writes under contention: 16 writers, each reading the
/// current ETag through one gateway and writing `If-Match` it through the
/// other. Per ETag generation exactly one write wins; the others get 412
/// (or 409); the winners form one chain from the first object to the last,
/// whose bytes are the last winner's; and no loser leaves a replica behind.
#[test]
fn conditional_writers_win_once_per_etag_generation() {
    let pg = Postgres::start();
    let url = pg.create_database("ifmatch");
    let cluster = Cluster::build(3, 1, "2GiB").index_url(&url).start();
    let second = cluster.another_gateway();
    cluster.aws().ok(&["s3", "mb", "s3://cas"]);
    let clients = [
        sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
        sdk_client(&second.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(async {
        let put = clients[0]
            .put_object()
            .bucket("cas")
            .key("counter")
            .body(ByteStream::from_static(b"generation 0"))
            .send()
            .await
            .unwrap();
        put.e_tag().unwrap().to_owned()
    });
    // Each attempt: Ok((ETag read, ETag written, bytes)) or Err(status).
    type Attempt = Result<(String, String, Vec<u8>), Option<u16>>;
    let attempts: Vec<Attempt> = rt.block_on(async {
        let writers: Vec<_> = (0..16usize)
            .map(|w| {
                let clients = clients.clone();
                tokio::spawn(async move {
                    let mut attempts = Vec::new();
                    for round in 0..6 {
                        let (reader, writer) =
                            (&clients[(w + round) % 2], &clients[(w + round + 1) % 2]);
                        let head = reader
                            .head_object()
                            .bucket("cas")
                            .key("counter")
                            .send()
                            .await;
                        let read = head.unwrap().e_tag().unwrap().to_owned();
                        let body = format!("writer {w} round {round} after {read}").into_bytes();
                        let put = writer
                            .put_object()
                            .bucket("cas")
                            .key("counter")
                            .if_match(&read)
                            .body(ByteStream::from(body.clone()))
                            .send()
                            .await;
                        attempts.push(match put {
                            Ok(out) => Ok((read, out.e_tag().unwrap().to_owned(), body)),
                            Err(e) => Err(e.raw_response().map(|r| r.status().as_u16())),
                        });
                    }
                    attempts
                })
            })
            .collect();
        let mut all = Vec::new();
        for writer in writers {
            all.extend(writer.await.expect("writer task"));
        }
        all
    });
    let mut wins = std::collections::HashMap::new();
    for attempt in &attempts {
        match attempt {
            Ok((read, written, body)) => {
                let earlier = wins.insert(read.clone(), (written.clone(), body.clone()));
                assert!(earlier.is_none(), "two writes won over ETag {read}");
            }
            Err(status) => assert!(
                matches!(status, Some(412 | 409)),
                "a losing conditional write answered {status:?}"
            ),
        }
    }
    assert!(wins.len() >= 6, "only {} of 96 writes won", wins.len());
    // The winners chain from the first object to the current one.
    let (mut etag, mut bytes) = (first, b"generation 0".to_vec());
    let mut chained = 0;
    while let Some((next, body)) = wins.get(&etag) {
        (etag, bytes) = (next.clone(), body.clone());
        chained += 1;
    }
    assert_eq!(chained, wins.len(), "every winner is one link of one chain");
    for client in &clients {
        let (now, got) = rt.block_on(async {
            let out = client
                .get_object()
                .bucket("cas")
                .key("counter")
                .send()
                .await
                .unwrap();
            let etag = out.e_tag().unwrap().to_owned();
            (
                etag,
                out.body.collect().await.unwrap().into_bytes().to_vec(),
            )
        });
        assert_eq!(now, etag, "the object is the chain's last winner");
        assert!(got == bytes, "with the last winner's bytes");
    }
    // The losers' bodies leave the nodes: only the object's replicas stay.
    let replicas = cluster.replicas_of("cas", "counter");
    assert!(
        eventually(Duration::from_secs(60), || cluster.stored_replicas()
            == replicas),
        "nodes hold {} files, the object has {replicas} replicas",
        cluster.stored_replicas()
    );
}

#[test]
fn an_index_outage_answers_503_and_heals() {
    let pg = Postgres::start();
    let url = pg.create_database("outage");
    let cluster = Cluster::build(3, 1, "1GiB").index_url(&url).start();
    let aws = cluster.aws();
    let tmp = TempDir::new("outage");
    let src = file_of(tmp.path(), "src", 1 << 20, false);
    let back = tmp.path().join("back");
    aws.ok(&["s3", "mb", "s3://outage"]);
    aws.ok(&["s3", "cp", &src, "s3://outage/a"]);

    // Every connection of the gateway is cut: the pool reconnects.
    let cut = pg.sql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = 'outage' AND pid <> pg_backend_pid()",
    );
    assert_ne!(cut, "0", "the gateway held connections");
    aws.ok(&["s3", "cp", &src, "s3://outage/b"]);
    aws.ok(&["s3", "cp", "s3://outage/a", back.to_str().unwrap()]);
    assert_eq!(sha256_file(&back), sha256_file(Path::new(&src)));

    // The database is down: a 503 the client can retry, no hang, no 500.
    pg.stop();
    let started = std::time::Instant::now();
    let err = aws.fails(&["s3", "cp", &src, "s3://outage/c"]);
    assert!(
        err.contains("503") || err.contains("ServiceUnavailable") || err.contains("SlowDown"),
        "{err}"
    );
    let err = aws.fails(&["s3api", "head-object", "--bucket", "outage", "--key", "a"]);
    assert!(
        err.contains("503") || err.contains("Service Unavailable"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // Back up: everything written before is there, writes work again.
    pg.resume();
    assert!(eventually(Duration::from_secs(60), || aws
        .run(&["s3", "cp", &src, "s3://outage/c"])
        .status
        .success()));
    let listed = aws.ok(&["s3", "ls", "s3://outage/"]);
    for key in ["a", "b", "c"] {
        assert!(listed.contains(key), "{listed}");
    }
    aws.ok(&["s3", "cp", "s3://outage/b", back.to_str().unwrap()]);
    assert_eq!(sha256_file(&back), sha256_file(Path::new(&src)));
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// `tenfold dev --index-url postgres://…` runs the local cluster on a
/// Postgres index, and `tenfold serve --index-url … --listen …` joins it
/// with nothing but the environment's credentials and master key.
#[test]
fn a_gateway_joins_a_dev_cluster_on_postgres() {
    let pg = Postgres::start();
    let url = pg.create_database("dev");
    let tmp = TempDir::new("pgdev");
    let data = tmp.path().join("data");
    let dev_addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin("tenfold"))
        .args([
            "dev",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &dev_addr,
        ])
        .args(["--index-url", &url, "--node-capacity", "1GiB"])
        .env_remove("TENFOLD_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenfold dev");
    let mut dev = Proc(child);
    wait_for_port(&dev_addr, &mut dev.0);
    assert!(!data.join("index.db").exists(), "the index is in Postgres");

    let join_addr = format!("127.0.0.1:{}", free_port());
    let master_key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let child = Command::new(bin("tenfold"))
        .args([
            "serve",
            "--index-url",
            &url,
            "--listen",
            &join_addr,
            "--admin-listen",
            "off",
        ])
        .env("TENFOLD_ACCESS_KEY", "tenfold")
        .env("TENFOLD_SECRET_KEY", "tenfold-secret")
        .env("TENFOLD_MASTER_KEY", master_key.trim())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenfold serve");
    let mut joined = Proc(child);
    wait_for_port(&join_addr, &mut joined.0);

    let dev_aws = Aws::new(&format!("http://{dev_addr}"), "tenfold", "tenfold-secret");
    let joined_aws = Aws::new(&format!("http://{join_addr}"), "tenfold", "tenfold-secret");
    let src = file_of(tmp.path(), "src", 4 << 20, false);
    let back = tmp.path().join("back");
    dev_aws.ok(&["s3", "mb", "s3://devpg"]);
    dev_aws.ok(&["s3", "cp", &src, "s3://devpg/a"]);
    joined_aws.ok(&["s3", "cp", "s3://devpg/a", back.to_str().unwrap()]);
    assert_eq!(sha256_file(&back), sha256_file(Path::new(&src)));
    joined_aws.ok(&["s3", "cp", &src, "s3://devpg/b"]);
    assert!(dev_aws.ok(&["s3", "ls", "s3://devpg/"]).contains(" b\n"));
    // The joined gateway uses the dev cluster's six nodes.
    let report = inspect(&["--index-url", &url], "devpg", "b");
    assert_placements(&report, 3, 1);

    // An index a newer binary has migrated is refused, saying so.
    pg.sql(
        "dev",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from a newer tenfold', TRUE, '\\x00', 0)",
    );
    let out = tests::run(Command::new(bin("tenfold")).args(["status", "--index-url", &url]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("newer than this binary"),
        "{err}"
    );
}

/// Two gateways on one Postgres index repair a lost node's fragments side
/// by side: claims keep each fragment to one repair, so every fragment ends
/// at exactly 3 + 1 copies, with no placement recorded twice.
#[test]
fn two_gateways_repair_a_lost_node_without_duplicate_copies() {
    let pg = Postgres::start();
    let url = pg.create_database("repair");
    let mut cluster = Cluster::build(5, 2, "1GiB")
        .index_url(&url)
        .durability("node_lost_after", "3s")
        .start();
    let second = cluster.another_gateway();
    let (a, b) = (cluster.aws(), second.aws());
    let tmp = TempDir::new("pg-repair");
    a.ok(&["s3", "mb", "s3://rep"]);
    let files: Vec<String> = (0..16)
        .map(|i| {
            let file = file_of(tmp.path(), &format!("o{i}"), 3_000_000, false);
            let via = if i % 2 == 0 { &a } else { &b };
            via.ok(&["s3", "cp", "--quiet", &file, &format!("s3://rep/o{i}")]);
            file
        })
        .collect();
    let lost = cluster.nodes[0].2;
    let held = cluster.node(lost).replicas().len();
    assert!(held >= 60, "the node to lose holds {held} replicas");
    cluster.node(lost).proc.kill();
    let mut last = serde_json::Value::Null;
    let repaired = eventually(Duration::from_secs(150), || {
        last = cluster.walked_status();
        let node = node_status(&last, lost);
        node["state"] == "lost" && node["replicas"] == 0 && last["fragments_below_target"] == 0
    });
    assert!(repaired, "{last}");
    let by_copies = last["fragments_by_node_copies"].as_object().unwrap();
    assert_eq!(by_copies.len(), 1, "{last}");
    assert_eq!(by_copies["4"], 160, "{last}");
    // No copy recorded twice: every fragment has 3 + 1 distinct nodes.
    for i in 0..files.len() {
        let report = cluster.inspect("rep", &format!("o{i}"));
        assert_eq!(assert_placements(&report, 3, 1), 10, "{report}");
    }
    let repairs = pg.sql("repair", "SELECT COUNT(*) FROM repairs");
    assert_eq!(repairs, "0", "repair rows left behind");
    let by_gateway =
        [cluster.gateway_log(), second.log()].map(|log| log.matches("fragment repaired").count());
    eprintln!("repairs settled by each gateway: {by_gateway:?}");
    // Each fragment the node held got one new copy, from one gateway.
    assert_eq!(last["repaired"]["copies"], held, "{last}");
    for (i, file) in files.iter().enumerate() {
        let back = tmp.path().join(format!("back{i}"));
        b.ok(&[
            "s3",
            "cp",
            "--quiet",
            &format!("s3://rep/o{i}"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(&back), sha256_file(Path::new(file)), "o{i}");
    }
}

/// The index connections cut again and again while PUTs commit (every
/// backend of the gateway terminated every 100 ms): each PUT that answered
/// 200 reads back whole, any other is absent or whole, and once the orphan
/// sweep has run the nodes hold exactly the files the index names, so no
/// index row points at a replica that was discarded.
#[test]
fn commits_cut_by_lost_index_connections_leave_whole_objects_or_nothing() {
    let pg = Postgres::start();
    let url = pg.create_database("cut");
    let cluster = Cluster::build(3, 1, "1GiB").index_url(&url).start();
    let aws = cluster.aws();
    let tmp = TempDir::new("pg-cut");
    aws.ok(&["s3", "mb", "s3://cut"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answered, cut) = std::thread::scope(|scope| {
        let cutter = scope.spawn(|| {
            let mut cut = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let killed = pg.sql(
                    "postgres",
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = 'cut' AND pid <> pg_backend_pid()",
                );
                cut += killed.parse::<u32>().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(100));
            }
            cut
        });
        let mut answered = Vec::new();
        for i in 0..30 {
            let src = file_of(tmp.path(), &format!("o{i}"), 300_000 + i * 1000, false);
            let out = aws.run(&[
                "s3api",
                "put-object",
                "--bucket",
                "cut",
                "--key",
                &format!("o{i}"),
                "--body",
                &src,
            ]);
            answered.push((i, src, out.status.success()));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (answered, cutter.join().unwrap())
    });
    assert!(cut > 0, "no connection was cut");
    let listed = aws.ok(&["s3", "ls", "s3://cut/"]);
    let mut visible = Vec::new();
    for (i, src, ok) in &answered {
        let key = format!("o{i}");
        if !listed.contains(&format!(" {key}\n")) {
            assert!(!ok, "{key} answered 200 but is not listed: {listed}");
            continue;
        }
        let back = tmp.path().join(format!("back{i}"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://cut/{key}"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(&back), sha256_file(Path::new(src)), "{key}");
        visible.push(key);
    }
    assert!(
        visible.len() >= 10,
        "only {} PUTs went through",
        visible.len()
    );
    let named: usize = visible
        .iter()
        .map(|key| {
            let report = cluster.inspect("cut", key);
            assert_placements(&report, 3, 1);
            report["fragments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["placements"].as_array().unwrap().len())
                .sum::<usize>()
        })
        .sum();
    assert!(
        eventually(Duration::from_secs(90), || cluster.stored_replicas()
            == named),
        "the nodes hold {} files, the index names {named}",
        cluster.stored_replicas()
    );
    eprintln!(
        "connections cut: {cut}; PUTs answered 200: {} of 30; visible: {}",
        answered.iter().filter(|a| a.2).count(),
        visible.len()
    );
}

/// Bytes of write `round` of writer `writer`: its own, so a mix-up shows,
/// and incompressible (xorshift), so the fragments are as large as the data.
fn body_of(writer: usize, round: usize, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ ((writer as u64) << 32 | round as u64);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One write of the mixed workload, through `s3`; returns what the key
/// holds afterwards (`None`: deleted).
async fn mixed_write(
    s3: &aws_sdk_s3::Client,
    key: &str,
    op: usize,
    body: Vec<u8>,
    copy_of: Option<(&str, &Vec<u8>)>,
) -> Option<Vec<u8>> {
    let put = |body: Vec<u8>| {
        s3.put_object()
            .bucket("mix")
            .key(key)
            .body(ByteStream::from(body))
            .send()
    };
    match (op, copy_of) {
        // An overwrite or a new object, of one segment or of two.
        (0..=5, _) | (8, None) => {
            put(body.clone()).await.expect("PUT");
            Some(body)
        }
        (6, _) => {
            let id = s3
                .create_multipart_upload()
                .bucket("mix")
                .key(key)
                .send()
                .await
                .expect("CreateMultipartUpload")
                .upload_id
                .unwrap();
            let mut parts = Vec::new();
            let split = 5 << 20;
            for (n, piece) in [&body[..split], &body[split..]].into_iter().enumerate() {
                let n = i32::try_from(n + 1).unwrap();
                let done = s3
                    .upload_part()
                    .bucket("mix")
                    .key(key)
                    .upload_id(&id)
                    .part_number(n)
                    .body(ByteStream::from(piece.to_vec()))
                    .send()
                    .await
                    .expect("UploadPart");
                parts.push(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(n)
                        .e_tag(done.e_tag.unwrap())
                        .build(),
                );
            }
            s3.complete_multipart_upload()
                .bucket("mix")
                .key(key)
                .upload_id(&id)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .expect("CompleteMultipartUpload");
            Some(body)
        }
        (7, _) => {
            s3.delete_object()
                .bucket("mix")
                .key(key)
                .send()
                .await
                .expect("DELETE");
            None
        }
        (_, Some((source, bytes))) => {
            s3.copy_object()
                .bucket("mix")
                .key(key)
                .copy_source(format!("mix/{source}"))
                .send()
                .await
                .expect("CopyObject");
            Some(bytes.clone())
        }
        _ => unreachable!("ops are 0 to 9"),
    }
}

/// Two gateways on one Postgres, every background job running on both
/// (garbage with a short `gc_delay`, repair of a node lost mid-way, the
/// orphan sweep, scrubs), under a mixed workload through both: PUTs of one
/// and two segments, multipart uploads, overwrites, deletes and copies.
/// Afterwards every object reads back as last written through either
/// gateway, every fragment has 3 + 1 copies on distinct nodes (no
/// duplicate placement), and listing every node finds exactly the
/// replicas the index names: none it names was deleted, none is left over.
#[test]
fn two_gateways_keep_every_named_replica_under_a_mixed_workload() {
    let pg = Postgres::start();
    let url = pg.create_database("mixed");
    let cluster = Cluster::build(4, 2, "2GiB")
        .index_url(&url)
        .gc_delay("1s")
        .durability("node_lost_after", "3s")
        .durability("orphan_grace", "2s")
        .start();
    let second = cluster.another_gateway_alike();
    cluster.aws().ok(&["s3", "mb", "s3://mix"]);
    let clients = [
        sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
        sdk_client(&second.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY),
    ];
    // A mainnet node stalls a few seconds in, long enough to be lost and
    // repaired around, then comes back holding replicas nobody names.
    let stalled = cluster.nodes[0].1.proc.0.id().to_string();
    let staller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        run_kill("-STOP", &stalled);
        std::thread::sleep(Duration::from_secs(10));
        run_kill("-CONT", &stalled);
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expected: Vec<(String, Option<Vec<u8>>)> = rt.block_on(async {
        let writers: Vec<_> = (0..6usize)
            .map(|w| {
                let clients = clients.clone();
                tokio::spawn(async move {
                    let keys: Vec<String> = (0..3).map(|k| format!("w{w}-k{k}")).collect();
                    let mut held: Vec<Option<Vec<u8>>> = vec![None; 3];
                    for round in 0..10 {
                        let k = round % 3;
                        let op = (w * 7 + round * 3) % 10;
                        let len = match op {
                            4 | 5 => (9 << 20) + round * 1000,
                            6 => (5 << 20) + 300_000,
                            _ => 40_000 + (w * 1000 + round * 17_000) % 200_000,
                        };
                        let source = (k + 1) % 3;
                        let copy_of = held[source].as_ref().map(|b| (keys[source].as_str(), b));
                        let s3 = &clients[(w + round) % 2];
                        held[k] =
                            mixed_write(s3, &keys[k], op, body_of(w, round, len), copy_of).await;
                    }
                    keys.into_iter().zip(held).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for writer in writers {
            all.extend(writer.await.expect("writer task"));
        }
        all
    });
    staller.join().unwrap();

    // The index's replicas on each node, and what each node lists.
    let named = || {
        let mut by_node: HashMap<i64, HashSet<String>> = HashMap::new();
        for (key, bytes) in &expected {
            if bytes.is_none() {
                continue;
            }
            let report = cluster.inspect("mix", key);
            for f in report["fragments"].as_array().unwrap() {
                for p in f["placements"].as_array().unwrap() {
                    let node = p["node"].as_i64().expect("all on nodes");
                    by_node
                        .entry(node)
                        .or_default()
                        .insert(f["key"].as_str().unwrap().to_owned());
                }
            }
        }
        by_node
    };
    let listed = |node: &Node| -> HashSet<String> {
        let aws = Aws::new(&node.endpoint(), &node.access_key, &node.secret_key);
        let out = aws.json(&["s3api", "list-objects-v2", "--bucket", "tenfold"]);
        out["Contents"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|o| o["Key"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut last = String::new();
    let settled = eventually(Duration::from_secs(180), || {
        let named = named();
        let mut same = true;
        last.clear();
        for (_, node, id) in &cluster.nodes {
            let (want, have) = (named.get(id).cloned().unwrap_or_default(), listed(node));
            let lost: Vec<_> = want.difference(&have).collect();
            // A replica the index names is never missing from its node.
            assert!(lost.is_empty(), "node {id} lost named replicas: {lost:?}");
            if want != have {
                same = false;
                last += &format!("node {id}: {} named, {} listed; ", want.len(), have.len());
            }
        }
        same
    });
    assert!(
        settled,
        "the nodes never held exactly the named replicas: {last}"
    );
    // Every fragment: 3 + 1 copies on distinct nodes.
    for (key, bytes) in &expected {
        if bytes.is_some() {
            let report = cluster.inspect("mix", key);
            assert!(assert_placements(&report, 3, 1) > 0, "{report}");
        }
    }
    // Every object as last written, through either gateway.
    for (key, bytes) in &expected {
        for s3 in &clients {
            let got = rt.block_on(async {
                match s3.get_object().bucket("mix").key(key).send().await {
                    Ok(out) => Some(out.body.collect().await.unwrap().into_bytes().to_vec()),
                    Err(e) => {
                        let status = e.raw_response().map(|r| r.status().as_u16());
                        assert_eq!(status, Some(404), "GET {key}");
                        None
                    }
                }
            });
            assert!(
                got == *bytes,
                "{key} reads back otherwise than last written"
            );
        }
    }
}

fn run_kill(signal: &str, pid: &str) {
    let out = tests::run(Command::new("kill").args([signal, pid]));
    assert!(out.status.success(), "kill {signal} {pid}");
}
