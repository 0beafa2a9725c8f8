//! `skillbox mcp`: the installed skills as MCP tools, over stdio.

use clap::Args;
use skillbox::server::mcp::{McpServer, serve_stdio};

use super::exit;
use super::serve::{DataDir, HostArgs, announce_recovered, open_daemon};

/// Serve the installed skills to an MCP client (an agent) over stdio.
///
/// Each `[skills.NAME]` table of the configuration file is a tool, with the
/// skill's input schema and a description of what it is granted; the
/// grants are the configuration's, never the client's. A call is a durable
/// task in DATA-DIR, run by this process: a client that speaks the MCP
/// tasks extension gets the task at once (tasks/get, tasks/cancel), any
/// other a blocking call with progress notifications. Tasks this process
/// leaves running when it stops are resumed by the next `skillbox mcp` or
/// `skillbox serve` on the same data dir. Stdout is the protocol; messages
/// go to stderr.
///
/// While `skillbox serve` runs on the data dir, point the client at the
/// daemon's endpoint instead (`serve --listen 127.0.0.1:PORT`, URL
/// http://127.0.0.1:PORT/mcp, bearer token), or give this command its own
/// --data-dir.
#[derive(Args, Debug)]
pub struct McpArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub host: HostArgs,
}

/// `skillbox mcp`.
pub async fn mcp(args: McpArgs) -> u8 {
    match mcp_inner(args).await {
        Ok(()) => exit::OK,
        Err(e) => {
            errln!("error: {e}");
            exit::FAILED
        }
    }
}

async fn mcp_inner(args: McpArgs) -> Result<(), String> {
    let at = args.data.at();
    let daemon = open_daemon(&at, &args.host).map_err(|e| {
        if e.contains("already serves") {
            format!(
                "{e}\nhint: connect the MCP client to that daemon's endpoint \
                 (serve --listen 127.0.0.1:PORT serves MCP at /mcp), or pass another --data-dir"
            )
        } else {
            e
        }
    })?;
    announce_recovered(&daemon, &at);
    if daemon.catalog.is_empty() {
        errln!(
            "skillbox mcp: no skills are installed: add [skills.NAME] tables to the configuration file (--config)"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(daemon.tasks.clone().work(stop_rx));
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.cancel();
        });
    }
    let served = serve_stdio(
        McpServer::new(daemon.tasks.clone(), daemon.catalog.clone()),
        stop,
    )
    .await
    .map_err(|e| e.to_string());
    let _ = stop_tx.send(true);
    worker
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    served
}
