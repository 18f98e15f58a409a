//! Hostile and out-of-range requests: each gets the S3 error a client
//! expects, and no stored data changes.

use tests::{Cluster, Curl, TempDir, sha256_file, write_file};

#[test]
fn malformed_and_out_of_range_requests() {
    let cluster = Cluster::start(3, 1, "2GiB");
    let aws = cluster.aws();
    let tmp = TempDir::new("bad");
    aws.ok(&["s3", "mb", "s3://bad"]);
    let src = tmp.path().join("src");
    write_file(&src, 100_000, false);
    aws.ok(&["s3", "cp", src.to_str().unwrap(), "s3://bad/keep"]);

    // (Malformed XML bodies are sent signed by the boto3 suite.)
    let upload = aws.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "bad",
        "--key",
        "mp",
    ]);
    let id = upload["UploadId"].as_str().unwrap().to_owned();

    // Part numbers out of range and wrong part lists.
    for n in ["0", "10001"] {
        let err = aws.fails(&[
            "s3api",
            "upload-part",
            "--bucket",
            "bad",
            "--key",
            "mp",
            "--upload-id",
            &id,
            "--part-number",
            n,
            "--body",
            src.to_str().unwrap(),
        ]);
        assert!(err.contains("InvalidArgument"), "{n}: {err}");
    }
    let list = r#"{"Parts":[{"PartNumber":1,"ETag":"\"00000000000000000000000000000000\""}]}"#;
    let err = aws.fails(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "bad",
        "--key",
        "mp",
        "--upload-id",
        &id,
        "--multipart-upload",
        list,
    ]);
    assert!(err.contains("InvalidPart"), "{err}");
    let err = aws.fails(&[
        "s3api",
        "upload-part",
        "--bucket",
        "bad",
        "--key",
        "mp",
        "--upload-id",
        "no-such-upload",
        "--part-number",
        "1",
        "--body",
        src.to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchUpload"), "{err}");

    // Ranges past the end, invalid names, over-long keys.
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "bad",
        "--key",
        "keep",
        "--range",
        "bytes=200000-300000",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert!(err.contains("InvalidRange"), "{err}");
    for name in [
        "ab",
        "UPPER",
        "has_underscore",
        "trailing-dot.",
        &"x".repeat(64),
    ] {
        let err = aws.fails(&["s3api", "create-bucket", "--bucket", name]);
        assert!(err.contains("InvalidBucketName"), "{name}: {err}");
    }
    let long = "k".repeat(1025);
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "bad",
        "--key",
        &long,
        "--body",
        src.to_str().unwrap(),
    ]);
    assert!(err.contains("KeyTooLongError"), "{err}");
    let err = aws.fails(&[
        "s3api",
        "get-object",
        "--bucket",
        "bad",
        "--key",
        "../../etc/passwd",
        tmp.path().join("p").to_str().unwrap(),
    ]);
    assert!(err.contains("NoSuchKey"), "{err}");
    // Unsigned and wrongly signed requests are refused.
    let status = Curl::new().save(
        &format!("{}/bad/keep", cluster.endpoint),
        std::path::Path::new("/dev/null"),
    );
    assert_eq!(status, 403);

    // None of it changed what is stored.
    let dst = tmp.path().join("dst");
    aws.ok(&["s3", "cp", "s3://bad/keep", dst.to_str().unwrap()]);
    assert_eq!(sha256_file(&src), sha256_file(&dst));
    let listed = aws.ok(&["s3", "ls", "s3://bad/"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let log = cluster.gateway_log();
    assert!(!log.contains("panicked"), "the gateway panicked");
}

/// A presigned PUT of `bucket/key` (what a browser upload uses) over a raw
/// socket: headers announcing `length` bytes, then `sent` bytes, then
/// nothing, with the socket left open. Returns the answer, read until its
/// error XML is complete, and how long it took once the bytes were sent.
fn raw_presigned_put(
    cluster: &Cluster,
    bucket: &str,
    key: &str,
    length: u64,
    sent: &[u8],
) -> (String, std::time::Duration) {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
    let presigned = rt
        .block_on(client.put_object().bucket(bucket).key(key).presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap(),
        ))
        .unwrap();
    let addr = cluster.endpoint.trim_start_matches("http://");
    let uri = presigned.uri();
    let path_and_query = &uri[uri.find(addr).unwrap() + addr.len()..];
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "PUT {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    conn.write_all(sent).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("</Error>") {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer after {:?}: {e}", started.elapsed()),
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// A presigned PUT (what a browser upload uses) that announces 1 MiB, sends
/// 300 KB and then nothing, on a gateway that gives clients 2 s: the
/// gateway answers `RequestTimeout` without waiting for the client, stores
/// nothing, and keeps serving.
#[test]
fn a_stalled_body_times_out_and_leaves_nothing_behind() {
    use std::time::Duration;

    let cluster = Cluster::build(3, 1, "1GiB")
        .config("client_timeout", "2s")
        .start();
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://stall"]);
    let (answer, took) = raw_presigned_put(&cluster, "stall", "stalled", 1 << 20, &[7u8; 300_000]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>RequestTimeout</Code>"), "{answer}");
    assert!(took < Duration::from_secs(15), "answered after {took:?}");

    let listed = aws.ok(&["s3", "ls", "s3://stall/"]);
    assert!(listed.trim().is_empty(), "{listed}");
    assert!(
        cluster
            .nodes
            .iter()
            .all(|(_, n, _)| n.replicas().is_empty())
    );
    aws.ok(&["s3", "ls", "s3://stall/"]);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// The error code of a failed SDK call.
fn sdk_error<E, R>(result: Result<R, aws_sdk_s3::error::SdkError<E>>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let err = result.expect_err("the request was accepted");
    err.code().map_or_else(|| format!("{err:?}"), str::to_owned)
}

/// Size limits answer the S3 errors clients expect; requests signed 20
/// minutes ago (a replay) and expired presigned URLs are refused, by the
/// gateway and by a storage node alike.
#[test]
fn size_limits_replays_and_expired_urls() {
    use std::time::{Duration, SystemTime};

    use aws_sdk_s3::presigning::PresigningConfig;

    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://limits"]);
    let big_meta = format!("big={}", "m".repeat(2100));
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "limits",
        "--key",
        "m",
        "--metadata",
        &big_meta,
    ]);
    assert!(err.contains("MetadataTooLarge"), "{err}");
    let err = aws.fails(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "limits",
        "--key",
        "m",
        "--metadata",
        &big_meta,
    ]);
    assert!(err.contains("MetadataTooLarge"), "{err}");

    // Headers past 8 KiB: RequestHeaderSectionTooLarge, on the gateway and
    // on a node (signed or not, the size is checked first); a head past
    // what the server buffers gets a bare 431.
    for (endpoint, size, expected) in [
        (cluster.endpoint.clone(), 9000, 400),
        (cluster.nodes[0].1.endpoint(), 9000, 400),
        (cluster.endpoint.clone(), 70_000, 431),
    ] {
        let answer = Curl::new()
            .header(&format!("x-amz-meta-pad: {}", "p".repeat(size)))
            .signed(tests::ACCESS_KEY, tests::SECRET_KEY)
            .fetch(&format!("{endpoint}/limits/h"));
        assert_eq!(answer.status, expected, "{size}: {answer:?}");
        if expected == 400 {
            assert!(
                answer
                    .body
                    .contains("<Code>RequestHeaderSectionTooLarge</Code>"),
                "{answer:?}"
            );
        }
    }

    // A PUT announcing 6 GiB is refused before a byte of it is read.
    let (answer, _) = raw_presigned_put(&cluster, "limits", "huge", 6 << 30, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");

    // Replays and expired URLs, on the gateway and on a node.
    let (_, node, _) = &cluster.nodes[0];
    let twenty_minutes_ago = SystemTime::now() - Duration::from_secs(20 * 60);
    for (endpoint, key, secret, bucket) in [
        (
            cluster.endpoint.clone(),
            tests::ACCESS_KEY,
            tests::SECRET_KEY,
            "limits",
        ),
        (
            node.endpoint(),
            node.access_key.as_str(),
            node.secret_key.as_str(),
            "tenfold",
        ),
    ] {
        // A fresh client each time: the SDK learns the server's clock from a
        // refusal and would date its next request right.
        let old = || tests::sdk_client_at(&endpoint, key, secret, Some(twenty_minutes_ago));
        let code = sdk_error(rt.block_on(old().list_objects_v2().bucket(bucket).send()));
        assert_eq!(code, "RequestTimeTooSkewed", "{endpoint}");
        let code = sdk_error(
            rt.block_on(
                old()
                    .put_object()
                    .bucket(bucket)
                    .key("replayed")
                    .body(b"x".to_vec().into())
                    .send(),
            ),
        );
        assert_eq!(code, "RequestTimeTooSkewed", "{endpoint}");

        let client = tests::sdk_client(&endpoint, key, secret);
        let url = rt
            .block_on(
                client
                    .get_object()
                    .bucket(bucket)
                    .key("anything")
                    .presigned(PresigningConfig::expires_in(Duration::from_secs(1)).unwrap()),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        let answer = Curl::new().fetch(url.uri());
        assert!(
            answer.status == 403 && answer.body.contains("AccessDenied"),
            "{endpoint}: {answer:?}"
        );
    }
    let listed = aws.ok(&["s3", "ls", "s3://limits/"]);
    assert!(listed.trim().is_empty(), "{listed}");
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// Decodes `%XX` escapes (and `+` as a space, as S3 writes it).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("hex escape"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8 key")
}

/// Keys that look like paths out of a folder, NUL bytes and other odd
/// characters are just keys: stored and read back exactly, listed as they
/// are, and never a file outside a node's data folder (nodes name files by
/// the hex of the key). A path that is not UTF-8 gets a client error.
#[test]
fn hostile_keys_stay_keys() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let aws = cluster.aws();
    aws.ok(&["s3", "mb", "s3://hostile"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = tests::sdk_client(&cluster.endpoint, tests::ACCESS_KEY, tests::SECRET_KEY);
    let keys = [
        "../../escape",
        "/etc/passwd",
        "a/../../../b",
        "nul\u{0}byte",
        "dot/./segment/.",
        "back\\slash\\..\\..",
        "ümlaut/日本/🙂",
        "%2e%2e/percent",
        "plus+and space&amp;<tag>",
    ];
    // Postgres text cannot hold a NUL: there, such a key is refused (400),
    // never a 5xx.
    let postgres = std::env::var_os("TENFOLD_TEST_PG").is_some();
    let keys: Vec<&str> = keys
        .into_iter()
        .filter(|key| {
            if !(postgres && key.contains('\0')) {
                return true;
            }
            let err = rt
                .block_on(
                    client
                        .put_object()
                        .bucket("hostile")
                        .key(*key)
                        .body(b"x".to_vec().into())
                        .send(),
                )
                .expect_err("a NUL key on Postgres");
            assert_eq!(
                err.raw_response().map(|r| r.status().as_u16()),
                Some(400),
                "{err:?}"
            );
            false
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let body = format!("body of key {i}");
        rt.block_on(
            client
                .put_object()
                .bucket("hostile")
                .key(*key)
                .body(body.clone().into_bytes().into())
                .send(),
        )
        .unwrap_or_else(|e| panic!("PUT {key:?}: {e:?}"));
        let got = rt
            .block_on(client.get_object().bucket("hostile").key(*key).send())
            .unwrap_or_else(|e| panic!("GET {key:?}: {e:?}"));
        let bytes = rt.block_on(got.body.collect()).unwrap().into_bytes();
        assert_eq!(bytes, body.as_bytes(), "{key:?}");
    }
    // A NUL cannot be written in XML 1.0: as S3 says, list such keys with
    // encoding-type=url.
    let listed = rt
        .block_on(
            client
                .list_objects_v2()
                .bucket("hostile")
                .encoding_type(aws_sdk_s3::types::EncodingType::Url)
                .send(),
        )
        .unwrap();
    let decoded: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .map(percent_decode)
        .collect();
    let mut names: Vec<&str> = decoded.iter().map(String::as_str).collect();
    names.sort_unstable();
    let mut want = keys.clone();
    want.sort_unstable();
    assert_eq!(names, want);
    // botocore asks for encoding-type=url and decodes what it gets.
    let listed = aws.json(&["s3api", "list-objects-v2", "--bucket", "hostile"]);
    let mut names: Vec<&str> = listed["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["Key"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, want);

    // Every fragment is a key the nodes list, and nothing was written
    // outside their data folders.
    for (_, node, _) in &cluster.nodes {
        for replica in node.replicas() {
            assert!(!replica.key.is_empty());
        }
    }
    assert!(!cluster.dir.path().join("escape").exists());
    assert!(!cluster.dir.path().parent().unwrap().join("escape").exists());

    // A path that is not UTF-8, signed: a client error, not a 500.
    let answer = Curl::new()
        .signed(tests::ACCESS_KEY, tests::SECRET_KEY)
        .fetch(&format!("{}/hostile/bad%FF%FEkey", cluster.endpoint));
    assert!((400..500).contains(&answer.status), "{answer:?}");
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// Sends `head` (a request line and headers announcing a large body) to
/// `addr`, then body bytes until the server answers; returns the answer's
/// status line and how many body bytes went out before it came.
fn upload_until_answered(addr: &str, head: &str) -> (String, u64) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let mut writer = conn.try_clone().unwrap();
    let counter = Arc::clone(&sent);
    // Up to 1 GiB, until the server closes the connection.
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b'z'; 64 << 10];
        for _ in 0..(1 << 30) / chunk.len() {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let mut status = String::new();
    BufReader::new(&conn).read_line(&mut status).unwrap();
    let sent_before_answer = sent.load(Ordering::Relaxed);
    let _ = conn.shutdown(std::net::Shutdown::Both);
    feeder.join().unwrap();
    (status.trim().to_owned(), sent_before_answer)
}

/// Anonymous uploads announcing 1 GiB — a browser-style form POST, the same
/// with a made-up `Authorization` header, and an unsigned PUT — are refused
/// by the gateway and by a node with `AccessDenied` before their body is
/// read: the answer comes while almost all of it is unsent, and neither
/// process's peak memory grows by more than 64 MiB.
#[test]
fn anonymous_uploads_are_refused_before_their_body_is_read() {
    let cluster = Cluster::start(3, 1, "1GiB");
    cluster.aws().ok(&["s3", "mb", "s3://anon"]);
    let gateway_addr = cluster.endpoint.trim_start_matches("http://").to_owned();
    let node = &cluster.nodes[0].1;
    let targets = [
        (
            "gateway",
            gateway_addr.as_str(),
            cluster.gateway.0.id(),
            "/anon",
        ),
        ("node", node.addr.as_str(), node.proc.0.id(), "/tenfold"),
    ];
    let length = 1u64 << 30;
    for (who, addr, pid, bucket) in targets {
        let before = tests::peak_rss_kib(pid);
        let form = "multipart/form-data; boundary=----tenfold";
        for (method, path, extra) in [
            (
                "POST",
                bucket.to_owned(),
                format!("Content-Type: {form}\r\n"),
            ),
            (
                "POST",
                bucket.to_owned(),
                format!("Content-Type: {form}\r\nAuthorization: AWS4-HMAC-SHA256 made-up\r\n"),
            ),
            ("PUT", format!("{bucket}/key"), String::new()),
        ] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {length}\r\n\r\n\
                 ------tenfold\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nx\r\n\
                 ------tenfold\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
            );
            let (status, sent) = upload_until_answered(addr, &head);
            assert!(
                status.starts_with("HTTP/1.1 403"),
                "{who} {method}: {status}"
            );
            assert!(
                sent < 64 << 20,
                "{who} {method}: answered only after {sent} body bytes"
            );
        }
        let after = tests::peak_rss_kib(pid);
        assert!(
            after.saturating_sub(before) < 64 << 10,
            "{who}: peak RSS grew from {before} to {after} KiB"
        );
    }
    // Both still serve.
    cluster.aws().ok(&["s3", "ls", "s3://anon"]);
    assert!(!cluster.gateway_log().contains("panicked"));
}

/// An error body names its request, with the same id as its
/// `x-amz-request-id` header: errors of the S3 layer (a missing signature)
/// and of the gateway (a missing key) alike.
#[test]
fn error_bodies_carry_the_request_id() {
    let cluster = Cluster::start(3, 1, "2GiB");
    cluster.aws().ok(&["s3", "mb", "s3://ids"]);
    let url = format!("{}/ids/missing", cluster.endpoint);
    for (curl, code) in [
        (Curl::new(), "AccessDenied"),
        (
            Curl::new().signed(tests::ACCESS_KEY, tests::SECRET_KEY),
            "NoSuchKey",
        ),
    ] {
        let answer = curl.args(&["-i"]).fetch(&url);
        let id = answer
            .body
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-request-id: "))
            .expect("a request id header")
            .trim();
        assert!(
            answer.body.contains(&format!("<Code>{code}</Code>"))
                && answer
                    .body
                    .contains(&format!("<RequestId>{id}</RequestId></Error>")),
            "{}",
            answer.body
        );
    }
}
