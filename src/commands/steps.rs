//! What the `deploy`, `clean` and `service` extensions share: `get_<kind>_steps` and
//! `execute_<kind>_step` (protocol spec 2.4), both handed to the hardware-manager
//! registry, which lists, checks versions and dispatches.
//!
//! `get_<kind>_steps` never fails: the conductor breaks on a FAILED or null listing, so
//! a dispatch error is logged and answered with empty steps plus the versions.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::commands::registry::{
    blocking, param_list, param_value, CommandSpec, Context, Extension, Params,
};
use crate::errors::CommandError;
use crate::state::AgentState;
use ira_hw::StepKind;

/// The extension for `kind` with its two commands.
pub fn extension(kind: StepKind) -> Extension {
    let (get, execute) = match kind {
        StepKind::Clean => ("get_clean_steps", "execute_clean_step"),
        StepKind::Deploy => ("get_deploy_steps", "execute_deploy_step"),
        StepKind::Service => ("get_service_steps", "execute_service_step"),
    };
    Extension::new(kind.as_str())
        .command(CommandSpec::sync(get, move |ctx, params| {
            get_steps(kind, ctx, params)
        }))
        .command(
            CommandSpec::asynchronous(execute, move |ctx, params| execute_step(kind, ctx, params))
                .with_validator(validate_step),
        )
}

/// `execute_<kind>_step` needs a `step` object naming the step.
fn validate_step(_state: &AgentState, params: &Params) -> Result<(), CommandError> {
    check_step(params)
}

fn check_step(params: &Params) -> Result<(), CommandError> {
    match params.get("step") {
        Some(Value::Object(step)) if step.get("step").is_some_and(Value::is_string) => Ok(()),
        Some(Value::Object(_)) => Err(CommandError::InvalidCommandParams(
            "step must contain a string \"step\" key".to_owned(),
        )),
        _ => Err(CommandError::InvalidCommandParams(
            "step is required and must be an object".to_owned(),
        )),
    }
}

/// Remembers the node the conductor sent, as IPA does for every step command.
fn cache_node(state: &AgentState, node: &Value) {
    if node.is_object() {
        *state.node.lock().expect("node lock poisoned") = Some(node.clone());
    }
}

async fn get_steps(kind: StepKind, ctx: Context, params: Params) -> Result<Value, CommandError> {
    let node = param_value(&params, "node");
    let ports = param_list(&params, "ports");
    cache_node(&ctx.state, &node);
    let managers = Arc::clone(&ctx.state.managers);
    let listed = blocking(move || managers.get_steps(kind, &node, &ports)).await;
    let failure = match listed {
        Ok(Ok(steps)) => return Ok(steps),
        Ok(Err(err)) => err.to_string(),
        Err(err) => err.to_string(),
    };
    tracing::error!(%kind, error = %failure, "listing steps failed; answering no steps");
    let mut empty = Map::new();
    empty.insert(kind.steps_key().to_owned(), json!({}));
    empty.insert(
        "hardware_manager_version".to_owned(),
        Value::Object(ctx.state.managers.versions()),
    );
    Ok(Value::Object(empty))
}

async fn execute_step(kind: StepKind, ctx: Context, params: Params) -> Result<Value, CommandError> {
    let step = param_value(&params, "step");
    let node = param_value(&params, "node");
    let ports = param_list(&params, "ports");
    let version = params
        .get(kind.version_key())
        .filter(|v| !v.is_null())
        .cloned();
    cache_node(&ctx.state, &node);
    let inventory = ctx.state.inventory();
    let managers = Arc::clone(&ctx.state.managers);
    let echoed = step.clone();
    let host = super::host::Host::new(Arc::clone(&ctx.state), tokio::runtime::Handle::current());
    let ran = blocking(move || {
        managers.execute_step_with(
            &host,
            kind,
            &step,
            &node,
            ports.as_slice(),
            version.as_ref(),
            &inventory,
        )
    })
    .await?;
    match ran {
        Ok(result) => {
            let mut out = Map::new();
            out.insert(kind.result_key().to_owned(), result);
            out.insert(kind.step_key().to_owned(), echoed);
            Ok(Value::Object(out))
        }
        Err(err) => {
            tracing::warn!(%kind, error = %err, "step did not succeed");
            Err(CommandError::from(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Params {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn validator_requires_named_step_object() {
        assert!(check_step(&params(json!({"step": {"step": "erase_devices"}}))).is_ok());
        for bad in [
            json!({}),
            json!({"step": "erase_devices"}),
            json!({"step": {"interface": "deploy"}}),
            json!({"step": {"step": 5}}),
        ] {
            let err = check_step(&params(bad)).unwrap_err();
            assert_eq!(err.code(), 400);
            assert_eq!(err.ipa_type(), "InvalidCommandParamsError");
        }
    }

    #[test]
    fn names_follow_kind() {
        let ext = extension(StepKind::Service);
        assert_eq!(ext.name(), "service");
        assert!(ext.get("get_service_steps").is_some());
        assert!(ext.get("execute_service_step").is_some());
        assert!(ext.get("execute_clean_step").is_none());
    }
}
