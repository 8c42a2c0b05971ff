//! The shutdown signal handed to every task the emulator starts.

use std::sync::Arc;

use tokio::sync::watch;

/// A one-way, cloneable "stop now" flag. Once cancelled it stays cancelled,
/// and [`CancelToken::cancelled`] resolves at once for late subscribers too
/// (a `watch` keeps its last value, unlike a broadcast or a `Notify`).
#[derive(Debug, Clone)]
pub(crate) struct CancelToken {
    tx: Arc<watch::Sender<bool>>,
}

impl CancelToken {
    pub(crate) fn new() -> Self {
        CancelToken {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    pub(crate) fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once [`CancelToken::cancel`] has been called.
    pub(crate) async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_waiters_see_the_cancel() {
        let token = CancelToken::new();
        assert!(!token.is_cancelled());
        let waiter = token.clone();
        let task = tokio::spawn(async move { waiter.cancelled().await });
        token.cancel();
        task.await.unwrap();
        token.cancelled().await;
        assert!(token.is_cancelled());
    }
}
