//! The OpenAPI document of the client API, generated from the handlers.
//!
//! Each handler carries a `#[utoipa::path]` attribute (its route, method,
//! parameters, body and every status it answers), and [`super::router`]
//! registers handlers through `utoipa_axum`, so the router and the
//! document are built from the same list and cannot disagree. What every
//! route shares is added here once: the bearer scheme, `401`/`403` on
//! every route that needs a token, the token header on every answer.
//! [`document`] is what `GET /v1/openapi.json` serves; [`routes`] is the
//! route table the request span labels by.
//!
//! Why past ~400 lines: the document's assembly and the checks that keep it
//! true (statuses, security, limits) sit together.

pub mod answers;
pub mod schemas;

use std::sync::LazyLock;

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use schemas::Error;

/// The document's frame: what is not a route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian client API",
        description = "One region's client API. Every successful answer that reads or writes the region's data carries `meridian-token`, the region's causal token; a request carrying one is answered only once the region has applied everything it covers. Errors are JSON: `{\"error\": code, \"message\": text}` with fields that depend on the code.",
    ),
    security(("bearer" = [])),
    modifiers(&Bearer),
    components(schemas(Error))
)]
struct Frame;

/// The bearer scheme.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        scheme.description = Some(
            "An access token (`meridian ctl token create`, or the bootstrap token). Needed on every route but the public ones (/healthz, /healthz/leader, /v1/openapi.json, /ui, /ui/app.js) unless the region runs open (`[auth] mode = \"open\"`, loopback only). 401 without a live token, 403 without the right (read, write or admin on the keyspace and key prefix).".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The empty document the router fills in.
pub fn frame() -> Document {
    let mut doc = Frame::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

/// The API's document.
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(|| finish(super::routed().split_for_parts().1));
    &DOC
}

/// The document as served.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    &JSON
}

/// One route of the API and its methods (lower case, as in the document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path template (`/v1/kv/{keyspace}/{key}`).
    pub path: String,
    /// Its methods.
    pub methods: Vec<&'static str>,
}

/// Every route of the API, from the document.
pub fn routes() -> &'static [Route] {
    static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
        document()
            .paths
            .paths
            .iter()
            .map(|(path, item)| Route {
                path: path.clone(),
                methods: operations(item).map(|(m, _)| m).collect(),
            })
            .collect()
    });
    &ROUTES
}

fn operations(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [
        ("get", &item.get),
        ("put", &item.put),
        ("post", &item.post),
        ("delete", &item.delete),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// What every route shares, added to what the handlers say.
fn finish(mut doc: Document) -> Document {
    // The router's wildcard (`{*key}`: a key may hold '/') is a plain
    // parameter in OpenAPI.
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(p, item)| (p.replace("{*", "{"), item))
        .collect();
    let components = doc.components.get_or_insert_with(Default::default);
    components.responses.insert(
        "Unauthorized".into(),
        RefOr::T(error_response(
            "No token, or not a live one (unknown, revoked, expired): `unauthenticated`.",
        )),
    );
    components.responses.insert(
        "Forbidden".into(),
        RefOr::T(error_response(
            "The token does not grant the right this needs: `forbidden`.",
        )),
    );
    let token = utoipa::openapi::HeaderBuilder::new()
        .schema(String::schema())
        .description(Some(
            "The region's causal token (base64url): send it as `meridian-token` to be answered only once a region has applied all this answer reflects.",
        ))
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        let public = crate::security::auth::PUBLIC.contains(&path.as_str());
        // Answers built from the published state carry its token; the
        // backup routes and promotion answer without one.
        let tokened = path.starts_with("/v1/")
            && path != "/v1/openapi.json"
            && !path.starts_with("/v1/admin/backups")
            && !matches!(path.as_str(), "/v1/admin/rewind" | "/v1/admin/promote");
        for (method, op) in operations_mut(item) {
            let r = &mut op.responses.responses;
            if !public {
                r.entry("401".into()).or_insert_with(|| {
                    RefOr::Ref(utoipa::openapi::Ref::from_response_name("Unauthorized"))
                });
                r.entry("403".into()).or_insert_with(|| {
                    RefOr::Ref(utoipa::openapi::Ref::from_response_name("Forbidden"))
                });
                gate_answers(path, method, r);
            }
            if tokened {
                for (status, resp) in r.iter_mut() {
                    if let (true, RefOr::T(resp)) = (status.starts_with('2'), resp) {
                        resp.headers
                            .entry(super::headers::TOKEN.into())
                            .or_insert_with(|| token.clone());
                    }
                }
            }
        }
    }
    doc
}

/// What the standby gate (`crate::api::gate`), which stands before
/// every route that needs a token, may answer.
fn gate_answers(
    path: &str,
    method: &str,
    r: &mut std::collections::BTreeMap<String, RefOr<Response>>,
) {
    let mut add = |status: &str, description: &str| {
        r.entry(status.into())
            .or_insert_with(|| RefOr::T(error_response(description)));
    };
    add(
        "503",
        "The region is stopping; on a standby: it has no leader (`no_leader`), cannot reach it (`leader_unreachable`), is changing role (`role_change`), or is staler than `meridian-max-staleness-ms` allows (`too_stale`).",
    );
    if method == "get" {
        add(
            "400",
            "A malformed header (`meridian-max-staleness-ms` not a whole number, ...).",
        );
    }
    // A standby sends writes to its leader, and key reads that ask for
    // `meridian-read: quorum` or `owner`; promotion it answers itself.
    let forwarded = match method {
        "get" => path.starts_with("/v1/kv/"),
        _ => path != "/v1/admin/promote",
    };
    if forwarded {
        add(
            "421",
            "On a standby that does not forward: the leader takes this (`not_leader`, with `url`).",
        );
        add(
            "502",
            "On a standby: the request was sent to the leader and no answer came back (`forward_outcome_unknown`); a write may have been taken.",
        );
    }
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Error",
                ))))
                .build(),
        )
        .build()
}

/// Names of the conflict policies.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PolicyName {
    /// Last writer wins.
    Lww,
    /// Multi-value: concurrent writes are kept as siblings.
    Mv,
    /// A counter.
    Counter,
    /// A set (add wins).
    Set,
    /// A JSON document with per-field rules.
    Doc,
    /// A merge function.
    Custom,
}

/// Region write concerns.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum WriteConcernName {
    /// This region.
    Local,
    /// This region and one other.
    One,
    /// A majority of regions.
    Majority,
    /// Every region.
    All,
}

/// In-region write concerns.
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum StandbyConcernName {
    /// The leader alone.
    Leader,
    /// The leader and one standby.
    Standby,
    /// The leader and every live standby.
    RegionAll,
}

/// What a non-owner does with a write.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ModeName {
    /// Sends it to the owner.
    Forward,
    /// Answers 421 naming the owner.
    Reject,
}

/// What a non-owner does when the owner cannot be reached.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum FallbackName {
    /// Refuses the write (503).
    Reject,
    /// Takes it locally, recorded in the conflict ledger.
    Accept,
}

/// A right a token grants.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RightName {
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Administration (implies read and write).
    Admin,
}

/// One ownership rule: exactly one of `prefix` or `hash`, and the owner.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Keys starting with this.
    #[schema(min_length = 1, nullable = false)]
    pub prefix: Option<String>,
    /// `[lo, hi]`, inclusive, over the first 8 bytes (big-endian) of the
    /// SHA-256 of the key.
    #[schema(min_items = 2, max_items = 2, nullable = false)]
    pub hash: Option<Vec<u64>>,
    /// The keys' home region.
    #[schema(value_type = RegionName)]
    pub owner: String,
}

/// The body of `PUT /v1/keyspaces/{name}/ownership`: the whole map.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnershipBody {
    /// The rules, in order.
    #[schema(max_items = 256, nullable = false)]
    pub rules: Option<Vec<Rule>>,
    /// The owner of keys no rule matches.
    #[schema(value_type = Option<RegionName>)]
    pub default: Option<String>,
    /// What non-owners do with writes (default `forward`).
    #[schema(nullable = false)]
    pub mode: Option<ModeName>,
    /// What non-owners do when the owner cannot be reached (default
    /// `reject`).
    #[schema(nullable = false)]
    pub fallback: Option<FallbackName>,
    /// Compare-and-set: the epoch of the map this change follows.
    #[schema(maximum = 18446744073709551615_u64)]
    pub epoch: Option<u64>,
}

/// What a token allows on a keyspace.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A keyspace name, or `*` for every keyspace.
    #[schema(pattern = r"^(\*|[a-z0-9][a-z0-9_-]{0,63})$")]
    pub keyspace: String,
    /// Only keys starting with this (default: every key).
    #[schema(nullable = false)]
    pub prefix: Option<String>,
    /// The rights.
    #[schema(min_items = 1)]
    pub rights: Vec<RightName>,
}

/// A string schema matching `pattern`.
pub(crate) fn pattern(pattern: &str, description: &str) -> RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// The pattern of keyspace names.
pub const KEYSPACE_PATTERN: &str = r"^[a-z0-9][a-z0-9_-]{0,63}$";

/// A region's name.
pub struct RegionName;

impl PartialSchema for RegionName {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        pattern(
            r"^[a-z][a-z0-9-]{0,31}$",
            "A region's name: 1 to 32 of a-z, 0-9 and '-', starting with a letter.",
        )
    }
}

impl ToSchema for RegionName {}

/// Which rule a transfer moves: its index, `"default"` (the keys no rule
/// matches), or what it matches.
#[derive(ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum RuleRef {
    /// By position.
    Index(u64),
    /// The keys no rule matches.
    Default(DefaultWord),
    /// By its prefix.
    Prefix {
        /// The rule's prefix.
        #[schema(min_length = 1)]
        prefix: String,
    },
    /// By its hash range.
    Hash {
        /// The rule's `[lo, hi]`.
        #[schema(min_items = 2, max_items = 2)]
        hash: Vec<u64>,
    },
}

/// The word `default`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DefaultWord {
    /// The keys no rule matches.
    Default,
}

/// Raw bytes (`application/octet-stream`).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}
