//! `ernie serve --model DIR`: an OpenAI-compatible HTTP server (`/v1/embeddings`,
//! `/v1/chat/completions` with SSE streaming, `/v1/models`, `/health`).
//!
//! Layout: [`api`] (wire format and errors) → [`routes`] (handlers) → [`scheduler`] (the engine
//! thread behind a bounded queue) → `ernie_runtime::Engine`. The listener binds before the model
//! loads, so `/health` and work routes answer 503 until it is ready. Ctrl-C or SIGTERM stops
//! accepting connections, lets accepted requests finish (up to `--shutdown-grace-secs`), then
//! stops the engine thread.

mod api;
mod images;
mod routes;
mod scheduler;
mod speech;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ernie_runtime::{Device, Engine, Pooling};
use tokio::sync::Notify;

use scheduler::Scheduler;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory in Hugging Face layout (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Address to bind. The server has no authentication: keep it on loopback unless a proxy
    /// in front of it adds some.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Port to bind (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model id clients send and `/v1/models` lists (default: the directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Largest accepted request body, bytes (larger: 413).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest prompt (chat) or embedding input, tokens (larger: 400).
    #[arg(long, default_value_t = 8192)]
    max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for; also the default when it asks for none.
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// Generations decoding at once (interleaved token by token); more wait in the queue.
    #[arg(long, default_value_t = 8)]
    max_concurrent_streams: usize,
    /// Requests admitted at once, waiting or running; past it requests get 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Inputs per embeddings request.
    #[arg(long, default_value_t = 256)]
    max_embedding_inputs: usize,
    /// Embedding pooling: last, mean, or eos (the appended `<|end_of_sentence|>` token's state).
    #[arg(long, default_value = "last")]
    pooling: Pooling,
    /// Where the model runs: cpu, cuda or cuda:N (needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// After ctrl-c/SIGTERM, how long accepted requests may take to finish before they are cut.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
    #[command(flatten)]
    kernels: crate::args::Kernels,
}

/// Request limits, from the flags.
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_prompt_tokens: usize,
    pub max_tokens: usize,
    pub max_embedding_inputs: usize,
}

/// Shared by every handler.
pub struct AppState {
    pub model_id: String,
    pub created: u64,
    pub limits: Limits,
    pub pooling: Pooling,
    /// Set once the model has loaded.
    pub ready: OnceLock<Ready>,
}

pub struct Ready {
    pub engine: Arc<Engine>,
    pub scheduler: Scheduler,
}

pub fn run(args: Args) -> Result<()> {
    if !args.model.is_dir() {
        bail!("--model {}: not a directory", args.model.display());
    }
    if args.max_queue == 0 || args.max_concurrent_streams == 0 || args.max_tokens == 0 {
        bail!("--max-queue, --max-concurrent-streams and --max-tokens must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let model_id = match &args.served_model_name {
        Some(n) => n.clone(),
        None => args.model.file_name().map_or_else(|| "ernie".into(), |n| n.to_string_lossy().into_owned()),
    };
    if !args.host.is_loopback() {
        eprintln!("warning: listening on {} — this server has no authentication", args.host);
    }
    let state = Arc::new(AppState {
        model_id,
        created: routes::now_secs(),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_prompt_tokens: args.max_prompt_tokens,
            max_tokens: args.max_tokens,
            max_embedding_inputs: args.max_embedding_inputs,
        },
        pooling: args.pooling,
        ready: OnceLock::new(),
    });
    // Tests and scripts read this line to find the port.
    eprintln!("ernie serve: listening on http://{local} (model {:?}, loading)", state.model_id);

    // Load in the background: the listener already answers (503) meanwhile.
    let load_failed = Arc::new(OnceLock::<String>::new());
    let failed_notify = Arc::new(Notify::new());
    {
        let (state, dir, failed, notify) = (state.clone(), args.model.clone(), load_failed.clone(), failed_notify.clone());
        let (max_queue, max_streams, device, kernels) = (args.max_queue, args.max_concurrent_streams, args.device.clone(), args.kernels);
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let loaded = Engine::load(&dir).map_err(|e| format!("loading {}: {e}", dir.display())).and_then(|mut engine| {
                kernels.apply(&mut engine);
                if device != "cpu" {
                    let dev = Device::parse(&device).map_err(|e| format!("--device {device}: {e}"))?;
                    engine.to_device(&dev).map_err(|e| format!("moving the model to {device}: {e}"))?;
                }
                let engine = Arc::new(engine);
                let scheduler = Scheduler::start(engine.clone(), max_queue, max_streams).map_err(|e| format!("starting the engine thread: {e}"))?;
                Ok(Ready { engine, scheduler })
            });
            match loaded {
                Ok(ready) => {
                    let _ = state.ready.set(ready);
                    eprintln!("ernie serve: model loaded in {:.2} s; ready", t0.elapsed().as_secs_f64());
                }
                Err(msg) => {
                    let _ = failed.set(msg);
                    notify.notify_one();
                }
            }
        });
    }

    let stopping = Arc::new(Notify::new());
    let stop_signal = {
        let (stopping, failed_notify) = (stopping.clone(), failed_notify.clone());
        async move {
            tokio::select! {
                _ = shutdown_signal() => eprintln!("ernie serve: shutting down (finishing accepted requests)"),
                _ = failed_notify.notified() => {}
            }
            stopping.notify_one();
        }
    };
    let app = routes::router(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(stop_signal);
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    tokio::select! {
        r = server => r.context("serving HTTP")?,
        _ = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            eprintln!("ernie serve: grace period over; closing the remaining connections");
        }
    }
    // Every connection is closed: what the engine thread still holds has no client. Let it drain.
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(ready) = st.ready.get() {
            ready.scheduler.shutdown();
        }
    })
    .await
    .context("stopping the engine thread")?;
    if let Some(msg) = load_failed.get() {
        bail!("{msg}");
    }
    eprintln!("ernie serve: stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (what `kill`, systemd and container runtimes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: never fire rather than shut down at once.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
