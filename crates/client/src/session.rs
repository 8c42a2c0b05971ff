//! A client session that carries its causal token from call to call.

use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use crate::{Client, ClientError, Entry, Options, Written};

/// A [`Client`] that sends the newest token it has seen with every request.
///
/// Writes then follow reads, reads follow writes, and reads never go back in
/// time, in whichever region the session talks to (the region waits up to
/// `wait_ms` until it has caught up, or answers 503). Over a client of
/// several regions the token goes with every failover: a region the
/// session moves to serves it only once it has what the session saw.
pub struct Session {
    client: Client,
    token: Mutex<Option<String>>,
    wait_ms: Option<u64>,
    write_concern: Option<String>,
}

impl Session {
    /// A session over `client`, starting with no token.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            token: Mutex::new(None),
            wait_ms: None,
            write_concern: None,
        }
    }

    /// Sets how long regions may wait to catch up to the token.
    pub fn with_wait_ms(mut self, ms: u64) -> Self {
        self.wait_ms = Some(ms);
        self
    }

    /// Sets the write concern of the session's writes (`one`, `majority`,
    /// ...). A session that must carry on in another region as soon as its
    /// region dies needs `one` or more: with `local`, writes the dead region
    /// had not shipped are covered by the token, and other regions answer
    /// `503 behind_token` until they arrive. The same holds for other
    /// clients' `local` writes the session's reads saw there (a read's
    /// token is the region's whole version vector): see docs/client.md.
    pub fn with_write_concern(mut self, concern: &str) -> Self {
        self.write_concern = Some(concern.to_string());
        self
    }

    /// Switches to another region, keeping the token.
    pub fn with_client(&self, client: Client) -> Session {
        Session {
            client,
            token: Mutex::new(self.token()),
            wait_ms: self.wait_ms,
            write_concern: self.write_concern.clone(),
        }
    }

    /// The newest token seen.
    pub fn token(&self) -> Option<String> {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adopts `token` (e.g. handed over from another session).
    pub fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    fn opts(&self) -> Options {
        Options {
            token: self.token(),
            wait_ms: self.wait_ms,
            write_concern: self.write_concern.clone(),
            ..Options::default()
        }
    }

    fn keep(&self, token: &Option<String>) {
        if let Some(t) = token {
            self.set_token(Some(t.clone()));
        }
    }

    /// `PUT` a JSON value.
    pub async fn put(&self, ks: &str, key: &str, value: &Value) -> Result<Written, ClientError> {
        let w = self.client.put_with(ks, key, value, &self.opts()).await?;
        self.keep(&Some(w.token.clone()));
        Ok(w)
    }

    /// `GET` a key.
    pub async fn get(&self, ks: &str, key: &str) -> Result<Option<Entry>, ClientError> {
        let opts = Options {
            write_concern: None,
            ..self.opts()
        };
        let (e, token) = self.client.get_with(ks, key, &opts).await?;
        self.keep(&token);
        Ok(e)
    }

    /// `DELETE` a key.
    pub async fn delete(&self, ks: &str, key: &str) -> Result<Written, ClientError> {
        let w = self.client.delete_with(ks, key, &self.opts()).await?;
        self.keep(&Some(w.token.clone()));
        Ok(w)
    }

    /// Any op (`incr`, `add`, `remove`, `patch`).
    pub async fn op(&self, ks: &str, key: &str, op: &Value) -> Result<Written, ClientError> {
        let w = self.client.op_with(ks, key, op, &self.opts()).await?;
        self.keep(&Some(w.token.clone()));
        Ok(w)
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
