//! Shutdown: the signals that stop the process, and the token tasks wait on
//! (tokio-util's [`CancellationToken`], which also gives child tokens).

use tokio_util::sync::{CancellationToken, DropGuard};

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A shutdown token: cloned into every task that must stop with its owner;
/// `cancelled().await` resolves once shutdown has begun.
pub type Shutdown = CancellationToken;

/// The owner's side: dropping it or calling [`Trigger::fire`] stops every
/// token.
pub struct Trigger {
    token: CancellationToken,
    _on_drop: DropGuard,
}

/// A new trigger and its token.
pub fn channel() -> (Trigger, Shutdown) {
    let token = CancellationToken::new();
    let trigger = Trigger {
        token: token.clone(),
        _on_drop: token.clone().drop_guard(),
    };
    (trigger, token)
}

impl Trigger {
    /// Stops every token.
    pub fn fire(&self) {
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_trigger_stops_every_token() {
        let (trigger, token) = channel();
        let other = token.clone();
        assert!(!token.is_cancelled());
        drop(trigger);
        other.cancelled().await;
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn firing_stops_tokens_while_the_trigger_lives() {
        let (trigger, token) = channel();
        trigger.fire();
        token.cancelled().await;
        drop(trigger);
    }
}
