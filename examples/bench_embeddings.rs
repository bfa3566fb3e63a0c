//! Load generator for `POST /v1/embeddings` (run by `scripts/bench-embeddings.sh`): sends
//! REQUESTS requests from CONCURRENCY client threads to a running `ernie serve` on loopback and
//! prints requests/s and p50/p99 latency. Usage: `bench_embeddings BASE_URL [REQUESTS] [CONCURRENCY] [INPUTS_PER_REQUEST]`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const TEXT: &str = "The sea is calm tonight; the tide is full, the moon lies fair upon the straits.";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base = args.first().context("usage: bench_embeddings BASE_URL [REQUESTS] [CONCURRENCY] [INPUTS]")?.trim_end_matches('/').to_string();
    let num = |i: usize, d: usize| args.get(i).map_or(Ok(d), |s| s.parse::<usize>().with_context(|| format!("argument {s:?}")));
    let (requests, concurrency, inputs) = (num(1, 2000)?, num(2, 8)?.max(1), num(3, 1)?.max(1));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
    let deadline = Instant::now() + Duration::from_secs(120);
    while agent.get(format!("{base}/health")).call().map(|r| r.status().as_u16()).ok() != Some(200) {
        if Instant::now() > deadline {
            bail!("{base}/health never answered 200");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = serde_json::json!({ "input": vec![TEXT; inputs] }).to_string();
    for _ in 0..20 {
        agent.post(format!("{base}/v1/embeddings")).send(&body)?; // warm-up
    }
    let (next, failures, lat) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, failures, lat, agent, url, body) = (next.clone(), failures.clone(), lat.clone(), agent.clone(), format!("{base}/v1/embeddings"), body.clone());
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let t = Instant::now();
                    let ok = agent.post(&url).send(&body).ok().and_then(|mut r| r.body_mut().read_to_string().ok().map(|_| r.status().as_u16() == 200));
                    if ok != Some(true) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.lock().map(|mut l| l.push(t.elapsed())).ok();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut lat = lat.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort();
    let pct = |q: f64| lat.get(((lat.len().max(1) - 1) as f64 * q).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "embeddings: {requests} requests x {inputs} input(s), {concurrency} concurrent: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
        requests as f64 / wall,
        pct(0.5),
        pct(0.99),
        failures.load(Ordering::Relaxed)
    );
    Ok(())
}
