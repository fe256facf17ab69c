//! cAdvisor-style stats: housekeeping collection from cgroups and procfs, `/stats/summary`, Prometheus metrics, node pressure.
