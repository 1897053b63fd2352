//! `MisbehavingServer`: an HTTP/1.1 file server on 127.0.0.1:0 that fails on purpose,
//! for the image pipeline tests. It can answer with error statuses first, drop the
//! connection after N body bytes, stall, refuse or garble Range requests, send fewer
//! bytes than it announces or more than a Content-Range allows, and use chunked
//! encoding. It records every request (path, Range, If-Range, Authorization).
//!
//! Each connection serves one request and is closed (`Connection: close`), so a cut
//! body is always seen by the client as a short body or a reset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server misbehaves; the default serves files correctly.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Statuses answered to the first requests, in order, before serving normally.
    pub statuses: Vec<u16>,
    /// Every request gets this status.
    pub always_status: Option<u16>,
    /// For the first responses, in order: close after this many body bytes.
    pub cut_after: Vec<u64>,
    /// The first response pauses after this many body bytes for this long.
    pub stall: Option<(u64, Duration)>,
    /// Range requests get a 200 with the whole body.
    pub ignore_range: bool,
    /// Range requests get a 206 whose Content-Range starts elsewhere (at 0).
    pub wrong_content_range: bool,
    /// Every response announces the full length but sends this many bytes fewer.
    pub short_by: u64,
    /// Answers to Range requests have no Content-Length and this many extra bytes.
    pub overlong_206: u64,
    /// No Content-Length: chunked transfer encoding.
    pub chunked: bool,
    /// Strong ETag to send.
    pub etag: Option<String>,
    /// Strong ETag sent from the second response on (the image re-published with the
    /// same bytes, or another backend); an `If-Range` naming another ETag gets a 200.
    pub etag_later: Option<String>,
    /// `gzip` or `deflate`: every body is sent compressed with this `Content-Encoding`,
    /// whatever the client accepts (ranges count the compressed bytes).
    pub content_encoding: Option<&'static str>,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request target as sent (absolute form through a proxy).
    pub target: String,
    /// The path it was served as (query stripped).
    pub path: String,
    /// `Range` header.
    pub range: Option<String>,
    /// `If-Range` header.
    pub if_range: Option<String>,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `Accept-Encoding` header.
    pub accept_encoding: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Arc<Vec<u8>>>,
    behaviour: Behaviour,
    requests: Vec<Recorded>,
    served: usize,
}

/// The server; stops when dropped.
pub struct MisbehavingServer {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MisbehavingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MisbehavingServer {
    /// Starts a server with `behaviour` and no files.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            behaviour,
            ..State::default()
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Self { addr, state, task }
    }

    /// Serves `body` at `path` (e.g. `/disk.img`).
    pub fn add(&self, path: &str, body: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_owned(), Arc::new(body));
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests for `path` so far.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

enum Plan {
    Status(u16),
    Serve {
        body: Arc<Vec<u8>>,
        behaviour: Behaviour,
        first: bool,
        cut: Option<u64>,
    },
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    // Absolute form (through a proxy): keep only the path.
    let path = target
        .split_once("://")
        .map(|(_, rest)| rest.find('/').map(|i| &rest[i..]).unwrap_or("/"))
        .unwrap_or(&target);
    let path = path.split('?').next().unwrap_or("/").to_owned();
    let range = headers.get("range").cloned();
    let if_range = headers.get("if-range").cloned();
    let plan = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            target: target.clone(),
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            authorization: headers.get("authorization").cloned(),
            accept_encoding: headers.get("accept-encoding").cloned(),
        });
        let n = st.served;
        st.served += 1;
        let b = st.behaviour.clone();
        if let Some(s) = b.always_status {
            Plan::Status(s)
        } else if let Some(&s) = b.statuses.get(n) {
            Plan::Status(s)
        } else {
            match st.files.get(&path) {
                None => Plan::Status(404),
                Some(body) => {
                    let k = n - b.statuses.len();
                    Plan::Serve {
                        body: body.clone(),
                        cut: b.cut_after.get(k).copied(),
                        first: k == 0,
                        behaviour: b,
                    }
                }
            }
        }
    };
    let (body, b, first, cut) = match plan {
        Plan::Status(s) => {
            let msg = format!("status {s}\n");
            let _ = sock
                .write_all(
                    format!(
                        "HTTP/1.1 {s} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                        msg.len()
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
        Plan::Serve {
            body,
            behaviour,
            first,
            cut,
        } => (body, behaviour, first, cut),
    };
    let body = match b.content_encoding {
        Some(enc) => Arc::new(encode(enc, &body)),
        None => body,
    };
    let total = body.len() as u64;
    let etag = match (&b.etag_later, first) {
        (Some(later), false) => Some(later.clone()),
        _ => b.etag.clone(),
    };
    // RFC 9110 13.1.5: a validator that does not match means the whole representation.
    let validator_matches = match (&if_range, &etag) {
        (Some(v), Some(e)) => *v == format!("\"{e}\""),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|_| !b.ignore_range && validator_matches);
    let mut head = String::new();
    let (from, mut extra, mut length) = match start {
        Some(s) if s < total => {
            let cr_start = if b.wrong_content_range { 0 } else { s };
            head.push_str(&format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {cr_start}-{}/{total}\r\n",
                total - 1
            ));
            (s, b.overlong_206, Some(total - s))
        }
        Some(_) => {
            let _ = sock
                .write_all(b"HTTP/1.1 416 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
        None => {
            head.push_str("HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\n");
            (0, 0, Some(total))
        }
    };
    if extra > 0 {
        length = None;
    }
    if b.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else if let Some(l) = length {
        head.push_str(&format!("Content-Length: {l}\r\n"));
    }
    if let Some(enc) = b.content_encoding {
        head.push_str(&format!("Content-Encoding: {enc}\r\n"));
    }
    if let Some(e) = &etag {
        head.push_str(&format!("ETag: \"{e}\"\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut data = &body[usize::try_from(from).unwrap()..];
    if b.short_by > 0 {
        data = &data[..data
            .len()
            .saturating_sub(usize::try_from(b.short_by).unwrap())];
        extra = 0;
    }
    let mut sent = 0u64;
    let mut stalled = false;
    let garbage = vec![0x5au8; usize::try_from(extra).unwrap()];
    for piece in data.chunks(64 << 10).chain(std::iter::once(&garbage[..])) {
        if piece.is_empty() {
            continue;
        }
        let mut piece = piece;
        if let Some(c) = cut {
            if sent + piece.len() as u64 >= c {
                piece = &piece[..usize::try_from(c - sent).unwrap()];
                let _ = write_piece(&mut sock, piece, b.chunked).await;
                let _ = sock.flush().await;
                return; // drop: the connection closes mid-body
            }
        }
        if let (true, Some((after, pause))) = (first && !stalled, b.stall) {
            if sent + piece.len() as u64 >= after {
                stalled = true;
                tokio::time::sleep(pause).await;
            }
        }
        if write_piece(&mut sock, piece, b.chunked).await.is_err() {
            return;
        }
        sent += piece.len() as u64;
    }
    if b.chunked {
        let _ = sock.write_all(b"0\r\n\r\n").await;
    }
    let _ = sock.flush().await;
    let _ = sock.shutdown().await;
}

async fn write_piece(sock: &mut TcpStream, piece: &[u8], chunked: bool) -> std::io::Result<()> {
    if chunked {
        sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        sock.write_all(piece).await?;
        sock.write_all(b"\r\n").await
    } else {
        sock.write_all(piece).await
    }
}

/// `body` compressed as `Content-Encoding: enc` (RFC 9110: deflate is zlib-wrapped).
fn encode(enc: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let level = flate2::Compression::fast();
    match enc {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(body).expect("in memory");
            e.finish().expect("in memory")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(body).expect("in memory");
            e.finish().expect("in memory")
        }
        other => panic!("no encoder for {other}"),
    }
}
