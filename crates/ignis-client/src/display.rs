//! Human-readable output shared by the CLI and tools: aligned tables and timestamps.

use std::fmt::{self, Write};

/// A table of text with aligned columns: two spaces between columns, no trailing spaces.
///
/// ```
/// use ignis_client::display::Table;
/// let mut t = Table::new(["NAME", "VERSION"]);
/// t.row(["hello", "3"]);
/// assert_eq!(t.to_string(), "NAME   VERSION\nhello  3\n");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles; with no titles, no header line is printed (a
    /// key/value listing, say).
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Rows may have fewer or more cells than there are titles.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn lines(&self) -> impl Iterator<Item = &Vec<String>> {
        (!self.header.is_empty())
            .then_some(&self.header)
            .into_iter()
            .chain(&self.rows)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = Vec::new();
        for line in self.lines() {
            for (i, cell) in line.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(max) => *max = (*max).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for line in self.lines() {
            out.clear();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                if i + 1 < line.len() {
                    let pad = widths[i] - cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            f.write_str(out.trim_end())?;
            f.write_char('\n')?;
        }
        Ok(())
    }
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds, e.g.
/// `2024-03-01T12:34:56.789Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let (date, secs_of_day) = split_epoch(ms / 1000);
    format!("{date}T{}.{:03}Z", hms(secs_of_day), ms % 1000)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC to the second, e.g.
/// `2024-03-01T12:34:56Z`.
pub fn rfc3339_s(ms: u64) -> String {
    let (date, secs_of_day) = split_epoch(ms / 1000);
    format!("{date}T{}Z", hms(secs_of_day))
}

fn hms(secs_of_day: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Splits seconds since the epoch into a `YYYY-MM-DD` date and the seconds of that day.
fn split_epoch(secs: u64) -> (String, u64) {
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    (format!("{y:04}-{m:02}-{d:02}"), secs % 86_400)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// <https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(["ID", "FUNCTION", "STATUS"]);
        t.row(["a1", "hello", "success"]);
        t.row(["b22222", "x", ""]);
        assert_eq!(
            t.to_string(),
            "ID      FUNCTION  STATUS\n\
             a1      hello     success\n\
             b22222  x\n"
        );
    }

    #[test]
    fn tables_without_header_are_key_value_listings() {
        let mut t = Table::new(Vec::<String>::new());
        t.row(["name", "hello"]).row(["max instances", "10"]);
        assert_eq!(t.to_string(), "name           hello\nmax instances  10\n");
        assert!(Table::new(["A"]).is_empty());
        assert_eq!(Table::new(["A", "B"]).to_string(), "A  B\n");
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let mut t = Table::new(["K", "V"]);
        t.row(["héllo", "1"]).row(["a", "2"]);
        assert_eq!(t.to_string(), "K      V\nhéllo  1\na      2\n");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day in a century leap year), 23:59:59.999
        assert_eq!(rfc3339_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_709_296_496_789), "2024-03-01T12:34:56.789Z");
        assert_eq!(rfc3339_s(4_102_444_800_000), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339_s(1_735_689_599_000), "2024-12-31T23:59:59Z");
    }
}
