//! Skills in OCI registries: `skillbox push`/`pull oci://HOST:PORT/REPO:TAG`,
//! and the local store and lockfile of pulled skills ([`store`], [`lock`]).
//!
//! Owns the conversation with a registry (the distribution API, plain
//! HTTP/1.1, no authentication) and the layouts on the wire: the skill as a
//! CNCF WebAssembly artifact ([`crate::trust::artifact`]) and its
//! signatures as cosign's key-pair attachment ([`cosign`]); see
//! `tests/oci/README.md` for both, checked against a real registry and
//! skopeo.
//!
//! Two rules hold everywhere:
//!
//! * nothing fetched is used before its sha256 is checked against the
//!   digest it was asked for by (a manifest by tag has no digest to check
//!   against: a pulled skill is trusted only through its signatures);
//! * only loopback registries are spoken to ([`Registry::new`] refuses any
//!   other before connecting): plain HTTP carries neither secrecy nor
//!   integrity beyond this machine.
//!
//! Verifying signatures is [`crate::trust`]'s business, not this module's.

pub mod client;
pub mod cosign;
pub mod lock;
pub mod publish;
pub mod reference;
pub mod skill;
pub mod store;

pub use client::{OciError, Registry};
pub use publish::push_source;
pub use reference::Reference;
pub use skill::{PullLimits, Pulled, pull_skill, push_skill};
pub use store::{PullOptions, PullReport, SkillStore};
