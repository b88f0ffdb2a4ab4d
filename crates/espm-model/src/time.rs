//! PM timestamps: `xs:dateTime`, normally with an offset; without one PM means US Eastern time.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, TimeZone};
use chrono_tz::America::New_York;

/// Why a PM timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an xs:dateTime: {0:?}")]
pub struct TimeError(pub String);

/// Interpret a PM `xs:dateTime`. An explicit offset (`-05:00`, `Z`) is kept as is; a value without
/// one is US Eastern (America/New_York, DST-aware), never UTC. In the repeated hour at the end of
/// DST the earlier instant is chosen; a time in the skipped hour is read as standard time.
pub fn parse_pm_datetime(s: &str) -> Result<DateTime<FixedOffset>, TimeError> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt);
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|_| TimeError(s.to_string()))?;
    let local = match New_York.from_local_datetime(&naive) {
        LocalResult::Single(t) => t,
        LocalResult::Ambiguous(a, _) => a,
        LocalResult::None => {
            let shifted = naive + chrono::Duration::hours(1);
            match New_York.from_local_datetime(&shifted) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    t - chrono::Duration::hours(1)
                }
                LocalResult::None => return Err(TimeError(s.to_string())),
            }
        }
    };
    Ok(local.fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_offsets_and_defaults_to_eastern() {
        let a = parse_pm_datetime("2014-12-04T11:29:54.000-05:00").unwrap();
        assert_eq!(a.to_rfc3339(), "2014-12-04T11:29:54-05:00");
        let winter = parse_pm_datetime("2025-01-15T08:00:00").unwrap();
        assert_eq!(winter.to_rfc3339(), "2025-01-15T08:00:00-05:00");
        let summer = parse_pm_datetime("2025-07-15T08:00:00").unwrap();
        assert_eq!(summer.to_rfc3339(), "2025-07-15T08:00:00-04:00");
        assert!(parse_pm_datetime("yesterday").is_err());
    }
}
