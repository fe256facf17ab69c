//! The DNS server: UDP and TCP sockets in, answers from the shared [`RecordTable`] out, and
//! names outside the cluster zone forwarded to upstream resolvers. Built on hickory-proto's
//! message codec; the socket loops are ours so that the hot path is one table lookup under
//! a read lock and no per-query allocation beyond the message itself.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::table::{Answer, QType, Rec, RecordTable};

/// The table shared between the watch (writer) and the server (readers).
pub type SharedTable = Arc<RwLock<RecordTable>>;

/// Errors of the DNS server boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read resolv.conf {path}: {source}")]
    ResolvConf {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dns socket {op}: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Debug)]
pub struct Config {
    /// TTL of cluster records (CoreDNS in kubeadm: 30 s).
    pub ttl: u32,
    /// Resolvers for names outside the cluster zone, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for one upstream.
    pub upstream_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: 30,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// The `nameserver` entries of a resolv.conf text (resolv.conf(5)), port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Reads the upstream resolvers from a resolv.conf file.
pub fn read_resolv_conf(path: &std::path::Path) -> Result<Vec<SocketAddr>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ResolvConf {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_resolv_conf(&text))
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

fn record(r: &Rec, ttl: u32) -> Option<Record> {
    Some(match r {
        Rec::A(n, ip) => Record::from_rdata(name(n)?, ttl, RData::A(A(*ip))),
        Rec::Aaaa(n, ip) => Record::from_rdata(name(n)?, ttl, RData::AAAA(AAAA(*ip))),
        Rec::Srv {
            name: n,
            port,
            target,
        } => Record::from_rdata(
            name(n)?,
            ttl,
            // Priority 0 and an equal weight per record, as CoreDNS does.
            RData::SRV(SRV::new(0, 100, *port, name(target)?)),
        ),
    })
}

/// The zone's SOA, for the authority section of negative answers (RFC 2308). Values
/// follow CoreDNS's kubernetes plugin (`ns.dns.<zone>`, `hostmaster.<zone>`, minimum = ttl).
fn soa(zone: &str, ttl: u32) -> Option<Record> {
    let rdata = SOA::new(
        name(&format!("ns.dns.{zone}"))?,
        name(&format!("hostmaster.{zone}"))?,
        // CoreDNS uses a time-based serial; any value works for a zone nobody transfers.
        1,
        7200,
        1800,
        86400,
        ttl,
    );
    Some(Record::from_rdata(name(zone)?, ttl, RData::SOA(rdata)))
}

/// What to do with one request: answer it, or forward the raw bytes upstream.
enum Outcome {
    Reply(Vec<u8>),
    Forward,
}

fn answer(table: &SharedTable, cfg: &Config, query: &[u8]) -> Outcome {
    let Ok(req) = Message::from_vec(query) else {
        // Not parseable: FORMERR with the ID if we have one.
        if query.len() >= 2 {
            let id = u16::from_be_bytes([query[0], query[1]]);
            let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return m.to_vec().map(Outcome::Reply).unwrap_or(Outcome::Forward);
        }
        return Outcome::Reply(Vec::new());
    };
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    let Some(q) = req.queries.first().cloned() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp
            .to_vec()
            .map(Outcome::Reply)
            .unwrap_or(Outcome::Reply(Vec::new()));
    };
    let qname = q.name().to_ascii();
    let qtype = match q.query_type() {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::SRV => QType::Srv,
        _ => QType::Other,
    };
    let (ans, zone) = {
        let t = match table.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        (t.lookup(&qname, qtype), t.zone().to_string())
    };
    resp.add_query(q);
    match ans {
        Answer::NotOurs => return Outcome::Forward,
        Answer::Records(recs, extra) => {
            resp.metadata.authoritative = true;
            for r in recs.iter().filter_map(|r| record(r, cfg.ttl)) {
                resp.add_answer(r);
            }
            for r in extra.iter().filter_map(|r| record(r, cfg.ttl)) {
                resp.add_additional(r);
            }
        }
        Answer::NoData | Answer::NxDomain => {
            resp.metadata.authoritative = true;
            if ans == Answer::NxDomain {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Some(s) = soa(&zone, cfg.ttl) {
                resp.authorities.push(s);
            }
        }
    }
    match resp.to_vec() {
        Ok(b) => Outcome::Reply(b),
        Err(e) => {
            tracing::warn!(error = %e, name = %qname, "cannot encode dns answer");
            let m = Message::error_msg(
                req.metadata.id,
                req.metadata.op_code,
                ResponseCode::ServFail,
            );
            Outcome::Reply(m.to_vec().unwrap_or_default())
        }
    }
}

/// Sends `query` to the upstreams in turn over UDP; SERVFAIL when none answers.
async fn forward(cfg: &Config, query: &[u8]) -> Vec<u8> {
    for up in &cfg.upstreams {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("literal");
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(cfg.upstream_timeout, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == *up && n >= 2 && buf[..2] == query[..2] => {
                buf.truncate(n);
                return buf;
            }
            _ => tracing::debug!(upstream = %up, "upstream did not answer"),
        }
    }
    let id = if query.len() >= 2 {
        u16::from_be_bytes([query[0], query[1]])
    } else {
        0
    };
    let mut m = Message::error_msg(id, OpCode::Query, ResponseCode::ServFail);
    if let Ok(req) = Message::from_vec(query) {
        m.add_queries(req.queries);
    }
    m.to_vec().unwrap_or_default()
}

async fn respond(table: &SharedTable, cfg: &Config, query: &[u8]) -> Vec<u8> {
    match answer(table, cfg, query) {
        Outcome::Reply(b) => b,
        Outcome::Forward => forward(cfg, query).await,
    }
}

/// Serves UDP until `shutdown` resolves. Cluster names are answered inline; forwarded
/// queries run in their own task so a slow upstream does not hold up the socket.
pub async fn run_udp(
    sock: UdpSocket,
    table: SharedTable,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let sock = Arc::new(sock);
    let cfg = Arc::new(cfg);
    let mut buf = vec![0u8; 4096];
    tokio::pin!(shutdown);
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => r.map_err(|source| Error::Socket { op: "receive", source })?,
            _ = &mut shutdown => return Ok(()),
        };
        let query = &buf[..n];
        match answer(&table, &cfg, query) {
            Outcome::Reply(b) => {
                if !b.is_empty() {
                    let _ = sock.send_to(&b, peer).await;
                }
            }
            Outcome::Forward => {
                let (sock, cfg, query) = (sock.clone(), cfg.clone(), query.to_vec());
                tokio::spawn(async move {
                    let b = forward(&cfg, &query).await;
                    let _ = sock.send_to(&b, peer).await;
                });
            }
        }
    }
}

async fn tcp_conn(mut s: TcpStream, table: SharedTable, cfg: Arc<Config>) {
    loop {
        let mut len = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).await.is_err() {
            return;
        }
        let b = respond(&table, &cfg, &q).await;
        let Ok(l) = u16::try_from(b.len()) else {
            return;
        };
        if s.write_all(&l.to_be_bytes()).await.is_err() || s.write_all(&b).await.is_err() {
            return;
        }
    }
}

/// Serves DNS over TCP (RFC 7766; clients retry here after a truncated UDP answer).
pub async fn run_tcp(
    listener: TcpListener,
    table: SharedTable,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let cfg = Arc::new(cfg);
    tokio::pin!(shutdown);
    loop {
        let (s, _) = tokio::select! {
            r = listener.accept() => r.map_err(|source| Error::Socket { op: "accept", source })?,
            _ = &mut shutdown => return Ok(()),
        };
        tokio::spawn(tcp_conn(s, table.clone(), cfg.clone()));
    }
}
