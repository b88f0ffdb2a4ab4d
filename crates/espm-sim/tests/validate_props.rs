//! The new parsers and rules of the test-environment calls and `POST /customer`: `accessLevel`,
//! PM's password rule, the enumerations (checked against the XSD files themselves).

use espm_model::{parse, to_xml, Address, NewCustomer};
use espm_sim::enums::{COUNTRIES, ENERGY_STAR_PARTNER_TYPES, PRIMARY_BUSINESS, STATES};
use espm_sim::pm_api::parse_access_level;
use espm_sim::validate::{new_customer, password_problem, CANADIAN_PROVINCES, PASSWORD_SPECIALS};
use espm_sim::{Access, SimError};
use proptest::prelude::*;

/// The `value="..."` of every `xs:enumeration` between `from` and `to` in an XSD file.
fn xsd_enum(file: &str, from: &str, to: Option<&str>) -> Vec<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/xsd")
            .join(file),
    )
    .unwrap();
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from} in {file}"));
    let end = to.map_or(text.len(), |t| start + text[start..].find(t).unwrap());
    text[start..end]
        .split("<xs:enumeration value=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

#[test]
fn enumerations_match_the_xsds() {
    let cases: [(&[&str], Vec<String>); 4] = [
        (
            PRIMARY_BUSINESS,
            xsd_enum(
                "account/account.xsd",
                "name=\"primaryBusinessType\"",
                Some("</xs:simpleType>"),
            ),
        ),
        (
            ENERGY_STAR_PARTNER_TYPES,
            xsd_enum(
                "account/account.xsd",
                "name=\"typeOfEnergyStarPartner\"",
                Some("</xs:simpleType>"),
            ),
        ),
        (
            STATES,
            xsd_enum(
                "common/address.xsd",
                "name=\"state\"",
                Some("</xs:attribute>"),
            ),
        ),
        (
            COUNTRIES,
            xsd_enum("common/address.xsd", "name=\"countryList\"", None),
        ),
    ];
    for (ours, xsd) in cases {
        assert!(!xsd.is_empty());
        assert_eq!(ours, xsd.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for p in CANADIAN_PROVINCES {
        assert!(STATES.contains(p), "{p}");
    }
}

fn valid_customer() -> NewCustomer {
    parse(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/requests/create-customer.xml"
        ))
        .unwrap()
        .as_bytes(),
    )
    .unwrap()
}

fn class_chars(class: usize) -> Vec<char> {
    match class {
        0 => ('A'..='Z').collect(),
        1 => ('a'..='z').collect(),
        2 => ('0'..='9').collect(),
        _ => PASSWORD_SPECIALS.chars().collect(),
    }
}

/// A password of `len` characters drawn only from the classes in `classes`.
fn password_of(classes: Vec<usize>, len: usize) -> impl Strategy<Value = String> {
    let pools: Vec<Vec<char>> = classes.iter().map(|c| class_chars(*c)).collect();
    proptest::collection::vec((0..pools.len(), any::<prop::sample::Index>()), len).prop_map(
        move |picks| {
            // Every class appears at least once: the first characters cycle through them.
            picks
                .iter()
                .enumerate()
                .map(|(i, (pool, idx))| {
                    let pool = &pools[if i < pools.len() { i } else { *pool }];
                    pool[idx.index(pool.len())]
                })
                .collect()
        },
    )
}

fn password_case() -> impl Strategy<Value = (Vec<usize>, String)> {
    (
        proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=4),
        1usize..140,
    )
        .prop_flat_map(|(classes, len)| {
            let len = len.max(classes.len());
            let keep = classes.clone();
            password_of(classes, len).prop_map(move |pw| (keep.clone(), pw))
        })
}

proptest! {
    #[test]
    fn access_level_parses_exactly_pms_spellings(raw in "\\PC{0,16}") {
        let norm = raw.trim().to_ascii_uppercase().replace([' ', '-'], "_");
        let got = parse_access_level(Some(&raw));
        match norm.as_str() {
            "READ" => prop_assert_eq!(got, Ok(Access::Read)),
            "READ_WRITE" | "READWRITE" => prop_assert_eq!(got, Ok(Access::ReadWrite)),
            _ => prop_assert!(got.is_err()),
        }
    }

    #[test]
    fn access_level_is_case_insensitive(upper in any::<bool>(), rw in any::<bool>()) {
        let base = if rw { "read_write" } else { "read" };
        let raw = if upper { base.to_ascii_uppercase() } else { base.to_string() };
        let want = if rw { Access::ReadWrite } else { Access::Read };
        prop_assert_eq!(parse_access_level(Some(&raw)), Ok(want));
        prop_assert!(parse_access_level(None).is_err());
    }

    #[test]
    fn three_classes_and_8_to_120_characters_make_a_password((classes, pw) in password_case()) {
        let len = pw.chars().count();
        let ok = (8..=120).contains(&len) && classes.len() >= 3;
        prop_assert_eq!(password_problem(&pw).is_none(), ok, "{:?} {:?}", pw, classes);
        // And through the whole body: length errors are schema (-100), strength is -200.
        let mut c = valid_customer();
        c.password = pw;
        match new_customer(&c) {
            Ok(()) => prop_assert!(ok),
            Err(SimError::Invalid(m)) => prop_assert!(!(8..=120).contains(&len), "{}", m),
            Err(SimError::Rejected(m)) => {
                prop_assert!((8..=120).contains(&len) && classes.len() < 3, "{}", m)
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn enumerated_fields_accept_exactly_the_xsd_values(
        business in prop_oneof![
            proptest::sample::select(PRIMARY_BUSINESS).prop_map(str::to_string),
            "[A-Za-z /:().-]{0,30}",
        ],
        country in prop_oneof![
            proptest::sample::select(COUNTRIES).prop_map(str::to_string),
            "[A-Z]{2}",
        ],
        other_state in proptest::option::of("[A-Za-z ]{1,50}"),
    ) {
        let mut c = valid_customer();
        c.organization.primary_business = business.clone();
        c.contact.address = Address {
            address1: "1 High Street".into(),
            city: "Somewhere".into(),
            postal_code: Some("12345".into()),
            country: Some(country.clone()),
            other_state,
            // US and Canada need a state: give one that fits.
            state: match country.as_str() {
                "US" => Some("VA".into()),
                "CA" => Some("ON".into()),
                _ => None,
            },
            ..Address::default()
        };
        let valid = PRIMARY_BUSINESS.contains(&business.as_str())
            && COUNTRIES.contains(&country.as_str());
        let got = new_customer(&c);
        prop_assert_eq!(got.is_ok(), valid, "{:?}", got);
        if !valid {
            prop_assert!(matches!(got, Err(SimError::Invalid(_))));
        }
        // What passes survives the trip through XML unchanged.
        if valid {
            let back: NewCustomer = parse(to_xml(&c).as_bytes()).unwrap();
            prop_assert_eq!(back, c);
        }
    }
}
