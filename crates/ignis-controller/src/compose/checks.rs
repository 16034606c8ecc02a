//! Deploy-time checks of a composition's references, which need the store: every function it
//! names exists (at the version named), it does not contain itself (directly or through
//! others), and it is not nested deeper than [`MAX_NESTING`]. Each is a 400 at deploy time.

use std::collections::HashMap;

use ignis_core::composition::{FunctionRef, MAX_NESTING, validate_components};
use ignis_core::{FunctionSpec, Runtime, SpecError};
use ignis_store::Store;

use crate::{ControllerError, Result};

/// The functions a composition refers to, and the field of its spec that names them.
fn references(spec: &FunctionSpec) -> Result<Option<(&'static str, Vec<FunctionRef>)>> {
    Ok(match spec.runtime {
        Runtime::Sequence => Some(("components", validate_components(&spec.components)?)),
        Runtime::Workflow => Some((
            "workflow",
            spec.workflow
                .as_ref()
                .map(|w| w.functions())
                .unwrap_or_default(),
        )),
        _ => None,
    })
}

/// Checks the references of `spec`, about to be deployed as function `name`.
pub(crate) fn check_references(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    spec: &FunctionSpec,
) -> Result<()> {
    let Some((field, refs)) = references(spec)? else {
        return Ok(());
    };
    let mut memo = HashMap::new();
    let mut deepest = 0;
    for r in &refs {
        let mut path = vec![name.to_string()];
        deepest = deepest.max(depth(
            store, namespace, name, r, &mut path, &mut memo, field,
        )?);
    }
    if deepest + 1 > MAX_NESTING {
        return Err(SpecError::new(
            field,
            format!(
                "compositions would be nested {} deep, more than {MAX_NESTING}",
                deepest + 1
            ),
        )
        .into());
    }
    Ok(())
}

/// How deep the compositions under `r` go (0 for a plain function).
fn depth(
    store: &dyn Store,
    namespace: &str,
    root: &str,
    r: &FunctionRef,
    path: &mut Vec<String>,
    memo: &mut HashMap<FunctionRef, u32>,
    field: &'static str,
) -> Result<u32> {
    if r.name == root {
        path.push(r.to_string());
        return Err(SpecError::new(
            field,
            format!("{root:?} would contain itself: {}", path.join(" → ")),
        )
        .into());
    }
    if let Some(d) = memo.get(r) {
        return Ok(*d);
    }
    // Deeper than any deployable composition: only a cycle not through `root` gets here.
    if path.len() > MAX_NESTING as usize + 1 {
        return Err(SpecError::new(
            field,
            format!(
                "compositions nested more than {MAX_NESTING} deep: {} → {r}",
                path.join(" → ")
            ),
        )
        .into());
    }
    let f = store
        .get_version(namespace, &r.name, r.version)
        .map_err(|e| ControllerError::Internal(e.to_string()))?
        .ok_or_else(|| {
            SpecError::new(
                field,
                match r.version {
                    Some(v) => format!("function {:?} has no version {v}", r.name),
                    None => format!("function {:?} does not exist", r.name),
                },
            )
        })?;
    let Some((_, children)) = references(&f.spec)? else {
        memo.insert(r.clone(), 0);
        return Ok(0);
    };
    path.push(r.to_string());
    let mut d = 0;
    for c in &children {
        d = d.max(depth(store, namespace, root, c, path, memo, field)?);
    }
    path.pop();
    memo.insert(r.clone(), d + 1);
    Ok(d + 1)
}
