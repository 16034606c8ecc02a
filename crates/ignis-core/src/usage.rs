//! Metering and billing: the price model and the usage report built from exact sums of
//! activation records.
//!
//! Every activation carries `memory_mb` and `billed_ms`; their product, MB-milliseconds, is
//! summed in integers and converted to GB-seconds (÷ 1024 ÷ 1000) only at the end, so the
//! report's totals equal the sum over the activation records exactly.

use serde::{Deserialize, Serialize};

/// MB-milliseconds in one GB-second (1024 MB × 1000 ms).
pub const MB_MS_PER_GB_SECOND: u64 = 1024 * 1000;

/// MB-milliseconds as GB-seconds.
pub fn gb_seconds(mb_ms: u64) -> f64 {
    mb_ms as f64 / MB_MS_PER_GB_SECOND as f64
}

/// How usage is priced. Defaults: AWS Lambda's x86 prices, free tier off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceModel {
    /// Price of one million requests (activations).
    pub per_million_requests: f64,
    /// Price of one GB-second.
    pub per_gb_second: f64,
    /// Whether each namespace gets a free allowance per calendar month (UTC).
    pub free_tier: bool,
    /// Free requests per namespace and month.
    pub free_requests_per_month: u64,
    /// Free GB-seconds per namespace and month.
    pub free_gb_seconds_per_month: u64,
}

impl Default for PriceModel {
    fn default() -> Self {
        PriceModel {
            per_million_requests: 0.20,
            per_gb_second: 0.000_016_666_7,
            free_tier: false,
            free_requests_per_month: 1_000_000,
            free_gb_seconds_per_month: 400_000,
        }
    }
}

impl PriceModel {
    /// Checks that prices are finite and not negative.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("per_million_requests", self.per_million_requests),
            ("per_gb_second", self.per_gb_second),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("pricing.{name} must be a number ≥ 0, not {v}"));
            }
        }
        Ok(())
    }

    /// The price of `requests` requests and `mb_ms` MB-milliseconds, before any free tier.
    pub fn cost(&self, requests: u64, mb_ms: u64) -> f64 {
        requests as f64 * self.per_million_requests / 1e6 + gb_seconds(mb_ms) * self.per_gb_second
    }
}

/// How a usage report groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per function.
    Function,
    /// One row per UTC day.
    Day,
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "function" => Ok(GroupBy::Function),
            "day" => Ok(GroupBy::Day),
            other => Err(format!("group_by must be function or day, not {other:?}")),
        }
    }
}

/// Sums of one function on one UTC day (what the store returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCell {
    /// Function name.
    pub function: String,
    /// Days since 1970-01-01 (UTC).
    pub day: u64,
    /// Activations.
    pub requests: u64,
    /// Sum of memory_mb × billed_ms.
    pub mb_ms: u64,
    /// Sum of billed_ms.
    pub billed_ms: u64,
}

/// One row of a report, or its total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageLine {
    /// The function name or the day (`YYYY-MM-DD`); absent in the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Activations.
    pub requests: u64,
    /// Billed milliseconds added up.
    pub billed_ms: u64,
    /// Billed MB-milliseconds added up (exact).
    pub mb_ms: u64,
    /// `mb_ms` in GB-seconds.
    pub gb_seconds: f64,
    /// Price of the requests.
    pub request_cost: f64,
    /// Price of the GB-seconds.
    pub compute_cost: f64,
    /// What the free tier takes off (total only; 0 without free tier).
    pub free_tier_credit: f64,
    /// request_cost + compute_cost − free_tier_credit.
    pub cost: f64,
}

impl UsageLine {
    fn new(key: Option<String>, requests: u64, billed_ms: u64, mb_ms: u64, p: &PriceModel) -> Self {
        let request_cost = requests as f64 * p.per_million_requests / 1e6;
        let compute_cost = gb_seconds(mb_ms) * p.per_gb_second;
        UsageLine {
            key,
            requests,
            billed_ms,
            mb_ms,
            gb_seconds: gb_seconds(mb_ms),
            request_cost,
            compute_cost,
            free_tier_credit: 0.0,
            cost: request_cost + compute_cost,
        }
    }
}

/// A namespace's usage over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The namespace.
    pub namespace: String,
    /// Start of the period (ms since epoch, inclusive).
    pub from_ms: u64,
    /// End of the period (ms since epoch, exclusive).
    pub to_ms: u64,
    /// How rows are grouped.
    pub group_by: GroupBy,
    /// The prices applied.
    pub pricing: PriceModel,
    /// One line per function or day, sorted by key.
    pub groups: Vec<UsageLine>,
    /// Everything added up, with the free tier applied.
    pub total: UsageLine,
}

impl UsageReport {
    /// Builds a report from per-function, per-day sums. The free tier, when on, is applied per
    /// calendar month (UTC) to the total only: rows show the price before it.
    pub fn build(
        namespace: &str,
        from_ms: u64,
        to_ms: u64,
        group_by: GroupBy,
        pricing: &PriceModel,
        cells: &[UsageCell],
    ) -> UsageReport {
        use std::collections::BTreeMap;
        let mut groups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut months: BTreeMap<(i64, u32), (u64, u64)> = BTreeMap::new();
        let (mut requests, mut billed, mut mb_ms) = (0u64, 0u64, 0u64);
        for c in cells {
            let (y, m, d) = civil_from_days(c.day as i64);
            let key = match group_by {
                GroupBy::Function => c.function.clone(),
                GroupBy::Day => format!("{y:04}-{m:02}-{d:02}"),
            };
            let g = groups.entry(key).or_default();
            g.0 += c.requests;
            g.1 += c.billed_ms;
            g.2 += c.mb_ms;
            let month = months.entry((y, m)).or_default();
            month.0 += c.requests;
            month.1 += c.mb_ms;
            requests += c.requests;
            billed += c.billed_ms;
            mb_ms += c.mb_ms;
        }
        let mut total = UsageLine::new(None, requests, billed, mb_ms, pricing);
        if pricing.free_tier {
            let free_mb_ms = pricing
                .free_gb_seconds_per_month
                .saturating_mul(MB_MS_PER_GB_SECOND);
            total.free_tier_credit = months
                .values()
                .map(|&(r, m)| {
                    pricing.cost(r.min(pricing.free_requests_per_month), m.min(free_mb_ms))
                })
                .sum();
            total.cost =
                (total.request_cost + total.compute_cost - total.free_tier_credit).max(0.0);
        }
        UsageReport {
            namespace: namespace.to_string(),
            from_ms,
            to_ms,
            group_by,
            pricing: pricing.clone(),
            groups: groups
                .into_iter()
                .map(|(k, (r, b, m))| UsageLine::new(Some(k), r, b, m, pricing))
                .collect(),
            total,
        }
    }
}

/// Year, month (1–12) and day (1–31) of a day number since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day number since 1970-01-01 of a date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD` into its day number since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(function: &str, day: u64, requests: u64, mb_ms: u64) -> UsageCell {
        UsageCell {
            function: function.into(),
            day,
            requests,
            mb_ms,
            billed_ms: requests,
        }
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(parse_date("2024-02-29"), Some(19782));
        assert_eq!(civil_from_days(19782), (2024, 2, 29));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2023-13-01"), None);
        assert_eq!(parse_date("20230101"), None);
        for d in [-1000, 0, 59, 10_000, 20_000, 50_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn groups_add_up_to_the_total() {
        let p = PriceModel::default();
        let cells = [
            cell("a", 19782, 2, 1024 * 1000),
            cell("b", 19782, 1, 512),
            cell("a", 19783, 3, 2048 * 1000),
        ];
        let by_fn = UsageReport::build("ns", 0, 1, GroupBy::Function, &p, &cells);
        let keys: Vec<_> = by_fn
            .groups
            .iter()
            .map(|g| g.key.clone().unwrap())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(by_fn.groups[0].requests, 5);
        assert_eq!(by_fn.groups[0].mb_ms, 3072 * 1000);
        assert_eq!(by_fn.total.requests, 6);
        assert_eq!(by_fn.total.mb_ms, 3072 * 1000 + 512);
        assert_eq!(
            by_fn.total.gb_seconds,
            (3072.0 * 1000.0 + 512.0) / 1_024_000.0
        );
        let sum: f64 = by_fn.groups.iter().map(|g| g.cost).sum();
        assert!((sum - by_fn.total.cost).abs() < 1e-15);
        let expected = 6.0 * 0.2 / 1e6 + by_fn.total.gb_seconds * 0.000_016_666_7;
        assert!((by_fn.total.cost - expected).abs() < 1e-15);
        let by_day = UsageReport::build("ns", 0, 1, GroupBy::Day, &p, &cells);
        let keys: Vec<_> = by_day
            .groups
            .iter()
            .map(|g| g.key.clone().unwrap())
            .collect();
        assert_eq!(keys, ["2024-02-29", "2024-03-01"]);
        assert_eq!(by_day.total, by_fn.total);
    }

    #[test]
    fn the_free_tier_applies_per_month() {
        let p = PriceModel {
            free_tier: true,
            free_requests_per_month: 2,
            free_gb_seconds_per_month: 1,
            ..PriceModel::default()
        };
        // February: 3 requests, 2 GB-s; March: 1 request, 0.5 GB-s.
        let cells = [
            cell("a", 19782, 3, 2 * MB_MS_PER_GB_SECOND),
            cell("a", 19783, 1, MB_MS_PER_GB_SECOND / 2),
        ];
        let r = UsageReport::build("ns", 0, 1, GroupBy::Function, &p, &cells);
        let credit = p.cost(2, MB_MS_PER_GB_SECOND) + p.cost(1, MB_MS_PER_GB_SECOND / 2);
        assert!((r.total.free_tier_credit - credit).abs() < 1e-15);
        let billable = p.cost(1, MB_MS_PER_GB_SECOND);
        assert!((r.total.cost - billable).abs() < 1e-12, "{}", r.total.cost);
        assert_eq!(r.groups[0].free_tier_credit, 0.0);
    }
}
