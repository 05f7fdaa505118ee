//! The bus over Kafka (any Kafka-protocol broker) through rdkafka.
//!
//! Offsets are stored only when the application acknowledges (and only up to the
//! lowest message still in flight, see `offsets`), committed periodically, on
//! partition revocation and on close. Producers are idempotent and wait for every
//! in-sync replica. Kafka transactions are not used: effects downstream are
//! idempotent instead.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::headers::add_trace_context;
use crate::offsets::OffsetTracker;
use crate::stall::{Observation, StallDetector};
use crate::{Bus, BusError, BusErrorKind, Consumer, Delivery, Headers, Received, Record};

/// The consumers' `fetch.wait.max.ms` unless the deployment sets its own
/// (`FXTRIAGE_KAFKA_PROPERTIES`).
pub const FETCH_WAIT_MAX_MS: &str = "100";

#[derive(Clone)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    pub client_id: String,
    pub replication_factor: i32,
    /// How long a produce may take before it fails (and the caller reports a
    /// retryable failure to its sender).
    pub delivery_timeout: Duration,
    /// Extra librdkafka properties (security.protocol, sasl.*, ...).
    pub properties: Vec<(String, String)>,
    /// How often a member without partitions checks that its group is not stuck
    /// (see `stall`). Three stalled checks in a row must outlast a normal
    /// rebalance (`max.poll.interval.ms`, 30 s), so that waiting for a dead
    /// member is never mistaken for a stuck group.
    pub stall_check_interval: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(30),
            properties: Vec::new(),
            stall_check_interval: Duration::from_secs(20),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        config
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(name, value)| {
                let secret = name.contains("password") || name.contains("secret");
                (
                    name.as_str(),
                    if secret { "<redacted>" } else { value.as_str() },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("replication_factor", &self.replication_factor)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("properties", &properties)
            .finish()
    }
}

pub struct KafkaBus {
    config: KafkaConfig,
    /// Replaced when it hits a fatal error (see [`KafkaBus::produce`]).
    producer: std::sync::RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    /// What its consumers report that needs the operator, for the health check.
    problems: Arc<ConsumerProblems>,
}

/// Errors of this bus's consumers that librdkafka cannot cure by retrying
/// (authentication, authorisation, TLS, a topic that does not exist, or a
/// fatal error), per consumer: the health check reports them, so that
/// readiness names a consumer that cannot consume while its broker answers.
/// A fatal one stays until the consumer receives again or is dropped; the
/// others until none has come for [`PROBLEM_WINDOW`] (librdkafka reports them
/// again at each attempt while they last).
#[derive(Debug, Default)]
struct ConsumerProblems(Mutex<std::collections::HashMap<String, ConsumerProblem>>);

#[derive(Debug)]
struct ConsumerProblem {
    error: String,
    fatal: bool,
    at: std::time::Instant,
}

/// How long after its last report a consumer's non-fatal problem is reported.
const PROBLEM_WINDOW: Duration = Duration::from_secs(30);

impl ConsumerProblems {
    fn record(&self, consumer: &str, error: &KafkaError, fatal: bool) {
        lock(&self.0).insert(
            consumer.to_owned(),
            ConsumerProblem {
                error: error.to_string(),
                fatal,
                at: std::time::Instant::now(),
            },
        );
    }

    fn clear(&self, consumer: &str) {
        let mut problems = lock(&self.0);
        if !problems.is_empty() {
            problems.remove(consumer);
        }
    }

    /// The first current problem, by consumer name.
    fn current(&self) -> Option<(String, String)> {
        let problems = lock(&self.0);
        let mut current: Vec<(&String, &ConsumerProblem)> = problems
            .iter()
            .filter(|(_, problem)| problem.fatal || problem.at.elapsed() < PROBLEM_WINDOW)
            .collect();
        current.sort_by(|a, b| a.0.cmp(b.0));
        current
            .first()
            .map(|(consumer, problem)| ((*consumer).clone(), problem.error.clone()))
    }
}

/// Counter: Kafka producers replaced after a fatal error.
pub const PRODUCERS_REPLACED: &str = "fxtriage_kafka_producers_replaced_total";

/// The idempotent producer of every service.
fn create_producer(config: &KafkaConfig) -> Result<FutureProducer, BusError> {
    config
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .create()
        .map_err(config_error)
}

impl fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBus")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn config_error(error: KafkaError) -> BusError {
    BusError::Config(error.to_string())
}

/// Errors that retrying the same message cannot fix.
fn produce_error_kind(error: &KafkaError) -> BusErrorKind {
    use RDKafkaErrorCode::{
        InvalidMessage, InvalidMessageSize, InvalidRecord, MessageSizeTooLarge,
        TopicAuthorizationFailed,
    };
    match error.rdkafka_error_code() {
        Some(
            MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | InvalidRecord
            | TopicAuthorizationFailed,
        ) => BusErrorKind::Permanent,
        _ => BusErrorKind::Transient,
    }
}

impl KafkaBus {
    /// Creates the producer and admin clients. Connections are made lazily; call
    /// [`KafkaBus::check`] to find out whether the brokers answer.
    pub fn connect(config: KafkaConfig) -> Result<Self, BusError> {
        let producer = create_producer(&config)?;
        let admin: AdminClient<DefaultClientContext> =
            config.client_config().create().map_err(config_error)?;
        Ok(Self {
            config,
            producer: std::sync::RwLock::new(producer),
            admin,
            problems: Arc::default(),
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// After a produce failed with `used`: an idempotent producer that hit a
    /// fatal error (the broker fenced it or lost its producer state, as a broker
    /// restarted without that state does) fails every later message, so it is
    /// replaced by a new one, once, and the caller's retry goes through the new
    /// producer. Messages it held fail; their callers retry them too.
    fn replace_if_fatal(&self, used: &FutureProducer, error: &KafkaError) {
        let fatal = rdkafka::producer::Producer::client(used)
            .fatal_error()
            .or_else(|| {
                // Fenced: librdkafka does not always flag it fatal, but the
                // producer's identity is refused for good.
                (error.rdkafka_error_code() == Some(RDKafkaErrorCode::ProducerFenced))
                    .then(|| (RDKafkaErrorCode::ProducerFenced, error.to_string()))
            });
        let Some((code, reason)) = fatal else {
            return;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = rdkafka::producer::Producer::client(&*current).native_ptr()
            == rdkafka::producer::Producer::client(used).native_ptr();
        if !same {
            return; // another caller replaced it already
        }
        match create_producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!(?code, %reason, "the Kafka producer hit a fatal error; replaced by a new one");
                metrics::counter!(PRODUCERS_REPLACED).increment(1);
                *current = fresh;
            }
            Err(error) => {
                tracing::error!(%error, ?code, %reason, "the Kafka producer hit a fatal error and cannot be replaced");
            }
        }
    }

    /// Asks a broker for cluster metadata; fails when none answers within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || {
            rdkafka::producer::Producer::client(&producer)
                .fetch_metadata(None, Timeout::After(timeout))
                .map(|_| ())
        })
        .await
        .map_err(|error| BusError::Config(format!("metadata task failed: {error}")))?
        .map_err(|error| BusError::Consume {
            topics: "(metadata)".into(),
            message: error.to_string(),
            kind: BusErrorKind::Transient,
        })
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let dead_letter = crate::dead_letter_topic(topic);
        let partitions = i32::try_from(partitions.max(1)).unwrap_or(i32::MAX);
        let replication = self.config.replication_factor;
        let new_topics = [
            NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)),
            NewTopic::new(
                &dead_letter,
                partitions,
                TopicReplication::Fixed(replication),
            ),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|error| BusError::Topic {
                topic: topic.to_owned(),
                message: error.to_string(),
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Topic {
                        topic: name,
                        message: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn produce(&self, topic: &str, mut record: Record) -> Result<Delivery, BusError> {
        add_trace_context(&mut record.headers);
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in record.headers.iter() {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let message = FutureRecord::to(topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(headers);
        let producer = self.producer();
        match producer
            .send(message, Timeout::After(self.config.delivery_timeout))
            .await
        {
            Ok(delivery) => Ok(Delivery {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((error, _unsent)) => {
                self.replace_if_fatal(&producer, &error);
                Err(BusError::Produce {
                    topic: topic.to_owned(),
                    kind: produce_error_kind(&error),
                    message: error.to_string(),
                })
            }
        }
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, BusError> {
        if topics.is_empty() {
            return Err(BusError::Config(
                "subscribe needs at least one topic".into(),
            ));
        }
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let context = GroupContext {
            tracker: Arc::clone(&tracker),
            group: group.to_owned(),
        };
        let mut config = self.config.client_config();
        if !self
            .config
            .properties
            .iter()
            .any(|(name, _)| name == "fetch.wait.max.ms")
        {
            // How long the broker may hold a fetch while it has nothing new.
            // librdkafka's 500 ms default is what a new message waits on a
            // broker that holds every fetch that long (tansu does): twice per
            // study on its way to the worklist (instances, then findings).
            // 100 ms costs a few idle fetches a second per consumer.
            config.set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        }
        let consumer: StreamConsumer<GroupContext> = config
            .set("group.id", group)
            // Statistics (consumer lag per partition) every few seconds; see
            // `GroupContext::stats`.
            .set("statistics.interval.ms", "5000")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // The application decides what is done: offsets are stored on acknowledgement only.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            // Also the rebalance timeout: how long a group waits for a member that
            // died without leaving before it shares out that member's partitions.
            .set("max.poll.interval.ms", "30000")
            .set("heartbeat.interval.ms", "500")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create_with_context(context)
            .map_err(config_error)?;
        consumer
            .subscribe(topics)
            .map_err(|error| BusError::Consume {
                topics: topics.join(","),
                message: error.to_string(),
                kind: BusErrorKind::Permanent,
            })?;
        let consumer = Arc::new(consumer);
        let left = Arc::new(Mutex::new(false));
        tokio::spawn(watch_for_a_stuck_group(
            Arc::downgrade(&consumer),
            Arc::clone(&left),
            group.to_owned(),
            topics.iter().map(|topic| (*topic).to_owned()).collect(),
            self.config.stall_check_interval,
        ));
        Ok(Box::new(KafkaConsumer {
            consumer,
            tracker,
            passed_over: Mutex::new(std::collections::HashMap::new()),
            left,
            name: format!("group {group} on {}", topics.join(",")),
            topics: topics.join(","),
            problems: Arc::clone(&self.problems),
        }))
    }

    /// The broker answers a metadata request, and no consumer of this bus
    /// reports a problem that needs the operator.
    async fn health_check(&self) -> Result<(), BusError> {
        self.check(HEALTH_CHECK_TIMEOUT).await?;
        match self.problems.current() {
            None => Ok(()),
            Some((consumer, error)) => Err(BusError::Consume {
                topics: consumer,
                message: error,
                kind: BusErrorKind::Permanent,
            }),
        }
    }

    fn describe(&self) -> String {
        format!("kafka at {}", self.config.brokers)
    }
}

/// How long a readiness check waits for a broker's metadata.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// While the consumer lives: every `interval`, looks whether this member holds
/// no partitions while its group makes no progress on waiting messages, and
/// rejoins the group when so (see `stall`). `left` is set (under its lock) once
/// the owner closed or dropped the consumer: from then on it never subscribes
/// again (librdkafka aborts when a consumer is destroyed with a subscription
/// made after it was closed).
async fn watch_for_a_stuck_group(
    consumer: std::sync::Weak<StreamConsumer<GroupContext>>,
    left: Arc<Mutex<bool>>,
    group: String,
    topics: Vec<String>,
    interval: Duration,
) {
    let mut detector = StallDetector::default();
    loop {
        tokio::time::sleep(interval).await;
        if *lock(&left) {
            return;
        }
        let Some(live) = consumer.upgrade() else {
            return;
        };
        let looked = {
            let topics = topics.clone();
            tokio::task::spawn_blocking(move || observe_group(&live, &topics)).await
        };
        let observation = match looked {
            Ok(Ok(observation)) => observation,
            // The broker is away, or the consumer was closed: look again later.
            Ok(Err(_)) | Err(_) => continue,
        };
        let waiting = observation.waiting;
        if detector.observe(observation) {
            let Some(live) = consumer.upgrade() else {
                return;
            };
            let left = Arc::clone(&left);
            let topics = topics.clone();
            let rejoined = tokio::task::spawn_blocking(move || {
                let left = lock(&left);
                if *left {
                    return None;
                }
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                live.unsubscribe();
                Some(live.subscribe(&names))
            })
            .await;
            match rejoined {
                Ok(None) | Err(_) => return,
                Ok(Some(result)) => {
                    tracing::warn!(
                        %group,
                        waiting,
                        "this member held no partitions while messages waited and the group committed nothing; rejoined the group"
                    );
                    metrics::counter!(
                        fxtriage_telemetry::metrics::names::CONSUMER_REJOINS,
                        "group" => group.clone(),
                    )
                    .increment(1);
                    if let Err(error) = result {
                        tracing::error!(%group, %error, "rejoining the group failed");
                    }
                }
            }
        }
    }
}

/// What the member holds, what its group committed and how much waits past it.
fn observe_group(
    consumer: &StreamConsumer<GroupContext>,
    topics: &[String],
) -> Result<Observation, KafkaError> {
    let timeout = Duration::from_secs(5);
    let assigned_partitions = consumer.assignment()?.count();
    let mut partitions = TopicPartitionList::new();
    let mut watermarks = BTreeMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for described in metadata.topics() {
            for partition in described.partitions() {
                partitions.add_partition(topic, partition.id());
                let marks = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
                watermarks.insert((topic.clone(), partition.id()), marks);
            }
        }
    }
    let committed_offsets = consumer.committed_offsets(partitions, timeout)?;
    let mut committed = BTreeMap::new();
    let mut waiting = 0;
    for element in committed_offsets.elements() {
        let key = (element.topic().to_owned(), element.partition());
        let offset = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => -1,
        };
        if let Some((low, high)) = watermarks.get(&key) {
            let from = if offset < 0 { *low } else { offset };
            waiting += (high - from).max(0);
        }
        committed.insert(key, offset);
    }
    Ok(Observation {
        assigned_partitions,
        committed,
        waiting,
    })
}

/// Commits acknowledged positions before partitions move to another member.
struct GroupContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    group: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn commit_stored(consumer: &impl rdkafka::consumer::Consumer<GroupContext>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing acknowledged since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "committing acknowledged offsets failed"),
    }
}

impl ClientContext for GroupContext {
    /// The lag of each partition this member consumes as a gauge; 0 for the
    /// partitions it knows but does not consume (another member reports them),
    /// so `max by (group, topic, partition)` gives the group's lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, described) in &statistics.topics {
            for (partition, state) in &described.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                metrics::gauge!(
                    fxtriage_telemetry::metrics::names::CONSUMER_LAG,
                    "group" => self.group.clone(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string(),
                )
                .set(state.consumer_lag.max(0) as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            commit_stored(consumer);
            let mut tracker = lock(&self.tracker);
            for element in partitions.elements() {
                tracker.revoke(element.topic(), element.partition());
            }
        }
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer<GroupContext>>,
    tracker: Arc<Mutex<OffsetTracker>>,
    /// Per error code: when it was last logged.
    passed_over: Mutex<std::collections::HashMap<String, PassedOver>>,
    /// Set once closed or dropped; read by `watch_for_a_stuck_group`.
    left: Arc<Mutex<bool>>,
    topics: String,
    /// Its group and topics, as the health check names it.
    name: String,
    problems: Arc<ConsumerProblems>,
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        *lock(&self.left) = true;
        self.problems.clear(&self.name);
    }
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    fn consume_error(&self, error: &KafkaError) -> BusError {
        BusError::Consume {
            topics: self.topics.clone(),
            message: error.to_string(),
            kind: BusErrorKind::Transient,
        }
    }
}

/// How often a consumer logs the errors librdkafka reports while it recovers.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The errors of one kind a consumer passes over, logged at most once per
/// [`ERROR_LOG_INTERVAL`] with how many came meanwhile.
#[derive(Debug, Default)]
struct PassedOver {
    logged: Option<std::time::Instant>,
    since_logged: u64,
}

impl PassedOver {
    /// Whether to log `error` now (then with `since_logged` more before it).
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|logged| now.duration_since(logged) < ERROR_LOG_INTERVAL)
        {
            self.since_logged += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// Whether a consume error says the client cannot reach a broker (it
/// reconnects by itself).
/// Whether a consume error is one that retrying does not cure: someone must
/// fix credentials, permissions, TLS settings or the topic.
fn needs_the_operator(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

fn is_connection_failure(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}

/// Whether a consume error is one the client does not recover from by
/// itself. Every other one (a broker down, a transport failure, a group
/// coordinator away) librdkafka reports and recovers from: the consumer's
/// queue must go on being served meanwhile, or what follows those errors in
/// it waits behind them (see [`KafkaConsumer::next`]).
fn is_fatal(consumer: &StreamConsumer<GroupContext>, error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageConsumptionFatal(_))
        || consumer.client().fatal_error().is_some()
}

#[async_trait]
impl Consumer for KafkaConsumer {
    /// The next message. Errors that librdkafka recovers from by itself are
    /// logged (at most every 10 s) and passed over, not returned: each one is
    /// an event in the consumer's queue, ahead of what came after it, such as
    /// the partitions assigned when the group rebalanced after the broker came
    /// back. An owner that paused after each returned error (as it should for
    /// failures of its own) served that queue one event per pause, and after a
    /// 30 s broker outage, hundreds of queued "all brokers down" events kept
    /// the assignment waiting for many minutes while the group held its
    /// partitions for this member. Only fatal errors are returned. Each kind
    /// is logged at most every 10 s: a warning for a broker out of reach, an
    /// error for the rest (authentication, authorisation, TLS, an unknown
    /// topic), which librdkafka retries but someone must fix.
    async fn next(&self) -> Result<Received, BusError> {
        let consumer = &self.consumer;
        let message = loop {
            match consumer.recv().await {
                Ok(message) => {
                    self.problems.clear(&self.name);
                    break message;
                }
                Err(error) if is_fatal(consumer, &error) => {
                    self.problems.record(&self.name, &error, true);
                    return Err(BusError::Consume {
                        topics: self.topics.clone(),
                        message: error.to_string(),
                        kind: BusErrorKind::Permanent,
                    });
                }
                Err(error) => {
                    if needs_the_operator(&error) {
                        self.problems.record(&self.name, &error, false);
                    }
                    let code = error
                        .rdkafka_error_code()
                        .map_or_else(|| "other".to_owned(), |code| format!("{code:?}"));
                    let logged = lock(&self.passed_over)
                        .entry(code)
                        .or_default()
                        .note(std::time::Instant::now());
                    if let Some(more) = logged {
                        if is_connection_failure(&error) {
                            tracing::warn!(topics = %self.topics, %error, more, "the consumer cannot reach the broker; librdkafka reconnects, consuming on");
                        } else {
                            // Authentication, authorisation, TLS, unknown topics:
                            // librdkafka goes on trying, but these need someone.
                            tracing::error!(topics = %self.topics, %error, more, "the consumer reports an error; consuming on, but it may need the operator");
                        }
                    }
                }
            }
        };
        let mut headers = Headers::new();
        if let Some(wire_headers) = message.headers() {
            for header in wire_headers.iter() {
                headers.push(header.key, header.value.unwrap_or_default());
            }
        }
        let received = Received {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        };
        lock(&self.tracker).delivered(&received.topic, received.partition, received.offset);
        Ok(received)
    }

    fn ack(&self, message: &Received) -> Result<(), BusError> {
        let position =
            lock(&self.tracker).acknowledged(&message.topic, message.partition, message.offset);
        let Some(position) = position else {
            return Ok(());
        };
        let mut positions = TopicPartitionList::new();
        positions
            .add_partition_offset(&message.topic, message.partition, Offset::Offset(position))
            .map_err(|error| self.consume_error(&error))?;
        match self.consumer.store_offsets(&positions) {
            Ok(()) => Ok(()),
            // The partition was revoked meanwhile; its new owner redelivers.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => Ok(()),
            Err(error) => Err(self.consume_error(&error)),
        }
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer
            .assignment()
            .map(|partitions| {
                partitions
                    .elements()
                    .iter()
                    .map(|element| (element.topic().to_owned(), element.partition()))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn close(&self) -> Result<(), BusError> {
        let consumer = Arc::clone(&self.consumer);
        let left = Arc::clone(&self.left);
        lock(&self.tracker).clear();
        // Committing and leaving the group block on the network.
        tokio::task::spawn_blocking(move || {
            // Held until the consumer has left: the watchdog never rejoins
            // after that.
            let mut left = lock(&left);
            *left = true;
            commit_stored(consumer.as_ref());
            consumer.unsubscribe();
        })
        .await
        .map_err(|error| BusError::Config(format!("closing the consumer failed: {error}")))
    }
}

#[cfg(test)]
mod passed_over_tests {
    use super::*;

    #[test]
    fn errors_passed_over_are_logged_at_most_every_interval_with_a_count() {
        let start = std::time::Instant::now();
        let mut passed = PassedOver::default();
        assert_eq!(passed.note(start), Some(0), "the first at once");
        for i in 1..=5 {
            assert_eq!(passed.note(start + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(
            passed.note(start + ERROR_LOG_INTERVAL),
            Some(5),
            "then with how many came meanwhile"
        );
        assert_eq!(passed.note(start + ERROR_LOG_INTERVAL), None);
    }
}
