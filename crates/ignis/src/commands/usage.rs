//! `ignis usage`: requests, GB-seconds and cost of a namespace over a period, from its
//! activation records, under the server's price model.

use clap::Args;
use ignis_client::display::Table;
use ignis_core::usage::{UsageLine, UsageReport};

use super::GlobalOpts;

/// Show usage and cost.
#[derive(Args, Debug)]
pub struct UsageCommand {
    /// Start of the period: YYYY-MM-DD (UTC) or ms since the epoch [default: start of this month]
    #[arg(long)]
    from: Option<String>,
    /// End of the period: YYYY-MM-DD (that day included) or ms since the epoch (excluded)
    /// [default: now]
    #[arg(long)]
    to: Option<String>,
    /// One row per function or per day
    #[arg(long, value_parser = ["function", "day"], default_value = "function")]
    group_by: String,
}

/// A cost in dollars with enough digits for sub-cent amounts.
fn money(v: f64) -> String {
    format!("${v:.6}")
}

fn row(table: &mut Table, key: &str, l: &UsageLine) {
    table.row([
        key.to_string(),
        l.requests.to_string(),
        format!("{:.6}", l.gb_seconds),
        money(l.request_cost),
        money(l.compute_cost),
        money(l.cost),
    ]);
}

/// The report as a table, its total, and the free tier if it applied.
fn render(r: &UsageReport) -> String {
    let first = match r.group_by {
        ignis_core::usage::GroupBy::Function => "FUNCTION",
        ignis_core::usage::GroupBy::Day => "DAY",
    };
    let mut table = Table::new([
        first,
        "REQUESTS",
        "GB-SECONDS",
        "REQUEST COST",
        "COMPUTE COST",
        "COST",
    ]);
    for g in &r.groups {
        row(&mut table, g.key.as_deref().unwrap_or(""), g);
    }
    let mut total = r.total.clone();
    total.cost = total.request_cost + total.compute_cost;
    row(&mut table, "TOTAL", &total);
    let mut out = table.to_string();
    if r.pricing.free_tier {
        out.push_str(&format!(
            "free tier: −{}\ncost after free tier: {}\n",
            money(r.total.free_tier_credit),
            money(r.total.cost)
        ));
    }
    out.push_str(&format!(
        "prices: ${} per million requests, ${} per GB-second\n",
        r.pricing.per_million_requests, r.pricing.per_gb_second
    ));
    out
}

impl UsageCommand {
    /// Runs the command.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        let report = client
            .usage(
                self.from.as_deref(),
                self.to.as_deref(),
                Some(&self.group_by),
            )
            .await?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render(&report));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_core::usage::{GroupBy, PriceModel, UsageCell};

    #[test]
    fn the_table_ends_with_the_total() {
        let cells = [UsageCell {
            function: "hello".into(),
            day: 20_000,
            requests: 3,
            mb_ms: 128 * 30,
            billed_ms: 30,
        }];
        let r = UsageReport::build(
            "default",
            0,
            1,
            GroupBy::Function,
            &PriceModel::default(),
            &cells,
        );
        let text = render(&r);
        assert!(text.contains("hello"), "{text}");
        assert!(text.contains("TOTAL"), "{text}");
        assert!(text.contains("0.003750"), "{text}");
        assert!(!text.contains("free tier"), "{text}");
    }
}
