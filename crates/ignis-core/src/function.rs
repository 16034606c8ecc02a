//! Functions: their runtime, handler, limits and immutable versions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::composition::WorkflowDef;

/// How a function's code is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// CPython 3 with Ignis's bootstrap: `handler(event, context)` or `main(args)`.
    Python,
    /// Node.js with Ignis's bootstrap: `handler(event, context)` or `main(args)`.
    Node,
    /// Any executable: event on stdin, result on stdout, a fresh process per invocation.
    Exec,
    /// The executable `bootstrap` of the code, speaking the AWS Lambda Runtime API at
    /// `$AWS_LAMBDA_RUNTIME_API`, kept warm between invocations. Lambda's names for custom
    /// runtimes (`provided`, `provided.al2`, `provided.al2023`) are aliases.
    #[serde(alias = "provided", alias = "provided.al2", alias = "provided.al2023")]
    Lambda,
    /// WebAssembly run by wasmtime inside the server: a WASI preview 1 module (event on stdin,
    /// result on stdout) or a `wasi:http/incoming-handler` component.
    Wasm,
    /// A chain of other functions (`components`): the output of each is the input of the next.
    Sequence,
    /// A DAG of steps running other functions (`workflow`), run durably by the controller.
    Workflow,
}

impl Runtime {
    /// Every runtime that runs code (not the compositions), for error messages and help.
    pub const ALL: [Runtime; 5] = [
        Runtime::Python,
        Runtime::Node,
        Runtime::Exec,
        Runtime::Lambda,
        Runtime::Wasm,
    ];

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Node => "node",
            Runtime::Exec => "exec",
            Runtime::Lambda => "lambda",
            Runtime::Wasm => "wasm",
            Runtime::Sequence => "sequence",
            Runtime::Workflow => "workflow",
        }
    }

    /// Whether the event must be JSON (python, node, lambda, workflow) rather than any bytes
    /// (exec, wasm; a sequence's first component checks its own).
    pub fn json_events(self) -> bool {
        !matches!(self, Runtime::Exec | Runtime::Wasm | Runtime::Sequence)
    }

    /// Whether functions of this kind are made of other functions (run by the controller, with
    /// no code and no instance of their own).
    pub fn is_composition(self) -> bool {
        matches!(self, Runtime::Sequence | Runtime::Workflow)
    }

    /// Whether the code's files are made executable when unpacked (exec, lambda's `bootstrap`).
    pub fn executable_code(self) -> bool {
        matches!(self, Runtime::Exec | Runtime::Lambda)
    }

    /// The Ignis runtime that runs code written for an AWS Lambda runtime: `python3.x` →
    /// python, `nodejs18.x`… → node, `provided*` → lambda. `None` for the others (java, dotnet,
    /// ruby, go1.x, container images).
    pub fn from_lambda_name(name: &str) -> Option<Runtime> {
        let minor = |rest: &str| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit());
        if let Some(rest) = name.strip_prefix("python3.") {
            return minor(rest).then_some(Runtime::Python);
        }
        if let Some(major) = name
            .strip_prefix("nodejs")
            .and_then(|r| r.strip_suffix(".x"))
        {
            return minor(major).then_some(Runtime::Node);
        }
        matches!(name, "provided" | "provided.al2" | "provided.al2023").then_some(Runtime::Lambda)
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Runtime {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "python" | "python3" => Ok(Runtime::Python),
            "node" | "nodejs" => Ok(Runtime::Node),
            "exec" => Ok(Runtime::Exec),
            "lambda" => Ok(Runtime::Lambda),
            "wasm" => Ok(Runtime::Wasm),
            "sequence" => Ok(Runtime::Sequence),
            "workflow" => Ok(Runtime::Workflow),
            other => Runtime::from_lambda_name(other).ok_or_else(|| {
                SpecError::new(
                    "runtime",
                    format!(
                        "unknown runtime {other:?}; expected one of python, node, exec, lambda, \
                         wasm, sequence, workflow (or a Lambda name: python3.x, nodejs20.x, provided.al2023)"
                    ),
                )
            }),
        }
    }
}

/// Network access of a function's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Only a private loopback: no way out (the default).
    #[default]
    None,
    /// The host's network: outbound access.
    Host,
}

impl FromStr for Network {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Network::None),
            "host" => Ok(Network::Host),
            other => Err(SpecError::new(
                "network",
                format!("unknown network {other:?}; expected none or host"),
            )),
        }
    }
}

/// Whether a function answers plain HTTP requests at `/fn/{namespace}/{name}/…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Web {
    /// Only through the invoke API (the default).
    #[default]
    Off,
    /// A web function; callers need an API key.
    On,
    /// A web function anyone may call, without a key.
    Public,
}

impl Serialize for Web {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Web::Off => s.serialize_bool(false),
            Web::On => s.serialize_bool(true),
            Web::Public => s.serialize_str("public"),
        }
    }
}

impl<'de> Deserialize<'de> for Web {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(if b { Web::On } else { Web::Off }),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl FromStr for Web {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "false" | "off" => Ok(Web::Off),
            "true" | "on" => Ok(Web::On),
            "public" => Ok(Web::Public),
            other => Err(SpecError::new(
                "web",
                format!("{other:?} is not one of false, true, public"),
            )),
        }
    }
}

/// A field of a function spec that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct SpecError {
    /// The offending field, as named in the API.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    /// A new error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        SpecError {
            field,
            message: message.into(),
        }
    }
}

/// What a user says about a function besides its code. Every update makes a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// The runtime.
    pub runtime: Runtime,
    /// python: `module.function` (or `module` for `module.main`); node: `file.export`;
    /// exec: the path of the executable inside the code; wasm: the name of the uploaded
    /// `.wasm`/`.wat` file (optional).
    #[serde(default)]
    pub handler: String,
    /// Memory limit of one instance in MiB.
    #[serde(default = "FunctionSpec::default_memory_mb")]
    pub memory_mb: u32,
    /// End-to-end time limit of one invocation in milliseconds.
    #[serde(default = "FunctionSpec::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Environment variables given to the function.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The most instances of this function running at once.
    #[serde(default = "FunctionSpec::default_max_instances")]
    pub max_instances: u32,
    /// Further attempts of a failed asynchronous invocation before it goes to the dead-letter
    /// list (Lambda's default: 2).
    #[serde(default = "FunctionSpec::default_retries")]
    pub retries: u32,
    /// Function invoked (asynchronously) with the result of each successful asynchronous
    /// invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    /// Function invoked (asynchronously) with the error of each asynchronous invocation that
    /// failed every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Instances kept warm at all times (provisioned concurrency), at most `max_instances`.
    #[serde(default)]
    pub min_instances: u32,
    /// Invocations one instance runs at once (python and node; OpenWhisk's intra-container
    /// concurrency). More than 1 suits I/O-bound handlers: they share the instance's memory.
    #[serde(default = "FunctionSpec::default_instance_concurrency")]
    pub instance_concurrency: u32,
    /// Network access: `none` (loopback only) or `host`.
    #[serde(default)]
    pub network: Network,
    /// Whether it answers HTTP requests at `/fn/{namespace}/{name}/…`.
    #[serde(default)]
    pub web: Web,
    /// Origins allowed to call the web function from a browser (CORS); `*` for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// Size of the instance's private /tmp in MiB.
    #[serde(default = "FunctionSpec::default_tmp_mb")]
    pub tmp_mb: u32,
    /// What the AWS Lambda API was told about the function beyond the spec (set by
    /// CreateFunction and UpdateFunctionConfiguration), kept to answer as Lambda would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<LambdaConfig>,
    /// A sequence's components, in order: `name` or `name@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// A workflow's definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowDef>,
}

/// Settings of a function made through the AWS Lambda API that Ignis keeps but does not use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaConfig {
    /// The Lambda runtime name given (`python3.12`, `provided.al2023`…); empty if none was.
    #[serde(default)]
    pub runtime: String,
    /// The execution role's ARN given (Ignis has no IAM: it is only echoed back).
    #[serde(default)]
    pub role: String,
    /// The description given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl LambdaConfig {
    /// Longest description (Lambda's limit).
    pub const MAX_DESCRIPTION: usize = 256;
    /// Longest role ARN kept.
    pub const MAX_ROLE: usize = 2048;

    fn validate(&self) -> Result<(), SpecError> {
        if !self.runtime.is_empty() && Runtime::from_lambda_name(&self.runtime).is_none() {
            return Err(SpecError::new(
                "lambda.runtime",
                format!("{:?} is not a supported Lambda runtime", self.runtime),
            ));
        }
        if self.role.len() > Self::MAX_ROLE {
            return Err(SpecError::new(
                "lambda.role",
                format!("longer than {} characters", Self::MAX_ROLE),
            ));
        }
        if self.description.len() > Self::MAX_DESCRIPTION {
            return Err(SpecError::new(
                "lambda.description",
                format!("longer than {} characters", Self::MAX_DESCRIPTION),
            ));
        }
        Ok(())
    }
}

impl FunctionSpec {
    /// Smallest memory limit.
    pub const MIN_MEMORY_MB: u32 = 64;
    /// Largest memory limit (Lambda's).
    pub const MAX_MEMORY_MB: u32 = 10_240;
    /// Longest timeout: 15 minutes.
    pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
    /// Most instances of one function.
    pub const MAX_INSTANCES: u32 = 1000;
    /// Most invocations one instance may run at once.
    pub const MAX_INSTANCE_CONCURRENCY: u32 = 100;
    /// Largest /tmp (Lambda's 10 GiB ephemeral storage).
    pub const MAX_TMP_MB: u32 = 10_240;
    /// Largest total size of the environment, like Lambda's 4 KiB.
    pub const MAX_ENV_BYTES: usize = 4096;

    fn default_memory_mb() -> u32 {
        256
    }
    fn default_timeout_ms() -> u64 {
        60_000
    }
    fn default_max_instances() -> u32 {
        10
    }
    fn default_tmp_mb() -> u32 {
        512
    }
    fn default_retries() -> u32 {
        2
    }
    fn default_instance_concurrency() -> u32 {
        1
    }

    /// A spec with defaults for everything but runtime and handler.
    pub fn new(runtime: Runtime, handler: impl Into<String>) -> Self {
        FunctionSpec {
            runtime,
            handler: handler.into(),
            memory_mb: Self::default_memory_mb(),
            timeout_ms: Self::default_timeout_ms(),
            env: BTreeMap::new(),
            max_instances: Self::default_max_instances(),
            retries: Self::default_retries(),
            on_success: None,
            on_failure: None,
            min_instances: 0,
            instance_concurrency: 1,
            network: Network::None,
            web: Web::Off,
            cors_origins: Vec::new(),
            tmp_mb: Self::default_tmp_mb(),
            lambda: None,
            components: Vec::new(),
            workflow: None,
        }
    }

    /// Checks the limits, the environment and the shape of the handler (not whether the code has it).
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(Self::MIN_MEMORY_MB..=Self::MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(SpecError::new(
                "memory_mb",
                format!(
                    "{} is outside {}..={}",
                    self.memory_mb,
                    Self::MIN_MEMORY_MB,
                    Self::MAX_MEMORY_MB
                ),
            ));
        }
        if !(1..=Self::MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(SpecError::new(
                "timeout_ms",
                format!(
                    "{} is outside 1..={}",
                    self.timeout_ms,
                    Self::MAX_TIMEOUT_MS
                ),
            ));
        }
        if !(1..=Self::MAX_INSTANCES).contains(&self.max_instances) {
            return Err(SpecError::new(
                "max_instances",
                format!(
                    "{} is outside 1..={}",
                    self.max_instances,
                    Self::MAX_INSTANCES
                ),
            ));
        }
        for o in &self.cors_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.contains(char::is_whitespace)
                    && o.len() <= 256);
            if !ok {
                return Err(SpecError::new(
                    "cors_origins",
                    format!("{o:?} is not * or an http(s) origin such as https://example.com"),
                ));
            }
        }
        if self.retries > 10 {
            return Err(SpecError::new(
                "retries",
                format!("{} is outside 0..=10", self.retries),
            ));
        }
        if self.min_instances > self.max_instances {
            return Err(SpecError::new(
                "min_instances",
                format!(
                    "{} is more than max_instances ({})",
                    self.min_instances, self.max_instances
                ),
            ));
        }
        if !(1..=Self::MAX_INSTANCE_CONCURRENCY).contains(&self.instance_concurrency) {
            return Err(SpecError::new(
                "instance_concurrency",
                format!(
                    "{} is outside 1..={}",
                    self.instance_concurrency,
                    Self::MAX_INSTANCE_CONCURRENCY
                ),
            ));
        }
        if self.instance_concurrency > 1 && !matches!(self.runtime, Runtime::Python | Runtime::Node)
        {
            let why = match self.runtime {
                Runtime::Exec => "exec functions start a process per invocation",
                Runtime::Wasm => "wasm functions get a fresh instance per invocation",
                _ => "a lambda bootstrap takes one invocation at a time (the Runtime API)",
            };
            return Err(SpecError::new(
                "instance_concurrency",
                format!("{why}: instance_concurrency must be 1"),
            ));
        }
        if !(1..=Self::MAX_TMP_MB).contains(&self.tmp_mb) {
            return Err(SpecError::new(
                "tmp_mb",
                format!("{} is outside 1..={}", self.tmp_mb, Self::MAX_TMP_MB),
            ));
        }
        let mut env_bytes = 0;
        for (k, v) in &self.env {
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SpecError::new(
                    "env",
                    format!("{k:?} is not a valid variable name"),
                ));
            }
            if k.starts_with("IGNIS_") {
                return Err(SpecError::new(
                    "env",
                    format!("{k:?}: names starting with IGNIS_ are reserved"),
                ));
            }
            if v.contains('\0') {
                return Err(SpecError::new("env", format!("{k:?} contains a NUL byte")));
            }
            env_bytes += k.len() + v.len();
        }
        if env_bytes > Self::MAX_ENV_BYTES {
            return Err(SpecError::new(
                "env",
                format!(
                    "{env_bytes} bytes in total, more than {}",
                    Self::MAX_ENV_BYTES
                ),
            ));
        }
        if let Some(l) = &self.lambda {
            l.validate()?;
        }
        self.validate_composition()?;
        self.validate_handler()
    }

    fn validate_composition(&self) -> Result<(), SpecError> {
        match self.runtime {
            Runtime::Sequence => {
                if self.workflow.is_some() {
                    return Err(SpecError::new("workflow", "only for workflow functions"));
                }
                crate::composition::validate_components(&self.components)?;
            }
            Runtime::Workflow => {
                if !self.components.is_empty() {
                    return Err(SpecError::new("components", "only for sequence functions"));
                }
                self.workflow
                    .as_ref()
                    .ok_or_else(|| SpecError::new("workflow", "required for a workflow function"))?
                    .validate()?;
            }
            _ => {
                if !self.components.is_empty() {
                    return Err(SpecError::new(
                        "components",
                        "only for sequence functions (runtime sequence)",
                    ));
                }
                if self.workflow.is_some() {
                    return Err(SpecError::new(
                        "workflow",
                        "only for workflow functions (runtime workflow)",
                    ));
                }
            }
        }
        if self.runtime.is_composition() && self.min_instances > 0 {
            return Err(SpecError::new(
                "min_instances",
                "a composition has no instances of its own",
            ));
        }
        Ok(())
    }

    fn validate_handler(&self) -> Result<(), SpecError> {
        let h = &self.handler;
        if h.len() > 256 {
            return Err(SpecError::new("handler", "longer than 256 characters"));
        }
        match self.runtime {
            Runtime::Python | Runtime::Node => {
                if h.is_empty() {
                    return Err(SpecError::new(
                        "handler",
                        "required: `module.function`, e.g. app.handler",
                    ));
                }
                let ident = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$'))
                };
                let (module, func) = self.handler_parts();
                let module_ok = module.split('/').all(|seg| {
                    !seg.is_empty()
                        && seg != ".."
                        && seg != "."
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                });
                if !module_ok || !ident(func) {
                    return Err(SpecError::new(
                        "handler",
                        format!("{h:?} is not of the form module.function"),
                    ));
                }
            }
            Runtime::Lambda => {
                // Lambda's rule: any handler without white space; the bootstrap reads `_HANDLER`.
                if h.contains(char::is_whitespace) || h.contains('\0') {
                    return Err(SpecError::new(
                        "handler",
                        format!("{h:?} contains white space"),
                    ));
                }
            }
            Runtime::Exec => {
                if h.starts_with('/') || h.split('/').any(|s| s == "..") {
                    return Err(SpecError::new(
                        "handler",
                        format!("{h:?} must be a relative path inside the code"),
                    ));
                }
            }
            Runtime::Sequence | Runtime::Workflow => {
                if !h.is_empty() {
                    return Err(SpecError::new(
                        "handler",
                        format!("a {} has no handler", self.runtime),
                    ));
                }
            }
            Runtime::Wasm => {
                if h.contains('/') || h == ".." || h == "." {
                    return Err(SpecError::new(
                        "handler",
                        format!("{h:?} must be the name of the uploaded .wasm file, or empty"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// For python/node: the module path and the function name of the handler. A handler without
    /// a dot names a module whose `main` is called (OpenWhisk's default).
    pub fn handler_parts(&self) -> (&str, &str) {
        match self.handler.rsplit_once('.') {
            Some((m, f)) => (m, f),
            None => (&self.handler, "main"),
        }
    }
}

/// How the code of a version was uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeFormat {
    /// A zip archive, unpacked into the code directory.
    Zip,
    /// A single file, placed in the code directory under its file name.
    File,
}

/// Where a version's code is: a content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRef {
    /// SHA-256 of the uploaded bytes, hex.
    pub sha256: String,
    /// Size of the upload in bytes.
    pub size: u64,
    /// Zip or single file.
    pub format: CodeFormat,
    /// For a single file, its name inside the code directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// One immutable version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionVersion {
    /// Owning namespace.
    pub namespace: String,
    /// Function name.
    pub name: String,
    /// 1, 2, 3, … in order of deployment.
    pub version: u32,
    /// Runtime, handler, limits, env.
    #[serde(flatten)]
    pub spec: FunctionSpec,
    /// The code.
    pub code: CodeRef,
    /// When this version was deployed (ms since epoch).
    pub created_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtimes() {
        assert_eq!("python".parse::<Runtime>().unwrap(), Runtime::Python);
        assert_eq!("node".parse::<Runtime>().unwrap(), Runtime::Node);
        assert_eq!("wasm".parse::<Runtime>().unwrap(), Runtime::Wasm);
        assert!(!Runtime::Wasm.json_events());
        let err = "cobol".parse::<Runtime>().unwrap_err();
        assert_eq!(err.field, "runtime");
        assert!(err.message.contains("cobol"));
    }

    #[test]
    fn maps_lambda_runtime_names() {
        for (name, rt) in [
            ("python3.12", Runtime::Python),
            ("python3.9", Runtime::Python),
            ("nodejs20.x", Runtime::Node),
            ("nodejs18.x", Runtime::Node),
            ("provided", Runtime::Lambda),
            ("provided.al2", Runtime::Lambda),
            ("provided.al2023", Runtime::Lambda),
        ] {
            assert_eq!(Runtime::from_lambda_name(name), Some(rt), "{name}");
            assert_eq!(name.parse::<Runtime>().unwrap(), rt, "{name}");
        }
        for bad in [
            "java21",
            "python3.",
            "python3.x",
            "nodejs.x",
            "go1.x",
            "provided.al3",
        ] {
            assert_eq!(Runtime::from_lambda_name(bad), None, "{bad}");
        }
        let spec: FunctionSpec =
            serde_json::from_str(r#"{"runtime":"provided.al2023","handler":"any.thing"}"#).unwrap();
        assert_eq!(spec.runtime, Runtime::Lambda);
        spec.validate().unwrap();
        assert_eq!(
            serde_json::to_value(Runtime::Lambda).unwrap(),
            serde_json::json!("lambda")
        );
        let bad = FunctionSpec::new(Runtime::Lambda, "a b");
        assert_eq!(bad.validate().unwrap_err().field, "handler");
    }

    #[test]
    fn defaults_apply() {
        let spec: FunctionSpec =
            serde_json::from_str(r#"{"runtime":"python","handler":"app.handler"}"#).unwrap();
        assert_eq!(spec.memory_mb, 256);
        assert_eq!(spec.timeout_ms, 60_000);
        assert_eq!(spec.network, Network::None);
        assert_eq!(spec.tmp_mb, 512);
        spec.validate().unwrap();
        assert_eq!(spec.handler_parts(), ("app", "handler"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<FunctionSpec>(r#"{"runtime":"python","handlr":"x"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("handlr"));
    }

    #[test]
    fn limits_are_checked() {
        let mut s = FunctionSpec::new(Runtime::Python, "app.handler");
        s.timeout_ms = 16 * 60 * 1000;
        assert_eq!(s.validate().unwrap_err().field, "timeout_ms");
        s.timeout_ms = 1000;
        s.memory_mb = 1;
        assert_eq!(s.validate().unwrap_err().field, "memory_mb");
        s.memory_mb = 128;
        s.env.insert("1BAD".into(), "x".into());
        assert_eq!(s.validate().unwrap_err().field, "env");
        s.env.clear();
        s.env.insert("GOOD".into(), "x".repeat(5000));
        assert_eq!(s.validate().unwrap_err().field, "env");
        s.env.clear();
        s.min_instances = s.max_instances + 1;
        assert_eq!(s.validate().unwrap_err().field, "min_instances");
        s.min_instances = 0;
        s.instance_concurrency = 0;
        assert_eq!(s.validate().unwrap_err().field, "instance_concurrency");
        s.instance_concurrency = FunctionSpec::MAX_INSTANCE_CONCURRENCY + 1;
        assert_eq!(s.validate().unwrap_err().field, "instance_concurrency");
    }

    #[test]
    fn handlers_are_checked() {
        let bad = |rt, h: &str| FunctionSpec::new(rt, h).validate().unwrap_err().field;
        assert_eq!(bad(Runtime::Python, ""), "handler");
        assert_eq!(bad(Runtime::Python, "../x.handler"), "handler");
        assert_eq!(bad(Runtime::Node, "index.han dler"), "handler");
        assert_eq!(bad(Runtime::Exec, "/bin/sh"), "handler");
        assert_eq!(bad(Runtime::Wasm, "lib/f.wasm"), "handler");
        FunctionSpec::new(Runtime::Wasm, "").validate().unwrap();
        FunctionSpec::new(Runtime::Wasm, "f.wasm")
            .validate()
            .unwrap();
        FunctionSpec::new(Runtime::Python, "main")
            .validate()
            .unwrap();
        FunctionSpec::new(Runtime::Node, "lib/index.handler")
            .validate()
            .unwrap();
        FunctionSpec::new(Runtime::Exec, "bin/run")
            .validate()
            .unwrap();
        assert_eq!(
            FunctionSpec::new(Runtime::Python, "main").handler_parts(),
            ("main", "main")
        );
    }
}
