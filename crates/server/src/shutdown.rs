//! Shutdown: the signals that stop the process, and a token tasks wait on.

use tokio::sync::watch;

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

/// A shutdown token: cloned into every task that must stop with its owner.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The owner's side: dropping it or calling [`Trigger::fire`] stops every token.
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A new trigger and its token.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Stops every token.
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }

    /// Whether shutdown has begun.
    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
    }
}
