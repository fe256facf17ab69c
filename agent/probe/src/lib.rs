//! keel-probe: Liveness, readiness and startup probes and lifecycle handlers.
