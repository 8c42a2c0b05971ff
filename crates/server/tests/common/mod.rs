//! A real `meridian serve` process and raw HTTP to it, shared by the API
//! test files.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meridian_harness::node::{Node, NodeSpec};
use serde_json::Value;

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    /// The error body's message contains `needle`.
    pub fn says(&self, needle: &str) -> bool {
        self.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle))
    }

    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
    pub fn token(&self) -> Option<String> {
        self.headers
            .get("meridian-token")
            .map(|v| v.to_str().unwrap().to_string())
    }
}

pub struct Api {
    pub node: Node,
    pub http: HyperClient<HttpConnector, Full<Bytes>>,
    pub dir: TempDir,
}

/// A directory removed when dropped (tempfile underneath).
pub use meridian_core::testdir::TestDir as TempDir;

impl Api {
    pub async fn start(tag: &str) -> Api {
        Api::start_with(tag, |s| s).await
    }

    /// A node whose spec `f` adjusts (environment, arguments).
    pub async fn start_with(tag: &str, f: impl FnOnce(NodeSpec) -> NodeSpec) -> Api {
        let dir = TempDir::new(&format!("api-{tag}"));
        let spec = f(NodeSpec::new("us-east", &dir.path().join("data")));
        let node = Node::start(std::path::Path::new(env!("CARGO_BIN_EXE_meridian")), spec)
            .await
            .expect("start");
        Api {
            node,
            http: HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new()),
            dir,
        }
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.node.url(), path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .http
            .request(b.body(Full::new(body.into())).unwrap())
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn json(&self, method: Method, path: &str, body: Value) -> Resp {
        self.req(
            method,
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path, &[], Bytes::new()).await
    }
}
