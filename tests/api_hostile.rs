//! Hostile clients against the real agent API over 127.0.0.1 sockets: idle connections,
//! slow and half-open TLS handshakes, many long-polls and oversized chunked bodies in
//! parallel. In each case `/v1/status` and an authenticated call, each on a new
//! connection, answer within a second, and the peak RSS of this process (the server
//! runs in it) stays bounded. The tests run one at a time so each peak is its own.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use common::agent::{self, Served};
use common::fixtures::inventory;
use common::tls;
use ira::api::{self, ServerLimits};
use ira::commands::{self, CommandSpec, Commands, Extension};
use ira::errors::CommandError;
use ira::ironic::Secret;

const TOKEN: &str = "h0stile-Xq3aZ9vV1bB2nN4mM5kK6jJ7hH8gG9fF0dD1s";

/// What `/v1/status` and an authenticated call may take under attack.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// One test at a time: the peak RSS is per process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- fixtures

struct Agent {
    addr: SocketAddr,
    base: String,
    client: reqwest::Client,
    gate: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// `hostile.hold` runs until the gate opens (at most 20 s); `hostile.echo` is synchronous.
fn extension(gate: watch::Receiver<bool>) -> Extension {
    let hold = move |_: commands::Context, _: commands::Params| {
        let mut gate = gate.clone();
        async move {
            let opened = tokio::time::timeout(Duration::from_secs(20), gate.wait_for(|o| *o))
                .await
                .is_ok();
            Ok::<_, CommandError>(json!({"gate_opened": opened}))
        }
    };
    let echo = |_: commands::Context, params: commands::Params| async move {
        Ok::<_, CommandError>(Value::Object(params))
    };
    Extension::new("hostile")
        .command(CommandSpec::asynchronous("hold", hold))
        .command(CommandSpec::sync("echo", echo))
}

async fn start(limits: ServerLimits, tls: Option<&api::GeneratedTls>) -> Agent {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = agent::state(
        agent::allowlist_config(vec!["/dev/ira-test-none".into()]),
        inventory("hostile-test", "uefi"),
    );
    *state.token.write().unwrap() = Some(Secret::new(TOKEN));
    let (gate, gate_rx) = watch::channel(false);
    let mut extensions = commands::builtin();
    extensions.push(extension(gate_rx));
    let cmds = Commands::with_extensions(state.clone(), extensions);
    let server_config = tls.map(|t| t.server_config.clone());
    let Served { addr, stop, task } = agent::serve(state, cmds, server_config, limits).await;
    // A new connection per request, as a conductor that lost its pooled one would open.
    let mut client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0);
    if let Some(tls) = tls {
        client = client.use_preconfigured_tls(tls::client_config(
            &tls.cert_pem,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        ));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    Agent {
        addr,
        base: format!("{scheme}://{addr}"),
        client: client.build().unwrap(),
        gate,
        stop,
        task,
    }
}

impl Agent {
    async fn request(&self, req: reqwest::RequestBuilder, what: &str) -> (u16, Value) {
        let started = Instant::now();
        let resp = tokio::time::timeout(ANSWER_WITHIN, async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?}"));
        let took = started.elapsed();
        assert!(took < ANSWER_WITHIN, "{what} took {took:?}");
        resp
    }

    /// `/v1/status` and an authenticated listing answer 200 within a second; with
    /// `command`, so does an authenticated synchronous command.
    async fn assert_responsive(&self, command: bool) {
        let status = self.client.get(format!("{}/v1/status", self.base));
        let (code, body) = self.request(status, "GET /v1/status").await;
        assert_eq!(code, 200);
        assert_eq!(body["version"], ira::AGENT_VERSION);
        let list = self
            .client
            .get(format!("{}/v1/commands/?agent_token={TOKEN}", self.base));
        let (code, body) = self.request(list, "GET /v1/commands").await;
        assert_eq!(code, 200, "{body}");
        if command {
            let post = self
                .client
                .post(format!("{}/v1/commands/?agent_token={TOKEN}", self.base))
                .header("Content-Type", "application/json")
                .body(json!({"name": "hostile.echo", "params": {"ping": 1}}).to_string());
            let (code, body) = self.request(post, "POST hostile.echo").await;
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["command_status"], "SUCCEEDED");
            assert_eq!(body["command_result"], json!({"ping": 1}));
        }
    }

    async fn stop(self) {
        self.gate.send_replace(true);
        self.stop.send_replace(true);
        self.task.await.unwrap().unwrap();
    }
}

/// Peak resident memory of this process, in KiB, from `/proc/self/status`.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Resets the peak to the current RSS (clear_refs 5) and returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    vm_hwm_kib()
}

/// Asserts the peak RSS grew by less than `mib` since `base` (from [`reset_peak`]).
fn assert_peak_growth_below(base: u64, mib: u64) {
    let grown = vm_hwm_kib().saturating_sub(base);
    assert!(
        grown < mib * 1024,
        "peak RSS grew by {} MiB (bound {mib} MiB)",
        grown / 1024
    );
}

/// Reads one HTTP/1.1 response (head and Content-Length body): status and JSON body.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
    (head[9..12].parse().unwrap(), body)
}

/// True once the server has closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Asserts that about `count` of `streams` (oldest first) were closed, the oldest half
/// of them among them, and that the youngest is still open. Connections accepted in
/// the same timer tick may go in any order, and a connection of a probe that is still
/// closing counts as open for a moment, hence the slack.
async fn assert_oldest_shed(streams: &mut [TcpStream], count: usize) {
    let mut closed = Vec::new();
    for stream in streams.iter_mut() {
        closed.push(closed_within(stream, Duration::from_millis(20)).await);
    }
    let shed = closed.iter().filter(|c| **c).count();
    assert!(shed + 4 >= count, "{shed} shed, wanted {count}");
    let kept: Vec<usize> = (0..closed.len()).filter(|i| !closed[*i]).collect();
    assert!(
        closed[..count / 2].iter().all(|c| *c),
        "an old one was kept: {kept:?}"
    );
    assert!(
        !closed[closed.len() - 1],
        "the youngest was shed without pressure"
    );
}

// ---------------------------------------------------------------- connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_out_the_conductor() {
    let _serial = SERIAL.lock().await;
    let limits = ServerLimits::default();
    let agent = start(limits.clone(), None).await;
    // The conductor's keep-alive connection, which sent its token before the flood.
    let mut kept = TcpStream::connect(agent.addr).await.unwrap();
    let list = format!("GET /v1/commands/?agent_token={TOKEN} HTTP/1.1\r\nHost: agent\r\n\r\n");
    kept.write_all(list.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);

    let base = reset_peak();
    // Keep-alive connections that asked only for the status (no token needed) ...
    let mut status_only = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(agent.addr).await.unwrap();
        let get = b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n\r\n";
        stream.write_all(get).await.unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        status_only.push(stream);
    }
    // ... and connections that send nothing.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(agent.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.assert_responsive(true).await;

    // Under pressure connections without the token are shed pressure_header_timeout
    // after their accept, oldest first, until no more than busy_connections are open.
    tokio::time::sleep(limits.pressure_header_timeout + Duration::from_millis(500)).await;
    for stream in &mut status_only {
        assert!(closed_within(stream, Duration::from_millis(20)).await);
    }
    let count = idle.len() - limits.busy_connections;
    assert_oldest_shed(&mut idle, count).await;
    // The keep-alive connection that sent the token was not shed.
    kept.write_all(list.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);
    agent.assert_responsive(true).await;
    assert_peak_growth_below(base, 48);
    drop((idle, status_only));
    drop(kept);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_pressure_unfinished_connections_are_shed_oldest_first() {
    let _serial = SERIAL.lock().await;
    let limits = ServerLimits {
        max_connections: 8,
        busy_connections: 4,
        pressure_header_timeout: Duration::from_millis(600),
        ..ServerLimits::default()
    };
    let agent = start(limits, None).await;
    let mut kept = TcpStream::connect(agent.addr).await.unwrap();
    let list = format!("GET /v1/commands/?agent_token={TOKEN} HTTP/1.1\r\nHost: agent\r\n\r\n");
    let get = list.as_bytes();
    kept.write_all(get).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);
    // Fill the bound with idle connections, the first ones older than the rest.
    let mut old = Vec::new();
    for _ in 0..4 {
        old.push(TcpStream::connect(agent.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut young = Vec::new();
    for _ in 0..3 {
        young.push(TcpStream::connect(agent.addr).await.unwrap());
    }
    // The old ones go first, the young ones are still open.
    for stream in &mut old {
        assert!(closed_within(stream, Duration::from_millis(400)).await);
    }
    for stream in &mut young {
        assert!(!closed_within(stream, Duration::from_millis(1)).await);
    }
    agent.assert_responsive(true).await;
    kept.write_all(get).await.unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200);
    drop((old, young, kept));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_open_tls_handshakes_cannot_lock_out_the_conductor() {
    let _serial = SERIAL.lock().await;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let generated = api::generate_self_signed(ip, "hostile-test", "p256", Duration::ZERO).unwrap();
    let limits = ServerLimits::default();
    let agent = start(limits.clone(), Some(&generated)).await;
    // A real ClientHello, to send one byte at a time.
    let hello = {
        let config = tls::client_config(&generated.cert_pem, &[&rustls::version::TLS13]);
        let name = rustls::pki_types::ServerName::IpAddress(ip.into());
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        conn.write_tls(&mut bytes).unwrap();
        bytes
    };

    let base = reset_peak();
    // Half-open: a TLS record header announcing a handshake that never comes.
    let mut half_open = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(agent.addr).await.unwrap();
        stream
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        half_open.push(stream);
    }
    // Slow: a ClientHello trickled at one byte per 100 ms (bounded by its length).
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(agent.addr).await.unwrap();
        let hello = hello.clone();
        slow.spawn(async move {
            for byte in hello {
                if stream.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.assert_responsive(true).await;

    tokio::time::sleep(limits.pressure_header_timeout + Duration::from_millis(500)).await;
    assert_oldest_shed(&mut half_open, 140 - limits.busy_connections).await;
    agent.assert_responsive(true).await;
    assert_peak_growth_below(base, 48);
    slow.shutdown().await;
    drop(half_open);
    agent.stop().await;
}

// ---------------------------------------------------------------- long-polls

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_beyond_their_budget_answer_at_once() {
    let _serial = SERIAL.lock().await;
    let limits = ServerLimits::default();
    let agent = start(limits.clone(), None).await;
    let post = agent
        .client
        .post(format!("{}/v1/commands/?agent_token={TOKEN}", agent.base))
        .header("Content-Type", "application/json")
        .body(json!({"name": "hostile.hold", "params": {}}).to_string());
    let (code, running) = agent.request(post, "POST hostile.hold").await;
    assert_eq!(code, 200);
    assert_eq!(running["command_status"], "RUNNING");
    let id = running["id"].as_str().unwrap().to_owned();

    let base = reset_peak();
    let polls = 80;
    let mut answers = tokio::task::JoinSet::new();
    for _ in 0..polls {
        let mut stream = TcpStream::connect(agent.addr).await.unwrap();
        let get = format!(
            "GET /v1/commands/{id}?wait=true&agent_token={TOKEN} HTTP/1.1\r\nHost: agent\r\n\r\n"
        );
        stream.write_all(get.as_bytes()).await.unwrap();
        answers.spawn(async move {
            let answer = tokio::time::timeout(Duration::from_secs(25), read_response(&mut stream))
                .await
                .expect("a long-poll never answered");
            (Instant::now(), answer)
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A command runs, so the busy rule refuses commands: list and poll instead.
    agent.assert_responsive(false).await;
    let get = agent.client.get(format!(
        "{}/v1/commands/{id}?agent_token={TOKEN}",
        agent.base
    ));
    let (code, body) = agent.request(get, "GET /v1/commands/<id>").await;
    assert_eq!((code, &body["command_status"]), (200, &json!("RUNNING")));

    let opened = Instant::now();
    agent.gate.send_replace(true);
    let (mut early, mut late) = (0, 0);
    while let Some(joined) = answers.join_next().await {
        let (at, (code, body)) = joined.unwrap();
        assert_eq!(code, 200, "{body}");
        if at < opened {
            assert_eq!(body["command_status"], "RUNNING");
            early += 1;
        } else {
            assert_eq!(body["command_status"], "SUCCEEDED");
            assert_eq!(body["command_result"], json!({"gate_opened": true}));
            late += 1;
        }
    }
    assert_eq!(late, limits.max_long_polls, "polls that waited");
    assert_eq!(
        early,
        polls - limits.max_long_polls,
        "polls answered at once"
    );
    assert_peak_growth_below(base, 48);
    agent.stop().await;
}

// ---------------------------------------------------------------- bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunked_bodies_in_parallel_stay_within_the_budget() {
    let _serial = SERIAL.lock().await;
    const MIB: usize = 1024 * 1024;
    let limits = ServerLimits {
        max_body_bytes: 16 * MIB,
        max_total_body_bytes: 8 * MIB,
        ..ServerLimits::default()
    };
    let agent = start(limits, None).await;
    let base = reset_peak();
    // Eight authenticated chunked bodies of 20 MiB each, 64 KiB per chunk.
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let stream = TcpStream::connect(agent.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let head = format!(
            "POST /v1/commands/?agent_token={TOKEN} HTTP/1.1\r\nHost: agent\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        senders.spawn(async move {
            let writer = tokio::spawn(async move {
                let chunk = format!("10000\r\n{}\r\n", " ".repeat(64 * 1024));
                wr.write_all(head.as_bytes()).await?;
                for _ in 0..20 * 16 {
                    wr.write_all(chunk.as_bytes()).await?;
                }
                std::io::Result::Ok(())
            });
            let answer = tokio::time::timeout(Duration::from_secs(20), read_response(&mut rd))
                .await
                .expect("no answer to an oversized body");
            writer.abort();
            answer
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.assert_responsive(true).await;
    while let Some(joined) = senders.join_next().await {
        let (code, body) = joined.unwrap();
        assert_eq!(code, 413);
        assert_eq!(body["faultcode"], "Client");
        assert!(body["faultstring"].as_str().unwrap().starts_with("413 "));
    }
    // Without the shared budget each body is held up to its own 16 MiB: 128 MiB at once.
    assert_peak_growth_below(base, 40);
    agent.assert_responsive(true).await;
    agent.stop().await;
}
