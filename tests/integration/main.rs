//! skillbox's integration tests: every capability with an allow and a deny
//! case, the hostile-guest suite, and the CLI end to end. Guests are built
//! from source on first use (see `harness`).

mod harness;

mod approvals;
mod audit;
mod cli;
mod confinement;
mod daemon;
mod dashboard;
mod docker;
mod embedding;
mod env_net;
mod exec;
mod fs;
mod handoff;
mod limits;
mod mcp;
mod metrics;
mod openclaw;
mod openclaw_plugin;
mod outside;
mod pull;
mod python;
mod registry;
mod relay;
mod relay_tls;
mod schedules;
mod secrets;
mod serve_tls;
mod tasks;
mod traces;
mod trust;
mod upgrade;
mod workers;
