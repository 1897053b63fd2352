//! End-to-end tests of the agent API over real sockets on 127.0.0.1: routes, token,
//! IPA's validation order and error texts, command results, the busy rule, limits,
//! TLS, and that the token and command bodies never reach the logs.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use common::agent::{self, Served};
use common::fixtures::inventory;
use common::tls;
use ira::api::{self, CommandError, ServerLimits};
use ira::commands::{self, CommandSpec, Commands, Extension};
use ira::config::Config;
use ira::hardware::{builtin_managers, BuiltinOptions};
use ira::ironic::Secret;
use ira::logs::ring::{self, LogRing};
use ira::state::AgentState;
use ira_hw::{
    HardwareManager, HwError, HwResult, Inventory, ManagerVersion, Step, StepCall, StepKind,
    SupportLevel,
};

const TOKEN: &str = "tok3n-Xq3aZ9vV1bB2nN4mM5kK6jJ7hH8gG9fF0dD1s";

// ---------------------------------------------------------------- log capture

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every event of every test at every level goes here.
fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        // The `ira` binary's set-up: a formatting layer plus the ring the log archive reads.
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            )
            .with(ring::layer(LogRing::global().clone()));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        let _ = rustls::crypto::ring::default_provider().install_default();
        buffer
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------- fixtures

/// A gate a blocking step waits at until the test opens it (bounded, so a failed test
/// cannot hang the run).
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cond.notify_all();
    }
    fn wait(&self) -> bool {
        let guard = self.open.lock().unwrap();
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, Duration::from_secs(20), |open| !*open)
            .unwrap();
        *guard
    }
}

/// A hardware manager with steps that block, echo, fail and panic.
#[derive(Debug)]
struct TestManager {
    gate: Arc<Gate>,
}

impl HardwareManager for TestManager {
    fn name(&self) -> &'static str {
        "TestHardwareManager"
    }
    fn version(&self) -> ManagerVersion {
        ManagerVersion {
            name: "test_hardware_manager".into(),
            version: "7.1".into(),
        }
    }
    fn evaluate_hardware_support(&self, _inventory: &Inventory) -> SupportLevel {
        SupportLevel::MAINLINE
    }
    fn get_steps(&self, kind: StepKind, _node: &Value, _ports: &[Value]) -> HwResult<Vec<Step>> {
        match kind {
            StepKind::Clean => Ok(vec![Step::new("gated_step", "deploy", 0).abortable(true)]),
            _ => Err(HwError::NotMine),
        }
    }
    fn execute_step(&self, call: &StepCall<'_>) -> HwResult<Value> {
        match call.step {
            "gated_step" => Ok(json!({"gate_opened": self.gate.wait()})),
            "echo_args" => Ok(Value::Object(call.args.clone())),
            "broken_step" => Err(HwError::Failed("broken on purpose".into())),
            "exploding_step" => panic!("exploding_step blew up"),
            _ => Err(HwError::NotMine),
        }
    }
}

/// Test-only extension: a command panicking in async code, a sync one panicking and a
/// sync one failing with a typed error.
fn test_extension() -> Extension {
    async fn panics(_: commands::Context, _: commands::Params) -> Result<Value, CommandError> {
        panic!("async command bug")
    }
    async fn fails(_: commands::Context, _: commands::Params) -> Result<Value, CommandError> {
        Err(CommandError::SoftwareRaid("array degraded".into()))
    }
    async fn greets(_: commands::Context, _: commands::Params) -> Result<Value, CommandError> {
        Ok(json!("hello"))
    }
    Extension::new("test")
        .command(CommandSpec::asynchronous("panic", panics))
        .command(CommandSpec::sync("panic_sync", panics))
        .command(CommandSpec::sync("fail", fails))
        .command(CommandSpec::sync("greet_sync", greets))
        .command(CommandSpec::asynchronous("greet_async", greets))
}

struct Agent {
    base: String,
    addr: SocketAddr,
    state: Arc<AgentState>,
    gate: Arc<Gate>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

struct Options {
    config: Config,
    token: Option<&'static str>,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: Config {
                no_power_off: true,
                ..Config::default()
            },
            token: Some(TOKEN),
            limits: ServerLimits {
                header_read_timeout: Duration::from_millis(200),
                body_read_timeout: Duration::from_millis(500),
                shutdown_grace: Duration::from_millis(500),
                ..ServerLimits::default()
            },
            tls: None,
        }
    }
}

async fn start(opts: Options) -> Agent {
    logs();
    let inv = inventory("test-host", "uefi");
    let gate = Arc::new(Gate::default());
    let mut managers = builtin_managers(&BuiltinOptions::default());
    managers.push(Box::new(TestManager { gate: gate.clone() }));
    let state = agent::state_with(opts.config, managers, inv);
    if let Some(token) = opts.token {
        *state.token.write().unwrap() = Some(Secret::new(token));
    }
    let mut extensions = commands::builtin();
    extensions.push(test_extension());
    let cmds = Commands::with_extensions(state.clone(), extensions);
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let Served { addr, stop, task } =
        agent::serve(state.clone(), cmds, opts.tls, opts.limits).await;
    Agent {
        base: format!("{scheme}://{addr}"),
        addr,
        state,
        gate,
        stop,
        task,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl Agent {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        decode(resp).await
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        decode(resp).await
    }

    /// POST `/v1/commands/` with the token.
    async fn run(&self, name: &str, params: Value, wait: bool) -> (u16, Value) {
        let body = json!({"name": name, "params": params}).to_string();
        self.post(
            &format!("/v1/commands/?wait={wait}&agent_token={TOKEN}"),
            body,
        )
        .await
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap().unwrap();
    }
}

async fn decode(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        ctype.as_deref(),
        Some("application/json"),
        "status {status}"
    );
    let body: Value = resp.json().await.unwrap();
    (status, body)
}

fn fault(code: &str, text: &str) -> Value {
    json!({"faultcode": code, "faultstring": text})
}

fn assert_uuid4(id: &Value) {
    let parsed = uuid::Uuid::parse_str(id.as_str().unwrap()).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
    assert_eq!(id.as_str().unwrap().len(), 36);
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

const RESULT_KEYS: [&str; 5] = [
    "command_error",
    "command_name",
    "command_result",
    "command_status",
    "id",
];

// ---------------------------------------------------------------- routes

#[tokio::test]
async fn discovery_documents_and_status() {
    let agent = start(Options::default()).await;
    let root = agent.base.clone();
    let version = json!({"id": "v1", "links": [
        {"href": format!("{root}/v1"), "rel": "self"},
        {"href": "https://docs.openstack.org/ironic-python-agent/", "rel": "describedby",
         "type": "text/html"}]});
    let (status, doc) = agent.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        json!({"name": "OpenStack Ironic Python Agent API",
               "description": "Ironic Python Agent is a provisioning agent for OpenStack Ironic",
               "versions": [version.clone()], "default_version": version.clone()})
    );
    let mut v1 = version.clone();
    v1.as_object_mut().unwrap().extend(
        json!({
            "commands": [{"href": format!("{root}/v1/commands"), "rel": "self"},
                         {"href": format!("{root}/commands"), "rel": "bookmark"}],
            "status": [{"href": format!("{root}/v1/status"), "rel": "self"},
                       {"href": format!("{root}/status"), "rel": "bookmark"}],
            "media_types": [{"base": "application/json",
                             "type": "application/vnd.openstack.ironic-python-agent.v1+json"}]
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    for path in ["/v1", "/v1/"] {
        assert_eq!(agent.get(path).await, (200, v1.clone()), "{path}");
    }
    assert!(agent.state.started_at > 1.0e9);
    for path in ["/v1/status", "/v1/status/", "/status", "/status/"] {
        let (status, body) = agent.get(path).await;
        assert_eq!(status, 200, "{path}");
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["started_at", "version"], "{path}");
        assert_eq!(body["version"], ira::AGENT_VERSION, "{path}");
        // serde_json's default float parser may land one ULP off the printed value.
        let started = body["started_at"].as_f64().unwrap();
        assert!(
            (started - agent.state.started_at).abs() < 1e-6,
            "{path}: {started}"
        );
    }
    agent.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_faults() {
    let agent = start(Options::default()).await;
    for path in ["/v2/", "/v1/nothing", "/commands/a/b", "/v1//status"] {
        let (status, body) = agent.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["faultcode"], "Client");
        assert!(body["faultstring"]
            .as_str()
            .unwrap()
            .starts_with("404 Not Found: The requested URL was not found"));
        assert_eq!(keys(&body), ["faultcode", "faultstring"]);
    }
    let (status, body) = agent.post("/v1/status", "{}").await;
    assert_eq!(status, 405);
    assert_eq!(
        body,
        fault(
            "Client",
            "405 Method Not Allowed: The method is not allowed for the requested URL."
        )
    );
    let resp = agent
        .client
        .delete(format!("{}/v1/commands/?agent_token={TOKEN}", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");
    let (status, _) = agent
        .post(&format!("/v1/commands/abc?agent_token={TOKEN}"), "{}")
        .await;
    assert_eq!(status, 405);
    assert_eq!(agent.get("/v1/status").await.0, 200);
    agent.stop().await;
}

// ---------------------------------------------------------------- token

#[tokio::test]
async fn commands_routes_need_the_held_token() {
    let unauthorized = fault("Client", "401 Unauthorized: Token invalid.");

    // No token held yet: everything under /commands is refused, even with a value.
    let agent = start(Options {
        token: None,
        ..Options::default()
    })
    .await;
    for path in [
        "/v1/commands/",
        "/v1/commands/?agent_token=",
        &format!("/commands?agent_token={TOKEN}"),
    ] {
        assert_eq!(agent.get(path).await, (401, unauthorized.clone()), "{path}");
    }
    assert_eq!(agent.get("/v1/status").await.0, 200);
    agent.stop().await;

    let agent = start(Options::default()).await;
    for path in [
        "/v1/commands/",
        "/v1/commands/?agent_token=wrong",
        &format!("/v1/commands/?agent_token={}", &TOKEN[..TOKEN.len() - 1]),
        &format!("/v1/commands/?agent_token={TOKEN}x"),
        "/v1/commands/some-id",
    ] {
        assert_eq!(agent.get(path).await, (401, unauthorized.clone()), "{path}");
    }
    // The token is checked before the body is looked at.
    let (status, body) = agent
        .post("/v1/commands/?agent_token=wrong", "not json")
        .await;
    assert_eq!((status, body), (401, unauthorized.clone()));
    // A token inside params does not authenticate.
    let body = json!({"name": "standby.sync", "params": {"agent_token": TOKEN}}).to_string();
    assert_eq!(agent.post("/v1/commands/", body).await.0, 401);

    for path in ["/v1/commands", "/v1/commands/", "/commands", "/commands/"] {
        let (status, body) = agent.get(&format!("{path}?agent_token={TOKEN}")).await;
        assert_eq!((status, body), (200, json!({"commands": []})), "{path}");
    }
    agent.stop().await;
}

#[tokio::test]
async fn token_and_bodies_never_reach_the_logs() {
    let agent = start(Options::default()).await;
    let marker = "secret-config-drive-8f3b2c";
    let (status, _) = agent
        .run(
            "clean.get_clean_steps",
            json!({"node": {"uuid": "n1", "instance_info": {"configdrive": marker}}, "ports": []}),
            true,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        agent
            .get("/v1/commands/?agent_token=wrong-guess-token")
            .await
            .0,
        401
    );
    agent
        .post(
            &format!("/v1/commands/?agent_token={TOKEN}"),
            format!("{{\"oops\": \"{marker}\""),
        )
        .await;
    agent.stop().await;
    let text = log_text();
    // The request lines are there, with paths and statuses...
    assert!(text.contains("path=/v1/commands/"), "{text}");
    assert!(text.contains("status=401"));
    assert!(text.contains("get_clean_steps"));
    // ...but no token, no query string and no body.
    assert!(!text.contains(TOKEN));
    assert!(!text.contains("wrong-guess-token"));
    assert!(!text.contains("agent_token="));
    assert!(!text.contains(marker));
    // The ring the log archive carries holds what stderr gets, nothing more.
    let ring = String::from_utf8_lossy(&LogRing::global().contents(usize::MAX)).into_owned();
    assert!(ring.contains("get_clean_steps"), "{ring}");
    assert!(!ring.contains(TOKEN));
    assert!(!ring.contains("wrong-guess-token"));
    assert!(!ring.contains("agent_token="));
    assert!(!ring.contains(marker));
}

// ---------------------------------------------------------------- POST validation

#[tokio::test]
async fn post_validation_follows_ipa_order_and_wording() {
    let agent = start(Options::default()).await;
    let path = format!("/v1/commands/?agent_token={TOKEN}");

    let (status, body) = agent.post(&path, "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["faultcode"], "Client");
    assert!(body["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("400 Bad Request: "));

    let missing = fault(
        "Client",
        "400 Bad Request: Missing or invalid name or params",
    );
    for bad in [
        json!({"name": "standby.sync"}),
        json!({"params": {}}),
        json!({"name": "standby.sync", "params": []}),
        json!({"name": "standby.sync", "params": "x"}),
        json!({"name": 5, "params": {}}),
        json!(["standby.sync"]),
    ] {
        assert_eq!(
            agent.post(&path, bad.to_string()).await,
            (400, missing.clone()),
            "{bad}"
        );
    }

    let cases = [
        (
            "sync",
            json!({}),
            400,
            "Invalid command: Command name must be of the form <extension>.<name>",
        ),
        (
            "nope.sync",
            json!({}),
            404,
            "Not found: Extension with id nope not found.",
        ),
        (
            "standby.frobnicate",
            json!({}),
            400,
            "Invalid command: Unknown command: frobnicate",
        ),
        (
            "clean.execute_clean_step",
            json!({"node": {}, "ports": []}),
            400,
            "Invalid command parameters: step is required and must be an object",
        ),
        (
            "deploy.execute_deploy_step",
            json!({"step": {"interface": "deploy"}}),
            400,
            "Invalid command parameters: step must contain a string \"step\" key",
        ),
    ];
    for (name, params, code, text) in cases {
        assert_eq!(
            agent.run(name, params, false).await,
            (code, fault("Client", text)),
            "{name}"
        );
    }
    // Nothing refused was recorded, and the agent still serves.
    assert_eq!(
        agent
            .get(&format!("/v1/commands/?agent_token={TOKEN}"))
            .await,
        (200, json!({"commands": []}))
    );
    agent.stop().await;
}

// ---------------------------------------------------------------- results

#[tokio::test]
async fn sync_and_async_results_have_the_wire_shape() {
    let agent = start(Options::default()).await;

    let (status, sync) = agent.run("standby.sync", json!({}), false).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&sync), RESULT_KEYS);
    assert_uuid4(&sync["id"]);
    assert_eq!(sync["command_name"], "sync");
    assert_eq!(sync["command_status"], "SUCCEEDED");
    assert_eq!(sync["command_error"], Value::Null);
    assert_eq!(sync["command_result"], Value::Null);

    // Strings are wrapped as IPA does, differently for sync and async commands.
    let (_, greeting) = agent.run("test.greet_sync", json!({}), false).await;
    assert_eq!(greeting["command_result"], json!({"result": "hello"}));
    let (_, greeting) = agent.run("test.greet_async", json!({}), true).await;
    assert_eq!(greeting["command_status"], "SUCCEEDED");
    assert_eq!(
        greeting["command_result"],
        json!({"result": "greet_async: hello"})
    );

    // A typed failure of a sync command is a 200 with FAILED and the error object.
    let (status, failed) = agent.run("test.fail", json!({}), false).await;
    assert_eq!(status, 200);
    assert_eq!(failed["command_status"], "FAILED");
    assert_eq!(
        failed["command_error"],
        json!({"type": "SoftwareRAIDError", "code": 500,
               "message": "Software RAID caused unknown error", "details": "array degraded"})
    );

    // power_off is async; with --no-power-off it only logs. It forces a heartbeat.
    let (status, power) = agent.run("standby.power_off", json!({}), false).await;
    assert_eq!(status, 200);
    assert_eq!(power["command_name"], "power_off");
    let id = power["id"].as_str().unwrap();
    let (status, done) = agent
        .get(&format!("/v1/commands/{id}?wait=TRUE&agent_token={TOKEN}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["command_status"], "SUCCEEDED");
    assert_eq!(done["id"], id);
    tokio::time::timeout(Duration::from_secs(2), agent.state.heartbeat_now.notified())
        .await
        .expect("a finished async command requests a heartbeat");
    assert!(log_text().contains("power off requested (--no-power-off): not powering off"));

    let (_, list) = agent.get(&format!("/commands/?agent_token={TOKEN}")).await;
    let names: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["sync", "greet_sync", "greet_async", "fail", "power_off"]
    );
    for entry in list["commands"].as_array().unwrap() {
        assert_eq!(keys(entry), RESULT_KEYS);
    }
    // Same object by id (alias route, trailing slash).
    let (status, by_id) = agent
        .get(&format!("/commands/{id}/?agent_token={TOKEN}"))
        .await;
    assert_eq!((status, &by_id), (200, &done));

    let (status, body) = agent
        .get(&format!("/v1/commands/nope?agent_token={TOKEN}"))
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            fault(
                "Client",
                "Not found: Command Result with id nope not found."
            )
        )
    );
    agent.stop().await;
}

#[tokio::test]
async fn busy_rule_refuses_every_post_while_a_command_runs() {
    let agent = start(Options::default()).await;
    let step = json!({"step": "gated_step", "interface": "deploy", "priority": 0, "args": {}});
    let (status, running) = agent
        .run(
            "clean.execute_clean_step",
            json!({"step": step, "node": {"uuid": "n1"}, "ports": []}),
            false,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(running["command_status"], "RUNNING");
    assert_eq!(running["command_result"], Value::Null);
    let id = running["id"].as_str().unwrap().to_owned();

    let busy = fault(
        "Client",
        "Agent is busy: executing command execute_clean_step",
    );
    // Sync commands, unknown extensions and unknown commands: all 409 while busy.
    for name in [
        "standby.sync",
        "nope.sync",
        "standby.frobnicate",
        "log.collect_system_logs",
    ] {
        assert_eq!(
            agent.run(name, json!({}), true).await,
            (409, busy.clone()),
            "{name}"
        );
    }
    // The name form is checked before the busy rule.
    assert_eq!(agent.run("sync", json!({}), false).await.0, 400);
    // GETs are still served; the last entry is RUNNING.
    let (status, list) = agent
        .get(&format!("/v1/commands/?agent_token={TOKEN}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["commands"][0]["command_status"], "RUNNING");

    // A waiting GET blocks until the step ends.
    let waiter = {
        let client = agent.client.clone();
        let url = format!(
            "{}/v1/commands/{id}?wait=true&agent_token={TOKEN}",
            agent.base
        );
        tokio::spawn(async move { decode(client.get(url).send().await.unwrap()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "wait=true answered while RUNNING");
    agent.gate.open();
    let (status, done) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(done["command_status"], "SUCCEEDED");
    assert_eq!(
        done["command_result"],
        json!({"clean_result": {"gate_opened": true}, "clean_step": step})
    );
    // The node was cached from the command.
    assert_eq!(agent.state.node().unwrap()["uuid"], "n1");
    // Not busy any more.
    assert_eq!(agent.run("standby.sync", json!({}), true).await.0, 200);
    agent.stop().await;
}

#[tokio::test]
async fn wait_true_on_post_blocks_until_done() {
    let agent = start(Options::default()).await;
    let post = {
        let client = agent.client.clone();
        let url = format!("{}/v1/commands/?wait=true&agent_token={TOKEN}", agent.base);
        let body = json!({"name": "clean.execute_clean_step",
                          "params": {"step": {"step": "gated_step", "interface": "deploy"}}});
        tokio::spawn(async move {
            decode(
                client
                    .post(url)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!post.is_finished());
    agent.gate.open();
    let (status, done) = post.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(done["command_status"], "SUCCEEDED");
    agent.stop().await;
}

#[tokio::test]
async fn step_commands_list_execute_and_detect_version_mismatch() {
    let agent = start(Options::default()).await;
    let (status, listed) = agent
        .run(
            "clean.get_clean_steps",
            json!({"node": {"uuid": "n2"}, "ports": []}),
            true,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["command_status"], "SUCCEEDED");
    let result = &listed["command_result"];
    assert_eq!(keys(result), ["clean_steps", "hardware_manager_version"]);
    assert!(result["clean_steps"]["TestHardwareManager"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "gated_step"));
    let versions = result["hardware_manager_version"].clone();
    assert_eq!(versions["test_hardware_manager"], "7.1");
    assert_eq!(agent.state.node().unwrap()["uuid"], "n2");

    let (_, listed) = agent
        .run(
            "deploy.get_deploy_steps",
            json!({"node": {}, "ports": []}),
            true,
        )
        .await;
    assert!(listed["command_result"]["deploy_steps"].is_object());

    // Success with matching versions: args reach the step, the step is echoed verbatim.
    let step = json!({"step": "echo_args", "interface": "deploy", "args": {"a": [1, 2]},
                      "requires_ramdisk": true});
    let (_, ran) = agent
        .run(
            "service.execute_service_step",
            json!({"step": step, "node": {}, "ports": [], "service_version": versions}),
            true,
        )
        .await;
    assert_eq!(ran["command_status"], "SUCCEEDED");
    assert_eq!(
        ran["command_result"],
        json!({"service_result": {"a": [1, 2]}, "service_step": step})
    );

    // Other versions: not run, CLEAN_VERSION_MISMATCH with the VersionMismatch object.
    let (_, mismatch) = agent
        .run(
            "deploy.execute_deploy_step",
            json!({"step": {"step": "echo_args", "interface": "deploy"},
                    "deploy_version": {"test_hardware_manager": "1.0"}}),
            true,
        )
        .await;
    assert_eq!(mismatch["command_status"], "CLEAN_VERSION_MISMATCH");
    assert_eq!(mismatch["command_result"], Value::Null);
    let err = &mismatch["command_error"];
    assert_eq!(keys(err), ["code", "details", "message", "type"]);
    assert_eq!(err["type"], "VersionMismatch");
    assert_eq!(err["code"], 409);
    assert_eq!(
        err["message"],
        "Hardware managers version mismatch, reload agent with correct version"
    );
    assert!(err["details"]
        .as_str()
        .unwrap()
        .starts_with("Current versions: "));

    // A failing step and an unknown one are FAILED with their IPA classes.
    let (_, broken) = agent
        .run(
            "clean.execute_clean_step",
            json!({"step": {"step": "broken_step"}}),
            true,
        )
        .await;
    assert_eq!(broken["command_status"], "FAILED");
    assert_eq!(broken["command_error"]["type"], "CleaningError");
    assert_eq!(broken["command_error"]["message"], "Clean step failed");
    let (_, unknown) = agent
        .run(
            "deploy.execute_deploy_step",
            json!({"step": {"step": "no_such_step"}}),
            true,
        )
        .await;
    assert_eq!(unknown["command_status"], "FAILED");
    assert_eq!(
        unknown["command_error"]["type"],
        "HardwareManagerMethodNotFound"
    );
    agent.stop().await;
}

#[tokio::test]
async fn panics_become_failed_results_and_the_agent_keeps_serving() {
    let agent = start(Options::default()).await;
    let (status, r) = agent.run("test.panic", json!({}), true).await;
    assert_eq!(status, 200);
    assert_eq!(r["command_status"], "FAILED");
    assert_eq!(r["command_error"]["type"], "CommandExecutionError");
    assert!(r["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("async command bug"));

    let (status, r) = agent.run("test.panic_sync", json!({}), false).await;
    assert_eq!(status, 200);
    assert_eq!(r["command_status"], "FAILED");

    // A panic inside a hardware manager (blocking thread).
    let (status, r) = agent
        .run(
            "clean.execute_clean_step",
            json!({"step": {"step": "exploding_step"}}),
            true,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(r["command_status"], "FAILED");
    assert!(r["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("exploding_step blew up"));

    // Not left busy, still serving.
    assert_eq!(agent.run("standby.sync", json!({}), false).await.0, 200);
    assert_eq!(agent.get("/v1/status").await.0, 200);
    agent.stop().await;
}

#[tokio::test]
async fn poll_and_log_commands() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::fs::write(root.path().join("proc/cmdline"), "ipa-debug=1\n").unwrap();
    let agent = start(Options {
        config: Config {
            no_power_off: true,
            sysroot: root.path().to_owned(),
            ..Config::default()
        },
        ..Options::default()
    })
    .await;
    let (_, info) = agent.run("poll.get_hardware_info", json!({}), false).await;
    assert_eq!(info["command_status"], "SUCCEEDED");
    assert_eq!(
        info["command_result"],
        serde_json::to_value(inventory("test-host", "uefi")).unwrap()
    );

    // What an operator reads after a failed step: the agent's own lines, as stderr had them.
    let marker = "erase of /dev/ira-test-7c1f refused: device busy";
    tracing::error!(node = "n1", "{marker}");
    let (_, logs) = agent.run("log.collect_system_logs", json!({}), true).await;
    assert_eq!(logs["command_status"], "SUCCEEDED");
    assert_eq!(keys(&logs["command_result"]), ["system_logs"]);
    use base64::Engine as _;
    use std::io::Read as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(logs["command_result"]["system_logs"].as_str().unwrap())
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "proc/cmdline" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            assert_eq!(text, "ipa-debug=1\n");
        }
        if name == "ira.log" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let line = text
                .lines()
                .find(|l| l.contains(marker))
                .unwrap_or_else(|| panic!("{marker:?} missing from ira.log:\n{text}"));
            assert!(line.contains(" ERROR api: "), "{line}");
            assert!(line.ends_with(&format!("{marker} node=\"n1\"")), "{line}");
            assert!(
                text.contains("poll.get_hardware_info"),
                "the agent's own lines too: {text}"
            );
        }
        names.push(name);
    }
    for want in [
        "inventory.json",
        "ira.log",
        "proc/cmdline",
        "ip_addr",
        "collection_notes",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    agent.stop().await;
}

#[tokio::test]
async fn lockdown_answers_then_stops_serving() {
    let agent = start(Options::default()).await;
    let (status, r) = agent.run("system.lockdown", json!({}), false).await;
    assert_eq!(status, 200);
    assert_eq!(r["command_status"], "SUCCEEDED");
    assert!(*agent.state.stop_serving.borrow());
    let ended = tokio::time::timeout(Duration::from_secs(3), agent.task).await;
    ended
        .expect("serve returns after lockdown")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(agent.addr).await.is_err(),
        "listener still open"
    );
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn body_and_nesting_limits() {
    let agent = start(Options {
        limits: ServerLimits {
            max_body_bytes: 4096,
            max_json_depth: 16,
            ..Options::default().limits
        },
        ..Options::default()
    })
    .await;
    let path = format!("/v1/commands/?agent_token={TOKEN}");
    let big = json!({"name": "standby.sync", "params": {"pad": "x".repeat(10_000)}}).to_string();
    let (status, body) = agent.post(&path, big).await;
    assert_eq!(status, 413);
    assert_eq!(body["faultcode"], "Client");
    assert!(body["faultstring"].as_str().unwrap().starts_with("413 "));

    // Chunked (no Content-Length) is cut off too.
    let mut raw = TcpStream::connect(agent.addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    raw.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..10 {
        let chunk = format!("3e8\r\n{}\r\n", " ".repeat(1000));
        if raw.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), raw.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"));

    let deep = format!(
        "{{\"name\": \"standby.sync\", \"params\": {{\"x\": {}1{}}}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let (status, body) = agent.post(&path, deep).await;
    assert_eq!(status, 400);
    assert!(body["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("400 Bad Request:"));
    // Still serving, nothing recorded.
    assert_eq!(agent.get(&path).await, (200, json!({"commands": []})));
    agent.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let agent = start(Options::default()).await;
    // Half a request head: closed after header_read_timeout (200 ms).
    let started = Instant::now();
    let mut slow = TcpStream::connect(agent.addr).await.unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "slow client still connected after 3 s");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150),
        "closed too early: {elapsed:?}"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // A body that never completes: 408 after body_read_timeout.
    let mut stalled = TcpStream::connect(agent.addr).await.unwrap();
    let head = format!(
        "POST /v1/commands/?agent_token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"name\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut buf))
        .await
        .expect("stalled body not cut off")
        .ok();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"));

    assert_eq!(agent.get("/v1/status").await.0, 200);
    agent.stop().await;
}

#[tokio::test]
async fn connections_are_bounded() {
    let agent = start(Options {
        limits: ServerLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
            ..Options::default().limits
        },
        ..Options::default()
    })
    .await;
    // Two idle connections take both slots...
    let _a = TcpStream::connect(agent.addr).await.unwrap();
    let _b = TcpStream::connect(agent.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...so a third is served only once the idle ones time out.
    let started = Instant::now();
    assert_eq!(agent.get("/v1/status").await.0, 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "served without a free slot: {waited:?}"
    );
    agent.stop().await;
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn https_with_the_generated_certificate() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let tls =
        api::generate_self_signed(ip, "test-host", "p384", Duration::from_secs(3600)).unwrap();
    let mut agent = start(Options {
        tls: Some(tls.server_config.clone()),
        ..Options::default()
    })
    .await;
    agent.client = reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(tls::client_config(
            &tls.cert_pem,
            &[&rustls::version::TLS13],
        ))
        .build()
        .unwrap();
    let (status, body) = agent.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], ira::AGENT_VERSION);
    let (_, root) = agent.get("/").await;
    assert!(root["versions"][0]["links"][0]["href"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    let (status, _) = agent.run("standby.sync", json!({}), true).await;
    assert_eq!(status, 200);
    // A client that does not trust the certificate is refused.
    let untrusted = reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(tls::client_config(
            &api::generate_self_signed(ip, "other", "p256", Duration::ZERO)
                .unwrap()
                .cert_pem,
            &[&rustls::version::TLS13],
        ))
        .build()
        .unwrap();
    assert!(untrusted
        .get(format!("{}/v1/status", agent.base))
        .send()
        .await
        .is_err());
    agent.stop().await;
}

#[tokio::test]
async fn tls13_only_refuses_tls12_clients() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let tls = api::generate_self_signed(ip, "test-host", "p256", Duration::ZERO).unwrap();
    let agent = start(Options {
        tls: Some(tls.server_config_min("1.3").unwrap()),
        ..Options::default()
    })
    .await;
    let server_name = rustls::pki_types::ServerName::IpAddress(ip.into());
    let handshake = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(tls::client_config(&tls.cert_pem, versions)));
        let server_name = server_name.clone();
        let addr = agent.addr;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector.connect(server_name, tcp).await
        }
    };
    assert!(handshake(&[&rustls::version::TLS12]).await.is_err());
    assert!(handshake(&[&rustls::version::TLS13]).await.is_ok());

    // The default generated configuration accepts TLS 1.2 too.
    let agent12 = start(Options {
        tls: Some(tls.server_config.clone()),
        ..Options::default()
    })
    .await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls::client_config(
        &tls.cert_pem,
        &[&rustls::version::TLS12],
    )));
    let tcp = TcpStream::connect(agent12.addr).await.unwrap();
    assert!(connector.connect(server_name, tcp).await.is_ok());
    agent.stop().await;
    agent12.stop().await;
}
