//! `net`: no network unless granted; then only the granted `host:port`s.
//!
//! WASI sockets ask the host before every bind, listen, connect and
//! datagram. A connect first binds the wildcard address to an ephemeral
//! port; that bind is always allowed (it reaches nothing, and listening is
//! refused separately), so the decision falls on the connect itself, which
//! names the real destination in the audit log. Every other bind, every
//! listen and accept, and every connect or datagram to an address not
//! granted is refused. Names are resolved once, when the run starts, so a name that
//! later resolves elsewhere (DNS rebinding) gains nothing. Name lookup from
//! the guest is enabled only when a granted endpoint is written as a name.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::error::Error;
use crate::events::{Event, EventSink};
use crate::policy::EffectivePolicy;

/// Resolves the granted endpoints to socket addresses.
pub fn resolve(policy: &EffectivePolicy) -> Result<HashSet<SocketAddr>, Error> {
    let mut out = HashSet::new();
    for rule in &policy.net {
        let addrs = (rule.host.as_str(), rule.port)
            .to_socket_addrs()
            .map_err(|e| Error::Grant(format!("cannot resolve granted endpoint {rule}: {e}")))?;
        out.extend(addrs);
    }
    Ok(out)
}

/// Whether `addr` may be used for `use_`, given the granted addresses.
pub fn allowed(granted: &HashSet<SocketAddr>, addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            addr.ip().is_unspecified() && addr.port() == 0
        }
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
            granted.contains(&addr)
        }
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
    }
}

/// Wires sockets into a WASI context according to the policy.
pub fn configure(
    builder: &mut WasiCtxBuilder,
    policy: &EffectivePolicy,
    events: Arc<dyn EventSink>,
) -> Result<(), Error> {
    let granted = Arc::new(resolve(policy)?);
    // TCP and UDP are "on" so that every attempt reaches the check below and
    // is audited; the check refuses everything not granted.
    builder
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(
            policy
                .net
                .iter()
                .any(|r| r.host.parse::<std::net::IpAddr>().is_err()),
        );
    let rules: Vec<String> = policy.net.iter().map(|r| r.to_string()).collect();
    builder.socket_addr_check(move |addr, use_| {
        let ok = allowed(&granted, addr, use_);
        let is_probe = matches!(use_, SocketAddrUse::TcpBind | SocketAddrUse::UdpBind)
            && addr.ip().is_unspecified();
        if !ok || !is_probe {
            events.event(Event::Audit {
                capability: "net",
                detail: format!("{use_:?} {addr}"),
                allowed: ok,
                reason: if ok {
                    "granted endpoint".into()
                } else if rules.is_empty() {
                    "no network endpoint is granted (grant with --allow-net HOST:PORT)".into()
                } else {
                    format!(
                        "{addr} is not a granted endpoint (granted: {})",
                        rules.join(", ")
                    )
                },
            });
        }
        Box::pin(async move { ok })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_endpoints_and_the_connect_probe() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let g: HashSet<_> = [a].into();
        let wild: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(allowed(&g, a, SocketAddrUse::TcpConnect));
        assert!(allowed(&g, wild, SocketAddrUse::TcpBind));
        assert!(!allowed(
            &g,
            "0.0.0.0:8080".parse().unwrap(),
            SocketAddrUse::TcpBind
        ));
        assert!(!allowed(
            &g,
            "127.0.0.1:8081".parse().unwrap(),
            SocketAddrUse::TcpConnect
        ));
        assert!(!allowed(&g, a, SocketAddrUse::TcpListen));
        assert!(
            allowed(&HashSet::new(), wild, SocketAddrUse::TcpBind),
            "reaches nothing"
        );
        assert!(!allowed(&HashSet::new(), a, SocketAddrUse::TcpConnect));
        assert!(
            !allowed(&g, a, SocketAddrUse::UdpBind),
            "only the wildcard may be bound"
        );
    }
}
