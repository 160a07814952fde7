//! The engine thread: one `std::thread` owns the [`Batcher`] (over the shared [`Engine`]) and
//! runs every forward pass. Requests arrive on a channel; those that find no free slot wait in a
//! bounded FIFO queue; each step's [`SeqUpdate`]s go to the requests' own tokio channels.
//!
//! Loop: while idle, block on the channel; otherwise take what arrived (without blocking),
//! drop requests whose client is gone, start queued requests while slots are free, run one
//! step and route its updates. A failed send (the receiver was dropped: the client went away,
//! or the handler future was dropped) cancels the sequence and frees its slot.
//!
//! Admission is counted outside the thread: [`WorkerHandle::submit`] takes a permit out of
//! `n_slots + queue` before sending, and the permit is released when the worker drops the
//! request (finished, failed or cancelled). So a full queue is answered at once (503) without a
//! round trip to the engine thread, and the queue can never grow past its capacity.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use strata_engine::{
    BatchConfig, BatchStats, Batcher, Engine, EngineError, GenerateOptions, SeqId, SeqUpdate,
};
use tokio::sync::mpsc as tmpsc;

use crate::errors::ApiError;

/// What the engine thread sends a request.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// One step's output for the request; the last one has `finished` set.
    Update(SeqUpdate),
    /// The request failed (bad setting found at submission, failed step, shutdown); nothing
    /// follows.
    Failed(ApiError),
}

/// The counters `/metrics` shows, refreshed by the engine thread after every change.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    /// The batcher's counters.
    pub stats: BatchStats,
    /// Sequences running (slots in use).
    pub active: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
}

/// A message to the engine thread.
enum Command {
    /// A new request.
    Submit(Job),
    /// Fail every request and stop the thread.
    Shutdown,
}

/// A request on its way to a slot.
struct Job {
    prompt: Vec<u32>,
    options: GenerateOptions,
    tx: tmpsc::UnboundedSender<WorkerEvent>,
    permit: Permit,
}

/// A request's place in `n_slots + queue`; released when dropped.
struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The handlers' side of the engine thread.
pub(crate) struct WorkerHandle {
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    inflight: Arc<AtomicUsize>,
    n_slots: usize,
    n_ctx: usize,
    queue: usize,
    snapshot: Arc<Mutex<Snapshot>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WorkerHandle {
    /// Starts the engine thread: a batcher of `batch` over `engine` (its KV caches allocated
    /// now; an allocation or setting error is returned here) and a wait queue of `queue`.
    pub fn start(
        engine: Arc<Engine>,
        batch: BatchConfig,
        queue: usize,
    ) -> Result<WorkerHandle, EngineError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(usize, usize), EngineError>>();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let snap = Arc::clone(&snapshot);
        let thread = std::thread::Builder::new()
            .name("strata-engine".into())
            .spawn(move || {
                let batcher = match Batcher::new(&engine, batch) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((batcher.n_slots(), batcher.n_ctx())));
                Worker {
                    batcher,
                    rx,
                    queue: VecDeque::new(),
                    queue_cap: queue,
                    active: HashMap::new(),
                    snapshot: snap,
                }
                .run();
            })
            .map_err(|e| EngineError::ThreadPool {
                threads: 1,
                message: format!("spawning the engine thread: {e}"),
            })?;
        let (n_slots, n_ctx) = match ready_rx.recv() {
            Ok(Ok(sizes)) => sizes,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::InvalidSetting {
                    what: "the engine thread stopped while starting".into(),
                });
            }
        };
        Ok(WorkerHandle {
            tx: Mutex::new(Some(tx)),
            inflight: Arc::new(AtomicUsize::new(0)),
            n_slots,
            n_ctx,
            queue,
            snapshot,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Sequences decoded together.
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// KV positions per sequence.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The counters as of the engine thread's last update.
    pub fn snapshot(&self) -> Snapshot {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a request to the engine thread; its updates arrive on the returned channel (drop
    /// it to cancel the request). A 503 at once when every slot and queue place is taken or
    /// the engine thread has stopped.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<tmpsc::UnboundedReceiver<WorkerEvent>, ApiError> {
        let capacity = self.n_slots + self.queue;
        let taken = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(ApiError::queue_full(self.n_slots, self.queue));
        }
        let permit = Permit(Arc::clone(&self.inflight));
        let (tx, rx) = tmpsc::unbounded_channel();
        let job = Job {
            prompt,
            options,
            tx,
            permit,
        };
        let sender = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match sender.as_ref().map(|s| s.send(Command::Submit(job))) {
            Some(Ok(())) => Ok(rx),
            _ => Err(ApiError::unavailable("The server is shutting down.")),
        }
    }

    /// Fails every running and queued request (503) and stops the engine thread; later
    /// submissions get 503. Waits for the thread to end (after its current step).
    pub fn shutdown(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(Command::Shutdown);
        }
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

/// A running request.
struct Active {
    tx: tmpsc::UnboundedSender<WorkerEvent>,
    _permit: Permit,
}

/// The engine thread's state.
struct Worker<'e> {
    batcher: Batcher<'e>,
    rx: mpsc::Receiver<Command>,
    queue: VecDeque<Job>,
    queue_cap: usize,
    active: HashMap<SeqId, Active>,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Worker<'_> {
    fn run(mut self) {
        loop {
            if self.batcher.is_idle() && self.queue.is_empty() {
                self.publish();
                match self.rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut stop = false;
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            stop = true;
                            break;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
            if stop {
                break;
            }
            self.drop_abandoned();
            self.admit();
            self.publish();
            if !self.batcher.is_idle() {
                self.step();
            }
        }
        self.fail_all(&ApiError::unavailable("The server is shutting down."));
        self.publish();
    }

    /// Takes one command; `false` = stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit(job) => {
                // The permits bound the queue already; this only guards the invariant.
                if self.queue.len() >= self.queue_cap + self.batcher.free_slots() {
                    let _ = job.tx.send(WorkerEvent::Failed(ApiError::queue_full(
                        self.batcher.n_slots(),
                        self.queue_cap,
                    )));
                } else {
                    self.queue.push_back(job);
                }
                true
            }
            Command::Shutdown => false,
        }
    }

    /// Cancels running sequences and forgets queued requests whose receiver is gone.
    fn drop_abandoned(&mut self) {
        self.queue.retain(|j| !j.tx.is_closed());
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.batcher.cancel(id);
            self.active.remove(&id);
            tracing::debug!(seq = id.0, "client gone: sequence cancelled");
        }
    }

    /// Starts queued requests while slots are free.
    fn admit(&mut self) {
        while self.batcher.free_slots() > 0 {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            match self.batcher.submit(job.prompt, job.options) {
                Ok(id) => {
                    self.active.insert(
                        id,
                        Active {
                            tx: job.tx,
                            _permit: job.permit,
                        },
                    );
                }
                Err(e) => {
                    let _ = job.tx.send(WorkerEvent::Failed(submit_error(&e)));
                }
            }
        }
    }

    /// One forward pass; its updates go to their requests.
    fn step(&mut self) {
        match self.batcher.step() {
            Ok(updates) => {
                for u in updates {
                    let id = u.id;
                    let finished = u.finished.is_some();
                    let Some(a) = self.active.get(&id) else {
                        // Not ours (cannot happen): stop it rather than leak the slot.
                        self.batcher.cancel(id);
                        continue;
                    };
                    let sent = a.tx.send(WorkerEvent::Update(u)).is_ok();
                    if finished {
                        self.active.remove(&id);
                    } else if !sent {
                        self.batcher.cancel(id);
                        self.active.remove(&id);
                        tracing::debug!(seq = id.0, "client gone: sequence cancelled");
                    }
                }
            }
            Err(e) => {
                let msg = format!("The engine failed: {}", chain(&e));
                tracing::error!("{msg}");
                // The batcher dropped every running sequence.
                let err = ApiError::server(msg);
                for (_, a) in self.active.drain() {
                    let _ = a.tx.send(WorkerEvent::Failed(err.clone()));
                }
            }
        }
        self.publish();
    }

    /// Fails every running and queued request with `err`.
    fn fail_all(&mut self, err: &ApiError) {
        for (id, a) in self.active.drain() {
            self.batcher.cancel(id);
            let _ = a.tx.send(WorkerEvent::Failed(err.clone()));
        }
        for job in self.queue.drain(..) {
            let _ = job.tx.send(WorkerEvent::Failed(err.clone()));
        }
    }

    fn publish(&self) {
        let mut s = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        *s = Snapshot {
            stats: self.batcher.stats(),
            active: self.batcher.n_active(),
            queued: self.queue.len(),
        };
    }
}

/// The answer to a request the batcher refused: settings and inputs are 400s (the handlers
/// check them first, so these are rare), anything else a 500.
fn submit_error(e: &EngineError) -> ApiError {
    match e {
        EngineError::ContextOverflow { .. }
        | EngineError::EmptyInput
        | EngineError::TokenOutOfRange { .. }
        | EngineError::InvalidSetting { .. } => ApiError::invalid(chain(e), None),
        _ => ApiError::server(chain(e)),
    }
}

/// `e` and its sources, joined with ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
