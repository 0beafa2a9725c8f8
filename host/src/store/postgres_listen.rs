//! The PostgreSQL store's wake-up listener: one connection that `LISTEN`s
//! on the store's channels and bumps its counters, reconnecting with
//! backoff while the server is away.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::postgres_tls::PgTls;

use super::postgres::{OUTBOX_CHANNEL, TASKS_CHANNEL, Wakeups};

/// First wait after a failed connection; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens until the store's runtime ends.
pub(super) async fn run(config: tokio_postgres::Config, tls: PgTls, wakeups: Arc<Wakeups>) {
    let mut backoff = FIRST_BACKOFF;
    let mut warned = false;
    loop {
        match listen_once(&config, &tls, &wakeups).await {
            Ok(()) => {
                // It was listening: the next failure starts a fresh backoff.
                backoff = FIRST_BACKOFF;
                warned = false;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("task store wake-ups: {e}; retrying");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Connects, listens, bumps both counters (notifications sent while no
/// listener was connected are lost, so whoever waits must look again), and
/// forwards notifications until the connection ends. `Ok` when it was
/// listening before it ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &PgTls,
    wakeups: &Arc<Wakeups>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(tls.clone()).await.map_err(|e| {
        format!(
            "cannot connect: {}",
            super::postgres_pool::connect_error(&e)
        )
    })?;
    let forward = {
        let wakeups = wakeups.clone();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => match n.channel() {
                        TASKS_CHANNEL => wakeups.bump_tasks(),
                        OUTBOX_CHANNEL => wakeups.bump_outbox(),
                        _ => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("connection lost: {e}"),
                    None => return "connection closed".to_string(),
                }
            }
        })
    };
    if let Err(e) = client
        .batch_execute(&format!("LISTEN {TASKS_CHANNEL}; LISTEN {OUTBOX_CHANNEL}"))
        .await
    {
        forward.abort();
        return Err(format!("cannot listen: {e}"));
    }
    wakeups.bump_tasks();
    wakeups.bump_outbox();
    let why = forward
        .await
        .unwrap_or_else(|e| format!("listener stopped: {e}"));
    tracing::info!("task store wake-ups: {why}; reconnecting");
    drop(client);
    Ok(())
}
