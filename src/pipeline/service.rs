//! The service of `casewatch run`: the `/healthz` `/readyz` `/metrics` endpoint, the
//! dead-letter topic, and the consumer loop on its own thread until `shutdown` completes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

use super::consumer::{ConsumerLoop, RunOptions};
use crate::config::Config;
use crate::metrics::Metrics;

/// Runs the service on `rt` until `shutdown` completes (then drains: flush and commit) or,
/// with `exit_when_idle`, until the topic is consumed.
pub(crate) fn run(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opts: RunOptions,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&cfg.http.listen))
        .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    rt.spawn(crate::metrics::serve(listener, metrics.clone()));
    rt.block_on(super::kafka::ensure_topic(
        cfg,
        &cfg.kafka.dead_letter_topic,
        1,
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining");
            stop.store(true, Ordering::Relaxed);
        });
    }
    let consumer = ConsumerLoop::new(cfg, rt.handle(), &metrics)?;
    let thread = std::thread::Builder::new()
        .name("consumer".into())
        .spawn(move || consumer.run(&stop, opts))?;
    match thread.join() {
        Ok(result) => result,
        Err(_) => anyhow::bail!("the consumer thread panicked"),
    }
}

/// Completes at SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn signals() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        // Without a SIGTERM handler, Ctrl-C still stops the service.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
