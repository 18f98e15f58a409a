//! HTTPS: the gateway and the nodes serve certificates of a private CA, and
//! the balancer verifies the nodes' certificates (and refuses them until it
//! is told to trust that CA).

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{Cluster, Curl, TempDir, assert_placements, run, sha256_file, write_file};

/// A private CA and a server certificate for 127.0.0.1 signed by it (ECDSA
/// P-256), made with the `openssl` CLI: `(ca.pem, cert.pem, key.pem)`.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = run(Command::new("openssl").args(args));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                &path("ca.key"),
                "-out",
                &path("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=Tenfold test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &path("key.pem"),
                "-out",
                &path("req.csr"),
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("req.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("cert.pem"),
        "-days",
        "2",
        "-extfile",
        &path("ext.cnf"),
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn https_gateway_and_nodes_with_a_private_ca() {
    let certs = TempDir::new("certs");
    let (ca, cert, key) = private_ca(certs.path());
    let (ca, cert, key) = (
        ca.to_str().unwrap().to_owned(),
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    );
    // The gateway serves HTTPS but does not trust the nodes' CA yet.
    let node_args = vec![
        "--tls-cert".to_owned(),
        cert.clone(),
        "--tls-key".to_owned(),
        key.clone(),
    ];
    let mut cluster = Cluster::build(3, 1, "1GiB")
        .config("tls_cert", &cert)
        .config("tls_key", &key)
        .node_args(|_, _| node_args.clone())
        .start();
    assert!(cluster.endpoint.starts_with("https://"));
    let aws = cluster.aws();
    let tmp = TempDir::new("tls");
    let src = tmp.path().join("src");
    write_file(&src, 5 << 20, false);
    let src = src.to_str().unwrap();

    // The nodes answer HTTPS with the CA's certificate (curl verifies it).
    let (_, node, _) = &cluster.nodes[0];
    assert!(node.endpoint().starts_with("https://"));
    let answer = Curl::new()
        .args(&["--cacert", &ca])
        .fetch(&format!("{}/health", node.endpoint()));
    assert_eq!(answer.status, 200, "node /health over verified TLS");
    // Plain HTTP to a TLS listener gets no HTTP answer.
    let status = Curl::new().save(
        &cluster.endpoint.replace("https://", "http://"),
        std::path::Path::new("/dev/null"),
    );
    assert_eq!(status, 0, "an HTTP answer from a TLS listener");

    // A client that does not trust the CA refuses the gateway.
    let err = aws.fails(&["s3", "mb", "s3://secure"]);
    assert!(err.contains("SSL") || err.contains("certificate"), "{err}");
    aws.ok(&["--ca-bundle", &ca, "s3", "mb", "s3://secure"]);
    // The balancer does not trust the nodes' CA: no node takes a fragment,
    // and the write is refused as with unreachable nodes (a 503).
    let err = aws.fails(&["--ca-bundle", &ca, "s3", "cp", src, "s3://secure/obj"]);
    assert!(err.contains("ServiceUnavailable"), "{err}");
    let log = cluster.gateway_log();
    assert!(
        log.contains("certificate") || log.contains("UnknownIssuer"),
        "the log names the certificate problem"
    );
    assert!(
        cluster
            .nodes
            .iter()
            .all(|(_, n, _)| n.replicas().is_empty())
    );

    // Told to trust the private CA, it stores and reads over HTTPS.
    cluster
        .restart_gateway(|text| format!("node_ca_file = \"{ca}\"\n{text}"))
        .unwrap();
    aws.ok(&["--ca-bundle", &ca, "s3", "cp", src, "s3://secure/obj"]);
    let back = tmp.path().join("back");
    aws.ok(&[
        "--ca-bundle",
        &ca,
        "s3",
        "cp",
        "s3://secure/obj",
        back.to_str().unwrap(),
    ]);
    assert_eq!(sha256_file(&back), sha256_file(Path::new(src)));
    assert_placements(&cluster.inspect("secure", "obj"), 3, 1);

    // A CA file that holds no certificate stops the gateway at start.
    std::fs::write(tmp.path().join("junk.pem"), "not a certificate\n").unwrap();
    let junk = tmp.path().join("junk.pem");
    let err = cluster
        .restart_gateway(|text| text.replace(&ca, junk.to_str().unwrap()))
        .unwrap_err();
    assert!(err.contains("node_ca_file"), "{err}");
}
