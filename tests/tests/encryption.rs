//! Encryption at rest: what the nodes and IPFS hold never contains the
//! plaintext, and master keys are checked and can be rotated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{Cluster, Ipfs, TempDir, overflow_cids, random_master_key, run, sha256_file};

const MARKER: &[u8] = b"TENFOLD-SECRET-MARKER-c0ffee-7d1e";
const WINDOW: usize = 32;

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Files under `dirs` that hold the marker or any 32-byte run of a
/// plaintext whose runs are in `windows`.
fn leaks(dirs: &[&Path], windows: &HashSet<&[u8]>) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        for file in files_under(dir) {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            if bytes.windows(MARKER.len()).any(|w| w == MARKER) {
                found.push(format!("{}: the marker", file.display()));
            } else if bytes.windows(WINDOW).any(|w| windows.contains(w)) {
                found.push(format!("{}: a 32-byte run of plaintext", file.display()));
            }
        }
    }
    found
}

#[test]
fn nothing_readable_leaves_the_gateway_and_master_keys_rotate() {
    let ipfs = Ipfs::start();
    let mut cluster = Cluster::build(3, 1, "700KiB")
        .config("ipfs_api", &ipfs.api)
        .start();
    let aws = cluster.aws();
    let tmp = TempDir::new("encryption");
    aws.ok(&["s3", "mb", "s3://secrets"]);

    // Compressible text full of the marker, and random bytes with it inside.
    let text: Vec<u8> = (0..12_000)
        .flat_map(|i| {
            let mut line = format!("line {i} of the confidential report: ").into_bytes();
            line.extend_from_slice(MARKER);
            line.push(b'\n');
            line
        })
        .collect();
    let mut random: Vec<u8> = (0..(1 << 20)).map(|_| rand::random::<u8>()).collect();
    for at in [0, 1000, 400_000, 1_000_000] {
        random[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let sources = tmp.path().join("sources");
    std::fs::create_dir_all(&sources).unwrap();
    let text_path = sources.join("report.txt");
    let random_path = sources.join("random.bin");
    std::fs::write(&text_path, &text).unwrap();
    std::fs::write(&random_path, &random).unwrap();
    for (path, key) in [(&text_path, "report.txt"), (&random_path, "random.bin")] {
        aws.ok(&[
            "s3",
            "cp",
            path.to_str().unwrap(),
            &format!("s3://secrets/{key}"),
        ]);
    }
    // The nodes took some, IPFS the rest: both tiers are searched.
    assert!(!overflow_cids(&cluster.inspect("secrets", "random.bin")).is_empty());
    assert!(
        cluster
            .nodes
            .iter()
            .all(|(_, n, _)| !n.replicas().is_empty())
    );

    let windows: HashSet<&[u8]> = text.windows(WINDOW).chain(random.windows(WINDOW)).collect();
    // The search finds plaintext where there is some.
    assert_eq!(leaks(&[&sources], &windows).len(), 2);
    let mut stored: Vec<&Path> = cluster
        .nodes
        .iter()
        .map(|(_, n, _)| n.data.as_path())
        .collect();
    stored.push(&ipfs.repo);
    let found = leaks(&stored, &windows);
    assert!(found.is_empty(), "plaintext left the gateway: {found:#?}");

    // Node secrets are sealed in the index: in SQLite's file and its WAL,
    // or in Postgres's rows.
    let index_bytes: Vec<Vec<u8>> = if cluster.index_url.starts_with("postgres") {
        let out = run(Command::new("psql").arg(&cluster.index_url).args([
            "-At",
            "-c",
            "SELECT secret_key FROM nodes",
        ]));
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.lines().all(|l| l.starts_with("tfsealed1:")), "{text}");
        vec![out.stdout]
    } else {
        files_under(cluster.dir.path())
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("index.db"))
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    assert!(!index_bytes.is_empty());
    for (_, node, _) in &cluster.nodes {
        let secret = node.secret_key.as_bytes();
        for bytes in &index_bytes {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "the index holds the secret of {}",
                node.endpoint()
            );
        }
    }

    for (path, key) in [(&text_path, "report.txt"), (&random_path, "random.bin")] {
        let back = tmp.path().join(format!("{key}.back"));
        aws.ok(&[
            "s3",
            "cp",
            &format!("s3://secrets/{key}"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(sha256_file(path), sha256_file(&back), "{key}");
    }
    let range = tmp.path().join("range");
    aws.ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "secrets",
        "--key",
        "random.bin",
        "--range",
        "bytes=399990-400100",
        range.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&range).unwrap(), &random[399_990..=400_100]);
    let old_ids = cluster.inspect("secrets", "random.bin")["master_keys"].clone();
    assert_eq!(old_ids.as_array().map(Vec::len), Some(1), "{old_ids}");

    // A wrong master key: the gateway refuses to start, and says why.
    let config = std::fs::read_to_string(cluster.config_path()).unwrap();
    let old_key = config
        .lines()
        .find_map(|l| l.strip_prefix("master_key = \""))
        .map(|k| k.trim_end_matches('"').to_owned())
        .expect("master_key in the config");
    let new_key = random_master_key();
    let err = cluster
        .restart_gateway(|c| c.replace(&old_key, &new_key))
        .expect_err("started with the wrong master key");
    assert!(
        err.contains("master key") && err.contains(old_ids[0].as_str().unwrap()),
        "{err}"
    );

    // Rotation: the new key for new data, the old one still reads old data.
    cluster
        .restart_gateway(|c| format!("old_master_keys = [\"{old_key}\"]\n{c}"))
        .expect("gateway with a rotated master key");
    let back = tmp.path().join("after-rotation");
    aws.ok(&[
        "s3",
        "cp",
        "s3://secrets/random.bin",
        back.to_str().unwrap(),
    ]);
    assert_eq!(sha256_file(&random_path), sha256_file(&back));
    aws.ok(&[
        "s3",
        "cp",
        text_path.to_str().unwrap(),
        "s3://secrets/new.txt",
    ]);
    let new_ids = cluster.inspect("secrets", "new.txt")["master_keys"].clone();
    assert_eq!(new_ids.as_array().map(Vec::len), Some(1), "{new_ids}");
    assert_ne!(new_ids, old_ids);
}
