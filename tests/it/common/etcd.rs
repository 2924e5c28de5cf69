//! A real etcd (Debian: etcd-server) on loopback for tests: one member, fresh data directory,
//! free ports; stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use tempfile::TempDir;

pub const ETCD: &str = "etcd";

pub struct Etcd {
    pub dir: TempDir,
    /// `http://127.0.0.1:PORT`, the client URL.
    pub url: String,
    /// A client that can talk to it (with the test CA and client certificate under TLS).
    pub http: reqwest::Client,
    child: Child,
}

impl Etcd {
    /// Starts a single-member cluster and returns once `/health` says it is healthy.
    pub async fn start() -> Etcd {
        Self::start_with(None).await
    }

    /// Like [`Etcd::start`], serving HTTPS with a server certificate from a test CA and
    /// requiring client certificates from the same CA (see [`TlsFiles`]).
    pub async fn start_tls() -> (Etcd, TlsFiles) {
        let files = TlsFiles::generate();
        (Self::start_with(Some(&files)).await, files)
    }

    async fn start_with(tls: Option<&TlsFiles>) -> Etcd {
        let mut http = reqwest::Client::builder();
        if let Some(files) = tls {
            let ca = std::fs::read(&files.ca).expect("read the test CA");
            let mut identity = std::fs::read(&files.client_cert).expect("client cert");
            identity.extend(std::fs::read(&files.client_key).expect("client key"));
            http = http
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
                .identity(reqwest::Identity::from_pem(&identity).expect("client identity"));
        }
        let http = http.build().expect("HTTP client");
        let mut failures = Vec::new();
        // A probed free port can be taken before etcd binds it; retry with others.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (client, peer) = (crate::common::free_port(), crate::common::free_port());
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd.log");
            let mut command = Command::new(ETCD);
            if let Some(files) = tls {
                command
                    .arg(format!("--cert-file={}", files.server_cert.display()))
                    .arg(format!("--key-file={}", files.server_key.display()))
                    .arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", files.ca.display()));
            }
            let child = command
                .arg("--name=test")
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={url}"))
                .arg(format!("--advertise-client-urls={url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| {
                    panic!("cannot run {ETCD} ({err}): install Debian's etcd-server")
                });
            let mut etcd = Etcd {
                dir,
                url,
                http: http.clone(),
                child,
            };
            match etcd.wait_healthy(Duration::from_secs(20)).await {
                Ok(()) => return etcd,
                Err(failure) => failures.push(format!("{failure}; log: {}", etcd.log())),
            }
        }
        panic!("etcd did not start: {}", failures.join(" | "));
    }

    /// Polls `/health` (with a deadline) until the member reports itself healthy.
    async fn wait_healthy(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}"));
            }
            if let Ok(resp) = self.http.get(format!("{}/health", self.url)).send().await
                && let Ok(body) = resp.json::<serde_json::Value>().await
                && body["health"] == "true"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} not healthy in time", self.url));
            }
            // Polling interval while waiting for a condition, not a synchronising sleep.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts `key` = `value` through the JSON gateway.
    pub async fn put(&self, key: &str, value: &str) {
        put_at(&self.http, &self.url, key, value).await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

/// Puts `key` = `value` into the etcd at `url` through its JSON gateway.
pub async fn put_at(http: &reqwest::Client, url: &str, key: &str, value: &str) {
    let resp = http
        .post(format!("{url}/v3/kv/put"))
        .json(&serde_json::json!({
            "key": STANDARD.encode(key),
            "value": STANDARD.encode(value),
        }))
        .send()
        .await
        .expect("put");
    assert!(resp.status().is_success(), "put {key}: {}", resp.status());
}

/// POSTs `body` to `path` of the etcd JSON gateway at `url` and returns its answer.
pub async fn gateway(url: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("a JSON answer")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, made with the
/// `openssl` command (Debian's openssl).
pub struct TlsFiles {
    /// Holds the files until the test ends.
    pub _dir: TempDir,
    pub ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (Debian's openssl)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ]);
        ca.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(&ca);
        // etcd's JSON gateway dials the member's gRPC port with the server certificate as its
        // client certificate, so the server certificate needs clientAuth too.
        for (name, usage) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut request = vec!["req"];
            request.extend(ec);
            request.extend(["-keyout", &key, "-out", &csr, "-subj"]);
            let subject = format!("/CN={name}");
            request.push(&subject);
            openssl(&request);
            std::fs::write(path(&ext), usage).expect("extensions file");
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &ext,
            ]);
        }
        TlsFiles {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            _dir: dir,
        }
    }
}
