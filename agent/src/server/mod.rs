//! The agent's HTTPS endpoint on port 10250 (logs, stats, healthz); only the control plane's client certificate may call it.
