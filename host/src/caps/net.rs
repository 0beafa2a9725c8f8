//! `net`: no network unless granted; then only the granted `host:port`s.
//!
//! WASI sockets ask the host before every bind, listen, connect and
//! datagram. A connect first binds the wildcard address to an ephemeral
//! port; that bind is always allowed (it reaches nothing, and listening is
//! refused separately), so the decision falls on the connect itself, which
//! names the real destination in the audit log. Every other bind, every
//! listen and accept, and every connect or datagram to an address not
//! granted is refused.
//!
//! Names are resolved once, when the run starts, so a name that later
//! resolves elsewhere (DNS rebinding) gains nothing. The guest's own name
//! lookups never reach a resolver: a lookup is a channel out even when no
//! connection follows (the name carries the data to whoever answers for its
//! domain). `add_to_linker` replaces wasmtime-wasi's
//! `wasi:sockets/ip-name-lookup` with one that answers a granted name with
//! the addresses it resolved to at the start, an IP literal with itself,
//! and refuses every other name, audited.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::caps::approval::{Asker, Asking};
use crate::error::Error;
use crate::events::{Event, EventObserver, HasEvents};
use crate::policy::EffectivePolicy;

/// The granted endpoints, resolved when the run starts.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Every address a connect or datagram may reach.
    pub addrs: HashSet<SocketAddr>,
    /// Each granted name (lower case, no trailing dot) and the addresses it
    /// resolved to, in the resolver's order.
    pub names: HashMap<String, Vec<IpAddr>>,
}

/// Resolves the granted endpoints to socket addresses.
pub fn resolve(policy: &EffectivePolicy) -> Result<Resolved, Error> {
    let mut out = Resolved::default();
    for rule in &policy.net {
        let addrs: Vec<SocketAddr> = (rule.host.as_str(), rule.port)
            .to_socket_addrs()
            .map_err(|e| Error::Grant(format!("cannot resolve granted endpoint {rule}: {e}")))?
            .collect();
        if literal(&rule.host).is_none() {
            let ips = out.names.entry(name_key(&rule.host)).or_default();
            for a in &addrs {
                let ip = a.ip().to_canonical();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        out.addrs.extend(addrs);
    }
    Ok(out)
}

/// The form names are compared in: DNS names are case-insensitive, and
/// `name.` is `name`.
fn name_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The address an IP literal (`127.0.0.1`, `::1`, `[::1]`) names.
fn literal(name: &str) -> Option<IpAddr> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse().ok()
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

/// One run's `net` state beyond what wasmtime-wasi keeps: the names the
/// guest may look up.
#[derive(Debug, Default)]
pub struct NetCtx {
    names: HashMap<String, Vec<IpAddr>>,
    /// The granted endpoints as written, for refusals.
    rules: Vec<String>,
}

impl NetCtx {
    /// The answer to a lookup of `name`: its addresses, or why it is
    /// refused.
    pub fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(ip) = literal(name) {
            return Ok(vec![ip]);
        }
        match self.names.get(&name_key(name)) {
            Some(ips) => Ok(ips.clone()),
            None if self.rules.is_empty() => Err(format!(
                "{name} is not a granted name: no network endpoint is granted \
                 (grant with --allow-net HOST:PORT)"
            )),
            None => Err(format!(
                "{name} is not a granted name (granted: {}); the guest may look up \
                 only the names of its granted endpoints",
                self.rules.join(", ")
            )),
        }
    }
}

/// A store with a run's [`NetCtx`]. Host code that is generic over the
/// store asks through this, never naming the runtime's store type.
pub(crate) trait NetView: wasmtime_wasi::WasiView + HasEvents {
    /// The run's `net` state.
    fn net(&self) -> &NetCtx;
}

/// Wires sockets into a WASI context according to the policy; returns the
/// run's [`NetCtx`] for `add_to_linker`'s name lookups.
pub fn configure(
    builder: &mut WasiCtxBuilder,
    policy: &EffectivePolicy,
    events: Arc<dyn EventObserver>,
    asker: Arc<Asker>,
) -> Result<NetCtx, Error> {
    let Resolved { addrs, names } = resolve(policy)?;
    // The endpoints whose first connection in the run asks, by address.
    let mut ask: HashMap<SocketAddr, String> = HashMap::new();
    for rule in &policy.ask.net {
        let addrs = rule
            .to_socket_addrs()
            .map_err(|e| Error::Grant(format!("cannot resolve endpoint {rule}: {e}")))?;
        for a in addrs {
            ask.insert(a, rule.clone());
        }
    }
    let ask = Arc::new(ask);
    let granted = Arc::new(addrs);
    // TCP and UDP are "on" so that every attempt reaches the check below and
    // is audited; the check refuses everything not granted. wasmtime-wasi's
    // own name lookup stays off: `add_to_linker` answers in its place.
    builder
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(false);
    let rules: Vec<String> = policy.net.iter().map(|r| r.to_string()).collect();
    let ctx = NetCtx {
        names,
        rules: rules.clone(),
    };
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
        let asking = ok
            .then(|| ask.get(&addr))
            .flatten()
            .filter(|_| !is_probe)
            .and_then(|r| asker.rules.net_rule(r));
        let asker = asker.clone();
        Box::pin(async move {
            let Some(rule) = asking else { return ok };
            let call = Asking {
                capability: "net",
                detail: format!("connect to {addr}"),
                rule,
                reason: None,
                per_run: true,
                cover: None,
            };
            // The check's future must be `Sync`, a wait for a decision is
            // not: it runs as its own task, aborted if the connect is dropped.
            let mut waiting =
                AbortOnDrop(tokio::spawn(async move { asker.ask(call).await.is_ok() }));
            (&mut waiting.0).await.unwrap_or(false)
        })
    });
    Ok(ctx)
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The interface whose functions [`add_to_linker`] replaces.
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// The answer to one lookup: `resolve-address-stream`.
///
/// wasmtime-wasi's own stream type cannot be built outside its crate, so
/// the whole interface is replaced: the resource type and its three
/// functions. The answer is known when the stream is made (no query is
/// made), so the stream is always ready.
struct Answer(std::vec::IntoIter<IpAddr>);

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Answer {
    async fn ready(&mut self) {}
}

/// Replaces wasmtime-wasi's `wasi:sockets/ip-name-lookup`: a granted name
/// answers the addresses it resolved to when the run started, an IP
/// literal itself; any other name is refused (`access-denied`) and
/// audited. No lookup made by the guest reaches a resolver.
pub(crate) fn add_to_linker<T: NetView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    use wasmtime::component::{Resource, ResourceType};
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
    use wasmtime_wasi::p2::{DynPollable, Network};

    linker.allow_shadowing(true);
    let mut lookup = linker.instance(IP_NAME_LOOKUP)?;
    lookup.resource(
        "resolve-address-stream",
        ResourceType::host::<Answer>(),
        |mut store, rep| {
            store
                .data_mut()
                .ctx()
                .table
                .delete(Resource::<Answer>::new_own(rep))?;
            Ok(())
        },
    )?;
    lookup.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            // The network resource is the capability to look up at all.
            store.data_mut().ctx().table.get(&network)?;
            let answer = store.data().net().lookup(&name);
            if literal(&name).is_none() {
                let (allowed, reason) = match &answer {
                    Ok(ips) => (true, format!("granted name, resolved at start: {ips:?}")),
                    Err(reason) => (false, reason.clone()),
                };
                store.data().events().event(Event::Audit {
                    capability: "net",
                    detail: format!("lookup {name}"),
                    allowed,
                    reason,
                });
            }
            let result: Result<Resource<Answer>, ErrorCode> = match answer {
                Ok(ips) => Ok(store.data_mut().ctx().table.push(Answer(ips.into_iter()))?),
                Err(_) => Err(ErrorCode::AccessDenied),
            };
            Ok((result,))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (stream,): (Resource<Answer>,)| {
            let answer = store.data_mut().ctx().table.get_mut(&stream)?;
            let next: Result<Option<IpAddress>, ErrorCode> = Ok(answer.0.next().map(Into::into));
            Ok((next,))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (stream,): (Resource<Answer>,)| {
            let pollable: Resource<DynPollable> =
                wasmtime_wasi::p2::subscribe(store.data_mut().ctx().table, stream)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers come from the table made at the start, never from a
    /// resolver: `svc.invalid` cannot resolve anywhere, yet answers what
    /// the table holds (as a granted name whose DNS later changed would).
    #[test]
    fn lookups_answer_granted_names_from_the_start_only() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let ctx = NetCtx {
            names: [("svc.invalid".to_string(), vec![ip])].into(),
            rules: vec!["svc.invalid:80".into()],
        };
        assert_eq!(ctx.lookup("svc.invalid").unwrap(), vec![ip]);
        assert_eq!(ctx.lookup("SVC.Invalid.").unwrap(), vec![ip]);
        assert_eq!(
            ctx.lookup("10.1.2.3").unwrap(),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            ctx.lookup("[::1]").unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        for other in ["x.svc.invalid", "localhost", "", "svc.invalid..", "127.1"] {
            let e = ctx.lookup(other).unwrap_err();
            assert!(
                e.contains("not a granted name (granted: svc.invalid:80)"),
                "{e}"
            );
        }
        let none = NetCtx::default().lookup("example.com").unwrap_err();
        assert!(none.contains("--allow-net"), "{none}");
    }

    #[test]
    fn granted_names_keep_their_start_addresses() {
        let policy = EffectivePolicy {
            net: vec![
                crate::policy::NetRule {
                    host: "LocalHost".into(),
                    port: 1,
                },
                crate::policy::NetRule {
                    host: "127.0.0.2".into(),
                    port: 2,
                },
            ],
            ..EffectivePolicy::compute(None, &crate::policy::Grants::default()).0
        };
        let r = resolve(&policy).unwrap();
        assert_eq!(r.names.len(), 1, "{:?}", r.names);
        let ips = &r.names["localhost"];
        assert!(ips.iter().all(|ip| ip.is_loopback()) && !ips.is_empty());
        assert!(r.addrs.contains(&"127.0.0.2:2".parse().unwrap()));
    }

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
