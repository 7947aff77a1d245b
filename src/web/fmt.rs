//! How values read on a page: dates as "3 Sep 2027" with the exact time on hover, counts with
//! thousands separators.

use std::fmt;

use time::OffsetDateTime;
use time::macros::format_description;

/// A date for display. In a template, `{{ date }}` renders a `<time>` element whose text is the day
/// ("3 Sep 2027") and whose tooltip is the exact UTC time.
#[derive(Debug, Clone, Copy)]
pub struct Date(pub OffsetDateTime);

impl Date {
    /// "3 Sep 2027".
    pub fn day(&self) -> String {
        let f = format_description!("[day padding:none] [month repr:short] [year]");
        self.0.format(f).unwrap_or_default()
    }

    /// "3 Sep 2027, 14:05:09 UTC".
    pub fn exact(&self) -> String {
        let f = format_description!(
            "[day padding:none] [month repr:short] [year], [hour]:[minute]:[second] UTC"
        );
        self.0
            .to_offset(time::UtcOffset::UTC)
            .format(f)
            .unwrap_or_default()
    }

    /// RFC 3339, for the `datetime` attribute and APIs.
    pub fn iso(&self) -> String {
        self.0
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only digits, letters, spaces, ':', ',' and '-' are written: nothing needs escaping.
        write!(
            f,
            "<time datetime=\"{}\" title=\"{}\">{}</time>",
            self.iso(),
            self.exact(),
            self.day()
        )
    }
}

impl askama::filters::HtmlSafe for Date {}

/// 1204 → "1,204".
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn dates_read_as_day_month_year_with_exact_time_on_hover() {
        let d = Date(datetime!(2027-09-03 14:05:09 UTC));
        assert_eq!(d.day(), "3 Sep 2027");
        assert_eq!(
            d.to_string(),
            "<time datetime=\"2027-09-03T14:05:09Z\" title=\"3 Sep 2027, 14:05:09 UTC\">3 Sep 2027</time>"
        );
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1204), "1,204");
        assert_eq!(count(100000), "100,000");
    }
}
