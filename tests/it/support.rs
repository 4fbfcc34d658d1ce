//! Booting the daemon and the sandbox for a test, and waiting on conditions.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordersync::sandbox::erp::{LineRequest, seed_amusement_catalogue};
use ordersync::sandbox::platforms::shopify::{CostLimits, ShopifyCredentials};
use ordersync::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `f` until it yields `Some`, or panic after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A temporary config directory (a copy of the shipped one), a sandbox and
/// the secrets that connect them.
pub struct TestEnv {
    pub dir: PathBuf,
    pub sandbox: Sandbox,
    pub creds: ShopifyCredentials,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ordersync-it-{tag}-{}-{:x}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The shipped connectors and workflows, copied into `dir`.
pub fn copy_shipped_config(dir: &Path) {
    copy_dir(&repo().join("connectors.d"), &dir.join("connectors.d"));
    copy_dir(&repo().join("workflows"), &dir.join("workflows"));
}

impl TestEnv {
    /// A sandbox whose Shopify allows any request rate, and a connection
    /// that sends at any rate: most tests are about something else.
    pub async fn new(tag: &str) -> TestEnv {
        let mut opts = SandboxOptions::generated();
        opts.shopify_limits = CostLimits { maximum: 1e12, restore_per_second: 1e12 };
        Self::with(tag, opts, "    rate_limit:\n      per_second: 1000000\n      burst: 1000000\n").await
    }

    /// Shopify's real cost limits, and the connector's own rate limit.
    pub async fn with_platform_limits(tag: &str, limits: CostLimits, connection_extra: &str) -> TestEnv {
        let mut opts = SandboxOptions::generated();
        opts.shopify_limits = limits;
        Self::with(tag, opts, connection_extra).await
    }

    async fn with(tag: &str, opts: SandboxOptions, connection_extra: &str) -> TestEnv {
        let dir = temp_dir(tag);
        copy_shipped_config(&dir);
        let creds = opts.shopify.clone();
        let sandbox = Sandbox::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), opts).await.unwrap();
        let today = time::OffsetDateTime::now_utc().date();
        seed_amusement_catalogue(
            &sandbox.erp,
            &(today + time::Duration::days(10)).to_string(),
            &(today + time::Duration::days(60)).to_string(),
        );
        let env = TestEnv { dir, sandbox, creds };
        env.write("secrets/admin-token", "test-admin-token-0123456789");
        env.write("secrets/shopify-token", &env.creds.access_token);
        env.write("secrets/shopify-webhook", &env.creds.webhook_secret);
        let d = env.dir.display();
        env.write(
            "ordersync.yaml",
            &format!(
                "admin_token: file:{d}/secrets/admin-token\nconnections:\n  shopify-main:\n    connector: shopify\n    base_url: {}\n    values:\n      shop: {}\n    secrets:\n      access_token: file:{d}/secrets/shopify-token\n      webhook_secret: file:{d}/secrets/shopify-webhook\n{connection_extra}",
                env.sandbox.base_url("shopify"),
                env.creds.shop
            ),
        );
        env
    }

    /// Replace text in a file of the config copy (it must be there).
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.dir.join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} has no `{from}`");
        std::fs::write(p, text.replace(from, to)).unwrap();
    }

    /// Make the Shopify connector fail fast: short timeouts and backoffs.
    pub fn fast_retries(&self, max_attempts: u32) {
        self.edit("connectors.d/shopify.yaml", "  timeout_ms: 10000", "  timeout_ms: 400");
        self.edit("connectors.d/shopify.yaml", "  max_attempts: 8", &format!("  max_attempts: {max_attempts}"));
        self.edit("connectors.d/shopify.yaml", "  initial_backoff_ms: 500", "  initial_backoff_ms: 10");
        self.edit("connectors.d/shopify.yaml", "  max_backoff_ms: 30000", "  max_backoff_ms: 100");
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn customer(&self, index: usize) -> u64 {
        self.sandbox.erp.customers()[index].id
    }

    pub async fn start_daemon(&self) -> DaemonProcess {
        self.start_daemon_with(&[], false).await
    }

    pub async fn start_daemon_with(&self, extra: &[&str], unprivileged: bool) -> DaemonProcess {
        let d = DaemonProcess::start_with(&self.dir, extra, unprivileged).await;
        self.sandbox.set_webhook_target("shopify", &d.url("/hooks/shopify-orders"));
        self.sandbox.set_topic_target("shopify", "inventory_levels/update", &d.url("/hooks/shopify-stock"));
        d
    }

    /// Another sales channel on the same shop: a connection `name` and its
    /// order workflow `{name}-orders` (webhooks at `/hooks/{name}-orders`).
    pub fn add_channel(&self, name: &str) {
        let d = self.dir.display();
        let mut instance = std::fs::read_to_string(self.dir.join("ordersync.yaml")).unwrap();
        let at = instance.find("connections:\n").unwrap() + "connections:\n".len();
        instance.insert_str(
            at,
            &format!(
                "  {name}:\n    connector: shopify\n    base_url: {}\n    values:\n      shop: {}\n    secrets:\n      access_token: file:{d}/secrets/shopify-token\n      webhook_secret: file:{d}/secrets/shopify-webhook\n    rate_limit:\n      per_second: 1000000\n      burst: 1000000\n",
                self.sandbox.base_url("shopify"),
                self.creds.shop
            ),
        );
        std::fs::write(self.dir.join("ordersync.yaml"), instance).unwrap();
        let wf = std::fs::read_to_string(self.dir.join("workflows/shopify-orders.yaml")).unwrap();
        let wf = wf
            .replace("workflow: shopify-orders", &format!("workflow: {name}-orders"))
            .replace("connection: shopify-main", &format!("connection: {name}"));
        self.write(&format!("workflows/{name}-orders.yaml"), &wf);
    }

    /// Connect the daemon to a simulated platform as `{platform}-main`, at
    /// any request rate (the platform's own limits still answer 429s).
    pub fn connect(&self, platform: &str) {
        let dir = self.dir.clone();
        let mut yaml = self
            .sandbox
            .connection_yaml(platform, &format!("{platform}-main"), &mut |name, value| {
                let p = dir.join("secrets").join(name);
                std::fs::write(&p, value).unwrap();
                format!("file:{}", p.display())
            })
            .unwrap_or_else(|| panic!("the sandbox simulates no `{platform}`"));
        yaml.push_str("    rate_limit:\n      per_second: 1000000\n      burst: 1000000\n");
        let mut instance = std::fs::read_to_string(self.dir.join("ordersync.yaml")).unwrap();
        let at = instance.find("connections:\n").unwrap() + "connections:\n".len();
        instance.insert_str(at, &yaml);
        std::fs::write(self.dir.join("ordersync.yaml"), instance).unwrap();
    }

    /// Append an `inventory:` section to the instance config.
    pub fn inventory(&self, yaml: &str) {
        let mut instance = std::fs::read_to_string(self.dir.join("ordersync.yaml")).unwrap();
        instance.push_str("inventory:\n");
        instance.push_str(yaml);
        std::fs::write(self.dir.join("ordersync.yaml"), instance).unwrap();
    }

    /// Place an order in the sandbox; its webhook goes to the daemon.
    pub async fn order(&self, customer: usize, lines: &[(&str, i64)]) -> (u64, u16) {
        let lines: Vec<LineRequest> = lines.iter().map(|(s, q)| LineRequest { sku: s.to_string(), qty: *q }).collect();
        let (o, status) = self.sandbox.place_order("shopify", self.customer(customer), &lines).await.unwrap();
        (o.id, status)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Keep the directory (config, daemon.log, state) to look into a failure.
        if std::env::var_os("ORDERSYNC_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Run the `ordersync` command against a daemon without blocking the test's
/// runtime (the in-process sandbox must keep answering meanwhile).
pub async fn cli(d: &DaemonProcess, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ordersync"));
    cmd.args(args).args(["--url", &d.url("")]).env("ORDERSYNC_ADMIN_TOKEN", &d.token);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// Shopify's signature of `body` under `secret`.
pub fn shopify_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(ordersync::connector::webhook::hmac_bytes(
        ordersync::config::raw::SignatureAlgorithm::HmacSha256,
        secret.as_bytes(),
        body,
    ))
}

/// POST a Shopify-style `orders/create` delivery signed with `secret`; the status.
pub async fn post_signed(d: &DaemonProcess, path: &str, body: &[u8], secret: &str) -> u16 {
    d.client
        .post(d.url(path))
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Webhook-Id", format!("w-{:x}", rand::random::<u64>()))
        .header("X-Shopify-Hmac-Sha256", shopify_signature(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The real binary, running `ordersync run` on an ephemeral loopback port.
pub struct DaemonProcess {
    child: Child,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub token: String,
}

impl DaemonProcess {
    pub async fn start(dir: &Path) -> DaemonProcess {
        Self::start_with(dir, &[], false).await
    }

    /// Start with extra `run` arguments; `unprivileged` runs it as user
    /// `nobody` when the tests run as root (so file permissions apply to it).
    pub async fn start_with(dir: &Path, extra: &[&str], unprivileged: bool) -> DaemonProcess {
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let as_root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
        let mut cmd = if unprivileged && as_root {
            let _ = Command::new("chmod").args(["-R", "a+rwX"]).arg(dir).status();
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(env!("CARGO_BIN_EXE_ordersync"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_ordersync"))
        };
        let workers: &[&str] = if extra.contains(&"--workers") { &[] } else { &["--workers", "4"] };
        let child = cmd
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(workers)
            .args(extra)
            .arg("--config-dir")
            .arg(dir)
            .arg("--instance")
            .arg(dir.join("ordersync.yaml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "ordersync=debug,info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the ordersync binary starts");
        let mut d = DaemonProcess { child, addr: "127.0.0.1:1".parse().unwrap(), client: reqwest::Client::new(), token: String::new() };
        let addr = wait_until("the daemon's ready file", DEADLINE, || {
            let ready = ready.clone();
            let exited = d.child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    panic!("the daemon exited during start ({status}); see {}", ready.with_file_name("daemon.log").display());
                }
                std::fs::read_to_string(&ready).ok().and_then(|s| s.trim().parse::<SocketAddr>().ok())
            }
        })
        .await;
        d.addr = addr;
        d.token = std::fs::read_to_string(dir.join("secrets/admin-token")).unwrap_or_default().trim().to_string();
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET an admin API path with the token; the status and the JSON body.
    pub async fn api(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Wait until the live config version is at least `v`; the status then.
    pub async fn wait_version(&self, v: u64) -> Value {
        wait_until(&format!("config version {v}"), DEADLINE, || async {
            let s = self.status().await;
            (s["config"]["version"].as_u64().unwrap_or(0) >= v).then_some(s)
        })
        .await
    }

    /// Wait until the last reload was rejected with an error mentioning `text`.
    pub async fn wait_rejected(&self, text: &str) -> Value {
        wait_until(&format!("a rejected reload mentioning `{text}`"), DEADLINE, || async {
            let s = self.status().await;
            let errors = s["config"]["last_errors"].to_string();
            (s["config"]["last_result"] == "error" && errors.contains(text)).then_some(s)
        })
        .await
    }

    pub async fn status(&self) -> Value {
        let (code, body) = self.api("/api/status").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The order once it is decided and its write-back is over.
    pub async fn finished_order(&self, external_id: u64) -> Value {
        self.finished(&format!("shopify-main:{external_id}"), DEADLINE).await
    }

    /// The order `id` (connection-qualified) once it is decided and written back.
    pub async fn finished(&self, id: &str, timeout: Duration) -> Value {
        let path = format!("/api/orders/{id}");
        wait_until(&format!("order {id} to finish"), timeout, || async {
            let (code, body) = self.api(&path).await;
            let o = &body["order"];
            (code == 200 && o["status"] != "received" && o["writeback"] != "pending").then(|| body.clone())
        })
        .await
    }

    /// SIGKILL: the daemon gets no chance to finish anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let status = wait_until("the daemon to exit", DEADLINE, || {
            let s = self.child.try_wait().ok().flatten();
            async move { s }
        })
        .await;
        assert!(status.success(), "the daemon exited with {status}");
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
