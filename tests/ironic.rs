//! The Ironic client against the in-process fake conductor: version discovery, every
//! lookup and heartbeat field, token rules, retries, URL failover, heartbeat schedule,
//! inspection; and the schedule maths as properties.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_conductor::{
    lookup_answer, root_document, FakeConductor, Reply, Route, NODE_UUID, TOKEN,
};
use common::fixtures::client_options;
use common::{free_port, refused_url};
use ira::config::Config;
use ira::hardware::Registry;
use ira::ironic::advertise::{self, AdvertiseOptions};
use ira::ironic::backoff::{self, HeartbeatPolicy, InspectionPolicy, LookupPolicy};
use ira::ironic::client::{HeartbeatError, IronicClient};
use ira::ironic::lookup::{self, LookupOutcome};
use ira::ironic::wire::{ApiVersion, HeartbeatFields};
use ira::ironic::{inspection, Heartbeater};
use ira::state::AgentState;
use ira_hw::Inventory;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::time::Instant;

const MACS: [&str; 2] = ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"];

fn client(urls: Vec<String>) -> IronicClient {
    IronicClient::new(&client_options(urls)).unwrap()
}

fn macs() -> Vec<String> {
    MACS.iter().map(|m| (*m).to_owned()).collect()
}

/// Lookup retries in milliseconds.
fn fast_lookup() -> LookupPolicy {
    LookupPolicy {
        timeout: Duration::from_secs(10),
        interval: Duration::from_millis(1),
        backoff_unit: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        conflict_pauses: vec![Duration::from_millis(200), Duration::from_millis(10)],
    }
}

fn inventory() -> Inventory {
    serde_json::from_value(json!({
        "interfaces": [
            {"name": "eth0", "mac_address": MACS[0], "ipv4_address": "192.0.2.10",
             "ipv6_address": null, "has_carrier": true, "lldp": null, "vendor": "0x1af4",
             "product": "0x0001", "client_id": null, "biosdevname": null, "speed_mbps": 1000,
             "pci_address": "0000:00:03.0", "driver": "virtio_net"}],
        "cpu": {"model_name": "QEMU", "frequency": "2400.0000", "count": 2,
                "architecture": "x86_64", "flags": ["fpu"], "socket_count": 1},
        "disks": [
            {"name": "/dev/vda", "model": null, "size": 21474836480u64, "rotational": false,
             "wwn": null, "serial": "s1", "vendor": "0x1af4", "wwn_with_extension": null,
             "wwn_vendor_extension": null, "hctl": null, "by_path": null,
             "logical_sectors": 512, "physical_sectors": 512, "tran": null},
            {"name": "/dev/vdb", "model": null, "size": 10737418240u64, "rotational": false,
             "wwn": null, "serial": "s2", "vendor": "0x1af4", "wwn_with_extension": null,
             "wwn_vendor_extension": null, "hctl": null, "by_path": null,
             "logical_sectors": 512, "physical_sectors": 512, "tran": null}],
        "memory": {"total": 4102262784u64, "physical_mb": 4096},
        "bmc_address": "0.0.0.0", "bmc_v6address": "::/0",
        "system_vendor": {"product_name": "Standard PC", "serial_number": "",
                          "manufacturer": "QEMU",
                          "firmware": {"vendor": "EDK II", "version": "1", "build_date": ""}},
        "boot": {"current_boot_mode": "uefi", "pxe_interface": MACS[0]},
        "hostname": "agent-test"
    }))
    .unwrap()
}

fn state() -> Arc<AgentState> {
    Arc::new(AgentState::new(
        Arc::new(Config::default()),
        Arc::new(Registry::default()),
        inventory(),
    ))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

// ---- version discovery ------------------------------------------------------------

#[tokio::test]
async fn version_is_discovered_once_and_cached() {
    let fake = FakeConductor::start().await;
    let c = client(vec![fake.url()]);
    assert_eq!(c.api_version().await, ApiVersion::new(1, 115));
    assert_eq!(c.api_version().await, ApiVersion::new(1, 115));
    assert_eq!(fake.requests_to(Route::Root).len(), 1);
}

#[tokio::test]
async fn forced_version_skips_discovery() {
    let fake = FakeConductor::start().await;
    let mut o = client_options(vec![fake.url()]);
    o.forced_version = Some(ApiVersion::new(1, 50));
    let c = IronicClient::new(&o).unwrap();
    assert_eq!(c.api_version().await, ApiVersion::new(1, 50));
    lookup::lookup_once(&c, &macs(), None).await.unwrap();
    assert!(fake.requests_to(Route::Root).is_empty());
    let l = &fake.requests_to(Route::Lookup)[0];
    assert_eq!(l.header("x-openstack-ironic-api-version"), Some("1.50"));
}

#[tokio::test]
async fn failed_discovery_falls_back_and_is_retried() {
    let fake = FakeConductor::start().await;
    fake.script(
        Route::Root,
        [
            Reply::Raw(500, "oops".into()),
            Reply::Raw(200, "garbage".into()),
        ],
    );
    let c = client(vec![fake.url()]);
    assert_eq!(c.api_version().await, ApiVersion::FALLBACK);
    assert_eq!(c.api_version().await, ApiVersion::FALLBACK);
    assert_eq!(c.api_version().await, ApiVersion::new(1, 115));
    assert_eq!(c.api_version().await, ApiVersion::new(1, 115));
    assert_eq!(fake.requests_to(Route::Root).len(), 3);
}

#[tokio::test]
async fn no_lookup_is_sent_without_a_discovered_version() {
    // Below 1.62 Ironic hands out no token, so a lookup at the fallback would leave the
    // agent undrivable: the attempt fails instead, and the next one discovers again.
    let fake = FakeConductor::start().await;
    fake.script(Route::Root, [Reply::Raw(503, "starting".into())]);
    let c = client(vec![fake.url()]);
    let err = lookup::lookup_once(&c, &macs(), None).await.unwrap_err();
    assert!(err.to_string().contains("discovery"), "{err}");
    assert!(fake.requests_to(Route::Lookup).is_empty());
    let answer = lookup::lookup_once(&c, &macs(), None).await.unwrap();
    assert_eq!(answer.uuid, NODE_UUID);
    let l = fake.requests_to(Route::Lookup);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].header("x-openstack-ironic-api-version"), Some("1.62"));
}

// ---- lookup -----------------------------------------------------------------------

#[tokio::test]
async fn lookup_sends_every_field() {
    let fake = FakeConductor::start().await;
    let mut o = client_options(vec![format!("{}/", fake.url())]);
    o.request_id = Some("req-5e4c1a2b-0000-4000-8000-000000000001".into());
    let c = IronicClient::new(&o).unwrap();
    let answer = lookup::lookup_once(&c, &macs(), Some("node-from-inspection"))
        .await
        .unwrap();
    assert_eq!(answer.uuid, NODE_UUID);
    assert_eq!(answer.config.agent_token.as_deref(), Some(TOKEN));

    let l = &fake.requests_to(Route::Lookup)[0];
    assert_eq!(l.method, "GET");
    assert_eq!(l.path, "/v1/lookup");
    assert_eq!(
        l.param("addresses").as_deref(),
        Some("52:54:00:12:34:56,52:54:00:ab:cd:ef")
    );
    assert_eq!(
        l.param("node_uuid").as_deref(),
        Some("node-from-inspection")
    );
    assert_eq!(l.header("x-openstack-ironic-api-version"), Some("1.62"));
    assert_eq!(
        l.header("x-openstack-request-id"),
        Some("req-5e4c1a2b-0000-4000-8000-000000000001")
    );
    assert_eq!(l.header("accept"), Some("application/json"));
    // Discovery carries the same headers but no version.
    let root = &fake.requests_to(Route::Root)[0];
    assert_eq!(root.header("x-openstack-ironic-api-version"), None);
    assert_eq!(
        root.header("x-openstack-request-id"),
        Some("req-5e4c1a2b-0000-4000-8000-000000000001")
    );
}

#[tokio::test]
async fn lookup_without_uuid_or_request_id_and_older_api() {
    let fake = FakeConductor::start().await;
    fake.set_default(Route::Root, Reply::Json(200, root_document("1.50")));
    let c = client(vec![fake.url()]);
    lookup::lookup_once(&c, &macs(), None).await.unwrap();
    let l = &fake.requests_to(Route::Lookup)[0];
    assert_eq!(l.param("node_uuid"), None);
    assert_eq!(l.header("x-openstack-request-id"), None);
    assert_eq!(l.header("x-openstack-ironic-api-version"), Some("1.50"));
}

#[tokio::test]
async fn lookup_retries_409_500_garbage_and_dropped_connections() {
    let fake = FakeConductor::start().await;
    fake.script(
        Route::Lookup,
        [
            Reply::Json(
                409,
                json!({"error_message": "{\"faultstring\": \"Node is locked\"}"}),
            ),
            Reply::Json(500, json!({"error_message": "boom"})),
            Reply::Raw(200, "<html>not json</html>".into()),
            Reply::Json(200, json!({"node": {"properties": {}}, "config": {}})),
            Reply::Drop,
            Reply::Json(404, json!({"error_message": "Not Found"})),
        ],
    );
    let c = client(vec![fake.url()]);
    let mut rng = StdRng::seed_from_u64(3);
    let answer = lookup::lookup(&c, &macs(), None, &fast_lookup(), &mut rng)
        .await
        .unwrap();
    assert_eq!(answer.uuid, NODE_UUID);
    let reqs = fake.requests_to(Route::Lookup);
    assert_eq!(reqs.len(), 7);
    // The 409 adds the first conflict pause (200 ms) on top of the ms-scale back-off.
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(200));
    // Later failures use only the back-off (at most 5 ms, plus scheduling slack).
    assert!(reqs[2].at - reqs[1].at < Duration::from_millis(150));
}

#[tokio::test]
async fn successive_conflicts_use_the_next_pauses() {
    let fake = FakeConductor::start().await;
    let conflict = Reply::Json(409, json!({}));
    fake.script(
        Route::Lookup,
        [conflict.clone(), conflict.clone(), conflict],
    );
    let policy = LookupPolicy {
        conflict_pauses: vec![Duration::from_millis(10), Duration::from_millis(200)],
        ..fast_lookup()
    };
    let c = client(vec![fake.url()]);
    lookup::lookup(&c, &macs(), None, &policy, &mut StdRng::seed_from_u64(1))
        .await
        .unwrap();
    let r = fake.requests_to(Route::Lookup);
    assert_eq!(r.len(), 4);
    assert!(r[1].at - r[0].at >= Duration::from_millis(10));
    assert!(r[1].at - r[0].at < Duration::from_millis(150));
    assert!(r[2].at - r[1].at >= Duration::from_millis(200));
    assert!(
        r[3].at - r[2].at >= Duration::from_millis(200),
        "the last pause repeats"
    );
}

#[tokio::test]
async fn lookup_gives_up_after_the_timeout() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Lookup,
        Reply::Json(404, json!({"error_message": "Not Found"})),
    );
    let policy = LookupPolicy {
        timeout: Duration::from_millis(150),
        ..fast_lookup()
    };
    let c = client(vec![fake.url()]);
    let start = Instant::now();
    let err = lookup::lookup(&c, &macs(), None, &policy, &mut StdRng::seed_from_u64(2))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(err.attempts > 2);
    assert!(err.last.contains("404"), "{}", err.last);
    assert_eq!(
        fake.requests_to(Route::Lookup).len(),
        usize::try_from(err.attempts).unwrap()
    );
}

#[tokio::test]
async fn lookup_waits_for_a_server_that_comes_up_later() {
    let port = free_port();
    let c = client(vec![format!("http://127.0.0.1:{port}")]);
    let task = tokio::spawn(async move {
        let r = lookup::lookup(
            &c,
            &macs(),
            None,
            &fast_lookup(),
            &mut StdRng::seed_from_u64(9),
        )
        .await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!task.is_finished());
    let fake = FakeConductor::start_on(port).await;
    let (result, c) = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.unwrap().uuid, NODE_UUID);
    // Discovery failed while the server was down; it was retried once it came up.
    assert_eq!(c.api_version().await, ApiVersion::new(1, 115));
    let l = fake.requests_to(Route::Lookup);
    assert_eq!(
        l.last().unwrap().header("x-openstack-ironic-api-version"),
        Some("1.62")
    );
}

// ---- failover ---------------------------------------------------------------------

#[tokio::test]
async fn failover_skips_a_refusing_url_and_remembers_the_good_one() {
    let fake = FakeConductor::start().await;
    let dead = refused_url();
    let c = client(vec![dead.clone(), fake.url()]);
    let answer = lookup::lookup_once(&c, &macs(), None).await.unwrap();
    assert_eq!(answer.uuid, NODE_UUID);
    assert_eq!(c.urls(), [fake.url(), dead]);
}

#[tokio::test]
async fn failover_on_dropped_connection_then_sticks() {
    let bad = FakeConductor::start().await;
    for route in [Route::Root, Route::Lookup, Route::Heartbeat] {
        bad.set_default(route, Reply::Drop);
    }
    let good = FakeConductor::start().await;
    let c = client(vec![bad.url(), good.url()]);
    lookup::lookup_once(&c, &macs(), None).await.unwrap();
    lookup::lookup_once(&c, &macs(), None).await.unwrap();
    // One failed discovery request on the bad URL, then never again.
    assert_eq!(bad.requests().len(), 1);
    assert_eq!(good.requests_to(Route::Lookup).len(), 2);
}

#[tokio::test]
async fn no_failover_on_an_http_error_status() {
    let first = FakeConductor::start().await;
    first.set_default(
        Route::Lookup,
        Reply::Json(500, json!({"error_message": "db down"})),
    );
    let second = FakeConductor::start().await;
    let c = client(vec![first.url(), second.url()]);
    let err = lookup::lookup_once(&c, &macs(), None).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert!(second.requests().is_empty());
}

#[tokio::test]
async fn all_urls_refusing_is_a_connection_error() {
    let c = client(vec![refused_url(), refused_url()]);
    let err = lookup::lookup_once(&c, &macs(), None).await.unwrap_err();
    assert!(matches!(
        err,
        lookup::AttemptError::Client(ira::ironic::ClientError::Connect { .. })
    ));
}

// ---- token rules ------------------------------------------------------------------

async fn apply(token: Option<&str>, own: Option<&str>) -> (LookupOutcome, Option<String>) {
    let fake = FakeConductor::start().await;
    fake.set_default(Route::Lookup, Reply::Json(200, lookup_answer(token, 30)));
    let c = client(vec![fake.url()]);
    let st = state();
    if let Some(t) = own {
        *st.token.write().unwrap() = Some(ira::ironic::Secret::new(t));
    }
    let answer = lookup::lookup_once(&c, &macs(), None).await.unwrap();
    let outcome = lookup::apply_answer(&st, answer);
    let held = st
        .token
        .read()
        .unwrap()
        .as_ref()
        .map(|t| t.expose().to_owned());
    (outcome, held)
}

#[tokio::test]
async fn token_rules_of_the_lookup_answer() {
    let own = "p".repeat(43);
    let short = "s".repeat(31);
    /// (lookup token, own token, outcome, token held afterwards)
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        LookupOutcome,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (Some(TOKEN), None, LookupOutcome::Ready, Some(TOKEN)),
        (Some(TOKEN), Some(&own), LookupOutcome::Ready, Some(TOKEN)),
        (Some("******"), Some(&own), LookupOutcome::Ready, Some(&own)),
        (Some("******"), None, LookupOutcome::TokenRefused, None),
        (Some(&short), None, LookupOutcome::Ready, None),
        (Some(&short), Some(&own), LookupOutcome::Ready, Some(&own)),
        (None, None, LookupOutcome::Ready, None),
        (None, Some(&own), LookupOutcome::Ready, Some(&own)),
    ];
    for (lookup_token, own_token, outcome, held) in cases {
        let got = apply(lookup_token, own_token).await;
        assert_eq!(
            got,
            (outcome, held.map(str::to_owned)),
            "{lookup_token:?} / {own_token:?}"
        );
    }
}

#[tokio::test]
async fn lookup_answer_updates_node_and_settings() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Lookup,
        Reply::Json(200, lookup_answer(Some(TOKEN), 42)),
    );
    let c = client(vec![fake.url()]);
    let st = state();
    let answer = lookup::lookup_once(&c, &macs(), None).await.unwrap();
    lookup::apply_answer(&st, answer);
    assert_eq!(st.node().unwrap()["uuid"], NODE_UUID);
    let s = st.lookup.lock().unwrap().clone();
    assert_eq!(s.heartbeat_timeout, 42);
    assert!(s.md5_enabled);
    assert_eq!(s.tls_min_version.as_deref(), Some("1.3"));
}

// ---- heartbeat --------------------------------------------------------------------

fn fields<'a>(
    url: &'a str,
    verify_ca: Option<&'a str>,
    status: Option<&'a str>,
) -> HeartbeatFields<'a> {
    HeartbeatFields {
        callback_url: url,
        agent_token: Some(TOKEN),
        agent_version: ira::AGENT_VERSION,
        agent_verify_ca: verify_ca,
        agent_status_message: status,
    }
}

#[tokio::test]
async fn heartbeat_sends_exactly_the_expected_body() {
    let fake = FakeConductor::start().await;
    let c = client(vec![fake.url()]);
    let url = advertise::callback_url("https", "192.0.2.10", 9999);
    c.heartbeat(
        NODE_UUID,
        &fields(&url, Some("-----BEGIN CERTIFICATE-----\n"), None),
    )
    .await
    .unwrap();
    let hb = &fake.requests_to(Route::Heartbeat)[0];
    assert_eq!(hb.method, "POST");
    assert_eq!(hb.path, format!("/v1/heartbeat/{NODE_UUID}"));
    assert_eq!(hb.header("x-openstack-ironic-api-version"), Some("1.68"));
    assert_eq!(hb.header("content-type"), Some("application/json"));
    let body = hb.body.clone().unwrap();
    assert_eq!(
        body,
        json!({"callback_url": "https://192.0.2.10:9999", "agent_token": TOKEN,
               "agent_version": ira::AGENT_VERSION,
               "agent_verify_ca": "-----BEGIN CERTIFICATE-----\n"})
    );
}

#[tokio::test]
async fn heartbeat_without_tls_token_or_new_api() {
    let fake = FakeConductor::start().await;
    fake.set_default(Route::Root, Reply::Json(200, root_document("1.64")));
    let c = client(vec![fake.url()]);
    let url = advertise::callback_url("http", "2001:db8::10", 9999);
    let f = HeartbeatFields {
        agent_token: None,
        ..fields(&url, None, Some("writing image"))
    };
    c.heartbeat(NODE_UUID, &f).await.unwrap();
    let hb = &fake.requests_to(Route::Heartbeat)[0];
    assert_eq!(hb.header("x-openstack-ironic-api-version"), Some("1.64"));
    let body = hb.body.clone().unwrap();
    assert_eq!(
        keys(&body),
        ["agent_token", "agent_version", "callback_url"]
    );
    assert_eq!(body["agent_token"], Value::Null);
    assert_eq!(body["callback_url"], "http://[2001:db8::10]:9999");
}

#[tokio::test]
async fn heartbeat_status_message_needs_1_72() {
    let fake = FakeConductor::start().await;
    let c = client(vec![fake.url()]);
    let url = advertise::callback_url("https", "192.0.2.10", 9999);
    c.heartbeat(
        NODE_UUID,
        &fields(&url, None, Some("erasing /dev/sda: 40%")),
    )
    .await
    .unwrap();
    c.heartbeat(NODE_UUID, &fields(&url, None, None))
        .await
        .unwrap();
    let hbs = fake.requests_to(Route::Heartbeat);
    assert_eq!(
        hbs[0].header("x-openstack-ironic-api-version"),
        Some("1.72")
    );
    assert_eq!(
        hbs[0].body.as_ref().unwrap()["agent_status_message"],
        "erasing /dev/sda: 40%"
    );
    assert_eq!(
        hbs[1].header("x-openstack-ironic-api-version"),
        Some("1.68")
    );
    assert_eq!(
        keys(hbs[1].body.as_ref().unwrap()),
        ["agent_token", "agent_version", "callback_url"]
    );
}

#[tokio::test]
async fn heartbeat_errors_are_classified() {
    let fake = FakeConductor::start().await;
    fake.script(
        Route::Heartbeat,
        [
            Reply::Json(409, json!({"error_message": "{\"faultstring\": \"locked\"}"})),
            Reply::Json(400, json!({"error_message": "{\"faultstring\": \"Invalid or missing agent token received.\"}"})),
            Reply::Empty(200),
        ],
    );
    let c = client(vec![fake.url()]);
    let f = fields("http://127.0.0.1:9999", None, None);
    assert!(
        matches!(c.heartbeat(NODE_UUID, &f).await, Err(HeartbeatError::Conflict(t)) if t == "locked")
    );
    match c.heartbeat(NODE_UUID, &f).await {
        Err(HeartbeatError::Status { status: 400, text }) => {
            assert_eq!(text, "Invalid or missing agent token received.")
        }
        other => panic!("{other:?}"),
    }
    // Only 202 means accepted.
    assert!(matches!(
        c.heartbeat(NODE_UUID, &f).await,
        Err(HeartbeatError::Status { status: 200, .. })
    ));
    assert!(c.heartbeat(NODE_UUID, &f).await.is_ok());
}

/// A heartbeater whose client already discovered the version, so every heartbeat is a
/// single request and the gaps the fake sees are the schedule's.
async fn heartbeater(
    fake: &FakeConductor,
    st: &Arc<AgentState>,
    policy: HeartbeatPolicy,
) -> Heartbeater {
    let c = client(vec![fake.url()]);
    c.api_version().await;
    Heartbeater {
        client: Arc::new(c),
        state: st.clone(),
        node_uuid: NODE_UUID.into(),
        callback_url: "http://127.0.0.1:9999".into(),
        verify_ca: None,
        policy,
    }
}

fn ms_policy() -> HeartbeatPolicy {
    HeartbeatPolicy {
        timeout_unit: Duration::from_millis(1),
        error_base: Duration::from_millis(20),
        min_gap: Duration::from_millis(150),
        wake_every: Duration::from_millis(20),
        ..HeartbeatPolicy::default()
    }
}

#[tokio::test]
async fn heartbeat_loop_follows_the_success_interval_and_stops() {
    let fake = FakeConductor::start().await;
    let st = state();
    st.lookup.lock().unwrap().heartbeat_timeout = 200; // 60..120 ms between heartbeats
    *st.token.write().unwrap() = Some(ira::ironic::Secret::new(TOKEN));
    let task = tokio::spawn(
        heartbeater(&fake, &st, ms_policy())
            .await
            .run(StdRng::seed_from_u64(4)),
    );
    let hbs = fake
        .wait_for(Route::Heartbeat, 4, Duration::from_secs(5))
        .await;
    for pair in hbs.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // 60..120 ms, less the jitter of two request latencies.
        assert!(gap >= Duration::from_millis(45), "{gap:?}");
        assert!(gap <= Duration::from_millis(400), "{gap:?}");
    }
    assert_eq!(hbs[0].body.as_ref().unwrap()["agent_token"], TOKEN);
    st.stop_serving.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    let n = fake.requests_to(Route::Heartbeat).len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.requests_to(Route::Heartbeat).len(),
        n,
        "no heartbeat after stop"
    );
}

#[tokio::test]
async fn failed_heartbeats_retry_on_the_error_interval() {
    let fake = FakeConductor::start().await;
    fake.script(Route::Heartbeat, [Reply::Json(500, json!({})), Reply::Drop]);
    let st = state();
    st.lookup.lock().unwrap().heartbeat_timeout = 100_000; // 30 s or more after a success
    let task = tokio::spawn(
        heartbeater(&fake, &st, ms_policy())
            .await
            .run(StdRng::seed_from_u64(5)),
    );
    let hbs = fake
        .wait_for(Route::Heartbeat, 3, Duration::from_secs(5))
        .await;
    for pair in hbs.windows(2) {
        let gap = pair[1].at - pair[0].at;
        // 20..40 ms, less the jitter of two request latencies.
        assert!(
            gap >= Duration::from_millis(10) && gap < Duration::from_millis(300),
            "{gap:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        fake.requests_to(Route::Heartbeat).len(),
        3,
        "success waits the long interval"
    );
    st.stop_serving.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_forced_heartbeat_is_followed_up_soon() {
    // If the conductor held the node lock, it skipped the forced heartbeat; the
    // follow-up makes it see the finished command without waiting a full interval.
    let fake = FakeConductor::start().await;
    let st = state();
    st.lookup.lock().unwrap().heartbeat_timeout = 100_000;
    let policy = HeartbeatPolicy {
        after_forced: Duration::from_millis(250),
        ..ms_policy()
    };
    let task = tokio::spawn(
        heartbeater(&fake, &st, policy)
            .await
            .run(StdRng::seed_from_u64(7)),
    );
    fake.wait_for(Route::Heartbeat, 1, Duration::from_secs(5))
        .await;
    st.request_heartbeat();
    let hbs = fake
        .wait_for(Route::Heartbeat, 3, Duration::from_secs(5))
        .await;
    let gap = hbs[2].at - hbs[1].at;
    assert!(gap >= Duration::from_millis(230), "too soon: {gap:?}");
    assert!(gap < Duration::from_millis(1000), "too late: {gap:?}");
    // The follow-up was not forced: after it, the long interval applies again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.requests_to(Route::Heartbeat).len(), 3);
    st.stop_serving.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn forced_heartbeat_respects_the_minimum_gap() {
    let fake = FakeConductor::start().await;
    let st = state();
    st.lookup.lock().unwrap().heartbeat_timeout = 100_000;
    let task = tokio::spawn(
        heartbeater(&fake, &st, ms_policy())
            .await
            .run(StdRng::seed_from_u64(6)),
    );
    let first = fake
        .wait_for(Route::Heartbeat, 1, Duration::from_secs(5))
        .await[0]
        .at;
    // An async command finished right after the first heartbeat.
    st.request_heartbeat();
    let second = fake
        .wait_for(Route::Heartbeat, 2, Duration::from_secs(5))
        .await[1]
        .at;
    let gap = second - first;
    assert!(gap >= Duration::from_millis(135), "too soon: {gap:?}");
    assert!(gap < Duration::from_millis(600), "too late: {gap:?}");
    // Requested long after the previous one: goes out at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    st.request_heartbeat();
    let third = fake
        .wait_for(Route::Heartbeat, 3, Duration::from_secs(5))
        .await[2]
        .at;
    assert!(
        third - asked < Duration::from_millis(250),
        "{:?}",
        third - asked
    );
    // Without a request nothing more is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests_to(Route::Heartbeat).len(), 3);
    st.stop_serving.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn heartbeat_carries_the_status_message_of_the_state() {
    let fake = FakeConductor::start().await;
    let st = state();
    *st.status_message.lock().unwrap() = Some("writing image: 12%".into());
    let hb = heartbeater(&fake, &st, ms_policy()).await;
    hb.beat().await.unwrap();
    let r = &fake.requests_to(Route::Heartbeat)[0];
    assert_eq!(r.header("x-openstack-ironic-api-version"), Some("1.72"));
    assert_eq!(
        r.body.as_ref().unwrap()["agent_status_message"],
        "writing image: 12%"
    );
}

// ---- inspection -------------------------------------------------------------------

fn fast_inspection() -> InspectionPolicy {
    InspectionPolicy {
        attempts: 5,
        multiplier: Duration::from_millis(1),
        min_wait: Duration::from_millis(5),
        max_wait: Duration::from_millis(20),
        jitter: 0.5,
    }
}

#[tokio::test]
async fn inspection_payload_and_uuid_to_lookup() {
    let fake = FakeConductor::start().await;
    fake.set_default(
        Route::Inspection,
        Reply::Json(202, json!({"uuid": "inspected-node"})),
    );
    let c = client(vec![fake.url()]);
    let inv = inventory();
    let managers = vec![ira_hw::ManagerVersion {
        name: "generic_hardware_manager".into(),
        version: "1.2".into(),
    }];
    let payload = inspection::payload(&inv, &["default".to_owned()], &managers);
    let url = format!("{}/v1/continue_inspection", fake.url());
    let uuid = inspection::send(&c, &[url], &payload, &fast_inspection())
        .await
        .unwrap();
    assert_eq!(uuid.as_deref(), Some("inspected-node"));

    let r = &fake.requests_to(Route::Inspection)[0];
    assert_eq!(r.header("x-openstack-ironic-api-version"), None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.body.clone().unwrap();
    assert_eq!(
        keys(&body),
        [
            "boot_interface",
            "configuration",
            "error",
            "inventory",
            "root_disk"
        ]
    );
    assert_eq!(body["inventory"], serde_json::to_value(&inv).unwrap());
    assert_eq!(
        body["root_disk"]["name"], "/dev/vdb",
        "smallest disk of at least 4 GiB"
    );
    assert_eq!(body["boot_interface"], MACS[0]);
    assert_eq!(body["error"], Value::Null);
    assert_eq!(
        body["configuration"],
        json!({"collectors": ["default"], "managers": [{"name": "generic_hardware_manager", "version": "1.2"}]})
    );

    lookup::lookup_once(&c, &macs(), uuid.as_deref())
        .await
        .unwrap();
    let l = &fake.requests_to(Route::Lookup)[0];
    assert_eq!(l.param("node_uuid").as_deref(), Some("inspected-node"));
}

#[tokio::test]
async fn inspection_retries_5xx_409_and_drops_but_not_4xx() {
    let fake = FakeConductor::start().await;
    fake.script(
        Route::Inspection,
        [
            Reply::Json(500, json!({})),
            Reply::Json(409, json!({})),
            Reply::Drop,
        ],
    );
    let c = client(vec![]);
    let url = format!("{}/v1/continue_inspection", fake.url());
    let payload = json!({"inventory": {}});
    let uuid = inspection::send(&c, std::slice::from_ref(&url), &payload, &fast_inspection())
        .await
        .unwrap();
    assert_eq!(uuid.as_deref(), Some(NODE_UUID));
    assert_eq!(fake.requests_to(Route::Inspection).len(), 4);

    fake.script(
        Route::Inspection,
        [Reply::Json(400, json!({"error_message": "bad schema"}))],
    );
    let err = inspection::send(&c, std::slice::from_ref(&url), &payload, &fast_inspection())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    assert_eq!(
        fake.requests_to(Route::Inspection).len(),
        5,
        "a 4xx is final"
    );

    fake.set_default(Route::Inspection, Reply::Json(503, json!({})));
    let policy = InspectionPolicy {
        attempts: 3,
        ..fast_inspection()
    };
    assert!(
        inspection::send(&c, std::slice::from_ref(&url), &payload, &policy)
            .await
            .is_err()
    );
    assert_eq!(
        fake.requests_to(Route::Inspection).len(),
        8,
        "three attempts"
    );

    let dead = format!("{}/v1/continue_inspection", refused_url());
    let err = inspection::send(&c, &[dead], &payload, &policy)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        inspection::InspectionError::Unreachable { attempts: 3, .. }
    ));
}

// ---- advertise address ------------------------------------------------------------

#[tokio::test]
async fn advertise_address_routes_to_the_api() {
    let mut opts = AdvertiseOptions {
        advertise_host: None,
        network_interface: None,
        api_urls: vec!["http://[::1]:6385".into()],
        attempts: 1,
        sleep: Duration::from_millis(1),
    };
    let host = advertise::find_advertise_host(&opts).await.unwrap();
    assert_eq!(host, "::1");
    assert_eq!(
        advertise::callback_url("https", &host, 9999),
        "https://[::1]:9999"
    );
    // An unusable URL is skipped; a host name is resolved first.
    opts.api_urls = vec!["no url".into(), "http://localhost:1".into()];
    let host = advertise::find_advertise_host(&opts).await.unwrap();
    assert!(
        host.parse::<std::net::IpAddr>().unwrap().is_loopback(),
        "{host}"
    );
    opts.api_urls = vec!["no url".into()];
    let err = advertise::find_advertise_host(&opts).await.unwrap_err();
    assert_eq!(err.attempts, 1);
}

// ---- schedule maths as properties -------------------------------------------------

proptest! {
    #[test]
    fn lookup_wait_stays_within_bounds(
        seed in any::<u64>(),
        attempt in 1u32..100,
        interval_ms in 0u64..120_000,
    ) {
        let policy = LookupPolicy {
            interval: Duration::from_millis(interval_ms),
            ..LookupPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let w = backoff::lookup_wait(&policy, attempt, &mut rng);
        let exp = 1u64 << (attempt - 1).min(20);
        // The first retry may spread over one more interval (at most 60 s more).
        let spread = policy.interval + policy.interval.min(Duration::from_secs(60));
        let ceiling = Duration::from_secs(exp.min(60)).max(spread);
        prop_assert!(w >= policy.interval);
        prop_assert!(w <= ceiling);
    }

    #[test]
    fn heartbeat_intervals_stay_within_bounds(seed in any::<u64>(), timeout in 1u64..100_000) {
        let policy = HeartbeatPolicy::default();
        let mut rng = StdRng::seed_from_u64(seed);
        let ok = backoff::heartbeat_after_success(&policy, timeout, &mut rng).as_secs_f64();
        prop_assert!(ok >= timeout as f64 * 0.3 - 1e-6 && ok <= timeout as f64 * 0.6 + 1e-6);
        let err = backoff::heartbeat_after_failure(&policy, &mut rng);
        prop_assert!(err >= Duration::from_secs(5) && err <= Duration::from_secs(10));
        let forced = backoff::heartbeat_due(&policy, Duration::from_secs_f64(ok), true);
        prop_assert!(forced <= Duration::from_secs(5));
    }

    #[test]
    fn inspection_wait_stays_within_bounds(seed in any::<u64>(), attempt in 1u32..1000) {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = backoff::inspection_wait(&InspectionPolicy::default(), attempt, &mut rng);
        prop_assert!(w >= Duration::from_secs(5) && w <= Duration::from_secs(45));
    }
}
