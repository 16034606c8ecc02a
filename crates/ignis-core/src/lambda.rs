//! The names AWS Lambda gives things, for the Lambda-compatible API and the `lambda` runtime:
//! account ids and function ARNs. Ignis has no AWS account: a namespace stands for one.

/// Region used when the server is not told another (`--aws-region`).
pub const DEFAULT_REGION: &str = "us-east-1";

/// The 12-digit account id that stands for `namespace` in ARNs: stable, derived from the name
/// (FNV-1a), so that every server gives the same namespace the same id.
pub fn account_id(namespace: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012}", h % 1_000_000_000_000)
}

/// `arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]`.
pub fn function_arn(region: &str, namespace: &str, name: &str, qualifier: Option<&str>) -> String {
    let mut arn = format!(
        "arn:aws:lambda:{region}:{}:function:{name}",
        account_id(namespace)
    );
    if let Some(q) = qualifier {
        arn.push(':');
        arn.push_str(q);
    }
    arn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_stable_twelve_digits() {
        let a = account_id("default");
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(a, account_id("default"));
        assert_ne!(a, account_id("team"));
        assert_eq!(
            function_arn("eu-west-1", "default", "f", Some("3")),
            format!("arn:aws:lambda:eu-west-1:{a}:function:f:3")
        );
    }
}
