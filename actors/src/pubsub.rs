//! A Redis pub/sub subscription that outlives its connection: when the connection is lost (a
//! Redis restart, a network cut) it subscribes again with capped exponential backoff, for as
//! long as it takes, until shut down. An outage is logged once when it begins and once when
//! it ends, not at every attempt.
//!
//! Pub/sub keeps nothing for absent listeners, so whatever was published during an outage is
//! gone: each user says what covers it, and is told of every (re)subscription
//! ([`Event::Subscribed`]) so it can catch up. Used by the queue's wake-up relay
//! (`queue/redis.rs`) and the outcome notifications (`notify.rs`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::PubSubStream;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a subscription hands its user.
pub(crate) enum Event<'a> {
    /// Subscribed (again): anything published while it was not may have been missed.
    Subscribed,
    Message(&'a redis::Msg),
}

/// A subscription to one channel; [`Subscription::run`] keeps it alive.
pub(crate) struct Subscription {
    client: redis::Client,
    channel: String,
    /// What it is for, in log lines ("queue wake-up", "step outcome").
    what: &'static str,
    stream: Option<PubSubStream>,
}

impl Subscription {
    /// Subscribes now, so that a wrong URL or an absent server fails at startup.
    pub(crate) async fn connect(
        client: redis::Client,
        channel: String,
        what: &'static str,
    ) -> Result<Self, redis::RedisError> {
        let stream = subscribe(&client, &channel).await?;
        Ok(Self { client, channel, what, stream: Some(stream) })
    }

    /// Subscribes once [`Subscription::run`] starts.
    pub(crate) fn lazy(client: redis::Client, channel: String, what: &'static str) -> Self {
        Self { client, channel, what, stream: None }
    }

    /// Hands every message (and every (re)subscription) to `on` until `shutdown` fires.
    pub(crate) async fn run(mut self, shutdown: CancellationToken, mut on: impl FnMut(Event<'_>)) {
        let mut backoff = BACKOFF_MIN;
        let mut outage: Option<Instant> = None;
        loop {
            let mut messages = match self.stream.take() {
                Some(stream) => stream,
                None => match subscribe(&self.client, &self.channel).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        if outage.is_none() {
                            outage = Some(Instant::now());
                            tracing::warn!(channel = %self.channel, error = %e, "{} subscription failed; retrying in the background", self.what);
                        } else {
                            tracing::debug!(channel = %self.channel, error = %e, "{} subscription still failing", self.what);
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            if let Some(since) = outage.take() {
                tracing::info!(channel = %self.channel, outage = ?since.elapsed(), "{} subscription restored", self.what);
            }
            backoff = BACKOFF_MIN;
            on(Event::Subscribed);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.next() => match message {
                        Some(m) => on(Event::Message(&m)),
                        None => break,
                    },
                }
            }
            outage = Some(Instant::now());
            tracing::warn!(channel = %self.channel, "{} subscription lost; resubscribing in the background", self.what);
        }
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<PubSubStream, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message())
}
