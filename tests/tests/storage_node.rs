//! `tenfold-node` on its own, as an operator runs it, driven by the `aws`
//! CLI: the S3 operations, ranges, `/health`, auth, capacity and crash
//! atomicity.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use md5_digest::Digest as _;

use tests::{Aws, Node, Proc, TempDir, bin, eventually, sha256_file, wait_for_port, write_file};

fn health(addr: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

#[test]
fn s3_operations_ranges_and_health() {
    let tmp = TempDir::new("node");
    let node = Node::start(tmp.path(), "n", "50MiB");
    let aws = Aws::new(&node.endpoint(), &node.access_key, &node.secret_key);
    aws.ok(&["s3", "mb", "s3://frag"]);
    aws.json(&["s3api", "head-bucket", "--bucket", "frag"]);
    let src = tmp.path().join("src");
    write_file(&src, 3 << 20, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://frag/x/../y"]);
    let dst = tmp.path().join("dst");
    aws.ok(&["s3", "cp", "s3://frag/x/../y", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
    // The key is a name, not a path: nothing lands outside the data folder.
    assert!(
        !tmp.path()
            .join("n")
            .join("buckets")
            .join("frag")
            .join("y")
            .exists()
    );

    let part = tmp.path().join("part");
    let got = aws.json(&[
        "s3api",
        "get-object",
        "--bucket",
        "frag",
        "--key",
        "x/../y",
        "--range",
        "bytes=1000-1999",
        part.to_str().unwrap(),
    ]);
    assert_eq!(got["ContentRange"], format!("bytes 1000-1999/{}", 3 << 20));
    assert_eq!(
        std::fs::read(&part).unwrap(),
        std::fs::read(&src).unwrap()[1000..2000]
    );
    let suffix = tmp.path().join("suffix");
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "frag",
        "--key",
        "x/../y",
        "--range",
        "bytes=-10",
        suffix.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&suffix).unwrap(),
        std::fs::read(&src).unwrap()[(3 << 20) - 10..]
    );

    let head = aws.json(&[
        "s3api",
        "head-object",
        "--bucket",
        "frag",
        "--key",
        "x/../y",
    ]);
    assert_eq!(head["ContentLength"], 3 << 20);
    let list = aws.json(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "frag",
        "--prefix",
        "x/",
    ]);
    assert_eq!(list["Contents"][0]["Key"], "x/../y");

    // A body is checked by the CRC32C it is sent with; beside a
    // Content-MD5 (as the gateway sends them) that is its ETag.
    let small = tmp.path().join("small");
    std::fs::write(&small, b"checked by its crc32c").unwrap();
    let crc = tenfold_balancer::node_client::crc32c(b"checked by its crc32c");
    let crc = base64_simd::STANDARD.encode_to_string(crc.to_be_bytes());
    let md5 = md5_digest::Md5::digest(b"checked by its crc32c");
    let put = |key: &str, crc: &str| {
        vec![
            "s3api".to_owned(),
            "put-object".to_owned(),
            "--bucket=frag".to_owned(),
            format!("--key={key}"),
            format!("--body={}", small.display()),
            format!(
                "--content-md5={}",
                base64_simd::STANDARD.encode_to_string(md5)
            ),
            format!("--checksum-crc32-c={crc}"),
        ]
    };
    let args = put("crc", &crc);
    let stored = aws.json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(stored["ETag"], format!("\"{}\"", hex::encode(md5)));
    for (bad, code) in [("AAAAAA==", "BadDigest"), ("not-base64!", "InvalidRequest")] {
        let args = put("bad", bad);
        let err = aws.fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains(code), "{bad}: {err}");
    }
    aws.ok(&["s3", "rm", "s3://frag/crc"]);

    // A recursive rm sends DeleteObjects: small records and a file alike
    // go, a key the request names twice or that is missing is no error.
    let many = tmp.path().join("many");
    std::fs::create_dir_all(&many).unwrap();
    write_file(&many.join("a"), 1000, false);
    write_file(&many.join("b"), 2000, false);
    write_file(&many.join("big"), 300 << 10, false);
    aws.ok(&[
        "s3",
        "cp",
        "--recursive",
        many.to_str().unwrap(),
        "s3://frag/many/",
    ]);
    let deleted = aws.json(&[
        "s3api",
        "delete-objects",
        "--bucket",
        "frag",
        "--delete",
        r#"{"Objects":[{"Key":"many/a"},{"Key":"many/a"},{"Key":"many/none"}]}"#,
    ]);
    assert_eq!(
        deleted["Deleted"].as_array().map(Vec::len),
        Some(3),
        "{deleted}"
    );
    assert!(
        deleted
            .get("Errors")
            .is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)),
        "{deleted}"
    );
    aws.ok(&["s3", "rm", "--recursive", "s3://frag/many/"]);
    let left = aws.ok(&["s3", "ls", "--recursive", "s3://frag/"]);
    assert!(!left.contains("many/"), "{left}");

    let h = health(&node.addr);
    assert_eq!(h["capacity"], 50 << 20);
    let used = h["used"].as_u64().unwrap();
    assert!(((3 << 20)..(3 << 20) + 4096).contains(&used), "used {used}");

    let wrong = Aws::new(&node.endpoint(), &node.access_key, "wrong");
    assert!(
        wrong
            .fails(&["s3", "ls", "s3://frag"])
            .contains("SignatureDoesNotMatch")
    );

    aws.ok(&["s3", "rm", "s3://frag/x/../y"]);
    // The small object's volume records are reclaimed by a merge in the
    // background once nothing live is left.
    assert!(
        eventually(Duration::from_secs(10), || health(&node.addr)["used"] == 0),
        "{}",
        health(&node.addr)
    );
    let err = aws.fails(&[
        "s3api",
        "head-object",
        "--bucket",
        "frag",
        "--key",
        "x/../y",
    ]);
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");
    aws.ok(&["s3", "rb", "s3://frag"]);
}

#[test]
fn refuses_writes_past_capacity() {
    let tmp = TempDir::new("cap");
    let node = Node::start(tmp.path(), "n", "1MiB");
    let aws = Aws::new(&node.endpoint(), &node.access_key, &node.secret_key);
    aws.ok(&["s3", "mb", "s3://cap"]);
    let small = tmp.path().join("small");
    write_file(&small, 600 << 10, false);
    aws.ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "cap",
        "--key",
        "a",
        "--body",
        small.to_str().unwrap(),
    ]);
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "cap",
        "--key",
        "b",
        "--body",
        small.to_str().unwrap(),
    ]);
    assert!(err.contains("InsufficientStorage"), "{err}");
    let listed = aws.json(&["s3api", "list-objects-v2", "--bucket", "cap"]);
    assert_eq!(listed["Contents"].as_array().unwrap().len(), 1);
    assert!(health(&node.addr)["used"].as_u64().unwrap() <= 1 << 20);
}

#[test]
fn a_crash_mid_write_leaves_no_half_object() {
    let tmp = TempDir::new("crash");
    let mut node = Node::start(tmp.path(), "n", "10GiB");
    let aws = Aws::new(&node.endpoint(), &node.access_key, &node.secret_key);
    aws.ok(&["s3", "mb", "s3://crash"]);
    let src = tmp.path().join("src");
    write_file(&src, 300 << 20, true);
    let upload = std::thread::spawn({
        let aws = aws.clone();
        let src = src.clone();
        move || {
            aws.run(&[
                "s3api",
                "put-object",
                "--bucket",
                "crash",
                "--key",
                "big",
                "--body",
                src.to_str().unwrap(),
            ])
        }
    });
    // Kill the node once part of the body is on disk.
    let tmp_dir = node.data.join("tmp");
    let started = eventually(Duration::from_secs(60), || {
        std::fs::read_dir(&tmp_dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false))
            })
            .unwrap_or(false)
    });
    assert!(started, "the upload never reached the disk");
    node.proc.kill();
    let out = upload.join().unwrap();
    assert!(!out.status.success(), "the upload cannot have succeeded");

    // Restart on the same folder and port: no trace of the half write.
    let child = Command::new(bin("tenfold-node"))
        .args([
            "--data",
            node.data.to_str().unwrap(),
            "--listen",
            &node.addr,
            "--capacity",
            "10GiB",
        ])
        .args([
            "--access-key",
            &node.access_key,
            "--secret-key",
            &node.secret_key,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut restarted = Proc(child);
    wait_for_port(&node.addr, &mut restarted.0);
    let listed = aws.json(&["s3api", "list-objects-v2", "--bucket", "crash"]);
    assert!(
        listed
            .get("Contents")
            .is_none_or(|c| c.as_array().unwrap().is_empty()),
        "{listed}"
    );
    assert_eq!(health(&node.addr)["used"], 0);
}

/// `--worker-threads` takes a count of one or more: zero is refused before
/// the node starts, and a node given several request threads serves
/// concurrent small and large writes that all read back.
#[test]
fn worker_threads_are_one_or_more() {
    let tmp = TempDir::new("node-workers");
    let refused = Command::new(bin("tenfold-node"))
        .args(["--data", tmp.path().join("zero").to_str().unwrap()])
        .args([
            "--capacity",
            "1GiB",
            "--access-key",
            "k",
            "--secret-key",
            "s",
        ])
        .args(["--listen", "127.0.0.1:0", "--worker-threads", "0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--worker-threads"), "{said}");
    assert!(
        !tmp.path().join("zero").exists(),
        "a refused node made its folder"
    );

    let node = Node::start_with(
        tmp.path(),
        "n",
        "1GiB",
        &["--worker-threads".into(), "3".into()],
    );
    let aws = Aws::new(&node.endpoint(), &node.access_key, &node.secret_key);
    aws.ok(&["s3", "mb", "s3://workers"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = tests::sdk_client(&node.endpoint(), &node.access_key, &node.secret_key);
    let bodies: Vec<Vec<u8>> = (0..12)
        .map(|i| small_body(&format!("w{i}")).repeat(if i % 4 == 0 { 300 } else { 1 }))
        .collect();
    rt.block_on(async {
        let puts: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let put = client
                    .put_object()
                    .bucket("workers")
                    .key(format!("w{i}"))
                    .body(body.clone().into());
                tokio::spawn(put.send())
            })
            .collect();
        for put in puts {
            put.await.unwrap().expect("PUT");
        }
        for (i, body) in bodies.iter().enumerate() {
            let got = client
                .get_object()
                .bucket("workers")
                .key(format!("w{i}"))
                .send()
                .await
                .expect("GET");
            let bytes = got.body.collect().await.unwrap().into_bytes();
            assert!(bytes[..] == body[..], "w{i} read back other bytes");
        }
    });
}

/// The bytes the crash test stores at `key`: different for every key.
fn small_body(key: &str) -> Vec<u8> {
    let seed = sha2::Sha256::digest(key.as_bytes());
    seed.iter()
        .cycle()
        .take(4000 + usize::from(seed[0]))
        .copied()
        .collect()
}

/// Killed (SIGKILL) while eight writers PUT and DELETE small objects, the
/// node comes back with every acknowledged PUT whole and every
/// acknowledged DELETE gone; what was cut short is there whole or not at
/// all.
#[test]
fn a_crash_during_small_writes_keeps_every_acknowledged_one() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let tmp = TempDir::new("crash-small");
    let mut node = Node::start(tmp.path(), "n", "10GiB");
    let aws = Aws::new(&node.endpoint(), &node.access_key, &node.secret_key);
    aws.ok(&["s3", "mb", "s3://crash"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = tests::sdk_client(&node.endpoint(), &node.access_key, &node.secret_key);
    // key -> Some(true): PUT acknowledged, Some(false): DELETE acknowledged.
    let acked: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, acked, stop) = (client.clone(), Arc::clone(&acked), Arc::clone(&stop));
            rt.spawn(async move {
                for n in 0.. {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let key = format!("w{w}/{n}");
                    let put = client
                        .put_object()
                        .bucket("crash")
                        .key(&key)
                        .body(small_body(&key).into())
                        .send()
                        .await;
                    if put.is_err() {
                        return;
                    }
                    acked.lock().unwrap().insert(key, true);
                    if n % 3 == 2 {
                        let gone = format!("w{w}/{}", n - 1);
                        let del = client
                            .delete_object()
                            .bucket("crash")
                            .key(&gone)
                            .send()
                            .await;
                        if del.is_err() {
                            return;
                        }
                        acked.lock().unwrap().insert(gone, false);
                    }
                }
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(60), || acked.lock().unwrap().len()
            > 300),
        "the writers got nowhere"
    );
    // Writes in flight meet the crash; the SDK may retry them on the
    // restarted node, and what it acknowledges then counts as well.
    node.proc.kill();
    stop.store(true, Ordering::Release);
    node.restart();
    for writer in writers {
        rt.block_on(writer).unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let present: std::collections::BTreeSet<String> =
        node.replicas().into_iter().map(|r| r.key).collect();
    for (key, put) in &acked {
        assert_eq!(present.contains(key), *put, "{key}: acknowledged {put}");
    }
    for key in &present {
        let got = rt
            .block_on(client.get_object().bucket("crash").key(key).send())
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let bytes = rt.block_on(got.body.collect()).unwrap().into_bytes();
        assert_eq!(bytes.as_ref(), small_body(key), "{key}");
    }
}
