//! Waiting on progress instead of sleeping: a check runs again and again until it
//! says done or the deadline passes; on a timeout the test fails with what the
//! check saw last, so the failure says where things stopped.

use std::future::Future;
use std::time::Duration;

/// What one check found.
#[derive(Debug)]
pub enum Progress<T> {
    Done(T),
    /// Not yet, with a description of the state now (shown on timeout).
    NotYet(String),
}

/// Runs `check` until it returns [`Progress::Done`] (its value is returned) or
/// `timeout` passes (the test panics with `what` and the last state). The pause
/// between checks grows from 20 ms to 500 ms.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Progress<T>>,
{
    match poll_until(timeout, check).await {
        Ok(value) => value,
        Err(state) => panic!(
            "timed out after {} s waiting for {what}; last seen: {state}",
            timeout.as_secs()
        ),
    }
}

/// Like [`eventually`], but a timeout is returned as `Err` with the last state,
/// for a caller that gathers more evidence before failing.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Progress<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        let state = match check().await {
            Progress::Done(value) => return Ok(value),
            Progress::NotYet(state) => state,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(state);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Waits until `condition` holds, checking every 50 ms; panics with `what` after
/// `limit`. For checks with nothing to report but yes or no.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
