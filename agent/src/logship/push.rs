//! The push to the control plane's log store: `POST /apis/logs.keel.dev/v1/push` over the
//! agent's own authenticated client (its node certificate). The JSON shape is documented in
//! `control/src/logs/wire.rs`; the two sides share the JSON, not a crate.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PATH: &str = "/apis/logs.keel.dev/v1/push";

/// Bodies above this are split in two (the API server refuses bodies over 3 MiB).
pub const MAX_BODY: usize = 2_500_000;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    pub node: String,
    pub streams: Vec<PushStream>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushStream {
    pub source: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub labels: BTreeMap<String, String>,
    /// `[position or null, Unix ns, 0 stdout / 1 stderr, text]`.
    pub lines: Vec<(Option<u64>, i64, u8, String)>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub duplicates: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the control plane refused the log push ({code}): {message}")]
    Refused { code: u16, message: String },
    #[error("sending the log push: {0}")]
    Send(String),
}

impl PushRequest {
    pub fn lines(&self) -> usize {
        self.streams.iter().map(|s| s.lines.len()).sum()
    }

    /// Splits into two pushes of about half the lines each, keeping each source's order.
    pub fn split(self) -> (PushRequest, PushRequest) {
        let half = self.lines() / 2;
        let mut first = PushRequest {
            node: self.node.clone(),
            streams: Vec::new(),
        };
        let mut second = first.clone();
        let mut taken = 0;
        for mut s in self.streams {
            let room = half.saturating_sub(taken);
            if room >= s.lines.len() {
                taken += s.lines.len();
                first.streams.push(s);
            } else if room == 0 {
                second.streams.push(s);
            } else {
                let rest = s.lines.split_off(room);
                taken += room;
                let mut tail = s.clone();
                tail.lines = rest;
                first.streams.push(s);
                second.streams.push(tail);
            }
        }
        (first, second)
    }
}

/// Sends one push (split when its body is too large); returns the store's counts.
pub async fn send(client: &kube::Client, req: PushRequest) -> Result<PushResponse, PushError> {
    let mut todo = vec![req];
    let mut total = PushResponse::default();
    while let Some(req) = todo.pop() {
        let body = serde_json::to_vec(&req).map_err(|e| PushError::Send(e.to_string()))?;
        if body.len() > MAX_BODY && req.lines() > 1 {
            let (a, b) = req.split();
            // Stack: `a` goes first.
            todo.push(b);
            todo.push(a);
            continue;
        }
        let http = http::Request::post(PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| PushError::Send(e.to_string()))?;
        match client.request::<PushResponse>(http).await {
            Ok(r) => {
                total.accepted += r.accepted;
                total.duplicates += r.duplicates;
            }
            Err(kube::Error::Api(s)) => {
                return Err(PushError::Refused {
                    code: s.code,
                    message: s.message,
                });
            }
            Err(e) => return Err(PushError::Send(crate::client::chain(&e))),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(source: &str, n: usize) -> PushStream {
        PushStream {
            source: source.into(),
            lines: (0..n)
                .map(|i| (Some(i as u64), 0, 0, format!("{source}{i}")))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn split_keeps_every_line_once_in_order() {
        let req = PushRequest {
            node: "n".into(),
            streams: vec![stream("a", 3), stream("b", 4), stream("c", 1)],
        };
        let (x, y) = req.split();
        assert_eq!((x.lines(), y.lines()), (4, 4));
        let all: Vec<String> = x
            .streams
            .iter()
            .chain(y.streams.iter())
            .flat_map(|s| s.lines.iter().map(|l| l.3.clone()))
            .collect();
        assert_eq!(all, ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "c0"]);
        assert_eq!(y.streams[0].source, "b");
    }
}
