//! Several access keys: `tenfold keys …`, buckets owned by the key that
//! created them, `AccessDenied` for everyone else, admin keys, and share
//! links made and revoked over signed HTTP.

use std::process::Command;
use std::time::{Duration, Instant};

use tests::{Aws, Cluster, Curl, TempDir, eventually, run, write_file};

/// Creates an access key with `tenfold keys create` and returns a client
/// signing with it.
fn create_key(cluster: &Cluster, name: &str, admin: bool) -> (Aws, String, String) {
    let mut args = vec!["keys", "create", name, "--json"];
    if admin {
        args.push("--admin");
    }
    let out = cluster.admin(&args);
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let access = key["access_key"].as_str().unwrap().to_owned();
    let secret = key["secret_key"].as_str().unwrap().to_owned();
    assert!(access.len() >= 16 && secret.len() >= 32, "{key}");
    (
        Aws::new(&cluster.endpoint, &access, &secret),
        access,
        secret,
    )
}

/// A signed curl request; returns the status and the body.
fn curl(method: &str, url: &str, access: &str, secret: &str) -> (u16, String) {
    let answer = Curl::new().method(method).signed(access, secret).fetch(url);
    (answer.status, answer.body)
}

/// The status of an unsigned GET.
fn status_of(url: &str) -> u16 {
    Curl::new().save(url, std::path::Path::new("/dev/null"))
}

fn assert_denied(aws: &Aws, args: &[&str]) {
    let err = aws.fails(args);
    assert!(err.contains("AccessDenied"), "{args:?}: {err}");
}

fn buckets(aws: &Aws) -> Vec<String> {
    let out = aws.json(&["s3api", "list-buckets"]);
    out["Buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["Name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn buckets_belong_to_the_key_that_created_them() {
    let cluster = Cluster::start(3, 1, "1GiB");
    let tmp = TempDir::new("keys");
    let admin = cluster.aws();

    // Without the master key no key can be made (its secret is sealed).
    let out = run(Command::new(tests::bin("tenfold")).args([
        "keys",
        "create",
        "nobody",
        "--index-url",
        &cluster.index_url,
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("master key"), "{err}");

    let (alice, alice_key, alice_secret) = create_key(&cluster, "alice", false);
    let (bob, bob_key, bob_secret) = create_key(&cluster, "bob", false);
    let out = cluster.admin(&["keys", "create", "alice"]);
    assert!(!out.status.success(), "a name is taken once");

    let file = tmp.path().join("file");
    write_file(&file, 3 << 20, false);
    let file = file.to_str().unwrap();
    alice.ok(&["s3", "mb", "s3://alice-b"]);
    alice.ok(&["s3", "cp", file, "s3://alice-b/doc"]);
    bob.ok(&["s3", "mb", "s3://bob-b"]);
    bob.ok(&["s3", "cp", file, "s3://bob-b/doc"]);
    admin.ok(&["s3", "mb", "s3://admin-b"]);

    // Each key lists its own buckets; the admin key lists them all.
    assert_eq!(buckets(&alice), ["alice-b"]);
    assert_eq!(buckets(&bob), ["bob-b"]);
    assert_eq!(buckets(&admin), ["admin-b", "alice-b", "bob-b"]);

    // Bob on Alice's bucket: denied, whatever he tries.
    let got = tmp.path().join("got");
    let got = got.to_str().unwrap();
    for args in [
        &["s3api", "list-objects-v2", "--bucket", "alice-b"][..],
        &["s3api", "head-bucket", "--bucket", "alice-b"],
        &[
            "s3api",
            "get-object",
            "--bucket",
            "alice-b",
            "--key",
            "doc",
            got,
        ],
        &[
            "s3api",
            "head-object",
            "--bucket",
            "alice-b",
            "--key",
            "doc",
        ],
        &[
            "s3api",
            "put-object",
            "--bucket",
            "alice-b",
            "--key",
            "doc",
            "--body",
            file,
        ],
        &[
            "s3api",
            "delete-object",
            "--bucket",
            "alice-b",
            "--key",
            "doc",
        ],
        &[
            "s3api",
            "delete-objects",
            "--bucket",
            "alice-b",
            "--delete",
            "Objects=[{Key=doc}]",
        ],
        &["s3api", "delete-bucket", "--bucket", "alice-b"],
        &[
            "s3api",
            "create-multipart-upload",
            "--bucket",
            "alice-b",
            "--key",
            "mp",
        ],
        &["s3api", "list-multipart-uploads", "--bucket", "alice-b"],
        // Copying out of Alice's bucket into his own.
        &[
            "s3api",
            "copy-object",
            "--bucket",
            "bob-b",
            "--key",
            "stolen",
            "--copy-source",
            "alice-b/doc",
        ],
    ] {
        // head-* answers 403 without a body: the CLI says "Forbidden".
        let err = bob.fails(args);
        assert!(
            err.contains("AccessDenied") || err.contains("Forbidden") || err.contains("403"),
            "{args:?}: {err}"
        );
    }
    // A multipart upload Alice started cannot be touched by Bob.
    let upload = alice.json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "alice-b",
        "--key",
        "mp",
    ]);
    let upload_id = upload["UploadId"].as_str().unwrap();
    for args in [
        &[
            "s3api",
            "upload-part",
            "--bucket",
            "alice-b",
            "--key",
            "mp",
            "--part-number",
            "1",
            "--upload-id",
            upload_id,
            "--body",
            file,
        ][..],
        &[
            "s3api",
            "list-parts",
            "--bucket",
            "alice-b",
            "--key",
            "mp",
            "--upload-id",
            upload_id,
        ],
        &[
            "s3api",
            "abort-multipart-upload",
            "--bucket",
            "alice-b",
            "--key",
            "mp",
            "--upload-id",
            upload_id,
        ],
        &[
            "s3api",
            "upload-part-copy",
            "--bucket",
            "bob-b",
            "--key",
            "mp",
            "--part-number",
            "1",
            "--upload-id",
            upload_id,
            "--copy-source",
            "alice-b/doc",
        ],
    ] {
        assert_denied(&bob, args);
    }
    // Alice's bucket name is taken for Bob; for Alice it is hers already.
    let err = bob.fails(&["s3api", "create-bucket", "--bucket", "alice-b"]);
    assert!(err.contains("BucketAlreadyExists"), "{err}");
    let err = alice.fails(&["s3api", "create-bucket", "--bucket", "alice-b"]);
    assert!(err.contains("BucketAlreadyOwnedByYou"), "{err}");
    // Nothing of Alice's changed, and nothing leaked into Bob's bucket.
    alice.ok(&["s3", "cp", "s3://alice-b/doc", got]);
    assert_eq!(
        tests::sha256_file(std::path::Path::new(got)),
        tests::sha256_file(std::path::Path::new(file))
    );
    let listed = bob.json(&["s3api", "list-objects-v2", "--bucket", "bob-b"]);
    assert_eq!(
        listed["Contents"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // The admin key reaches everything; so does a key created --admin.
    admin.ok(&["s3", "cp", "s3://alice-b/doc", got]);
    let (ops, _, _) = create_key(&cluster, "ops", true);
    assert_eq!(buckets(&ops), ["admin-b", "alice-b", "bob-b"]);
    ops.ok(&["s3", "cp", "s3://bob-b/doc", got]);
    // A plain key cannot reach the admin's bucket either.
    assert_denied(&alice, &["s3api", "list-objects-v2", "--bucket", "admin-b"]);

    // Zips and share links follow ownership.
    let zip = |bucket: &str| {
        format!(
            "{}/{bucket}?prefix=&x-tenfold-zip=1",
            cluster.endpoint.trim_end_matches('/')
        )
    };
    assert_eq!(curl("GET", &zip("alice-b"), &bob_key, &bob_secret).0, 403);
    assert_eq!(
        curl("GET", &zip("alice-b"), &alice_key, &alice_secret).0,
        200
    );
    let make_share = format!(
        "{}/alice-b?expires=1h&prefix=doc&x-tenfold-share=1",
        cluster.endpoint
    );
    let (status, body) = curl("POST", &make_share, &bob_key, &bob_secret);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("AccessDenied"), "{body}");
    let (status, link) = curl("POST", &make_share, &alice_key, &alice_secret);
    assert_eq!(status, 200, "{link}");
    let link = link.trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/_share/", cluster.endpoint)),
        "{link}"
    );
    let page = Curl::new().fetch(&link);
    assert!(page.status == 200 && page.body.contains("doc"), "{page:?}");
    // Bob cannot revoke it through his bucket nor through hers.
    let revoke = |bucket: &str| {
        format!(
            "{}/{bucket}?link={}&x-tenfold-share=1",
            cluster.endpoint,
            urlencoding::encode(&link)
        )
    };
    assert_eq!(
        curl("DELETE", &revoke("bob-b"), &bob_key, &bob_secret).0,
        400
    );
    assert_eq!(
        curl("DELETE", &revoke("alice-b"), &bob_key, &bob_secret).0,
        403
    );
    assert_eq!(status_of(&link), 200, "still open");
    assert_eq!(
        curl("DELETE", &revoke("alice-b"), &alice_key, &alice_secret).0,
        204
    );
    assert_eq!(status_of(&link), 403, "revoked");

    // `keys list` shows names, ids and bucket counts, never secrets; the
    // index file holds no secret in clear.
    let out = cluster.admin(&["keys", "list", "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let keys: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<_> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["buckets"].as_i64().unwrap()))
        .collect();
    assert_eq!(names, [("alice", 1), ("bob", 1), ("ops", 0)]);
    assert!(!text.contains(&alice_secret) && !text.contains(&bob_secret));
    for file in std::fs::read_dir(cluster.dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.to_string_lossy().contains("index.db") {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [&alice_secret, &bob_secret] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds a secret",
                    path.display()
                );
            }
        }
    }

    // A deleted key is refused within the second the gateway trusts what
    // it read of a key; its bucket stays, for admin keys.
    let out = cluster.admin(&["keys", "delete", "bob"]);
    assert!(out.status.success());
    let deleted = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || !bob
            .run(&["s3", "ls"])
            .status
            .success()),
        "bob's deleted key still works after {:?}",
        deleted.elapsed()
    );
    let err = bob.fails(&["s3", "ls"]);
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    admin.ok(&["s3", "cp", "s3://bob-b/doc", got]);
    // A wrong secret for a known key is a bad signature.
    let wrong = Aws::new(&cluster.endpoint, &alice_key, "not-the-secret");
    let err = wrong.fails(&["s3", "ls"]);
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!cluster.gateway_log().contains("panicked"));

    // The gateway's request lines name the key that signed, by its name.
    let log = cluster.gateway_log();
    let answered: Vec<&str> = log.lines().filter(|l| l.contains("answered")).collect();
    assert!(
        answered.iter().any(|l| l.contains("key=\"alice\"")),
        "no request line names alice"
    );
    assert!(
        !answered.iter().any(|l| l.contains(alice_key.as_str())),
        "a request line shows alice's key id instead of her name"
    );
}
