//! AWS Signature Version 4, the verifying side: what the AWS SDKs and CLI send to the
//! Lambda-compatible API (`Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
//! Signature=…` with `X-Amz-Date`).
//!
//! The server rebuilds the canonical request from what it received, derives the signing key
//! from the key's secret and the credential scope, and compares signatures in constant time.
//! The request's time must be within [`MAX_SKEW_SECS`] of the server's, and the scope must
//! name the server's region and the service. Only the header form is accepted (no presigned
//! query strings, no session tokens).

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far a request's `X-Amz-Date` may be from the server's clock (AWS's limit).
pub const MAX_SKEW_SECS: u64 = 15 * 60;
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was not accepted; each maps to the exception AWS answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header.
    #[error("missing authentication token: sign requests with AWS Signature Version 4")]
    Missing,
    /// The header or date is not of the SigV4 form.
    #[error("{0}")]
    Malformed(String),
    /// No key has this access key id, or it cannot sign (no secret kept).
    #[error("the security token included in the request is invalid")]
    UnknownKey,
    /// The request's time is too far from the server's.
    #[error("signature expired: {0} is more than 15 minutes from the server's time {1}")]
    Skewed(String, String),
    /// The credential scope names another region or service, or another day than the date.
    #[error("{0}")]
    Scope(String),
    /// The signature does not match.
    #[error(
        "the request signature we calculated does not match the signature you provided; check your AWS secret access key and signing method"
    )]
    Mismatch,
}

impl SigV4Error {
    /// The AWS exception name for this error.
    pub fn aws_code(&self) -> &'static str {
        match self {
            SigV4Error::Missing => "MissingAuthenticationTokenException",
            SigV4Error::Malformed(_) => "IncompleteSignatureException",
            SigV4Error::UnknownKey => "UnrecognizedClientException",
            SigV4Error::Skewed(..) | SigV4Error::Scope(_) | SigV4Error::Mismatch => {
                "InvalidSignatureException"
            }
        }
    }
}

/// The parts of a received request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`…
    pub method: &'a str,
    /// The path as received (still percent-encoded).
    pub path: &'a str,
    /// The query string as received, without `?`.
    pub query: &'a str,
    /// All headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The access key id.
    pub access_key: &'a str,
    /// `YYYYMMDD` of the scope.
    pub date: &'a str,
    /// Region of the scope.
    pub region: &'a str,
    /// Service of the scope.
    pub service: &'a str,
    /// Lower-case names of the signed headers, in the order given.
    pub signed_headers: Vec<&'a str>,
    /// Hex signature.
    pub signature: &'a str,
}

fn malformed(m: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(m.into())
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=…`.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigV4Error> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| malformed(format!("authorization must use {ALGORITHM}")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed(format!("malformed authorization element {part:?}")))?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(malformed(
            "authorization needs Credential, SignedHeaders and Signature",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(malformed(
            "credential must be <key id>/<date>/<region>/<service>/aws4_request",
        ));
    };
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Err(malformed("signed headers must be lower-case names"));
    }
    if !signed_headers.contains(&"host") {
        return Err(malformed("the host header must be signed"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the signature must be 64 hex digits"));
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` if `keep_slash`).
fn uri_encode(s: &[u8], keep_slash: bool, out: &mut String) {
    for &b in s {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Decodes `%XX` escapes; anything else, a malformed escape included, is kept as it is.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i + 1..i + 3) {
            Some(&[h, l]) if b[i] == b'%' && h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(digit(h) << 4 | digit(l));
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// The canonical query string: every pair decoded, encoded strictly, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&percent_decode(k), false, &mut ek);
            uri_encode(&percent_decode(v), false, &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request of `req` over `signed_headers`.
pub fn canonical_request(req: &Request<'_>, signed_headers: &[&str], payload_hash: &str) -> String {
    canonical_request_of(req, signed_headers, payload_hash, false)
}

/// [`canonical_request`] for `s3`, which signs the path as sent (not encoded once more).
fn canonical_request_of(
    req: &Request<'_>,
    signed_headers: &[&str],
    payload_hash: &str,
    s3: bool,
) -> String {
    let mut path = String::new();
    let sent: &[u8] = if req.path.is_empty() {
        b"/"
    } else {
        req.path.as_bytes()
    };
    if s3 {
        path.push_str(&String::from_utf8_lossy(sent));
    } else {
        // Services other than S3 sign the path as sent, encoded once more.
        uri_encode(sent, true, &mut path);
    }
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    format!(
        "{}\n{path}\n{}\n{headers}\n{}\n{payload_hash}",
        req.method,
        canonical_query(req.query),
        signed_headers.join(";"),
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The signature of `string_to_sign` with the key derived from `secret` and the scope.
pub fn signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    let k = hmac(&k, b"aws4_request");
    hex::encode(hmac(&k, string_to_sign.as_bytes()))
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// The civil date (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYYMMDDTHHMMSSZ` of seconds since the epoch (what `X-Amz-Date` holds).
pub fn amz_date(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the signature of `req` for `service` in `region` at `now` (seconds since the epoch).
/// `secret_of` gives the secret of an access key id. Returns the access key id.
pub fn verify<'a>(
    req: &Request<'a>,
    now: u64,
    region: &str,
    service: &str,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<&'a str, SigV4Error> {
    verify_of(req, now, region, service, false, secret_of).map(|(key, _)| key)
}

/// What an S3 request says of its body's SHA-256 (`x-amz-content-sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`: the body is not covered.
    Unsigned,
    /// The hex SHA-256 the body must have: checked by the caller as it reads the body.
    Sha256(String),
}

/// [`verify`] for S3 (service `s3`): the path is signed as sent, and the payload hash is the
/// one `x-amz-content-sha256` claims — the body is not read here (it may be gigabytes); the
/// caller checks a [`PayloadHash::Sha256`] while streaming it. Chunked signing
/// (`STREAMING-…`) is refused as malformed.
pub fn verify_s3<'a>(
    req: &Request<'a>,
    now: u64,
    region: &str,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<(&'a str, PayloadHash), SigV4Error> {
    verify_of(req, now, region, "s3", true, secret_of)
}

fn verify_of<'a>(
    req: &Request<'a>,
    now: u64,
    region: &str,
    service: &str,
    s3: bool,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<(&'a str, PayloadHash), SigV4Error> {
    let value = req
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(SigV4Error::Missing)?
        .to_str()
        .map_err(|_| malformed("the authorization header is not text"))?;
    let auth = parse_authorization(value)?;
    if req.headers.contains_key("x-amz-security-token") {
        return Err(SigV4Error::UnknownKey);
    }
    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| malformed("the X-Amz-Date header is required"))?;
    let when = parse_amz_date(amz_date)
        .ok_or_else(|| malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?;
    if !auth.signed_headers.contains(&"x-amz-date") {
        return Err(malformed("the x-amz-date header must be signed"));
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(SigV4Error::Scope(format!(
            "the credential's date {} is not the day of X-Amz-Date {amz_date}",
            auth.date
        )));
    }
    if auth.region != region {
        return Err(SigV4Error::Scope(format!(
            "credential should be scoped to a valid region: this server's region is {region:?}, not {:?}",
            auth.region
        )));
    }
    if auth.service != service {
        return Err(SigV4Error::Scope(format!(
            "credential should be scoped to correct service: {service:?}"
        )));
    }
    if now.abs_diff(when) > MAX_SKEW_SECS {
        return Err(SigV4Error::Skewed(amz_date.to_string(), now.to_string()));
    }
    let secret = secret_of(auth.access_key).ok_or(SigV4Error::UnknownKey)?;
    let (payload_hash, payload) = if s3 {
        let claimed = req
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| malformed("the x-amz-content-sha256 header is required"))?;
        let payload = match claimed {
            "UNSIGNED-PAYLOAD" => PayloadHash::Unsigned,
            h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                PayloadHash::Sha256(h.to_ascii_lowercase())
            }
            other => {
                return Err(malformed(format!(
                    "x-amz-content-sha256 {other:?} is not supported: send the body's SHA-256 or UNSIGNED-PAYLOAD"
                )));
            }
        };
        (claimed.to_string(), payload)
    } else {
        let payload_hash = hex::encode(Sha256::digest(req.body));
        if let Some(claimed) = req.headers.get("x-amz-content-sha256")
            && claimed.as_bytes() != payload_hash.as_bytes()
        {
            return Err(SigV4Error::Mismatch);
        }
        (payload_hash, PayloadHash::Unsigned)
    };
    let canonical = canonical_request_of(req, &auth.signed_headers, &payload_hash, s3);
    let scope = format!("{}/{region}/{service}/aws4_request", auth.date);
    let expected = signature(
        &secret,
        auth.date,
        region,
        service,
        &string_to_sign(amz_date, &scope, &canonical),
    );
    if !constant_time_eq(
        expected.as_bytes(),
        auth.signature.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(SigV4Error::Mismatch);
    }
    Ok((auth.access_key, payload))
}

/// Signs a request as an AWS SDK would (adds nothing: `headers` must hold `host` and
/// `x-amz-date`); returns the `Authorization` value. For tests and tools.
pub fn authorization(
    req: &Request<'_>,
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> String {
    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let date = amz_date.get(..8).unwrap_or_default();
    let mut names: Vec<String> = req
        .headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k != "authorization")
        .collect();
    names.sort();
    names.dedup();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let canonical = canonical_request(req, &names, &hex::encode(Sha256::digest(req.body)));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sig = signature(
        secret,
        date,
        region,
        service,
        &string_to_sign(amz_date, &scope, &canonical),
    );
    format!(
        "{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={}, Signature={sig}",
        names.join(";")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // The AWS SigV4 test suite's credentials and time.
    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        h.insert("x-amz-date", HeaderValue::from_static(DATE));
        h
    }

    fn req<'a>(method: &'a str, query: &'a str, h: &'a HeaderMap) -> Request<'a> {
        Request {
            method,
            path: "/",
            query,
            headers: h,
            body: b"",
        }
    }

    fn sig_of(auth: &str) -> &str {
        auth.rsplit_once("Signature=").unwrap().1
    }

    #[test]
    fn aws_test_suite_vectors() {
        let h = headers();
        // get-vanilla: every intermediate step, then the signature.
        let r = req("GET", "", &h);
        let canonical = canonical_request(
            &r,
            &["host", "x-amz-date"],
            &hex::encode(Sha256::digest(b"")),
        );
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(DATE, "20150830/us-east-1/service/aws4_request", &canonical),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        let cases = [
            (
                "GET",
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "GET",
                "Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "GET",
                "Param1=value1&Param1=value2",
                "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
            ),
        ];
        for (method, query, want) in cases {
            let r = req(method, query, &h);
            let auth = authorization(&r, KEY, SECRET, "us-east-1", "service");
            assert_eq!(sig_of(&auth), want, "{method} ?{query}");
            let mut signed = h.clone();
            signed.insert("authorization", HeaderValue::from_str(&auth).unwrap());
            let now = parse_amz_date(DATE).unwrap();
            let r = req(method, query, &signed);
            assert_eq!(
                verify(&r, now, "us-east-1", "service", |k| (k == KEY)
                    .then(|| SECRET.to_string())),
                Ok(KEY)
            );
        }
    }

    #[test]
    fn dates_are_parsed() {
        assert_eq!(parse_amz_date(DATE), Some(1_440_938_160));
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        for secs in [0, 951_782_400, 1_440_938_160, 4_102_444_799] {
            assert_eq!(parse_amz_date(&amz_date(secs)), Some(secs), "{secs}");
        }
        assert_eq!(amz_date(1_440_938_160), DATE);
        for bad in [
            "20150830T123600",
            "2015-08-30T12:36:00Z",
            "20151330T123600Z",
            "2015083AT123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_and_queries_are_encoded_like_the_sdks() {
        // A function ARN in a path, as botocore sends it (`:` already encoded once).
        let h = headers();
        let r = Request {
            method: "GET",
            path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af",
            query: "Qualifier=%24LATEST&a=b c",
            headers: &h,
            body: b"",
        };
        let c = canonical_request(&r, &["host"], "x");
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(
            lines[1],
            "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A1%253Afunction%253Af"
        );
        assert_eq!(lines[2], "Qualifier=%24LATEST&a=b%20c");
        assert_eq!(percent_decode("a%3Ab%2fc%+4%4"), b"a:b/c%+4%4");
    }

    #[test]
    fn tampering_skew_scope_and_unknown_keys_are_refused() {
        let now = parse_amz_date(DATE).unwrap();
        let h = headers();
        let body = br#"{"a":1}"#;
        let r = Request {
            method: "POST",
            path: "/2015-03-31/functions/f/invocations",
            query: "",
            headers: &h,
            body,
        };
        let auth = authorization(&r, KEY, SECRET, "us-east-1", "lambda");
        let mut signed = h.clone();
        signed.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let secret = |k: &str| (k == KEY).then(|| SECRET.to_string());
        let ok = Request {
            headers: &signed,
            ..r
        };
        assert_eq!(verify(&ok, now, "us-east-1", "lambda", secret), Ok(KEY));
        fn check<'a>(r: &Request<'a>, now: u64, region: &str) -> Result<&'a str, SigV4Error> {
            verify(r, now, region, "lambda", |k| {
                (k == KEY).then(|| SECRET.to_string())
            })
        }
        // Another body, path, method or secret.
        let other_body = Request {
            body: br#"{"a":2}"#,
            ..ok
        };
        assert_eq!(
            check(&other_body, now, "us-east-1"),
            Err(SigV4Error::Mismatch)
        );
        let other_path = Request {
            path: "/2015-03-31/functions/g/invocations",
            ..ok
        };
        assert_eq!(
            check(&other_path, now, "us-east-1"),
            Err(SigV4Error::Mismatch)
        );
        let other_method = Request {
            method: "PUT",
            ..ok
        };
        assert_eq!(
            check(&other_method, now, "us-east-1"),
            Err(SigV4Error::Mismatch)
        );
        assert_eq!(
            verify(&ok, now, "us-east-1", "lambda", |_| Some("wrong".into())),
            Err(SigV4Error::Mismatch)
        );
        // A signed header changed on the way.
        let mut changed = signed.clone();
        changed.insert("host", HeaderValue::from_static("evil.example.com"));
        let r2 = Request {
            headers: &changed,
            ..ok
        };
        assert_eq!(check(&r2, now, "us-east-1"), Err(SigV4Error::Mismatch));
        // Time, region, service, key.
        assert!(matches!(
            check(&ok, now + MAX_SKEW_SECS + 1, "us-east-1"),
            Err(SigV4Error::Skewed(..))
        ));
        assert_eq!(check(&ok, now + MAX_SKEW_SECS - 1, "us-east-1"), Ok(KEY));
        assert!(matches!(
            check(&ok, now, "eu-west-1"),
            Err(SigV4Error::Scope(_))
        ));
        assert!(matches!(
            verify(&ok, now, "us-east-1", "s3", secret),
            Err(SigV4Error::Scope(_))
        ));
        assert_eq!(
            verify(&ok, now, "us-east-1", "lambda", |_| None),
            Err(SigV4Error::UnknownKey)
        );
        // Missing or malformed authorization.
        let bare = Request { headers: &h, ..ok };
        assert_eq!(check(&bare, now, "us-east-1"), Err(SigV4Error::Missing));
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/lambda, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/lambda/aws4_request, SignedHeaders=x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            let mut m = h.clone();
            m.insert("authorization", HeaderValue::from_str(bad).unwrap());
            let r = Request { headers: &m, ..ok };
            assert!(
                matches!(check(&r, now, "us-east-1"), Err(SigV4Error::Malformed(_))),
                "{bad}"
            );
        }
    }
}
