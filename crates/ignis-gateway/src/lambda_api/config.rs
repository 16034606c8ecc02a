//! The function configuration of the Lambda API: what Ignis shows (`FunctionConfiguration`)
//! and what it takes from CreateFunction and UpdateFunctionConfiguration, mapped onto a
//! [`FunctionSpec`], with Lambda's limits and what Ignis refuses.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use base64::Engine;
use bytes::Bytes;
use ignis_core::{FunctionSpec, FunctionVersion, Runtime, SpecError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{LambdaError, LambdaResult};
use crate::sigv4;

/// Lambda's memory limits, in MB.
const MEMORY_MB: std::ops::RangeInclusive<u32> = 128..=10_240;
/// Lambda's timeout limit, in seconds.
const TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=900;
/// Names of the environment Lambda sets itself, which functions may not set.
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// `2019-08-14T22:26:11.234+0000` (Lambda's LastModified).
fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = sigv4::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Lambda's FunctionConfiguration of a version; `as_latest` shows it as `$LATEST`.
pub(super) fn configuration(region: &str, f: &FunctionVersion, as_latest: bool) -> Value {
    let version = if as_latest {
        "$LATEST".to_string()
    } else {
        f.version.to_string()
    };
    let lambda = f.spec.lambda.clone().unwrap_or_default();
    let runtime = if lambda.runtime.is_empty() {
        f.spec.runtime.as_str().to_string()
    } else {
        lambda.runtime
    };
    let sha = hex::decode(&f.code.sha256).unwrap_or_default();
    json!({
        "FunctionName": f.name,
        "FunctionArn": ignis_core::lambda::function_arn(
            region, &f.namespace, &f.name, (!as_latest).then_some(version.as_str())),
        "Runtime": runtime,
        "Role": lambda.role,
        "Handler": f.spec.handler,
        "CodeSize": f.code.size,
        "Description": lambda.description,
        "Timeout": f.spec.timeout_ms.div_ceil(1000),
        "MemorySize": f.spec.memory_mb,
        "LastModified": timestamp(f.created_ms),
        "CodeSha256": base64::engine::general_purpose::STANDARD.encode(sha),
        "Version": version,
        "Environment": { "Variables": f.spec.env },
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": revision_id(f),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
        "EphemeralStorage": { "Size": f.spec.tmp_mb },
    })
}

/// Changes whenever the function does: every change is a new Ignis version.
fn revision_id(f: &FunctionVersion) -> String {
    format!(
        "{}-{}-{}",
        f.version,
        f.created_ms,
        &f.code.sha256[..f.code.sha256.len().min(12)]
    )
}

pub(super) fn check_revision(f: &FunctionVersion, given: Option<&str>) -> LambdaResult<()> {
    match given {
        Some(r) if r != revision_id(f) => Err(LambdaError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            "the RevisionId provided does not match the latest RevisionId of the function",
        )),
        _ => Ok(()),
    }
}

/// `Code` of CreateFunction and UpdateFunctionCode.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CodeBody {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

pub(super) fn zip_of(code: &CodeBody) -> LambdaResult<Bytes> {
    if code.s3_bucket.is_some() {
        return Err(LambdaError::unsupported("code from S3 (S3Bucket/S3Key)"));
    }
    if code.image_uri.is_some() {
        return Err(LambdaError::unsupported("container images (ImageUri)"));
    }
    let zip = code
        .zip_file
        .as_deref()
        .ok_or_else(|| LambdaError::invalid("ZipFile is required"))?;
    base64::engine::general_purpose::STANDARD
        .decode(zip.trim())
        .map(Bytes::from)
        .map_err(|_| LambdaError::invalid("ZipFile is not valid base64"))
}

/// The settings CreateFunction and UpdateFunctionConfiguration share.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Settings {
    pub(super) runtime: Option<String>,
    role: Option<String>,
    pub(super) handler: Option<String>,
    description: Option<String>,
    timeout: Option<u64>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    ephemeral_storage: Option<EphemeralStorage>,
    pub(super) revision_id: Option<String>,
    package_type: Option<String>,
    architectures: Option<Vec<String>>,
    layers: Option<Vec<String>>,
    vpc_config: Option<Value>,
    file_systems_configs: Option<Vec<Value>>,
    dead_letter_config: Option<Value>,
    image_config: Option<Value>,
    tracing_config: Option<Value>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Environment {
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EphemeralStorage {
    size: u32,
}

/// Fields that change nothing on Ignis and are accepted as such.
const IGNORED_FIELDS: &[&str] = &[
    "FunctionName",
    "Code",
    "Publish",
    "Tags",
    "KMSKeyArn",
    "SnapStart",
    "LoggingConfig",
    "CodeSigningConfigArn",
];

pub(super) fn validation(message: String) -> LambdaError {
    LambdaError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

impl Settings {
    /// Applies the settings to `spec` (a new function's defaults, or the latest version's).
    pub(super) fn apply(self, spec: &mut FunctionSpec) -> LambdaResult<()> {
        if let Some(k) = self
            .other
            .keys()
            .find(|k| !IGNORED_FIELDS.contains(&k.as_str()))
        {
            return Err(LambdaError::unsupported(&format!("the field {k}")));
        }
        if self.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(LambdaError::unsupported("PackageType Image"));
        }
        if self.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(LambdaError::unsupported("layers"));
        }
        if self
            .file_systems_configs
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        {
            return Err(LambdaError::unsupported("file systems (EFS)"));
        }
        let non_empty = |v: &Option<Value>, key: &str| {
            v.as_ref()
                .and_then(|v| v.get(key))
                .is_some_and(|x| !x.is_null() && x != &json!([]) && x != &json!(""))
        };
        if non_empty(&self.vpc_config, "SubnetIds") {
            return Err(LambdaError::unsupported("VPC configuration"));
        }
        if non_empty(&self.dead_letter_config, "TargetArn") {
            return Err(LambdaError::unsupported(
                "DeadLetterConfig (Ignis keeps failed asynchronous invocations in its own dead-letter list)",
            ));
        }
        if self.image_config.is_some() {
            return Err(LambdaError::unsupported("ImageConfig"));
        }
        if let Some(mode) = self.tracing_config.as_ref().and_then(|t| t.get("Mode"))
            && mode != "PassThrough"
        {
            return Err(LambdaError::unsupported("active X-Ray tracing"));
        }
        check_architectures(self.architectures.as_deref())?;
        let mut lambda = spec.lambda.clone().unwrap_or_default();
        if let Some(r) = self.runtime {
            spec.runtime = Runtime::from_lambda_name(&r).ok_or_else(|| {
                LambdaError::invalid(format!(
                    "runtime {r} is not supported: Ignis runs python3.x, nodejs*.x and provided* \
                     (provided.al2023, provided.al2, provided)"
                ))
            })?;
            lambda.runtime = r;
        }
        if let Some(h) = self.handler {
            spec.handler = h;
        }
        if let Some(role) = self.role {
            lambda.role = role;
        }
        if let Some(d) = self.description {
            lambda.description = d;
        }
        if let Some(t) = self.timeout {
            if !TIMEOUT_SECS.contains(&t) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{t}' at 'timeout' failed to satisfy constraint: Member must have value between 1 and 900"
                )));
            }
            spec.timeout_ms = t * 1000;
        }
        if let Some(m) = self.memory_size {
            if !MEMORY_MB.contains(&m) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{m}' at 'memorySize' failed to satisfy constraint: Member must have value between 128 and 10240"
                )));
            }
            spec.memory_mb = m;
        }
        if let Some(e) = self.environment {
            let reserved: Vec<&str> = e
                .variables
                .keys()
                .map(String::as_str)
                .filter(|k| RESERVED_ENV.contains(k))
                .collect();
            if !reserved.is_empty() {
                return Err(LambdaError::invalid(format!(
                    "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
                    reserved.join(", ")
                )));
            }
            spec.env = e.variables;
        }
        if let Some(s) = self.ephemeral_storage {
            if !(512..=10_240).contains(&s.size) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{}' at 'ephemeralStorage.size' failed to satisfy constraint: Member must have value between 512 and 10240",
                    s.size
                )));
            }
            spec.tmp_mb = s.size;
        }
        spec.lambda = Some(lambda);
        spec.validate().map_err(spec_error)
    }
}

/// Refuses an architecture other than the server's.
pub(super) fn check_architectures(given: Option<&[String]>) -> LambdaResult<()> {
    let arch = std::env::consts::ARCH.replace("aarch64", "arm64");
    match given.and_then(|a| a.iter().find(|a| **a != arch)) {
        Some(a) => Err(LambdaError::invalid(format!(
            "architecture {a} is not this server's ({arch})"
        ))),
        None => Ok(()),
    }
}

fn spec_error(e: SpecError) -> LambdaError {
    LambdaError::invalid(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_lambdas_format() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(timestamp(1_440_938_160_123), "2015-08-30T12:36:00.123+0000");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000+0000");
    }

    #[test]
    fn settings_map_to_a_spec_and_refuse_what_ignis_cannot_do() {
        let parse = |v: Value| serde_json::from_value::<Settings>(v).unwrap();
        let mut spec = FunctionSpec::new(Runtime::Lambda, "");
        parse(json!({
            "Runtime": "python3.12", "Handler": "app.handler", "Role": "arn:aws:iam::1:role/r",
            "Timeout": 30, "MemorySize": 512, "Environment": {"Variables": {"A": "1"}},
            "EphemeralStorage": {"Size": 1024}, "Tags": {"t": "x"}, "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")]
        }))
        .apply(&mut spec)
        .unwrap();
        assert_eq!(spec.runtime, Runtime::Python);
        assert_eq!(
            (spec.timeout_ms, spec.memory_mb, spec.tmp_mb),
            (30_000, 512, 1024)
        );
        assert_eq!(spec.env["A"], "1");
        let l = spec.lambda.clone().unwrap();
        assert_eq!(
            (l.runtime.as_str(), l.role.as_str()),
            ("python3.12", "arn:aws:iam::1:role/r")
        );
        let refused = |v: Value| {
            let mut s = spec.clone();
            parse(v).apply(&mut s).unwrap_err()
        };
        assert_eq!(
            refused(json!({"Runtime": "java21"})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"MemorySize": 64})).code,
            "ValidationException"
        );
        assert_eq!(refused(json!({"Timeout": 901})).code, "ValidationException");
        assert_eq!(
            refused(json!({"Layers": ["arn:x"]})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"Environment": {"Variables": {"AWS_REGION": "x"}}})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"Handler": "a b", "Runtime": "provided.al2023"})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"Frobnicate": 1})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"PackageType": "Image"})).code,
            "InvalidParameterValueException"
        );
    }
}
