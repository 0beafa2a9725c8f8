//! `env`: the guest (and every program it execs) sees only the variables the
//! policy names, with the host's values (the guest's with secrets'
//! values redacted). Nothing is inherited implicitly.

use wasmtime_wasi::WasiCtxBuilder;

use crate::policy::EffectivePolicy;

/// The granted variables that are set on the host, with their values.
pub fn granted_vars(policy: &EffectivePolicy) -> Vec<(String, String)> {
    policy
        .env
        .iter()
        .filter_map(|name| crate::caller::var(name).ok().map(|v| (name.clone(), v)))
        .collect()
}

/// Adds the granted variables to a WASI context; nothing else. A value
/// holding a secret's is redacted by `hide`: granting the variable a secret
/// is read from does not hand the guest the secret.
pub fn configure(
    builder: &mut WasiCtxBuilder,
    policy: &EffectivePolicy,
    hide: &crate::secrets::Redactor,
) {
    for (k, v) in granted_vars(policy) {
        builder.env(k, hide.text(&v));
    }
}

/// Records, for the audit trail, the variables the run was granted, and
/// whether the host had them set.
pub fn audit(policy: &EffectivePolicy, events: &dyn crate::events::EventObserver) {
    for name in &policy.env {
        let set = crate::caller::var_os(name).is_some();
        events.event(crate::events::Event::Audit {
            capability: "env",
            detail: format!("read {name}"),
            allowed: true,
            reason: if set {
                "granted by the operator".into()
            } else {
                "granted by the operator; not set on the host".into()
            },
        });
    }
}
