//! The Ironic API found by mDNS at start (protocol spec 4.8): with `ipa-api-url=mdns`
//! the agent asks until `lookup_timeout` (the lookup's jittered schedule between
//! rounds) and fails like a lookup when nobody answers; with `ipa-use-mdns` and no URL
//! it asks one round and otherwise serves without lookup, as IPA.

use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

use crate::config::resolve::set_option;
use crate::config::{Config, Origin};
use crate::ironic::backoff::{lookup_wait, LookupPolicy};
use crate::ironic::mdns::{self, Endpoint, Query, ALLOWED_OVERRIDES, BAREMETAL};
use ira_hw::Inventory;

use super::AgentError;

/// Whether `config` asks for discovery.
pub fn wanted(config: &Config) -> bool {
    !config.standalone && (config.api_url_mdns || (config.use_mdns && config.api_urls.is_empty()))
}

/// The IPv4 addresses of the inventory's interfaces, to send the queries from.
pub fn sources(inventory: &Inventory) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = inventory
        .interfaces
        .iter()
        .filter_map(|i| i.ipv4_address.as_deref()?.parse().ok())
        .filter(|a: &Ipv4Addr| !a.is_loopback() && !a.is_unspecified())
        .collect();
    out.dedup();
    out
}

/// `config` with the discovered API URL and the announcement's allowed overrides, or
/// `None` when discovery was not asked for or (`ipa-use-mdns` only) found nothing.
/// `query` replaces IPA's query from `sources` (tests).
pub async fn discover_api(
    config: &Config,
    sources: Vec<Ipv4Addr>,
    policy: &LookupPolicy,
    query: Option<Query>,
) -> Result<Option<Config>, AgentError> {
    if !wanted(config) {
        return Ok(None);
    }
    let query = query.unwrap_or_else(|| Query::new(BAREMETAL, sources));
    let started = Instant::now();
    let mut rng = StdRng::from_os_rng();
    let mut round = 0;
    loop {
        round += 1;
        let q = query.clone();
        let found = tokio::task::spawn_blocking(move || mdns::discover(&q))
            .await
            .map_err(|e| AgentError::Startup(format!("mDNS discovery: {e}")))?;
        match found {
            Ok(ep) => {
                tracing::info!(url = %ep.url, round, sources = ?query.sources, "Ironic API found by mDNS");
                return Ok(Some(apply(config, &ep)));
            }
            Err(e) if !config.api_url_mdns => {
                tracing::info!(error = %e, "no Ironic API found by mDNS (ipa-use-mdns): serving without lookup");
                return Ok(None);
            }
            Err(e) => {
                let wait = lookup_wait(policy, round, &mut rng);
                if started.elapsed() + wait >= policy.timeout {
                    return Err(AgentError::Lookup(format!(
                        "ipa-api-url=mdns: no Ironic API found within {} s: {e}",
                        policy.timeout.as_secs()
                    )));
                }
                tracing::warn!(error = %e, round, retry_ms = wait.as_millis(), "no Ironic API found by mDNS yet");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The announcement applied: its URL, then its `ipa_*` properties that IPA allows by
/// default; the others (and bad values) are logged and left alone.
pub fn apply(config: &Config, ep: &Endpoint) -> Config {
    let mut c = config.clone();
    c.api_urls = vec![ep.url.clone()];
    for (name, value) in &ep.params {
        if !ALLOWED_OVERRIDES.contains(&name.as_str()) {
            tracing::info!(option = %name, "mDNS announcement sets an option ira does not let it override");
            continue;
        }
        match set_option(&mut c, name, Origin::Mdns, value) {
            Ok(()) => tracing::info!(option = %name, "option set by the mDNS announcement"),
            Err(e) => tracing::warn!(error = %e, "mDNS announcement's option ignored"),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn config(api_url_mdns: bool, use_mdns: bool, urls: &[&str]) -> Config {
        Config {
            api_url_mdns,
            use_mdns,
            api_urls: urls.iter().map(|u| u.to_string()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn discovery_is_wanted_for_mdns_or_use_mdns_without_a_url() {
        assert!(wanted(&config(true, false, &[])));
        assert!(wanted(&config(false, true, &[])));
        assert!(!wanted(&config(false, true, &["http://a"])));
        assert!(!wanted(&config(false, false, &[])));
        let standalone = Config {
            standalone: true,
            ..config(true, false, &[])
        };
        assert!(!wanted(&standalone));
    }

    #[test]
    fn only_allowed_overrides_apply() {
        let ep = Endpoint {
            url: "http://10.77.0.1:6385".into(),
            params: BTreeMap::from([
                ("ntp_server".into(), "10.77.0.1".into()),
                ("inspection_callback_url".into(), "not a url".into()),
                ("debug".into(), "True".into()),
            ]),
        };
        let c = apply(&config(true, false, &[]), &ep);
        assert_eq!(c.api_urls, ["http://10.77.0.1:6385"]);
        assert_eq!(c.ntp_server.as_deref(), Some("10.77.0.1"));
        assert_eq!(c.inspection_callback_url, None, "a bad value is ignored");
        assert!(!c.debug, "debug is not an allowed override");
    }

    fn silent_query() -> (std::net::UdpSocket, Query) {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let q = Query {
            dest: silent.local_addr().unwrap(),
            attempts: 1,
            first_wait: Duration::from_millis(20),
            ..Query::new(BAREMETAL, vec![Ipv4Addr::LOCALHOST])
        };
        (silent, q)
    }

    #[tokio::test]
    async fn use_mdns_without_an_answer_serves_without_lookup() {
        let (_silent, q) = silent_query();
        let r = discover_api(
            &config(false, true, &[]),
            Vec::new(),
            &LookupPolicy::default(),
            Some(q),
        )
        .await;
        assert!(matches!(r, Ok(None)), "{r:?}");
    }

    #[tokio::test]
    async fn mdns_without_an_answer_fails_at_the_lookup_timeout() {
        let (_silent, q) = silent_query();
        let policy = LookupPolicy {
            timeout: Duration::from_millis(600),
            interval: Duration::from_millis(50),
            backoff_unit: Duration::from_millis(50),
            ..LookupPolicy::default()
        };
        let started = std::time::Instant::now();
        let r = discover_api(&config(true, false, &[]), Vec::new(), &policy, Some(q)).await;
        let Err(AgentError::Lookup(m)) = r else {
            panic!("{r:?}")
        };
        assert!(m.contains("ipa-api-url=mdns"), "{m}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
