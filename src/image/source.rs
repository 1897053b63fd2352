//! The HTTP source of an image: one download delivered as a gap-free stream of
//! [`Chunk`]s, however often the connection fails underneath.
//!
//! Retries (INVARIANTS 6, protocol spec 2.3): connection failures, timeouts
//! (`image_download_connection_timeout` for connecting and for each read), resets,
//! short bodies and 5xx answers are retried up to `image_download_connection_retries`
//! times in all, `image_download_connection_retry_interval` apart ([`RetryBudget`]);
//! 4xx answers are fatal at once. Before the first byte, each retry moves to the next of
//! `urls` (round robin); after it, the same URL is resumed.
//!
//! Resuming after a dropped connection: the next request asks for `Range: bytes=N-`
//! where N counts every byte already handed downstream (plus the partly filled buffer
//! kept here), with `If-Range` naming the first answer's strong `ETag` or
//! `Last-Modified`. A `206` whose `Content-Range` starts at N and ends at the known
//! total continues the stream. Any other answer (`200`: Range refused or the validator
//! no longer matches; a `206` with another range) is read from byte 0 and its first N
//! bytes are dropped here. Downstream stages therefore never see a restart: the hasher,
//! decompressor and writer keep their state, and the bytes hashed are exactly the bytes
//! written. If the resent bytes differ from the first ones (the image changed on the
//! server), the checksum of the whole cannot match, so a mixed image is never accepted;
//! when the server's validators show the change (a re-published image, or load-balanced
//! backends with their own ETags), [`ImageError::SourceChanged`] ends this stream at once,
//! without retrying the Range, and the pipeline starts over from byte 0 with fresh stages
//! (as IPA does); the checksum then decides whether the new bytes are the image.
//!
//! Requests ask for `Accept-Encoding: identity`; a body the server compresses anyway
//! (`Content-Encoding: gzip` or `deflate`) is decoded here, so downstream stages hash and
//! write the image itself, as IPA's HTTP client does. Such a transfer cannot resume with
//! `Range` (ranges count compressed bytes): after a drop it is read from byte 0 again and
//! the bytes already taken are dropped, as for a refused Range.
//!
//! A body longer than its announced size (`Content-Length` of the first answer, or the
//! total of a `Content-Range`) is fatal; a shorter one is resumed like a drop.
//! URLs only appear as [`RedactedUrl`] in errors and logs: no query string (signed
//! URLs carry their signature there), no user info.

use super::progress::Progress;
use super::url::{redact, RedactedUrl};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_RANGE, ETAG,
    IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{Proxy, StatusCode};
use tokio::sync::mpsc;

use super::content_encoding::{ContentDecoder, FEED_LIMIT};
use super::error::{describe_reqwest, ImageError};
use super::info::ImageInfo;
use super::pool::{Buf, BufPool, Chunk};

/// Download settings from the agent configuration.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Connect timeout, and the longest wait for any read (`image_download_connection_timeout`).
    pub timeout: Duration,
    /// Retries after transient failures (`image_download_connection_retries`).
    pub retries: u32,
    /// Sleep before each retry (`image_download_connection_retry_interval`).
    pub retry_interval: Duration,
    /// TLS for https URLs; `None` = system roots, TLS 1.2 minimum.
    pub tls: Option<rustls::ClientConfig>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            retries: 9,
            retry_interval: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl SourceOptions {
    /// The options the agent configuration gives (`tls` from `insecure`/`cafile`).
    pub fn from_config(config: &crate::config::Config) -> Result<Self, ImageError> {
        let tls = crate::tls_client::client_config(
            config.insecure,
            config.cafile.as_deref(),
            &config.tls_min_version,
        )
        .map_err(|e| ImageError::Client(e.to_string()))?;
        Ok(Self {
            timeout: config.image_download_connection_timeout,
            retries: config.image_download_connection_retries,
            retry_interval: config.image_download_connection_retry_interval,
            tls: Some(tls),
        })
    }
}

/// The retries left for one image write, shared by its requests and its attempts.
#[derive(Debug)]
pub struct RetryBudget {
    left: AtomicU32,
    total: u32,
    interval: Duration,
}

impl RetryBudget {
    /// `retries` retries, `interval` apart.
    pub fn new(retries: u32, interval: Duration) -> Self {
        Self {
            left: AtomicU32::new(retries),
            total: retries,
            interval,
        }
    }

    /// If `err` is transient and a retry is left: logs it, sleeps, returns true.
    pub async fn retry(&self, err: &ImageError) -> bool {
        if !err.is_transient() {
            return false;
        }
        let taken = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match taken {
            Ok(left) => {
                tracing::warn!(error = %err, retry = self.total - left + 1, of = self.total,
                    "image download failed; retrying in {:?}", self.interval);
                tokio::time::sleep(self.interval).await;
                true
            }
            Err(_) => false,
        }
    }

    /// Retries used so far.
    pub fn used(&self) -> u32 {
        self.total - self.left.load(Ordering::Acquire)
    }
}

/// How to authenticate to the image server (`IPA: standby._download_with_proxy`).
#[derive(Clone)]
enum Auth {
    None,
    Basic { user: String, password: String },
    Header(HeaderValue),
}

impl Auth {
    fn from_info(info: &ImageInfo) -> Result<Self, ImageError> {
        if let Some(b64) = info
            .image_request_authorization
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    ImageError::Client("image_request_authorization is not base64".into())
                })?;
            let mut v = HeaderValue::from_bytes(&raw).map_err(|_| {
                ImageError::Client("image_request_authorization is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            return Ok(Self::Header(v));
        }
        if info.image_server_auth_strategy.as_deref() == Some("http_basic") {
            let user = info.image_server_user.clone().filter(|s| !s.is_empty());
            let password = info.image_server_password.clone().filter(|s| !s.is_empty());
            let missing: Vec<&str> = [("user", user.is_none()), ("password", password.is_none())]
                .into_iter()
                .filter_map(|(k, m)| m.then_some(k))
                .collect();
            if !missing.is_empty() {
                let list = missing
                    .iter()
                    .map(|m| format!("'{m}'"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ImageError::Client(format!(
                    "Missing [{list}] fields from HTTP(S) basic auth config"
                )));
            }
            return Ok(Self::Basic {
                user: user.unwrap_or_default(),
                password: password.unwrap_or_default(),
            });
        }
        Ok(Self::None)
    }

    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => req,
            Self::Basic { user, password } => req.basic_auth(user, Some(password)),
            Self::Header(v) => req.header(AUTHORIZATION, v.clone()),
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Length of the image stream.
    pub bytes: u64,
    /// Bytes received in all, including bytes dropped after a refused Range.
    pub downloaded: u64,
    /// HTTP requests sent.
    pub requests: u32,
    /// Resumptions served with `206`.
    pub resumed: u32,
    /// Resumptions that had to read from byte 0 again.
    pub restarted: u32,
}

/// The start of an image as [`HttpSource::read_head`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The first bytes (fewer than asked only when the image is shorter).
    pub bytes: Vec<u8>,
    /// The image's length as the server announced it, if it did.
    pub total: Option<u64>,
}

/// The state of one download across its requests.
struct Stream<'a> {
    pool: &'a mut BufPool,
    tx: &'a mpsc::Sender<Chunk>,
    progress: &'a Progress,
    /// Bytes taken into the stream (sent or in `cur`).
    pos: u64,
    /// The stream offset of `cur`'s first byte.
    sent: u64,
    cur: Option<Buf>,
    total: Option<u64>,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    /// The first answer came with a gzip/deflate `Content-Encoding`.
    encoded: bool,
    report: SourceReport,
}

/// An HTTP(S) client for one image, with its auth, proxies and timeouts.
pub struct HttpSource {
    client: reqwest::Client,
    urls: Vec<(String, RedactedUrl)>,
    auth: Auth,
    read_timeout: Duration,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&RedactedUrl> = self.urls.iter().map(|(_, r)| r).collect();
        f.debug_struct("HttpSource")
            .field("urls", &urls)
            .finish_non_exhaustive()
    }
}

fn network(url: &RedactedUrl, e: reqwest::Error) -> ImageError {
    ImageError::Network {
        url: url.clone(),
        reason: describe_reqwest(e),
    }
}

/// The decoder for a response's `Content-Encoding`, `None` for identity.
fn content_decoder(h: &HeaderMap, url: &RedactedUrl) -> Result<Option<ContentDecoder>, ImageError> {
    let value = h
        .get(CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    ContentDecoder::for_header(value.as_deref()).map_err(|e| ImageError::UnsupportedEncoding {
        url: url.clone(),
        encoding: e.0,
    })
}

fn bad_encoding(url: &RedactedUrl, encoding: &'static str, e: std::io::Error) -> ImageError {
    ImageError::BadEncoding {
        url: url.clone(),
        encoding,
        reason: e.to_string(),
    }
}

/// Parses `bytes a-b/c` into (a, b, c).
fn content_range(v: &HeaderValue) -> Option<(u64, u64, u64)> {
    let s = v.to_str().ok()?.trim().strip_prefix("bytes ")?;
    let (range, total) = s.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

fn strong_etag(h: &HeaderMap) -> Option<HeaderValue> {
    h.get(ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
        .cloned()
}

impl HttpSource {
    /// A client for `info`'s URLs with its auth and proxies.
    pub fn new(info: &ImageInfo, opts: &SourceOptions) -> Result<Self, ImageError> {
        let urls = info
            .urls
            .iter()
            .map(|u| Ok((u.clone(), RedactedUrl::parse(u)?)))
            .collect::<Result<Vec<_>, ImageError>>()?;
        let tls = match &opts.tls {
            Some(t) => t.clone(),
            None => crate::tls_client::client_config_with(
                false,
                None,
                "1.2",
                info.urls.iter().any(|u| u.starts_with("https://")),
            )
            .map_err(|e| ImageError::Client(e.to_string()))?,
        };
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(opts.timeout)
            .read_timeout(opts.timeout);
        let proxies = info.proxies.clone().unwrap_or_default();
        if proxies.is_empty() {
            builder = builder.no_proxy();
        }
        let no_proxy = info
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        for (scheme, url) in &proxies {
            let proxy = match scheme.as_str() {
                "http" => Proxy::http(url),
                "https" => Proxy::https(url),
                other => {
                    tracing::warn!(scheme = other, "ignoring a proxy for an unknown scheme");
                    continue;
                }
            }
            .map_err(|_| ImageError::Client(format!("invalid {scheme} proxy {}", redact(url))))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        let client = builder
            .build()
            .map_err(|e| ImageError::Client(describe_reqwest(e)))?;
        Ok(Self {
            client,
            urls,
            auth: Auth::from_info(info)?,
            read_timeout: opts.timeout,
        })
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        // The checksum covers the image as stored: ask for it uncompressed.
        self.auth
            .apply(self.client.get(url))
            .header(ACCEPT_ENCODING, "identity")
    }

    /// Fetches a small document (a checksum file) whole, refusing more than `limit`
    /// bytes; transient failures are retried on `budget`'s terms.
    pub async fn fetch_bounded_with(
        &self,
        url: &str,
        limit: u64,
        budget: &RetryBudget,
    ) -> Result<Vec<u8>, ImageError> {
        let redacted = RedactedUrl::parse(url)?;
        loop {
            let res = self.fetch_once(url, &redacted, limit).await;
            match res {
                Err(e) if budget.retry(&e).await => continue,
                other => return other,
            }
        }
    }

    /// [`Self::fetch_bounded_with`] with no retries.
    pub async fn fetch_bounded(&self, url: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        self.fetch_bounded_with(url, limit, &RetryBudget::new(0, Duration::ZERO))
            .await
    }

    async fn fetch_once(
        &self,
        url: &str,
        redacted: &RedactedUrl,
        limit: u64,
    ) -> Result<Vec<u8>, ImageError> {
        let mut resp = self
            .get(url)
            .send()
            .await
            .map_err(|e| network(redacted, e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(ImageError::Http {
                url: redacted.clone(),
                status: status.as_u16(),
            });
        }
        let too_big = || ImageError::ChecksumFile {
            url: redacted.clone(),
            reason: format!("larger than {limit} bytes"),
        };
        if resp.content_length().is_some_and(|l| l > limit) {
            return Err(too_big());
        }
        let mut decoder = content_decoder(resp.headers(), redacted)?;
        let bad = |name, e| bad_encoding(redacted, name, e);
        let mut body = Vec::new();
        let take = |body: &mut Vec<u8>, data: &[u8]| {
            if body.len() as u64 + data.len() as u64 > limit {
                return Err(too_big());
            }
            body.extend_from_slice(data);
            Ok(())
        };
        while let Some(c) = resp.chunk().await.map_err(|e| network(redacted, e))? {
            match &mut decoder {
                None => take(&mut body, &c)?,
                Some(d) => {
                    for piece in c.chunks(FEED_LIMIT) {
                        take(&mut body, &d.feed(piece).map_err(|e| bad(d.name(), e))?)?;
                    }
                }
            }
        }
        if let Some(d) = decoder {
            let name = d.name();
            take(&mut body, &d.finish().map_err(|e| bad(name, e))?)?;
        }
        Ok(body)
    }

    /// Reads the first `n` bytes of the image, retrying within `budget` like a full
    /// download, and stops the transfer as soon as they have arrived.
    pub async fn read_head(&self, n: usize, budget: &RetryBudget) -> Result<Head, ImageError> {
        let mut pool = BufPool::new(2, n);
        let (tx, mut rx) = mpsc::channel::<Chunk>(1);
        let progress = Progress::new();
        let fetch = async {
            let res = self.stream(&mut pool, &tx, budget, &progress).await;
            drop(tx);
            res
        };
        let first = async move {
            let chunk = rx.recv().await;
            // Nobody reads further: the source stops at its next send.
            drop(rx);
            chunk
        };
        let (res, first) = tokio::join!(fetch, first);
        match res {
            Ok(_) | Err(ImageError::Aborted) => {}
            Err(e) => return Err(e),
        }
        let mut bytes = first.map(|c| c.buf.as_slice().to_vec()).unwrap_or_default();
        bytes.truncate(n);
        Ok(Head {
            bytes,
            total: progress.total(),
        })
    }

    /// Downloads the image into `pool`'s buffers and sends them, full and in order, to
    /// `tx`, resuming or retrying within `budget`. Returns when the last byte was sent.
    pub async fn stream(
        &self,
        pool: &mut BufPool,
        tx: &mpsc::Sender<Chunk>,
        budget: &RetryBudget,
        progress: &Progress,
    ) -> Result<SourceReport, ImageError> {
        let mut st = Stream {
            pool,
            tx,
            progress,
            pos: 0,
            sent: 0,
            cur: None,
            total: None,
            etag: None,
            last_modified: None,
            encoded: false,
            report: SourceReport::default(),
        };
        let mut url_idx = 0;
        let tx_closed = st.tx;
        loop {
            let (url, redacted) = &self.urls[url_idx % self.urls.len()];
            let res = tokio::select! {
                r = self.attempt(&mut st, url, redacted) => r,
                // Every later stage has stopped: nobody will read what we download.
                _ = tx_closed.closed() => Err(ImageError::Aborted),
            };
            match res {
                Ok(()) => break,
                // Bytes already handed downstream belong to the old image: only a new
                // pipeline attempt from byte 0, with fresh stages, can use the new one.
                Err(e @ ImageError::SourceChanged { .. }) => return Err(e),
                Err(e) => {
                    let retry = tokio::select! {
                        r = budget.retry(&e) => r,
                        _ = tx_closed.closed() => false,
                    };
                    if !retry {
                        return Err(e);
                    }
                    if st.pos == 0 {
                        url_idx += 1;
                    }
                }
            }
        }
        if let Some(buf) = st.cur.take() {
            if !buf.is_empty() {
                send(&mut st, buf).await?;
            }
        }
        st.report.bytes = st.pos;
        Ok(st.report)
    }

    /// One request: from `st.pos` on, until the body ends or fails.
    async fn attempt(
        &self,
        st: &mut Stream<'_>,
        url: &str,
        redacted: &RedactedUrl,
    ) -> Result<(), ImageError> {
        let mut req = self.get(url);
        let resuming = st.pos > 0;
        // A Range addresses the encoded bytes of a compressed transfer, not the image's:
        // such a download can only read from byte 0 again.
        let ranged = resuming && !st.encoded;
        if ranged {
            req = req.header(RANGE, format!("bytes={}-", st.pos));
            if let Some(v) = st.etag.clone().or_else(|| st.last_modified.clone()) {
                req = req.header(IF_RANGE, v);
            }
        }
        st.report.requests += 1;
        let mut resp = req.send().await.map_err(|e| network(redacted, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let http = |status: StatusCode| ImageError::Http {
            url: redacted.clone(),
            status: status.as_u16(),
        };
        let decoder_for = |h: &HeaderMap| content_decoder(h, redacted);
        // Bytes of this body to drop before the stream continues.
        let mut skip = 0;
        let mut decoder;
        match status {
            StatusCode::PARTIAL_CONTENT if ranged => {
                decoder = decoder_for(&headers)?;
                let ok = decoder.is_none()
                    && headers
                        .get(CONTENT_RANGE)
                        .and_then(content_range)
                        .is_some_and(|(a, b, c)| {
                            a == st.pos
                                && b.checked_add(1) == Some(c)
                                && st.total.is_none_or(|t| t == c)
                        });
                if !ok {
                    // Not the range we asked for: read the whole image again instead.
                    tracing::warn!(url = %redacted, "unusable Content-Range in a 206 answer; restarting from byte 0");
                    st.report.requests += 1;
                    resp = self
                        .get(url)
                        .send()
                        .await
                        .map_err(|e| network(redacted, e))?;
                    if resp.status() != StatusCode::OK {
                        return Err(http(resp.status()));
                    }
                    decoder = decoder_for(resp.headers())?;
                    skip = st.pos;
                    st.report.restarted += 1;
                } else {
                    // A first answer without a length (chunked) learns it here, so a body
                    // running past it is caught from now on.
                    if st.total.is_none() {
                        st.total = headers
                            .get(CONTENT_RANGE)
                            .and_then(content_range)
                            .map(|r| r.2);
                    }
                    st.report.resumed += 1;
                    tracing::info!(url = %redacted, from = st.pos, "download resumed");
                }
            }
            StatusCode::OK => {
                decoder = decoder_for(&headers)?;
                if resuming {
                    // An encoded length says nothing about the image's.
                    let length_differs = decoder.is_none()
                        && st.total.is_some()
                        && resp.content_length() != st.total;
                    let changed = (st.etag.is_some() && strong_etag(&headers) != st.etag)
                        || (st.etag.is_none()
                            && st.last_modified.is_some()
                            && headers.get(LAST_MODIFIED) != st.last_modified.as_ref())
                        || length_differs;
                    if changed {
                        return Err(ImageError::SourceChanged {
                            url: redacted.clone(),
                        });
                    }
                    if ranged {
                        tracing::warn!(url = %redacted, from = st.pos, "server ignored the Range request; reading from byte 0 again");
                    } else {
                        tracing::warn!(url = %redacted, from = st.pos, "a compressed transfer cannot resume; reading from byte 0 again");
                    }
                    skip = st.pos;
                    st.report.restarted += 1;
                } else {
                    st.encoded = decoder.is_some();
                    st.total = if st.encoded {
                        None
                    } else {
                        resp.content_length()
                    };
                    st.etag = strong_etag(&headers);
                    st.last_modified = headers.get(LAST_MODIFIED).cloned();
                    if let Some(t) = st.total {
                        st.progress.set_total(t);
                    }
                    if let Some(d) = &decoder {
                        tracing::info!(url = %redacted, encoding = d.name(),
                            "the server compressed the transfer; decoding it before hashing");
                    }
                }
            }
            s => return Err(http(s)),
        }
        let bad_encoding = |name, e| bad_encoding(redacted, name, e);
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(match st.total {
                        _ if e.is_timeout() => ImageError::Timeout {
                            url: redacted.clone(),
                            after: self.read_timeout,
                            received: st.pos,
                            expected: st.total,
                        },
                        Some(expected) if st.pos < expected => {
                            tracing::debug!(url = %redacted, error = %describe_reqwest(e), "body cut short");
                            ImageError::Truncated {
                                url: redacted.clone(),
                                received: st.pos,
                                expected,
                            }
                        }
                        _ => network(redacted, e),
                    })
                }
            };
            st.report.downloaded += chunk.len() as u64;
            match &mut decoder {
                None => push(st, &chunk, &mut skip, redacted).await?,
                Some(d) => {
                    for piece in chunk.chunks(FEED_LIMIT) {
                        let plain = d.feed(piece).map_err(|e| bad_encoding(d.name(), e))?;
                        push(st, &plain, &mut skip, redacted).await?;
                    }
                }
            }
        }
        if let Some(d) = decoder {
            let name = d.name();
            let plain = d.finish().map_err(|e| bad_encoding(name, e))?;
            push(st, &plain, &mut skip, redacted).await?;
        }
        if skip > 0 {
            return Err(ImageError::Truncated {
                url: redacted.clone(),
                received: st.pos,
                expected: st.total.unwrap_or(st.pos),
            });
        }
        if let Some(expected) = st.total {
            if st.pos < expected {
                return Err(ImageError::Truncated {
                    url: redacted.clone(),
                    received: st.pos,
                    expected,
                });
            }
        }
        Ok(())
    }
}

/// Takes `data` (image bytes of one body, decoded) into the stream: drops what `skip`
/// still owes, fills pool buffers and sends the full ones downstream.
async fn push(
    st: &mut Stream<'_>,
    mut data: &[u8],
    skip: &mut u64,
    redacted: &RedactedUrl,
) -> Result<(), ImageError> {
    if *skip > 0 {
        let n = usize::try_from(*skip).unwrap_or(usize::MAX).min(data.len());
        *skip -= n as u64;
        data = &data[n..];
    }
    st.progress.add_downloaded(data.len() as u64);
    if let Some(expected) = st.total {
        if st.pos + data.len() as u64 > expected {
            return Err(ImageError::TooManyBytes {
                url: redacted.clone(),
                expected,
            });
        }
    }
    while !data.is_empty() {
        let buf = match &mut st.cur {
            Some(b) => b,
            None => st.cur.insert(st.pool.get().await),
        };
        let n = buf.extend_from_slice(data);
        data = &data[n..];
        st.pos += n as u64;
        if buf.is_full() {
            let buf = st.cur.take().expect("just filled");
            send(st, buf).await?;
        }
    }
    Ok(())
}

/// Sends a buffer downstream at the stream's next offset.
async fn send(st: &mut Stream<'_>, buf: Buf) -> Result<(), ImageError> {
    let len = buf.len() as u64;
    st.tx
        .send(Chunk {
            offset: st.sent,
            buf,
        })
        .await
        .map_err(|_| ImageError::Aborted)?;
    st.sent += len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        let v = HeaderValue::from_static("bytes 100-199/200");
        assert_eq!(content_range(&v), Some((100, 199, 200)));
        assert_eq!(
            content_range(&HeaderValue::from_static("bytes 1-2/*")),
            None
        );
        assert_eq!(
            content_range(&HeaderValue::from_static("items 1-2/3")),
            None
        );
    }

    #[test]
    fn basic_auth_needs_both_fields() {
        let info = ImageInfo::from_value(
            &serde_json::json!({"id": "i", "urls": ["http://h/x"], "checksum": "a".repeat(64),
                "image_server_auth_strategy": "http_basic", "image_server_user": "u"}),
            false,
        )
        .unwrap();
        let e = HttpSource::new(&info, &SourceOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "HTTP client: Missing ['password'] fields from HTTP(S) basic auth config"
        );
    }
}
