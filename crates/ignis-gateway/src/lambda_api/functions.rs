//! The management operations of the Lambda API: create, read, update, list, publish, delete.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ignis_controller::{CodeUpload, ControllerError, DeployRequest};
use ignis_core::{FunctionSpec, FunctionVersion, Runtime};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{
    CodeBody, Settings, check_architectures, check_revision, configuration, validation, zip_of,
};
use super::{Call, LambdaError, LambdaResult, Target, lookup_error, ok_json, target};
use crate::AppState;

/// CreateFunction: a new function from a zip.
pub(super) async fn create_function(state: &AppState, call: &Call) -> LambdaResult<Response> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Create {
        function_name: Option<String>,
        code: Option<CodeBody>,
        #[serde(default)]
        publish: bool,
    }
    let head: Create = call.json()?;
    let settings: Settings = call.json()?;
    let name = head
        .function_name
        .ok_or_else(|| validation("FunctionName is required".into()))?;
    let t = target(call, &name)?;
    let code = zip_of(&head.code.unwrap_or_default())?;
    if settings.runtime.is_none() {
        return Err(LambdaError::invalid(
            "Runtime is required for a Zip package",
        ));
    }
    if settings.handler.is_none() {
        return Err(LambdaError::invalid(
            "Handler is required for a Zip package",
        ));
    }
    // Lambda's defaults: 128 MB, 3 s.
    let mut spec = FunctionSpec::new(Runtime::Lambda, "");
    spec.memory_mb = 128;
    spec.timeout_ms = 3000;
    settings.apply(&mut spec)?;
    let fv = deploy(state, call, &t, spec, Some(code), true)
        .await
        .map_err(|e| match e {
            ControllerError::Conflict(_) => LambdaError::new(
                StatusCode::CONFLICT,
                "ResourceConflictException",
                format!("Function already exist: {}", t.name),
            ),
            other => other.into(),
        })?;
    ok_json(
        StatusCode::CREATED,
        configuration(&call.region, &fv, !head.publish),
    )
}

async fn latest_or(
    state: &AppState,
    call: &Call,
    t: &Target,
) -> LambdaResult<Arc<FunctionVersion>> {
    state
        .controller
        .get_function(&call.namespace, &t.name, t.version)
        .await
        .map_err(|e| lookup_error(e, call, t))
}

/// Deploys a version of `t` with `spec` and `code` (`None`: the latest version's).
async fn deploy(
    state: &AppState,
    call: &Call,
    t: &Target,
    spec: FunctionSpec,
    code: Option<Bytes>,
    create_only: bool,
) -> Result<FunctionVersion, ControllerError> {
    let req = DeployRequest {
        namespace: call.namespace.clone(),
        name: t.name.clone(),
        spec,
        code: code.map(CodeUpload::Zip),
        create_only,
    };
    Ok(state.controller.deploy(req).await?.0)
}

/// The configuration of the function (at the qualifier) `name` names.
async fn read_configuration(state: &AppState, call: &Call, name: &str) -> LambdaResult<Value> {
    let t = target(call, name)?;
    let f = latest_or(state, call, &t).await?;
    Ok(configuration(&call.region, &f, t.version.is_none()))
}

pub(super) async fn get_function(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    let config = read_configuration(state, call, name).await?;
    ok_json(
        StatusCode::OK,
        json!({
            "Configuration": config,
            "Code": { "RepositoryType": "Ignis" },
            "Tags": {},
        }),
    )
}

pub(super) async fn get_configuration(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    ok_json(StatusCode::OK, read_configuration(state, call, name).await?)
}

pub(super) async fn delete_function(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    let t = target(call, name)?;
    if t.version.is_some() {
        return Err(LambdaError::unsupported(
            "deleting one version (Ignis keeps every version of a function until it is deleted)",
        ));
    }
    state
        .controller
        .delete_function(&call.namespace, &t.name)
        .await
        .map_err(|e| lookup_error(e, call, &t))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new version with the latest one's settings changed by `change`.
async fn redeploy(
    state: &AppState,
    call: &Call,
    t: &Target,
    code: Option<Bytes>,
    change: impl FnOnce(&mut FunctionSpec) -> LambdaResult<()>,
) -> LambdaResult<FunctionVersion> {
    if t.version.is_some() {
        return Err(LambdaError::invalid(
            "only $LATEST can be updated: versions are immutable",
        ));
    }
    let latest = latest_or(state, call, t).await?;
    let mut spec = latest.spec.clone();
    change(&mut spec)?;
    Ok(deploy(state, call, t, spec, code, false).await?)
}

pub(super) async fn update_configuration(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    let t = target(call, name)?;
    let settings: Settings = call.json()?;
    let latest = latest_or(state, call, &t).await?;
    check_revision(&latest, settings.revision_id.as_deref())?;
    let fv = redeploy(state, call, &t, None, |spec| settings.apply(spec)).await?;
    ok_json(StatusCode::OK, configuration(&call.region, &fv, true))
}

pub(super) async fn update_code(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Update {
        #[serde(flatten)]
        code: CodeBody,
        #[serde(default)]
        publish: bool,
        #[serde(default)]
        dry_run: bool,
        revision_id: Option<String>,
        architectures: Option<Vec<String>>,
    }
    let t = target(call, name)?;
    let u: Update = call.json()?;
    let zip = zip_of(&u.code)?;
    let latest = latest_or(state, call, &t).await?;
    check_revision(&latest, u.revision_id.as_deref())?;
    if u.dry_run {
        return ok_json(StatusCode::OK, configuration(&call.region, &latest, true));
    }
    check_architectures(u.architectures.as_deref())?;
    let fv = redeploy(state, call, &t, Some(zip), |_| Ok(())).await?;
    ok_json(StatusCode::OK, configuration(&call.region, &fv, !u.publish))
}

/// PublishVersion: every Ignis version is immutable already; this names the latest one.
pub(super) async fn publish_version(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Publish {
        code_sha256: Option<String>,
        revision_id: Option<String>,
    }
    let t = target(call, name)?;
    if t.version.is_some() {
        return Err(LambdaError::invalid(
            "publish from $LATEST, not from a version",
        ));
    }
    let p: Publish = call.json()?;
    let f = latest_or(state, call, &t).await?;
    check_revision(&f, p.revision_id.as_deref())?;
    let config = configuration(&call.region, &f, false);
    if let Some(sha) = p.code_sha256
        && Some(sha.as_str()) != config["CodeSha256"].as_str()
    {
        return Err(LambdaError::invalid(format!(
            "CodeSha256 ({sha}) is different from the current CodeSha256 in $LATEST; update the code first"
        )));
    }
    ok_json(StatusCode::CREATED, config)
}

/// `Marker` and `MaxItems` of the list operations: one page of `items`.
fn page(call: &Call, items: Vec<Value>) -> LambdaResult<(Vec<Value>, Option<String>)> {
    let max = match call.query("MaxItems") {
        None => 50,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=10_000).contains(m))
            .ok_or_else(|| validation(format!("MaxItems {m:?} is not between 1 and 10000")))?,
    };
    let start = match call.query("Marker") {
        None | Some("") => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| LambdaError::invalid(format!("invalid Marker {m:?}")))?,
    };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}

pub(super) async fn list_functions(state: &AppState, call: &Call) -> LambdaResult<Response> {
    let all_versions = match call.query("FunctionVersion") {
        None => false,
        Some("ALL") => true,
        Some(v) => return Err(validation(format!("FunctionVersion {v:?} is not ALL"))),
    };
    let functions = state.controller.list_functions(&call.namespace).await?;
    let mut items = Vec::new();
    for f in functions {
        items.push(configuration(&call.region, &f, true));
        if all_versions {
            for v in state
                .controller
                .list_versions(&f.namespace, &f.name)
                .await?
            {
                items.push(configuration(&call.region, &v, false));
            }
        }
    }
    let (functions, next) = page(call, items)?;
    ok_json(
        StatusCode::OK,
        json!({ "Functions": functions, "NextMarker": next }),
    )
}

pub(super) async fn list_versions(
    state: &AppState,
    call: &Call,
    name: &str,
) -> LambdaResult<Response> {
    let t = target(call, name)?;
    let latest = latest_or(state, call, &t).await?;
    let mut items = vec![configuration(&call.region, &latest, true)];
    for v in state
        .controller
        .list_versions(&call.namespace, &t.name)
        .await
        .map_err(|e| lookup_error(e, call, &t))?
    {
        items.push(configuration(&call.region, &v, false));
    }
    let (versions, next) = page(call, items)?;
    ok_json(
        StatusCode::OK,
        json!({ "Versions": versions, "NextMarker": next }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_call as call;
    use super::*;

    #[test]
    fn pages_follow_markers() {
        let items: Vec<Value> = (0..5).map(Value::from).collect();
        let c = call("default", &[("MaxItems", "2")]);
        let (p, next) = page(&c, items.clone()).unwrap();
        assert_eq!((p.len(), next.as_deref()), (2, Some("2")));
        let c = call("default", &[("MaxItems", "2"), ("Marker", "4")]);
        let (p, next) = page(&c, items.clone()).unwrap();
        assert_eq!((p, next), (vec![Value::from(4)], None));
        assert!(page(&call("default", &[("MaxItems", "0")]), items.clone()).is_err());
        assert!(page(&call("default", &[("Marker", "9")]), items).is_err());
    }
}
