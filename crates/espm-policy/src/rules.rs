//! Rules compiled from the configuration, and matching them against a pending request. Pure
//! except for lookup files, which are read again when they change.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use espm_config::{FieldCondition, PolicyDecision, PolicyRule};
use espm_events::PendingKind;
use serde_json::Value;

use crate::PolicyError;

/// What a pending request offers the rules: read from the `data` of its `…requested` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its pending list.
    pub kind: PendingKind,
    /// The id to answer it by.
    pub request_id: i64,
    /// The customer account that asks (the property data administrator's for shares).
    pub account_id: Option<i64>,
    /// For a meter share: its property.
    pub property_id: Option<i64>,
    /// The requesting customer's username as the pending list gives it.
    pub username: Option<String>,
    /// A share's access level (`Read`, `Read Write`); connections have none.
    pub access_level: Option<String>,
    /// Custom fields, name -> value.
    pub custom_fields: BTreeMap<String, String>,
}

impl Request {
    /// Read a request from its `…requested` event data; `None` without the request's id.
    pub fn from_data(kind: PendingKind, data: &Value) -> Option<Request> {
        let id_field = match kind {
            PendingKind::Connection => "accountId",
            PendingKind::PropertyShare => "propertyId",
            PendingKind::MeterShare => "meterId",
        };
        let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
        let custom_fields = data
            .get("customFields")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Some(Request {
            kind,
            request_id: data.get(id_field)?.as_i64()?,
            account_id: data.get("accountId").and_then(Value::as_i64),
            property_id: match kind {
                PendingKind::MeterShare => data.get("propertyId").and_then(Value::as_i64),
                _ => None,
            },
            username: text("username"),
            access_level: text("accessLevel"),
            custom_fields,
        })
    }
}

/// A set of values read from a file, one a line, read again when the file's modification time
/// or length changes.
#[derive(Debug)]
pub struct LookupFile {
    path: PathBuf,
    state: Mutex<Lookup>,
}

#[derive(Debug, Default)]
struct Lookup {
    stamp: Option<(SystemTime, u64)>,
    values: HashSet<String>,
}

impl LookupFile {
    /// Read the file now; an unreadable file is an error at start-up.
    pub fn open(path: &Path) -> Result<Self, std::io::Error> {
        let f = LookupFile {
            path: path.to_path_buf(),
            state: Mutex::new(Lookup::default()),
        };
        f.refresh()?;
        Ok(f)
    }

    /// Read the file again if it changed. A file that became unreadable keeps its last values.
    fn refresh(&self) -> Result<(), std::io::Error> {
        let meta = std::fs::metadata(&self.path)?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.stamp == Some(stamp) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path)?;
        state.values = parse_lookup(&text);
        state.stamp = Some(stamp);
        tracing::debug!(file = %self.path.display(), values = state.values.len(), "policy lookup file read");
        Ok(())
    }

    /// Whether `value` (trimmed) is one of the file's lines.
    pub fn contains(&self, value: &str) -> bool {
        if let Err(e) = self.refresh() {
            tracing::warn!(file = %self.path.display(), error = %e, "policy lookup file unreadable; its last values are used");
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.values.contains(value.trim())
    }
}

/// The values of a lookup file: trimmed lines, blank lines and `#` comments skipped.
pub fn parse_lookup(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// How one custom field is tested.
#[derive(Debug)]
enum Test {
    Present,
    Absent,
    Equals(String),
    Regex(regex::Regex),
    InFile(LookupFile),
}

#[derive(Debug)]
struct Field {
    name: String,
    test: Test,
}

impl Field {
    fn matches(&self, fields: &BTreeMap<String, String>) -> bool {
        let value = fields
            .get(&self.name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        match (&self.test, value) {
            (Test::Absent, v) => v.is_none(),
            (_, None) => false,
            (Test::Present, Some(_)) => true,
            (Test::Equals(want), Some(v)) => v == want.trim(),
            (Test::Regex(re), Some(v)) => re.is_match(v),
            (Test::InFile(f), Some(v)) => f.contains(v),
        }
    }
}

/// What a matching rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleDecision {
    /// Accept, with an optional note.
    Accept(Option<String>),
    /// Reject, with an optional note.
    Reject(Option<String>),
    /// Ask the decision webhook.
    Ask,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Its position in the configuration.
    pub index: usize,
    /// Its name, if any.
    pub name: Option<String>,
    kinds: Vec<PendingKind>,
    requesters: Vec<String>,
    access_levels: Vec<String>,
    fields: Vec<Field>,
    /// What it decides.
    pub decision: RuleDecision,
}

impl Rule {
    /// Compile one configured rule (its regexes and lookup files).
    pub fn compile(index: usize, r: &PolicyRule) -> Result<Rule, PolicyError> {
        let path = |rest: String| format!("rules[{index}].{rest}");
        let mut fields = Vec::new();
        for (j, f) in r.fields.iter().enumerate() {
            fields.push(Field {
                name: f.name.trim().to_string(),
                test: compile_test(f).map_err(|m| PolicyError::Config {
                    path: path(format!("fields[{j}]")),
                    message: m,
                })?,
            });
        }
        Ok(Rule {
            index,
            name: r.name.clone(),
            kinds: r.kinds.clone(),
            requesters: r
                .requesters
                .iter()
                .map(|s| s.trim().to_lowercase())
                .collect(),
            access_levels: r
                .access_levels
                .iter()
                .map(|s| normalise_access(s))
                .collect(),
            fields,
            decision: match r.decision {
                PolicyDecision::Accept => RuleDecision::Accept(r.note.clone()),
                PolicyDecision::Reject => RuleDecision::Reject(r.note.clone()),
                PolicyDecision::Ask => RuleDecision::Ask,
            },
        })
    }

    /// Whether every condition of the rule holds for `req`.
    pub fn matches(&self, req: &Request) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&req.kind))
            && (self.requesters.is_empty()
                || req
                    .username
                    .as_deref()
                    .is_some_and(|u| self.requesters.contains(&u.trim().to_lowercase())))
            && (self.access_levels.is_empty()
                || req
                    .access_level
                    .as_deref()
                    .is_some_and(|a| self.access_levels.contains(&normalise_access(a))))
            && self.fields.iter().all(|f| f.matches(&req.custom_fields))
    }

    /// `rules[0]`, or `rules[0] (name)`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("rules[{}] ({n})", self.index),
            None => format!("rules[{}]", self.index),
        }
    }
}

/// `Read Write`, `READ_WRITE` and `read write` are one level.
fn normalise_access(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| if c == '_' { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn compile_test(f: &FieldCondition) -> Result<Test, String> {
    Ok(match (&f.equals, &f.regex, &f.in_file) {
        (Some(e), None, None) if f.present => Test::Equals(e.clone()),
        (None, Some(re), None) if f.present => {
            Test::Regex(regex::Regex::new(re).map_err(|e| format!("regex does not compile: {e}"))?)
        }
        (None, None, Some(p)) if f.present => Test::InFile(
            LookupFile::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
        (None, None, None) if f.present => Test::Present,
        (None, None, None) => Test::Absent,
        _ => return Err(
            "give at most one of `equals`, `regex` and `in_file`, and none with `present = false`"
                .into(),
        ),
    })
}

/// The first rule that matches `req`, if any.
pub fn first_match<'a>(rules: &'a [Rule], req: &Request) -> Option<&'a Rule> {
    rules.iter().find(|r| r.matches(req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(toml_text: &str) -> Rule {
        let r: PolicyRule = toml::from_str(toml_text).unwrap();
        Rule::compile(0, &r).unwrap()
    }

    fn req(kind: PendingKind, fields: &[(&str, &str)]) -> Request {
        Request {
            kind,
            request_id: 7,
            account_id: Some(70),
            property_id: None,
            username: Some("Acme_Owner".into()),
            access_level: Some("Read Write".into()),
            custom_fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let r = rule(
            r#"
decision = "accept"
kinds = ["property_share"]
requesters = ["acme_owner"]
access_levels = ["READ_WRITE"]
[[fields]]
name = "Customer Number"
regex = '^C-\d+$'
"#,
        );
        assert!(r.matches(&req(
            PendingKind::PropertyShare,
            &[("Customer Number", " C-12 ")]
        )));
        assert!(!r.matches(&req(
            PendingKind::MeterShare,
            &[("Customer Number", "C-12")]
        )));
        assert!(!r.matches(&req(
            PendingKind::PropertyShare,
            &[("Customer Number", "X-12")]
        )));
        assert!(!r.matches(&req(PendingKind::PropertyShare, &[])));
        let mut other = req(PendingKind::PropertyShare, &[("Customer Number", "C-1")]);
        other.username = Some("someone".into());
        assert!(!r.matches(&other));
        other.username = Some("ACME_OWNER".into());
        other.access_level = Some("Read".into());
        assert!(!r.matches(&other));
        // A connection has no access level: a rule that asks for one never matches it.
        let mut conn = req(PendingKind::Connection, &[("Customer Number", "C-1")]);
        conn.access_level = None;
        let any_kind = rule("decision = \"reject\"\naccess_levels = [\"Read\"]");
        assert!(!any_kind.matches(&conn));
    }

    #[test]
    fn present_absent_equals() {
        let present = rule("decision = \"accept\"\n[[fields]]\nname = \"Meter Number\"");
        let absent =
            rule("decision = \"reject\"\n[[fields]]\nname = \"Meter Number\"\npresent = false");
        let equals =
            rule("decision = \"accept\"\n[[fields]]\nname = \"Meter Number\"\nequals = \"M-1\"");
        let blank = req(PendingKind::MeterShare, &[("Meter Number", "   ")]);
        let set = req(PendingKind::MeterShare, &[("Meter Number", "M-1")]);
        let other = req(PendingKind::MeterShare, &[("Meter Number", "M-2")]);
        assert!(!present.matches(&blank) && absent.matches(&blank));
        assert!(present.matches(&set) && !absent.matches(&set));
        assert!(equals.matches(&set) && !equals.matches(&other) && !equals.matches(&blank));
    }

    #[test]
    fn a_lookup_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("customers.txt");
        std::fs::write(&file, "# known customers\nC-1\n\n  C-2  \n").unwrap();
        let r = rule(&format!(
            "decision = \"accept\"\n[[fields]]\nname = \"Customer Number\"\nin_file = {:?}",
            file.display().to_string()
        ));
        let c = |v: &str| req(PendingKind::Connection, &[("Customer Number", v)]);
        assert!(r.matches(&c("C-1")) && r.matches(&c("C-2")));
        assert!(!r.matches(&c("C-3")) && !r.matches(&c("# known customers")));
        // A different length is a change even within the file system's timestamp granularity.
        std::fs::write(&file, "C-3\nC-44\n").unwrap();
        assert!(r.matches(&c("C-3")));
        assert!(!r.matches(&c("C-1")));
        // Removed: the last values stay in force.
        std::fs::remove_file(&file).unwrap();
        assert!(r.matches(&c("C-44")));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = [
            rule("decision = \"reject\"\nnote = \"no\"\n[[fields]]\nname = \"Customer Number\"\npresent = false"),
            rule("decision = \"accept\"\nkinds = [\"connection\"]"),
            rule("decision = \"ask\""),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.index = i;
            r
        })
        .collect::<Vec<_>>();
        let pick = |r: &Request| first_match(&rules, r).map(|r| r.index);
        assert_eq!(pick(&req(PendingKind::Connection, &[])), Some(0));
        assert_eq!(
            pick(&req(PendingKind::Connection, &[("Customer Number", "1")])),
            Some(1)
        );
        assert_eq!(
            pick(&req(PendingKind::MeterShare, &[("Customer Number", "1")])),
            Some(2)
        );
        assert_eq!(
            first_match(
                &rules[..2],
                &req(PendingKind::MeterShare, &[("Customer Number", "1")])
            )
            .map(|r| r.index),
            None
        );
        assert_eq!(rules[0].decision, RuleDecision::Reject(Some("no".into())));
    }

    #[test]
    fn request_from_event_data() {
        let data = serde_json::json!({
            "meterId": 9, "propertyId": 8, "accountId": 7, "username": "u",
            "accessLevel": "Read", "customFields": {"Meter Number": "M-1", "bad": 3}
        });
        let r = Request::from_data(PendingKind::MeterShare, &data).unwrap();
        assert_eq!(
            (r.request_id, r.property_id, r.account_id),
            (9, Some(8), Some(7))
        );
        assert_eq!(r.custom_fields.len(), 1);
        assert!(Request::from_data(
            PendingKind::PropertyShare,
            &serde_json::json!({"meterId": 9})
        )
        .is_none());
    }

    fn kind() -> impl Strategy<Value = PendingKind> {
        prop_oneof![
            Just(PendingKind::Connection),
            Just(PendingKind::PropertyShare),
            Just(PendingKind::MeterShare)
        ]
    }

    proptest! {
        /// `equals` matches exactly the requests whose trimmed value is the wanted one, and the
        /// escaped-regex form of the same condition agrees with it everywhere.
        #[test]
        fn equals_and_an_anchored_escaped_regex_agree(
            want in "[A-Za-z0-9 .+*?()-]{1,12}",
            value in proptest::option::of("[A-Za-z0-9 .+*?()-]{0,12}"),
            k in kind(),
        ) {
            let want = want.trim().to_string();
            prop_assume!(!want.is_empty());
            let eq = rule(&format!("decision = \"accept\"\n[[fields]]\nname = \"F\"\nequals = {want:?}"));
            let re = rule(&format!(
                "decision = \"accept\"\n[[fields]]\nname = \"F\"\nregex = {:?}",
                format!("^{}$", regex::escape(&want))
            ));
            let fields: Vec<(&str, &str)> = value.as_deref().map(|v| vec![("F", v)]).unwrap_or_default();
            let r = req(k, &fields);
            let expected = value.as_deref().map(str::trim) == Some(want.as_str());
            prop_assert_eq!(eq.matches(&r), expected);
            prop_assert_eq!(re.matches(&r), expected);
        }

        /// `present` and `present = false` split every request in two, and the first match is
        /// always the lowest-index rule that matches on its own.
        #[test]
        fn present_and_absent_partition_and_first_match_is_lowest(
            value in proptest::option::of("[ a-z0-9]{0,6}"),
            k in kind(),
            kinds in proptest::collection::vec(proptest::option::of(kind()), 1..5),
        ) {
            let p = rule("decision = \"accept\"\n[[fields]]\nname = \"F\"");
            let a = rule("decision = \"accept\"\n[[fields]]\nname = \"F\"\npresent = false");
            let fields: Vec<(&str, &str)> = value.as_deref().map(|v| vec![("F", v)]).unwrap_or_default();
            let r = req(k, &fields);
            prop_assert!(p.matches(&r) ^ a.matches(&r));
            let rules: Vec<Rule> = kinds.iter().enumerate().map(|(i, kd)| {
                let text = match kd {
                    Some(kd) => format!("decision = \"accept\"\nkinds = [{:?}]", kd.as_str()),
                    None => "decision = \"reject\"\n[[fields]]\nname = \"F\"".to_string(),
                };
                let mut rl = rule(&text);
                rl.index = i;
                rl
            }).collect();
            let lowest = rules.iter().position(|rl| rl.matches(&r));
            prop_assert_eq!(first_match(&rules, &r).map(|rl| rl.index), lowest);
        }
    }
}
