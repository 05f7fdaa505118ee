//! Dynamic batching: images wait up to `max_wait` for others to join them, up to
//! `max_batch`, then run as one tensor. On a GPU this is what makes throughput;
//! on a CPU it costs at most `max_wait` of latency. As many batches run at once
//! as the model has sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::model::{Model, ModelError};
use crate::postprocess::ImageOutput;

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Images waiting for a batch before `infer` callers wait (backpressure).
    pub queue_capacity: usize,
    /// Batches running at once (the model's session count).
    pub concurrent_batches: usize,
    /// Pads every batch with blank images to `max_batch`, so that the model always
    /// sees one input shape. On a GPU a new shape costs far more than the unused
    /// rows (cuDNN plans per shape: measured on an H100, a batch of 16 took 42 ms
    /// with varying shapes and 5 ms with one shape; docs/bench/); on a CPU the
    /// blank rows cost their full price, so it is off there.
    pub pad_to_max_batch: bool,
}

/// How one image's inference went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTiming {
    pub batch_size: u32,
    pub queue_us: u64,
    pub inference_us: u64,
}

struct Job {
    image: Vec<f32>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<(ImageOutput, BatchTiming), String>>,
}

#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the batching task; it ends when every `Batcher` clone is dropped.
    pub fn start(model: Arc<Model>, config: BatchConfig) -> Self {
        let (jobs, receiver) = mpsc::channel(config.queue_capacity.max(1));
        tokio::spawn(collect_batches(model, config, receiver));
        Self { jobs }
    }

    /// Runs one preprocessed image through the model as part of a batch.
    pub async fn infer(&self, image: Vec<f32>) -> Result<(ImageOutput, BatchTiming), ModelError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            image,
            enqueued: Instant::now(),
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| ModelError::Run("the batcher has stopped".into()))?;
        answer
            .await
            .map_err(|_| ModelError::Run("the batcher dropped the image".into()))?
            .map_err(ModelError::Run)
    }
}

async fn collect_batches(
    model: Arc<Model>,
    config: BatchConfig,
    mut receiver: mpsc::Receiver<Job>,
) {
    let running = Arc::new(Semaphore::new(config.concurrent_batches.max(1)));
    while let Some(first) = receiver.recv().await {
        let deadline = tokio::time::Instant::now() + config.max_wait;
        let mut batch = vec![first];
        while batch.len() < config.max_batch.max(1) {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(permit) = Arc::clone(&running).acquire_owned().await else {
            return;
        };
        let model = Arc::clone(&model);
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut images, waiting): (Vec<Vec<f32>>, Vec<(Instant, oneshot::Sender<_>)>) = batch
                .into_iter()
                .map(|job| (job.image, (job.enqueued, job.reply)))
                .unzip();
            let batch_size = images.len() as u32;
            metrics::histogram!(fxtriage_telemetry::metrics::names::INFERENCE_BATCH_SIZE)
                .record(f64::from(batch_size));
            if config.pad_to_max_batch {
                let blank = vec![0.0; images[0].len()];
                images.resize(config.max_batch.max(images.len()), blank);
            }
            // Outputs of blank rows are dropped by the zip with `waiting` below.
            let outcome = tokio::task::spawn_blocking(move || model.run_batch(&images)).await;
            drop(permit);
            let inference_us = started.elapsed().as_micros() as u64;
            let outputs = match outcome {
                Ok(Ok(outputs)) => Ok(outputs),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(format!("the inference task failed: {error}")),
            };
            match outputs {
                Ok(outputs) => {
                    for ((enqueued, reply), output) in waiting.into_iter().zip(outputs) {
                        let queue_us =
                            started.saturating_duration_since(enqueued).as_micros() as u64;
                        let _receiver_gone = reply.send(Ok((
                            output,
                            BatchTiming {
                                batch_size,
                                queue_us,
                                inference_us,
                            },
                        )));
                    }
                }
                Err(message) => {
                    for (_, reply) in waiting {
                        let _receiver_gone = reply.send(Err(message.clone()));
                    }
                }
            }
        });
    }
}
