//! The whole agent life cycle against the fake conductor: lookup, auto-TLS, serving,
//! heartbeats, inspection before lookup, the masked-token lock-out, lookup exhaustion.
//!
//! The inventory is this machine's real one, read-only; the device allow-list matches
//! nothing, so no disk is ever visible, let alone written.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::fake_conductor::{lookup_answer, FakeConductor, Reply, Route, NODE_UUID, TOKEN};
use common::{free_port, test_config};
use ira::agent::{run_with, AgentError, RunPolicy};
use ira::blockdev::AllowList;
use ira::config::Config;
use ira::inventory::InventoryOptions;
use ira::ironic::{HeartbeatPolicy, InspectionPolicy, LookupPolicy};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

fn fast_policy(config: &Config) -> RunPolicy {
    RunPolicy {
        nic_wait: Duration::ZERO,
        nic_poll: Duration::from_millis(10),
        lookup: LookupPolicy {
            timeout: config.lookup_timeout,
            interval: Duration::from_millis(1),
            backoff_unit: Duration::from_millis(1),
            backoff_max: Duration::from_millis(10),
            conflict_pauses: vec![Duration::from_millis(5)],
        },
        heartbeat: HeartbeatPolicy {
            timeout_unit: Duration::from_millis(1),
            error_base: Duration::from_millis(20),
            min_gap: Duration::from_millis(50),
            wake_every: Duration::from_millis(20),
            ..HeartbeatPolicy::default()
        },
        inspection: InspectionPolicy {
            attempts: 3,
            multiplier: Duration::from_millis(1),
            min_wait: Duration::from_millis(5),
            max_wait: Duration::from_millis(10),
            jitter: 0.5,
        },
        dhcp_poll: Duration::from_millis(10),
        shutdown_grace: Duration::from_secs(5),
        mdns: None,
    }
}

/// Config for an agent listening on a fresh port of 127.0.0.1.
fn agent_config(fake: &FakeConductor) -> (Config, u16) {
    let port = free_port();
    let mut config = test_config(vec![fake.url()]);
    config.listen_host = Some(IpAddr::from([127, 0, 0, 1]));
    config.listen_port = port;
    config.advertise_port = port;
    (config, port)
}

/// Starts the agent; dropping or sending on the returned sender stops it.
fn start(config: Config) -> (oneshot::Sender<()>, JoinHandle<Result<(), AgentError>>) {
    let policy = fast_policy(&config);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with(config, policy, async {
        let _ = rx.await;
    }));
    (tx, task)
}

async fn stop(tx: oneshot::Sender<()>, task: JoinHandle<Result<(), AgentError>>) {
    let _ = tx.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("agent stops on request")
        .expect("agent task");
    result.expect("agent ends cleanly");
}

/// The MAC list this machine's inventory yields (what lookup must send).
fn machine_macs() -> String {
    let inv = ira::inventory::collect(&InventoryOptions {
        root: "/".into(),
        allowlist: AllowList::new(vec!["/dev/ira-test-none".into()]),
        bootif: None,
        skip_bmc_detect: false,
        lldp_timeout: None,
    })
    .unwrap();
    inv.interfaces
        .iter()
        .map(|i| i.mac_address.clone())
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// A client that trusts only `pem`, with the given TLS versions.
fn tls_client(
    pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> reqwest::Client {
    let config = common::tls::client_config(pem, versions);
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .build()
        .unwrap()
}

/// A client for plain HTTP (reqwest needs a TLS configuration even then).
fn plain_client() -> reqwest::Client {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_looks_up_heartbeats_and_serves_over_auto_tls() {
    let fake = FakeConductor::start().await;
    let (config, port) = agent_config(&fake);
    let (tx, task) = start(config);

    let hb = fake.wait_for(Route::Heartbeat, 1, WAIT).await.remove(0);
    let lookups = fake.requests_to(Route::Lookup);
    assert_eq!(lookups.len(), 1);
    let l = &lookups[0];
    assert_eq!(l.param("addresses"), Some(machine_macs()));
    assert_eq!(l.param("node_uuid"), None);
    assert_eq!(l.header("x-openstack-ironic-api-version"), Some("1.62"));
    // Discovery came first, the heartbeat only after the lookup.
    assert_eq!(fake.requests()[0].path, "/");
    assert!(hb.at > l.at);

    assert_eq!(hb.path, format!("/v1/heartbeat/{NODE_UUID}"));
    assert_eq!(hb.header("x-openstack-ironic-api-version"), Some("1.68"));
    let body = hb.body.clone().unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "agent_token",
            "agent_verify_ca",
            "agent_version",
            "callback_url"
        ]
    );
    assert_eq!(body["callback_url"], format!("https://127.0.0.1:{port}"));
    assert_eq!(body["agent_token"], TOKEN);
    assert_eq!(body["agent_version"], ira::AGENT_VERSION);
    let pem = body["agent_verify_ca"].as_str().unwrap().to_owned();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    // The conductor's view: verify the agent with the certificate it sent (IP SAN).
    let client = tls_client(&pem, &[&rustls::version::TLS13]);
    let base = format!("https://127.0.0.1:{port}");
    let node = lookup_answer(Some(TOKEN), 300)["node"].clone();
    let resp = client
        .post(format!("{base}/v1/commands/?wait=true&agent_token={TOKEN}"))
        .json(&json!({"name": "deploy.get_deploy_steps", "params": {"node": node, "ports": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let result: Value = resp.json().await.unwrap();
    assert_eq!(result["command_name"], "get_deploy_steps");
    assert_eq!(result["command_status"], "SUCCEEDED", "{result}");
    assert!(
        result["command_result"]["deploy_steps"].is_object(),
        "{result}"
    );
    assert!(
        result["command_result"]["hardware_manager_version"].is_object(),
        "{result}"
    );

    let denied = client
        .get(format!("{base}/v1/commands/?agent_token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    // Lookup said tls_min_version 1.3: a TLS 1.2 client is refused.
    let old = tls_client(&pem, &[&rustls::version::TLS12]);
    assert!(old.get(format!("{base}/v1/status")).send().await.is_err());

    // Heartbeats go on, with the same certificate every time.
    let hbs = fake.wait_for(Route::Heartbeat, 2, WAIT).await;
    assert_eq!(
        hbs[1].body.as_ref().unwrap()["agent_verify_ca"],
        pem.as_str()
    );

    stop(tx, task).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inspects_first_then_serves_plain_http() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Inspection,
        Reply::Json(202, json!({"uuid": NODE_UUID})),
    );
    let (mut config, port) = agent_config(&fake);
    config.enable_auto_tls = false;
    config.inspection_callback_url = Some(format!("{}/v1/continue_inspection", fake.url()));
    config.global_request_id = Some("req-e2e".into());
    let (tx, task) = start(config);

    let hb = fake.wait_for(Route::Heartbeat, 1, WAIT).await.remove(0);
    let insp = fake.requests_to(Route::Inspection);
    assert_eq!(insp.len(), 1);
    let payload = insp[0].body.clone().unwrap();
    assert!(payload["inventory"]["interfaces"].is_array());
    assert_eq!(payload["error"], Value::Null);
    assert_eq!(payload["root_disk"], Value::Null, "no disk is visible");
    assert!(payload["configuration"]["managers"]
        .as_array()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(insp[0].header("x-openstack-ironic-api-version"), None);
    // IPA's default collectors are `default,logs`: the logs are a base64 tar.gz.
    assert_eq!(
        payload["configuration"]["collectors"],
        json!(["default", "logs"])
    );
    let logs = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        payload["logs"].as_str().expect("logs collector output"),
    )
    .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&logs[..]));
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "inventory.json"), "{names:?}");

    let l = &fake.requests_to(Route::Lookup)[0];
    assert!(l.at > insp[0].at);
    assert_eq!(l.param("node_uuid").as_deref(), Some(NODE_UUID));
    assert_eq!(l.header("x-openstack-request-id"), Some("req-e2e"));

    let body = hb.body.unwrap();
    assert_eq!(body["callback_url"], format!("http://127.0.0.1:{port}"));
    assert!(body.get("agent_verify_ca").is_none());

    let list: Value = plain_client()
        .get(format!(
            "http://127.0.0.1:{port}/v1/commands/?agent_token={TOKEN}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!({"commands": []}),
        "a fresh agent has an empty history"
    );

    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_token_without_own_token_never_serves() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Lookup,
        Reply::Json(200, lookup_answer(Some("******"), 300)),
    );
    let (config, port) = agent_config(&fake);
    let (tx, task) = start(config);

    fake.wait_for(Route::Lookup, 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the agent idles instead of exiting");
    assert!(fake.requests_to(Route::Heartbeat).is_empty());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_token_with_own_token_keeps_it() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Lookup,
        Reply::Json(200, lookup_answer(Some("******"), 300)),
    );
    let own = "k".repeat(43);
    let (mut config, _) = agent_config(&fake);
    config.agent_token = Some(own.clone());
    config.enable_auto_tls = false;
    let (tx, task) = start(config);

    let hb = fake.wait_for(Route::Heartbeat, 1, WAIT).await.remove(0);
    assert_eq!(hb.body.unwrap()["agent_token"], own.as_str());
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_exhaustion_ends_the_run_with_an_error() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Lookup,
        Reply::Json(404, json!({"error_message": "Not Found"})),
    );
    let (mut config, _) = agent_config(&fake);
    config.lookup_timeout = Duration::from_millis(200);
    let (_tx, task) = start(config);
    let result = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    match result {
        Err(AgentError::Lookup(msg)) => assert!(msg.contains("404"), "{msg}"),
        other => panic!("expected a lookup error, got {other:?}"),
    }
    assert!(fake.requests_to(Route::Lookup).len() > 1);
    assert!(fake.requests_to(Route::Heartbeat).is_empty());
}

/// A system root for the agent: a copy of a fixture tree (NICs with MACs) that the
/// rescue files may be written into.
fn rescue_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!(
            "{}/tests/fixtures/sysfs/many-nics/.",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(root.path())
        .status()
        .unwrap();
    assert!(status.success());
    root
}

/// An agent of plain HTTP on a [`rescue_root`] copy (after `prepare` ran on it); returns
/// the root, the agent's port, its stop channel and its task.
fn start_on_rescue_root(
    fake: &FakeConductor,
    prepare: impl FnOnce(&std::path::Path),
) -> (
    tempfile::TempDir,
    u16,
    oneshot::Sender<()>,
    JoinHandle<Result<(), AgentError>>,
) {
    let root = rescue_root();
    prepare(root.path());
    let (mut config, port) = agent_config(fake);
    config.enable_auto_tls = false;
    config.sysroot = root.path().to_owned();
    let (tx, task) = start(config);
    (root, port, tx, task)
}

async fn finalize_rescue(port: u16, params: Value) -> reqwest::Response {
    plain_client()
        .post(format!(
            "http://127.0.0.1:{port}/v1/commands/?wait=false&agent_token={TOKEN}"
        ))
        .json(&json!({"name": "rescue.finalize_rescue", "params": params}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_rescue_writes_the_hash_then_the_agent_stops_and_exits() {
    use std::os::unix::fs::PermissionsExt;
    let fake = FakeConductor::start().await;
    let (root, port, _tx, task) = start_on_rescue_root(&fake, |_| {});
    fake.wait_for(Route::Heartbeat, 1, WAIT).await;

    // Plain password (the conductor's fallback when hashed ones are not required).
    let resp = finalize_rescue(port, json!({"rescue_password": "s3cret rescue"})).await;
    assert_eq!(resp.status(), 200);
    let result: Value = resp.json().await.unwrap();
    assert_eq!(result["command_name"], "finalize_rescue");
    assert_eq!(result["command_status"], "SUCCEEDED", "{result}");
    assert_eq!(result["command_result"], Value::Null);

    let file = root
        .path()
        .join("etc/ipa-rescue-config/ipa-rescue-password");
    let text = std::fs::read_to_string(&file).unwrap();
    let hash = text.strip_suffix('\n').unwrap();
    assert!(hash.starts_with("$5$"), "{hash}");
    assert!(ira::rescue::sha_crypt::verify(b"s3cret rescue", hash));
    assert!(!ira::rescue::sha_crypt::verify(b"s3cret rescuE", hash));
    assert!(!text.contains("s3cret"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(root.path().join("etc/.rescued").exists());

    // The process ends by itself: no signal is sent.
    let ended = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the agent exits after finalize_rescue")
        .expect("agent task");
    ended.expect("a clean end");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    let beats = fake.requests_to(Route::Heartbeat).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.requests_to(Route::Heartbeat).len(),
        beats,
        "no heartbeat after rescue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_rescue_refuses_a_bad_hash_and_keeps_a_good_one_as_is() {
    let fake = FakeConductor::start().await;
    let (root, port, _tx, task) = start_on_rescue_root(&fake, |_| {});
    fake.wait_for(Route::Heartbeat, 1, WAIT).await;

    for bad in [
        json!({"rescue_password": "plain text", "hashed": true}),
        json!({"rescue_password": "$5$salt$short", "hashed": true}),
        json!({"rescue_password": 42}),
        json!({"rescue_password": "x", "hashed": "yes"}),
        json!({}),
    ] {
        let resp = finalize_rescue(port, bad.clone()).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let err: Value = resp.json().await.unwrap();
        // The command route answers in IPA's WSME fault format (protocol spec 1.7).
        assert_eq!(err["faultcode"], "Client", "{bad}: {err}");
        assert!(
            err["faultstring"]
                .as_str()
                .is_some_and(|f| f.starts_with("Invalid command parameters")),
            "{bad}: {err}"
        );
    }
    assert!(!root.path().join("etc/ipa-rescue-config").exists());
    assert!(!root.path().join("etc/.rescued").exists());
    let status = plain_client()
        .get(format!("http://127.0.0.1:{port}/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "still serving");
    assert!(!task.is_finished());

    // What Ironic sends by default: a SHA-256 crypt hash, hashed=true.
    let hash = "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5";
    let resp = finalize_rescue(port, json!({"rescue_password": hash, "hashed": true})).await;
    let result: Value = resp.json().await.unwrap();
    assert_eq!(result["command_status"], "SUCCEEDED", "{result}");
    assert_eq!(
        std::fs::read_to_string(
            root.path()
                .join("etc/ipa-rescue-config/ipa-rescue-password")
        )
        .unwrap(),
        format!("{hash}\n")
    );
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the agent exits after finalize_rescue")
        .expect("agent task")
        .expect("a clean end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_marker_at_start_means_no_lookup_and_no_api() {
    let fake = FakeConductor::start().await;
    let (_root, port, tx, task) = start_on_rescue_root(&fake, |root| {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/.rescued"), b"").unwrap();
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "the agent idles instead of exiting");
    assert!(fake.requests_to(Route::Lookup).is_empty());
    assert!(fake.requests_to(Route::Heartbeat).is_empty());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_registers_the_executable_managers_of_its_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write(
        "installer",
        r#"cat >/dev/null; echo '{"protocol": 1, "name": "example_installer", "version": "1.0", "support": 3, "steps": [{"kind": "deploy", "step": "write_image", "interface": "deploy", "priority": 0, "install_device": true, "writes_image": true}]}'"#,
    );
    write("broken", "echo 'cannot describe' >&2; exit 1");

    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Inspection,
        Reply::Json(202, json!({"uuid": NODE_UUID})),
    );
    let (mut config, port) = agent_config(&fake);
    config.enable_auto_tls = false;
    config.inspection_callback_url = Some(format!("{}/v1/continue_inspection", fake.url()));
    config.hardware_managers_dir = dir.path().to_path_buf();
    let (tx, task) = start(config);

    fake.wait_for(Route::Heartbeat, 1, WAIT).await;
    let payload = fake.requests_to(Route::Inspection)[0].body.clone().unwrap();
    let managers = payload["configuration"]["managers"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        managers.contains(&json!({"name": "example_installer", "version": "1.0"})),
        "{managers:?}"
    );
    assert!(managers.contains(&json!({"name": "generic_hardware_manager", "version": "1.2"})));

    // Over the API: its write_image replaces the generic one.
    let node = json!({"uuid": NODE_UUID, "properties": {}, "instance_info": {}});
    let reply: Value = plain_client()
        .post(format!(
            "http://127.0.0.1:{port}/v1/commands/?wait=true&agent_token={TOKEN}"
        ))
        .json(&json!({"name": "deploy.get_deploy_steps", "params": {"node": node, "ports": []}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps = &reply["command_result"]["deploy_steps"];
    assert_eq!(
        steps["example_installer"][0]["step"], "write_image",
        "{reply}"
    );
    assert!(steps["GenericHardwareManager"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["step"] != "write_image"));
    stop(tx, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_agent_ends_a_running_executable_manager() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let p = dir.path().join("slow");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nif [ \"$1\" = describe ]; then cat >/dev/null; echo '{{\"protocol\": 1, \"name\": \"slow\", \"version\": \"1\", \"support\": 2, \"steps\": [{{\"kind\": \"deploy\", \"step\": \"slow\", \"interface\": \"deploy\", \"priority\": 0}}]}}'; exit 0; fi\necho $$ > {}\nsleep 1000 &\nwait\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();

    let fake = FakeConductor::start().await;
    let (mut config, port) = agent_config(&fake);
    config.enable_auto_tls = false;
    config.hardware_managers_dir = dir.path().to_path_buf();
    let (tx, task) = start(config);
    fake.wait_for(Route::Heartbeat, 1, WAIT).await;

    let node = json!({"uuid": NODE_UUID, "properties": {}, "instance_info": {}});
    let step = json!({"step": "slow", "interface": "deploy", "priority": 0, "args": {}});
    let reply = plain_client()
        .post(format!(
            "http://127.0.0.1:{port}/v1/commands/?agent_token={TOKEN}"
        ))
        .json(&json!({"name": "deploy.execute_deploy_step",
                      "params": {"step": step, "node": node, "ports": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let t = std::time::Instant::now();
    while !pidfile.exists() && t.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t = std::time::Instant::now();
    stop(tx, task).await;
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // Nothing of the step's process group is alive (zombies of reparented children aside).
    let alive: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split(' ').collect();
            f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z"
        })
        .collect();
    assert!(alive.is_empty(), "{alive:?}");
}
