//! `keel-control logs`: queries the log store through the API server (admin kubeconfig) and
//! prints one line per log line, prefixed `namespace/pod/container: ` (`node/keel-agent: ` for
//! an agent's own logs), following `continue` tokens until `--limit` lines or the end.

use super::http::PREFIX;
use super::wire::{LogLine, LogLineList};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::PathBuf;

/// The command's flags, already parsed by `main.rs`.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub kubeconfig: PathBuf,
    pub namespace: Option<String>,
    pub selector: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub node: Option<String>,
    /// Only the agents' own logs.
    pub agent: bool,
    /// A duration before now (`10m`) or an RFC 3339 time.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Most lines printed in all (None: every matching line).
    pub limit: Option<usize>,
    pub timestamps: bool,
    /// Print the bare lines without the prefix.
    pub no_prefix: bool,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string of one page.
pub fn query_string(o: &LogsOptions, page: usize, token: Option<&str>) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("namespace", &o.namespace),
        ("selector", &o.selector),
        ("pod", &o.pod),
        ("container", &o.container),
        ("node", &o.node),
        ("since", &o.since),
        ("until", &o.until),
    ] {
        if let Some(v) = v {
            pairs.push((k, v.clone()));
        }
    }
    if o.agent {
        pairs.push(("agent", "true".into()));
    }
    pairs.push(("limit", page.to_string()));
    if let Some(t) = token {
        pairs.push(("continue", t.to_string()));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// How one line prints.
pub fn render(l: &LogLine, o: &LogsOptions) -> String {
    let mut s = String::new();
    if !o.no_prefix {
        if l.namespace.is_empty() && l.pod.is_empty() {
            s.push_str(&format!("{}/{}: ", l.node, l.container));
        } else {
            s.push_str(&format!("{}/{}/{}: ", l.namespace, l.pod, l.container));
        }
    }
    if o.timestamps {
        s.push_str(&l.time);
        s.push(' ');
    }
    s.push_str(&l.line);
    s
}

/// Runs the query and prints the lines to stdout.
pub async fn logs(o: &LogsOptions) -> Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&o.kubeconfig).with_context(|| {
        format!(
            "reading the kubeconfig {} (pass --kubeconfig)",
            o.kubeconfig.display()
        )
    })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("using {}", o.kubeconfig.display()))?;
    let client = kube::Client::try_from(config)?;
    let mut printed = 0usize;
    let mut token: Option<String> = None;
    let stdout = std::io::stdout();
    loop {
        let page = o
            .limit
            .map(|l| l.saturating_sub(printed))
            .unwrap_or(usize::MAX)
            .min(super::query::MAX_LIMIT / 5);
        if page == 0 {
            break;
        }
        let url = format!("{PREFIX}/query?{}", query_string(o, page, token.as_deref()));
        let req = http::Request::get(&url).body(Vec::new())?;
        let text = match client.request_text(req).await {
            Ok(t) => t,
            Err(kube::Error::Api(s)) => bail!("the log query failed ({}): {}", s.code, s.message),
            Err(e) => return Err(e).context("querying the log store"),
        };
        let list: LogLineList =
            serde_json::from_str(&text).context("the server's answer is not a LogLineList")?;
        let mut out = stdout.lock();
        for l in &list.items {
            writeln!(out, "{}", render(l, o))?;
        }
        printed += list.items.len();
        match list.r#continue {
            Some(t) if !list.items.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_encode_values() {
        let o = LogsOptions {
            namespace: Some("default".into()),
            selector: Some("app in (a,b)".into()),
            since: Some("2026-11-27T10:00:00+01:00".into()),
            agent: true,
            ..Default::default()
        };
        assert_eq!(
            query_string(&o, 10, Some("1.2")),
            "namespace=default&selector=app%20in%20%28a%2Cb%29&since=2026-11-27T10%3A00%3A00%2B01%3A00&agent=true&limit=10&continue=1.2"
        );
    }

    #[test]
    fn prefixes() {
        let l = LogLine {
            node: "n1".into(),
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
            line: "hello".into(),
            time: "T".into(),
            ..Default::default()
        };
        let o = LogsOptions::default();
        assert_eq!(render(&l, &o), "ns/p/c: hello");
        let agent = LogLine {
            namespace: String::new(),
            pod: String::new(),
            container: "keel-agent".into(),
            ..l.clone()
        };
        assert_eq!(render(&agent, &o), "n1/keel-agent: hello");
        let ts = LogsOptions {
            timestamps: true,
            no_prefix: true,
            ..Default::default()
        };
        assert_eq!(render(&l, &ts), "T hello");
    }
}
