//! Owns the Pusher HTTP API of CHANNELS.md §3 as pure functions: routing `/apps/{id}/…`,
//! the signature, timestamp and body checks, the JSON bodies of publishes, and every refusal
//! with its status and a JSON `error`. What a valid call does (publishing, counting) is the
//! worker's; nothing here touches shared state except through the lookups it is given.

use super::auth;
use super::hub::SocketId;
use super::names;
use super::pusher;
use crate::config::AppConfig;
use crate::proto::http1::exchange::Request;
use crate::proto::http1::request::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

/// How far `auth_timestamp` may be from our clock.
pub const MAX_CLOCK_SKEW_S: u64 = 600;
pub const MAX_CHANNELS_PER_EVENT: usize = 100;
pub const MAX_BATCH: usize = 10;
/// Event names, as Pusher limits them.
pub const MAX_EVENT_NAME_BYTES: usize = 200;

/// A refusal: the status and the `error` of its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

fn fail<T>(status: u16, message: impl Into<String>) -> Result<T, ApiError> {
    Err(ApiError {
        status,
        message: message.into(),
    })
}

impl ApiError {
    pub fn body(&self) -> Vec<u8> {
        format!(r#"{{"error":{}}}"#, pusher::quote(&self.message)).into_bytes()
    }
}

/// Which occupancy figures a caller asked for with `info=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Info {
    pub subscription_count: bool,
    pub user_count: bool,
}

/// One event to publish.
#[derive(Debug)]
pub struct Publish {
    pub name: String,
    pub channels: Vec<String>,
    /// The event's data as a JSON string literal, ready for the frame.
    pub data_json: String,
    pub exclude: Option<SocketId>,
    pub info: Info,
}

#[derive(Debug)]
pub enum Call {
    Events(Publish),
    Batch(Vec<Publish>),
    Channels { prefix: String, info: Info },
    Channel { name: String, info: Info },
    Users { name: String },
}

/// Whether `path` belongs to the API at all (`/apps/…`).
pub fn is_api(path: &[u8]) -> bool {
    path.starts_with(b"/apps/")
}

/// `/apps/{id}/{tail}` as (id, tail).
fn split_app(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix("/apps/").unwrap_or("");
    rest.split_once('/').unwrap_or((rest, ""))
}

/// The `{id}` of an API path, as `parse` reads it (for counting a refusal against its app).
pub fn app_id(path: &[u8]) -> Option<&str> {
    std::str::from_utf8(path).ok().map(|p| split_app(p).0)
}

/// Routes and checks one API request. `app_by_id` finds the app of the path; `now_unix` is
/// our clock in seconds. On success returns the app's index and the call.
pub fn parse<'a>(
    req: &Request<'_>,
    app_by_id: impl Fn(&str) -> Option<(u16, &'a AppConfig)>,
    now_unix: u64,
) -> Result<(u16, Call), ApiError> {
    let path = std::str::from_utf8(req.path).or(fail(400, "the path is not UTF-8"))?;
    let (id, tail) = split_app(path);
    let Some((idx, app)) = app_by_id(id) else {
        return fail(404, format!("unknown app {id:?}"));
    };
    let method = match req.method {
        Method::Get | Method::Head => "GET",
        Method::Post => "POST",
        _ => return fail(405, "the API takes GET and POST"),
    };
    let route = Route::of(method, tail)?;
    let query = query_pairs(req.query.unwrap_or(b""))?;
    check_signature(app, method, path, &query, req.body, now_unix)?;
    let param = |k: &str| {
        query
            .iter()
            .find(|(qk, _)| qk == k)
            .map(|(_, v)| v.as_str())
    };
    let info = parse_info(param("info").unwrap_or(""))?;
    let call = match route {
        Route::Events => Call::Events(publish(req.body, app)?),
        Route::Batch => {
            #[derive(Deserialize)]
            struct Batch<'b> {
                #[serde(borrow)]
                batch: Vec<&'b RawValue>,
            }
            let b: Batch<'_> = serde_json::from_slice(req.body)
                .or_else(|e| fail(400, format!("invalid JSON: {e}")))?;
            if b.batch.len() > MAX_BATCH {
                return fail(400, format!("at most {MAX_BATCH} events in a batch"));
            }
            let events = b
                .batch
                .iter()
                .map(|e| publish(e.get().as_bytes(), app))
                .collect::<Result<Vec<_>, _>>()?;
            if events.iter().any(|e| e.channels.len() != 1) {
                return fail(400, "each batch event names exactly one channel");
            }
            Call::Batch(events)
        }
        Route::Channels => {
            let prefix = param("filter_by_prefix").unwrap_or("").to_string();
            if info.user_count && !prefix.starts_with("presence-") {
                return fail(400, "info=user_count needs filter_by_prefix=presence-");
            }
            Call::Channels { prefix, info }
        }
        Route::Channel(name) => {
            let kind = names::classify(&name).or_else(|e| fail(400, e))?;
            if info.user_count && kind.access != names::Access::Presence {
                return fail(400, "user_count is only for presence channels");
            }
            Call::Channel { name, info }
        }
        Route::Users(name) => {
            let kind = names::classify(&name).or_else(|e| fail(400, e))?;
            if kind.access != names::Access::Presence {
                return fail(400, "users are only listed for presence channels");
            }
            Call::Users { name }
        }
    };
    Ok((idx, call))
}

enum Route {
    Events,
    Batch,
    Channels,
    Channel(String),
    Users(String),
}

impl Route {
    fn of(method: &str, tail: &str) -> Result<Route, ApiError> {
        let route = match tail {
            "events" => Route::Events,
            "batch_events" => Route::Batch,
            "channels" => Route::Channels,
            t => match t.strip_prefix("channels/") {
                Some(c) => match c.strip_suffix("/users") {
                    Some(name) => Route::Users(percent_decode(name)?),
                    None => Route::Channel(percent_decode(c)?),
                },
                None => return fail(404, "no such API path"),
            },
        };
        let wants = match route {
            Route::Events | Route::Batch => "POST",
            _ => "GET",
        };
        if method != wants {
            return fail(405, format!("this API path takes {wants}"));
        }
        Ok(route)
    }
}

/// The query's pairs, keys lower-cased and values percent-decoded: the form the signature is
/// computed over (SDKs differ in how much they encode; decoding makes them agree).
pub fn query_pairs(query: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let q = std::str::from_utf8(query).or(fail(400, "the query is not UTF-8"))?;
    let mut pairs = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((percent_decode(k)?.to_ascii_lowercase(), percent_decode(v)?));
    }
    Ok(pairs)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                    return fail(400, "a malformed percent-escape in the query");
                };
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).or(fail(400, "the query is not UTF-8"))
}

/// Pusher's request signature: key, version, timestamp within ten minutes, the body's MD5,
/// and HMAC-SHA256 over `METHOD\nPATH\nsorted query`, compared in constant time.
fn check_signature(
    app: &AppConfig,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now_unix: u64,
) -> Result<(), ApiError> {
    let get = |k: &str| {
        query
            .iter()
            .find(|(qk, _)| qk == k)
            .map(|(_, v)| v.as_str())
    };
    let Some(signature) = get("auth_signature") else {
        return fail(401, "missing auth_signature");
    };
    if get("auth_key") != Some(app.key.as_str()) {
        return fail(401, "auth_key is missing or not this app's key");
    }
    if get("auth_version") != Some("1.0") {
        return fail(401, "auth_version must be 1.0");
    }
    let Some(ts) = get("auth_timestamp").and_then(|t| t.parse::<u64>().ok()) else {
        return fail(401, "missing or malformed auth_timestamp");
    };
    if ts.abs_diff(now_unix) > MAX_CLOCK_SKEW_S {
        return fail(
            401,
            "auth_timestamp is more than 600 s from the server's clock",
        );
    }
    if !body.is_empty() || get("body_md5").is_some() {
        // Compared like a signature: it is one, of the body.
        let md5 = auth::md5_hex(body);
        let given = get("body_md5").unwrap_or("");
        if !auth::same(md5.as_bytes(), given.as_bytes()) {
            return fail(401, "body_md5 does not match the body");
        }
    }
    let message = string_to_sign(method, path, query);
    if !auth::verify(&app.secret, message.as_bytes(), signature) {
        return fail(401, "invalid signature");
    }
    Ok(())
}

/// What a request's signature covers: `METHOD\nPATH\n`, then its query pairs (keys
/// lower-cased, values decoded) but `auth_signature`, sorted, joined as `k=v&…`.
pub fn string_to_sign(method: &str, path: &str, pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    sorted.sort();
    let q: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{method}\n{path}\n{}", q.join("&"))
}

/// A query string signed as the server SDKs sign one (the client's side of
/// [`check_signature`]): `params`, the auth parameters for `key` at `timestamp`, the body's
/// MD5 when there is a body, and `auth_signature`. For tests and the fuzz target.
pub fn sign_query(
    method: &str,
    path: &str,
    params: &[(String, String)],
    body: &[u8],
    (key, secret): (&str, &str),
    timestamp: u64,
) -> String {
    let mut pairs = params.to_vec();
    pairs.push(("auth_key".into(), key.into()));
    pairs.push(("auth_timestamp".into(), timestamp.to_string()));
    pairs.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        pairs.push(("body_md5".into(), auth::md5_hex(body)));
    }
    pairs.sort();
    let sig = auth::sign(secret, string_to_sign(method, path, &pairs).as_bytes());
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}&auth_signature={sig}", q.join("&"))
}

fn parse_info(s: &str) -> Result<Info, ApiError> {
    let mut info = Info::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part {
            "subscription_count" => info.subscription_count = true,
            "user_count" => info.user_count = true,
            // Pusher has more attributes (e.g. `cache`); unknown ones are ignored as it does.
            _ => {}
        }
    }
    Ok(info)
}

#[derive(Deserialize)]
struct EventBody<'a> {
    name: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

/// One event of `events` or `batch_events`.
fn publish(body: &[u8], app: &AppConfig) -> Result<Publish, ApiError> {
    let e: EventBody<'_> =
        serde_json::from_slice(body).or_else(|e| fail(400, format!("invalid JSON: {e}")))?;
    let name = e.name.ok_or(()).or(fail(400, "name is required"))?;
    if name.is_empty() || name.len() > MAX_EVENT_NAME_BYTES {
        return fail(400, "name must be 1 to 200 bytes");
    }
    let channels = match (e.channels, e.channel) {
        (Some(c), None) => c,
        (None, Some(c)) => vec![c],
        _ => return fail(400, "give either channels or channel"),
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_EVENT {
        return fail(
            400,
            format!("1 to {MAX_CHANNELS_PER_EVENT} channels per event"),
        );
    }
    for c in &channels {
        if let Err(why) = names::classify(c) {
            return fail(400, format!("channel {c:?}: {why}"));
        }
    }
    // Data is a string on the wire; any other JSON value is sent as its JSON text.
    let raw = e.data.ok_or(()).or(fail(400, "data is required"))?;
    let data: String = match serde_json::from_str::<String>(raw.get()) {
        Ok(s) => s,
        Err(_) => raw.get().to_string(),
    };
    if data.len() > app.max_event_bytes {
        return fail(
            413,
            format!(
                "data is {} bytes, over max_event_bytes ({})",
                data.len(),
                app.max_event_bytes
            ),
        );
    }
    let exclude = match e.socket_id {
        None => None,
        Some(s) => Some(
            SocketId::parse(&s)
                .ok_or(())
                .or(fail(400, "socket_id must look like 123.456"))?,
        ),
    };
    let info = parse_info(e.info.as_deref().unwrap_or(""))?;
    Ok(Publish {
        name,
        channels,
        data_json: pusher::quote(&data),
        exclude,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::request::Version;

    fn app() -> AppConfig {
        AppConfig::builtin()
    }

    /// Signs like the SDKs do: sorted `k=v` pairs, unencoded, under `METHOD\nPATH\n`.
    fn signed(method: &str, path: &str, params: &[(&str, &str)], body: &[u8], ts: u64) -> String {
        let p: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sign_query(method, path, &p, body, ("app-key", "app-secret"), ts)
    }

    fn call(
        method: Method,
        path: &str,
        query: &str,
        body: &[u8],
        now: u64,
    ) -> Result<(u16, Call), ApiError> {
        let a = app();
        let req = Request {
            method,
            version: Version::Http11,
            target: b"",
            path: path.as_bytes(),
            query: Some(query.as_bytes()),
            body,
            last_event_id: None,
        };
        parse(&req, |id| (id == "app-id").then_some((0, &a)), now)
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_signed_publish_is_accepted() {
        let body = br#"{"name":"e","channels":["a","b"],"data":"{\"x\":1}","socket_id":"1.2"}"#;
        let q = signed("POST", "/apps/app-id/events", &[], body, NOW);
        let (app, c) = call(Method::Post, "/apps/app-id/events", &q, body, NOW + 5).unwrap();
        assert_eq!(app, 0);
        let Call::Events(p) = c else { panic!() };
        assert_eq!(p.channels, ["a", "b"]);
        assert_eq!(p.data_json, r#""{\"x\":1}""#);
        assert_eq!(p.exclude, Some(SocketId { origin: 1, n: 2 }));
    }

    #[test]
    fn each_bad_input_gets_its_status() {
        let body = br#"{"name":"e","channel":"a","data":"x"}"#;
        let path = "/apps/app-id/events";
        let good = signed("POST", path, &[], body, NOW);
        let status = |m, p: &str, q: &str, b: &[u8], now| call(m, p, q, b, now).unwrap_err().status;
        assert_eq!(
            status(Method::Post, "/apps/nope/events", &good, body, NOW),
            404
        );
        assert_eq!(
            status(
                Method::Post,
                path,
                &good.replace("auth_signature=", "auth_signature=0"),
                body,
                NOW
            ),
            401
        );
        assert_eq!(
            status(
                Method::Post,
                path,
                &good,
                br#"{"name":"e","channel":"a","data":"y"}"#,
                NOW
            ),
            401
        );
        assert_eq!(status(Method::Post, path, &good, body, NOW + 601), 401);
        assert_eq!(status(Method::Post, path, "", body, NOW), 401);
        let sign = |b: &[u8]| signed("POST", path, &[], b, NOW);
        for bad in [
            &b"{"[..],
            br#"{"name":"e","channel":"a b","data":"x"}"#,
            br#"{"name":"e","data":"x"}"#,
            br#"{"channel":"a","data":"x"}"#,
        ] {
            assert_eq!(
                status(Method::Post, path, &sign(bad), bad, NOW),
                400,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<String> = (0..101).map(|i| format!("\"c{i}\"")).collect();
        let b = format!(
            r#"{{"name":"e","channels":[{}],"data":"x"}}"#,
            many.join(",")
        );
        assert_eq!(
            status(Method::Post, path, &sign(b.as_bytes()), b.as_bytes(), NOW),
            400
        );
        let big = format!(
            r#"{{"name":"e","channel":"a","data":"{}"}}"#,
            "x".repeat(10 * 1024 + 1)
        );
        assert_eq!(
            status(
                Method::Post,
                path,
                &sign(big.as_bytes()),
                big.as_bytes(),
                NOW
            ),
            413
        );
        let q = signed("GET", "/apps/app-id/channels/news/users", &[], b"", NOW);
        assert_eq!(
            status(
                Method::Get,
                "/apps/app-id/channels/news/users",
                &q,
                b"",
                NOW
            ),
            400
        );
        let q = signed(
            "GET",
            "/apps/app-id/channels",
            &[("info", "user_count")],
            b"",
            NOW,
        );
        assert_eq!(
            status(Method::Get, "/apps/app-id/channels", &q, b"", NOW),
            400
        );
    }

    #[test]
    fn percent_encoded_queries_sign_as_decoded() {
        let path = "/apps/app-id/channels";
        let q = signed(
            "GET",
            path,
            &[
                ("filter_by_prefix", "presence-"),
                ("info", "user_count,subscription_count"),
            ],
            b"",
            NOW,
        );
        let encoded = q.replace(',', "%2C");
        let (_, c) = call(Method::Get, path, &encoded, b"", NOW).unwrap();
        let Call::Channels { prefix, info } = c else {
            panic!()
        };
        assert_eq!(prefix, "presence-");
        assert!(info.user_count && info.subscription_count);
    }

    #[test]
    fn batches_hold_at_most_ten() {
        let path = "/apps/app-id/batch_events";
        let one = r#"{"name":"e","channel":"a","data":"x"}"#;
        let body = |n: usize| format!(r#"{{"batch":[{}]}}"#, vec![one; n].join(","));
        let ok = body(10);
        let (_, c) = call(
            Method::Post,
            path,
            &signed("POST", path, &[], ok.as_bytes(), NOW),
            ok.as_bytes(),
            NOW,
        )
        .unwrap();
        assert!(matches!(c, Call::Batch(ref b) if b.len() == 10));
        let over = body(11);
        let e = call(
            Method::Post,
            path,
            &signed("POST", path, &[], over.as_bytes(), NOW),
            over.as_bytes(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
    }
}
