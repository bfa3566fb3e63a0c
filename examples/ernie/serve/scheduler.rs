//! The one thread that runs the engine, and the bounded queue in front of it.
//!
//! Admission: every request takes a permit from a semaphore of `max_queue` permits before it is
//! queued and gives it back when its work ends (or is cancelled); no permit → 429 at once, so
//! memory and latency stay bounded under overload.
//!
//! Scheduling, one round at a time (continuous batching is a later step):
//! 1. take everything queued (embedding requests FIFO; generations FIFO into a waiting list);
//! 2. run at most one embedding request, and at most one one-shot task (an image or a speech
//!    generation, which holds the engine thread until it is done);
//! 3. start waiting generations (prefill) while fewer than `max_streams` are active;
//! 4. advance every active generation by one decode step.
//!
//! So embeddings, tasks and generations alternate, every active stream advances every round, and
//! waiting streams start in arrival order: no request starves. A generation whose client is gone
//! (its event receiver dropped) is cancelled before its next step and frees its permit.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::http::StatusCode;
use ernie_runtime::{EmbedInput, EmbedOptions, Embedding, Engine, GenerateRequest, Generator, StopReason};
use tokenizers_mm::TokenStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::api::ApiError;

/// What a generation sends back, in order: `Token`s, then one `Done` or `Failed`.
pub enum GenEvent {
    Token { id: u32, text: String },
    Done(StopReason),
    Failed(ApiError),
}

pub enum Work {
    Embed { inputs: Vec<EmbedInput>, opts: EmbedOptions, reply: oneshot::Sender<Result<Vec<Embedding>, ApiError>> },
    /// `stops`: OpenAI's stop strings, applied by the generator's stop rule.
    Generate { prompt: PromptInput, req: GenerateRequest, stops: Vec<String>, events: mpsc::UnboundedSender<GenEvent> },
    /// A one-shot job on the engine thread that sends its own answer ([`run_task`]).
    Task(Task),
}

/// A one-shot job for the engine thread (image or speech generation).
pub type Task = Box<dyn FnOnce(&Engine) + Send>;

/// Runs `f` on the engine thread through the queue (admission, 429 when full, FIFO among
/// tasks) and awaits its answer. A panic inside `f` drops the answer: 500.
pub async fn run_task<T: Send + 'static>(scheduler: &Scheduler, f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    scheduler.submit(Work::Task(Box::new(move |engine| {
        let _ = reply.send(f(engine));
    })))?;
    answer.await.map_err(|_| ApiError::internal("the engine dropped the request (see the server log)"))?
}

/// A generation's prompt: token ids, or a multimodal stream (ids plus images, 3-D positions).
pub enum PromptInput {
    Ids(Vec<u32>),
    Stream(Box<TokenStream>),
    /// An audio question: its ids (frame rows hold fillers), codes `[Q][frames]` and text.
    Audio { ids: Vec<u32>, codes: Vec<Vec<u32>>, text: String },
}

impl PromptInput {
    /// The prompt's token ids (image placeholders included).
    pub fn ids(&self) -> &[u32] {
        match self {
            PromptInput::Ids(ids) => ids,
            PromptInput::Stream(s) => &s.input_ids,
            PromptInput::Audio { ids, .. } => ids,
        }
    }

    fn start<'e>(&self, engine: &'e Engine, req: &GenerateRequest) -> ernie_runtime::Result<Generator<'e>> {
        match self {
            PromptInput::Ids(ids) => engine.start_generation(ids, req),
            PromptInput::Stream(s) => engine.start_generation_stream(s, req, None),
            PromptInput::Audio { codes, text, .. } => engine.start_audio_caption(codes, text, req),
        }
    }
}

/// Queued work and the admission permit it holds until it is finished or dropped.
struct Job {
    work: Work,
    _permit: OwnedSemaphorePermit,
}

/// The handlers' side: submit work, see the load.
pub struct Scheduler {
    tx: Sender<Job>,
    permits: Arc<Semaphore>,
    max_queue: usize,
    shutdown: Arc<AtomicBool>,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Scheduler {
    /// Starts the engine thread. `max_queue` bounds admitted requests (waiting + running);
    /// `max_streams` bounds generations decoding at once.
    pub fn start(engine: Arc<Engine>, max_queue: usize, max_streams: usize) -> std::io::Result<Scheduler> {
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let worker = std::thread::Builder::new()
            .name("ernie-engine".into())
            .spawn(move || run(&engine, &rx, &flag, max_streams.max(1)))?;
        Ok(Scheduler { tx, permits: Arc::new(Semaphore::new(max_queue)), max_queue, shutdown, worker: std::sync::Mutex::new(Some(worker)) })
    }

    /// Queues `work`, or answers 429 when `max_queue` requests are already admitted.
    pub fn submit(&self, work: Work) -> Result<(), ApiError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("queue_full"),
                format!("the server is busy ({} requests queued or running); retry later", self.max_queue),
            )
        })?;
        // The worker only stops at shutdown; a send after that means we are going away.
        self.tx.send(Job { work, _permit: permit }).map_err(|_| ApiError::internal("the engine thread has stopped"))
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.max_queue - self.permits.available_permits()
    }

    /// Lets the worker finish what it holds, then joins it (call after the HTTP server stopped).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let handle = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// An active generation and its way back to the client.
struct Active<'e> {
    gen: Generator<'e>,
    events: mpsc::UnboundedSender<GenEvent>,
    _permit: OwnedSemaphorePermit,
}

/// Waiting generation requests, admitted but not started.
struct Waiting {
    prompt: PromptInput,
    req: GenerateRequest,
    stops: Vec<String>,
    events: mpsc::UnboundedSender<GenEvent>,
    permit: OwnedSemaphorePermit,
}

/// Embedding requests, admitted but not run.
struct EmbedJob {
    inputs: Vec<EmbedInput>,
    opts: EmbedOptions,
    reply: oneshot::Sender<Result<Vec<Embedding>, ApiError>>,
    _permit: OwnedSemaphorePermit,
}

/// Everything admitted and not started, by kind.
#[derive(Default)]
struct Queues {
    embeds: VecDeque<EmbedJob>,
    tasks: VecDeque<(Task, OwnedSemaphorePermit)>,
    waiting: VecDeque<Waiting>,
}

impl Queues {
    fn push(&mut self, job: Job) {
        match job.work {
            Work::Embed { inputs, opts, reply } => self.embeds.push_back(EmbedJob { inputs, opts, reply, _permit: job._permit }),
            Work::Generate { prompt, req, stops, events } => self.waiting.push_back(Waiting { prompt, req, stops, events, permit: job._permit }),
            Work::Task(task) => self.tasks.push_back((task, job._permit)),
        }
    }

    fn is_empty(&self) -> bool {
        self.embeds.is_empty() && self.tasks.is_empty() && self.waiting.is_empty()
    }
}

fn run(engine: &Engine, rx: &Receiver<Job>, shutdown: &AtomicBool, max_streams: usize) {
    let mut q = Queues::default();
    let mut active: Vec<Active<'_>> = Vec::new();
    loop {
        // 1. Intake: block (briefly, so shutdown is noticed) only when there is nothing to do.
        if q.is_empty() && active.is_empty() {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(job) => q.push(job),
                Err(RecvTimeoutError::Timeout) if shutdown.load(Ordering::SeqCst) => return,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            q.push(job);
        }
        // 2. One embedding request and one task per round.
        if let Some(job) = q.embeds.pop_front() {
            if !job.reply.is_closed() {
                let result = guarded(|| engine.embed(&job.inputs, &job.opts).map_err(ApiError::from));
                let _ = job.reply.send(result);
            }
        }
        if let Some((task, _permit)) = q.tasks.pop_front() {
            // A panic drops the task's reply sender: its handler answers 500.
            let _ = catch_unwind(AssertUnwindSafe(|| task(engine)));
        }
        // 3. Start waiting generations up to the stream limit, skipping clients already gone.
        while active.len() < max_streams {
            let Some(w) = q.waiting.pop_front() else { break };
            if w.events.is_closed() {
                continue;
            }
            match guarded(|| w.prompt.start(engine, &w.req).map_err(ApiError::from)) {
                Ok(mut gen) => {
                    gen.stop_at(w.stops);
                    active.push(Active { gen, events: w.events, _permit: w.permit })
                }
                Err(e) => {
                    let _ = w.events.send(GenEvent::Failed(e));
                }
            }
        }
        // 4. One decode step for each active generation; finished or abandoned ones leave.
        active.retain_mut(step);
    }
}

/// Advances one generation by a token; returns whether it stays active.
fn step(a: &mut Active<'_>) -> bool {
    if a.events.is_closed() {
        // Client disconnected: stop spending compute on it.
        return false;
    }
    // A failure mid-generation is never the client's input (that was checked at the start): 500.
    match guarded(|| a.gen.step().map_err(|e| ApiError::internal(format!("generation failed: {e}")))) {
        Ok(Some(step)) => {
            let sent = a.events.send(GenEvent::Token { id: step.token, text: step.text });
            match step.stop {
                Some(reason) => {
                    let _ = a.events.send(GenEvent::Done(reason));
                    false
                }
                None => sent.is_ok(),
            }
        }
        Ok(None) => {
            let _ = a.events.send(GenEvent::Done(StopReason::MaxTokens));
            false
        }
        Err(e) => {
            let _ = a.events.send(GenEvent::Failed(e));
            false
        }
    }
}

/// Runs engine work, turning a panic (a bug, never input) into a 500 for this request only, so
/// one bad request cannot take the engine thread and every other request down with it.
fn guarded<T>(f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(ApiError::internal("internal error in the engine (panic); see the server log")))
}
