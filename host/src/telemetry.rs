//! OpenTelemetry traces of tasks, exported over OTLP (HTTP, protobuf).
//!
//! A task is one trace, whichever hosts it crosses: the span of its spawn
//! is the root, and its W3C `traceparent` is stored with the task
//! ([`crate::store::TaskSpec::trace`]), so the host that claims it, runs
//! it, records its end and delivers its notifications (possibly another
//! worker, hours later) continues the same trace:
//!
//! ```text
//! task.spawn
//! ├── task.claim
//! ├── task.run
//! │   ├── capability.exec / capability.docker / capability.net …
//! ├── task.finish
//! └── task.deliver (one per attempt)
//! ```
//!
//! Every span carries the task's id as `skillbox.task.id`. The spans are
//! ordinary `tracing` spans of the `skillbox` target; [`Telemetry::init`]
//! (used by the CLI's `serve` and `worker`) sends them to OpenTelemetry
//! through `tracing-opentelemetry` when an endpoint is configured with the
//! standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is appended), plus
//! `OTEL_SERVICE_NAME` and the batch settings (`OTEL_BSP_*`). Without one,
//! the spans are disabled at their call sites and cost next to nothing.
//! Embedders compose [`layer`] into their own subscriber instead.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The variables that name an OTLP endpoint, most specific first.
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The URL traces go to, when an endpoint is configured.
pub fn configured_endpoint() -> Option<String> {
    ENDPOINT_VARS.iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| traces_url(v, &s))
    })
}

/// How long a process that stops may spend exporting its last spans (a
/// collector that is down must not hold it up).
pub const SHUTDOWN: Duration = Duration::from_secs(5);

/// The full URL of the traces endpoint for `var`'s value (the generic
/// variable names a base to which `/v1/traces` is appended).
fn traces_url(var: &str, value: &str) -> String {
    let value = value.trim();
    if var == ENDPOINT_VARS[1] {
        format!("{}/v1/traces", value.trim_end_matches('/'))
    } else {
        value.to_string()
    }
}

/// Sends HTTP requests of the exporter (which runs on a thread of its
/// own) on a Tokio runtime, where hyper's client needs to run.
#[derive(Debug)]
struct OnRuntime {
    handle: tokio::runtime::Handle,
    client: std::sync::Arc<opentelemetry_http::hyper::HyperClient>,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        self.handle
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| -> opentelemetry_http::HttpError { Box::new(e) })?
    }
}

/// A tracer provider exporting to `url` over OTLP/HTTP (protobuf), its
/// requests sent on `handle`'s runtime.
pub fn provider(url: &str, handle: tokio::runtime::Handle) -> Result<SdkTracerProvider, String> {
    if !url.starts_with("http://") {
        return Err(format!(
            "OTLP endpoint {url}: only http:// is supported (a collector on this \
             machine or its network, e.g. http://127.0.0.1:4318)"
        ));
    }
    let client = OnRuntime {
        handle,
        client: std::sync::Arc::new(
            opentelemetry_http::hyper::HyperClient::with_default_connector(
                Duration::from_secs(10),
                None,
            ),
        ),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("OTLP endpoint {url}: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "skillbox".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

/// A layer sending skillbox's spans (target `skillbox`, INFO and up) to
/// `provider`'s tracer, for an embedder's own subscriber.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    // What costs at every poll of an instrumented future (busy/idle time,
    // an OpenTelemetry context made current) or adds attributes per span
    // (thread, source location) is off: the run's span is entered at every
    // poll of the guest.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("skillbox"))
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(Targets::new().with_target("skillbox", tracing::Level::INFO))
}

/// A subscriber for work done for a [caller](crate::caller) in another
/// process: log lines filtered by `log_filter` on the caller's stderr
/// (`ansi` colours), as [`Telemetry::init`] sets them up for this one.
pub fn logs_for_caller(log_filter: tracing_subscriber::EnvFilter, ansi: bool) -> tracing::Dispatch {
    use tracing_subscriber::layer::SubscriberExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(crate::caller::stderr)
        .with_ansi(ansi)
        .with_filter(log_filter);
    tracing::Dispatch::new(tracing_subscriber::registry().with(fmt))
}

/// The process's telemetry as the CLI sets it up: its log lines on stderr
/// (`SKILLBOX_LOG`), and traces when an OTLP endpoint is configured.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: logs filtered by `log_filter` on
    /// stderr (`ansi` colours), and, with `traces` (the daemon and workers,
    /// not the short commands), the OTLP layer when an endpoint is
    /// configured, its exports sent on `handle`'s runtime.
    pub fn init(
        log_filter: tracing_subscriber::EnvFilter,
        ansi: bool,
        handle: tokio::runtime::Handle,
        traces: bool,
    ) -> Result<Telemetry, String> {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(crate::caller::stderr)
            .with_ansi(ansi)
            .with_filter(log_filter);
        let endpoint = configured_endpoint().filter(|_| traces);
        let provider = endpoint.map(|url| provider(&url, handle)).transpose()?;
        let otel = provider.as_ref().map(layer);
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .map_err(|e| e.to_string())?;
        Ok(Telemetry { provider })
    }

    /// Exports what is left (within [`SHUTDOWN`]) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown_with_timeout(SHUTDOWN)
        {
            eprintln!("warning: exporting the last traces failed: {e}");
        }
    }
}

/// The span of one call of `capability` (`capability.exec`, …), a child
/// of the current span (the run's); the caller records `skillbox.allowed`
/// once the call is decided.
pub(crate) fn capability_span(capability: &'static str, detail: &str) -> tracing::Span {
    tracing::info_span!(
        "capability",
        otel.name = %format_args!("capability.{capability}"),
        skillbox.capability = capability,
        skillbox.call = detail,
        skillbox.allowed = tracing::field::Empty,
        skillbox.reason = tracing::field::Empty,
    )
}

/// Records a capability call's verdict on its span.
pub(crate) fn decided(span: &tracing::Span, allowed: bool, reason: &str) {
    span.record("skillbox.allowed", allowed);
    span.record("skillbox.reason", reason);
}

/// The W3C `traceparent` of `span`, when it is being traced.
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a W3C `traceparent` names (version 00).
fn parse_traceparent(tp: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = tp.trim().split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the span that `traceparent` names (stored with
/// a task, or sent by a client), when there is one and it is well formed.
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    use opentelemetry::trace::TraceContextExt;
    if span.is_disabled() {
        return;
    }
    if let Some(sc) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generic_endpoint_gets_the_traces_path_and_the_specific_one_is_kept() {
        assert_eq!(
            traces_url("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:1/x"),
            "http://h:1/x"
        );
    }

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_https_endpoint_is_refused_with_the_reason() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = provider("https://collector:4318/v1/traces", rt.handle().clone()).unwrap_err();
        assert!(e.contains("only http://"), "{e}");
    }

    #[test]
    fn a_traced_span_gives_its_traceparent_and_a_child_continues_it() {
        use tracing_subscriber::layer::SubscriberExt;
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!(target: "skillbox", "task.spawn");
            let tp = traceparent(&root).expect("a traced span has a traceparent");
            drop(root);
            let child = tracing::info_span!(target: "skillbox", "task.run");
            continue_trace(&child, Some(&tp));
            drop(child);
            let spans = exporter.get_finished_spans().unwrap();
            let [spawn, run] = spans.as_slice() else {
                panic!("{spans:?}")
            };
            assert_eq!(spawn.span_context.trace_id(), run.span_context.trace_id());
            assert_eq!(run.parent_span_id, spawn.span_context.span_id());
            assert!(tp.contains(&spawn.span_context.trace_id().to_string()));
        });
        // Without the layer: no context, nothing stored.
        let plain = tracing::info_span!(target: "skillbox", "task.spawn");
        assert_eq!(traceparent(&plain), None);
    }
}
