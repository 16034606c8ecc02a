//! Property tests over what clients send: function specs as any JSON, and events as any bytes.
//! Nothing may panic, and what is accepted must be what it claims.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::{FunctionSpec, check_json};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        proptest::sample::select(vec![
            "",
            "python",
            "node",
            "exec",
            "wasm",
            "lambda",
            "app.handler",
            "..",
            "../x",
            "a/b",
            "none",
            "host",
            "true",
            "public",
            "\u{0}",
            "0",
            "-1",
            "99999999999",
        ])
        .prop_map(String::from),
    ]
}

/// Any JSON value, a few levels deep.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "runtime",
    "handler",
    "memory_mb",
    "timeout_ms",
    "env",
    "max_instances",
    "retries",
    "on_success",
    "on_failure",
    "min_instances",
    "instance_concurrency",
    "network",
    "web",
    "cors_origins",
    "tmp_mb",
    "lambda",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_json_as_a_spec_never_panics(v in json_value()) {
        if let Ok(spec) = serde_json::from_value::<FunctionSpec>(v) {
            let _ = spec.validate();
        }
    }

    #[test]
    fn a_valid_spec_with_fields_changed_is_checked_and_round_trips(
        changes in proptest::collection::vec(
            (proptest::sample::select(FIELDS), json_value()), 0..4),
    ) {
        let mut obj: Map<String, Value> = json!({"runtime": "python", "handler": "app.handler"})
            .as_object()
            .cloned()
            .unwrap();
        for (k, v) in changes {
            obj.insert(k.to_string(), v);
        }
        if let Ok(spec) = serde_json::from_value::<FunctionSpec>(Value::Object(obj))
            && spec.validate().is_ok()
        {
            prop_assert!((1..=100).contains(&spec.instance_concurrency));
            prop_assert!(spec.memory_mb > 0 && spec.timeout_ms > 0);
            let again: FunctionSpec =
                serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
            prop_assert_eq!(again, spec);
        }
    }

    #[test]
    fn events_accepted_are_json_within_the_depth(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            (1usize..400).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        ],
    ) {
        if check_json(&bytes).is_ok() {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            fn depth(v: &Value) -> usize {
                match v {
                    Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                    Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
                    _ => 0,
                }
            }
            prop_assert!(depth(&v) <= crate::MAX_JSON_DEPTH);
        }
    }
}
